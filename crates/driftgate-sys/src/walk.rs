//! Confined path lookups without `openat2`: one component at a time from a directory fd.
//!
//! `openat2` with its `RESOLVE_*` flags is how the daemon looks at a path a container chose
//! (a layer file, a script argument, a mountpoint) without being led outside. It is one system
//! call that a seccomp filter can refuse: systemd's `RestrictSUIDSGID=yes` refuses it whole
//! (with `ENOSYS`), because a filter cannot read the mode inside its `struct open_how`; so do
//! container runtimes' default profiles on older versions, and a kernel before 5.6 lacks it.
//! The lookups then take this walk, which gives the same answers (the tests compare the two on
//! the same trees):
//!
//! - each component is opened `O_PATH | O_NOFOLLOW` relative to the directory fd the walk
//!   holds, and `fstat`ed: nothing is opened for reading, and no symlink is followed by the
//!   kernel;
//! - `..` goes back to the directory fd the walk came from, never above the starting one: in
//!   the root ([`Confine::InRoot`]) it stays at the root, as `RESOLVE_IN_ROOT` does; beneath a
//!   directory ([`Confine::Beneath`]) it is an error (`EXDEV`), as `RESOLVE_BENEATH` makes it;
//! - a symlink is followed by reading it and walking its target from the root (absolute) or
//!   from the directory it is in (relative), at most 40 times (`ELOOP`), unless symlinks are
//!   refused; a symlink on procfs anywhere but in its root directory (`/proc/self`,
//!   `/proc/mounts`) is a magic link (`/proc/<pid>/fd/N`, `.../root`, `.../exe`) and is refused
//!   (`ELOOP`), as `RESOLVE_NO_MAGICLINKS` refuses it;
//! - with `no_xdev`, a component on another mount than the start is refused (`EXDEV`).
//!
//! Holding an fd for every directory on the way makes the walk immune to renames under it:
//! a directory moved elsewhere meanwhile is still the one that was looked up.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::SysError;

/// How far the kernel follows symlinks in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Where the walk may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confine {
    /// The start is the root: absolute paths and symlinks start there, `..` stops there.
    InRoot,
    /// Nothing above the start: `..` past it and absolute symlinks are errors.
    Beneath,
}

/// What the walk does with symlinks and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub confine: Confine,
    /// Refuse every symlink on the way (`RESOLVE_NO_SYMLINKS`).
    pub no_symlinks: bool,
    /// Do not follow a final symlink: return an `O_PATH` fd of the link itself (`O_NOFOLLOW`).
    pub nofollow_final: bool,
    /// Refuse crossing into another mount (`RESOLVE_NO_XDEV`).
    pub no_xdev: bool,
}

/// Opens `path` from `start` under `rules`, `O_PATH`. See the module documentation.
pub fn open(start: BorrowedFd<'_>, path: &[u8], rules: Rules) -> Result<OwnedFd, SysError> {
    const CALL: &str = "openat(walk)";
    let err = |e: Errno| SysError::new(CALL, e);
    let start_mount = if rules.no_xdev { Some(mount_id(start)?) } else { None };
    // The directories walked into, innermost last; empty means `start` itself.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    // Components still to walk, next one last (so a symlink's target is pushed in front).
    let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    if path.ends_with(b"/") && !todo.is_empty() {
        // A trailing slash: the last component must be a directory (a symlink is followed).
        todo.insert(0, b".".to_vec());
    }
    if path.first() == Some(&b'/') && rules.confine == Confine::Beneath {
        return Err(err(Errno::EXDEV));
    }
    let mut links = 0usize;
    while let Some(name) = todo.pop() {
        if name == b"." {
            continue;
        }
        if name == b".." {
            if dirs.pop().is_none() && rules.confine == Confine::Beneath {
                return Err(err(Errno::EXDEV));
            }
            continue;
        }
        let here: BorrowedFd<'_> = dirs.last().map_or(start, |d| d.as_fd());
        let fd = nix::fcntl::openat(
            here,
            OsStr::from_bytes(&name),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| SysError::new("fstat", e))?;
        let last = todo.is_empty();
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            if last && rules.nofollow_final {
                return Ok(fd);
            }
            if rules.no_symlinks || is_magic_link(here) {
                return Err(err(Errno::ELOOP));
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(err(Errno::ELOOP));
            }
            let target = nix::fcntl::readlinkat(&fd, "").map_err(err)?;
            let target = target.as_bytes();
            if target.first() == Some(&b'/') {
                if rules.confine == Confine::Beneath {
                    return Err(err(Errno::EXDEV));
                }
                dirs.clear();
            }
            todo.extend(components(target).rev().map(<[u8]>::to_vec));
            continue;
        }
        if let Some(m) = start_mount {
            if mount_id(fd.as_fd())? != m {
                return Err(err(Errno::EXDEV));
            }
        }
        if !last && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(err(Errno::ENOTDIR));
        }
        dirs.push(fd);
    }
    match dirs.pop() {
        Some(fd) => Ok(fd),
        // The path named the start itself ("", ".", "/", "a/.."): a new O_PATH fd of it.
        None => nix::fcntl::openat(start, ".", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(err),
    }
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

/// Whether a symlink found in directory `dir` is one of procfs's magic links: every procfs
/// symlink but those in its root directory (inode 1: `self`, `thread-self`, `mounts`, `net`...),
/// which are plain links to a path.
fn is_magic_link(dir: BorrowedFd<'_>) -> bool {
    const PROC_ROOT_INO: u64 = 1;
    let on_proc = nix::sys::statfs::fstatfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        .unwrap_or(true);
    on_proc && nix::sys::stat::fstat(dir).map_or(true, |st| st.st_ino != PROC_ROOT_INO)
}

/// The mount id (`STATX_MNT_ID`) of the mount `fd` is on.
fn mount_id(fd: BorrowedFd<'_>) -> Result<u64, SysError> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let stx = statx(fd, c"", AtFlags::EMPTY_PATH | AtFlags::STATX_SYNC_AS_STAT, StatxFlags::MNT_ID)
        .map_err(|e| SysError::new("statx", Errno::from_raw(e.raw_os_error())))?;
    Ok(stx.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    use std::os::unix::fs::symlink;

    /// The kernel's answer for the same lookup.
    fn kernel(start: BorrowedFd<'_>, path: &[u8], r: Rules) -> Result<OwnedFd, Errno> {
        let mut resolve = ResolveFlag::RESOLVE_NO_MAGICLINKS;
        resolve |= match r.confine {
            Confine::InRoot => ResolveFlag::RESOLVE_IN_ROOT,
            Confine::Beneath => ResolveFlag::RESOLVE_BENEATH,
        };
        if r.no_symlinks {
            resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        }
        if r.no_xdev {
            resolve |= ResolveFlag::RESOLVE_NO_XDEV;
        }
        let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if r.nofollow_final {
            flags |= OFlag::O_NOFOLLOW;
        }
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        openat2(start, OsStr::from_bytes(p), OpenHow::new().flags(flags).resolve(resolve))
    }

    fn same(a: &Result<OwnedFd, Errno>, b: &Result<OwnedFd, SysError>) -> bool {
        match (a, b) {
            (Ok(x), Ok(y)) => {
                let (x, y) = (nix::sys::stat::fstat(x).unwrap(), nix::sys::stat::fstat(y).unwrap());
                (x.st_dev, x.st_ino, x.st_mode) == (y.st_dev, y.st_ino, y.st_mode)
            }
            (Err(x), Err(y)) => *x == y.errno,
            _ => false,
        }
    }

    /// Looks every path up under every rule with both, asserting they agree; how many the
    /// kernel found.
    fn answers_match(start: BorrowedFd<'_>, paths: &[&[u8]], rules: &[Rules]) -> usize {
        let mut found = 0;
        for &r in rules {
            for p in paths {
                let k = kernel(start, p, r);
                found += usize::from(k.is_ok());
                let w = open(start, p, r);
                assert!(
                    same(&k, &w),
                    "{:?} under {r:?}: openat2 {:?}, walk {:?}",
                    String::from_utf8_lossy(p),
                    k.as_ref().map(|_| "ok"),
                    w.as_ref().map(|_| "ok")
                );
            }
        }
        found
    }

    const IN_ROOT: Rules =
        Rules { confine: Confine::InRoot, no_symlinks: false, nofollow_final: false, no_xdev: false };
    const IN_ROOT_NO_LINKS: Rules =
        Rules { confine: Confine::InRoot, no_symlinks: true, nofollow_final: true, no_xdev: false };
    const BENEATH: Rules =
        Rules { confine: Confine::Beneath, no_symlinks: true, nofollow_final: true, no_xdev: true };
    const BENEATH_LINKS: Rules =
        Rules { confine: Confine::Beneath, no_symlinks: false, nofollow_final: false, no_xdev: false };

    #[test]
    fn the_walk_answers_as_openat2_does_on_a_hostile_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        for d in ["bin", "usr/lib", "a/b/c", "loop"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("bin/prog"), b"x").unwrap();
        std::fs::write(root.join("usr/lib/x.so"), b"x").unwrap();
        std::fs::write(t.path().join("outside"), b"host").unwrap();
        symlink("/bin/prog", root.join("abs")).unwrap();
        symlink("bin/prog", root.join("rel")).unwrap();
        symlink("../../outside", root.join("bin/escape")).unwrap();
        symlink("/../../../outside", root.join("escape2")).unwrap();
        symlink("../usr/lib", root.join("a/lib")).unwrap();
        symlink("/usr", root.join("a/b/usr")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        symlink("l2", root.join("loop/l1")).unwrap();
        symlink("l1", root.join("loop/l2")).unwrap();
        symlink("abs", root.join("chain")).unwrap();
        symlink("/proc/self/fd/0", root.join("magic")).unwrap();
        let fd =
            nix::fcntl::open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .unwrap();
        let paths: &[&[u8]] = &[
            b"",
            b".",
            b"/",
            b"bin",
            b"bin/",
            b"bin/prog",
            b"/bin/prog",
            b"bin/prog/",
            b"bin/./prog",
            b"bin/../bin/prog",
            b"../../bin/prog",
            b"..",
            b"a/b/c/../../../bin/prog",
            b"abs",
            b"rel",
            b"chain",
            b"bin/escape",
            b"escape2",
            b"a/lib/x.so",
            b"a/b/usr/lib/x.so",
            b"a/b/usr/../bin/prog",
            b"dangling",
            b"loop/l1",
            b"magic",
            b"missing",
            b"bin/prog/x",
            b"a/lib/../lib/x.so",
            b"abs/",
            b"rel/x",
            b"/a/b/../../abs",
        ];
        let found = answers_match(fd.as_fd(), paths, &[IN_ROOT, IN_ROOT_NO_LINKS, BENEATH, BENEATH_LINKS]);
        assert!(found > 40, "the cases find files as well as refuse them: {found}");
    }

    #[test]
    fn magic_links_are_refused_and_plain_proc_links_followed_as_openat2_does() {
        let root =
            nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .unwrap();
        let paths: &[&[u8]] = &[
            b"/proc/self",
            b"/proc/self/status",
            b"/proc/self/fd/0",
            b"/proc/self/root/etc",
            b"/proc/self/exe",
            b"/proc/mounts",
            b"/proc/self/cwd",
            b"proc",
            b"proc/1",
            b"sys/kernel",
        ];
        // Beneath `/` with no mount crossings: `proc` is another mount (EXDEV from both).
        answers_match(root.as_fd(), paths, &[IN_ROOT, IN_ROOT_NO_LINKS, BENEATH]);
    }
}
