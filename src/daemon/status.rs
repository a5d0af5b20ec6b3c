//! `driftgate status`: what the running daemon reports, served on its root-only socket
//! (`super::socket`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::declare::{load, status_group, Group};
use super::hot::{HotStats, Shared};
pub use super::watched::{MountStatus, WatchedContainer};
use crate::container::Registry;
use crate::sink::SinkStats;
use driftgate_core::config::SharedConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    pub schema: String,
    pub version: String,
    pub pid: u32,
    pub mode: String,
    pub node: String,
    pub config: Option<String>,
    pub started: String,
    pub uptime_secs: u64,
    /// Containers whose rootfs is marked: from here on every exec in them is held.
    pub containers: Vec<WatchedContainer>,
    /// Containers found but not watched (marking failed: out of file descriptors, a layer
    /// directory that cannot be opened). Retried on every rescan.
    #[serde(default)]
    pub unwatched: Vec<UnwatchedContainer>,
    pub decisions: Decisions,
    pub findings: BTreeMap<String, u64>,
    pub latency_us: Latency,
    pub ioc_entries: Option<u64>,
    pub indexed_layers: Option<u64>,
    #[serde(default)]
    pub index: Option<IndexStatus>,
    pub spool: Spool,
    /// The daemon's own counts, at the top level of the report.
    #[serde(flatten)]
    pub daemon: DaemonCounts,
    #[serde(default)]
    pub coverage: Coverage,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub writer_hold: WriterHold,
    #[serde(default)]
    pub libraries: LibrariesStatus,
    #[serde(default)]
    pub evidence: EvidenceStatus,
    #[serde(default)]
    pub export: ExportStatus,
    /// Containers frozen by a rule's `response = "freeze"` and not thawed since.
    #[serde(default)]
    pub frozen: Vec<FrozenContainer>,
    /// Whether every check can run: `degraded` with the reasons when one cannot
    /// (`daemon/health.rs`), and the system calls tried at start-up.
    #[serde(default)]
    pub health: super::health::HealthStatus,
    /// The BPF LSM layer ([`super::kernel`]).
    #[serde(default)]
    pub kernel: super::kernel::status::KernelStatus,
}

/// Every group of counts, in the order the `status` text shows them.
pub const GROUPS: &[Group] = &[
    Decisions::GROUP,
    Limits::GROUP,
    WriterHold::GROUP,
    IndexStatus::GROUP,
    Spool::GROUP,
    Coverage::GROUP,
    LibrariesStatus::GROUP,
    EvidenceStatus::GROUP,
    ExportStatus::GROUP,
    DaemonCounts::GROUP,
    super::kernel::status::KernelStatus::GROUP,
];

status_group! {
    /// Exec decisions.
    pub struct Decisions at "/decisions", "decisions", from |s: &Sources| let h = &s.hot; {
        /// Exec events read from the kernel (each held until answered).
        events: u64 = load(&h.events) => "driftgate_exec_events_total" "any",
        /// Execs allowed.
        allowed: u64 = load(&h.allowed) => "driftgate_decisions_total" "allow",
        /// Execs refused.
        denied: u64 = load(&h.denied) => "driftgate_decisions_total" "deny",
        /// Execs held now, not answered yet.
        in_flight: u64 = h.in_flight() => "driftgate_events_in_flight" "",
        /// Exec events from no watched container (answered at once).
        not_container: u64 = load(&h.not_container) => "driftgate_exec_events_total" "none",
        /// Execs proven to be image files by their inode (fast path).
        image_fast: u64 = load(&h.image_fast) => "driftgate_image_proofs_total" "false",
        /// ... whose proof was cached.
        image_cached: u64 = load(&h.image_cached) => "driftgate_image_proofs_total" "true",
        /// Executed files hashed.
        hashed: u64 = load(&h.hashed) => "driftgate_hash_cache_misses_total" "",
        /// Executed files whose hash was cached.
        hash_cache_hits: u64 = load(&h.hash_cache_hits) => "driftgate_hash_cache_hits_total" "",
        /// Answers the kernel did not take.
        answer_errors: u64 = load(&h.answer_errors) => "driftgate_errors_total" "answer",
        /// Execs of image loaders and interpreters whose arguments were looked at.
        indirect: u64 = load(&h.indirect) => "driftgate_indirect_execs_total" "looked_at",
        /// ... whose pending call could not be read.
        indirect_unread: u64 = load(&h.indirect_unread) => "driftgate_indirect_execs_total" "call_unreadable",
        /// ... whose file argument was not found.
        indirect_unresolved: u64 = load(&h.indirect_unresolved) => "driftgate_indirect_execs_total" "argument_not_found",
        /// ... that were not a direct invocation.
        indirect_not_direct: u64 = load(&h.indirect_not_direct) => "driftgate_indirect_execs_total" "not_direct",
        /// ... decided as drift because what they would run could not be established.
        indirect_unverifiable: u64 = load(&h.indirect_unverifiable) => "driftgate_indirect_execs_total" "unverifiable",
        /// Execs whose arguments were matched against the IoC lists' URLs and domains.
        url_checks: u64 = load(&h.url_checks) => "driftgate_url_checks_total" "looked_at",
        /// ... whose pending call could not be read: not checked.
        url_unread: u64 = load(&h.url_unread) => "driftgate_url_checks_total" "call_unreadable",
    }
}

status_group! {
    /// Limits that keep the daemon from being stalled or exhausted, and how often they bit.
    pub struct Limits at "/limits", "limits", from |s: &Sources| let h = &s.hot; let sh = &s.shared; {
        /// The open-file limit.
        nofile: u64 = sh.budget.soft_limit(),
        /// Execs that may wait for the slow path within it.
        pending_limit: u64 = sh.budget.limit(),
        /// Execs decided without their hash: the budget was spent.
        over_budget: u64 = load(&sh.budget.spent) => "driftgate_unverified_total" "budget",
        /// ... the file is over `hashing.max_file_bytes`.
        too_big: u64 = load(&h.too_big) => "driftgate_unverified_total" "too_big",
        /// ... hashing took over `hashing.max_secs`.
        hash_timeouts: u64 = load(&sh.readers.timeouts) => "driftgate_unverified_total" "timeout",
        /// ... waiting for a hashing worker took over `hashing.max_secs`.
        queue_timeouts: u64 = load(&h.queue_timeouts) => "driftgate_unverified_total" "queue_timeout",
        /// ... no reader was free.
        hash_unavailable: u64 = load(&sh.readers.unavailable) => "driftgate_unverified_total" "no_reader",
        /// Hashing readers busy now (one stuck on a file that never returns its data stays busy).
        readers_busy: u64 = sh.readers.busy() as u64 => "driftgate_hash_readers_busy" "",
        /// Failed reads of exec events (the kernel denied those it could not give an fd).
        read_errors: u64 = load(&h.read_errors) => "driftgate_errors_total" "event_read",
        /// Layer lookups that failed (decided as unproven).
        lookup_errors: u64 = load(&h.lookup_errors) => "driftgate_errors_total" "layer_lookup",
        /// Findings counted but not recorded: a container over `findings.container_per_sec`.
        findings_suppressed: u64 = load(&sh.suppressed) => "driftgate_findings_suppressed_total" "",
    }
}

status_group! {
    /// Writers kept out of allowed files until the kernel keeps them out (`daemon.writer_hold_ms`).
    pub struct WriterHold at "/writer_hold", "writers held off", from |s: &Sources| let w = &s.shared.holder; {
        /// How long each allowed file is held, in ms.
        hold_ms: u64 = w.hold().as_millis() as u64,
        /// Files held now.
        held: u64 = w.held() as u64 => "driftgate_files_held" "",
        /// Files leased and held.
        kept: u64 = load(&w.kept) => "driftgate_writer_holds_total" "kept",
        /// Allowed execs of a held file (its hold renewed).
        renewed: u64 = load(&w.renewed) => "driftgate_writer_holds_total" "renewed",
        /// Files not held: over the cap.
        cut: u64 = load(&w.cut) => "driftgate_writer_holds_total" "cut",
        /// ... on a filesystem without leases.
        unsupported: u64 = load(&w.unsupported) => "driftgate_writer_holds_total" "unsupported",
        /// Execs decided without their hash: the file was being written, or had changed, when
        /// it was about to be allowed.
        unsettled: u64 = load(&w.unsettled) => "driftgate_writer_holds_total" "unsettled",
        /// Holds ended because a writer that gave up left their lease being broken.
        breaks_cleared: u64 = load(&w.breaks_cleared) => "driftgate_writer_holds_total" "break_cleared",
    }
}

status_group! {
    /// The layer index: what is known, what is still being indexed.
    pub struct IndexStatus at "/index", "layer index", from |s: &Sources| let i = &s.index; {
        /// Layer directories with an on-node manifest.
        node_layers: u64 = load(&i.node_layers) => "driftgate_index_layers" "node",
        /// Imported manifests available.
        imported_available: u64 = load(&i.imported_available) => "driftgate_index_layers" "imported_available",
        /// Layers of watched containers using an imported manifest.
        imported_matched: u64 = load(&i.imported_matched) => "driftgate_index_layers" "imported_matched",
        /// Layers waiting for or being indexed.
        pending: u64 = load(&i.pending) => "driftgate_index_layers" "pending",
        /// Files indexed on this node.
        indexed_files: u64 = load(&i.indexed_files) => "driftgate_index_files_total" "",
        /// Bytes hashed to index them.
        indexed_bytes: u64 = load(&i.indexed_bytes) => "driftgate_index_bytes_total" "",
        /// Layers found changed on disk since they were indexed (then indexed again).
        changed: u64 = load(&i.changed) => "driftgate_index_layer_events_total" "changed",
        /// Layers that could not be indexed.
        failures: u64 = load(&i.failures) => "driftgate_index_layer_events_total" "failed",
        /// Image-file hashes taken from manifests on the hot path.
        manifest_hashes: u64 = load(&s.hot.manifest_hashes) => "driftgate_manifest_hashes_total" "",
    }
}

status_group! {
    /// The findings spool and journald.
    pub struct Spool at "/spool", "spool", from |s: &Sources|
        let cfg = s.cfg.load();
        let (bytes, segments) = crate::sink::spool::usage(&cfg.spool_dir);
        let k = &s.sink;
    {
        /// Its directory.
        dir: String = cfg.spool_dir.display().to_string(),
        /// Bytes in the spool.
        bytes: u64 = bytes => "driftgate_spool_bytes" "",
        /// Segment files in the spool.
        segments: u64 = segments => "driftgate_spool_segments" "",
        /// Findings durably written.
        recorded: u64 = load(&k.recorded) => "driftgate_findings_recorded_total" "",
        /// Findings lost: the spool write failed.
        write_errors: u64 = load(&k.spool_errors) => "driftgate_findings_lost_total" "spool_write",
        /// ... the sink's queue was full.
        dropped: u64 = load(&k.dropped) => "driftgate_findings_lost_total" "queue_full",
        /// Findings journald did not take (all are in the spool).
        journald_errors: u64 = load(&k.journald_errors) => "driftgate_errors_total" "journald",
        /// Segments deleted by retention (`max_bytes`, `max_age`).
        deleted_segments: u64 = load(&k.deleted_segments) => "driftgate_spool_segments_deleted_total" "",
        /// Findings not written to the journal by its per-container rate limit (all are in the spool).
        journal_suppressed: u64 = load(&k.journal_suppressed) => "driftgate_journal_suppressed_total" "",
        /// Log lines dropped because the logging thread was behind (journald or stderr stuck).
        log_lines_dropped: u64 = crate::sink::log_lines_dropped() => "driftgate_errors_total" "log_dropped",
        /// Times the spool directory was found removed and made again.
        recreated: u64 = load(&k.spool_recreated) => "driftgate_errors_total" "spool_recreated",
    }
}

status_group! {
    /// Coverage beyond the rootfs: other mounts, fileless execution.
    pub struct Coverage at "/coverage", "coverage", from |s: &Sources|
        let ns = &s.shared.namespaces;
        let f = &s.fileless;
    {
        /// Mounts beyond the rootfs are watched (`[mounts] enabled`).
        mounts_enabled: bool = ns.enabled(),
        /// Container mount namespaces known (their mounts marked).
        mount_namespaces: u64 = load(&ns.stats.namespaces) => "driftgate_mount_namespaces" "",
        /// Container mounts beyond the rootfs marked.
        mounts_marked: u64 = load(&ns.stats.mounts_marked) => "driftgate_container_mounts_total" "true",
        /// ... that could not be marked.
        mounts_failed: u64 = load(&ns.stats.mounts_failed) => "driftgate_container_mounts_total" "false",
        /// Execs from containers' mounts other than the rootfs.
        mount_execs: u64 = load(&s.hot.mount_execs) => "driftgate_mount_execs_total" "",
        /// `[fileless] memfd_noexec`: `enforce`, `always` or `off`.
        memfd_noexec: String = format!("{:?}", s.cfg.load().memfd_noexec).to_lowercase(),
        /// The process-event connector: `listening`, `off` or why it is unavailable.
        fileless_audit: String = f.state(),
        /// Exec events read from the process-event connector.
        exec_events: u64 = load(&f.exec_events) => "driftgate_process_exec_events_total" "read",
        /// ... lost.
        exec_events_lost: u64 = load(&f.lost_events) => "driftgate_process_exec_events_total" "lost",
        /// Execs of memfds (fileless) seen.
        memfd_execs: u64 = load(&f.memfd_execs) => "driftgate_memfd_execs_total" "",
    }
}

status_group! {
    /// `[libraries]`: opens held, and how they were settled.
    pub struct LibrariesStatus at "/libraries", "libraries", from |s: &Sources| let h = &s.hot; {
        /// Opens are decided (the marks hold opens and no reload switched it off).
        enabled: bool = s.shared.libraries.on(),
        /// The marks hold opens (set at start-up).
        marked: bool = s.shared.libraries.marked,
        /// Open events read.
        open_events: u64 = load(&h.opens) => "driftgate_open_events_read_total" "",
        /// Inodes whose opens were switched off (proven harmless).
        ignore_marks: u64 = load(&h.ignore_marks) => "driftgate_open_events_total" "ignored",
        /// ... and marks the kernel refused.
        ignore_errors: u64 = load(&h.ignore_errors) => "driftgate_errors_total" "ignore_mark",
        /// Shared objects not proven to be the image's, decided as libraries.
        decided: u64 = load(&h.library_opens) => "driftgate_open_events_total" "library_decided",
        /// Opens of a shared object that were an exec's own (its program or loader).
        by_exec: u64 = load(&h.opens_by_exec) => "driftgate_open_events_total" "exec_own",
        /// Opens made by the daemon itself (reading a script an interpreter was given).
        by_daemon: u64 = load(&h.opens_by_daemon) => "driftgate_open_events_total" "daemon_own",
        /// Opens of files someone had open for writing, and opens for writing (never refused).
        being_written: u64 = load(&h.opens_being_written) => "driftgate_open_events_total" "being_written",
        /// Opens of a file by the thread whose exec of it was just refused: refused, no finding.
        after_refused_exec: u64 = load(&h.opens_after_refusal) => "driftgate_open_events_total" "after_refused_exec",
        /// Opens on a remote mount let through unread while the slow path was over its budget.
        over_budget: u64 = load(&h.opens_over_budget) => "driftgate_open_events_total" "over_budget",
        /// Opens of files that are not shared objects and not the image's: let through,
        /// checked again on their next open.
        rechecked: u64 = load(&h.opens_rechecked) => "driftgate_libraries_rechecked_total" "",
        /// Opens of code by an interpreter (`import x` of a file that is not the image's),
        /// decided as scripts.
        code_decided: u64 = load(&h.code_opens) => "driftgate_open_events_total" "code_decided",
        /// Compiled Python files that cache an image source: let through.
        code_cache: u64 = load(&h.code_opens_cache) => "driftgate_open_events_total" "code_cache",
    }
}

status_group! {
    /// `[evidence]`: the store of copies of the files behind findings.
    pub struct EvidenceStatus at "/evidence", "evidence", from |s: &Sources| let e = &s.sink.evidence; {
        /// The store is open (on, and its directory usable).
        enabled: bool = s.sink.evidence_open.load(Ordering::Relaxed),
        /// Its directory.
        dir: String = s.outputs.0.dir.display().to_string(),
        /// Files in the store.
        files: u64 = load(&e.files) => "driftgate_evidence_files" "",
        /// Bytes in the store.
        bytes: u64 = load(&e.bytes) => "driftgate_evidence_bytes" "",
        /// Its size limit (`max_total_bytes`).
        max_total_bytes: u64 = s.outputs.0.max_total_bytes,
        /// Copies stored.
        stored: u64 = load(&e.stored) => "driftgate_evidence_total" "stored",
        /// Files already stored (the same content).
        already_stored: u64 = load(&e.already) => "driftgate_evidence_total" "already_stored",
        /// Files over `max_file_bytes`, not copied.
        too_big: u64 = load(&e.too_big) => "driftgate_evidence_total" "too_big",
        /// Copies lost (changed before the copy, errors, queue full).
        lost: u64 = load(&e.lost) => "driftgate_evidence_total" "lost",
        /// Copies evicted by `max_total_bytes`.
        evicted: u64 = load(&e.evicted) => "driftgate_evidence_total" "evicted",
    }
}

status_group! {
    /// `[export]`: the OCSF file, the webhook and OTLP.
    pub struct ExportStatus at "/export", "export", from |s: &Sources|
        let x = &s.sink.export;
        let w = s.outputs.1.webhook.as_ref();
    {
        /// The OCSF file.
        ocsf_file: Option<String> = s.outputs.1.ocsf_file.as_ref().map(|p| p.display().to_string()),
        /// Findings appended to it.
        ocsf_written: u64 = load(&x.ocsf_written) => "driftgate_ocsf_file_total" "written",
        /// ... and those that could not be.
        ocsf_errors: u64 = load(&x.ocsf_errors) => "driftgate_ocsf_file_total" "error",
        /// The webhook's URL.
        webhook: Option<String> = w.map(|w| w.url.clone()),
        /// Its format.
        webhook_format: Option<String> = w.map(|w| format!("{:?}", w.format).to_lowercase()),
        /// Findings it took.
        webhook_sent: u64 = load(&x.webhook.sent) => "driftgate_webhook_total" "sent",
        /// Failed tries.
        webhook_failures: u64 = load(&x.webhook.failures) => "driftgate_webhook_total" "failed_try",
        /// Findings given up after the last try.
        webhook_given_up: u64 = load(&x.webhook.given_up) => "driftgate_webhook_total" "given_up",
        /// Findings dropped (queue full).
        webhook_dropped: u64 = load(&x.webhook.dropped) => "driftgate_webhook_total" "dropped",
        /// Findings waiting in its queue.
        webhook_queued: u64 = load(&x.webhook.queued) => "driftgate_export_queued" "webhook",
        /// `[export.otlp]`: the endpoint and protocol.
        otlp: Option<String> = s.outputs.1.otlp.as_ref().map(|o| {
            let p = match o.protocol {
                driftgate_core::config::OtlpProtocol::Grpc => "grpc",
                driftgate_core::config::OtlpProtocol::HttpProtobuf => "http/protobuf",
            };
            format!("{} ({p})", o.endpoint)
        }),
        /// Findings the collector took.
        otlp_sent: u64 = load(&x.otlp.sent) => "driftgate_otlp_total" "sent",
        /// Failed tries.
        otlp_failures: u64 = load(&x.otlp.failures) => "driftgate_otlp_total" "failed_try",
        /// Findings given up after the last try.
        otlp_given_up: u64 = load(&x.otlp.given_up) => "driftgate_otlp_total" "given_up",
        /// Findings dropped (queue full).
        otlp_dropped: u64 = load(&x.otlp.dropped) => "driftgate_otlp_total" "dropped",
        /// Findings waiting in its queue.
        otlp_queued: u64 = load(&x.otlp.queued) => "driftgate_export_queued" "otlp",
    }
}

status_group! {
    /// The daemon's own counts, at the top level of the report.
    pub struct DaemonCounts at "", "daemon", from |s: &Sources| {
        /// Configuration reloads.
        reloads: u64 = load(&s.reloads) => "driftgate_reloads_total" "ok",
        /// ... refused (the old configuration kept).
        reload_errors: u64 = load(&s.reload_errors) => "driftgate_reloads_total" "error",
        /// Milliseconds decisions have made no progress while execs were held (0 while they
        /// progress); the watchdog ends the daemon at `stall_timeout`.
        stalled_ms: u64 = load(&s.hot.stalled_ms),
        /// Answers that fell back to "allow" because an error path dropped the event undecided.
        implicit_allows: u64 = driftgate_sys::fanotify::IMPLICIT_ALLOWS.load(Ordering::Relaxed) => "driftgate_errors_total" "implicit_allow",
    }
}

/// A container rootfs found but not watched (execs in it are not checked), and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnwatchedContainer {
    pub id: String,
    pub runtime: String,
    pub rootfs: String,
    pub error: String,
}

/// A container whose cgroup driftgate froze.
pub use crate::container::cgroup::Frozen as FrozenContainer;

/// Decision latency percentiles, in µs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

/// Everything a status report is made from.
pub struct Sources {
    pub cfg: SharedConfig,
    pub started: SystemTime,
    pub registry: Arc<ArcSwap<Registry>>,
    pub hot: Arc<HotStats>,
    pub sink: Arc<SinkStats>,
    pub shared: Arc<Shared>,
    pub reloads: Arc<AtomicU64>,
    pub reload_errors: Arc<AtomicU64>,
    pub index: Arc<super::indexer::IndexStats>,
    pub fileless: Arc<super::fileless::FilelessStats>,
    pub unwatched: Arc<ArcSwap<Vec<UnwatchedContainer>>>,
    /// `[evidence]` and `[export]` as the daemon started with them.
    pub outputs: (driftgate_core::config::EvidenceConfig, driftgate_core::config::ExportConfig),
    /// Reloads asked for on the socket (`driftgate reload`).
    pub reloader: Arc<super::reload::Reloader>,
}

impl Sources {
    pub fn snapshot(&self) -> Status {
        let cfg = self.cfg.load();
        let h = &self.hot;
        let kernel = self.shared.namespaces.kernel();
        let rule = self.shared.namespaces.rule();
        let libraries = cfg.libraries_enabled && self.shared.libraries.marked;
        let mut containers: Vec<WatchedContainer> = self
            .registry
            .load()
            .by_dev
            .values()
            // Published before its mark is placed (so that the mark's first event finds it);
            // watched once the mark is there.
            .filter(|c| c.marked_at.get().is_some())
            .map(|c| super::watched::watched(c, kernel, &rule, libraries))
            .collect();
        containers.sort_by(|a, b| (&a.runtime, &a.id).cmp(&(&b.runtime, &b.id)));
        let findings: BTreeMap<String, u64> = driftgate_core::engine::Category::ALL
            .iter()
            .zip(&h.findings)
            .map(|(c, n)| (c.as_str().to_owned(), load(n)))
            .collect();
        let unwatched = (**self.unwatched.load()).clone();
        let health =
            self.shared.health.report(current_problems(&containers, &unwatched, &self.fileless.state()));
        Status {
            kernel: kernel.status(),
            health,
            schema: "driftgate.status.v1".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            mode: self.shared.mode.get().as_str().into(),
            node: cfg.node_name.clone(),
            config: cfg.source.as_ref().map(|p| p.display().to_string()),
            started: driftgate_core::util::rfc3339(self.started),
            uptime_secs: self.started.elapsed().map_or(0, |d| d.as_secs()),
            containers,
            unwatched,
            decisions: Decisions::collect(self),
            findings,
            latency_us: Latency {
                count: h.latency.count(),
                p50: h.latency.percentile_us(50.0),
                p90: h.latency.percentile_us(90.0),
                p99: h.latency.percentile_us(99.0),
                p999: h.latency.percentile_us(99.9),
            },
            ioc_entries: Some(self.shared.iocs.load().len() as u64),
            indexed_layers: Some(load(&self.index.node_layers) + load(&self.index.imported_matched)),
            index: Some(IndexStatus::collect(self)),
            spool: Spool::collect(self),
            daemon: DaemonCounts::collect(self),
            limits: Limits::collect(self),
            writer_hold: WriterHold::collect(self),
            evidence: EvidenceStatus::collect(self),
            export: ExportStatus::collect(self),
            frozen: self.shared.frozen(),
            libraries: LibrariesStatus::collect(self),
            coverage: Coverage::collect(self),
        }
    }
}

/// Coverage missing now: containers found but not watched, container mounts not marked,
/// `vm.memfd_noexec` not set, the fileless recorder unable to listen.
fn current_problems(
    containers: &[WatchedContainer],
    unwatched: &[UnwatchedContainer],
    fileless: &str,
) -> Vec<String> {
    let mut out: Vec<String> = unwatched
        .iter()
        .map(|u| format!("container {} ({}) is not watched: {}", u.id, u.runtime, u.error))
        .collect();
    for c in containers {
        for m in c.mounts.iter().filter(|m| m.state.starts_with("not marked")) {
            out.push(format!("container {}: mount {} ({}) {}", c.id, m.mountpoint, m.fstype, m.state));
        }
        for v in c.memfd_noexec.iter().filter(|v| v.starts_with("failed")) {
            out.push(format!("container {}: vm.memfd_noexec {v}", c.id));
        }
    }
    if fileless.starts_with("unavailable") {
        out.push(format!("fileless execution is not recorded: the process-event connector is {fileless}"));
    }
    out
}
