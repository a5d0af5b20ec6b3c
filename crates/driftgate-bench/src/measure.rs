//! Timing one exec: spawn and wait, pinned, interruptible.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::{setup, BenchError};

/// posix_spawn + waitpid of `path`; returns the latency, or an error when it failed.
pub(crate) fn spawn_wait(path: &Path) -> Result<Duration, String> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
    let actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    let attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    let argv = [c"true"];
    let envp: [&std::ffi::CStr; 0] = [];
    let t = Instant::now();
    let pid = posix_spawn(path, &actions, &attr, &argv, &envp).map_err(|e| format!("posix_spawn: {e}"))?;
    let st = nix::sys::wait::waitpid(pid, None).map_err(|e| format!("waitpid: {e}"))?;
    let dt = t.elapsed();
    match st {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(dt),
        other => Err(format!("benchmark binary failed: {other:?}")),
    }
}

pub(crate) fn interrupted(sig: &SignalFd) -> bool {
    matches!(sig.read_signal(), Ok(Some(_)))
}

/// Runs `n` timed execs; `prep` makes the path for exec `i` (untimed), `done` cleans up after.
pub(crate) fn measure(
    n: usize,
    sig: &SignalFd,
    mut prep: impl FnMut(usize) -> Result<PathBuf, BenchError>,
    mut done: impl FnMut(&Path),
) -> Result<Vec<f64>, BenchError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 64 == 0 && interrupted(sig) {
            return Err(BenchError::Interrupted);
        }
        let path = prep(i)?;
        let dt = spawn_wait(&path).map_err(BenchError::Setup)?;
        done(&path);
        out.push(dt.as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Blocks SIGINT/SIGTERM so they are read between batches and everything is torn down.
pub(crate) fn interrupt_fd() -> Result<SignalFd, BenchError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(setup("sigprocmask"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(setup("signalfd"))
}

pub(crate) fn pin(cpu: Option<usize>) -> Result<(), BenchError> {
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).map_err(setup("cpu set"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(setup("sched_setaffinity"))?;
    }
    Ok(())
}

/// Microseconds to SHA-256 `size` bytes in memory (best of three): the hashing cost a first
/// exec cannot avoid.
pub fn sha256_us(size: usize) -> f64 {
    use sha2::{Digest, Sha256};
    let data = vec![0x5au8; size];
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let h = Sha256::digest(&data);
            std::hint::black_box(h);
            t.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

pub(crate) fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

pub(crate) fn load_binary(p: &Option<PathBuf>) -> Result<Vec<u8>, BenchError> {
    match p {
        Some(p) => std::fs::read(p).map_err(setup("read --binary")),
        None => Ok(super::elf::exit0(0)),
    }
}
