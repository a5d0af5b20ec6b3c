//! The evidence store: a copy of every added, modified or known-bad file a finding is about,
//! so the responder has the exact bytes that were decided even after the container (or the
//! file) is gone.
//!
//! Content-addressed (`<dir>/sha256/<hex>`), one copy per hash whatever the number of
//! containers, mode 0400 (never executable), size-capped with the oldest copies evicted. The
//! copy is read through the fd of the event that was decided, after the answer, on a thread of
//! its own: an unlinked or renamed-over file is still the inode that was decided, and a copy
//! whose bytes no longer hash to the finding's SHA-256 (rewritten in place before it was
//! copied) is refused and said so.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use sha2::{Digest, Sha256};

use driftgate_core::config::EvidenceConfig;
use driftgate_core::finding::EvidenceRef;

/// What the store did, for `status` and metrics.
#[derive(Debug, Default)]
pub struct EvidenceStats {
    /// Copies made, and findings whose file was already stored.
    pub stored: AtomicU64,
    pub already: AtomicU64,
    /// Files over `evidence.max_file_bytes`, not copied.
    pub too_big: AtomicU64,
    /// Files that could not be copied: changed before the copy, read or write errors, the
    /// queue full.
    pub lost: AtomicU64,
    /// Copies deleted to keep the store under `evidence.max_total_bytes`.
    pub evicted: AtomicU64,
    /// What the store holds now.
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

/// One stored copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub sha256: String,
    pub size: u64,
    /// When it was stored (RFC 3339).
    pub stored: String,
    #[serde(skip)]
    pub mtime: SystemTime,
}

/// The directory of copies in an evidence store.
pub fn objects(dir: &Path) -> PathBuf {
    dir.join("sha256")
}

/// Every copy in the store at `dir`, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(objects(dir)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if driftgate_core::util::parse_sha256(name.as_bytes()).is_none() {
            continue;
        }
        let Ok(md) = ent.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let stored = time::OffsetDateTime::from(mtime)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        out.push(Entry { sha256: name.to_owned(), size: md.len(), stored, mtime });
    }
    out.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.sha256.cmp(&b.sha256)));
    Ok(out)
}

/// What an aggregate record says of its copy: the one its window's first finding made.
pub fn aggregate_ref(dir: &Path, sha: &str) -> EvidenceRef {
    let stored =
        driftgate_core::util::parse_sha256(sha.as_bytes()).is_some() && objects(dir).join(sha).is_file();
    EvidenceRef {
        sha256: Some(sha.to_owned()),
        stored,
        reason: Some(if stored { ALREADY } else { "no copy: see the window's first finding" }.into()),
    }
}

/// The store the daemon writes.
pub struct Store {
    dir: PathBuf,
    max_file: u64,
    max_total: u64,
    stats: Arc<EvidenceStats>,
}

const CHUNK: usize = 1 << 20;

impl Store {
    /// Opens (makes, 0700) the store. What it holds is counted (`tidy`) on the
    /// evidence thread: a large store never slows start-up.
    pub fn open(cfg: &EvidenceConfig, stats: Arc<EvidenceStats>) -> std::io::Result<Store> {
        let obj = objects(&cfg.dir);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&obj)?;
        std::fs::set_permissions(&cfg.dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o700))?;
        Ok(Store {
            dir: cfg.dir.clone(),
            max_file: cfg.max_file_bytes,
            max_total: cfg.max_total_bytes,
            stats,
        })
    }

    /// Removes leftovers of copies cut short by a stop, and counts what the store holds.
    fn tidy(&self) {
        for ent in std::fs::read_dir(objects(&self.dir)).into_iter().flatten().flatten() {
            if ent.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(ent.path());
            }
        }
        self.recount();
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn recount(&self) -> Vec<Entry> {
        let all = list(&self.dir).unwrap_or_default();
        self.stats.files.store(all.len() as u64, Ordering::Relaxed);
        self.stats.bytes.store(all.iter().map(|e| e.size).sum(), Ordering::Relaxed);
        all
    }

    /// Keeps the bytes of `fd` (a file whose finding says `expected`, when it was hashed).
    pub fn keep(&self, fd: BorrowedFd<'_>, expected: Option<[u8; 32]>) -> EvidenceRef {
        let expected_hex = expected.map(driftgate_core::util::hex);
        let (counter, sha256, stored, reason) = match self.copy(fd, expected) {
            Kept::Stored(h) if objects(&self.dir).join(&h).exists() => {
                (&self.stats.stored, Some(h), true, None)
            }
            Kept::Stored(h) => (
                &self.stats.stored,
                Some(h),
                false,
                Some("larger than what evidence.max_total_bytes leaves room for".into()),
            ),
            Kept::Already(h) => (&self.stats.already, Some(h), true, Some(ALREADY.into())),
            Kept::TooBig => (&self.stats.too_big, expected_hex, false, Some(TOO_BIG.into())),
            Kept::Lost(why) => (&self.stats.lost, expected_hex, false, Some(why)),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        EvidenceRef { sha256, stored, reason }
    }

    fn copy(&self, fd: BorrowedFd<'_>, expected: Option<[u8; 32]>) -> Kept {
        let obj = objects(&self.dir);
        if let Some(h) = expected.map(driftgate_core::util::hex).filter(|h| obj.join(h).exists()) {
            return Kept::Already(h);
        }
        match nix::sys::stat::fstat(fd) {
            Ok(st) if st.st_size as u64 > self.max_file => return Kept::TooBig,
            Ok(_) => {}
            Err(e) => return Kept::Lost(format!("could not stat the file: {e}")),
        }
        // Removed on every early return; made 0600 and O_EXCL by tempfile.
        let mut tmp = match tempfile::Builder::new().prefix(TMP_PREFIX).tempfile_in(&obj) {
            Ok(t) => t,
            Err(e) => return Kept::Lost(format!("could not copy the file: {e}")),
        };
        let (got, len) = match copy_hashing(fd, tmp.as_file_mut(), self.max_file) {
            Ok(Some(copied)) => copied,
            Ok(None) => return Kept::TooBig,
            Err(e) => return Kept::Lost(format!("could not copy the file: {e}")),
        };
        if expected.is_some_and(|e| e != got) {
            return Kept::Lost(
                "the file changed before it could be copied: its bytes are not the ones decided".into(),
            );
        }
        let hex = driftgate_core::util::hex(got);
        match tmp.persist_noclobber(obj.join(&hex)) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Kept::Already(hex),
            Err(e) => return Kept::Lost(format!("could not store the copy: {}", e.error)),
        }
        self.stats.files.fetch_add(1, Ordering::Relaxed);
        if self.stats.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_total {
            self.evict(&hex);
        }
        Kept::Stored(hex)
    }

    /// Deletes the oldest copies until the store is under its cap (the newest, `keep`, last).
    fn evict(&self, keep: &str) {
        let all = self.recount();
        let mut total: u64 = all.iter().map(|e| e.size).sum();
        let (newest, older): (Vec<&Entry>, Vec<&Entry>) = all.iter().partition(|e| e.sha256 == keep);
        for e in older.into_iter().chain(newest) {
            if total <= self.max_total {
                break;
            }
            if std::fs::remove_file(objects(&self.dir).join(&e.sha256)).is_ok() {
                total -= e.size;
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(sha256 = %e.sha256, size = e.size, "evidence store full: deleted the oldest copy");
            }
        }
        self.recount();
    }
}

const TOO_BIG: &str = "larger than evidence.max_file_bytes";
const TMP_PREFIX: &str = ".tmp-";

/// What became of one copy.
enum Kept {
    /// Copied now, under this hash (it may have been evicted at once: too big for the store).
    Stored(String),
    Already(String),
    TooBig,
    Lost(String),
}

/// Copies `fd` from its start into `out` (made read-only when done), hashing as it goes: the
/// hash and length, or `None` beyond `max` bytes.
fn copy_hashing(
    fd: BorrowedFd<'_>,
    out: &mut std::fs::File,
    max: u64,
) -> std::io::Result<Option<([u8; 32], u64)>> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off: u64 = 0;
    loop {
        let n = nix::sys::uio::pread(fd, &mut buf, off as i64).map_err(std::io::Error::from)?;
        if n == 0 {
            break;
        }
        off += n as u64;
        if off > max {
            return Ok(None);
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    out.set_permissions(std::fs::Permissions::from_mode(0o400))?;
    Ok(Some((h.finalize().into(), off)))
}
const ALREADY: &str = "already stored";

/// What carries a finding to the sink: the evidence thread fills in its `evidence`.
pub trait Evidenced: Send + 'static {
    fn set_evidence(&mut self, e: EvidenceRef);
}

/// A finding waiting for its file to be copied.
pub struct Request<T> {
    pub queued: T,
    pub fd: OwnedFd,
    pub expected: Option<[u8; 32]>,
}

/// The hot path's side of the evidence thread.
pub struct EvidenceSender<T> {
    tx: Sender<Request<T>>,
    /// Known malware's copies: a queue of their own, taken first, so that a flood of drift
    /// cannot crowd them out.
    urgent: Sender<Request<T>>,
    stats: Arc<EvidenceStats>,
}

impl<T> Clone for EvidenceSender<T> {
    fn clone(&self) -> Self {
        EvidenceSender { tx: self.tx.clone(), urgent: self.urgent.clone(), stats: Arc::clone(&self.stats) }
    }
}

/// Copies held at most: each holds a file descriptor.
pub const QUEUE: usize = 256;
/// ... and of known malware (IoC matches), besides.
pub const URGENT_QUEUE: usize = 64;

impl<T: Evidenced> EvidenceSender<T> {
    /// Queues the copy (`urgent`: an IoC match's, on its own queue); a full queue gives the
    /// finding back with the reason.
    pub fn submit(&self, r: Request<T>, urgent: bool) -> Result<(), T> {
        let tx = if urgent { &self.urgent } else { &self.tx };
        match tx.try_send(r) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r)) | Err(TrySendError::Disconnected(r)) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                let mut q = r.queued;
                q.set_evidence(EvidenceRef {
                    sha256: r.expected.map(driftgate_core::util::hex),
                    stored: false,
                    reason: Some("the evidence queue was full".into()),
                });
                Err(q)
            }
        }
    }
}

/// Starts the evidence thread: it copies, fills in `evidence`, and passes the finding on to
/// the sink. It ends when every sender is gone (the sink, holding a sender of its own here,
/// ends after it: nothing joins it).
pub fn start<T: Evidenced>(store: Store, sink: Sender<T>) -> EvidenceSender<T> {
    let (tx, rx) = crossbeam_channel::bounded::<Request<T>>(QUEUE);
    let (urgent, urgent_rx) = crossbeam_channel::bounded::<Request<T>>(URGENT_QUEUE);
    let stats = Arc::clone(&store.stats);
    std::thread::Builder::new()
        .name("driftgate-evidence".into())
        .spawn(move || {
            driftgate_sys::process::lower_this_thread_priority(10);
            run(&store, &urgent_rx, &rx, &sink)
        })
        .expect("spawn evidence thread");
    EvidenceSender { tx, urgent, stats }
}

fn run<T: Evidenced>(
    store: &Store,
    urgent: &Receiver<Request<T>>,
    rx: &Receiver<Request<T>>,
    sink: &Sender<T>,
) {
    store.tidy();
    loop {
        // Known malware first, whatever is queued behind.
        let r = match urgent.try_recv() {
            Ok(r) => r,
            Err(_) => crossbeam_channel::select_biased! {
                recv(urgent) -> r => match r { Ok(r) => r, Err(_) => match rx.recv() { Ok(r) => r, Err(_) => return } },
                recv(rx) -> r => match r { Ok(r) => r, Err(_) => match urgent.recv() { Ok(r) => r, Err(_) => return } },
            },
        };
        let mut q = r.queued;
        q.set_evidence(store.keep(r.fd.as_fd(), r.expected));
        drop(r.fd);
        if sink.send(q).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, max_file: u64, max_total: u64) -> (Store, Arc<EvidenceStats>) {
        let stats = Arc::new(EvidenceStats::default());
        let cfg = EvidenceConfig {
            enabled: true,
            dir: dir.join("evidence"),
            max_file_bytes: max_file,
            max_total_bytes: max_total,
        };
        (Store::open(&cfg, Arc::clone(&stats)).unwrap(), stats)
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    struct Tagged(&'static str, Option<EvidenceRef>);
    impl Evidenced for Tagged {
        fn set_evidence(&mut self, e: EvidenceRef) {
            self.1 = Some(e);
        }
    }

    #[test]
    fn known_malwares_copies_are_taken_before_a_full_queue_of_drift() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path(), 1 << 20, 1 << 30);
        let f = dir.path().join("bin");
        std::fs::write(&f, b"payload").unwrap();
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (urgent_tx, urgent_rx) = crossbeam_channel::bounded(URGENT_QUEUE);
        let (sink, out) = crossbeam_channel::unbounded();
        let fd = || OwnedFd::from(std::fs::File::open(&f).unwrap());
        for _ in 0..QUEUE {
            tx.send(Request { queued: Tagged("drift", None), fd: fd(), expected: None }).unwrap();
        }
        let sender = EvidenceSender {
            tx: tx.clone(),
            urgent: urgent_tx.clone(),
            stats: Arc::new(EvidenceStats::default()),
        };
        assert!(
            sender
                .submit(Request { queued: Tagged("drift", None), fd: fd(), expected: None }, false)
                .is_err(),
            "full"
        );
        assert!(sender
            .submit(Request { queued: Tagged("ioc", None), fd: fd(), expected: None }, true)
            .is_ok());
        drop((tx, urgent_tx, sender));
        run(&s, &urgent_rx, &rx, &sink);
        let got: Vec<Tagged> = out.try_iter().collect();
        assert_eq!(got.len(), QUEUE + 1);
        assert_eq!(got[0].0, "ioc", "taken first");
        assert!(got.iter().all(|t| t.1.is_some()));
    }

    #[test]
    fn one_read_only_copy_per_hash_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, stats) = store(dir.path(), 1 << 20, 1 << 30);
        let f = dir.path().join("bin");
        std::fs::write(&f, b"payload").unwrap();
        let fd = std::fs::File::open(&f).unwrap();
        let r = s.keep(fd.as_fd(), Some(sha(b"payload")));
        assert_eq!(
            r,
            EvidenceRef {
                sha256: Some(driftgate_core::util::hex(sha(b"payload"))),
                stored: true,
                reason: None
            }
        );
        let kept = objects(&dir.path().join("evidence")).join(r.sha256.unwrap());
        assert_eq!(std::fs::read(&kept).unwrap(), b"payload");
        assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o400);
        assert_eq!(s.keep(fd.as_fd(), Some(sha(b"payload"))).reason.as_deref(), Some(ALREADY));
        // Decided with other bytes than it has now: nothing is kept under the wrong name.
        let r = s.keep(fd.as_fd(), Some(sha(b"other")));
        assert!(!r.stored && r.reason.unwrap().contains("changed"));
        // Without a hash (never hashed): the copy's own.
        std::fs::write(&f, b"second").unwrap();
        let r = s.keep(std::fs::File::open(&f).unwrap().as_fd(), None);
        assert_eq!(r.sha256, Some(driftgate_core::util::hex(sha(b"second"))));
        assert_eq!(stats.stored.load(Ordering::Relaxed), 2);
        assert_eq!(stats.already.load(Ordering::Relaxed), 1);
        assert_eq!(stats.lost.load(Ordering::Relaxed), 1);
        assert_eq!(list(&dir.path().join("evidence")).unwrap().len(), 2);
    }

    #[test]
    fn the_caps_hold_and_the_oldest_copies_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let (s, stats) = store(dir.path(), 100, 250);
        let f = dir.path().join("bin");
        std::fs::write(&f, vec![1u8; 101]).unwrap();
        let r = s.keep(std::fs::File::open(&f).unwrap().as_fd(), None);
        assert_eq!((r.stored, r.reason.as_deref()), (false, Some(TOO_BIG)));
        assert_eq!(stats.too_big.load(Ordering::Relaxed), 1);
        let mut kept = Vec::new();
        for i in 0..4u8 {
            std::fs::write(&f, vec![i; 100]).unwrap();
            let r = s.keep(std::fs::File::open(&f).unwrap().as_fd(), None);
            assert!(r.stored, "{r:?}");
            kept.push(r.sha256.unwrap());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let now: Vec<String> =
            list(&dir.path().join("evidence")).unwrap().into_iter().map(|e| e.sha256).collect();
        assert_eq!(now, kept[2..].to_vec(), "the two oldest evicted");
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 2);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 200);
        assert_eq!(stats.files.load(Ordering::Relaxed), 2);
    }
}
