//! What a thread is waiting in, from `/proc/<tid>/syscall`: an exec (the open is the exec's
//! own), or an open with its flags (an open for writing is never a library load).

use nix::unistd::Pid;

use crate::proc::{parse_syscall_line, pending_args_readable, read_syscall, SYS_EXECVE, SYS_EXECVEAT};
use crate::remote::read_remote;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const OPEN: i64 = 2;
    pub const CREAT: i64 = 85;
    pub const OPENAT: i64 = 257;
    pub const OPEN_BY_HANDLE_AT: i64 = 304;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    /// No `open` or `creat` on arm64.
    pub const OPEN: i64 = -1;
    pub const CREAT: i64 = -1;
    pub const OPENAT: i64 = 56;
    pub const OPEN_BY_HANDLE_AT: i64 = 265;
}
const SYS_OPENAT2: i64 = 437;

/// The system call a thread waits in, as far as the open-permission path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingCall {
    /// execve/execveat: the open is the exec's own (its program or `PT_INTERP` loader).
    Exec,
    /// An open with these `O_*` flags (`creat` counts as `O_WRONLY | O_CREAT | O_TRUNC`).
    Open { flags: u64 },
    /// Another call (io_uring's workers, an in-kernel open).
    Other,
}

impl PendingCall {
    /// An open for writing (`O_WRONLY` or `O_RDWR`).
    pub fn writes(&self) -> bool {
        matches!(self, PendingCall::Open { flags } if flags & libc::O_ACCMODE as u64 != libc::O_RDONLY as u64)
    }
}

/// Parses `/proc/<tid>/syscall` for [`PendingCall`]; `openat2`'s flags are in memory, read with
/// `read_how` (the `struct open_how` address → its first 8 bytes).
pub fn parse_pending_call(line: &str, read_how: impl FnOnce(u64) -> Option<u64>) -> Option<PendingCall> {
    let (nr, args) = parse_syscall_line(line)?;
    let arg = |i: usize| args.get(i).copied();
    Some(match nr {
        SYS_EXECVE | SYS_EXECVEAT => PendingCall::Exec,
        n if n == nr::OPEN => PendingCall::Open { flags: arg(1)? },
        n if n == nr::OPENAT || n == nr::OPEN_BY_HANDLE_AT => PendingCall::Open { flags: arg(2)? },
        n if n == nr::CREAT => {
            PendingCall::Open { flags: (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64 }
        }
        SYS_OPENAT2 => PendingCall::Open { flags: read_how(arg(2)?)? },
        _ => PendingCall::Other,
    })
}

/// What thread `tid` is waiting in (see [`PendingCall`]); `None` when that cannot be read
/// (gone, or a kernel where it could deadlock: [`crate::proc::pending_args_readable`]).
pub fn pending_call(tid: i32) -> Option<PendingCall> {
    if !pending_args_readable() {
        return None;
    }
    let mut buf = [0u8; 256];
    let path = format!("/proc/{tid}/syscall");
    let n = read_syscall(&mut buf, || std::fs::File::open(&path).ok())?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    parse_pending_call(line, |how| {
        let mut b = [0u8; 8];
        (read_remote(Pid::from_raw(tid), how, &mut b)? == 8).then(|| u64::from_ne_bytes(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pending_calls_say_exec_open_flags_or_other() {
        let none = |_| None;
        let line = |nr: i64, args: [u64; 3]| {
            format!("{nr} 0x{:x} 0x{:x} 0x{:x} 0x0 0x0 0x0 0x7ffd 0x7f00", args[0], args[1], args[2])
        };
        assert_eq!(parse_pending_call(&line(59, [1, 2, 3]), none), Some(PendingCall::Exec));
        assert_eq!(parse_pending_call(&line(322, [1, 2, 3]), none), Some(PendingCall::Exec));
        let ro = parse_pending_call(&line(257, [0xffffff9c, 0x1000, 0x80000]), none).unwrap();
        assert_eq!(ro, PendingCall::Open { flags: 0x80000 });
        assert!(!ro.writes());
        let trunc = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64;
        assert!(parse_pending_call(&line(257, [0xffffff9c, 0x1000, trunc]), none).unwrap().writes());
        assert!(parse_pending_call(&line(2, [0x1000, libc::O_RDWR as u64, 0]), none).unwrap().writes());
        assert!(parse_pending_call(&line(85, [0x1000, 0o644, 0]), none).unwrap().writes(), "creat");
        // openat2: the flags are in the struct open_how it points at.
        let how = parse_pending_call(&line(437, [3, 0x1000, 0x2000]), |a| {
            (a == 0x2000).then_some(libc::O_WRONLY as u64)
        });
        assert!(how.unwrap().writes());
        assert_eq!(parse_pending_call(&line(437, [3, 0x1000, 0x2000]), none), None, "unreadable how");
        assert_eq!(parse_pending_call(&line(0, [3, 0x1000, 8]), none), Some(PendingCall::Other));
        assert_eq!(parse_pending_call("running", none), None);
    }
}
