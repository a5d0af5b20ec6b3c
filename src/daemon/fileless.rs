//! Fileless execution, recorded after the fact.
//!
//! A program run from a memfd (`memfd_create` + `fexecve`) has no file on any mount a mark
//! could cover: no permission event is raised for it. Where drift is blocked, memfd execution is
//! refused up front (`vm.memfd_noexec = 2` in the container's PID namespace, see
//! [`super::namespaces`]). Everywhere, as the record for audit mode and the backstop for
//! containers where that cannot be set (sharing the host's PID namespace), the kernel's
//! process-event connector (netlink, `PROC_EVENT_EXEC`, needs `CAP_NET_ADMIN`) reports every
//! exec on the node after it happened: a process inside a watched container whose
//! `/proc/<pid>/exe` is a memfd is a `FILELESS_EXECUTION` finding, with the SHA-256 of the
//! program read through `/proc/<pid>/exe` while the process still exists, checked against the
//! IoC set. A program that exits before it is looked at is counted, not recorded.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use proc_connector::{EventMask, ProcConnector, ProcEvent};

use super::hot::Shared;
use crate::sys::fs::{self as sfs, FileId};
use crate::sys::proc;

/// Counters for status.
#[derive(Debug, Default)]
pub struct FilelessStats {
    /// `listening`, `off` or why it could not start.
    pub state: Mutex<String>,
    pub exec_events: AtomicU64,
    /// Events the kernel dropped because the daemon read too slowly (netlink overrun).
    pub lost_events: AtomicU64,
    pub memfd_execs: AtomicU64,
    /// memfd programs that were gone before they could be read.
    pub gone: AtomicU64,
}

impl FilelessStats {
    pub fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set_state(&self, s: impl Into<String>) {
        if let Ok(mut st) = self.state.lock() {
            *st = s.into();
        }
    }
}

/// Starts the connector thread when `[fileless] audit` is on.
pub fn spawn(
    shared: Arc<Shared>,
    enabled: bool,
    stats: Arc<FilelessStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    if !enabled {
        stats.set_state("off");
        return Ok(None);
    }
    // Opened on its own thread: nothing here may ever hold up the daemon's start.
    std::thread::Builder::new().name("driftgate-fileless".into()).spawn(move || {
        let conn = match open() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "fileless execution is not recorded: the process-event connector is unavailable (needs CAP_NET_ADMIN in the host's network namespace)");
                stats.set_state(format!("unavailable: {e}"));
                return;
            }
        };
        stats.set_state("listening");
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match conn.recv_timeout(&mut buf, Duration::from_millis(250)) {
                Ok(Some(ProcEvent::Exec { pid, .. })) => {
                    stats.exec_events.fetch_add(1, Ordering::Relaxed);
                    on_exec(&shared, &stats, pid as i32);
                }
                Ok(_) => {}
                Err(proc_connector::Error::Overrun) => {
                    stats.lost_events.fetch_add(1, Ordering::Relaxed);
                }
                Err(proc_connector::Error::Interrupted | proc_connector::Error::WouldBlock) => {}
                Err(e) => {
                    tracing::error!(error = %e, "process-event connector");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })
    .map(Some)
}

fn open() -> Result<ProcConnector, proc_connector::Error> {
    let conn = ProcConnector::new()?;
    // Only execs; a busy node makes many forks and exits, none of which matter here. The
    // kernel's per-socket filter, installed by this very request, also drops its
    // acknowledgement (an event of type NONE), which proc-connector 0.3 waits for: without
    // O_NONBLOCK that wait lasts until some exec happens. The missing ACK is not an error.
    conn.set_nonblocking()?;
    match conn.subscribe_filtered(EventMask::EXEC) {
        Ok(()) | Err(proc_connector::Error::WouldBlock) => {}
        Err(e) => return Err(e),
    }
    // Room for bursts of execs while a finding is being recorded.
    let _ = conn.set_recv_buf_size(4 << 20);
    Ok(conn)
}

/// One exec on the node: is it a memfd program inside a watched container?
fn on_exec(shared: &Shared, stats: &FilelessStats, pid: i32) {
    let Some(dir) = proc::proc_dir() else { return };
    let Ok(exe) = nix::fcntl::readlinkat(dir, format!("{pid}/exe").as_str()) else { return };
    let exe = exe.into_encoded_bytes();
    if !exe.starts_with(b"/memfd:") {
        return;
    }
    let Some((dev, _)) = proc::root_dev_ino(pid) else {
        stats.gone.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Some(container) = shared.registry.load().by_dev.get(&dev).cloned() else { return };
    stats.memfd_execs.fetch_add(1, Ordering::Relaxed);
    // The program's bytes, through the process's own reference to the memfd.
    let (sha, size) = match nix::fcntl::openat(
        dir,
        format!("{pid}/exe").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => match sfs::fstat_fd(fd.as_fd()) {
            Ok(st) => {
                let id = FileId::from_stat(&st);
                (super::hot::hash_stable(fd.as_fd(), &id), id.size)
            }
            Err(_) => (None, 0),
        },
        Err(_) => {
            stats.gone.fetch_add(1, Ordering::Relaxed);
            (None, 0)
        }
    };
    shared.record_fileless(&container, pid, exe, sha, size);
}
