//! Where findings go: the durable spool first, then journald (or stderr when there is no
//! journald). Runs on its own thread; the hot path only ever `try_send`s into a bounded queue,
//! so a slow disk never holds up an exec.

pub mod evidence;
pub mod export;
mod metadata;

pub use metadata::{ContainerHandle, Metadata};
mod http;
pub mod journald;
mod otlp;
pub mod spool;
mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use driftgate_core::aggregate::Aggregator;
use driftgate_core::finding::Finding;
use driftgate_core::util::printable;
use journald::{Entry, Journal};
use spool::SpoolWriter;

/// A new finding id: a UUIDv7, so that ids sort by time.
pub fn new_finding_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Counters shared with the rest of the daemon.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Findings durably written to the spool.
    pub recorded: AtomicU64,
    /// Findings that could not be written to the spool (still sent to journald).
    pub spool_errors: AtomicU64,
    /// Findings dropped because the queue was full.
    pub dropped: AtomicU64,
    pub journald_errors: AtomicU64,
    /// Spool segments deleted by retention.
    pub deleted_segments: AtomicU64,
    /// Findings recorded in the spool but held back from journald/stderr by the per-container
    /// rate limit.
    pub journal_suppressed: AtomicU64,
    /// Times the spool directory had been removed and was made again.
    pub spool_recreated: AtomicU64,
    /// The evidence store (when open) and the exports.
    pub evidence: Arc<evidence::EvidenceStats>,
    pub evidence_open: std::sync::atomic::AtomicBool,
    pub export: Arc<export::ExportStats>,
}

/// The hot path's handle.
#[derive(Clone)]
pub struct FindingSender {
    // Boxed: a bounded channel allocates all its slots up front.
    tx: Sender<Box<Queued>>,
    stats: Arc<SinkStats>,
    /// The evidence thread, when `[evidence]` is on.
    evidence: Option<evidence::EvidenceSender<Box<Queued>>>,
}

impl FindingSender {
    /// Sends a finding about `container`: the sink fills in the container's metadata when it
    /// writes the finding, waiting (the finding, never the exec) for the container's first
    /// metadata lookup to finish.
    pub fn send_for(&self, f: Finding, container: Option<ContainerHandle>) {
        self.queue(Self::queued(f, container));
    }

    /// Whether findings get a copy of their file (`[evidence]`).
    pub fn keeps_evidence(&self) -> bool {
        self.evidence.is_some()
    }

    /// Sends a finding with the file it is about (`file`: an fd of the exact inode decided),
    /// to be copied into the evidence store first (its bytes must hash to the finding's
    /// `file.sha256`). Without a store, or without a file, it is sent as it is.
    pub fn send_with_file(
        &self,
        f: Finding,
        container: Option<ContainerHandle>,
        file: Option<std::os::fd::OwnedFd>,
    ) {
        let expected =
            f.file.sha256.as_deref().and_then(|h| driftgate_core::util::parse_sha256(h.as_bytes()));
        let urgent = f.ioc.is_some();
        let q = Self::queued(f, container);
        match (&self.evidence, file) {
            (Some(ev), Some(fd)) => {
                if let Err(q) = ev.submit(evidence::Request { queued: q, fd, expected }, urgent) {
                    self.queue(q);
                }
            }
            _ => self.queue(q),
        }
    }

    fn queued(f: Finding, container: Option<ContainerHandle>) -> Box<Queued> {
        // Metadata not complete yet: wait for a lookup made from now on.
        let wait_for = container.as_ref().and_then(|c| c.pending_version()).map_or(0, |v| v + 1);
        Box::new(Queued { finding: f, container, since: Instant::now(), wait_for })
    }

    fn queue(&self, q: Box<Queued>) {
        match self.tx.try_send(q) {
            Ok(()) => {}
            Err(TrySendError::Full(q)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(finding_id = %q.finding.id, "finding queue full; finding dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl evidence::Evidenced for Box<Queued> {
    fn set_evidence(&mut self, e: driftgate_core::finding::EvidenceRef) {
        self.finding.evidence = Some(e);
    }
}

/// A finding on its way to the sinks.
pub struct Queued {
    finding: Finding,
    container: Option<ContainerHandle>,
    since: Instant,
    /// The container's `meta_version` to wait for (0: none).
    wait_for: u64,
}

/// How long a finding may wait for its container's metadata.
const METADATA_WAIT: Duration = Duration::from_secs(5);

impl Queued {
    fn ready(&self) -> bool {
        self.container.as_ref().is_none_or(|c| c.pending_version().is_none_or(|v| v >= self.wait_for))
            || self.since.elapsed() >= METADATA_WAIT
    }

    /// The finding with the container's metadata as it is now.
    fn into_finding(self) -> Finding {
        let mut f = self.finding;
        if let Some(c) = self.container {
            f.container = c.container_ref();
        }
        f
    }
}

pub enum JournalTarget {
    Journald(Journal),
    Stderr,
}

/// Where findings go besides the spool and the journal.
pub struct Outputs {
    /// The evidence store (`[evidence]` on and its directory usable).
    pub evidence: Option<evidence::Store>,
    pub export: export::Exporter,
}

/// What the sink thread does after the spool: the exports, and the evidence of aggregates.
struct Extras {
    evidence_dir: Option<std::path::PathBuf>,
    export: export::Exporter,
}

/// Starts the sink thread (and the evidence thread). It ends when every sender is dropped,
/// after writing what was queued.
pub fn start(
    mut spool: SpoolWriter,
    journal: JournalTarget,
    stats: Arc<SinkStats>,
    aggregator: Arc<Aggregator<ContainerHandle>>,
    cfg: driftgate_core::config::SharedConfig,
    outputs: Outputs,
) -> (FindingSender, JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::bounded::<Box<Queued>>(65536);
    let st = Arc::clone(&stats);
    let Outputs { evidence, export } = outputs;
    let mut extras =
        Extras { evidence_dir: evidence.as_ref().map(|store| store.dir().to_path_buf()), export };
    let handle = std::thread::Builder::new()
        .name("driftgate-sink".into())
        .spawn(move || {
            driftgate_sys::process::lower_this_thread_priority(10);
            run(&mut spool, &journal, &rx, &st, &aggregator, &cfg, &mut extras)
        })
        .expect("spawn sink thread");
    // The evidence thread holds a sender of its own: the sink ends after it.
    let evidence = evidence.map(|store| evidence::start(store, tx.clone()));
    (FindingSender { tx, stats, evidence }, handle)
}

fn run(
    spool: &mut SpoolWriter,
    journal: &JournalTarget,
    rx: &Receiver<Box<Queued>>,
    stats: &SinkStats,
    aggregator: &Aggregator<ContainerHandle>,
    cfg: &driftgate_core::config::SharedConfig,
    extras: &mut Extras,
) {
    let mut last_retention = Instant::now() - Duration::from_secs(3600);
    let mut limiter = driftgate_core::ratelimit::RateLimiter::new(
        driftgate_core::ratelimit::DEFAULT_BURST,
        driftgate_core::ratelimit::DEFAULT_PER_SEC,
    );
    let mut last_report = Instant::now();
    let mut waiting: Vec<Queued> = Vec::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        let tick = if waiting.is_empty() { Duration::from_millis(500) } else { Duration::from_millis(10) };
        if open {
            match rx.recv_timeout(tick) {
                Ok(q) => waiting.push(*q),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            while waiting.len() < 4096 {
                match rx.try_recv() {
                    Ok(q) => waiting.push(*q),
                    Err(_) => break,
                }
            }
        } else {
            std::thread::sleep(tick);
        }
        // Findings whose container metadata is known (or waited for long enough) are written,
        // in arrival order; at shutdown everything is.
        // Windows that closed become aggregate records; at shutdown all of them do.
        for (finding, container) in aggregator.flush(!open) {
            waiting.push(Queued { finding, container, since: Instant::now(), wait_for: 0 });
        }
        let (ready, rest): (Vec<Queued>, Vec<Queued>) = waiting.drain(..).partition(|q| !open || q.ready());
        waiting = rest;
        let mut batch: Vec<Finding> = ready.into_iter().map(Queued::into_finding).collect();
        if let Some(dir) = &extras.evidence_dir {
            // An aggregate's execs ran the bytes of its window's first finding: that copy.
            for f in batch.iter_mut().filter(|f| f.evidence.is_none() && f.count > 1) {
                if let Some(sha) = &f.file.sha256 {
                    f.evidence = Some(evidence::aggregate_ref(dir, sha));
                }
            }
        }
        if last_retention.elapsed() >= Duration::from_secs(10) || !open {
            last_retention = Instant::now();
            let c = cfg.load();
            if let Err(e) = spool.set_segment_bytes(c.spool_segment_bytes) {
                tracing::error!(error = %e, "could not start a new spool segment");
            }
            for p in spool.enforce_retention(c.spool_max_bytes, c.spool_max_age) {
                stats.deleted_segments.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(segment = %p.display(), "spool retention: deleted the oldest segment");
            }
        }
        if batch.is_empty() {
            continue;
        }
        let res = spool.append(&batch);
        stats.spool_recreated.fetch_add(spool.take_recreated(), Ordering::Relaxed);
        match res {
            Ok(()) => {
                stats.recorded.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats.spool_errors.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, lost = batch.len(), "could not write findings to the spool");
            }
        }
        extras.export.export(&batch);
        let now = Instant::now();
        for f in &batch {
            match limiter.check(&f.container.id, now) {
                driftgate_core::ratelimit::Verdict::Write { suppressed } => {
                    if suppressed > 0 {
                        report_suppressed(journal, &f.container.id, suppressed);
                    }
                    emit(journal, f, stats);
                }
                driftgate_core::ratelimit::Verdict::Suppress => {
                    stats.journal_suppressed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if last_report.elapsed() >= driftgate_core::ratelimit::REPORT_EVERY {
            last_report = Instant::now();
            for (id, n) in limiter.due_reports(last_report) {
                report_suppressed(journal, &id, n);
            }
        }
    }
}

/// One line saying how many findings of a container were held back from the journal.
fn report_suppressed(journal: &JournalTarget, container: &str, n: u64) {
    let msg = format!(
        "{n} findings from container {} were not written to the journal (rate limit); all are in the spool",
        printable(container.as_bytes())
    );
    match journal {
        JournalTarget::Journald(j) => {
            let mut e = Entry::new();
            e.field("MESSAGE", &msg)
                .field("PRIORITY", "4")
                .field("SYSLOG_IDENTIFIER", "driftgate")
                .field("CONTAINER_ID", container)
                .field("DRIFTGATE_SUPPRESSED", n.to_string());
            let _ = j.send(&e);
        }
        JournalTarget::Stderr => to_stderr(&format!("driftgate: {msg}")),
    }
}

static LOG_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Installs the counter of log lines the logging thread could not take.
pub fn set_log_drop_counter(c: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPS.set(c);
}

/// Log lines dropped because the logging thread was behind (journald or stderr not taking
/// them).
pub fn log_lines_dropped() -> u64 {
    LOG_DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// One line to stderr; a stderr that is gone or full loses the line, it never panics.
fn to_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn emit(journal: &JournalTarget, f: &Finding, stats: &SinkStats) {
    match journal {
        JournalTarget::Journald(j) => {
            if let Err(e) = j.send(&journal_entry(f)) {
                // Not reading (its queue is full) or gone: the finding is in the spool; the loss
                // is counted, and said once per power of two.
                let n = stats.journald_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, lost = n, "journald did not take findings; they are in the spool");
                }
            }
        }
        JournalTarget::Stderr => {
            // JSON escaping keeps a hostile name on this one line.
            to_stderr(&format!("driftgate-finding {}", serde_json::to_string(f).unwrap_or_default()));
        }
    }
}

/// The journal entry for a finding: a readable MESSAGE, a MESSAGE_ID per category, PRIORITY
/// from the severity, one field per finding attribute, and the whole record as JSON.
pub fn journal_entry(f: &Finding) -> Entry {
    let path = f.path_bytes();
    let mut e = Entry::new();
    e.field(
        "MESSAGE",
        format!(
            "{} {} in container {} ({}): {}{}",
            f.action.as_str(),
            f.category.as_str(),
            printable(f.container.id.as_bytes()),
            f.container.runtime,
            printable(&path),
            f.file.sha256.as_deref().map(|h| format!(" sha256={h}")).unwrap_or_default(),
        ),
    );
    e.field("MESSAGE_ID", f.category.message_id())
        .field("PRIORITY", f.severity.syslog_priority().to_string())
        .field("SYSLOG_IDENTIFIER", "driftgate")
        .field("DRIFTGATE_FINDING_ID", &f.id)
        .field("DRIFTGATE_CATEGORY", f.category.as_str())
        .field("DRIFTGATE_SEVERITY", f.severity.as_str())
        .field("DRIFTGATE_MODE", f.mode.as_str())
        .field("ACTION", f.action.as_str())
        .field("NODE", &f.node)
        .field("CONTAINER_ID", &f.container.id)
        .field("CONTAINER_RUNTIME", &f.container.runtime)
        .field("CONTAINER_ROOTFS", &f.container.rootfs)
        .field("FILE_PATH", &path)
        .field("FILE_SIZE", f.file.size.to_string())
        .field("FILE_LAYER", &f.file.layer)
        .field("TARGET_PID", f.process.pid.to_string())
        .field("TARGET_TID", f.process.tid.to_string())
        .field("MITRE", f.mitre.join(","));
    let opt = [
        ("CONTAINER_NAME", &f.container.name),
        ("IMAGE", &f.container.image),
        ("IMAGE_DIGEST", &f.container.image_digest),
        ("POD_NAMESPACE", &f.container.pod_namespace),
        ("POD_NAME", &f.container.pod_name),
        ("SHA256", &f.file.sha256),
        ("TARGET_COMM", &f.process.comm),
        ("TARGET_CWD", &f.process.cwd),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            e.field(k, v);
        }
    }
    if let Some(ppid) = f.process.ppid {
        e.field("TARGET_PPID", ppid.to_string());
    }
    if let Some(uid) = f.process.uid {
        e.field("TARGET_UID", uid.to_string());
    }
    if let Some(args) = &f.process.args {
        e.field("TARGET_ARGS", serde_json::to_string(args).unwrap_or_default());
    }
    e.field("DRIFTGATE_FINDING", serde_json::to_string(f).unwrap_or_default());
    e
}
