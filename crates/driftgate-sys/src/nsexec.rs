//! Writing `vm.memfd_noexec` inside another process's PID namespace.
//!
//! The sysctl is per PID namespace: a write applies to the active PID namespace of the writing
//! process, so it has to come from a process *in* that namespace. `setns(CLONE_NEWPID)` only
//! moves the caller's future children, so a short-lived child is forked after it, writes the
//! value and exits. The `setns` happens on a thread of its own that ends afterwards: no thread
//! of the daemon keeps a foreign namespace for its children.
//!
//! Written by hand: no crate forks into a PID namespace. The child only calls `open`, `write`
//! and `_exit` (async-signal-safe), with everything it needs prepared before the fork.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::SysError;

/// Where the value is written: any procfs works, the value lands in the writer's PID
/// namespace. Under systemd's `ProtectKernelTunables=`, the unit's
/// `ReadWritePaths=/proc/sys/vm/memfd_noexec` keeps this one file writable.
const PATH: &str = "/proc/sys/vm/memfd_noexec";

/// Sets `vm.memfd_noexec` to `value` (0, 1 or 2) in the PID namespace that `pid_ns` (an fd of
/// `/proc/<pid>/ns/pid`) refers to.
pub fn set_memfd_noexec(pid_ns: OwnedFd, value: u8) -> Result<(), SysError> {
    in_thread(pid_ns, Some(value)).map(|_| ())
}

/// The value of `vm.memfd_noexec` in the PID namespace that `pid_ns` refers to (read by a child
/// in it, as the value is the reader's namespace's).
pub fn memfd_noexec(pid_ns: OwnedFd) -> Result<u8, SysError> {
    in_thread(pid_ns, None)
}

/// What a child reading the value exits with: this plus the value.
const READ_BASE: i32 = 200;

fn in_thread(pid_ns: OwnedFd, value: Option<u8>) -> Result<u8, SysError> {
    let path = CString::new(PATH).expect("no NUL");
    let text = [b'0' + value.unwrap_or(0).min(2), b'\n'];
    let handle = std::thread::Builder::new()
        .name("driftgate-setns".into())
        .spawn(move || in_namespace(pid_ns.as_fd(), &path, value.is_some().then_some(&text)))
        .map_err(|e| SysError::new("spawn", Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN))))?;
    handle.join().unwrap_or(Err(SysError::new("thread", Errno::EIO)))
}

/// Writes `text` (or, `None`, reads the value) from a child in the namespace `ns`.
fn in_namespace(ns: BorrowedFd<'_>, path: &CString, text: Option<&[u8; 2]>) -> Result<u8, SysError> {
    // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace for
    // children, and this thread ends when the function returns.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        return Err(SysError::new("setns(CLONE_NEWPID)", Errno::last()));
    }
    let mut buf = [0u8; 4];
    let flags = if text.is_some() { libc::O_WRONLY } else { libc::O_RDONLY } | libc::O_CLOEXEC;
    // SAFETY: the child only calls async-signal-safe functions (open, read or write, _exit) on
    // data prepared before the fork, and never returns into Rust code.
    match unsafe { nix::unistd::fork() }.map_err(|e| SysError::new("fork", e))? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: `path` is a NUL-terminated path prepared before the fork.
            let fd = unsafe { libc::open(path.as_ptr(), flags) };
            let code = if fd < 0 {
                Errno::last_raw()
            } else if let Some(text) = text {
                // SAFETY: writing 2 bytes from a live array to an fd just opened.
                let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
                if n == text.len() as isize {
                    0
                } else {
                    Errno::last_raw()
                }
            } else {
                // SAFETY: reading at most 4 bytes into a live array (the child's copy of it).
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                match (n, buf[0]) {
                    (1.., b'0'..=b'2') => READ_BASE + i32::from(buf[0] - b'0'),
                    _ => libc::EIO,
                }
            };
            // SAFETY: _exit ends the child without running anything of the parent's.
            unsafe { libc::_exit(code.clamp(0, 255)) }
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) if text.is_some() => return Ok(0),
                Ok(nix::sys::wait::WaitStatus::Exited(_, v))
                    if text.is_none() && (READ_BASE..READ_BASE + 3).contains(&v) =>
                {
                    return Ok((v - READ_BASE) as u8)
                }
                Ok(nix::sys::wait::WaitStatus::Exited(_, libc::EROFS)) => {
                    // /proc/sys read-only (systemd's ProtectKernelTunables= without the unit's
                    // ReadWritePaths= exception, or a read-only /proc/sys in a pod).
                    return Err(SysError::new("write(/proc/sys/vm/memfd_noexec: read-only)", Errno::EROFS));
                }
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    return Err(SysError::new("write(/proc/sys/vm/memfd_noexec)", Errno::from_raw(code)))
                }
                // Killed: a PID namespace whose init exits takes every process in it along
                // (SIGKILL), this child too. The namespace is gone.
                Ok(nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)) => {
                    return Err(SysError::new(
                        "write(vm.memfd_noexec: the PID namespace ended)",
                        Errno::ESRCH,
                    ))
                }
                Ok(_) => return Err(SysError::new("write(vm.memfd_noexec)", Errno::EIO)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SysError::new("waitpid", e)),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_set_and_read_back_in_another_pid_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (a new PID namespace)");
            return;
        }
        let mut child = std::process::Command::new("unshare")
            .args(["-pf", "--kill-child", "sleep", "30"])
            .spawn()
            .expect("unshare");
        let ns = |p: i32| std::fs::File::open(format!("/proc/{p}/ns/pid")).map(OwnedFd::from);
        let sleep = crate::pidns::first_child(child.id() as i32);
        assert_eq!(memfd_noexec(ns(sleep).unwrap()), Ok(0), "a new namespace has the kernel's default");
        set_memfd_noexec(ns(sleep).unwrap(), 2).unwrap();
        assert_eq!(memfd_noexec(ns(sleep).unwrap()), Ok(2));
        // The host's own value is untouched.
        let host = std::fs::read_to_string(PATH).unwrap();
        assert_eq!(host.trim(), "0", "the test host runs with vm.memfd_noexec = 0");
        let _ = child.kill();
        let _ = child.wait();
    }
}
