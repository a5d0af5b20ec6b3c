//! The fanotify permission group that holds execs, and the guard that guarantees every
//! permission event gets exactly one answer.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};

use super::{Call, SysError};

/// Answers that fell back to "allow" because the code that held the event dropped it without
/// deciding (an error path). Exposed for status and tests.
pub static IMPLICIT_ALLOWS: AtomicU64 = AtomicU64::new(0);

/// A fanotify group of class `FAN_CLASS_CONTENT` with an unlimited queue, watching
/// `FAN_OPEN_EXEC_PERM` (and, for library coverage, `FAN_OPEN_PERM`) on whole filesystems (one
/// overlay superblock per container) and on single mounts.
#[derive(Debug)]
pub struct PermGroup {
    fan: Fanotify,
    /// What every mark asks for.
    mask: MaskFlags,
}

/// `FAN_MARK_IGNORE` (Linux 6.0): a mark whose mask is an ignore mask, with the semantics
/// fixed for directories; older kernels take `FAN_MARK_IGNORED_MASK`.
const IGNORE_FLAGS: [MarkFlags; 2] = [MarkFlags::FAN_MARK_IGNORE, MarkFlags::FAN_MARK_IGNORED_MASK];

impl PermGroup {
    /// Creates the group. `FAN_UNLIMITED_QUEUE` matters: on overflow the kernel drops
    /// permission events and *allows* the access, which would be a silent bypass.
    pub fn new() -> Result<Arc<Self>, SysError> {
        Self::with_mask(MaskFlags::FAN_OPEN_EXEC_PERM)
    }

    /// A group whose marks also hold every open (`FAN_OPEN_PERM`): how a shared object that is
    /// loaded (`LD_PRELOAD`, `dlopen`) is seen. Opens of files proven harmless are switched
    /// off one inode at a time with [`PermGroup::ignore_opens`].
    pub fn with_opens() -> Result<Arc<Self>, SysError> {
        Self::with_mask(MaskFlags::FAN_OPEN_EXEC_PERM | MaskFlags::FAN_OPEN_PERM)
    }

    /// Whether this group's marks hold opens too.
    pub fn holds_opens(&self) -> bool {
        self.mask.contains(MaskFlags::FAN_OPEN_PERM)
    }

    fn with_mask(mask: MaskFlags) -> Result<Arc<Self>, SysError> {
        let flags = InitFlags::FAN_CLASS_CONTENT
            | InitFlags::FAN_UNLIMITED_QUEUE
            | InitFlags::FAN_UNLIMITED_MARKS
            | InitFlags::FAN_CLOEXEC
            | InitFlags::FAN_NONBLOCK
            | InitFlags::FAN_REPORT_TID;
        let ev = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC;
        let fan = Fanotify::init(flags, ev).call("fanotify_init")?;
        Ok(Arc::new(Self { fan, mask }))
    }

    /// Tries `fanotify_mark` without marking anything (`FAN_MARK_FLUSH` of this group's inode
    /// marks, of which there are none yet): a seccomp filter that allows `fanotify_init` but not
    /// `fanotify_mark` would otherwise leave every container unmarked.
    pub fn probe_mark(&self) -> Result<(), SysError> {
        // SAFETY: fanotify_mark on this group's own fd with FAN_MARK_FLUSH and a null path; it
        // only removes inode marks of this group (it has none when this is called).
        let rc = unsafe {
            libc::fanotify_mark(
                self.fan.as_fd().as_raw_fd(),
                libc::FAN_MARK_FLUSH,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(SysError::new("fanotify_mark", nix::errno::Errno::last()))
        }
    }

    /// Marks the superblock of the filesystem that `dir` (an open directory, never a path)
    /// lives on. Taking an fd rather than a path is deliberate: a path can be remounted
    /// between the check and the mark.
    pub fn mark_filesystem(&self, dir: BorrowedFd<'_>) -> Result<(), SysError> {
        self.fan
            .mark::<_, str>(MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM, self.mask, dir, None)
            .call("fanotify_mark")
    }

    /// Marks the one mount (vfsmount) that `fd` (an open file or directory of it, or an `O_PATH`
    /// fd; never a path) is on. Used for a container's mounts other than its rootfs (volumes,
    /// tmpfs, `/dev/shm`): a mount mark covers that mount only, so the host's own view of the
    /// same directory or filesystem is never intercepted.
    ///
    /// The mark is placed through `/proc/self/fd/N`, which names exactly the file `fd` is (a
    /// magic link, not a path that could be swapped): fanotify refuses `O_PATH` fds, and
    /// opening a bind-mounted regular file for reading on a mount this group already holds
    /// opens on would wait for this daemon's own answer.
    pub fn mark_mount(&self, fd: BorrowedFd<'_>) -> Result<(), SysError> {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        self.fan
            .mark(MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT, self.mask, fd, Some(link.as_str()))
            .call("fanotify_mark(FAN_MARK_MOUNT)")
    }

    /// Stops this group's `FAN_OPEN_PERM` events for the inode `fd` (an event's fd) is open on:
    /// an evictable inode ignore mark, so the kernel may drop it under memory pressure (the
    /// next open is then checked again) and nothing grows without bound. It is not
    /// `FAN_MARK_IGNORED_SURV_MODIFY`: a write to the file clears it, so a file rewritten into a
    /// library is checked again. Exec events are not ignored.
    pub fn ignore_opens(&self, fd: BorrowedFd<'_>) -> Result<(), SysError> {
        let mut last = nix::errno::Errno::EINVAL;
        for ignore in IGNORE_FLAGS {
            let flags = MarkFlags::FAN_MARK_ADD | ignore | MarkFlags::FAN_MARK_EVICTABLE;
            match self.fan.mark::<_, str>(flags, MaskFlags::FAN_OPEN_PERM, fd, None) {
                Ok(()) => return Ok(()),
                // A kernel before 6.0 does not know FAN_MARK_IGNORE.
                Err(e @ nix::errno::Errno::EINVAL) => last = e,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(SysError::new("fanotify_mark(FAN_MARK_IGNORE)", last))
    }

    /// The legacy mount ids this group has mount marks on (`/proc/self/fdinfo`). A mount mark
    /// goes away with its mount, which is how a container's mount that is gone is noticed.
    pub fn marked_mounts(&self) -> std::io::Result<Vec<u64>> {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.raw_fd()))?;
        Ok(parse_fdinfo_mnt_ids(&text))
    }

    /// Reads the events that are ready. Returns an empty vector when none are (non-blocking).
    pub fn read(self: &Arc<Self>) -> Result<Vec<PendingExec>, SysError> {
        let now = std::time::Instant::now();
        match self.fan.read_events() {
            Ok(evs) => Ok(evs
                .into_iter()
                .filter_map(|ev| {
                    // Overflow notifications carry no fd; with FAN_UNLIMITED_QUEUE there
                    // should be none, and there is nothing to answer for them.
                    ev.fd()?;
                    Some(PendingExec {
                        event: Some(ev),
                        group: Arc::clone(self),
                        received: now,
                        call: std::sync::OnceLock::new(),
                    })
                })
                .collect()),
            Err(nix::errno::Errno::EAGAIN) => Ok(Vec::new()),
            Err(e) => Err(SysError::new("read(fanotify)", e)),
        }
    }

    /// The superblock devices this group has marks on, read from
    /// `/proc/self/fdinfo/<fd>`. A superblock that is gone has no mark any more, which is how
    /// the daemon learns that a container's filesystem no longer exists.
    pub fn marked_superblocks(&self) -> std::io::Result<Vec<u64>> {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.raw_fd()))?;
        Ok(parse_fdinfo_sdevs(&text))
    }

    /// Bytes of events queued in the kernel and not read yet (`FIONREAD`).
    pub fn queued_bytes(&self) -> Result<u64, SysError> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer we pass.
        let rc = unsafe { libc::ioctl(self.fan.as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc < 0 {
            return Err(SysError::new("ioctl(FIONREAD)", nix::errno::Errno::last()));
        }
        Ok(n.max(0) as u64)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fan.as_raw_fd()
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }

    fn respond(&self, fd: BorrowedFd<'_>, allow: bool) -> Result<(), SysError> {
        let r = if allow { Response::FAN_ALLOW } else { Response::FAN_DENY };
        self.fan.write_response(FanotifyResponse::new(fd, r)).call("write(fanotify_response)")
    }
}

/// Parses `fanotify sdev:<hex> ...` lines (superblock marks) into userspace `dev_t` values.
pub fn parse_fdinfo_sdevs(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("fanotify sdev:"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
        .map(|kdev| {
            // Kernel-internal dev_t: 12-bit major << 20 | 20-bit minor.
            let (major, minor) = (kdev >> 20, kdev & 0xfffff);
            libc::makedev(major, minor)
        })
        .collect()
}

/// Parses `fanotify mnt_id:<hex> ...` lines (mount marks).
pub fn parse_fdinfo_mnt_ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("fanotify mnt_id:"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .collect()
}

/// One exec (or, with library coverage, one open) held by the kernel. It owns the event's fd;
/// it must be answered with
/// [`PendingExec::answer`]. If it is dropped unanswered (an error path), it answers *allow*:
/// blocking an exec forever is a node outage, and a decision that could not be made must not
/// turn into one.
#[derive(Debug)]
pub struct PendingExec {
    event: Option<FanotifyEvent>,
    group: Arc<PermGroup>,
    /// When the daemon read the event.
    pub received: std::time::Instant,
    /// The exec call the thread waits in, read once ([`PendingExec::exec_call`]).
    call: std::sync::OnceLock<Option<crate::proc::ExecCall>>,
}

impl PendingExec {
    /// The file being executed, opened read-only by the kernel for us.
    #[inline]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_ref().and_then(|e| e.fd()).expect("pending exec always has an fd")
    }

    /// Whether this is an open (`FAN_OPEN_PERM`) rather than an exec. An exec also raises an
    /// open event of its own, after its exec event is answered.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.event.as_ref().is_some_and(|e| {
            let m = e.mask();
            m.contains(MaskFlags::FAN_OPEN_PERM) && !m.contains(MaskFlags::FAN_OPEN_EXEC_PERM)
        })
    }

    /// The exec call the thread waits in (`/proc/<tid>/syscall`, its file name and arguments),
    /// read the first time a check asks and kept with the event: the URL indicators and an
    /// interpreter's script argument read it once between them.
    pub fn exec_call(&self) -> Option<&crate::proc::ExecCall> {
        self.call.get_or_init(|| crate::proc::pending_exec_call(self.tid())).as_ref()
    }

    /// The thread id of the process that is executing.
    #[inline]
    pub fn tid(&self) -> i32 {
        self.event.as_ref().map(|e| e.pid()).unwrap_or(0)
    }

    /// Stops the group's open events for this event's inode (see [`PermGroup::ignore_opens`]).
    pub fn ignore_opens(&self) -> Result<(), SysError> {
        self.group.ignore_opens(self.fd())
    }

    /// Sends the answer and closes the event fd.
    pub fn answer(mut self, allow: bool) -> Result<(), SysError> {
        let ev = self.event.take().expect("answered once");
        let fd = ev.fd().expect("pending exec always has an fd");
        self.group.respond(fd, allow)
        // `ev` drops here and closes its fd.
    }
}

impl Drop for PendingExec {
    fn drop(&mut self) {
        if let Some(ev) = self.event.take() {
            IMPLICIT_ALLOWS.fetch_add(1, Ordering::Relaxed);
            if let Some(fd) = ev.fd() {
                if let Err(e) = self.group.respond(fd, true) {
                    tracing::error!(error = %e, "could not answer a dropped exec event");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_superblock_marks_are_decoded_to_userspace_dev() {
        let text = "pos:\t0\nflags:\t02004002\nmnt_id:\t16\nino:\t1057\n\
                    fanotify flags:50 event-flags:88000\n\
                    fanotify sdev:2a mflags:0 mask:40000 ignored_mask:0\n\
                    fanotify sdev:800003 mflags:0 mask:40000 ignored_mask:0\n\
                    fanotify ino:10 sdev:fd00001 mflags:0 mask:1 ignored_mask:0 fhandle-bytes:8\n";
        let devs = parse_fdinfo_sdevs(text);
        assert_eq!(devs, vec![libc::makedev(0, 0x2a), libc::makedev(8, 3)]);
        let mounts = "fanotify mnt_id:1f mflags:0 mask:40000 ignored_mask:0\n\
                      fanotify sdev:2a mflags:0 mask:40000 ignored_mask:0\n\
                      fanotify mnt_id:800 mflags:0 mask:40000 ignored_mask:0\n";
        assert_eq!(parse_fdinfo_mnt_ids(mounts), vec![0x1f, 0x800]);
        assert!(parse_fdinfo_sdevs(mounts) == vec![libc::makedev(0, 0x2a)]);
    }
}
