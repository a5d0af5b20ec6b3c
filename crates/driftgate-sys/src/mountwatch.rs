//! Notification that the mount table changed, so new container rootfs mounts are marked
//! before their first exec.
//!
//! Preferred: a fanotify group with `FAN_REPORT_MNT` marking our mount namespace for
//! `FAN_MNT_ATTACH | FAN_MNT_DETACH` (Linux 6.14+). Fallback: `poll()` on
//! `/proc/self/mountinfo`, which reports `POLLPRI` when the table changes. Either way the
//! daemon re-reads the mount table; the events are only a wake-up.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use super::{Call, SysError};

// libc 0.2 lacks the mount-notification constants (see the notes on this kernel).
const FAN_REPORT_MNT: u32 = 0x0000_4000;
const FAN_MARK_MNTNS: u32 = 0x0000_0110;
const FAN_MNT_ATTACH: u64 = 0x0100_0000;
const FAN_MNT_DETACH: u64 = 0x0200_0000;

#[derive(Debug)]
pub enum MountWatch {
    Fanotify(Fanotify),
    Mountinfo(File),
}

impl MountWatch {
    /// Opens the best available watch.
    pub fn open() -> Result<Self, SysError> {
        match Self::open_fanotify() {
            Ok(w) => Ok(w),
            Err(e) => {
                tracing::info!(error = %e, "mount events unavailable; watching /proc/self/mountinfo");
                Self::open_mountinfo()
            }
        }
    }

    pub fn open_fanotify() -> Result<Self, SysError> {
        let flags = InitFlags::from_bits_retain(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | FAN_REPORT_MNT,
        );
        let fan = Fanotify::init(flags, EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC)
            .call("fanotify_init(FAN_REPORT_MNT)")?;
        let ns = File::open("/proc/self/ns/mnt")
            .map_err(|e| SysError::new("open(/proc/self/ns/mnt)", errno_of(&e)))?;
        fan.mark::<_, str>(
            MarkFlags::from_bits_retain(libc::FAN_MARK_ADD | FAN_MARK_MNTNS),
            MaskFlags::from_bits_retain(FAN_MNT_ATTACH | FAN_MNT_DETACH),
            ns.as_fd(),
            None,
        )
        .call("fanotify_mark(FAN_MARK_MNTNS)")?;
        Ok(Self::Fanotify(fan))
    }

    pub fn open_mountinfo() -> Result<Self, SysError> {
        File::open("/proc/self/mountinfo")
            .map(Self::Mountinfo)
            .map_err(|e| SysError::new("open(/proc/self/mountinfo)", errno_of(&e)))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fanotify(_) => "fanotify-mount-events",
            Self::Mountinfo(_) => "mountinfo-poll",
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Fanotify(f) => f.as_fd(),
            Self::Mountinfo(f) => f.as_fd(),
        }
    }

    /// The poll events that mean "changed".
    pub fn poll_flags(&self) -> nix::poll::PollFlags {
        use nix::poll::PollFlags;
        match self {
            Self::Fanotify(_) => PollFlags::POLLIN,
            Self::Mountinfo(_) => PollFlags::POLLPRI | PollFlags::POLLERR,
        }
    }

    /// Consumes pending notifications. For mountinfo, re-reading the file re-arms `POLLPRI`.
    pub fn drain(&mut self) {
        match self {
            Self::Fanotify(f) => {
                let mut buf = [0u8; 4096];
                while let Ok(n) = nix::unistd::read(f.as_fd(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
            Self::Mountinfo(f) => {
                use std::io::{Read, Seek, SeekFrom};
                let _ = f.seek(SeekFrom::Start(0));
                let mut sink = Vec::new();
                let _ = f.read_to_end(&mut sink);
            }
        }
    }
}

fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Mount events of *other* mount namespaces (containers'): a notification group with
/// `FAN_REPORT_MNT`, one `FAN_MARK_MNTNS` mark per namespace (Linux 6.14+). A container that
/// mounts something after it started (a privileged one) wakes discovery, which marks the new
/// mount. Only a wake-up, like [`MountWatch`]: what changed is read from the namespace.
#[derive(Debug)]
pub struct NsWatch {
    fan: Fanotify,
}

impl NsWatch {
    pub fn open() -> Result<Self, SysError> {
        let flags = InitFlags::from_bits_retain(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | FAN_REPORT_MNT,
        );
        let fan = Fanotify::init(flags, EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC)
            .call("fanotify_init(FAN_REPORT_MNT)")?;
        Ok(Self { fan })
    }

    /// Watches the mount namespace `ns` (an fd of `/proc/<pid>/ns/mnt`) for new mounts.
    pub fn watch(&self, ns: BorrowedFd<'_>) -> Result<(), SysError> {
        self.fan
            .mark::<_, str>(
                MarkFlags::from_bits_retain(libc::FAN_MARK_ADD | FAN_MARK_MNTNS),
                MaskFlags::from_bits_retain(FAN_MNT_ATTACH),
                ns,
                None,
            )
            .call("fanotify_mark(FAN_MARK_MNTNS)")
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }

    /// Consumes pending events; returns whether there were any.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        while let Ok(n) = nix::unistd::read(self.fan.as_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            any = true;
        }
        any
    }
}
