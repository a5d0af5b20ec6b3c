//! Eventfds that wake a thread: stop, rescan, "containers changed".

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use driftgate_sys::SysError;

pub(super) fn eventfd() -> Result<Arc<OwnedFd>, SysError> {
    let e = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| SysError::new("eventfd", e))?;
    Ok(Arc::new(e.into()))
}

pub(super) fn kick(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
}

pub(super) fn drain_eventfd(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd.as_fd(), &mut b);
}
