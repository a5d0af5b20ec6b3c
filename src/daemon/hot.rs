//! The hot path: one place where a held exec becomes a verdict and an answer.
//!
//! Fast path (main thread): `fstat` the event fd; a file on an unknown superblock, or one whose
//! inode is proven to be a lower-layer (image) inode, is allowed at once. The proof is cached
//! per file version, so a repeated image exec costs one `fstat` and a hash-set lookup.
//!
//! Slow path: a file in the container's writable layer. Its content is hashed through the
//! event fd under a read lease (no writer can change it meanwhile), compared with the image's
//! file at the same path, and decided by [`crate::engine::decide`]. Hashing runs on worker
//! threads, with separate workers for large files, so a big file never holds up other execs.
//!
//! Every allowed exec of a container file is first pinned ([`super::pin`]): leased, re-checked
//! and held, so that no writer can change the bytes between the answer and the kernel's own
//! write denial.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::container::layers::ImageLookup;
use crate::container::mounts::ContainerMount;
use crate::container::{Container, Registry};
use crate::engine::indirect::ExecKind;
use crate::engine::{
    judge, Category, Describe, Evidence, Executed, Facts, ImageAtPath, Judgement, Mode, Settings, Verdict,
};
use crate::finding::{self, Finding};
use crate::sink::{ContainerHandle, FindingSender};
use crate::sys::fanotify::PendingExec;
use crate::sys::fs::{self as sfs, FileId};

use super::cache::BoundedMap;
use super::report::{self, FileFacts, ProcFacts};

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
    /// Execs of image loaders and interpreters whose arguments were looked at.
    pub indirect: AtomicU64,
    /// ... whose pending call could not be read (process gone; kernel before 6.8).
    pub indirect_unread: AtomicU64,
    /// ... whose file argument did not resolve (no such file, a pipe): nothing to decide.
    pub indirect_unresolved: AtomicU64,
    /// ... that ran a drift file but were not invoked directly (a program's loader, a
    /// script's `#!` interpreter): the program was decided on its own exec.
    pub indirect_not_direct: AtomicU64,
    /// Image-file hashes taken from a layer manifest instead of reading the file.
    pub manifest_hashes: AtomicU64,
    /// Findings by category, in the order of `Category::ALL`.
    pub findings: [AtomicU64; Category::ALL.len()],
    pub answer_errors: AtomicU64,
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
    pub registry: Arc<ArcSwap<Registry>>,
    /// SHA-256 of file versions: overlay files keyed by (container generation, id), host layer
    /// files by (0, id).
    pub hashes: Mutex<BoundedMap<(u64, FileId), [u8; 32]>>,
    /// Settled decisions of writable-layer files, so a re-executed added binary costs a lookup.
    pub outcomes: Mutex<BoundedMap<OutcomeKey, Outcome>>,
    pub aggregator: Arc<crate::sink::aggregate::Aggregator>,
    /// Asks the metadata thread to look a container up again now.
    pub meta_refresh: Option<crossbeam_channel::Sender<Arc<Container>>>,
    /// Rate limit for log lines a container can trigger.
    pub log_limiter: Mutex<crate::sink::ratelimit::RateLimiter>,
    /// Known-bad hashes; swapped whole on reload.
    pub iocs: ArcSwap<crate::index::ioc::IocSet>,
    /// Block IoC matches even in audit mode.
    pub block_iocs: std::sync::atomic::AtomicBool,
    /// Scoped rules; swapped whole on reload.
    pub policy: ArcSwap<crate::policy::Policy>,
    /// Bumped when what is known about content changes (IoC set reloaded, manifests
    /// attached): the fast path then forgets which image files it already let through, so
    /// each is checked against the new knowledge on its next exec.
    pub knowledge: Arc<AtomicU64>,
    pub findings: FindingSender,
    pub stats: Arc<HotStats>,
    /// The containers' other mounts: which are marked, and marking new namespaces.
    pub namespaces: Arc<super::namespaces::Marker>,
    /// Which files are loaders and interpreters whose argument is decided; swapped on reload.
    pub indirect_cfg: ArcSwap<IndirectConfig>,
    /// Files run by a loader or interpreter that were proven to be image files.
    pub targets: Mutex<BoundedMap<(u64, FileId), ()>>,
    /// The hashing workers, for jobs made on any thread (set while the workers run; taken
    /// away at shutdown so that their queues close).
    pub router: arc_swap::ArcSwapOption<Router>,
    /// Reads files for their hash, with a deadline per exec.
    pub hasher: super::hasher::Hasher,
    pub hash_limits: ArcSwap<HashLimits>,
    /// How many execs may wait in the slow path (each holds a file descriptor).
    pub budget: super::budget::FdBudget,
    /// Argument bytes kept per finding (`findings.max_arg_bytes`).
    pub max_arg_bytes: std::sync::atomic::AtomicUsize,
    /// Full findings per container: a token bucket (`findings.container_burst`,
    /// `container_per_sec`); beyond it findings are counted, not recorded.
    pub record_limiter: Mutex<crate::sink::ratelimit::RateLimiter>,
    /// Findings not recorded because of that limit.
    pub suppressed: AtomicU64,
    /// Allowed files kept leased until the kernel keeps writers out ([`super::pin`]).
    pub holder: super::pin::Holder,
}

/// `[scripts]` and `[loader]`.
#[derive(Debug, Clone)]
pub struct IndirectConfig {
    pub scripts: bool,
    pub loader: bool,
    pub interpreters: crate::engine::indirect::Interpreters,
}

impl IndirectConfig {
    pub fn from_config(c: &crate::config::Config) -> IndirectConfig {
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
    /// Open for reading (hashing goes through it).
    pub fd: std::os::fd::OwnedFd,
    pub executed: Executed,
    pub interpreter: crate::finding::InterpreterRef,
    /// Already decided by identity (an image file whose manifest hash is an IoC).
    pub proven: Option<Outcome>,
}

/// What is known of the hash of the file a job decides.
enum HashState {
    Known([u8; 32]),
    /// Known, for a newer version of the file than the exec event saw (see [`hash_stable`]).
    KnownNewer([u8; 32]),
    /// Not cached, and this thread may not hash (the main thread): a worker must.
    NotYet,
    /// It could not be had: why (the finding says it).
    Missing(String),
}

/// `[hashing]` limits, swapped on reload.
#[derive(Debug, Clone, Copy)]
pub struct HashLimits {
    pub max_bytes: u64,
    pub max_time: std::time::Duration,
}

impl HashLimits {
    pub fn from_config(c: &crate::config::Config) -> HashLimits {
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
}

/// Main-thread state: the cache of file versions proven to be image files.
pub struct FastPath {
    pub shared: Arc<Shared>,
    /// Image file versions proven by identity, with what each runs besides itself.
    image_files: HashMap<(u64, FileId), ExecKind>,
    image_cap: usize,
    knowledge: u64,
}

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

impl FastPath {
    pub fn new(shared: Arc<Shared>, cap: usize) -> Self {
        Self { shared, image_files: HashMap::new(), image_cap: cap, knowledge: 0 }
    }

    /// Decides what can be decided without reading file content. The caller has counted the
    /// event in `stats.events` when it read it (so a decision path that never returns shows).
    pub fn handle(&mut self, ev: PendingExec) -> Routed {
        let stats = &self.shared.stats;
        let k = self.shared.knowledge.load(Ordering::Relaxed);
        if k != self.knowledge {
            self.image_files.clear();
            self.knowledge = k;
        }
        let st = match sfs::fstat_fd(ev.fd()) {
            Ok(st) => st,
            Err(e) => {
                tracing::error!(error = %e, "fstat on exec event failed; allowing");
                self.answer(ev, true);
                return Routed::Done;
            }
        };
        if !sfs::is_regular(&st) {
            self.answer(ev, true);
            return Routed::Done;
        }
        let reg = self.shared.registry.load();
        let (container, mount) = match reg.by_dev.get(&st.st_dev) {
            Some(c) => (Arc::clone(c), None),
            // Not a rootfs: one of the containers' other mounts, or nothing we know.
            None => match self.shared.namespaces.lookup(ev.fd()) {
                Some(hit) => (hit.container, Some(hit.mount)),
                None => {
                    // Never deny on a superblock or mount we do not know as a container's.
                    stats.not_container.fetch_add(1, Ordering::Relaxed);
                    self.answer(ev, true);
                    return Routed::Done;
                }
            },
        };
        drop(reg);
        let container = &container;
        if !container.first_exec_seen.load(Ordering::Relaxed)
            && !container.first_exec_seen.swap(true, Ordering::Relaxed)
        {
            first_exec(container);
        }
        if !container.ns_known.load(Ordering::Relaxed) || !container.pid_known.load(Ordering::Relaxed) {
            // The container's first exec from its own namespaces: mark the mounts and set
            // vm.memfd_noexec before answering, so nothing the process starts next escapes.
            self.shared.namespaces.on_event(container, ev.tid());
        }
        if let Some(mount) = mount {
            return self.mount_exec(ev, container, mount, FileId::from_stat(&st));
        }
        let id = FileId::from_stat(&st);
        let key = (container.generation, id);
        if let Some(kind) = self.image_files.get(&key).copied() {
            stats.image_cached.fetch_add(1, Ordering::Relaxed);
            if let Err(reason) = self.shared.pin_event(&ev, &id) {
                return self.unsettled(ev, container, id, reason);
            }
            if kind.is_plain() {
                self.answer(ev, true);
                return Routed::Done;
            }
            let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
            return self.shared.indirect(ev, container, kind, &raw_path);
        }
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        // A writable-layer file decided before (same version, same name, same container) is
        // decided from the outcome cache, without the layer lookups.
        let okey: OutcomeKey = (container.generation, id, raw_path);
        if let Some(o) = self.shared.cached_outcome(&okey) {
            let (_, _, raw_path) = okey;
            let job = Job::new(ev, container, id, raw_path, None);
            return self.shared.finish(job, o);
        }
        let (_, _, raw_path) = okey;
        for p in identity_candidates(&raw_path, container.rootfs_bytes()) {
            if let Some(layer) = container.layers.lower_identical(p, &id) {
                // An image file: its manifest hash (no reading) against the IoC set.
                if let Some(h) = container.index.load().hash_for(layer, p, &id) {
                    stats.manifest_hashes.fetch_add(1, Ordering::Relaxed);
                    if self.shared.iocs.load().lookup(&h).is_some() {
                        let o = Outcome::image_file(p.to_vec(), h);
                        let job = Job::new(ev, container, id, raw_path, None);
                        return self.shared.finish(job, o);
                    }
                }
                if self.image_files.len() >= self.image_cap {
                    self.image_files.clear();
                }
                let kind = self.shared.classify(&raw_path, ev.fd());
                self.image_files.insert(key, kind);
                stats.image_fast.fetch_add(1, Ordering::Relaxed);
                if let Err(reason) = self.shared.pin_event(&ev, &id) {
                    return self.unsettled(ev, container, id, reason);
                }
                if kind.is_plain() {
                    self.answer(ev, true);
                    return Routed::Done;
                }
                return self.shared.indirect(ev, container, kind, &raw_path);
            }
        }
        let job = Job::new(ev, container, id, raw_path, None);
        // A file hashed before is decided right here; only hashing goes to the workers.
        match self.shared.try_complete(job, false) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }

    /// An exec of a file on one of the container's other mounts (a volume, a tmpfs,
    /// `/dev/shm`): never image content, so decided like an added file. Its hash is cached
    /// per file version for every container that mounts it.
    fn mount_exec(
        &mut self,
        ev: PendingExec,
        c: &Arc<Container>,
        m: Arc<ContainerMount>,
        id: FileId,
    ) -> Routed {
        self.shared.stats.mount_execs.fetch_add(1, Ordering::Relaxed);
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        let job = Job::new(ev, c, id, raw_path, Some(m));
        match self.shared.try_complete(job, false) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }

    fn answer(&self, ev: PendingExec, allow: bool) {
        self.shared.answer(ev, allow);
    }

    /// An image file that was being written, or had changed, when it was leased: its bytes
    /// are not the image's any more, so it is decided like a writable-layer file without a hash.
    fn unsettled(&self, ev: PendingExec, c: &Arc<Container>, id: FileId, reason: String) -> Routed {
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        self.shared.decide_unverified(Job::new(ev, c, id, raw_path, None), reason);
        Routed::Done
    }
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

    /// The fd the file to decide is read through.
    fn file_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.target.as_ref().map_or_else(|| self.ev.fd(), |t| t.fd.as_fd())
    }

    /// The key of this file version in the hash cache: a rootfs file's is per container (an
    /// overlay's inode numbers are its own), a mount file's is global (the same volume file
    /// seen by many containers is hashed once).
    fn hash_key(&self) -> (u64, FileId) {
        if self.mount.is_some() {
            (0, self.id)
        } else {
            (self.container.generation, self.id)
        }
    }
}

/// Logs the first-exec race figures of a container that appeared while the daemon ran: how
/// long after its mount was noticed the mark was in place, and when its first exec came.
fn first_exec(c: &Container) {
    let (Some(seen), Some(marked)) = (c.mount_seen, c.marked_at.get()) else { return };
    let now = Instant::now();
    tracing::info!(
        container = %c.identity.id,
        runtime = c.identity.runtime,
        mount_to_mark_us = marked.saturating_duration_since(seen).as_micros() as u64,
        mount_to_first_exec_us = now.saturating_duration_since(seen).as_micros() as u64,
        "first exec in container"
    );
}

/// The in-container path candidates for the path the kernel reported. A process inside the
/// container's mount namespace gets the path as the container sees it; an exec through the
/// host-side mountpoint gets `<mountpoint>/<path>`. Both are tried, the verbatim one first;
/// every use checks the candidate against the file's identity, so a container that builds a
/// directory tree mimicking the host mountpoint gains nothing.
pub fn candidate_paths<'a>(raw: &'a [u8], rootfs: &[u8]) -> Vec<&'a [u8]> {
    let mut v = Vec::with_capacity(2);
    if raw.first() == Some(&b'/') {
        v.push(raw);
    }
    if !rootfs.is_empty() && raw.len() > rootfs.len() && raw.starts_with(rootfs) && raw[rootfs.len()] == b'/'
    {
        v.push(&raw[rootfs.len()..]);
    }
    v
}

/// For the lower-identity proof only: a file unlinked after it was opened reads back as
/// `<path> (deleted)`. An image file can be deleted in the container (a whiteout) while still
/// open, and its lower inode is still there, so the name without the suffix is also tried.
/// Sound because the proof checks the inode's identity, not the name.
pub fn identity_candidates<'a>(raw: &'a [u8], rootfs: &[u8]) -> Vec<&'a [u8]> {
    let mut v = candidate_paths(raw, rootfs);
    if let Some(stripped) = raw.strip_suffix(b" (deleted)") {
        v.extend(candidate_paths(stripped, rootfs));
    }
    v
}

/// What the decision was based on, for building the finding.
#[derive(Clone)]
pub struct Outcome {
    evidence: Evidence,
    path: Vec<u8>,
    sha256: Option<[u8; 32]>,
    /// For an added file: where the image has the same content (`cp /bin/sh /tmp/x`).
    image_paths: Vec<Vec<u8>>,
    /// The container mount the file is on, when it is not the rootfs.
    mount: Option<Arc<ContainerMount>>,
    /// For a file with the image's content (a copy-up): what it runs besides itself.
    kind: ExecKind,
    /// Why it was decided without its hash, if it was.
    reason: Option<String>,
    /// Its hash is of a newer version of the file than the exec event named: right for this
    /// decision, not to be remembered for that version.
    newer: bool,
    /// The file was unlinked when it was decided (`path` is its last name).
    deleted: bool,
}

impl Outcome {
    pub(super) fn new(evidence: Evidence, path: Vec<u8>, sha256: Option<[u8; 32]>) -> Outcome {
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

/// What decides an exec, given its outcome.
struct Decided {
    ioc: Option<crate::index::ioc::IocMatch>,
    decision: crate::policy::Decision,
    verdict: Verdict,
}

/// Maps what taking the lease found to: go on (held, or nothing to hold), or why the file's
/// bytes are not settled.
fn pin_result(p: super::pin::Pin) -> Result<(), String> {
    use super::pin::Pin;
    match p {
        Pin::Held | Pin::Unsupported | Pin::Off => Ok(()),
        Pin::Busy => Err("not settled: the file was open for writing when it was executed".into()),
        Pin::Changed => Err("not settled: the file changed after it was checked, before it ran".into()),
    }
}

/// Key of the outcome cache: one file version, executed under one name, in one container.
pub type OutcomeKey = (u64, FileId, Vec<u8>);

impl Shared {
    /// How findings are recorded now.
    fn recorder(&self) -> report::Recorder<'_> {
        report::Recorder {
            node: &self.node,
            mode: self.mode.get(),
            max_arg_bytes: self.max_arg_bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether container `c` may have one more full finding recorded now. Beyond its budget,
    /// findings are counted (for the container, in status and metrics) and a line says how
    /// many once it may record again: a flood from one container cannot fill memory, the
    /// spool or the journal, and every exec is still accounted for.
    fn may_record(&self, c: &Container) -> bool {
        use crate::sink::ratelimit::Verdict;
        let key = c.generation.to_string();
        let verdict = self.record_limiter.lock().map(|mut l| l.check(&key, Instant::now()));
        match verdict {
            Ok(Verdict::Write { suppressed }) => {
                if suppressed > 0 {
                    tracing::warn!(
                        container = %c.id(),
                        suppressed,
                        "findings of this container were counted, not recorded (findings.container_per_sec)"
                    );
                }
                true
            }
            Ok(Verdict::Suppress) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                c.findings_suppressed.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => true,
        }
    }

    /// Logs a line about a container through the per-container rate limit, with a count of the
    /// lines held back.
    fn container_warning(&self, container: &str, log: impl FnOnce()) {
        let verdict = self.log_limiter.lock().map(|mut l| l.check(container, Instant::now()));
        match verdict {
            Ok(crate::sink::ratelimit::Verdict::Write { suppressed }) => {
                if suppressed > 0 {
                    tracing::warn!(
                        container,
                        suppressed,
                        "earlier warnings about this container were rate-limited"
                    );
                }
                log();
            }
            Ok(crate::sink::ratelimit::Verdict::Suppress) => {}
            Err(_) => log(),
        }
    }

    pub fn answer(&self, ev: PendingExec, allow: bool) {
        if allow {
            self.stats.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
        }
        let received = ev.received;
        let res = ev.answer(allow);
        self.stats.latency.record(received.elapsed());
        if let Err(e) = res {
            self.stats.answer_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "could not answer exec event");
        }
    }

    /// Leases the event's file before it is allowed, checking that it is still version `id`,
    /// and holds it ([`super::pin`]). `Err` says why its bytes are not settled.
    pub fn pin_event(&self, ev: &PendingExec, id: &FileId) -> Result<(), String> {
        pin_result(self.holder.pin(ev.fd(), id))
    }

    /// Leases and holds the file a job decides (the event's, or what a loader or interpreter runs).
    fn pin_job(&self, job: &Job) -> Result<(), String> {
        pin_result(self.holder.pin(job.file_fd(), &job.id))
    }

    /// Swaps in a new IoC set; image files already let through are checked against it on
    /// their next exec.
    pub fn set_iocs(&self, set: crate::index::ioc::IocSet) {
        self.iocs.store(Arc::new(set));
        self.knowledge.fetch_add(1, Ordering::Relaxed);
    }

    /// Decides a slow-path job, answers it and records a finding. Without `may_hash`, a job
    /// that would need a file hashed is handed back.
    #[must_use]
    pub fn try_complete(&self, mut job: Job, may_hash: bool) -> Option<Job> {
        if let Some(o) = job.target.as_mut().and_then(|t| t.proven.take()) {
            return self.finish(job, o).into_job();
        }
        let key: OutcomeKey = (job.container.generation, job.id, job.raw_path.clone());
        if let Some(o) = self.cached_outcome(&key) {
            return self.finish(job, o).into_job();
        }
        let Some(o) = self.evaluate(&job, may_hash) else { return Some(job) };
        // Only settled outcomes are remembered: a comparison that failed is retried.
        let settled = matches!(
            o.evidence,
            Evidence::UpperFile(
                ImageAtPath::Absent | ImageAtPath::SameContent | ImageAtPath::DifferentContent
            ) | Evidence::MountFile
        ) && o.sha256.is_some()
            && !o.newer;
        if settled {
            if let Ok(mut m) = self.outcomes.lock() {
                m.insert(key, o.clone());
            }
        }
        self.finish(job, o).into_job()
    }

    /// Completes a job on a hashing worker, and any job deciding it hands on (the script a
    /// copied-up interpreter was given).
    pub fn complete_on_worker(&self, job: Job) {
        let mut next = Some(job);
        while let Some(j) = next {
            next = self.try_complete(j, true);
        }
    }

    /// Sends a job that needs hashing to the workers (from any thread). With the slow path's
    /// fd budget spent, the exec is decided now, without its hash.
    pub fn route(&self, job: Job) {
        let waiting = self.stats.in_flight();
        if !self.budget.allows(waiting) {
            self.budget.spent.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "not hashed: {waiting} execs were waiting for the slow path, the most the daemon's file-descriptor budget allows ({})",
                self.budget.limit()
            );
            self.decide_unverified(job, reason);
            return;
        }
        match self.router.load().as_ref() {
            Some(r) => {
                let q = if job.id.size >= r.large_bytes { &r.large } else { &r.small };
                if let Err(job) = q.push(job.container.generation, job) {
                    // The workers are stopping: the kernel allows what is left anyway.
                    self.answer(job.ev, true);
                }
            }
            None => self.complete_on_worker(job),
        }
    }

    /// Decides a job without the hash of its file (`reason` says why), answering now.
    pub fn decide_unverified(&self, job: Job, reason: String) {
        let o = self.outcome_for(&job, HashState::Missing(reason));
        if let Routed::Slow(j) = self.finish(job, o) {
            // The copied-up interpreter case hands on its argument: decided the same way.
            self.decide_unverified(*j, "not hashed: the daemon was over its budget".into());
        }
    }

    /// The settled decision of a writable-layer file seen before under this name.
    pub fn cached_outcome(&self, key: &OutcomeKey) -> Option<Outcome> {
        self.outcomes.lock().ok().and_then(|m| m.get(key).cloned())
    }

    /// The decision on `job` given its outcome: IoC match, the policy rule, the verdict.
    fn verdict_for(&self, job: &Job, outcome: &Outcome, mode: Mode) -> Decided {
        // Known-bad content, whatever the path: checked on every decision (also a cached
        // outcome), so an IoC added by a reload applies at once.
        let ioc = outcome.sha256.and_then(|h| self.iocs.load().lookup(&h));
        let facts = Facts {
            evidence: outcome.evidence,
            executed: job.target.as_ref().map_or(Executed::Binary, |t| t.executed),
            ioc: ioc.is_some(),
            image_copy: !outcome.image_paths.is_empty(),
        };
        let settings = Settings { mode, block_iocs: self.block_iocs.load(Ordering::Relaxed) };
        let Judgement { verdict, decision } =
            judge(&facts, &self.policy.load(), &ExecSubject { job, outcome }, settings);
        Decided { ioc, decision, verdict }
    }

    /// Decides `job` from its outcome: IoC check, policy, answer, finding.
    pub fn finish(&self, job: Job, mut outcome: Outcome) -> Routed {
        let mode = self.mode.get();
        let mut d = self.verdict_for(&job, &outcome, mode);
        if d.verdict.allow {
            // Writers are kept out from here until the kernel denies them itself; a file
            // that is being written or has changed since it was checked is not what was
            // decided, so it is decided again without its hash.
            if let Err(reason) = self.pin_job(&job) {
                outcome = self.outcome_for(&job, HashState::Missing(reason));
                d = self.verdict_for(&job, &outcome, mode);
            }
        }
        let Decided { ioc, decision, verdict } = d;
        log_slow(&job, &verdict);
        let Some((category, action)) = verdict.finding else {
            if verdict.allow && !outcome.kind.is_plain() && job.target.is_none() {
                // The image's own loader or interpreter (copied up): decide what it runs.
                return self.indirect(job.ev, &job.container, outcome.kind, &outcome.path);
            }
            self.answer(job.ev, verdict.allow);
            return Routed::Done;
        };
        if let Some(i) = Category::ALL.iter().position(|c| *c == category) {
            self.stats.findings[i].fetch_add(1, Ordering::Relaxed);
        }
        // A deleted file's exec is its own window: running a binary with no name left is worth
        // a record of its own.
        let mut agg_path = outcome.path.clone();
        if outcome.deleted {
            agg_path.extend_from_slice(b" (deleted)");
        }
        let agg_key = (job.container.generation, agg_path, outcome.sha256, category, action);
        if self.aggregator.repeat(&agg_key, crate::util::now_rfc3339) {
            // Counted in the open window's aggregate: no /proc reads, no sink work.
            self.answer(job.ev, verdict.allow);
            return Routed::Done;
        }
        if !self.may_record(&job.container) {
            self.answer(job.ev, verdict.allow);
            return Routed::Done;
        }
        // Read what /proc says about the exec before answering: after "allow" the process
        // image is replaced, and a short program may be gone.
        let tid = job.ev.tid();
        let facts = ProcFacts::of_pending_exec(tid);
        // The window opens before the answer: a loop's next exec of the same file can come as
        // soon as this one is answered, and is a repeat even if this finding is not built yet.
        let prev = self.aggregator.open(agg_key.clone());
        self.answer(job.ev, verdict.allow);
        let interpreter = job.target.as_ref().map(|t| t.interpreter.clone());
        let mut f = self.build_finding(&job.container, &job.id, tid, facts, &outcome, category, action);
        f.file.interpreter = interpreter;
        f.reason = outcome.reason.clone();
        f.ioc = ioc.map(|m| finding::IocRef { name: m.name, source: m.source });
        f.rule = Some(decision.rule.clone());
        self.send(&job.container, &agg_key, f, prev);
        Routed::Done
    }

    /// Records the first finding of an aggregation window (`prev`: aggregates of windows its
    /// opening closed, if they had repeats) and asks for the container's metadata if incomplete.
    fn send(
        &self,
        c: &Arc<Container>,
        agg_key: &crate::sink::aggregate::AggKey,
        f: Finding,
        prev: Vec<crate::sink::aggregate::Aggregate>,
    ) {
        self.aggregator.set_first(agg_key, &f, Some(Arc::clone(c) as ContainerHandle));
        for (prev, pc) in prev {
            self.findings.send_for(prev, pc);
        }
        if !c.meta.load().complete {
            // The container is running, so its runtime has written everything by now.
            if let Some(tx) = &self.meta_refresh {
                let _ = tx.try_send(Arc::clone(c));
            }
        }
        self.findings.send_for(f, Some(Arc::clone(c) as ContainerHandle));
    }

    /// Records fileless execution seen after the fact (process `pid` of container `c` runs a
    /// program from a memfd): never blocked (it already runs), aggregated like any finding.
    pub fn record_fileless(
        &self,
        c: &Arc<Container>,
        pid: i32,
        path: Vec<u8>,
        sha: Option<[u8; 32]>,
        size: u64,
    ) {
        use crate::engine::Action;
        let ioc = sha.and_then(|h| self.iocs.load().lookup(&h));
        let category =
            if ioc.is_some() { Category::FilelessMaliciousExecution } else { Category::FilelessExecution };
        if let Some(i) = Category::ALL.iter().position(|x| *x == category) {
            self.stats.findings[i].fetch_add(1, Ordering::Relaxed);
        }
        let agg_key = (c.generation, path.clone(), sha, category, Action::Audited);
        if self.aggregator.repeat(&agg_key, crate::util::now_rfc3339) || !self.may_record(c) {
            return;
        }
        let facts = ProcFacts::of_running(pid);
        let prev = self.aggregator.open(agg_key.clone());
        let file = FileFacts {
            path,
            sha256: sha,
            size,
            layer: "memfd",
            mount: None,
            image_paths: Vec::new(),
            interpreter: None,
            deleted: false,
        };
        let mut f = report::build(&self.recorder(), c, pid, facts, file, category, Action::Audited);
        f.ioc = ioc.map(|m| finding::IocRef { name: m.name, source: m.source });
        self.send(c, &agg_key, f, prev);
    }

    fn evaluate(&self, job: &Job, may_hash: bool) -> Option<Outcome> {
        // The hash first: without it (and without leave to compute it) nothing below is
        // needed yet, and the worker that hashes does the lookups once.
        match self.exec_hash(job, may_hash) {
            HashState::NotYet => None,
            state => Some(self.outcome_for(job, state)),
        }
    }

    /// What a job's file is, given what is known of its hash.
    fn outcome_for(&self, job: &Job, state: HashState) -> Outcome {
        let c = &job.container;
        let newer = matches!(state, HashState::KnownNewer(_));
        let (sha, reason) = match state {
            HashState::Known(h) | HashState::KnownNewer(h) => (Some(h), None),
            HashState::Missing(r) => (None, Some(r)),
            HashState::NotYet => (None, None),
        };
        let may_hash = reason.is_none();
        // A file unlinked since it was opened (its name read back as `<name> (deleted)` if
        // that came after the unlink).
        let deleted = sfs::fstat_fd(job.file_fd()).is_ok_and(|st| st.st_nlink == 0);
        let raw_path = match job.raw_path.strip_suffix(b" (deleted)") {
            Some(name) if deleted => name,
            _ => &job.raw_path[..],
        };
        if let Some(m) = &job.mount {
            let image_paths = sha.map(|h| self.image_paths(c, &h)).unwrap_or_default();
            return Outcome {
                evidence: Evidence::MountFile,
                path: raw_path.to_vec(),
                sha256: sha,
                image_paths,
                mount: Some(Arc::clone(m)),
                kind: ExecKind::Plain,
                reason,
                newer,
                deleted,
            };
        }
        let cands = candidate_paths(raw_path, c.rootfs_bytes());
        // Prefer a candidate that names this very file in the upper layer.
        let verified = cands.iter().copied().find(|p| c.layers.upper_matches(p, &job.id));
        let path: Vec<u8> = match verified {
            Some(p) => p.to_vec(),
            // Unlinked, renamed meanwhile, or not found: the best guess, for display and for
            // the content comparison (which stays sound: equal bytes are image bytes).
            None => cands.last().map(|p| p.to_vec()).unwrap_or_else(|| raw_path.to_vec()),
        };

        let image_at_path = match c.layers.image_lookup(&path) {
            ImageLookup::Absent | ImageLookup::NotRegular => ImageAtPath::Absent,
            ImageLookup::Failed(e) => {
                let id = c.id();
                self.stats.lookup_errors.fetch_add(1, Ordering::Relaxed);
                self.container_warning(
                    &id,
                    || tracing::warn!(container = %id, error = %e, "image lookup failed"),
                );
                ImageAtPath::LookupFailed
            }
            ImageLookup::File(lf) => match sha {
                None => ImageAtPath::PresentUncompared,
                Some(_) if lf.stat.st_size as u64 != job.id.size => ImageAtPath::DifferentContent,
                // The image's hash from its layer manifest: the image file is not read.
                Some(h) if let Some(img) = self.manifest_hash(c, &lf, &path) => {
                    self.stats.manifest_hashes.fetch_add(1, Ordering::Relaxed);
                    if img == h {
                        ImageAtPath::SameContent
                    } else {
                        ImageAtPath::DifferentContent
                    }
                }
                Some(h) => match self.host_file_hash(&lf, may_hash, job.received) {
                    Some(img) if img == h => ImageAtPath::SameContent,
                    Some(_) => ImageAtPath::DifferentContent,
                    None => ImageAtPath::PresentUncompared,
                },
            },
        };
        let image_paths = match (image_at_path, sha) {
            (ImageAtPath::Absent, Some(h)) => self.image_paths(c, &h),
            _ => Vec::new(),
        };
        // A copy-up with the image's content is the image's program: it may be a loader or an
        // interpreter whose argument is decided (`touch /bin/sh` must not switch that off).
        let kind = if image_at_path == ImageAtPath::SameContent && job.target.is_none() {
            self.classify(&path, job.ev.fd())
        } else {
            ExecKind::Plain
        };
        Outcome {
            evidence: Evidence::UpperFile(image_at_path),
            path,
            sha256: sha,
            image_paths,
            mount: None,
            kind,
            reason,
            newer,
            deleted,
        }
    }

    /// The manifest hash of an image file found by a layer lookup, if its layer has a
    /// manifest describing this very file version.
    fn manifest_hash(
        &self,
        c: &Container,
        lf: &crate::container::layers::LayerFile,
        path: &[u8],
    ) -> Option<[u8; 32]> {
        c.index.load().hash_for(lf.lower_index?, path, &FileId::from_stat(&lf.stat))
    }

    /// Where the container's image has content with hash `h`, as the union of its layers
    /// shows it now (each candidate from a manifest is confirmed by a layer lookup).
    fn image_paths(&self, c: &Container, h: &[u8; 32]) -> Vec<Vec<u8>> {
        const MAX: usize = 16;
        let candidates = c.index.load().paths_with(h);
        let mut out = Vec::new();
        for (p, layer) in candidates {
            if out.len() >= MAX {
                break;
            }
            if let ImageLookup::File(lf) = c.layers.image_lookup(&p) {
                if lf.lower_index == Some(layer) && self.manifest_hash(c, &lf, &p) == Some(*h) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The executed file's SHA-256, from the cache or (when allowed) read through the event fd.
    fn exec_hash(&self, job: &Job, may_hash: bool) -> HashState {
        let key = job.hash_key();
        if let Some(h) = self.hashes.lock().ok().and_then(|m| m.get(&key).copied()) {
            self.stats.hash_cache_hits.fetch_add(1, Ordering::Relaxed);
            return HashState::Known(h);
        }
        let limits = **self.hash_limits.load();
        if job.id.size > limits.max_bytes {
            self.stats.too_big.fetch_add(1, Ordering::Relaxed);
            return HashState::Missing(format!(
                "not hashed: {} bytes is more than hashing.max_file_bytes ({})",
                job.id.size, limits.max_bytes
            ));
        }
        if !may_hash {
            return HashState::NotYet;
        }
        // `hashing.max_secs` bounds the whole wait of the exec, queueing included: a queue of
        // slow files cannot hold the execs behind it for longer.
        let left = limits.max_time.saturating_sub(job.received.elapsed());
        if left.is_zero() {
            self.stats.queue_timeouts.fetch_add(1, Ordering::Relaxed);
            return HashState::Missing(format!(
                "not hashed: the exec waited longer than hashing.max_secs ({:.1} s) for a hashing worker",
                limits.max_time.as_secs_f64()
            ));
        }
        use super::hasher::Hashed;
        match self.hasher.hash(job.file_fd(), &job.id, left) {
            Hashed::Done(h, version) => {
                self.stats.hashed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut m) = self.hashes.lock() {
                    m.insert((key.0, version), h);
                }
                if version == job.id {
                    HashState::Known(h)
                } else {
                    // Changed (or only its metadata) since the event: the hash is of what
                    // runs, but not of the version the event named.
                    HashState::KnownNewer(h)
                }
            }
            Hashed::Unsettled => HashState::Missing(
                "not hashed: the file was open for writing, or changed while it was read".into(),
            ),
            Hashed::TimedOut => HashState::Missing(format!(
                "not hashed: reading the file took longer than hashing.max_secs ({:.1} s)",
                limits.max_time.as_secs_f64()
            )),
            Hashed::Unavailable => HashState::Missing(
                "not hashed: every hashing reader is held by a file that does not return its data".into(),
            ),
            Hashed::Stopping => HashState::Missing("not hashed: the daemon is stopping".into()),
        }
    }

    /// The SHA-256 of an image file (to compare a writable-layer file with). `None` when it
    /// cannot be had in time (or at all, without leave to hash).
    fn host_file_hash(
        &self,
        lf: &crate::container::layers::LayerFile,
        may_hash: bool,
        received: Instant,
    ) -> Option<[u8; 32]> {
        let id = FileId::from_stat(&lf.stat);
        let key = (0, id);
        if let Some(h) = self.hashes.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Some(h);
        }
        let limits = **self.hash_limits.load();
        if !may_hash || id.size > limits.max_bytes {
            return None;
        }
        let left = limits.max_time.saturating_sub(received.elapsed());
        if left.is_zero() {
            return None;
        }
        let fd = sfs::reopen_readonly(lf.fd.as_fd()).ok()?;
        let super::hasher::Hashed::Done(h, version) = self.hasher.hash(fd.as_fd(), &id, left) else {
            return None;
        };
        if version != id {
            return None;
        }
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(key, h);
        }
        Some(h)
    }

    /// The finding for a decided exec, with what /proc said about it before the answer.
    #[allow(clippy::too_many_arguments)]
    fn build_finding(
        &self,
        c: &Container,
        id: &FileId,
        tid: i32,
        facts: ProcFacts,
        o: &Outcome,
        category: Category,
        action: crate::engine::Action,
    ) -> Finding {
        let file = FileFacts {
            path: o.path.clone(),
            sha256: o.sha256,
            size: id.size,
            layer: match o.evidence {
                Evidence::ImageFile => "lower",
                Evidence::MountFile => "mount",
                _ => "upper",
            },
            mount: o.mount.as_deref().map(report::mount_ref),
            image_paths: o.image_paths.clone(),
            interpreter: None,
            deleted: o.deleted,
        };
        report::build(&self.recorder(), c, tid, facts, file, category, action)
    }
}

fn log_slow(job: &Job, v: &Verdict) {
    tracing::debug!(
        container = %job.container.identity.id,
        allow = v.allow,
        finding = ?v.finding.map(|f| f.0),
        micros = job.received.elapsed().as_micros() as u64,
        "slow-path decision"
    );
}

/// Files below this size are hashed from a mapping; larger ones with `pread`: tearing down a
/// large mapping holds the daemon's mmap lock long enough to stall its other threads.
const MAP_LIMIT: u64 = 4 << 20;

/// Hashes a file through `fd` so that the result is the content that will execute: under a
/// read lease when the filesystem allows one (a lease cannot be had while anyone has the file
/// open for writing, and blocks new writers while held), and with a re-check that the file
/// version did not change while it was read. Returns the hash and the file version it is the
/// hash of: under a lease that is the version seen when the lease was taken, which may be
/// newer than `id` (the version the exec event saw) when the file changed in between, or only
/// its metadata did (an unlink, a chmod); the bytes that run are the ones hashed either way.
/// Without a lease the version must be `id` itself. `None` when the content could not be
/// pinned down.
pub fn hash_stable(fd: std::os::fd::BorrowedFd<'_>, id: &FileId) -> Option<([u8; 32], FileId)> {
    let leased = match sfs::try_read_lease(fd) {
        Ok(()) => true,
        // EAGAIN: someone has it open for writing right now; its content is not settled.
        Err(e) if e.errno == nix::errno::Errno::EAGAIN => return None,
        Err(_) => false,
    };
    let unsettled = || {
        if leased {
            sfs::release_lease(fd);
        }
        None
    };
    let Some(before) = sfs::fstat_fd(fd).ok().map(|s| FileId::from_stat(&s)) else { return unsettled() };
    if !leased && before != *id {
        return unsettled();
    }
    let mut h = Sha256::new();
    // Under a lease the file is hashed straight from a mapping (no copy); without one, a
    // truncation could turn a mapping into SIGBUS, so it is read with pread.
    let res = if leased && before.size < MAP_LIMIT {
        sfs::read_all_mapped_leased(fd, before.size, |b| h.update(b)).map(|()| before.size)
    } else {
        sfs::read_all_at(fd, |b| h.update(b))
    };
    let after = sfs::fstat_fd(fd).ok().map(|s| FileId::from_stat(&s));
    match (res, after) {
        // The lease stays on the open file: an "allow" keeps it until the kernel keeps
        // writers out itself ([`super::pin`]); otherwise it ends when the file is closed.
        (Ok(n), Some(after)) if n == before.size && after == before => Some((h.finalize().into(), before)),
        _ => unsettled(),
    }
}

/// An exec as the policy sees it, built only when some rule needs it.
struct ExecSubject<'a> {
    job: &'a Job,
    outcome: &'a Outcome,
}

impl Describe for ExecSubject<'_> {
    fn describe<R>(&self, f: impl FnOnce(&crate::policy::Subject<'_>) -> R) -> R {
        let c = &self.job.container;
        let m = c.meta.load();
        let id = m.id.clone().unwrap_or_else(|| c.identity.id.clone());
        let path = String::from_utf8_lossy(&self.outcome.path);
        let sha = self.outcome.sha256.map(crate::util::hex);
        let mount = self.outcome.mount.as_ref().map(|m| String::from_utf8_lossy(&m.mountpoint));
        f(&crate::policy::Subject {
            namespace: m.pod_namespace.as_deref(),
            pod: m.pod_name.as_deref(),
            container: Some(m.name.as_deref().unwrap_or(&id)),
            container_id: Some(&id),
            image: m.image.as_deref(),
            runtime: m.runtime.unwrap_or(c.identity.runtime),
            path: &path,
            sha256: sha.as_deref(),
            mount: Some(mount.as_deref().unwrap_or("/")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_for_container_and_host_side_paths() {
        let root = b"/run/c/rootfs";
        assert_eq!(candidate_paths(b"/tmp/x", root), vec![&b"/tmp/x"[..]]);
        assert_eq!(
            candidate_paths(b"/run/c/rootfs/tmp/x", root),
            vec![&b"/run/c/rootfs/tmp/x"[..], &b"/tmp/x"[..]]
        );
        assert_eq!(candidate_paths(b"/run/c/rootfsX/y", root), vec![&b"/run/c/rootfsX/y"[..]]);
        assert!(candidate_paths(b"", root).is_empty());
        assert!(candidate_paths(b"memfd:x (deleted)", root).is_empty());
        assert_eq!(
            identity_candidates(b"/bin/ls (deleted)", root),
            vec![&b"/bin/ls (deleted)"[..], &b"/bin/ls"[..]]
        );
    }

    #[test]
    fn hash_of_a_file_matches_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let id = FileId::from_stat(&sfs::fstat_fd(f.as_fd()).unwrap());
        let (h, version) = hash_stable(f.as_fd(), &id).unwrap();
        assert_eq!(crate::util::hex(h), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(version, id);
    }

    #[test]
    fn a_file_open_for_writing_is_not_hashed_as_settled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let _writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let id = FileId::from_stat(&sfs::fstat_fd(f.as_fd()).unwrap());
        assert_eq!(hash_stable(f.as_fd(), &id), None);
    }

    #[test]
    fn a_file_changed_since_the_event_is_hashed_as_its_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let now = FileId::from_stat(&sfs::fstat_fd(f.as_fd()).unwrap());
        let mut seen = now;
        seen.ctime_ns -= 1;
        // Under the lease the bytes are what will run: the hash is returned as the newer
        // version's, never as the one the event saw.
        let (_, version) = hash_stable(f.as_fd(), &seen).unwrap();
        assert_eq!(version, now);
        sfs::release_lease(f.as_fd());
        // Without a lease (a filesystem that has none) a changed version is not trusted: a
        // read-only open of a file we already have open for writing cannot be leased.
        let _w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        assert_eq!(hash_stable(f.as_fd(), &seen), None);
    }
}
