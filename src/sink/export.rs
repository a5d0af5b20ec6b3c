//! Findings sent off the node as they are recorded (`[export]`): an OCSF file for a log
//! shipper to tail, and a webhook (driftgate's record, Falco's alert shape for a
//! Falcosidekick, or OCSF).
//!
//! Neither can hold up a decision: the sink thread appends to the file after the spool, and
//! hands webhook posts to a thread of their own through a bounded queue; when the queue is
//! full the finding is dropped for the webhook (counted; it is in the spool). The webhook
//! thread retries a failed post with exponential backoff (0.5 s doubling to 30 s, 5 tries),
//! then drops it (counted). At a stop, what is queued gets at most 3 s, one try each.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::{ExportConfig, Webhook, WebhookFormat};
use crate::finding::Finding;

/// Counters for `status` and metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub ocsf_written: AtomicU64,
    pub ocsf_errors: AtomicU64,
    /// Posts the webhook took (2xx), tries that failed (and were retried or given up),
    /// findings given up after the last try, findings dropped because the queue was full.
    pub webhook_sent: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub webhook_given_up: AtomicU64,
    pub webhook_dropped: AtomicU64,
    /// Waiting to be sent now.
    pub webhook_queued: AtomicU64,
}

/// The body for `format`.
pub fn body(f: &Finding, format: WebhookFormat) -> Vec<u8> {
    let v = match format {
        WebhookFormat::Driftgate => serde_json::to_value(f).unwrap_or_default(),
        WebhookFormat::Falco => crate::export::falco(f),
        WebhookFormat::Ocsf => crate::export::ocsf(f),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The OCSF file, reopened when a log rotation moved it away.
struct OcsfFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl OcsfFile {
    fn write(&mut self, batch: &[Finding]) -> std::io::Result<()> {
        let rotated = match (&self.file, std::fs::metadata(&self.path)) {
            (Some(f), Ok(md)) => f.metadata().map_or(true, |m| m.ino() != md.ino() || m.dev() != md.dev()),
            _ => true,
        };
        if rotated {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            self.file = Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&self.path)?,
            );
        }
        let mut out = Vec::new();
        for f in batch {
            serde_json::to_writer(&mut out, &crate::export::ocsf(f))?;
            out.push(b'\n');
        }
        self.file.as_mut().expect("opened above").write_all(&out)
    }
}

/// What the sink thread calls after writing a batch to the spool.
pub struct Exporter {
    ocsf: Option<OcsfFile>,
    /// The webhook thread's queue.
    webhook: Option<Sender<Finding>>,
    stats: Arc<ExportStats>,
    thread: Option<JoinHandle<()>>,
    /// Set at a stop: what is still queued gets one try each.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Exporter {
    /// Opens the exports `cfg` names (the webhook's thread starts here).
    /// `Err` when the webhook's TLS cannot be set up (a CA or client certificate file that
    /// cannot be used): the message names the file.
    pub fn start(cfg: &ExportConfig, stats: Arc<ExportStats>) -> Result<Exporter, String> {
        let ocsf = cfg.ocsf_file.as_ref().map(|p| OcsfFile { path: p.clone(), file: None });
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (webhook, thread) = match &cfg.webhook {
            Some(w) => {
                let tls = w.tls.as_ref().map(super::tls::client).transpose()?;
                let (tx, rx) = crossbeam_channel::bounded::<Finding>(w.queue);
                let (hook, st, stop) = (w.clone(), Arc::clone(&stats), Arc::clone(&stopping));
                let t = std::thread::Builder::new()
                    .name("driftgate-webhook".into())
                    .spawn(move || post_loop(&hook, tls.as_ref(), &rx, &st, &stop))
                    .expect("spawn webhook thread");
                tracing::info!(url = %w.url, format = ?w.format, "sending findings to a webhook");
                (Some(tx), Some(t))
            }
            None => (None, None),
        };
        Ok(Exporter { ocsf, webhook, stats, thread, stopping })
    }

    pub fn export(&mut self, batch: &[Finding]) {
        if let Some(o) = &mut self.ocsf {
            match o.write(batch) {
                Ok(()) => {
                    self.stats.ocsf_written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    let n = self.stats.ocsf_errors.fetch_add(batch.len() as u64, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::error!(path = %o.path.display(), error = %e, "could not write the OCSF export");
                    }
                    o.file = None;
                }
            }
        }
        if let Some(tx) = &self.webhook {
            for f in batch {
                match tx.try_send(f.clone()) {
                    Ok(()) => {
                        self.stats.webhook_queued.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        let n = self.stats.webhook_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(
                                dropped = n,
                                "webhook queue full: findings not sent (they are in the spool)"
                            );
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Exporter {
    /// Gives the webhook thread what is queued and a moment to send it.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.webhook = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TRIES: u32 = 5;
/// How long a stop waits for the webhook to take what is queued.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn post_loop(
    w: &Webhook,
    tls: Option<&super::tls::Tls>,
    rx: &Receiver<Finding>,
    stats: &ExportStats,
    stopping: &std::sync::atomic::AtomicBool,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "webhook: no runtime; findings are not sent");
            return;
        }
    };
    // At a stop, what is queued is sent for at most STOP_GRACE, one try each, and the rest
    // given up after the first failure: a dead or silent endpoint cannot hold the stop.
    let mut stop_by: Option<std::time::Instant> = None;
    let mut failed_while_stopping = false;
    loop {
        let f = match rx.recv() {
            Ok(f) => f,
            Err(_) => return,
        };
        stats.webhook_queued.fetch_sub(1, Ordering::Relaxed);
        if stopping.load(Ordering::Relaxed) {
            let by = *stop_by.get_or_insert_with(|| std::time::Instant::now() + STOP_GRACE);
            if failed_while_stopping || std::time::Instant::now() >= by {
                stats.webhook_given_up.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let body = body(&f, w.format);
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=TRIES {
            match rt.block_on(post(w, tls, &body)) {
                Ok(()) => {
                    stats.webhook_sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    let n = stats.webhook_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(url = %w.url, error = %e, failures = n, "webhook post failed");
                    }
                    if attempt == TRIES || stopping.load(Ordering::Relaxed) {
                        stats.webhook_given_up.fetch_add(1, Ordering::Relaxed);
                        failed_while_stopping |= stopping.load(Ordering::Relaxed);
                        break;
                    }
                    let until = std::time::Instant::now() + delay;
                    while std::time::Instant::now() < until && !stopping.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// One POST; `Err` for a connection failure, a timeout or a status that is not 2xx.
async fn post(w: &Webhook, tls: Option<&super::tls::Tls>, body: &[u8]) -> Result<(), String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(w.authority.as_str()).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        match tls {
            Some(t) => {
                let stream = t
                    .connector
                    .connect(t.server_name.clone(), stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(w, hyper_util::rt::TokioIo::new(stream), body).await
            }
            None => send(w, hyper_util::rt::TokioIo::new(stream), body).await,
        }
    };
    match tokio::time::timeout(w.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", w.timeout.as_secs())),
    }
}

/// The POST over an open connection (plain or TLS).
async fn send<S>(w: &Webhook, io: S, body: &[u8]) -> Result<(), String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(w.path.as_str())
            .header(hyper::header::HOST, w.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("driftgate/", env!("CARGO_PKG_VERSION")));
        for (k, v) in &w.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the answer to its end, so the connection closes cleanly.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}
