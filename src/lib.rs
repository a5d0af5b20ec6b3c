//! driftgate: blocks and reports binaries executed in containers that were not part of their
//! image ("exec drift"), using fanotify `FAN_OPEN_EXEC_PERM` on container overlay rootfs.
//!
//! Layout: the decision, its vocabulary, configuration and findings are the pure crate
//! `driftgate_core`; system calls (the only unsafe code) are `driftgate_sys`; image and layer
//! I/O is `driftgate_image`; the kernel layer's BPF program is `driftgate_bpf`. Here:
//! [`container`] finds container mounts and looks into their layers; [`daemon`] wires the hot
//! path; [`sink`] records findings; [`cli`] holds one module per subcommand. Code names the
//! other crates by their own names, so a reader sees where it crosses into one.

pub mod cli;
pub mod container;
pub mod daemon;
pub mod sink;

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
