//! Stage 0: the fanotify read loop on the main thread, and the hashing workers that stage 2
//! hands slow jobs to.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use super::fast::FastPath;
use super::queue;
use super::state::{Job, Routed, Router, Shared};
use crate::daemon::error::DaemonError;
use driftgate_sys::fanotify::PermGroup;
use driftgate_sys::SysError;

pub fn event_loop(
    group: &Arc<PermGroup>,
    sfd: &SignalFd,
    fast: &mut FastPath,
    reload: impl Fn(),
) -> Result<(), DaemonError> {
    // Fault injection for the stall tests (a decision thread that never returns); compiled
    // into debug builds only.
    let deadlock_for_test =
        cfg!(debug_assertions) && std::env::var_os("DRIFTGATE_TEST_DEADLOCK_DECISIONS").is_some();
    loop {
        let mut fds =
            [PollFd::new(group.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SysError::new("poll", e).into()),
        }
        let sig_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        let fan_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        if fan_ready {
            // Drain everything queued before looking at signals again.
            loop {
                let events = match group.read() {
                    Ok(e) => e,
                    Err(e) if e.errno == nix::errno::Errno::EBADF || e.errno == nix::errno::Errno::EINVAL => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        // EMFILE/ENFILE/ENOMEM: the kernel could not make an event's fd (and
                        // denied that exec itself). Never stop over it: the budget makes it rare,
                        // and the next read may well succeed.
                        fast.shared.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                        let n = fast.shared.stats.read_errors.load(Ordering::Relaxed);
                        if n.is_power_of_two() {
                            tracing::error!(error = %e, errors = n, "reading exec events failed; the kernel denied those it could not give a file descriptor");
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        break;
                    }
                };
                if events.is_empty() {
                    break;
                }
                let stats = &fast.shared.stats;
                stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                stats.reads.fetch_add(1, Ordering::Relaxed);
                for ev in events {
                    if deadlock_for_test {
                        let _held = ev;
                        loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                    if let Routed::Slow(job) = fast.handle(ev) {
                        fast.shared.route(*job);
                    }
                }
            }
        }
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return Ok(()),
                    Ok(Signal::SIGHUP) => {
                        // Reading the file is quick; decisions for queued events wait only
                        // for this one parse, and none is dropped.
                        reload();
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The hashing workers: `hash_workers` for ordinary files, one `SCHED_IDLE` worker for large
/// ones, each fed by a queue that is fair between containers.
pub struct Workers {
    small: Arc<queue::FairQueue<Job>>,
    large: Arc<queue::FairQueue<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts the workers and routes `shared`'s slow jobs to them.
    pub fn start(shared: &Arc<Shared>, count: usize, large_bytes: u64) -> std::io::Result<Workers> {
        let small = Arc::new(queue::FairQueue::<Job>::new());
        let large = Arc::new(queue::FairQueue::<Job>::new());
        let mut threads = Vec::new();
        for i in 0..count {
            threads.push(spawn_worker(
                format!("driftgate-hash-{i}"),
                Arc::clone(shared),
                Arc::clone(&small),
                false,
            )?);
        }
        threads.push(spawn_worker(
            "driftgate-hash-large".into(),
            Arc::clone(shared),
            Arc::clone(&large),
            true,
        )?);
        shared.router.store(Some(Arc::new(Router {
            small: Arc::clone(&small),
            large: Arc::clone(&large),
            large_bytes,
        })));
        Ok(Workers { small, large, threads })
    }

    /// Prompt, whatever is being hashed: every hash wait ends now; what is still queued is
    /// allowed (the kernel allows it anyway once the fanotify fd is closed); workers finish the
    /// job in hand and exit.
    pub fn stop(self, shared: &Shared) {
        shared.readers.stop();
        shared.holder.stop();
        shared.router.store(None);
        for j in self.small.close().into_iter().chain(self.large.close()) {
            shared.answer(j.ev, true);
        }
        for w in self.threads {
            let _ = w.join();
        }
    }
}

/// A hashing worker. The large-file worker runs in `SCHED_IDLE`: a long hash takes spare CPU
/// and is preempted at once by anything deciding or running other execs.
fn spawn_worker(
    name: String,
    shared: Arc<Shared>,
    queue: Arc<queue::FairQueue<Job>>,
    idle: bool,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        if idle {
            if let Err(e) = driftgate_sys::process::set_this_thread_idle_policy() {
                tracing::warn!(error = %e, "could not move the large-file hashing thread to SCHED_IDLE");
                driftgate_sys::process::lower_this_thread_priority(19);
            }
        }
        // Fault injection for the stall-detector test; compiled into debug builds only.
        let stall_for_test =
            cfg!(debug_assertions) && std::env::var_os("DRIFTGATE_TEST_STALL_HASHING").is_some();
        while let Some(job) = queue.pop() {
            if stall_for_test {
                std::thread::sleep(Duration::from_secs(3600));
            }
            shared.complete_on_worker(job);
        }
    })
}
