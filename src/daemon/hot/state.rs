//! The hot path's state and the types its stages pass along: [`Shared`] (what every stage
//! reads), a [`Job`] (an exec on its way), an [`Outcome`] (what the file was found to be).
//! Behaviour lives in the stage modules; this module depends on none of them.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::container::mounts::ContainerMount;
use crate::container::{Container, Registry};
use crate::sink::FindingSender;
use driftgate_core::engine::indirect::ExecKind;
use driftgate_core::engine::{Category, Evidence, Executed, Mode};
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::fs::FileId;

use super::cache::BoundedMap;

/// Counters for status and tests.
#[derive(Debug, Default)]
pub struct HotStats {
    pub events: AtomicU64,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub not_container: AtomicU64,
    pub image_fast: AtomicU64,
    pub image_cached: AtomicU64,
    pub hashed: AtomicU64,
    pub hash_cache_hits: AtomicU64,
    /// Execs from a container's mounts other than its rootfs.
    pub mount_execs: AtomicU64,
    /// Files decided without their hash because they are over `hashing.max_file_bytes`.
    pub too_big: AtomicU64,
    /// Execs decided without their hash because they waited `hashing.max_secs` in the queue.
    pub queue_timeouts: AtomicU64,
    /// Layer lookups that failed (I/O error, resource limits): decided as unproven.
    pub lookup_errors: AtomicU64,
    /// Reads of the fanotify group that failed (EMFILE: the kernel denied those execs).
    pub read_errors: AtomicU64,
    /// Batches of events read from the fanotify group.
    pub reads: AtomicU64,
    /// Milliseconds decisions have made no progress while execs were held (0 while they
    /// progress), kept by the watchdog; it ends the daemon at `stall_timeout`.
    pub stalled_ms: AtomicU64,
    /// Execs whose arguments were matched against the IoC lists' URLs and domains.
    pub url_checks: AtomicU64,
    /// ... whose pending call could not be read: not checked.
    pub url_unread: AtomicU64,
    /// Execs of image loaders and interpreters whose arguments were looked at.
    pub indirect: AtomicU64,
    /// ... whose pending call could not be read (process gone; kernel before 6.8).
    pub indirect_unread: AtomicU64,
    /// ... whose file argument did not resolve (no such file, a pipe): nothing to decide.
    pub indirect_unresolved: AtomicU64,
    /// ... decided as drift because what they would run could not be established (their
    /// argument list, environment, working directory or a path they name could not be read
    /// or followed): refused in enforce mode, a finding in audit mode.
    pub indirect_unverifiable: AtomicU64,
    /// ... that ran a drift file but were not invoked directly (a program's loader, a
    /// script's `#!` interpreter): the program was decided on its own exec.
    pub indirect_not_direct: AtomicU64,
    /// Image-file hashes taken from a layer manifest instead of reading the file.
    pub manifest_hashes: AtomicU64,
    /// Findings by category, in the order of `Category::ALL`.
    pub findings: [AtomicU64; Category::ALL.len()],
    pub answer_errors: AtomicU64,
    /// Open events (`[libraries]`): every one read, whatever became of it.
    pub opens: AtomicU64,
    /// ... of shared objects (ELF `ET_DYN`) not proven to be the image's: decided as libraries.
    pub library_opens: AtomicU64,
    /// ... that were an exec's own open of its program or loader (decided on the exec event).
    pub opens_by_exec: AtomicU64,
    /// ... made by the daemon itself (reading a file an interpreter was given).
    pub opens_by_daemon: AtomicU64,
    /// ... on a remote mount, let through unread because the slow path was over its budget.
    pub opens_over_budget: AtomicU64,
    /// ... of files that were open for writing, so not ignored from then on; and opens for
    /// writing (never refused: a load opens for reading).
    pub opens_being_written: AtomicU64,
    /// ... of files that are not shared objects and not the image's: let through, and checked
    /// again on their next open (never switched off: their bytes can change unseen).
    pub opens_rechecked: AtomicU64,
    /// ... of code by an interpreter (`import x` of a file that is not an image inode):
    /// decided as scripts.
    pub code_opens: AtomicU64,
    /// ... of a compiled Python file that caches an image source (its header names the
    /// source's mtime and size): let through.
    pub code_opens_cache: AtomicU64,
    /// ... of a file by the thread whose exec of it was just refused (a shell looking for `#!`
    /// after the refusal): refused too, without a second finding.
    pub opens_after_refusal: AtomicU64,
    /// Ignore marks placed (one per harmless inode), and those the kernel refused.
    pub ignore_marks: AtomicU64,
    pub ignore_errors: AtomicU64,
    /// Time from reading an event to answering it.
    pub latency: super::latency::Histogram,
}

impl HotStats {
    /// Events read and not answered yet.
    pub fn in_flight(&self) -> u64 {
        let answered = self.allowed.load(Ordering::Relaxed) + self.denied.load(Ordering::Relaxed);
        self.events.load(Ordering::Relaxed).saturating_sub(answered)
    }
}

/// The mode, switchable by a reload without stopping the hot path.
#[derive(Debug)]
pub struct ModeCell(std::sync::atomic::AtomicU8);

impl ModeCell {
    pub fn new(m: Mode) -> Self {
        Self(std::sync::atomic::AtomicU8::new(m as u8))
    }

    pub fn get(&self) -> Mode {
        if self.0.load(Ordering::Relaxed) == Mode::Enforce as u8 {
            Mode::Enforce
        } else {
            Mode::Audit
        }
    }

    pub fn set(&self, m: Mode) {
        self.0.store(m as u8, Ordering::Relaxed);
    }
}

/// What is shared between the main thread and the workers.
pub struct Shared {
    pub mode: ModeCell,
    pub node: String,
    /// The cluster the node is in, for findings.
    pub cluster: Option<String>,
    pub registry: Arc<ArcSwap<Registry>>,
    /// SHA-256 of file versions: overlay files keyed by (container generation, id), host layer
    /// files by (0, id).
    pub hashes: Mutex<BoundedMap<(u64, FileId), [u8; 32]>>,
    /// Settled decisions of writable-layer files, so a re-executed added binary costs a lookup.
    pub outcomes: Mutex<BoundedMap<OutcomeKey, Outcome>>,
    pub aggregator: Arc<driftgate_core::aggregate::Aggregator<crate::sink::ContainerHandle>>,
    /// Asks the metadata thread to look a container up again now.
    pub meta_refresh: Option<crossbeam_channel::Sender<Arc<Container>>>,
    /// Rate limit for log lines a container can trigger.
    pub log_limiter: Mutex<driftgate_core::ratelimit::RateLimiter>,
    /// Known-bad hashes; swapped whole on reload.
    pub iocs: ArcSwap<driftgate_core::index::ioc::IocSet>,
    /// Block IoC matches even in audit mode.
    pub block_iocs: std::sync::atomic::AtomicBool,
    /// Scoped rules; swapped whole on reload.
    pub policy: ArcSwap<driftgate_core::policy::Policy>,
    /// Bumped when what is known about content changes (IoC set reloaded, manifests
    /// attached): the fast path then forgets which image files it already let through, so
    /// each is checked against the new knowledge on its next exec.
    pub knowledge: Arc<AtomicU64>,
    pub findings: FindingSender,
    pub stats: Arc<HotStats>,
    /// The containers' other mounts: which are marked, and marking new namespaces.
    pub namespaces: Arc<crate::daemon::namespaces::Marker>,
    /// Which files are loaders and interpreters whose argument is decided; swapped on reload.
    pub indirect_cfg: ArcSwap<IndirectConfig>,
    /// Files run by a loader or interpreter that were proven to be image files.
    pub targets: Mutex<BoundedMap<(u64, FileId), ()>>,
    /// The hashing workers, for jobs made on any thread (set while the workers run; taken
    /// away at shutdown so that their queues close).
    pub router: arc_swap::ArcSwapOption<Router>,
    /// Reads files for their hash, with a deadline per exec.
    pub readers: super::reader_pool::ReaderPool,
    pub hash_limits: ArcSwap<HashLimits>,
    /// How many execs may wait in the slow path (each holds a file descriptor).
    pub budget: super::budget::FdBudget,
    /// Secrets replaced in findings' arguments (`findings.redact`); swapped on reload.
    pub redact: ArcSwap<driftgate_core::redact::Redactor>,
    /// Argument bytes kept per finding (`findings.max_arg_bytes`).
    pub max_arg_bytes: std::sync::atomic::AtomicUsize,
    /// Full findings per container: a token bucket (`findings.container_burst`,
    /// `container_per_sec`); beyond it findings are counted, not recorded.
    pub record_limiter: Mutex<driftgate_core::ratelimit::RateLimiter>,
    /// Findings not recorded because of that limit.
    pub suppressed: AtomicU64,
    /// Allowed files kept leased until the kernel keeps writers out (`pin.rs`).
    pub holder: super::pin::Holder,
    /// `[libraries]`: whether the marks hold opens, and whether they are decided.
    pub libraries: Libraries,
    /// Programs the image's loader was allowed to run (`ld.so /tmp/tool`), by the exec's thread:
    /// the loader's open of that program comes next, and is not a library load.
    pub loader_runs: Mutex<BoundedMap<(i32, FileId), Instant>>,
    /// Execs refused, by thread and file version: the same thread's open of that file right
    /// after (a shell reading it for `#!` to explain the failure) is no library load of its own.
    pub refused_execs: Mutex<BoundedMap<(i32, FileId), Instant>>,
    /// Containers frozen by a rule's `response = "freeze"` (`respond.rs`).
    pub frozen: Mutex<Vec<crate::container::cgroup::Frozen>>,
    /// Checks that could not run (`daemon/health.rs`).
    pub health: Arc<crate::daemon::health::Health>,
}

/// Library coverage: the marks hold opens only if it was on at start-up; a reload can switch
/// deciding them off (opens are then allowed, and ignored inode by inode) and on again.
#[derive(Debug, Default)]
pub struct Libraries {
    pub marked: bool,
    pub enabled: std::sync::atomic::AtomicBool,
}

impl Libraries {
    pub fn new(marked: bool) -> Libraries {
        Libraries { marked, enabled: std::sync::atomic::AtomicBool::new(marked) }
    }

    pub fn on(&self) -> bool {
        self.marked && self.enabled.load(Ordering::Relaxed)
    }
}

/// Where an open event's job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStage {
    /// Its header is still to be read (a file on a network or FUSE mount: off the event loop).
    Unclassified,
    /// A shared object not proven to be the image's: decided as a library.
    Library,
    /// Code an interpreter loads (`import x`) that is not an image inode: decided as a script.
    Code,
}

/// `[scripts]` and `[loader]`.
#[derive(Debug, Clone)]
pub struct IndirectConfig {
    pub scripts: bool,
    pub loader: bool,
    pub interpreters: driftgate_core::engine::indirect::Interpreters,
}

impl IndirectConfig {
    pub fn from_config(c: &driftgate_core::config::Config) -> IndirectConfig {
        IndirectConfig {
            scripts: c.scripts_enabled,
            loader: c.loader_enabled,
            interpreters: c.interpreters.clone(),
        }
    }
}

/// Where slow-path jobs go: small files to the pool, large ones to their own worker; each
/// queue fair between containers.
pub struct Router {
    pub small: Arc<super::queue::FairQueue<Job>>,
    pub large: Arc<super::queue::FairQueue<Job>>,
    pub large_bytes: u64,
}

/// The file an image loader or interpreter was asked to run, decided instead of the exec'd file.
pub struct Target {
    /// Open for reading (hashing goes through it), or `O_PATH` when `reopen`.
    pub fd: std::os::fd::OwnedFd,
    /// Found on the event loop with library coverage on: opened `O_PATH`, to be reopened for
    /// reading by a worker (opening it raises an open event the loop must answer).
    pub reopen: bool,
    pub executed: Executed,
    pub interpreter: driftgate_core::finding::InterpreterRef,
    /// Already decided by identity (an image file whose manifest hash is an IoC).
    pub proven: Option<Outcome>,
}

/// `[hashing]` limits, swapped on reload.
#[derive(Debug, Clone, Copy)]
pub struct HashLimits {
    pub max_bytes: u64,
    pub max_time: std::time::Duration,
}

impl HashLimits {
    pub fn from_config(c: &driftgate_core::config::Config) -> HashLimits {
        HashLimits { max_bytes: c.max_hash_bytes, max_time: c.max_hash_time }
    }
}

/// One exec that needs the slow path.
pub struct Job {
    pub ev: PendingExec,
    pub container: Arc<Container>,
    pub id: FileId,
    pub raw_path: Vec<u8>,
    pub received: Instant,
    /// The container mount the file is on, when it is not the rootfs.
    pub mount: Option<Arc<ContainerMount>>,
    /// When the file to decide is not the event's own: what a loader or interpreter runs.
    pub target: Option<Target>,
    /// An open event (library coverage) rather than an exec.
    pub open: Option<OpenStage>,
    /// The exec is an interpreter's `AT_EXECVE_CHECK` of a script it is about to run.
    pub execve_check: bool,
}

impl Job {
    pub fn new(
        ev: PendingExec,
        container: &Arc<Container>,
        id: FileId,
        raw_path: Vec<u8>,
        mount: Option<Arc<ContainerMount>>,
    ) -> Job {
        Job {
            ev,
            container: Arc::clone(container),
            id,
            raw_path,
            received: Instant::now(),
            mount,
            target: None,
            open: None,
            execve_check: false,
        }
    }

    /// A job that decides `target` (a file a loader or interpreter runs) for the exec `ev`.
    pub fn with_target(
        ev: PendingExec,
        container: &Arc<Container>,
        id: FileId,
        raw_path: Vec<u8>,
        mount: Option<Arc<ContainerMount>>,
        target: Target,
    ) -> Job {
        let mut j = Job::new(ev, container, id, raw_path, mount);
        j.target = Some(target);
        j
    }

    /// What is being run, for the decision's category.
    pub(super) fn executed(&self) -> Executed {
        match self.open {
            Some(OpenStage::Code) => return Executed::Script,
            Some(_) => return Executed::Library,
            None => {}
        }
        if self.execve_check {
            return Executed::Script;
        }
        self.target.as_ref().map_or(Executed::Binary, |t| t.executed)
    }

    /// The fd the file to decide is read through.
    pub(super) fn file_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.target.as_ref().map_or_else(|| self.ev.fd(), |t| t.fd.as_fd())
    }

    /// The key of this file version in the hash cache: a rootfs file's is per container (an
    /// overlay's inode numbers are its own), a mount file's is global (the same volume file
    /// seen by many containers is hashed once).
    pub(super) fn hash_key(&self) -> (u64, FileId) {
        if self.mount.is_some() {
            (0, self.id)
        } else {
            (self.container.generation, self.id)
        }
    }
}

impl Shared {
    /// Swaps in a new IoC set; image files already let through are checked against it on
    /// their next exec.
    pub fn set_iocs(&self, set: driftgate_core::index::ioc::IocSet) {
        self.iocs.store(Arc::new(set));
        self.knowledge.fetch_add(1, Ordering::Relaxed);
    }
}

/// What is known of the hash of the file a job decides.
pub(crate) enum HashState {
    Known([u8; 32]),
    /// Known, for a newer version of the file than the exec event saw (see [`hash_stable`]).
    KnownNewer([u8; 32]),
    /// Not cached, and this thread may not hash (the main thread): a worker must.
    NotYet,
    /// It could not be had: why (the finding says it).
    Missing(String),
}

/// What the decision was based on, for building the finding.
#[derive(Clone)]
pub struct Outcome {
    pub(super) evidence: Evidence,
    pub(super) path: Vec<u8>,
    pub(super) sha256: Option<[u8; 32]>,
    /// For an added file: where the image has the same content (`cp /bin/sh /tmp/x`).
    pub(super) image_paths: Vec<Vec<u8>>,
    /// The container mount the file is on, when it is not the rootfs.
    pub(super) mount: Option<Arc<ContainerMount>>,
    /// For a file with the image's content (a copy-up): what it runs besides itself.
    pub(super) kind: ExecKind,
    /// Why it was decided without its hash, if it was.
    pub(super) reason: Option<String>,
    /// Its hash is of a newer version of the file than the exec event named: right for this
    /// decision, not to be remembered for that version.
    pub(super) newer: bool,
    /// The file was unlinked when it was decided (`path` is its last name).
    pub(super) deleted: bool,
}

impl Outcome {
    /// What an indirect exec would run, not established: decided as drift, `reason` says why.
    pub fn unverifiable(path: Vec<u8>, reason: String) -> Outcome {
        Outcome { reason: Some(reason), ..Outcome::new(Evidence::Unverifiable, path, None) }
    }

    pub(crate) fn new(evidence: Evidence, path: Vec<u8>, sha256: Option<[u8; 32]>) -> Outcome {
        Outcome {
            evidence,
            path,
            sha256,
            image_paths: Vec::new(),
            mount: None,
            kind: ExecKind::Plain,
            reason: None,
            newer: false,
            deleted: false,
        }
    }
}

/// Key of the outcome cache: one file version, executed under one name, in one container.
pub type OutcomeKey = (u64, FileId, Vec<u8>);

pub enum Routed {
    Done,
    Slow(Box<Job>),
}

impl Routed {
    /// The job still to be hashed, if any.
    pub fn into_job(self) -> Option<Job> {
        match self {
            Routed::Done => None,
            Routed::Slow(j) => Some(*j),
        }
    }
}
