//! The daemon's error type.

use crate::sink;
use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("{0}")]
    Spool(#[from] sink::spool::SpoolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
