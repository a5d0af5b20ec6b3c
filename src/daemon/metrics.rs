//! Prometheus metrics, off by default (`[metrics] listen = "127.0.0.1:9464"` or a unix socket
//! path). One endpoint, `GET /metrics`, in the OpenMetrics text format: prometheus-client
//! encodes a status snapshot taken at each scrape, and hyper serves it (HTTP/1.1, one request
//! per connection, a 2 s limit on reading a request, each connection its own task, so a silent
//! client holds nobody else up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::counters::{Kind, LATENCY, METRICS};
use super::status::Sources;

/// The daemon's metrics, read from a status snapshot at each scrape.
struct Snapshot(Arc<Sources>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let src = &self.0;
        let s = src.snapshot();
        let json = serde_json::to_value(&s).unwrap_or_default();
        for m in METRICS {
            let (name, kind) = match m.kind {
                // The encoder adds `_total` to counters.
                Kind::Counter => (m.name.strip_suffix("_total").unwrap_or(m.name), MetricType::Counter),
                Kind::Gauge => (m.name, MetricType::Gauge),
            };
            let samples = m.samples(&s, &json);
            let mut d = enc.encode_descriptor(name, m.help, None, kind)?;
            match m.label {
                Some(key) => {
                    for (label, v) in &samples {
                        sample(m.kind, *v, d.encode_family(&[(key, label.as_str())])?)?;
                    }
                }
                None => sample(m.kind, samples.first().map_or(0.0, |x| x.1), d)?,
            }
        }
        // The latency histogram, every fourth bucket (powers of two) to keep the series few.
        let h = &src.hot.latency;
        let mut buckets = Vec::new();
        let mut prev = 0;
        for (i, (upper_us, cum)) in h.cumulative().into_iter().enumerate() {
            if i % 4 == 0 {
                buckets.push((upper_us / 1e6, cum - prev));
                prev = cum;
            }
        }
        let count = h.count();
        // prometheus-client writes the f64::MAX bucket as `+Inf`.
        buckets.push((f64::MAX, count.saturating_sub(prev)));
        let mut m = enc.encode_descriptor(LATENCY.0, LATENCY.1, None, MetricType::Histogram)?;
        m.encode_histogram::<NoLabelSet>(h.sum_us() as f64 / 1e6, count, &buckets, None)
    }
}

/// One sample: a counter, or a gauge (an integer when it is one).
fn sample(kind: Kind, v: f64, e: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(v as u64).encode(e),
        Kind::Gauge if v.fract() == 0.0 => ConstGauge::new(v as i64).encode(e),
        Kind::Gauge => ConstGauge::new(v).encode(e),
    }
}

/// The exposition text.
pub fn render(src: &Arc<Sources>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(Arc::clone(src))));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    src: Arc<Sources>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let ok = req.method() == hyper::Method::GET && req.uri().path() == "/metrics";
    let resp = if ok {
        hyper::Response::builder()
            .header("content-type", CONTENT_TYPE)
            .body(Full::new(Bytes::from(render(&src))))
    } else {
        hyper::Response::builder()
            .status(hyper::StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"only GET /metrics is served\n")))
    };
    Ok(resp.expect("static response parts"))
}

/// Serves one connection: one request, then close.
fn serve_conn<S>(stream: S, src: &Arc<Sources>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let src = Arc::clone(src);
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| respond(req, Arc::clone(&src)));
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(2))
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// Serves `GET /metrics` on `listen` (host:port, or an absolute unix socket path) until `stop`,
/// on a thread of its own with a single-threaded runtime.
pub fn serve(listen: &str, src: Arc<Sources>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let l = rt.block_on(async {
        if listen.starts_with('/') {
            let p = std::path::PathBuf::from(listen);
            let _ = std::fs::remove_file(&p);
            let u = tokio::net::UnixListener::bind(&p)?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
            Ok::<_, std::io::Error>(Listener::Unix(u, p))
        } else {
            Ok(Listener::Tcp(tokio::net::TcpListener::bind(listen).await?))
        }
    })?;
    std::thread::Builder::new().name("driftgate-metrics".into()).spawn(move || {
        rt.block_on(async {
            while !stop.load(Ordering::Relaxed) {
                let tick = tokio::time::sleep(Duration::from_millis(200));
                match &l {
                    Listener::Tcp(t) => tokio::select! {
                        Ok((c, _)) = t.accept() => serve_conn(c, &src),
                        _ = tick => {}
                    },
                    Listener::Unix(u, _) => tokio::select! {
                        Ok((c, _)) = u.accept() => serve_conn(c, &src),
                        _ = tick => {}
                    },
                }
            }
        });
        if let Listener::Unix(_, p) = &l {
            let _ = std::fs::remove_file(p);
        }
    })
}

#[cfg(test)]
mod tests {
    /// The metric names the daemon exports.
    fn exported() -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> =
            super::METRICS.iter().map(|m| m.name.to_owned()).collect();
        names.insert(super::LATENCY.0.to_owned());
        names
    }

    #[test]
    fn the_shipped_alert_rules_name_only_metrics_the_daemon_exports() {
        let exported = exported();
        assert!(exported.contains("driftgate_containers_unwatched") && exported.len() > 20, "{exported:?}");
        let rules = include_str!("../../packaging/kubernetes/monitoring.yaml");
        let named: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("driftgate_"))
            .collect();
        assert!(named.len() >= 5, "{named:?}");
        for n in named {
            assert!(exported.contains(n), "monitoring.yaml names {n}, which driftgate does not export");
        }
    }
}
