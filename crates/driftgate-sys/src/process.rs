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

/// Makes `cmd` start with `RLIMIT_NOFILE` set to `n` (soft and hard): for tests and tools that
/// run the daemon under a low descriptor limit.
pub fn limit_nofile_in_child(cmd: &mut Command, n: u64) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and only calls setrlimit, which is
    // async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                .map_err(std::io::Error::from)
        })
    }
}

/// Lowers the calling thread's scheduling priority (raises its nice value by `by`). The sink
/// thread does the work that can wait (serialising, writing and syncing findings); at a lower
/// priority it yields the CPU to the programs whose execs were just allowed.
pub fn lower_this_thread_priority(by: i32) {
    // On Linux the nice value is per thread, addressed by its tid.
    let tid = Some(rustix::thread::gettid());
    if let Ok(cur) = rustix::process::getpriority_process(tid) {
        let _ = rustix::process::setpriority_process(tid, (cur + by).min(19));
    }
}

/// Moves the calling thread to `SCHED_IDLE`. A waking normal task preempts an idle-policy task
/// at once (a low nice value alone can still hold the CPU for a scheduler slice, which showed
/// up as millisecond stalls of other execs while a large file was hashed). The thread still
/// progresses: it gets all spare CPU, and a small share under saturation.
pub fn set_this_thread_idle_policy() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid, initialised
    // sched_param that lives across the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises the soft limit on open files to the hard limit (what a process may do without
/// privilege). Returns the limits now in force.
pub fn raise_nofile_limit() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return (1024, 1024) };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (hard, hard);
    }
    (soft, hard)
}

/// Writes `msg` to stderr and ends the process at once: no destructors, no atexit handlers,
/// no locks (a stalled thread may hold any of them).
pub fn exit_now(code: i32, msg: &str) -> ! {
    // SAFETY: write(2) of a valid buffer, then _exit; neither touches process state.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    }
}

/// How many file descriptors this process has open (`/proc/self/fd`).
pub fn open_fd_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1))
}

/// Sets `sig` to be ignored in the whole process (SIGIO from a lease break, SIGPIPE from a
/// closed peer): the daemon handles those conditions where they arise.
pub fn ignore_signal(sig: nix::sys::signal::Signal) -> Result<(), crate::SysError> {
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal context.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }
        .map(drop)
        .map_err(|e| crate::SysError::new("signal", e))
}

/// Runs `work` as PID 1 of a new PID namespace (a forked child; `unshare(CLONE_NEWPID)` only
/// moves the caller's later children) and waits for it: its return value is the child's exit
/// status, returned here. Everything it started ends with it. Call it from a single-threaded
/// process; `work` must flush what it writes before it returns.
pub fn run_as_pid_namespace_init(work: impl FnOnce() -> i32) -> Result<i32, crate::SysError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| crate::SysError::new("unshare(CLONE_NEWPID)", e))?;
    // SAFETY: the caller is single-threaded, so the child's copy of the address space has no
    // lock held by another thread; it runs `work` and leaves with _exit (no atexit handlers
    // or destructors of the parent's state run twice).
    match unsafe { nix::unistd::fork() }.map_err(|e| crate::SysError::new("fork", e))? {
        nix::unistd::ForkResult::Child => {
            let code = work();
            // SAFETY: _exit ends the process at once; nothing of it is used after.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(crate::SysError::new("waitpid", e)),
            }
        },
    }
}

/// After `unshare(CLONE_NEWPID)`: forks the new PID namespace's init, a child that only waits
/// until it is killed (the namespace lives as long as it does; the caller's later children are
/// in it). Call it from a single-threaded process.
pub fn fork_pid_namespace_init() -> Result<nix::unistd::Pid, crate::SysError> {
    // SAFETY: the caller is single-threaded; the child only calls pause (async-signal-safe)
    // until a signal ends it, and never returns into Rust code.
    match unsafe { nix::unistd::fork() }.map_err(|e| crate::SysError::new("fork", e))? {
        nix::unistd::ForkResult::Child => loop {
            nix::unistd::pause();
        },
        nix::unistd::ForkResult::Parent { child } => Ok(child),
    }
}
