//! Filesystem calls that must not be fooled by what a container wrote: `openat2` confined to a
//! layer directory, single-component lookups that never follow symlinks, `statx` mount ids and
//! overlay xattrs.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode};

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::{walk, Call, SysError};

pub use driftgate_core::model::FileId;

/// The version of the file `st` describes.
#[inline]
pub fn file_id(st: &FileStat) -> FileId {
    FileId {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
    }
}

#[inline]
pub fn fstat_fd(fd: BorrowedFd<'_>) -> Result<FileStat, SysError> {
    fstat(fd).call("fstat")
}

#[inline]
pub fn is_regular(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// An overlayfs whiteout: a character device 0:0.
pub fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Opens a layer directory by the host path overlayfs was mounted with, `O_PATH`. These paths
/// belong to the runtime's storage (a container writes only *inside* its upper directory), and
/// some runtimes name layers through symlinks (`overlay/l/XXXX -> ../<id>/diff`), so symlinks
/// are followed here, as overlayfs itself did at mount time. Lookups *inside* a layer never
/// follow one.
pub fn open_dir_path(path: &Path) -> Result<OwnedFd, SysError> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .call("open(O_PATH)")
}

/// Opens a mountpoint as a readable directory (fanotify_mark rejects `O_PATH` fds).
pub fn open_dir_readable(path: &Path) -> Result<OwnedFd, SysError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .call("open(O_DIRECTORY)")
}

/// Opens `rel` beneath `root` as `O_PATH`, refusing symlinks (anywhere but a final one, which
/// is returned as itself), magic links, `..` escapes and mount crossings. This is how the daemon
/// looks into a container's layers: the container wrote them, so nothing there may lead outside.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, SysError> {
    let rel = strip_leading_slashes(rel);
    if rel.is_empty() {
        return Err(SysError::new("openat2", Errno::EINVAL));
    }
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    let rules = walk::Rules {
        confine: walk::Confine::Beneath,
        no_symlinks: true,
        nofollow_final: true,
        no_xdev: true,
    };
    confined_open(root, rel, how, rules, "openat2")
}

/// Opens `rel` from directory `dir` as `O_PATH`, following symlinks (a final one too) as long
/// as they stay beneath it; `..` above it, absolute symlinks and magic links are refused
/// (`EXDEV`, `ELOOP`). A success is the file a process whose working directory is `dir` finds,
/// whatever its root.
pub fn open_from(dir: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, SysError> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rules = walk::Rules {
        confine: walk::Confine::Beneath,
        no_symlinks: false,
        nofollow_final: false,
        no_xdev: false,
    };
    confined_open(dir, rel, how, rules, "openat2(RESOLVE_BENEATH)")
}

/// `openat2`, or where it is refused (see [`openat2_refused`]) the equivalent walk of
/// [`crate::walk`].
fn confined_open(
    root: BorrowedFd<'_>,
    rel: &[u8],
    how: OpenHow,
    rules: walk::Rules,
    call: &'static str,
) -> Result<OwnedFd, SysError> {
    if !openat2_refused() {
        match openat2(root, OsStr::from_bytes(rel), how) {
            Err(Errno::ENOSYS) => OPENAT2.store(REFUSED, Ordering::Relaxed),
            r => return r.call(call),
        }
    }
    WALKS.fetch_add(1, Ordering::Relaxed);
    walk::open(root, rel, rules)
}

const UNKNOWN: u8 = 0;
const USABLE: u8 = 1;
const REFUSED: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);
/// Confined lookups that took the walk because `openat2` is refused.
pub static WALKS: AtomicU64 = AtomicU64::new(0);

/// Whether `openat2` is refused here: a seccomp filter refuses it (systemd's
/// `RestrictSUIDSGID=yes` does, with `ENOSYS`; others with `EPERM`), or the kernel lacks it
/// (before 5.6). Probed once, with a harmless lookup of `/`; a later `ENOSYS` also counts.
/// Confined lookups then walk one component at a time ([`crate::walk`]).
pub fn openat2_refused() -> bool {
    match OPENAT2.load(Ordering::Relaxed) {
        USABLE => false,
        REFUSED => true,
        _ => {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let refused =
                matches!(openat2(nix::fcntl::AT_FDCWD, "/", how), Err(Errno::ENOSYS | Errno::EPERM));
            OPENAT2.store(if refused { REFUSED } else { USABLE }, Ordering::Relaxed);
            refused
        }
    }
}

/// Opens one path component of `dir` as `O_PATH` without following it.
pub fn open_component(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, SysError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(SysError::new("openat", Errno::EINVAL));
    }
    nix::fcntl::openat(
        dir,
        OsStr::from_bytes(name),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .call("openat")
}

/// Re-opens an `O_PATH` fd of a regular file for reading, through `/proc/self/fd`. The caller
/// checks that it is a regular file first, so no device or FIFO is ever opened.
pub fn reopen_readonly(fd: BorrowedFd<'_>) -> Result<OwnedFd, SysError> {
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::fcntl::open(
        p.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .call("open(/proc/self/fd)")
}

/// The path the kernel reports for an open file, as raw bytes.
///
/// On the hot path (every exec of a writable-layer file), so it reads the link relative to a
/// directory fd of `/proc/self/fd` opened once (one path component to resolve instead of
/// four, one of them the `self` symlink) into a stack buffer, and allocates only the result.
pub fn fd_path(fd: BorrowedFd<'_>) -> Result<Vec<u8>, SysError> {
    static PROC_FD_DIR: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    let dir = PROC_FD_DIR.get_or_init(|| {
        nix::fcntl::open(
            "/proc/self/fd",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    });
    // The fd number as a NUL-terminated name.
    let mut name = [0u8; 12];
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.as_raw_fd() as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        name[i] = *d;
    }
    let Some(dir) = dir else {
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        return nix::fcntl::readlink(p.as_str()).map(OsString::into_vec).call("readlink(/proc/self/fd)");
    };
    let mut buf = [0u8; 4096];
    // SAFETY: `dir` is an open directory fd, `name` is NUL-terminated (zero-initialised, at most
    // 10 bytes written) and `buf` is a writable buffer of the length passed; readlinkat writes at
    // most that many bytes.
    let r = unsafe {
        libc::readlinkat(dir.as_raw_fd(), name.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len())
    };
    match r {
        r if r < 0 => Err(SysError::new("readlink(/proc/self/fd)", Errno::last())),
        // Possibly truncated: let the generic wrapper size it.
        r if r as usize >= buf.len() => {
            let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
            nix::fcntl::readlink(p.as_str()).map(OsString::into_vec).call("readlink(/proc/self/fd)")
        }
        r => Ok(buf[..r as usize].to_vec()),
    }
}

/// Opens one path component of `dir` as a readable directory, never following a symlink.
/// `O_DIRECTORY` makes the kernel refuse a non-directory (`ENOTDIR`) before opening it, so no
/// device node is ever opened; a symlink gives `ELOOP`.
pub fn open_component_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, SysError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(SysError::new("openat", Errno::EINVAL));
    }
    nix::fcntl::openat(
        dir,
        OsStr::from_bytes(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .call("openat(O_DIRECTORY)")
}

/// Whether `dir` (a readable directory fd) is an opaque overlay directory.
pub fn is_opaque_dir(dir: BorrowedFd<'_>) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].into_iter().any(|name| {
        let mut buf = [0u8; 4];
        rustix::fs::fgetxattr(dir, name, &mut buf).is_ok_and(|n| n >= 1 && buf[0] == b'y')
    })
}

/// The raw `security.capability` attribute of the file open at `fd` (its file capabilities),
/// `None` when it has none (or it cannot be read: an exec then gains no capability from it
/// that driftgate could name).
pub fn file_capabilities(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    // A vfs_cap_data is at most 24 bytes (revision 3).
    let mut buf = [0u8; 64];
    match rustix::fs::fgetxattr(fd, "security.capability", &mut buf) {
        Ok(n) if n > 0 => Some(buf[..n.min(buf.len())].to_vec()),
        _ => None,
    }
}

/// The legacy (32-bit) mount id of the mount `fd` is on, as shown in `/proc/self/mountinfo`.
pub fn statx_mount_id(fd: BorrowedFd<'_>) -> Result<u64, SysError> {
    statx_mnt_field(fd, rustix::fs::StatxFlags::MNT_ID)
}

/// The mount ids of the mount `fd` is on: the legacy id (as `/proc/<pid>/mountinfo` shows it,
/// recycled after unmount) and, where the kernel has it (Linux 6.8+), the 64-bit id that is never
/// reused. Events are attributed to container mounts by the unique id, so a recycled legacy id
/// can never make a host mount look like a container's.
pub fn statx_mount_ids(fd: BorrowedFd<'_>) -> Result<(u64, Option<u64>), SysError> {
    // The legacy id and the unique id share one field: ask for each in turn.
    let legacy = statx_mount_id(fd)?;
    let unique = statx_mnt_field(fd, mnt_id_unique()).ok();
    Ok((legacy, unique))
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8).
fn mnt_id_unique() -> rustix::fs::StatxFlags {
    rustix::fs::StatxFlags::from_bits_retain(libc::STATX_MNT_ID_UNIQUE)
}

/// The unique (never reused) mount id of the mount `fd` is on; the legacy id on kernels
/// before 6.8, which is still unique among mounts that exist at the same time. One `statx`:
/// on the hot path for every exec from a container's non-rootfs mount.
pub fn statx_mount_key(fd: BorrowedFd<'_>) -> Result<u64, SysError> {
    statx_mnt_field(fd, mnt_id_unique()).or_else(|_| statx_mount_id(fd))
}

fn statx_mnt_field(fd: BorrowedFd<'_>, want: rustix::fs::StatxFlags) -> Result<u64, SysError> {
    use rustix::fs::{statx, AtFlags};
    let stx = statx(fd, c"", AtFlags::EMPTY_PATH | AtFlags::STATX_SYNC_AS_STAT, want)
        .map_err(|e| SysError::new("statx", Errno::from_raw(e.raw_os_error())))?;
    if stx.stx_mask & want.bits() == 0 {
        return Err(SysError::new("statx(mount id)", Errno::ENOTSUP));
    }
    Ok(stx.stx_mnt_id)
}

/// Opens `path` as `O_PATH` with `root` as the root directory of the lookup (`RESOLVE_IN_ROOT`):
/// absolute paths and `..` stay inside it, as they do for a process whose root it is.
/// Symlinks (the final one too) are followed inside the root unless `no_symlinks`; magic links
/// (`/proc/*/fd/*`) never are. This is how a path a container process named is looked at from
/// the host.
pub fn open_in_root(root: BorrowedFd<'_>, path: &[u8], no_symlinks: bool) -> Result<OwnedFd, SysError> {
    let mut resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if no_symlinks {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        flags |= OFlag::O_NOFOLLOW;
    }
    // Otherwise a final symlink is followed too, as the kernel follows it for execve and an
    // interpreter for open: resolving a name to the file it runs must not stop at the link.
    let rel = strip_leading_slashes(path);
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    let how = OpenHow::new().flags(flags).resolve(resolve);
    let rules = walk::Rules {
        confine: walk::Confine::InRoot,
        no_symlinks,
        nofollow_final: no_symlinks,
        no_xdev: false,
    };
    confined_open(root, rel, how, rules, "openat2(RESOLVE_IN_ROOT)")
}

/// Opens a directory of the host (such as `/proc`) as `O_PATH`, for `*at` lookups under it.
pub fn open_path_dir(path: &Path) -> Result<OwnedFd, SysError> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .call("open(O_PATH|O_DIRECTORY)")
}

/// The filesystem id of the overlayfs superblock `fd` is on (`statfs`'s `f_fsid`), `None` when
/// it is not an overlay. Overlayfs reports its own device for directories, but for a file of a
/// layer on another filesystem than the upper one it reports a pseudo device of that layer
/// (when the layers are not on one filesystem and `xino` is off): the superblock is then told
/// by its fsid, which `uuid=on` (the default since Linux 6.6) makes unique per overlay.
pub fn overlay_fsid(fd: BorrowedFd<'_>) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs64>::uninit();
    // SAFETY: fstatfs64 on a valid fd writes a whole statfs64 into `st` on success.
    if unsafe { libc::fstatfs64(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the call succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    if st.f_type != libc::OVERLAYFS_SUPER_MAGIC {
        return None;
    }
    const _: () = assert!(std::mem::size_of::<libc::fsid_t>() == 8);
    // SAFETY: fsid_t is two C ints (`__val: [c_int; 2]`, repr(C)), 8 bytes as checked above.
    let v: [i32; 2] = unsafe { std::mem::transmute_copy(&st.f_fsid) };
    Some((v[0] as u32 as u64) | ((v[1] as u32 as u64) << 32))
}

/// Whether `fd` lives on an overlayfs superblock.
pub fn is_overlayfs(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    let st = nix::sys::statfs::fstatfs(fd).call("fstatfs")?;
    Ok(st.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
}

/// Reads the whole of a regular file through `fd` with `pread`, feeding `sink`. Returns the
/// number of bytes read.
pub fn read_all_at(fd: BorrowedFd<'_>, mut sink: impl FnMut(&[u8])) -> Result<u64, SysError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off: i64 = 0;
    loop {
        match nix::sys::uio::pread(fd, &mut buf, off) {
            Ok(0) => return Ok(off as u64),
            Ok(n) => {
                sink(&buf[..n]);
                off += n as i64;
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SysError::new("pread", e)),
        }
    }
}

/// Tries to take a read lease on `fd`. A read lease can only be had when nobody has the file
/// open for writing, and while it is held, opening the file for writing blocks. That makes a
/// hash taken under the lease a hash of what will be executed.
pub fn try_read_lease(fd: BorrowedFd<'_>) -> Result<(), SysError> {
    // SAFETY: fcntl with F_SETLEASE on a valid fd; no pointers are involved.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if rc == -1 {
        return Err(SysError::new("fcntl(F_SETLEASE)", Errno::last()));
    }
    Ok(())
}

/// The lease held through `fd` (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`); while a lease is being
/// broken, the type it is being broken to.
pub fn lease_type(fd: BorrowedFd<'_>) -> Option<i32> {
    // SAFETY: fcntl with F_GETLEASE on a valid fd; no pointers are involved.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLEASE) };
    (rc >= 0).then_some(rc)
}

pub fn release_lease(fd: BorrowedFd<'_>) {
    // SAFETY: fcntl with F_SETLEASE on a valid fd; no pointers are involved.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

fn strip_leading_slashes(mut p: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = p {
        p = rest;
    }
    p
}

/// Reads a regular file of `len` bytes by mapping it, feeding `sink` with the mapped bytes
/// (no copy into a buffer). Only for a file on which the caller holds a read lease: the lease
/// keeps writers, and so truncation, out while the mapping exists, and a truncated mapping
/// would raise SIGBUS.
pub fn read_all_mapped_leased(
    fd: BorrowedFd<'_>,
    len: u64,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), SysError> {
    use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};
    let Some(len_nz) = std::num::NonZeroUsize::new(len as usize) else {
        return Ok(());
    };
    // SAFETY: a fresh private read-only mapping of a file we hold open; no existing memory is
    // affected. The returned pointer is valid for `len` bytes until munmap below.
    let ptr =
        unsafe { mmap(None, len_nz, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE, fd, 0) }.call("mmap")?;
    // SAFETY: `ptr`/`len` describe the mapping just created.
    let _ = unsafe { madvise(ptr, len as usize, MmapAdvise::MADV_SEQUENTIAL) };
    {
        // SAFETY: the mapping is readable for `len` bytes and, under the caller's read lease,
        // the file cannot be truncated or written while the slice lives; the slice does not
        // outlive this block, which ends before munmap.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), len as usize) };
        for chunk in bytes.chunks(1 << 20) {
            sink(chunk);
        }
    }
    // SAFETY: unmapping exactly the mapping created above, after its last use.
    unsafe { munmap(ptr, len as usize) }.call("munmap")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd};

    #[test]
    fn paths_resolve_inside_a_root_following_symlinks_there_unless_told_not_to() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/prog"), b"x").unwrap();
        std::fs::write(t.path().join("outside"), b"host").unwrap();
        std::os::unix::fs::symlink("/bin/prog", root.join("link")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("bin/escape")).unwrap();
        let r = open_path_dir(&root).unwrap();
        let ino = |fd: OwnedFd| fstat_fd(fd.as_fd()).unwrap().st_ino;
        let prog = std::fs::metadata(root.join("bin/prog")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            ino(open_in_root(r.as_fd(), b"/link", false).unwrap()),
            prog.ino(),
            "final symlink followed"
        );
        assert_eq!(
            ino(open_in_root(r.as_fd(), b"/../../bin/prog", false).unwrap()),
            prog.ino(),
            "`..` stays inside"
        );
        // An absolute symlink target and `..` resolve inside the root, never outside it.
        assert!(open_in_root(r.as_fd(), b"/bin/escape", false).is_err(), "no such file inside the root");
        // Not followed when asked: the link itself (O_PATH | O_NOFOLLOW), never its target.
        let link = open_in_root(r.as_fd(), b"/link", true).unwrap();
        assert_eq!(fstat_fd(link.as_fd()).unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
        std::os::unix::fs::symlink("prog", root.join("bin/rel")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink("/bin", root.join("d/up")).unwrap();
        assert!(open_in_root(r.as_fd(), b"/d/up/prog", true).is_err(), "no symlink on the way");
        assert!(open_in_root(r.as_fd(), b"/bin/prog", true).is_ok());
    }

    #[test]
    fn fd_path_reads_exact_names_for_any_fd_number() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("odd \n\u{1b}name");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        assert_eq!(fd_path(f.as_fd()).unwrap(), p.as_os_str().as_bytes());
        // A high fd number (more digits).
        let high = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1000)).unwrap();
        // SAFETY: `high` is a new fd returned by F_DUPFD_CLOEXEC, owned by nothing else.
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        assert_eq!(fd_path(high.as_fd()).unwrap(), p.as_os_str().as_bytes());
    }
}
