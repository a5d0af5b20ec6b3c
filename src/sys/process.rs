//! Spawning helper programs from a process that blocks signals.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd` start with no blocked signals. The daemon and the benchmark block SIGINT,
/// SIGTERM and SIGHUP to read them from a signalfd, and a blocked mask is inherited across
/// exec: without this, a helper (such as fapolicyd under the benchmark) would never see the
/// SIGTERM meant to stop it.
pub fn unblock_signals_in_child(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and only calls sigprocmask, which is
    // async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(|| {
            let empty = nix::sys::signal::SigSet::empty();
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None)
                .map_err(std::io::Error::from)
        })
    }
}

/// Lowers the calling thread's scheduling priority (raises its nice value by `by`). The sink
/// thread does the work that can wait (serialising, writing and syncing findings); at a lower
/// priority it yields the CPU to the programs whose execs were just allowed.
pub fn lower_this_thread_priority(by: i32) {
    // SAFETY: plain syscalls on the calling thread (who = 0 is the caller on Linux); no memory
    // is passed.
    unsafe {
        let tid = libc::gettid();
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, (cur + by).min(19));
    }
}
