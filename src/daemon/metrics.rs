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
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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
        family(
            &mut enc,
            "driftgate_decisions_total",
            "Exec decisions by answer.",
            "action",
            &[("allow", s.decisions.allowed), ("deny", s.decisions.denied)],
        )?;
        let cats: Vec<(&str, u64)> = s.findings.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        family(
            &mut enc,
            "driftgate_findings_total",
            "Findings by category (before aggregation).",
            "category",
            &cats,
        )?;
        total(
            &mut enc,
            "driftgate_hash_cache_hits_total",
            "Executed files whose hash was cached.",
            s.decisions.hash_cache_hits,
        )?;
        total(&mut enc, "driftgate_hash_cache_misses_total", "Executed files hashed.", s.decisions.hashed)?;
        family(
            &mut enc,
            "driftgate_image_proofs_total",
            "Execs proven to be image files (fast path), by cache.",
            "cached",
            &[("false", s.decisions.image_fast), ("true", s.decisions.image_cached)],
        )?;
        total(
            &mut enc,
            "driftgate_findings_recorded_total",
            "Findings durably written to the spool.",
            s.spool.recorded,
        )?;
        family(
            &mut enc,
            "driftgate_findings_lost_total",
            "Findings not written to the spool (write errors, full queue).",
            "reason",
            &[("spool_write", s.spool.write_errors), ("queue_full", s.spool.dropped)],
        )?;
        total(
            &mut enc,
            "driftgate_mount_execs_total",
            "Execs from containers' mounts other than the rootfs (volumes, tmpfs, /dev/shm).",
            s.coverage.mount_execs,
        )?;
        family(
            &mut enc,
            "driftgate_open_events_total",
            "Open events ([libraries]) by how they were settled: harmless inodes ignored from then on, shared objects decided, an exec's own open, the daemon's own, files being written, interpreter code decided, compiled Python caching an image source.",
            "outcome",
            &[
                ("ignored", s.libraries.ignore_marks),
                ("library_decided", s.libraries.decided),
                ("exec_own", s.libraries.by_exec),
                ("daemon_own", s.libraries.by_daemon),
                ("being_written", s.libraries.being_written),
                ("after_refused_exec", s.libraries.after_refused_exec),
                ("over_budget", s.libraries.over_budget),
                ("code_decided", s.libraries.code_decided),
                ("code_cache", s.libraries.code_cache),
            ],
        )?;
        family(
            &mut enc,
            "driftgate_evidence_total",
            "Findings' files by what the evidence store did with them: stored, already stored, too big, lost (changed before the copy, errors, queue full), evicted.",
            "outcome",
            &[
                ("stored", s.evidence.stored),
                ("already_stored", s.evidence.already_stored),
                ("too_big", s.evidence.too_big),
                ("lost", s.evidence.lost),
                ("evicted", s.evidence.evicted),
            ],
        )?;
        gauge(&mut enc, "driftgate_evidence_bytes", "Bytes in the evidence store.", s.evidence.bytes)?;
        family(
            &mut enc,
            "driftgate_webhook_total",
            "Findings and tries of the [export] webhook: sent, failed tries, given up after the last try, dropped (queue full).",
            "outcome",
            &[
                ("sent", s.export.webhook_sent),
                ("failed_try", s.export.webhook_failures),
                ("given_up", s.export.webhook_given_up),
                ("dropped", s.export.webhook_dropped),
            ],
        )?;
        family(
            &mut enc,
            "driftgate_otlp_total",
            "Findings and tries of [export.otlp]: sent, failed tries, given up after the last try, dropped (queue full).",
            "outcome",
            &[
                ("sent", s.export.otlp_sent),
                ("failed_try", s.export.otlp_failures),
                ("given_up", s.export.otlp_given_up),
                ("dropped", s.export.otlp_dropped),
            ],
        )?;
        gauge(
            &mut enc,
            "driftgate_frozen_containers",
            "Containers frozen by a rule's response and not thawed.",
            s.frozen.len() as u64,
        )?;
        total(
            &mut enc,
            "driftgate_open_events_read_total",
            "Open events read from the kernel ([libraries]); warm containers should add almost none.",
            s.libraries.open_events,
        )?;
        family(
            &mut enc,
            "driftgate_indirect_execs_total",
            "Execs of image loaders and interpreters whose argument was looked at, by outcome.",
            "outcome",
            &[
                ("looked_at", s.decisions.indirect),
                ("call_unreadable", s.decisions.indirect_unread),
                ("argument_not_found", s.decisions.indirect_unresolved),
                ("not_direct", s.decisions.indirect_not_direct),
                ("unverifiable", s.decisions.indirect_unverifiable),
            ],
        )?;
        family(
            &mut enc,
            "driftgate_process_exec_events_total",
            "Exec events from the kernel's process-event connector (fileless execution record).",
            "result",
            &[("read", s.coverage.exec_events), ("lost", s.coverage.exec_events_lost)],
        )?;
        family(
            &mut enc,
            "driftgate_container_mounts_total",
            "Container mounts beyond the rootfs, by whether they could be marked.",
            "marked",
            &[("true", s.coverage.mounts_marked), ("false", s.coverage.mounts_failed)],
        )?;
        total(
            &mut enc,
            "driftgate_findings_suppressed_total",
            "Findings counted but not recorded: a container over findings.container_per_sec.",
            s.limits.findings_suppressed,
        )?;
        family(
            &mut enc,
            "driftgate_unverified_total",
            "Execs decided without their file's hash, by why.",
            "reason",
            &[
                ("budget", s.limits.over_budget),
                ("too_big", s.limits.too_big),
                ("timeout", s.limits.hash_timeouts),
                ("queue_timeout", s.limits.queue_timeouts),
                ("no_reader", s.limits.hash_unavailable),
            ],
        )?;
        family(
            &mut enc,
            "driftgate_writer_holds_total",
            "Allowed execs by what keeping writers out of their file did: a new hold, a renewed one, \
             none (over the cap, no lease on that filesystem), or a file found being written or \
             changed (decided without its hash).",
            "result",
            &[
                ("kept", s.writer_hold.kept),
                ("renewed", s.writer_hold.renewed),
                ("cut", s.writer_hold.cut),
                ("unsupported", s.writer_hold.unsupported),
                ("unsettled", s.writer_hold.unsettled),
                ("break_cleared", s.writer_hold.breaks_cleared),
            ],
        )?;
        family(
            &mut enc,
            "driftgate_reloads_total",
            "Configuration reloads.",
            "result",
            &[("ok", s.reloads), ("error", s.reload_errors)],
        )?;
        family(
            &mut enc,
            "driftgate_errors_total",
            "Errors by kind.",
            "kind",
            &[
                ("answer", s.decisions.answer_errors),
                ("journald", s.spool.journald_errors),
                ("log_dropped", s.spool.log_lines_dropped),
                ("spool_recreated", s.spool.recreated),
                ("implicit_allow", s.implicit_allows),
            ],
        )?;
        gauge(
            &mut enc,
            "driftgate_containers_watched",
            "Container root filesystems marked.",
            s.containers.len() as u64,
        )?;
        gauge(
        &mut enc,
        "driftgate_containers_unwatched",
        "Container root filesystems found but not marked (their execs are not checked); retried on every scan.",
        s.unwatched.len() as u64,
    )?;
        gauge(
            &mut enc,
            "driftgate_events_in_flight",
            "Execs held and not answered yet.",
            s.decisions.in_flight,
        )?;
        ConstGauge::new(s.stalled_ms as f64 / 1000.0).encode(enc.encode_descriptor(
            "driftgate_decisions_stalled_seconds",
            "Seconds decisions have made no progress while execs were held (0 while they progress); the watchdog ends the daemon at stall_timeout, and the kernel then lets the held execs through.",
            None,
            MetricType::Gauge,
        )?)?;
        gauge(&mut enc, "driftgate_spool_bytes", "Bytes in the findings spool.", s.spool.bytes)?;
        gauge(
            &mut enc,
            "driftgate_files_held",
            "Allowed files writers are kept out of now.",
            s.writer_hold.held,
        )?;
        gauge(
            &mut enc,
            "driftgate_coverage_degraded",
            "1 while some check cannot run (driftgate status: health.reasons): a refused system call, an unwatched container, an unmarked mount, an unreadable exec, an unset vm.memfd_noexec, a problem within the last 10 minutes.",
            u64::from(s.health.state == "degraded"),
        )?;
        let problems: Vec<(&str, u64)> = crate::daemon::health::Problem::ALL
            .iter()
            .map(|p| {
                let n = s.health.problems.iter().find(|x| x.kind == p.as_str()).map_or(0, |x| x.count);
                (p.as_str(), n)
            })
            .collect();
        family(
            &mut enc,
            "driftgate_coverage_problems_total",
            "Checks that could not run, by kind.",
            "kind",
            &problems,
        )?;
        let refused: Vec<(&str, u64)> =
            s.health.syscalls.iter().map(|c| (c.call.as_str(), u64::from(!c.ok()))).collect();
        gauge_family(
            &mut enc,
            "driftgate_syscall_refused",
            "1 for a system call refused here (a seccomp filter, a missing capability, an old kernel), as tried at start-up.",
            "call",
            &refused,
        )?;
        gauge(
            &mut enc,
            "driftgate_kernel_layer",
            "1 while the BPF LSM layer verifies at the moment of use (driftgate status: kernel.state says why not).",
            u64::from(s.kernel.state == "on"),
        )?;
        let guarded = |g: &str| s.containers.iter().filter(|c| c.guard.guard == g).count() as u64;
        gauge_family(
            &mut enc,
            "driftgate_containers_guarded",
            "Watched containers by the layers that guard them.",
            "guard",
            &[("kernel+fanotify", guarded("kernel+fanotify")), ("fanotify", guarded("fanotify"))],
        )?;
        let holes: Vec<(&str, u64)> = crate::daemon::kernel::status::HOLES
            .iter()
            .map(|(text, key)| {
                (*key, s.containers.iter().filter(|c| c.guard.holes.iter().any(|h| h == text)).count() as u64)
            })
            .collect();
        gauge_family(
            &mut enc,
            "driftgate_containers_with_hole",
            "Watched containers with each hole that remains (what is not checked at the moment of use).",
            "hole",
            &holes,
        )?;
        family(
            &mut enc,
            "driftgate_kernel_uses_total",
            "Uses the BPF LSM layer checked, refused, reported, and reports lost.",
            "outcome",
            &[
                ("checked", s.kernel.checked),
                ("refused", s.kernel.refused),
                ("reported", s.kernel.reported),
                ("lost", s.kernel.lost),
            ],
        )?;
        gauge(
            &mut enc,
            "driftgate_enforce_mode",
            "1 in enforce mode, 0 in audit mode.",
            u64::from(s.mode == "enforce"),
        )?;
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
        let mut m = enc.encode_descriptor(
            "driftgate_decision_latency_seconds",
            "Time from reading an exec event to answering it.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(h.sum_us() as f64 / 1e6, count, &buckets, None)
    }
}

/// A counter without labels. The encoder adds `_total` to counter names.
fn total(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let name = name.strip_suffix("_total").unwrap_or(name);
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter with one label, `key`, and a sample per value.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    key: &str,
    samples: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    labelled(enc, name.strip_suffix("_total").unwrap_or(name), help, key, samples, MetricType::Counter)
}

/// A gauge with one label, `key`, and a sample per value.
fn gauge_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    key: &str,
    samples: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    labelled(enc, name, help, key, samples, MetricType::Gauge)
}

fn labelled(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    key: &str,
    samples: &[(&str, u64)],
    kind: MetricType,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, v) in samples {
        let labels = [(key, *value)];
        let e = m.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => ConstGauge::new(*v as i64).encode(e)?,
            _ => ConstCounter::new(*v).encode(e)?,
        }
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v as i64).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
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
    /// The metric names this module exports.
    fn exported() -> std::collections::BTreeSet<String> {
        let src = include_str!("metrics.rs");
        src.split('"')
            .filter(|t| t.starts_with("driftgate_") && !t.contains(' '))
            .map(str::to_owned)
            .collect()
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
