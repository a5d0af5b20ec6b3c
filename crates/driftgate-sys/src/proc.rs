//! What `/proc` says about the process whose exec is pending.
//!
//! While an exec waits for our answer, `/proc/<pid>/cmdline` and `exe` still describe the *old*
//! program. The new program's arguments are read from the pending syscall instead:
//! `/proc/<tid>/syscall` gives the syscall number and its argument registers, and the `argv`
//! array and strings are copied out of the process with `process_vm_readv`.

use std::os::unix::ffi::OsStringExt;

use nix::errno::Errno;

use crate::remote::{read_argv, read_remote_cstr};
pub use crate::remote::{Args, MAX_ARGS, MAX_ARG_BYTES, MAX_TOTAL_ARG_BYTES};
use nix::unistd::Pid;

mod dir;
mod fds;
mod status;
pub use dir::*;
pub use fds::*;
pub use status::*;

#[cfg(target_arch = "x86_64")]
pub(crate) const SYS_EXECVE: i64 = 59;
#[cfg(target_arch = "x86_64")]
pub(crate) const SYS_EXECVEAT: i64 = 322;
#[cfg(target_arch = "aarch64")]
pub(crate) const SYS_EXECVE: i64 = 221;
#[cfg(target_arch = "aarch64")]
pub(crate) const SYS_EXECVEAT: i64 = 281;

/// The controlling terminal (`tty_nr`, field 7) from the text of `/proc/<pid>/stat`; 0 is
/// none. The name in field 2 can hold any bytes, `)` too: the fields start after the last `)`.
pub fn parse_stat_tty(text: &[u8]) -> Option<u32> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    // state, ppid, pgrp, session, tty_nr
    let tty = fields.nth(4)?;
    std::str::from_utf8(tty).ok()?.parse::<i64>().ok().map(|n| n as u32)
}

/// The controlling terminal of `pid` (`tty_nr`; 0 is none).
pub fn read_tty_nr(pid: i32) -> Option<u32> {
    read_proc(&format!("{pid}/stat")).and_then(|t| parse_stat_tty(&t))
}

/// The name of `pid` (`/proc/<pid>/comm`, without its newline).
pub fn read_comm(pid: i32) -> Option<Vec<u8>> {
    let mut v = read_proc(&format!("{pid}/comm"))?;
    if v.last() == Some(&b'\n') {
        v.pop();
    }
    Some(v)
}

/// Resident set in KiB of `pid` (a number, or `self`).
pub fn rss_kib(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn read_exe(pid: i32) -> Option<Vec<u8>> {
    let link = nix::fcntl::readlinkat(proc_dir()?, format!("{pid}/exe").as_str()).ok()?;
    Some(link.into_encoded_bytes())
}

/// The arguments of a running process (`/proc/<pid>/cmdline`), bounded like a pending exec's.
pub fn read_cmdline(pid: i32) -> Option<Args> {
    let raw = read_proc(&format!("{pid}/cmdline"))?;
    let mut total = 0usize;
    let mut out = Vec::new();
    let mut truncated = false;
    for a in raw.strip_suffix(b"\0").unwrap_or(&raw).split(|&b| b == 0) {
        if out.len() >= MAX_ARGS || total >= MAX_TOTAL_ARG_BYTES {
            truncated = true;
            break;
        }
        truncated |= a.len() > MAX_ARG_BYTES;
        let a = &a[..a.len().min(MAX_ARG_BYTES)];
        total += a.len();
        out.push(a.to_vec());
    }
    Some((out, truncated))
}

pub fn read_cwd(tid: i32) -> Option<Vec<u8>> {
    std::fs::read_link(format!("/proc/{tid}/cwd")).ok().map(|p| p.into_os_string().into_vec())
}

/// The arguments of a pending execve/execveat, from the text of `/proc/<tid>/syscall`: the
/// syscall number and its six argument registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecRegs {
    /// `execveat`'s directory fd (`AT_FDCWD` for execve).
    pub dirfd: i32,
    pub filename: u64,
    pub argv: u64,
    /// The `envp` pointer.
    pub envp: u64,
    /// `execveat`'s flags (`AT_EMPTY_PATH` for fexecve); 0 for execve.
    pub flags: i32,
}

/// The syscall number and argument registers of a `/proc/<tid>/syscall` line
/// (`59 0x7ffd... 0x...`); `None` for `running`, `-1 ...` (not in a syscall) or garbage.
pub(crate) fn parse_syscall_line(line: &str) -> Option<(i64, Vec<u64>)> {
    let mut it = line.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    let args = it
        .take(6)
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16))
        .collect::<Result<_, _>>()
        .ok()?;
    Some((nr, args))
}

pub fn parse_exec_regs(syscall_line: &str) -> Option<ExecRegs> {
    let (nr, args) = parse_syscall_line(syscall_line)?;
    if args.len() < 6 {
        return None;
    }
    match nr {
        SYS_EXECVE => Some(ExecRegs {
            dirfd: libc::AT_FDCWD,
            filename: args[0],
            argv: args[1],
            envp: args[2],
            flags: 0,
        }),
        SYS_EXECVEAT => Some(ExecRegs {
            dirfd: args[0] as i32,
            filename: args[1],
            argv: args[2],
            envp: args[3],
            flags: args[4] as i32,
        }),
        _ => None,
    }
}

/// The `argv` pointer of a pending execve/execveat, from the text of `/proc/<tid>/syscall`.
pub fn pending_exec_argv_ptr(syscall_line: &str) -> Option<u64> {
    parse_exec_regs(syscall_line).map(|r| r.argv)
}

/// Whether reading a pending exec's syscall is safe on this kernel. `/proc/<tid>/syscall`
/// takes the task's `cred_guard_mutex`. Before Linux 6.8 ("execve: open the executable file
/// before doing anything else"), execve held that mutex while opening the file, that is, while
/// it waits for our permission answer: reading it then would deadlock the daemon against the
/// exec it is deciding. On those kernels the arguments are left unknown.
pub fn pending_args_readable() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        nix::sys::utsname::uname()
            .ok()
            .and_then(|u| kernel_at_least(&u.release().to_string_lossy(), (6, 8)))
            .unwrap_or(false)
    })
}

/// Reads `/proc/<tid>/syscall` (opened by `open`) into `buf`. A task waiting for a fanotify
/// answer sleeps on a queue shared by every waiter of the group, so each answer wakes them all
/// for a moment, and a read that lands then gets `running`: it is tried again (a few times,
/// yielding in between) before the call is taken as unreadable.
pub(crate) fn read_syscall(buf: &mut [u8], mut open: impl FnMut() -> Option<std::fs::File>) -> Option<usize> {
    use std::io::Read;
    for attempt in 0..16 {
        let n = open()?.read(buf).ok()?;
        if !buf[..n].starts_with(b"running") {
            return Some(n);
        }
        if attempt >= 8 {
            std::thread::sleep(std::time::Duration::from_micros(50));
        } else {
            std::thread::yield_now();
        }
    }
    None
}

/// Whether `tid` is a thread of this process (its own reads of container files raise open
/// events too; they are answered at once).
pub fn own_thread(tid: i32) -> bool {
    tid > 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// Parses `6.18.44-fc-v782` style releases.
pub fn kernel_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    Some((major, minor) >= want)
}

/// The arguments of the exec that thread `tid` is waiting in, or `None` when they cannot be
/// read (not in execve, process gone, unreadable memory, or a kernel where reading them could
/// deadlock: see [`pending_args_readable`]).
pub fn pending_exec_args(tid: i32) -> Option<Args> {
    let call = pending_exec_call(tid)?;
    Some((call.argv?, call.argv_truncated))
}

/// The exec call thread `tid` is waiting in: which file it named (a path, relative to `dirfd`
/// or the cwd, or an fd with `AT_EMPTY_PATH`) and its arguments. Read while the exec is held,
/// so this is the call the kernel is executing; the strings are the process's memory, read
/// before the kernel copies them (a multithreaded process could change them in between).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub regs: ExecRegs,
    pub filename: Vec<u8>,
    /// `None` when the array could not be read.
    pub argv: Option<Vec<Vec<u8>>>,
    /// Whether the read stopped at one of its bounds ([`MAX_ARGS`], [`MAX_ARG_BYTES`],
    /// [`MAX_TOTAL_ARG_BYTES`]).
    pub argv_truncated: bool,
}

pub fn pending_exec_call(tid: i32) -> Option<ExecCall> {
    ProcDir::open(tid)?.exec_call()
}

/// `AT_EXECVE_CHECK` (Linux 6.14): an `execveat` that only asks whether the file may be
/// executed. Interpreters that support it ask it about a script before they run it.
pub const AT_EXECVE_CHECK: i32 = 0x10000;

/// Whether thread `tid` waits in an `execveat(..., AT_EXECVE_CHECK)`: an interpreter asking
/// about a script it is about to run, not an exec.
pub fn pending_execve_check(tid: i32) -> bool {
    ProcDir::open(tid).and_then(|d| d.exec_regs()).is_some_and(|r| r.flags & AT_EXECVE_CHECK != 0)
}

/// The `/proc/<tid>` directory of one thread, opened once: every pid is new to `/proc`, and
/// each lookup of `/proc/<tid>` makes the kernel build its entries afresh (several µs), so
/// the hot path looks up everything it needs relative to this one fd. If the thread exits and
/// its tid is reused, reads through it fail rather than describe another process.
pub struct ProcDir {
    tid: i32,
    fd: std::os::fd::OwnedFd,
}

impl ProcDir {
    pub fn open(tid: i32) -> Option<ProcDir> {
        let fd = nix::fcntl::openat(
            proc_dir()?,
            tid.to_string().as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        Some(ProcDir { tid, fd })
    }

    /// The exec call the thread is waiting in (see [`pending_exec_call`]).
    pub fn exec_call(&self) -> Option<ExecCall> {
        if !pending_args_readable() {
            return None;
        }
        let regs = self.exec_regs()?;
        let pid = Pid::from_raw(self.tid);
        let filename = read_remote_cstr(pid, regs.filename, MAX_ARG_BYTES).unwrap_or_default();
        let (argv, argv_truncated) = match read_argv(pid, regs.argv) {
            Some((a, t)) => (Some(a), t),
            None => (None, false),
        };
        Some(ExecCall { regs, filename, argv, argv_truncated })
    }

    /// The registers of the exec call the thread is waiting in (no memory of it is read).
    pub fn exec_regs(&self) -> Option<ExecRegs> {
        let mut buf = [0u8; 256];
        let n = read_syscall(&mut buf, || {
            nix::fcntl::openat(
                &self.fd,
                "syscall",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
            .map(std::fs::File::from)
        })?;
        parse_exec_regs(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// An entry (`root`, `cwd`, `fd/3`) as `O_PATH`, following its magic link: the process's
    /// root directory, cwd or open file.
    pub fn open_entry(&self, name: &str) -> Option<std::os::fd::OwnedFd> {
        nix::fcntl::openat(
            &self.fd,
            name,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    }

    /// What a link entry (`cwd`, `fd/3`) names, as the kernel prints it.
    pub fn readlink(&self, name: &str) -> Option<Vec<u8>> {
        nix::fcntl::readlinkat(&self.fd, name).ok().map(|p| p.into_encoded_bytes())
    }

    /// The thread's id.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The thread's `status`, read through this directory.
    pub fn status(&self) -> Option<ProcStatus> {
        let fd = nix::fcntl::openat(
            &self.fd,
            "status",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut text).ok()?;
        Some(parse_status(&text))
    }
}

/// The inode number of one of a process's namespaces (`kind`: `mnt`, `pid`, ...), which
/// identifies the namespace: `readlink /proc/<pid>/ns/<kind>` reads `mnt:[4026531841]`.
pub fn ns_id(pid: i32, kind: &str) -> Option<u64> {
    let dir = proc_dir()?;
    let link = nix::fcntl::readlinkat(dir, format!("{pid}/ns/{kind}").as_str()).ok()?;
    parse_ns_link(link.as_encoded_bytes())
}

/// The PID namespaces of process `pid`, from its own outwards, up to and without this
/// process's own: their inode numbers. Empty when `pid` is in this
/// process's PID namespace; `None` when it cannot be read (gone). A process that makes PID
/// namespaces of its own (`unshare -p`, no capability needed in a user namespace) stays
/// inside the ones it started in, so this chain says which container a process belongs to.
pub fn pid_ns_chain(pid: i32) -> Option<Vec<u64>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // NS_GET_PARENT: _IO(0xb7, 0x2).
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    let own = ns_id(std::process::id() as i32, "pid")?;
    let dir = proc_dir()?;
    let mut fd: OwnedFd = nix::fcntl::openat(
        dir,
        format!("{pid}/ns/pid").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut chain = Vec::new();
    for _ in 0..33 {
        let ino = nix::sys::stat::fstat(&fd).ok()?.st_ino;
        if ino == own {
            return Some(chain);
        }
        chain.push(ino);
        // SAFETY: ioctl(NS_GET_PARENT) on a namespace fd this function owns; it takes no
        // argument and returns a new fd (owned below) or -1.
        let parent = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_PARENT) };
        if parent < 0 {
            // EPERM: the parent is outside this process's namespace: the chain is complete.
            return (Errno::last() == Errno::EPERM).then_some(chain);
        }
        // SAFETY: `parent` is a new fd returned by the kernel, owned by nothing else.
        fd = unsafe { OwnedFd::from_raw_fd(parent) };
    }
    // PID namespaces nest at most 32 deep.
    None
}

/// `mnt:[4026531841]` → 4026531841.
pub fn parse_ns_link(link: &[u8]) -> Option<u64> {
    let open = link.iter().position(|&b| b == b'[')?;
    let close = link.iter().rposition(|&b| b == b']')?;
    std::str::from_utf8(link.get(open + 1..close)?).ok()?.parse().ok()
}

/// Device and inode of a process's root directory (`/proc/<pid>/root`, followed): a process
/// whose root is a container's rootfs has the overlay's device here.
pub fn root_dev_ino(pid: i32) -> Option<(u64, u64)> {
    let dir = proc_dir()?;
    let st =
        nix::sys::stat::fstatat(dir, format!("{pid}/root").as_str(), nix::fcntl::AtFlags::empty()).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// The numeric entries of `/proc`: every process (thread group) of the host's PID namespace.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_is_read_after_the_last_parenthesis() {
        let line = b"4242 (a) b) (c) S 1 4242 4242 34817 4242 4194560 105 0 0 0";
        assert_eq!(parse_stat_tty(line), Some(34817));
        assert_eq!(parse_stat_tty(b"1 (init) S 0 1 1 0 -1 4194560"), Some(0));
        assert_eq!(parse_stat_tty(b"1 (init S 0"), None);
        let own = read_tty_nr(std::process::id() as i32);
        assert!(own.is_some(), "this process's own stat is readable");
    }

    #[test]
    fn a_syscall_read_while_the_task_is_woken_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let (running, waiting) = (dir.path().join("running"), dir.path().join("waiting"));
        std::fs::write(&running, "running\n").unwrap();
        std::fs::write(&waiting, "59 0x7ffd1 0x7ffd2 0x7ffd3 0x0 0x0 0x0 0x7ffd0 0x7f01\n").unwrap();
        let mut buf = [0u8; 256];
        let mut reads = 0;
        let n = read_syscall(&mut buf, || {
            reads += 1;
            std::fs::File::open(if reads < 3 { &running } else { &waiting }).ok()
        });
        assert_eq!((n.map(|n| &buf[..2] == b"59" && n > 8), reads), (Some(true), 3));
        // Always running: given up on, after a bounded number of reads.
        let mut reads = 0;
        assert_eq!(
            read_syscall(&mut buf, || {
                reads += 1;
                std::fs::File::open(&running).ok()
            }),
            None
        );
        assert_eq!(reads, 16);
    }

    #[test]
    fn kernel_versions_gate_pending_argument_reads() {
        assert_eq!(kernel_at_least("6.18.44-fc-v782", (6, 8)), Some(true));
        assert_eq!(kernel_at_least("6.8.0-31-generic", (6, 8)), Some(true));
        assert_eq!(kernel_at_least("6.1.0-27-amd64", (6, 8)), Some(false));
        assert_eq!(kernel_at_least("5.15.0", (6, 8)), Some(false));
        assert_eq!(kernel_at_least("7.0", (6, 8)), Some(true));
        assert_eq!(kernel_at_least("garbage", (6, 8)), None);
    }

    #[test]
    fn argv_pointer_comes_from_execve_and_execveat() {
        let execve = format!("{SYS_EXECVE} 0x55d0c0 0x7ffd10 0x7ffd90 0x0 0x0 0x0 0x7ffd00 0x7f11");
        assert_eq!(pending_exec_argv_ptr(&execve), Some(0x7ffd10));
        let execveat = format!("{SYS_EXECVEAT} 0x3 0x55d0c0 0x7ffd20 0x7ffd90 0x1000 0x0 0x7ffd00 0x7f11");
        assert_eq!(pending_exec_argv_ptr(&execveat), Some(0x7ffd20));
        assert_eq!(pending_exec_argv_ptr("0 0x3 0x1 0x2 0x0 0x0 0x0 0x7ffd00 0x7f11"), None);
        assert_eq!(pending_exec_argv_ptr("running"), None);
        assert_eq!(pending_exec_argv_ptr(&format!("{SYS_EXECVE} 0x1")), None);
        let r = parse_exec_regs(&execveat).unwrap();
        assert_eq!((r.dirfd, r.filename, r.flags), (3, 0x55d0c0, 0x1000));
        assert_eq!(parse_exec_regs(&execve).unwrap().dirfd, libc::AT_FDCWD);
    }

    #[test]
    fn namespace_links_are_parsed() {
        assert_eq!(parse_ns_link(b"mnt:[4026531841]"), Some(4026531841));
        assert_eq!(parse_ns_link(b"pid:[1]"), Some(1));
        assert_eq!(parse_ns_link(b"mnt:4026531841"), None);
        assert_eq!(parse_ns_link(b"mnt:[x]"), None);
        let own = ns_id(std::process::id() as i32, "mnt").expect("own mount namespace");
        assert!(own > 0);
        let (dev, _) = root_dev_ino(std::process::id() as i32).unwrap();
        assert_eq!(dev, nix::sys::stat::stat("/").unwrap().st_dev);
    }
}
