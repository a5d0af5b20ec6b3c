//! A path looked up as one process would look it up: from its root or its working directory,
//! through its own `/proc/self`, `/proc/<pid>/fd/N`, `/proc/<pid>/cwd` and `/proc/<pid>/root`.
//!
//! `openat2(RESOLVE_IN_ROOT)` answers for most paths a container process names, but not for
//! those that go through procfs: the daemon's own lookup of the container's `/proc/self` finds
//! nothing (the daemon has no pid in the container's PID namespace), and magic links are
//! refused. A script named `/dev/fd/3`, `/proc/self/root/tmp/x` or `/proc/1234/cwd/x` would
//! then look absent while the interpreter opens it. This walk answers as the kernel does for
//! the process:
//!
//! - components are opened `O_PATH | O_NOFOLLOW` one at a time; symlinks are read and walked
//!   (absolute ones from the process's root), at most 40;
//! - `..` stays at the process's root, and anywhere else goes to the parent (from a working
//!   directory outside a `chroot`, above it, as for the process);
//! - in a procfs root, `self` and `thread-self` are the process's own ids in its innermost PID
//!   namespace;
//! - a magic link is followed only when it is the process's own: `<pid>/fd/N`,
//!   `<pid>/task/<tid>/fd/N`, `cwd` and `root`, taken from the daemon's view of the same
//!   process ([`ProcDir`]). Any other magic link is `ELOOP`.
//!
//! Used when the fast lookups fail: an error from here is the real answer, or a path the
//! daemon cannot follow.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::proc::ProcDir;
use crate::SysError;

const MAX_SYMLINKS: usize = 40;
const PROC_ROOT_INO: u64 = 1;

/// The process the lookup is made for.
pub struct Process<'a> {
    pub dir: &'a ProcDir,
    pub root: BorrowedFd<'a>,
    pub cwd: BorrowedFd<'a>,
    /// Its process and thread ids in its innermost PID namespace.
    pub ns_tgid: i32,
    pub ns_tid: i32,
}

/// Opens `path` as `O_PATH`, following a final symlink, as `p` would find it.
pub fn open(p: &Process<'_>, path: &[u8]) -> Result<OwnedFd, SysError> {
    const CALL: &str = "openat(process walk)";
    let err = |e: Errno| SysError::new(CALL, e);
    let dup = |fd: BorrowedFd<'_>| {
        nix::fcntl::openat(fd, ".", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(err)
    };
    let mut cur = if path.first() == Some(&b'/') { dup(p.root)? } else { dup(p.cwd)? };
    // Components since the last procfs root walked into, while inside one.
    let mut trail: Option<Vec<Vec<u8>>> = proc_root(cur.as_fd()).then(Vec::new);
    let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    if path.ends_with(b"/") && !todo.is_empty() {
        todo.insert(0, b".".to_vec());
    }
    let root_id = ident(p.root)?;
    let mut links = 0usize;
    while let Some(name) = todo.pop() {
        if name == b"." {
            continue;
        }
        if name == b".." {
            if ident(cur.as_fd())? != root_id {
                cur = nix::fcntl::openat(&cur, "..", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(err)?;
                trail = match trail {
                    Some(mut t) if !t.is_empty() => {
                        t.pop();
                        Some(t)
                    }
                    _ => proc_root(cur.as_fd()).then(Vec::new),
                };
            }
            continue;
        }
        let fd = nix::fcntl::openat(
            &cur,
            OsStr::from_bytes(&name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| SysError::new("fstat", e))?;
        let last = todo.is_empty();
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(err(Errno::ELOOP));
            }
            match &trail {
                Some(t) if t.is_empty() => {
                    // A procfs root's own links: plain ones, with `self` as the process's.
                    let target = match name.as_slice() {
                        b"self" => p.ns_tgid.to_string().into_bytes(),
                        b"thread-self" => format!("{}/task/{}", p.ns_tgid, p.ns_tid).into_bytes(),
                        _ => nix::fcntl::readlinkat(&fd, "").map_err(err)?.as_bytes().to_vec(),
                    };
                    push_target(&mut todo, &mut cur, &mut trail, &target, p.root)?;
                }
                Some(t) => {
                    let mut at = t.clone();
                    at.push(name.clone());
                    let entry = own_magic_link(p, &at).ok_or_else(|| err(Errno::ELOOP))?;
                    cur = p.dir.open_entry(&entry).ok_or_else(|| err(Errno::ENOENT))?;
                    trail = proc_root(cur.as_fd()).then(Vec::new);
                }
                None => {
                    if on_proc(cur.as_fd()) {
                        return Err(err(Errno::ELOOP)); // a magic link of a procfs we cannot place
                    }
                    let target = nix::fcntl::readlinkat(&fd, "").map_err(err)?;
                    push_target(&mut todo, &mut cur, &mut trail, target.as_bytes(), p.root)?;
                }
            }
            continue;
        }
        if !last && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(err(Errno::ENOTDIR));
        }
        trail = if proc_root(fd.as_fd()) {
            Some(Vec::new())
        } else {
            match trail {
                Some(mut t) if on_proc(fd.as_fd()) => {
                    t.push(name);
                    Some(t)
                }
                _ => None,
            }
        };
        cur = fd;
    }
    Ok(cur)
}

/// Queues a symlink's target: an absolute one is walked from the process's root.
fn push_target(
    todo: &mut Vec<Vec<u8>>,
    cur: &mut OwnedFd,
    trail: &mut Option<Vec<Vec<u8>>>,
    target: &[u8],
    root: BorrowedFd<'_>,
) -> Result<(), SysError> {
    if target.first() == Some(&b'/') {
        *cur = nix::fcntl::openat(root, ".", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| SysError::new("openat(process walk)", e))?;
        *trail = proc_root(cur.as_fd()).then(Vec::new);
    }
    todo.extend(components(target).rev().map(<[u8]>::to_vec));
    Ok(())
}

/// The entry of the daemon's `/proc/<tid>` that a magic link at `at` (components from a
/// procfs root) is, when that link is the process's own.
fn own_magic_link(p: &Process<'_>, at: &[Vec<u8>]) -> Option<String> {
    let num = |c: &[u8]| std::str::from_utf8(c).ok()?.parse::<i32>().ok();
    let rest: &[Vec<u8>] = match at {
        [pid, rest @ ..] if num(pid) == Some(p.ns_tgid) => match rest {
            [task, tid, inner @ ..] if task == b"task" && num(tid) == Some(p.ns_tid) => inner,
            r => r,
        },
        [pid, rest @ ..] if num(pid) == Some(p.ns_tid) => rest,
        _ => return None,
    };
    match rest {
        [fd, n] if fd == b"fd" => Some(format!("fd/{}", num(n)?)),
        [what] if what == b"cwd" || what == b"root" => Some(String::from_utf8_lossy(what).into_owned()),
        _ => None,
    }
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

fn ident(fd: BorrowedFd<'_>) -> Result<(u64, u64), SysError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| SysError::new("fstat", e))?;
    Ok((st.st_dev, st.st_ino))
}

fn on_proc(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statfs::fstatfs(fd).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

fn proc_root(fd: BorrowedFd<'_>) -> bool {
    on_proc(fd) && nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_ino == PROC_ROOT_INO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dirfd(p: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    fn id(fd: &OwnedFd) -> (u64, u64) {
        ident(fd.as_fd()).unwrap()
    }

    /// This test's own process, looked at as a container process is: root `/`.
    #[test]
    fn the_process_own_proc_links_are_followed_and_others_refused() {
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("x.sh");
        std::fs::write(&script, b"echo").unwrap();
        let held = std::fs::File::open(&script).unwrap();
        let n = std::os::fd::AsRawFd::as_raw_fd(&held);
        let tid = nix::unistd::gettid().as_raw();
        let dir = ProcDir::open(tid).unwrap();
        let st = dir.status().unwrap();
        let (root, cwd) = (dirfd(std::path::Path::new("/")), dirfd(t.path()));
        let p = Process {
            dir: &dir,
            root: root.as_fd(),
            cwd: cwd.as_fd(),
            ns_tgid: st.ns_tgid.unwrap(),
            ns_tid: st.ns_pid.unwrap(),
        };
        let real_cwd = id(&dirfd(&std::env::current_dir().unwrap()));
        let file = ident(std::os::fd::AsFd::as_fd(&held)).unwrap();
        let tdir = t.path().to_str().unwrap();
        for path in [
            format!("/proc/self/fd/{n}"),
            format!("/proc/thread-self/fd/{n}"),
            format!("/proc/{}/fd/{n}", st.ns_tgid.unwrap()),
            format!("/proc/self/root{tdir}/x.sh"),
            format!("/proc/self/root/proc/self/fd/{n}"),
            "x.sh".to_string(),
            format!("../{}/x.sh", t.path().file_name().unwrap().to_str().unwrap()),
        ] {
            let got = open(&p, path.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(id(&got), file, "{path}");
        }
        assert_eq!(id(&open(&p, b"/proc/self/cwd").unwrap()), real_cwd, "the process's own cwd");
        // A link through a symlink the container made: `/dev/fd` style.
        symlink("/proc/self/fd", t.path().join("fdlink")).unwrap();
        assert_eq!(id(&open(&p, format!("fdlink/{n}").as_bytes()).unwrap()), file);
        // Another process's magic links are not followed.
        for other in ["/proc/1/root/etc", "/proc/1/cwd", "/proc/self/exe", "/proc/self/map_files"] {
            let r = open(&p, other.as_bytes());
            assert!(
                r.as_ref().is_err_and(|e| e.errno == Errno::ELOOP) || other.ends_with("map_files"),
                "{other}: {:?}",
                r.map(|_| ())
            );
        }
        assert_eq!(open(&p, b"missing").unwrap_err().errno, Errno::ENOENT);
        assert_eq!(open(&p, b"x.sh/y").unwrap_err().errno, Errno::ENOTDIR);
        // `..` stays at the root.
        assert_eq!(id(&open(&p, b"/../../etc").unwrap()), id(&dirfd(std::path::Path::new("/etc"))));
    }
}
