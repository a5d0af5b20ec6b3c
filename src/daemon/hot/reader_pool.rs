//! Hashing with a deadline. An exec must never wait on a read that takes too long or never
//! returns (a huge sparse file, a hung FUSE or network filesystem): the read runs on a reader
//! thread while the deciding worker waits at most `hashing.max_secs`, then decides without the
//! hash. A reader stuck in the kernel stays stuck, but only it: a new one takes the next
//! request, up to [`MAX_READERS`]; with that many stuck, hashing reports itself unavailable.
//! On shutdown every wait ends at once.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use driftgate_sys::fs::{self as sfs, FileId};
use sha2::{Digest, Sha256};

/// Reader threads at most (stuck ones included).
pub const MAX_READERS: usize = 16;

/// What became of one hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// The hash, and the file version it is of (see [`hash_stable`]).
    Done([u8; 32], FileId),
    /// The content could not be pinned down (open for writing, changed while read, I/O error).
    Unsettled,
    /// Not done within the limit.
    TimedOut,
    /// Every reader is stuck: no hash can be taken now.
    Unavailable,
    /// The daemon is stopping.
    Stopping,
}

struct Request {
    fd: OwnedFd,
    id: FileId,
    reply: Sender<Option<([u8; 32], FileId)>>,
}

/// What a reader does with a request (the real one: [`hash_stable`]).
pub type ReadFn = fn(BorrowedFd<'_>, &FileId) -> Option<([u8; 32], FileId)>;

/// The reader the daemon runs: [`hash_stable`], or in debug builds with
/// `DRIFTGATE_TEST_HASH_DELAY_MS` set, the same after a delay per file (fault injection for
/// the reliability tests: slow storage).
pub fn daemon_reader() -> ReadFn {
    if cfg!(debug_assertions) {
        if let Some(ms) = std::env::var("DRIFTGATE_TEST_HASH_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
            TEST_DELAY_MS.store(ms, Ordering::Relaxed);
            return slow_read;
        }
    }
    hash_stable
}

static TEST_DELAY_MS: AtomicU64 = AtomicU64::new(0);

fn slow_read(fd: BorrowedFd<'_>, id: &FileId) -> Option<([u8; 32], FileId)> {
    std::thread::sleep(Duration::from_millis(TEST_DELAY_MS.load(Ordering::Relaxed)));
    hash_stable(fd, id)
}

pub struct ReaderPool {
    read: ReadFn,
    tx: Sender<Request>,
    rx: Receiver<Request>,
    readers: AtomicUsize,
    idle: Arc<AtomicUsize>,
    stopping: AtomicBool,
    pub timeouts: AtomicU64,
    pub unavailable: AtomicU64,
}

impl Default for ReaderPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ReaderPool {
    pub fn new() -> ReaderPool {
        Self::with_reader(hash_stable)
    }

    pub fn with_reader(read: ReadFn) -> ReaderPool {
        let (tx, rx) = crossbeam_channel::unbounded();
        ReaderPool {
            read,
            tx,
            rx,
            readers: AtomicUsize::new(0),
            idle: Arc::new(AtomicUsize::new(0)),
            stopping: AtomicBool::new(false),
            timeouts: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        }
    }

    /// Ends every wait now and for good (shutdown).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Readers that are busy (some possibly stuck in the kernel).
    pub fn busy(&self) -> usize {
        self.readers.load(Ordering::Relaxed).saturating_sub(self.idle.load(Ordering::Relaxed))
    }

    /// The SHA-256 of the file version `id` read through `fd`, within `limit`.
    pub fn hash(&self, fd: BorrowedFd<'_>, id: &FileId, limit: Duration) -> Hashed {
        if self.stopping.load(Ordering::Relaxed) {
            return Hashed::Stopping;
        }
        // The reader works on its own fd of the same open file (a lease taken through it is
        // the open file's, and it outlives this wait if the read is stuck).
        let Ok(dup) = fd.try_clone_to_owned() else { return Hashed::Unsettled };
        if self.idle.load(Ordering::Relaxed) == 0 && !self.spawn_reader() {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
            return Hashed::Unavailable;
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.tx.send(Request { fd: dup, id: *id, reply }).is_err() {
            return Hashed::Unavailable;
        }
        let deadline = Instant::now() + limit;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Hashed::Stopping;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                return Hashed::TimedOut;
            }
            match answer.recv_timeout(left.min(Duration::from_millis(20))) {
                Ok(Some((h, v))) => return Hashed::Done(h, v),
                Ok(None) => return Hashed::Unsettled,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Hashed::Unsettled,
            }
        }
    }

    /// Starts one more reader unless there are [`MAX_READERS`] already.
    fn spawn_reader(&self) -> bool {
        let n = self.readers.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_READERS {
            self.readers.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let rx = self.rx.clone();
        let read = self.read;
        let idle = Arc::clone(&self.idle);
        idle.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new().name(format!("driftgate-read-{n}")).spawn(move || {
            // Reading takes spare CPU only, as the large-file hashing did.
            if driftgate_sys::process::set_this_thread_idle_policy().is_err() {
                driftgate_sys::process::lower_this_thread_priority(10);
            }
            while let Ok(req) = rx.recv() {
                idle.fetch_sub(1, Ordering::Relaxed);
                let h = read(req.fd.as_fd(), &req.id);
                idle.fetch_add(1, Ordering::Relaxed);
                let _ = req.reply.send(h);
            }
        });
        if spawned.is_err() {
            self.readers.fetch_sub(1, Ordering::Relaxed);
            self.idle.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
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
    let Some(before) = sfs::fstat_fd(fd).ok().map(|s| driftgate_sys::fs::file_id(&s)) else {
        return unsettled();
    };
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
    let after = sfs::fstat_fd(fd).ok().map(|s| driftgate_sys::fs::file_id(&s));
    match (res, after) {
        // The lease stays on the open file: an "allow" keeps it until the kernel keeps
        // writers out itself ([`crate::daemon::hot::pin`]); otherwise it ends when the file is closed.
        (Ok(n), Some(after)) if n == before.size && after == before => Some((h.finalize().into(), before)),
        _ => unsettled(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_within_the_limit_and_stops_waiting_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let id = driftgate_sys::fs::file_id(&driftgate_sys::fs::fstat_fd(f.as_fd()).unwrap());
        let h = ReaderPool::new();
        match h.hash(f.as_fd(), &id, Duration::from_secs(5)) {
            Hashed::Done(d, v) => {
                assert_eq!(driftgate_core::util::hex(d).len(), 64);
                assert_eq!(v, id);
            }
            other => panic!("{other:?}"),
        }
        let mut changed = id;
        changed.size += 1;
        assert_eq!(
            h.hash(f.as_fd(), &changed, Duration::from_secs(5)),
            Hashed::Done(
                match h.hash(f.as_fd(), &id, Duration::from_secs(5)) {
                    Hashed::Done(d, _) => d,
                    other => panic!("{other:?}"),
                },
                id
            ),
            "under a lease, the hash of the version there now"
        );
        // A hash that succeeded keeps its lease on the open file (for the writer hold): give
        // it back before a writer opens the file.
        driftgate_sys::fs::release_lease(f.as_fd());
        let _w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        assert_eq!(h.hash(f.as_fd(), &id, Duration::from_secs(5)), Hashed::Unsettled, "open for writing");
        h.stop();
        assert_eq!(h.hash(f.as_fd(), &id, Duration::from_secs(5)), Hashed::Stopping);
    }

    #[test]
    fn a_read_that_never_returns_holds_up_only_its_reader_and_stuck_readers_are_bounded() {
        fn stuck(_: BorrowedFd<'_>, _: &FileId) -> Option<([u8; 32], FileId)> {
            std::thread::sleep(Duration::from_secs(3600));
            None
        }
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let id = FileId { dev: 0, ino: 0, size: 10, mtime_ns: 0, ctime_ns: 0 };
        let h = ReaderPool::with_reader(stuck);
        for i in 0..MAX_READERS {
            let t = Instant::now();
            assert_eq!(h.hash(f.as_fd(), &id, Duration::from_millis(30)), Hashed::TimedOut, "request {i}");
            assert!(t.elapsed() < Duration::from_millis(500), "the wait is bounded");
        }
        assert_eq!(h.busy(), MAX_READERS, "every reader is stuck");
        let t = Instant::now();
        assert_eq!(h.hash(f.as_fd(), &id, Duration::from_secs(5)), Hashed::Unavailable, "no more readers");
        assert!(t.elapsed() < Duration::from_millis(100), "and no wait at all");
        assert_eq!(h.timeouts.load(Ordering::Relaxed), MAX_READERS as u64);
    }

    #[test]
    fn hash_of_a_file_matches_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let id = driftgate_sys::fs::file_id(&sfs::fstat_fd(f.as_fd()).unwrap());
        let (h, version) = hash_stable(f.as_fd(), &id).unwrap();
        assert_eq!(
            driftgate_core::util::hex(h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(version, id);
    }

    #[test]
    fn a_file_open_for_writing_is_not_hashed_as_settled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let _writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let id = driftgate_sys::fs::file_id(&sfs::fstat_fd(f.as_fd()).unwrap());
        assert_eq!(hash_stable(f.as_fd(), &id), None);
    }

    #[test]
    fn a_file_changed_since_the_event_is_hashed_as_its_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let now = driftgate_sys::fs::file_id(&sfs::fstat_fd(f.as_fd()).unwrap());
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
