//! The sentinel: a small child process that ends the daemon when it stops making progress
//! and cannot end itself.
//!
//! The daemon's own stall detector is a thread: it cannot act when the whole process is
//! stopped (`SIGSTOP`, a debugger, a frozen cgroup) or when it is itself caught in what
//! stalled the rest. A stopped daemon holds every exec on the node for as long as it stays
//! stopped, and systemd's watchdog signal is only delivered once it runs again. So a child,
//! forked before the daemon opens its fanotify group and holding no file of it, watches a
//! heartbeat in a shared page; when the heartbeat is older than the stall timeout it sends the
//! daemon `SIGKILL`, the kernel closes the group and lets every held exec go on, and the
//! service manager starts a new daemon. The child dies with the daemon (`PR_SET_PDEATHSIG`).
//!
//! After `fork` the child makes only async-signal-safe system calls (no allocation, no locks):
//! the daemon may already have threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use super::SysError;

#[repr(C)]
struct Page {
    /// CLOCK_MONOTONIC nanoseconds of the last heartbeat; 0: none yet.
    beat_ns: AtomicU64,
    /// How old the heartbeat may get, in nanoseconds; 0: the sentinel is paused.
    stall_ns: AtomicU64,
    /// Times the sentinel ended the daemon (seen by nobody but a debugger; kept for symmetry).
    fired: AtomicU64,
}

/// The daemon's side: beats the heartbeat.
pub struct Sentinel {
    page: std::ptr::NonNull<Page>,
    pid: i32,
}

// SAFETY: the page is only accessed through atomics.
unsafe impl Send for Sentinel {}
// SAFETY: as above.
unsafe impl Sync for Sentinel {}

fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass; async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Sentinel {
    /// Forks the sentinel. Call it before opening anything the kernel releases held execs on
    /// (the fanotify group): every fd above 2 is closed in the child anyway.
    pub fn start(stall: Duration) -> Result<Sentinel, SysError> {
        let size = std::mem::size_of::<Page>();
        // SAFETY: a fresh shared anonymous mapping; zeroed by the kernel, which is a valid Page.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::new("mmap(sentinel)", Errno::last()));
        }
        let page = std::ptr::NonNull::new(ptr.cast::<Page>()).expect("mmap returned a mapping");
        // SAFETY: the page is mapped, aligned and zero-initialised.
        let p = unsafe { page.as_ref() };
        p.stall_ns.store(stall.as_nanos() as u64, Ordering::Relaxed);
        p.beat_ns.store(monotonic_ns(), Ordering::Relaxed);
        // SAFETY: getpid cannot fail.
        let parent = unsafe { libc::getpid() };
        // SAFETY: fork; the child below only makes async-signal-safe calls and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SysError::new("fork(sentinel)", Errno::last()));
        }
        if pid == 0 {
            // SAFETY: the shared page outlives the child (it is never unmapped there).
            child(unsafe { page.as_ref() }, parent);
        }
        Ok(Sentinel { page, pid })
    }

    fn page(&self) -> &Page {
        // SAFETY: mapped for the life of the process (never unmapped).
        unsafe { self.page.as_ref() }
    }

    /// The daemon is making progress.
    pub fn beat(&self) {
        self.page().beat_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    /// A new stall timeout (reload).
    pub fn set_stall(&self, stall: Duration) {
        self.beat();
        self.page().stall_ns.store(stall.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }
}

const MESSAGE: &[u8] =
    b"driftgate-sentinel: the daemon made no progress for the stall timeout (stopped or hung); killing it so the kernel releases the held execs\n";

fn child(page: &Page, parent: i32) -> ! {
    // SAFETY: raw system calls with valid arguments; nothing here allocates or takes a lock.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, c"dg-sentinel".as_ptr() as libc::c_ulong, 0, 0, 0);
        // Hold nothing of the daemon's: a copy of the fanotify group here would keep held execs
        // held after the daemon is gone.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // Signals the daemon blocks (for its signalfd) are blocked here too: unblock them, so
        // that a stop of the service ends this process as well.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let tick = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        loop {
            libc::nanosleep(&tick, std::ptr::null_mut());
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            let stall = page.stall_ns.load(Ordering::Relaxed);
            let beat = page.beat_ns.load(Ordering::Relaxed);
            if stall == 0 || beat == 0 {
                continue;
            }
            if monotonic_ns().saturating_sub(beat) > stall {
                page.fired.fetch_add(1, Ordering::Relaxed);
                libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
                libc::kill(parent, libc::SIGKILL);
                libc::_exit(0);
            }
        }
    }
}
