//! Keeping writers out of an allowed file until the kernel does.
//!
//! The kernel denies writes to a file being executed (`ETXTBSY`) only from a point *after*
//! the permission event is answered (`deny_write_access` in `do_open_execat`). Between the
//! answer and that point, a writer could open the file, change it and close it again, and the
//! changed bytes would run although the checked ones were allowed: a check-then-exec race that
//! a container can win by rewriting a file in a loop while executing it.
//!
//! So before an exec of a container file is allowed, a read lease is taken on the file and its
//! version is checked again under it; the leased open file is then kept for
//! `daemon.writer_hold_ms` after the last exec of it that was allowed. A writer that comes
//! meanwhile blocks in `open` *holding write access*, so an exec that has not reached its own
//! denial yet fails with `ETXTBSY` rather than running other bytes; once the hold ends the
//! writer goes on. A lease cannot be had while anyone has the file open for writing: the bytes
//! are then not settled, and the exec is decided without its hash.
//!
//! One lease per file is enough (a writer has to get past every lease on the inode), and one
//! per file is what keeps this cheap: the kernel walks an inode's whole lease list on every
//! open of it, so a program executed thousands of times a second must not gather a lease per
//! exec. A file's hold is renewed by each allowed exec and ended by one thread when it runs out.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use driftgate_sys::fs::{self as sfs, FileId};

/// What taking the lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Leased and held, and the file is still the version that was decided.
    Held,
    /// Someone has the file open for writing (or is waiting to): its bytes are not settled.
    Busy,
    /// The file changed between the decision and the lease.
    Changed,
    /// The filesystem (or the daemon's privileges) allow no lease: nothing is held.
    Unsupported,
    /// Holding is switched off (`daemon.writer_hold_ms = 0`).
    Off,
}

struct Hold {
    id: FileId,
    /// The leased open file (a dup of the fd it was taken through).
    file: OwnedFd,
    until: Instant,
}

#[derive(Default)]
struct Holds {
    by_inode: HashMap<(u64, u64), Hold>,
    /// Holding is switched off: end every hold.
    off: bool,
    stopping: bool,
}

/// The holds, and the thread that ends them.
pub struct Holder {
    holds: Arc<(Mutex<Holds>, Condvar)>,
    hold_ms: AtomicU64,
    cap: usize,
    /// Files leased and held (a renewal of a file already held is not counted).
    pub kept: AtomicU64,
    /// Allowed execs of a file already held, whose hold was renewed.
    pub renewed: AtomicU64,
    /// Files not held because [`Holder::cap`] were held already.
    pub cut: AtomicU64,
    /// Files on which no lease could be taken (the race stays open for them).
    pub unsupported: AtomicU64,
    /// Allowed execs whose file was being written, or had changed, when leased.
    pub unsettled: AtomicU64,
    /// Holds ended because a writer that gave up (a non-blocking open, as `touch` makes) left
    /// their lease being broken, which refused every new lease on the file.
    pub breaks_cleared: AtomicU64,
}

impl Holder {
    /// A holder keeping each file for `hold` after its last allowed exec, at most `cap` files.
    pub fn new(hold: Duration, cap: usize) -> Holder {
        // A writer that meets a held lease makes the kernel send the holder SIGIO, whose default
        // action ends the process.
        let ignored = driftgate_sys::process::ignore_signal(nix::sys::signal::Signal::SIGIO);
        let holds = Arc::new((Mutex::new(Holds { off: hold.is_zero(), ..Holds::default() }), Condvar::new()));
        let h = Holder {
            holds: Arc::clone(&holds),
            hold_ms: AtomicU64::new(hold.as_millis() as u64),
            cap,
            kept: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            unsupported: AtomicU64::new(0),
            unsettled: AtomicU64::new(0),
            breaks_cleared: AtomicU64::new(0),
        };
        let spawned =
            std::thread::Builder::new().name("driftgate-hold".into()).spawn(move || release_when_due(&holds));
        if spawned.is_err() || ignored.is_err() {
            // Without the thread nothing would be released: hold nothing.
            h.set_hold(Duration::ZERO);
        }
        h
    }

    /// Changes the hold (on reload); 0 turns holding off and ends every hold now.
    pub fn set_hold(&self, hold: Duration) {
        self.hold_ms.store(hold.as_millis() as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.holds.0.lock() {
            h.off = hold.is_zero();
        }
        self.holds.1.notify_one();
    }

    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.hold_ms.load(Ordering::Relaxed))
    }

    /// Files held now.
    pub fn held(&self) -> usize {
        self.holds.0.lock().map(|h| h.by_inode.len()).unwrap_or(0)
    }

    /// Ends every hold now and holds nothing more (shutdown).
    pub fn stop(&self) {
        self.hold_ms.store(0, Ordering::Relaxed);
        if let Ok(mut h) = self.holds.0.lock() {
            h.stopping = true;
        }
        self.holds.1.notify_one();
    }

    /// Ends this daemon's hold of the inode `key` when its lease is being broken and no writer
    /// has the file open (the break was left by a writer that gave up): that lease would refuse
    /// every new lease on the inode until the hold runs out. Returns whether one was ended.
    fn drop_own_break(&self, holds: &mut Holds, key: (u64, u64)) -> bool {
        let stale = holds
            .by_inode
            .get(&key)
            .is_some_and(|h| !lease_intact(h.file.as_fd()) && no_writer(h.file.as_fd()));
        if stale {
            if let Some(h) = holds.by_inode.remove(&key) {
                sfs::release_lease(h.file.as_fd());
                self.breaks_cleared.fetch_add(1, Ordering::Relaxed);
            }
        }
        stale
    }

    /// Before the file `fd` (version `id`) is leased elsewhere (hashed under a lease): ends this
    /// daemon's own hold of an older version of the inode if a writer that gave up left it being
    /// broken ([`Holder::drop_own_break`]).
    pub fn clear_stale_break(&self, id: &FileId) {
        let Ok(mut holds) = self.holds.0.lock() else { return };
        let key = (id.dev, id.ino);
        if holds.by_inode.get(&key).is_some_and(|h| h.id != *id) {
            self.drop_own_break(&mut holds, key);
        }
    }

    /// Before an exec of file version `id`, open as `fd`, is allowed: leases the file (or
    /// renews the hold of the lease already held on it) and checks it is still that version.
    pub fn pin(&self, fd: BorrowedFd<'_>, id: &FileId) -> Pin {
        let ms = self.hold_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return Pin::Off;
        }
        let until = Instant::now() + Duration::from_millis(ms);
        let key = (id.dev, id.ino);
        let p = {
            let Ok(mut holds) = self.holds.0.lock() else { return Pin::Unsupported };
            match holds.by_inode.get_mut(&key) {
                // Held since it was this version: writers were kept out all along. A lease
                // being broken is either a writer waiting now, or one that gave up (a
                // non-blocking open, as `touch` makes): only the first is a writer.
                Some(h) if h.id == *id => {
                    if lease_intact(h.file.as_fd()) || no_writer(h.file.as_fd()) {
                        h.until = until;
                        self.renewed.fetch_add(1, Ordering::Relaxed);
                        Pin::Held
                    } else {
                        Pin::Busy
                    }
                }
                _ => {
                    let mut p = pin(fd, id);
                    if p == Pin::Busy && self.drop_own_break(&mut holds, key) {
                        // The lease was refused by this daemon's own hold of an older version
                        // of the inode, left being broken by a writer that is gone.
                        p = pin(fd, id);
                    }
                    if p == Pin::Held {
                        let was_empty = holds.by_inode.is_empty();
                        if holds.by_inode.len() >= self.cap && !holds.by_inode.contains_key(&key) {
                            self.cut.fetch_add(1, Ordering::Relaxed);
                        } else if let Ok(file) = fd.try_clone_to_owned() {
                            // A hold of an older version of the inode is replaced (and closed).
                            holds.by_inode.insert(key, Hold { id: *id, file, until });
                            self.kept.fetch_add(1, Ordering::Relaxed);
                            if was_empty {
                                self.holds.1.notify_one();
                            }
                        }
                    }
                    p
                }
            }
        };
        match p {
            Pin::Unsupported => {
                self.unsupported.fetch_add(1, Ordering::Relaxed);
            }
            Pin::Busy | Pin::Changed => {
                self.unsettled.fetch_add(1, Ordering::Relaxed);
            }
            Pin::Held | Pin::Off => {}
        }
        p
    }
}

/// Takes a read lease through `fd` and compares the file with version `id` under it. A file
/// already leased through this open file was hashed under that lease (no writer since): its
/// bytes are the ones decided even if its metadata changed meanwhile (an unlink, a chmod).
pub fn pin(fd: BorrowedFd<'_>, id: &FileId) -> Pin {
    if lease_intact(fd) {
        return Pin::Held;
    }
    match sfs::try_read_lease(fd) {
        Ok(()) => {}
        Err(e) if e.errno == nix::errno::Errno::EAGAIN => return Pin::Busy,
        Err(_) => return Pin::Unsupported,
    }
    match sfs::fstat_fd(fd) {
        Ok(st) if driftgate_sys::fs::file_id(&st) == *id => Pin::Held,
        _ => {
            sfs::release_lease(fd);
            Pin::Changed
        }
    }
}

/// Whether the read lease held through `fd` is still a whole one (no writer waiting on it).
fn lease_intact(fd: BorrowedFd<'_>) -> bool {
    sfs::lease_type(fd) == Some(libc::F_RDLCK)
}

/// Whether nobody has the file open for writing, asked through this daemon's own lease on it
/// (`fd`) while that lease is being broken: setting a read lease again succeeds only when no
/// one has write access to the inode, and a writer waiting on the break has it already (the
/// kernel takes write access before it breaks leases in `open`). A non-blocking writer that
/// gave up (`EWOULDBLOCK`) left the break behind but holds no write access. The lease stays
/// ours, and still keeps new writers waiting.
fn no_writer(fd: BorrowedFd<'_>) -> bool {
    sfs::try_read_lease(fd).is_ok()
}

/// Ends holds as they run out: sleeps until the earliest one is due (or until there is one).
/// Files are closed outside the lock.
fn release_when_due(holds: &(Mutex<Holds>, Condvar)) {
    let (lock, cv) = holds;
    let Ok(mut g) = lock.lock() else { return };
    loop {
        let now = Instant::now();
        let end_all = g.off || g.stopping;
        let due: Vec<(u64, u64)> =
            g.by_inode.iter().filter(|(_, h)| end_all || h.until <= now).map(|(k, _)| *k).collect();
        let ended: Vec<Hold> = due.iter().filter_map(|k| g.by_inode.remove(k)).collect();
        let next = g.by_inode.values().map(|h| h.until).min();
        if g.stopping {
            return;
        }
        if !ended.is_empty() {
            drop(g);
            drop(ended);
            g = match lock.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            continue;
        }
        g = match next {
            None => match cv.wait(g) {
                Ok(g) => g,
                Err(_) => return,
            },
            Some(t) => match cv.wait_timeout(g, t.saturating_duration_since(Instant::now())) {
                Ok((g, _)) => g,
                Err(_) => return,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &std::path::Path, content: &[u8]) -> (std::path::PathBuf, std::fs::File, FileId) {
        let p = dir.join("f");
        std::fs::write(&p, content).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let id = driftgate_sys::fs::file_id(&sfs::fstat_fd(f.as_fd()).unwrap());
        (p, f, id)
    }

    fn time_to_open_for_writing(p: &std::path::Path) -> Duration {
        let t = Instant::now();
        drop(std::fs::OpenOptions::new().write(true).open(p).unwrap());
        t.elapsed()
    }

    #[test]
    fn a_held_file_keeps_writers_out_until_its_last_exec_plus_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, id) = file_with(dir.path(), b"image bytes");
        let h = Holder::new(Duration::from_millis(300), 16);
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Held);
        drop(f);
        assert_eq!(h.held(), 1, "held after the event's own fd is closed");
        // A second exec of the same file renews the one hold.
        std::thread::sleep(Duration::from_millis(150));
        let f2 = std::fs::File::open(&p).unwrap();
        assert_eq!(h.pin(f2.as_fd(), &id), Pin::Held);
        drop(f2);
        assert_eq!((h.held(), h.kept.load(Ordering::Relaxed), h.renewed.load(Ordering::Relaxed)), (1, 1, 1));
        let waited = time_to_open_for_writing(&p);
        assert!(waited >= Duration::from_millis(200), "the writer waited for the renewed hold: {waited:?}");
        assert!(waited < Duration::from_secs(5), "and no longer: {waited:?}");
        assert!(wait_for(|| h.held() == 0), "the hold ended");
        assert!(time_to_open_for_writing(&p) < Duration::from_millis(50));
    }

    fn wait_for(f: impl Fn() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_file_being_written_or_changed_is_not_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, id) = file_with(dir.path(), b"one");
        let h = Holder::new(Duration::from_millis(50), 16);
        let w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Busy);
        std::io::Write::write_all(&mut &w, b"two!").unwrap();
        drop(w);
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Changed);
        assert_eq!(h.held(), 0);
        // The lease was given back: a writer does not wait.
        assert!(time_to_open_for_writing(&p) < Duration::from_millis(40));
        assert_eq!(h.unsettled.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_writer_waiting_on_a_held_file_makes_the_next_exec_unsettled() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, id) = file_with(dir.path(), b"image bytes");
        let h = Holder::new(Duration::from_millis(400), 16);
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Held);
        let writer = std::thread::spawn(move || time_to_open_for_writing(&p));
        assert!(wait_for(|| h.pin(f.as_fd(), &id) == Pin::Busy), "the break was seen");
        drop(f);
        let waited = writer.join().unwrap();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5), "{waited:?}");
    }

    /// `touch` opens `O_WRONLY | O_NONBLOCK`: against a held lease that fails with `EAGAIN`
    /// and leaves the lease being broken. Nobody writes; the file is what was decided.
    fn nonblocking_writer_gives_up(p: &std::path::Path) {
        use std::os::unix::fs::OpenOptionsExt;
        let e = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "the writer met the held lease");
    }

    #[test]
    fn a_writer_that_gave_up_does_not_unsettle_the_next_exec_of_the_same_or_a_touched_version() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, id) = file_with(dir.path(), b"image bytes");
        let h = Holder::new(Duration::from_millis(400), 16);
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Held);
        nonblocking_writer_gives_up(&p);
        assert_ne!(sfs::lease_type(f.as_fd()), Some(libc::F_RDLCK), "the lease is being broken");
        // The same version again: held (renewed), writers still kept out.
        for _ in 0..3 {
            assert_eq!(h.pin(f.as_fd(), &id), Pin::Held);
        }
        assert!(time_to_open_for_writing_nonblocking_fails(&p), "the renewed hold still keeps writers out");
        // `touch` then changes the times itself: a new version of the same inode, through a new
        // open file (as the next exec's event fd is).
        let now = nix::sys::time::TimeSpec::new(1_700_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &p,
            &now,
            &now,
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )
        .unwrap();
        let f2 = std::fs::File::open(&p).unwrap();
        let id2 = driftgate_sys::fs::file_id(&sfs::fstat_fd(f2.as_fd()).unwrap());
        assert_ne!(id, id2);
        assert_eq!(h.pin(f2.as_fd(), &id2), Pin::Held, "the old hold's break was this daemon's own");
        assert_eq!(h.breaks_cleared.load(Ordering::Relaxed), 1);
        assert_eq!(h.unsettled.load(Ordering::Relaxed), 0);
    }

    fn time_to_open_for_writing_nonblocking_fails(p: &std::path::Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(p).is_err()
    }

    #[test]
    fn a_writer_with_write_access_still_unsettles_a_held_file_whose_break_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, id) = file_with(dir.path(), b"image bytes");
        let h = Holder::new(Duration::from_millis(300), 16);
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Held);
        nonblocking_writer_gives_up(&p);
        // A blocking writer now waits on the break, holding write access.
        let p2 = p.clone();
        let writer = std::thread::spawn(move || time_to_open_for_writing(&p2));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(h.pin(f.as_fd(), &id), Pin::Busy, "a writer is waiting");
        drop(f);
        let waited = writer.join().unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn holds_are_bounded_and_can_be_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let h = Holder::new(Duration::from_secs(60), 2);
        let files: Vec<_> = (0..3)
            .map(|i| {
                let d = dir.path().join(i.to_string());
                std::fs::create_dir(&d).unwrap();
                file_with(&d, b"x")
            })
            .collect();
        for (_, f, id) in &files {
            assert_eq!(h.pin(f.as_fd(), id), Pin::Held);
        }
        assert_eq!((h.held(), h.cut.load(Ordering::Relaxed)), (2, 1));
        h.set_hold(Duration::ZERO);
        assert!(wait_for(|| h.held() == 0), "switching off ends every hold");
        let (p, f, id) = &files[0];
        assert_eq!(h.pin(f.as_fd(), id), Pin::Off);
        let p = p.clone();
        // The leases were taken through the test's own fds (as through an event's): they end
        // with them.
        drop(files);
        assert!(time_to_open_for_writing(&p) < Duration::from_millis(40));
    }
}
