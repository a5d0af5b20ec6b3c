//! driftgate: blocks and reports binaries executed in containers that were not part of their
//! image ("exec drift"), using fanotify `FAN_OPEN_EXEC_PERM` on container overlay rootfs.
//!
//! Layout: [`engine`] is the pure decision; [`sys`] the only unsafe code; [`container`] finds
//! container mounts and looks into their layers; [`daemon`] wires the hot path; [`sink`]
//! records findings; [`cli`] holds one module per subcommand.

pub mod cli;
pub mod container;
pub mod daemon;
pub mod sink;

pub use driftgate_bench as bench;
pub use driftgate_core::{config, engine, export, finding, index, model, policy, util};
pub use driftgate_sys as sys;

/// Exit codes (sysexits.h), so a service manager can tell a bad configuration (do not restart)
/// from a runtime failure.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 64;
    /// Input data was malformed (an image, a manifest bundle).
    pub const DATA: i32 = 65;
    /// Something named on the command line does not exist.
    pub const NOT_FOUND: i32 = 66;
    pub const IO: i32 = 74;
    pub const NOPERM: i32 = 77;
    pub const CONFIG: i32 = 78;
    /// The daemon ended itself because decisions stalled (systemd restarts it).
    pub const STALLED: i32 = 75;
}
