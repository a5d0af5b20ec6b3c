//! File descriptors are a budget. Every exec waiting in the slow path holds one (the event's),
//! every `read` of the fanotify group makes up to [`READ_BATCH`] more, and every watched
//! container holds its layer directories. When the kernel cannot make an event's fd
//! (`EMFILE`), it *denies* that exec itself and `read` fails: running out of fds would both
//! block arbitrary execs and blind the daemon. So the number of execs allowed to wait is
//! sized from the limit minus what the daemon holds otherwise (measured every second), and an
//! exec beyond it is decided at once without its hash ([`super::hot::Shared::route`]). Room
//! is also kept for the files held open after an allow ([`super::pin`]), and discovery leaves
//! a container unwatched rather than eat into [`RESERVED`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Events (each with a new fd) one `read` of the fanotify group can return: a 4 KiB buffer of
/// 24-byte records.
pub const READ_BATCH: u64 = 4096 / 24;
/// Fds kept free for everything else the daemon opens on the way (layer lookups, /proc,
/// the spool, a status client).
const MARGIN: u64 = 256;
/// Fds never given to watching containers: the room decisions need on the way (a read batch,
/// layer lookups, /proc). A container that would eat into it is left unwatched, and says so,
/// rather than making later decisions fail for want of an fd.
pub const RESERVED: u64 = READ_BATCH + MARGIN;
/// Never more waiting execs than this, however high the limit.
const CEILING: u64 = 8192;

#[derive(Debug)]
pub struct FdBudget {
    soft_limit: u64,
    /// Fds the daemon holds besides waiting events and held files, measured.
    base: AtomicU64,
    /// `[hashing] max_pending`.
    cap: Option<u64>,
    /// Files kept open after an allow at most ([`super::pin`]): room kept for them.
    holds: u64,
    /// Execs decided without their hash because the budget was spent.
    pub spent: AtomicU64,
}

impl FdBudget {
    pub fn new(soft_limit: u64, cap: Option<usize>) -> FdBudget {
        let b = FdBudget {
            soft_limit,
            base: AtomicU64::new(0),
            cap: cap.map(|c| c as u64),
            holds: Self::holds_for(soft_limit),
            spent: AtomicU64::new(0),
        };
        b.refresh(0, 0);
        b
    }

    /// How many files may be held after an allow under `soft_limit`: a quarter of what is
    /// left beside the reserve.
    pub fn holds_for(soft_limit: u64) -> u64 {
        (soft_limit.saturating_sub(RESERVED) / 4).clamp(16, 65536)
    }

    /// Room kept for held files (see [`FdBudget::holds_for`]).
    pub fn holds(&self) -> u64 {
        self.holds
    }

    /// How many execs may wait for the slow path now.
    pub fn limit(&self) -> u64 {
        let free = self.soft_limit.saturating_sub(self.base.load(Ordering::Relaxed) + RESERVED + self.holds);
        free.min(self.cap.unwrap_or(CEILING))
    }

    /// Whether one more exec may wait, with `waiting` waiting already.
    pub fn allows(&self, waiting: u64) -> bool {
        waiting < self.limit()
    }

    /// Re-measures the daemon's own fds; `waiting` of them are waiting events and `held` are
    /// held files.
    pub fn refresh(&self, waiting: u64, held: u64) {
        if let Some(open) = driftgate_sys::process::open_fd_count() {
            self.base.store((open as u64).saturating_sub(waiting + held), Ordering::Relaxed);
        }
    }

    pub fn soft_limit(&self) -> u64 {
        self.soft_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_room_for_a_read_batch_and_the_daemons_own_fds() {
        let b = FdBudget::new(1024, None);
        let base = b.base.load(Ordering::Relaxed);
        assert!(base > 0, "the test process has fds open");
        assert_eq!(b.holds(), (1024 - RESERVED) / 4);
        assert_eq!(b.limit(), 1024 - base - READ_BATCH - MARGIN - b.holds());
        assert!(b.allows(0) && !b.allows(b.limit()));
        assert_eq!(FdBudget::new(1 << 20, Some(100)).limit(), 100, "the configured cap");
        assert_eq!(FdBudget::new(1 << 20, None).limit(), CEILING);
        assert_eq!(FdBudget::new(64, None).limit(), 0, "a tiny limit: nothing waits, nothing fails");
    }
}
