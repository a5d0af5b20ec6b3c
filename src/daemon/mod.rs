//! Wiring: the fanotify group, discovery, the hot path, hashing workers, sinks, signals.
//!
//! Threads: `main` reads permission events and runs the fast path; `driftgate-discovery`
//! watches the mount table and marks containers; `driftgate-hash-N` and `driftgate-hash-large`
//! hash files for the slow path; `driftgate-sink` writes findings. If the process dies for any
//! reason the kernel allows every exec still pending, so no failure leaves an exec hung.

pub mod cache;
pub mod discovery;
pub mod hot;
pub mod metadata;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::Config;
use crate::container::Registry;
use crate::sink::{self, spool::SpoolWriter, JournalTarget, SinkStats};
use crate::sys::fanotify::PermGroup;
use crate::sys::mountwatch::MountWatch;
use crate::sys::SysError;
use hot::{FastPath, HotStats, Job, Routed, Shared};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("{0}")]
    Spool(#[from] sink::spool::SpoolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let cfg = Arc::new(cfg);
    // Signals are blocked before any thread starts so that every thread inherits the mask and
    // only the signalfd sees them. SIGIO is what a lease break sends: ignore it.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| SysError::new("pthread_sigmask", e))?;
    // SAFETY: setting SIG_IGN installs no handler code; nothing else manages SIGIO/SIGPIPE.
    unsafe {
        nix::sys::signal::signal(Signal::SIGIO, nix::sys::signal::SigHandler::SigIgn)
            .map_err(|e| SysError::new("signal(SIGIO)", e))?;
        nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn)
            .map_err(|e| SysError::new("signal(SIGPIPE)", e))?;
    }
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| SysError::new("signalfd", e))?;

    let spool = SpoolWriter::open(&cfg.spool_dir, cfg.spool_segment_bytes)?;
    let journal = if cfg.journald_enabled {
        match sink::journald::Journal::connect(&cfg.journald_socket) {
            Ok(j) => JournalTarget::Journald(j),
            Err(e) => {
                tracing::info!(socket = %cfg.journald_socket.display(), error = %e, "no journald; findings go to stderr");
                JournalTarget::Stderr
            }
        }
    } else {
        JournalTarget::Stderr
    };
    let sink_stats = Arc::new(SinkStats::default());
    let aggregator = Arc::new(sink::aggregate::Aggregator::new(cfg.aggregate_window));
    let (findings, sink_thread) =
        sink::start(spool, journal, Arc::clone(&sink_stats), Arc::clone(&aggregator));

    let (meta_tx, meta_rx) = crossbeam_channel::unbounded::<Arc<crate::container::Container>>();
    let group = PermGroup::new()?;
    let registry: Arc<ArcSwap<Registry>> = Arc::new(ArcSwap::from_pointee(Registry::default()));
    let hot_stats = Arc::new(HotStats::default());
    let shared = Arc::new(Shared {
        mode: cfg.mode,
        node: cfg.node_name.clone(),
        registry: Arc::clone(&registry),
        hashes: Mutex::new(cache::BoundedMap::new(cfg.hash_cache_entries)),
        outcomes: Mutex::new(cache::BoundedMap::new(cfg.hash_cache_entries)),
        aggregator,
        findings,
        stats: Arc::clone(&hot_stats),
        large_file_bytes: cfg.large_file_bytes,
        meta_refresh: Some(meta_tx.clone()),
    });

    // Discovery: mark every running container before reporting ready.
    let meta_thread = metadata::spawn(Arc::clone(&cfg), meta_rx)?;
    let mut disco = discovery::Discovery::new(Arc::clone(&cfg), Arc::clone(&group), Arc::clone(&registry));
    disco.set_metadata_sink(meta_tx);
    let watch = match cfg.mount_watch {
        crate::config::MountWatchKind::Auto => MountWatch::open()?,
        crate::config::MountWatchKind::Fanotify => MountWatch::open_fanotify()?,
        crate::config::MountWatchKind::Mountinfo => MountWatch::open_mountinfo()?,
    };
    disco.rescan();
    let stop = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .map_err(|e| SysError::new("eventfd", e))?;
    let stop_fd: OwnedFd = stop.into();
    let stop_fd = Arc::new(stop_fd);
    let disco_thread = spawn_discovery(disco, watch, Arc::clone(&stop_fd), cfg.rescan_interval)?;

    let (small_tx, small_rx) = crossbeam_channel::unbounded::<Job>();
    let (large_tx, large_rx) = crossbeam_channel::unbounded::<Job>();
    let mut workers = Vec::new();
    for i in 0..cfg.hash_workers {
        workers.push(spawn_worker(
            format!("driftgate-hash-{i}"),
            Arc::clone(&shared),
            small_rx.clone(),
            false,
        )?);
    }
    workers.push(spawn_worker("driftgate-hash-large".into(), Arc::clone(&shared), large_rx, true)?);
    drop(small_rx);

    let watched = registry.load().by_dev.len();
    tracing::info!(mode = cfg.mode.as_str(), containers = watched, "driftgate ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
        "mode={} containers={watched}",
        cfg.mode.as_str()
    ))]);

    let mut fast = FastPath::new(Arc::clone(&shared), 1 << 16);
    let result = event_loop(&group, &sfd, &mut fast, &small_tx, &large_tx, cfg.large_file_bytes);

    tracing::info!("driftgate stopping");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Workers answer what they hold, then exit; dropping the group closes the fanotify fd and
    // the kernel allows anything still queued.
    drop(small_tx);
    drop(large_tx);
    for w in workers {
        let _ = w.join();
    }
    let _ = nix::unistd::write(stop_fd.as_fd(), &1u64.to_ne_bytes());
    let _ = disco_thread.join();
    drop(fast);
    drop(group);
    // The metadata thread ends when its last sender (discovery's, the hot path's) is gone.
    drop(shared);
    let _ = meta_thread.join();
    let _ = sink_thread.join();
    result
}

fn event_loop(
    group: &Arc<PermGroup>,
    sfd: &SignalFd,
    fast: &mut FastPath,
    small_tx: &Sender<Job>,
    large_tx: &Sender<Job>,
    large_bytes: u64,
) -> Result<(), DaemonError> {
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
                let events = group.read()?;
                if events.is_empty() {
                    break;
                }
                for ev in events {
                    if let Routed::Slow(job) = fast.handle(ev) {
                        let tx = if job.id.size >= large_bytes { large_tx } else { small_tx };
                        if let Err(e) = tx.send(job) {
                            // Cannot happen while we hold the receivers' workers; answer anyway.
                            let _ = fast.shared.try_complete(e.into_inner(), true);
                        }
                    }
                }
            }
        }
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return Ok(()),
                    Ok(Signal::SIGHUP) => {
                        tracing::info!("SIGHUP: nothing to reload in this version");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A hashing worker. The large-file worker runs in `SCHED_IDLE`: a long hash takes spare CPU
/// and is preempted at once by anything deciding or running other execs.
fn spawn_worker(
    name: String,
    shared: Arc<Shared>,
    rx: Receiver<Job>,
    idle: bool,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        if idle {
            if let Err(e) = crate::sys::process::set_this_thread_idle_policy() {
                tracing::warn!(error = %e, "could not move the large-file hashing thread to SCHED_IDLE");
                crate::sys::process::lower_this_thread_priority(19);
            }
        }
        while let Ok(job) = rx.recv() {
            // With hashing allowed this always completes (and returns None).
            let _ = shared.try_complete(job, true);
        }
    })
}

fn spawn_discovery(
    mut disco: discovery::Discovery,
    mut watch: MountWatch,
    stop: Arc<OwnedFd>,
    interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("driftgate-discovery".into()).spawn(move || {
        tracing::info!(kind = watch.kind(), "watching mount changes");
        let timeout = PollTimeout::try_from(interval.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        loop {
            let flags = watch.poll_flags();
            let mut fds = [PollFd::new(watch.fd(), flags), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "poll on mount watch failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            let changed = fds[0].revents().is_some_and(|r| !r.is_empty());
            let woken = Instant::now();
            watch.drain();
            disco.rescan_after(changed.then_some(woken));
        }
    })
}

/// Counts for tests: how many decisions fell back to an implicit allow.
pub fn implicit_allows() -> u64 {
    crate::sys::fanotify::IMPLICIT_ALLOWS.load(Ordering::Relaxed)
}
