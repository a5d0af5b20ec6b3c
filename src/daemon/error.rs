//! The daemon's error type.

use crate::sink;
use driftgate_sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("{0}")]
    Spool(#[from] sink::spool::SpoolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A system call the daemon cannot work without is refused here (a seccomp filter, a
    /// missing capability): restarting cannot help, so it exits with 78 like a bad
    /// configuration (the unit's `RestartPreventExitStatus=78`), saying why.
    #[error("{0}")]
    Refused(String),
    /// A setting that names a file the daemon cannot use (a webhook's CA bundle): exits 78.
    #[error("{0}")]
    Config(String),
}
