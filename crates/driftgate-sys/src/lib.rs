//! Thin wrappers over the kernel interfaces driftgate needs: fanotify, statx, openat2,
//! xattrs, /proc readers and mount notifications.
//!
//! This is the only module that contains `unsafe`. Every call goes through [`SysError`], which
//! carries the name of the call so that logs and errors say which syscall failed.

pub mod calls;
pub mod fanotify;
pub mod fs;
pub mod mountwatch;
pub mod nsexec;
pub mod pidns;
pub mod probe;
pub mod proc;
pub mod procenv;
pub mod process;
pub mod procwalk;
mod remote;
pub mod sentinel;
pub mod walk;

use nix::errno::Errno;

/// A failed system call, with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct SysError {
    pub call: &'static str,
    pub errno: Errno,
}

impl SysError {
    pub fn new(call: &'static str, errno: Errno) -> Self {
        Self { call, errno }
    }
}

/// Attach a call name to a nix result.
pub(crate) trait Call<T> {
    fn call(self, name: &'static str) -> Result<T, SysError>;
}

impl<T> Call<T> for nix::Result<T> {
    fn call(self, name: &'static str) -> Result<T, SysError> {
        self.map_err(|e| SysError::new(name, e))
    }
}
