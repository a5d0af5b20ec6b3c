//! `driftgate status`: what the running daemon reports, served on its root-only socket
//! (`super::socket`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

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
    pub reloads: u64,
    pub reload_errors: u64,
    /// Milliseconds decisions have made no progress while execs were held (0 while they
    /// progress); the watchdog ends the daemon at `stall_timeout`.
    #[serde(default)]
    pub stalled_ms: u64,
    pub implicit_allows: u64,
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

/// `[evidence]`: the store of copies of the files behind findings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EvidenceStatus {
    /// The store is open (on, and its directory usable).
    pub enabled: bool,
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
    pub max_total_bytes: u64,
    pub stored: u64,
    pub already_stored: u64,
    /// Files over `max_file_bytes`, not copied; copies lost (changed before the copy, errors,
    /// queue full); copies evicted by `max_total_bytes`.
    pub too_big: u64,
    pub lost: u64,
    pub evicted: u64,
}

/// `[export]`: the OCSF file and the webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExportStatus {
    pub ocsf_file: Option<String>,
    pub ocsf_written: u64,
    pub ocsf_errors: u64,
    pub webhook: Option<String>,
    pub webhook_format: Option<String>,
    pub webhook_sent: u64,
    pub webhook_failures: u64,
    pub webhook_given_up: u64,
    pub webhook_dropped: u64,
    pub webhook_queued: u64,
    /// `[export.otlp]`: the endpoint, and the same counts as the webhook's.
    #[serde(default)]
    pub otlp: Option<String>,
    #[serde(default)]
    pub otlp_sent: u64,
    #[serde(default)]
    pub otlp_failures: u64,
    #[serde(default)]
    pub otlp_given_up: u64,
    #[serde(default)]
    pub otlp_dropped: u64,
    #[serde(default)]
    pub otlp_queued: u64,
}

/// A container whose cgroup driftgate froze.
pub use crate::container::cgroup::Frozen as FrozenContainer;

/// `[libraries]`: opens held, and how they were settled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LibrariesStatus {
    /// Opens are decided (the marks hold opens and no reload switched it off).
    pub enabled: bool,
    /// The marks hold opens (set at start-up).
    pub marked: bool,
    /// Open events read.
    pub open_events: u64,
    /// Inodes whose opens were switched off (proven harmless), and marks the kernel refused.
    pub ignore_marks: u64,
    pub ignore_errors: u64,
    /// Shared objects not proven to be the image's, decided as libraries.
    pub decided: u64,
    /// Opens of a shared object that were an exec's own (its program or loader).
    pub by_exec: u64,
    /// Opens made by the daemon itself (reading a script an interpreter was given).
    pub by_daemon: u64,
    /// Opens of files someone had open for writing (checked again on their next open), and
    /// opens for writing (never refused).
    pub being_written: u64,
    /// Opens of a file by the thread whose exec of it was just refused: refused, no finding.
    #[serde(default)]
    pub after_refused_exec: u64,
    /// Opens on a remote mount let through unread while the slow path was over its budget.
    #[serde(default)]
    pub over_budget: u64,
    /// Opens of files that are not shared objects and not the image's: let through, checked
    /// again on their next open.
    #[serde(default)]
    pub rechecked: u64,
    /// Opens of code by an interpreter (`import x` of a file that is not the image's):
    /// decided as scripts; and compiled Python files that cache an image source: let through.
    #[serde(default)]
    pub code_decided: u64,
    #[serde(default)]
    pub code_cache: u64,
}

/// Writers kept out of allowed files until the kernel keeps them out (`daemon.writer_hold_ms`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WriterHold {
    pub hold_ms: u64,
    /// Files held now.
    pub held: u64,
    /// Files leased and held; allowed execs of a held file (its hold renewed).
    pub kept: u64,
    pub renewed: u64,
    /// Files not held: over the cap; on a filesystem without leases.
    pub cut: u64,
    pub unsupported: u64,
    /// Execs decided without their hash because the file was being written, or had
    /// changed, when it was about to be allowed.
    pub unsettled: u64,
    /// Holds ended because a writer that gave up (`touch`'s non-blocking open) left their
    /// lease being broken.
    #[serde(default)]
    pub breaks_cleared: u64,
}

/// The layer index: what is known, what is still being indexed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct IndexStatus {
    /// Layer directories with an on-node manifest.
    pub node_layers: u64,
    /// Imported manifests available, and layers of watched containers using one.
    pub imported_available: u64,
    pub imported_matched: u64,
    /// Layers waiting for or being indexed.
    pub pending: u64,
    pub indexed_files: u64,
    pub indexed_bytes: u64,
    /// Layers found changed on disk since they were indexed (then re-indexed).
    pub changed: u64,
    pub failures: u64,
    /// Image-file hashes taken from manifests on the hot path.
    pub manifest_hashes: u64,
}

/// A container rootfs found but not watched (execs in it are not checked), and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnwatchedContainer {
    pub id: String,
    pub runtime: String,
    pub rootfs: String,
    pub error: String,
}

/// Coverage beyond the rootfs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Coverage {
    pub mounts_enabled: bool,
    pub mount_namespaces: u64,
    pub mounts_marked: u64,
    pub mounts_failed: u64,
    pub mount_execs: u64,
    /// `[fileless] memfd_noexec`: `enforce`, `always` or `off`.
    #[serde(default)]
    pub memfd_noexec: String,
    /// The process-event connector: `listening`, `off` or why it is unavailable.
    #[serde(default)]
    pub fileless_audit: String,
    #[serde(default)]
    pub exec_events: u64,
    #[serde(default)]
    pub exec_events_lost: u64,
    #[serde(default)]
    pub memfd_execs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Decisions {
    pub events: u64,
    pub allowed: u64,
    pub denied: u64,
    pub in_flight: u64,
    pub not_container: u64,
    pub image_fast: u64,
    pub image_cached: u64,
    pub hashed: u64,
    pub hash_cache_hits: u64,
    pub answer_errors: u64,
    /// Execs of image loaders and interpreters whose arguments were looked at, and of those:
    /// pending call unreadable, file argument not found, not a direct invocation, and decided
    /// as drift because what they would run could not be established.
    #[serde(default)]
    pub indirect: u64,
    #[serde(default)]
    pub indirect_unread: u64,
    #[serde(default)]
    pub indirect_unresolved: u64,
    #[serde(default)]
    pub indirect_not_direct: u64,
    #[serde(default)]
    pub indirect_unverifiable: u64,
}

/// Limits that keep the daemon from being stalled or exhausted, and how often they bit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Limits {
    /// The open-file limit, and how many execs may wait for the slow path within it.
    pub nofile: u64,
    pub pending_limit: u64,
    /// Execs decided without their hash: budget spent, over `hashing.max_file_bytes`, hashing
    /// over `hashing.max_secs`, no reader free.
    pub over_budget: u64,
    pub too_big: u64,
    pub hash_timeouts: u64,
    /// ... and waiting for a hashing worker longer than `hashing.max_secs`.
    #[serde(default)]
    pub queue_timeouts: u64,
    pub hash_unavailable: u64,
    /// Hashing readers busy now (some may be stuck on a file that never returns its data).
    pub readers_busy: u64,
    /// Failed reads of exec events (the kernel denied those it could not give an fd).
    pub read_errors: u64,
    pub lookup_errors: u64,
    /// Findings counted but not recorded: a container over `findings.container_per_sec`.
    #[serde(default)]
    pub findings_suppressed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Spool {
    pub dir: String,
    pub bytes: u64,
    pub segments: u64,
    pub recorded: u64,
    pub write_errors: u64,
    pub dropped: u64,
    pub journald_errors: u64,
    pub deleted_segments: u64,
    #[serde(default)]
    pub journal_suppressed: u64,
    /// Log lines dropped because the logging thread was behind (journald or stderr stuck).
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// Times the spool directory was found removed and made again.
    #[serde(default)]
    pub recreated: u64,
}

/// Everything a status report is made from.
pub struct Sources {
    pub cfg: SharedConfig,
    pub started: SystemTime,
    pub registry: Arc<ArcSwap<Registry>>,
    pub hot: Arc<HotStats>,
    pub sink: Arc<SinkStats>,
    pub shared: Arc<Shared>,
    pub reloads: Arc<std::sync::atomic::AtomicU64>,
    pub reload_errors: Arc<std::sync::atomic::AtomicU64>,
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
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let kernel = self.shared.namespaces.kernel();
        let rule = self.shared.namespaces.rule();
        let libraries = cfg.libraries_enabled && self.shared.libraries.marked;
        let mut containers: Vec<WatchedContainer> = self
            .registry
            .load()
            .by_dev
            .values()
            .map(|c| super::watched::watched(c, kernel, &rule, libraries))
            .collect();
        containers.sort_by(|a, b| (&a.runtime, &a.id).cmp(&(&b.runtime, &b.id)));
        let findings: BTreeMap<String, u64> = driftgate_core::engine::Category::ALL
            .iter()
            .zip(&h.findings)
            .map(|(c, n)| (c.as_str().to_owned(), ld(n)))
            .collect();
        let (bytes, segments) = crate::sink::spool::usage(&cfg.spool_dir);
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
            decisions: Decisions {
                events: ld(&h.events),
                allowed: ld(&h.allowed),
                denied: ld(&h.denied),
                in_flight: h.in_flight(),
                not_container: ld(&h.not_container),
                image_fast: ld(&h.image_fast),
                image_cached: ld(&h.image_cached),
                hashed: ld(&h.hashed),
                hash_cache_hits: ld(&h.hash_cache_hits),
                answer_errors: ld(&h.answer_errors),
                indirect: ld(&h.indirect),
                indirect_unread: ld(&h.indirect_unread),
                indirect_unresolved: ld(&h.indirect_unresolved),
                indirect_not_direct: ld(&h.indirect_not_direct),
                indirect_unverifiable: ld(&h.indirect_unverifiable),
            },
            findings,
            latency_us: Latency {
                count: h.latency.count(),
                p50: h.latency.percentile_us(50.0),
                p90: h.latency.percentile_us(90.0),
                p99: h.latency.percentile_us(99.0),
                p999: h.latency.percentile_us(99.9),
            },
            ioc_entries: Some(self.shared.iocs.load().len() as u64),
            indexed_layers: Some(ld(&self.index.node_layers) + ld(&self.index.imported_matched)),
            index: Some(IndexStatus {
                node_layers: ld(&self.index.node_layers),
                imported_available: ld(&self.index.imported_available),
                imported_matched: ld(&self.index.imported_matched),
                pending: ld(&self.index.pending),
                indexed_files: ld(&self.index.indexed_files),
                indexed_bytes: ld(&self.index.indexed_bytes),
                changed: ld(&self.index.changed),
                failures: ld(&self.index.failures),
                manifest_hashes: ld(&h.manifest_hashes),
            }),
            spool: Spool {
                dir: cfg.spool_dir.display().to_string(),
                bytes,
                segments,
                recorded: ld(&self.sink.recorded),
                write_errors: ld(&self.sink.spool_errors),
                dropped: ld(&self.sink.dropped),
                journald_errors: ld(&self.sink.journald_errors),
                deleted_segments: ld(&self.sink.deleted_segments),
                journal_suppressed: ld(&self.sink.journal_suppressed),
                log_lines_dropped: crate::sink::log_lines_dropped(),
                recreated: ld(&self.sink.spool_recreated),
            },
            reloads: ld(&self.reloads),
            reload_errors: ld(&self.reload_errors),
            stalled_ms: ld(&h.stalled_ms),
            implicit_allows: driftgate_sys::fanotify::IMPLICIT_ALLOWS.load(Ordering::Relaxed),
            limits: Limits {
                nofile: self.shared.budget.soft_limit(),
                pending_limit: self.shared.budget.limit(),
                over_budget: ld(&self.shared.budget.spent),
                too_big: ld(&h.too_big),
                hash_timeouts: ld(&self.shared.readers.timeouts),
                queue_timeouts: ld(&h.queue_timeouts),
                hash_unavailable: ld(&self.shared.readers.unavailable),
                readers_busy: self.shared.readers.busy() as u64,
                read_errors: ld(&h.read_errors),
                lookup_errors: ld(&h.lookup_errors),
                findings_suppressed: ld(&self.shared.suppressed),
            },
            writer_hold: {
                let w = &self.shared.holder;
                WriterHold {
                    hold_ms: w.hold().as_millis() as u64,
                    held: w.held() as u64,
                    kept: ld(&w.kept),
                    renewed: ld(&w.renewed),
                    cut: ld(&w.cut),
                    unsupported: ld(&w.unsupported),
                    unsettled: ld(&w.unsettled),
                    breaks_cleared: ld(&w.breaks_cleared),
                }
            },
            evidence: {
                let e = &self.sink.evidence;
                EvidenceStatus {
                    enabled: self.sink.evidence_open.load(Ordering::Relaxed),
                    dir: self.outputs.0.dir.display().to_string(),
                    files: ld(&e.files),
                    bytes: ld(&e.bytes),
                    max_total_bytes: self.outputs.0.max_total_bytes,
                    stored: ld(&e.stored),
                    already_stored: ld(&e.already),
                    too_big: ld(&e.too_big),
                    lost: ld(&e.lost),
                    evicted: ld(&e.evicted),
                }
            },
            export: {
                let x = &self.sink.export;
                let w = self.outputs.1.webhook.as_ref();
                ExportStatus {
                    ocsf_file: self.outputs.1.ocsf_file.as_ref().map(|p| p.display().to_string()),
                    ocsf_written: ld(&x.ocsf_written),
                    ocsf_errors: ld(&x.ocsf_errors),
                    webhook: w.map(|w| w.url.clone()),
                    webhook_format: w.map(|w| format!("{:?}", w.format).to_lowercase()),
                    webhook_sent: ld(&x.webhook.sent),
                    webhook_failures: ld(&x.webhook.failures),
                    webhook_given_up: ld(&x.webhook.given_up),
                    webhook_dropped: ld(&x.webhook.dropped),
                    webhook_queued: ld(&x.webhook.queued),
                    otlp: self.outputs.1.otlp.as_ref().map(|o| {
                        let p = match o.protocol {
                            driftgate_core::config::OtlpProtocol::Grpc => "grpc",
                            driftgate_core::config::OtlpProtocol::HttpProtobuf => "http/protobuf",
                        };
                        format!("{} ({p})", o.endpoint)
                    }),
                    otlp_sent: ld(&x.otlp.sent),
                    otlp_failures: ld(&x.otlp.failures),
                    otlp_given_up: ld(&x.otlp.given_up),
                    otlp_dropped: ld(&x.otlp.dropped),
                    otlp_queued: ld(&x.otlp.queued),
                }
            },
            frozen: self.shared.frozen(),
            libraries: LibrariesStatus {
                enabled: self.shared.libraries.on(),
                marked: self.shared.libraries.marked,
                open_events: ld(&h.opens),
                ignore_marks: ld(&h.ignore_marks),
                ignore_errors: ld(&h.ignore_errors),
                decided: ld(&h.library_opens),
                by_exec: ld(&h.opens_by_exec),
                by_daemon: ld(&h.opens_by_daemon),
                being_written: ld(&h.opens_being_written),
                after_refused_exec: ld(&h.opens_after_refusal),
                over_budget: ld(&h.opens_over_budget),
                rechecked: ld(&h.opens_rechecked),
                code_decided: ld(&h.code_opens),
                code_cache: ld(&h.code_opens_cache),
            },
            coverage: Coverage {
                mounts_enabled: self.shared.namespaces.enabled(),
                mount_namespaces: ld(&self.shared.namespaces.stats.namespaces),
                mounts_marked: ld(&self.shared.namespaces.stats.mounts_marked),
                mounts_failed: ld(&self.shared.namespaces.stats.mounts_failed),
                mount_execs: ld(&h.mount_execs),
                memfd_noexec: format!("{:?}", cfg.memfd_noexec).to_lowercase(),
                fileless_audit: self.fileless.state(),
                exec_events: ld(&self.fileless.exec_events),
                exec_events_lost: ld(&self.fileless.lost_events),
                memfd_execs: ld(&self.fileless.memfd_execs),
            },
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
