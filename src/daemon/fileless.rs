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

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use proc_connector::{EventMask, ProcConnector, ProcEvent};

use super::hot::Shared;
use driftgate_sys::fs as sfs;
use driftgate_sys::proc;

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

/// Starts the connector thread. It listens only while the record is needed (see [`needed`]):
/// every exec on the node costs a netlink message while anyone listens, and the daemon a
/// `/proc` lookup per exec.
pub fn spawn(
    shared: Arc<Shared>,
    cfg: driftgate_core::config::SharedConfig,
    stats: Arc<FilelessStats>,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
) -> std::io::Result<JoinHandle<()>> {
    // Opened on its own thread: nothing here may ever hold up the daemon's start.
    std::thread::Builder::new().name("driftgate-fileless".into()).spawn(move || {
        // After the fact, at the lowest priority: never ahead of the programs on the node.
        driftgate_sys::process::lower_this_thread_priority(19);
        let mut conn: Option<ProcConnector> = None;
        let mut listening = false;
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let want = cfg.load().fileless_audit && needed(&shared);
            if want && conn.is_none() {
                match open() {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "fileless execution is not recorded: the process-event connector is unavailable (needs CAP_NET_ADMIN in the host's network namespace)");
                        stats.set_state(format!("unavailable: {e}"));
                        return;
                    }
                }
            }
            if let Some(c) = &conn {
                if want != listening {
                    let r = if want { subscribe(c) } else { c.unsubscribe() };
                    match r {
                        Ok(()) => listening = want,
                        Err(e) => tracing::warn!(error = %e, "process-event connector (un)subscribe"),
                    }
                }
            }
            stats.set_state(if listening {
                "listening"
            } else if cfg.load().fileless_audit {
                "idle (vm.memfd_noexec refuses memfd execution in every watched container)"
            } else {
                "off"
            });
            // Wait for events, a change of the containers, or the next look at what is needed.
            let mut fds = vec![nix::poll::PollFd::new(wake.as_fd(), nix::poll::PollFlags::POLLIN)];
            if let Some(c) = &conn {
                fds.push(nix::poll::PollFd::new(c.as_fd(), nix::poll::PollFlags::POLLIN));
            }
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(250u16));
            let mut b = [0u8; 8];
            let _ = nix::unistd::read(wake.as_fd(), &mut b);
            let Some(c) = &conn else { continue };
            // Everything queued, also what came in just before unsubscribing.
            loop {
                match c.recv(&mut buf) {
                    Ok(ProcEvent::Exec { pid, .. }) => {
                        stats.exec_events.fetch_add(1, Ordering::Relaxed);
                        on_exec(&shared, &stats, pid as i32);
                    }
                    Ok(_) => {}
                    Err(proc_connector::Error::Overrun) => {
                        stats.lost_events.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(proc_connector::Error::Interrupted) => {}
                    Err(proc_connector::Error::WouldBlock) => break,
                    // What the crate's blocking `recv` says for "nothing more" on a
                    // non-blocking socket.
                    Err(proc_connector::Error::Os(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::error!(error = %e, "process-event connector");
                        break;
                    }
                }
            }
        }
    })
}

/// Whether the after-the-fact record is needed: some watched container can run a memfd
/// program, because fileless execution is not refused there (`vm.memfd_noexec` is not 2 in
/// each of its PID namespaces: audit mode, a hostPID container, a failed setting), or not yet
/// known to be (its first exec has not come yet), or it was audited before it was enforced (a
/// memfd made then stays executable). Containers the kernel layer covers need none: it sees
/// every memfd exec itself.
pub fn needed(shared: &Shared) -> bool {
    use crate::container::mounts::MemfdState;
    let kernel = shared.namespaces.kernel();
    shared.registry.load().by_dev.values().any(|c| {
        // The kernel layer sees (and reports) every memfd exec of the containers it covers.
        if kernel.covers(c) {
            return false;
        }
        if !c.pid_known.load(Ordering::Relaxed) || c.memfd_predates.load(Ordering::Relaxed) {
            return true;
        }
        c.namespaces
            .lock()
            .map_or(true, |n| n.pid.is_empty() || n.pid.values().any(|s| *s != MemfdState::Set(2)))
    })
}

fn subscribe(conn: &ProcConnector) -> Result<(), proc_connector::Error> {
    // Only execs; a busy node makes many forks and exits, none of which matter here. The
    // kernel's per-socket filter, installed by this very request, also drops its
    // acknowledgement (an event of type NONE), which proc-connector 0.3 waits for: without
    // O_NONBLOCK that wait lasts until some exec happens. The missing ACK is not an error.
    match conn.subscribe_filtered(EventMask::EXEC) {
        Ok(()) | Err(proc_connector::Error::WouldBlock) => Ok(()),
        Err(e) => Err(e),
    }
}

fn open() -> Result<ProcConnector, proc_connector::Error> {
    // ProcConnector::new subscribes to everything; the loop subscribes (filtered) when needed.
    let conn = ProcConnector::new()?;
    conn.set_nonblocking()?;
    conn.unsubscribe()?;
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
                let id = driftgate_sys::fs::file_id(&st);
                (super::hot::hash_stable(fd.as_fd(), &id).map(|(h, _)| h), id.size)
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
