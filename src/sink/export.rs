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

use driftgate_core::config::{ExportConfig, WebhookFormat};
use driftgate_core::finding::Finding;

/// Counters for `status` and metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub ocsf_written: AtomicU64,
    pub ocsf_errors: AtomicU64,
    pub webhook: Delivery,
    pub otlp: Delivery,
}

/// One sender's counts: findings the endpoint took, tries that failed (and were retried or
/// given up), findings given up after the last try, findings dropped because the queue was
/// full, and those waiting now.
#[derive(Debug, Default)]
pub struct Delivery {
    pub sent: AtomicU64,
    pub failures: AtomicU64,
    pub given_up: AtomicU64,
    pub dropped: AtomicU64,
    pub queued: AtomicU64,
}

/// The body for `format`.
pub fn body(f: &Finding, format: WebhookFormat) -> Vec<u8> {
    let v = match format {
        WebhookFormat::Driftgate => serde_json::to_value(f).unwrap_or_default(),
        WebhookFormat::Falco => driftgate_core::export::falco(f),
        WebhookFormat::Ocsf => driftgate_core::export::ocsf(f),
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
            serde_json::to_writer(&mut out, &driftgate_core::export::ocsf(f))?;
            out.push(b'\n');
        }
        self.file.as_mut().expect("opened above").write_all(&out)
    }
}

/// What the sink thread calls after writing a batch to the spool.
pub struct Exporter {
    ocsf: Option<OcsfFile>,
    /// The webhook's and OTLP's queues, each to a thread of its own.
    senders: Vec<Queue>,
    stats: Arc<ExportStats>,
    /// Set at a stop: what is still queued gets one try each.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// One sender: its queue, its thread, which counters are its own.
struct Queue {
    name: &'static str,
    tx: Option<Sender<Finding>>,
    thread: Option<JoinHandle<()>>,
    delivery: fn(&ExportStats) -> &Delivery,
}

impl Exporter {
    /// Opens the exports `cfg` names (the senders' threads start here).
    /// `Err` when TLS cannot be set up (a CA or client certificate file that cannot be used),
    /// or a header names an environment variable that is not set: the message names which.
    pub fn start(cfg: &ExportConfig, stats: Arc<ExportStats>) -> Result<Exporter, String> {
        let ocsf = cfg.ocsf_file.as_ref().map(|p| OcsfFile { path: p.clone(), file: None });
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut senders = Vec::new();
        if let Some(w) = &cfg.webhook {
            let tls = w.tls.as_ref().map(super::tls::client).transpose()?;
            let mut hook = w.clone();
            hook.headers = driftgate_core::config::expand_headers("export.webhook_headers", &w.headers)?;
            let send = move |rt: &tokio::runtime::Runtime, f: &Finding| {
                rt.block_on(super::http::post(&hook, tls.as_ref(), &body(f, hook.format), "application/json"))
            };
            senders.push(spawn("webhook", w.queue, &stats, &stopping, |s| &s.webhook, send)?);
            tracing::info!(url = %w.url, format = ?w.format, "sending findings to a webhook");
        }
        if let Some(o) = &cfg.otlp {
            let o = &driftgate_core::config::Otlp {
                headers: driftgate_core::config::expand_headers("export.otlp.headers", &o.headers)?,
                ..o.clone()
            };
            let send = super::otlp::sender(o)?;
            senders.push(spawn("otlp", o.queue, &stats, &stopping, |s| &s.otlp, send)?);
            tracing::info!(endpoint = %o.endpoint, protocol = ?o.protocol, "sending findings over OTLP");
        }
        Ok(Exporter { ocsf, senders, stats, stopping })
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
        for q in &self.senders {
            let Some(tx) = &q.tx else { continue };
            let d = (q.delivery)(&self.stats);
            for f in batch {
                match tx.try_send(f.clone()) {
                    Ok(()) => {
                        d.queued.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        let n = d.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(
                                export = q.name,
                                dropped = n,
                                "export queue full: findings not sent (they are in the spool)"
                            );
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Exporter {
    /// Gives the senders what is queued and a moment to send it.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        for q in &mut self.senders {
            q.tx = None;
        }
        for q in &mut self.senders {
            if let Some(t) = q.thread.take() {
                let _ = t.join();
            }
        }
    }
}

const TRIES: u32 = 5;
/// How long a stop waits for a sender to take what is queued.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Starts a sender's thread: a bounded queue of `queue` findings, each sent with `send`.
fn spawn(
    name: &'static str,
    queue: usize,
    stats: &Arc<ExportStats>,
    stopping: &Arc<std::sync::atomic::AtomicBool>,
    delivery: fn(&ExportStats) -> &Delivery,
    send: impl FnMut(&tokio::runtime::Runtime, &Finding) -> Result<(), String> + Send + 'static,
) -> Result<Queue, String> {
    let (tx, rx) = crossbeam_channel::bounded::<Finding>(queue);
    let (st, stop) = (Arc::clone(stats), Arc::clone(stopping));
    let t = std::thread::Builder::new()
        .name(format!("driftgate-{name}"))
        .spawn(move || deliver_loop(name, &rx, delivery(&st), &stop, send))
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Queue { name, tx: Some(tx), thread: Some(t), delivery })
}

/// Sends each queued finding: 5 tries with backoff from 0.5 s doubling to 30 s; at a stop, what
/// is queued gets one try each for at most [`STOP_GRACE`], and the rest is given up after the
/// first failure (a dead endpoint cannot hold the stop). Every outcome is counted in `d`.
fn deliver_loop(
    name: &'static str,
    rx: &Receiver<Finding>,
    d: &Delivery,
    stopping: &std::sync::atomic::AtomicBool,
    mut send: impl FnMut(&tokio::runtime::Runtime, &Finding) -> Result<(), String>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(export = name, error = %e, "no runtime; findings are not sent");
            return;
        }
    };
    let mut stop_by: Option<std::time::Instant> = None;
    let mut failed_while_stopping = false;
    loop {
        let f = match rx.recv() {
            Ok(f) => f,
            Err(_) => return,
        };
        d.queued.fetch_sub(1, Ordering::Relaxed);
        if stopping.load(Ordering::Relaxed) {
            let by = *stop_by.get_or_insert_with(|| std::time::Instant::now() + STOP_GRACE);
            if failed_while_stopping || std::time::Instant::now() >= by {
                d.given_up.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=TRIES {
            match send(&rt, &f) {
                Ok(()) => {
                    d.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    let n = d.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(export = name, error = %e, failures = n, "{name} post failed");
                    }
                    if attempt == TRIES || stopping.load(Ordering::Relaxed) {
                        d.given_up.fetch_add(1, Ordering::Relaxed);
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
