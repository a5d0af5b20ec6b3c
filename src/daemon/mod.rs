//! Wiring: the fanotify group, discovery, the hot path, hashing workers, sinks, signals, status,
//! reload and the watchdog.
//!
//! Threads: `main` reads permission events and runs the fast path; `driftgate-discovery`
//! watches the mount table and marks containers; `driftgate-meta` reads runtime metadata;
//! `driftgate-hash-N` and `driftgate-hash-large` hash files for the slow path;
//! `driftgate-sink` writes findings (after `driftgate-evidence` copies their files; exports,
//! with `driftgate-webhook` posting); `driftgate-status` serves `driftgate status`;
//! `driftgate-watchdog` pings systemd while decisions progress and ends a stalled daemon. If
//! the process dies for any reason the kernel allows every exec still pending, so no failure
//! leaves an exec hung.

pub mod counters;
pub mod declare;
pub(crate) mod detect;
pub(crate) mod discovery;
mod error;
pub(crate) mod fileless;
pub mod health;
pub mod hot;
pub(crate) mod indexer;
pub(crate) mod indirect;
pub mod kernel;
pub(crate) mod metadata;
pub(crate) mod metrics;
pub(crate) mod namespaces;
pub(crate) mod reload;
pub mod socket;
mod start;
pub mod status;
mod wake;
mod watchdog;
pub mod watched;

pub use error::DaemonError;
pub use start::block_signals;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::container::Registry;
use driftgate_core::config::{Config, SharedConfig};
use hot::events::{event_loop, Workers};
use hot::{FastPath, HotStats};

/// Runs the daemon until SIGTERM or SIGINT: start-up in the order that protects running
/// containers first (marks before IoCs, every container marked before READY), then the event
/// loop, then an orderly stop.
pub fn run(initial: Config) -> Result<(), DaemonError> {
    let started = SystemTime::now();
    let config_path = initial.source.clone();
    let cfg: SharedConfig = Arc::new(ArcSwap::from_pointee(initial));
    let c0 = cfg.load_full();
    let sfd = start::signals()?;
    let sentinel = start::sentinel();
    let (sinks, sink_handles) = start::sinks(&c0, &cfg)?;
    if c0.policy.rules.iter().any(|r| r.response.is_some()) {
        if let Some(why) = crate::container::cgroup::cannot_freeze() {
            tracing::error!("a rule sets response = \"freeze\", but no container can be frozen: {why}");
        }
    }
    let (meta_tx, meta_rx) = crossbeam_channel::unbounded::<Arc<crate::container::Container>>();
    // Every waiting exec holds an fd: take all the process may have (see `budget`).
    let (nofile, nofile_hard) = driftgate_sys::process::raise_nofile_limit();
    tracing::info!(soft = nofile, hard = nofile_hard, "open-file limit");
    let health = Arc::new(health::Health::new(reload::enforcing(&c0)));
    let group = start::perm_group(&c0)?;
    start::probe_syscalls(&c0, &health);
    let kernel = start::kernel_layer(&c0, &health)?;
    let marker = Arc::new(namespaces::Marker::new(
        Arc::clone(&group),
        c0.mounts_enabled,
        Arc::clone(&health),
        Arc::clone(&kernel),
    ));
    marker.set_memfd_rule(reload::memfd_rule(&c0, c0.libraries_enabled));
    let registry: Arc<ArcSwap<Registry>> = Arc::new(ArcSwap::from_pointee(Registry::default()));
    let hot_stats = Arc::new(HotStats::default());
    let shared =
        start::shared(&c0, nofile, &registry, &marker, &hot_stats, sink_handles, meta_tx.clone(), &health);

    let weak = Arc::downgrade(&shared);
    marker.set_tamper_sink(Box::new(move |c, pid, value| {
        if let Some(s) = weak.upgrade() {
            s.record_tampered(c, pid, value);
        }
    }));

    // Discovery: mark every running container (and its mounts) before reporting ready.
    let index_stats = Arc::new(indexer::IndexStats::default());
    let (index_tx, index_rx) = crossbeam_channel::unbounded::<indexer::Msg>();
    let _index_thread =
        indexer::spawn(Arc::clone(&cfg), Arc::clone(&shared.knowledge), Arc::clone(&index_stats), index_rx)?;
    let meta_thread = metadata::spawn(Arc::clone(&cfg), meta_rx, Some(index_tx.clone()))?;
    let found = start::discovery(&c0, &cfg, &group, &registry, &marker, meta_tx)?;
    // Loaded after the first marking: marks protect running containers at once, and a large
    // IoC set takes seconds to read.
    if let Some(set) = reload::load_iocs(&c0.ioc_paths, 0) {
        shared.set_iocs(set);
    }
    let workers = Workers::start(&shared, c0.hash_workers, c0.large_file_bytes)?;
    // The fds held so far (containers' layers, sockets): what the slow path's budget is not.
    shared.budget.refresh(0, 0);
    tracing::info!(limit = shared.budget.limit(), "execs that may wait for the slow path");
    let fileless_stats = Arc::new(fileless::FilelessStats::default());
    let reloader = Arc::new(reload::Reloader {
        config_path,
        cfg: Arc::clone(&cfg),
        shared: Arc::clone(&shared),
        sentinel: sentinel.clone(),
        index_tx,
        rescan: Arc::clone(&found.rescan),
        reloads: Arc::new(AtomicU64::new(0)),
        errors: Arc::new(AtomicU64::new(0)),
        lock: std::sync::Mutex::new(()),
    });
    let sources = Arc::new(status::Sources {
        cfg: Arc::clone(&cfg),
        started,
        registry: Arc::clone(&registry),
        hot: Arc::clone(&hot_stats),
        sink: Arc::clone(&sinks.stats),
        shared: Arc::clone(&shared),
        reloads: Arc::clone(&reloader.reloads),
        reload_errors: Arc::clone(&reloader.errors),
        index: Arc::clone(&index_stats),
        fileless: Arc::clone(&fileless_stats),
        unwatched: found.unwatched.clone(),
        // Read at start-up: a reload does not change them.
        outputs: (c0.evidence.clone(), c0.export.clone()),
        reloader: Arc::clone(&reloader),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let mut threads = start::services(&c0, &sources, &stopping);
    threads.push(reload::spawn_ioc_watch(Arc::clone(&cfg), Arc::clone(&shared), Arc::clone(&stopping))?);
    threads.extend(reload::spawn_config_watch(Arc::clone(&reloader), Arc::clone(&stopping))?);
    threads.push(fileless::spawn(
        Arc::clone(&shared),
        Arc::clone(&cfg),
        Arc::clone(&fileless_stats),
        Arc::clone(&stopping),
        Arc::clone(&found.containers_changed),
    )?);
    if let Some(t) =
        kernel::events::spawn(Arc::clone(&shared), Arc::clone(&stopping), Arc::clone(&found.rescan))?
    {
        threads.push(t);
    }
    threads.push(watchdog::spawn_watchdog(
        Arc::clone(&group),
        Arc::clone(&sources),
        Arc::clone(&stopping),
        Arc::clone(&cfg),
        sentinel.clone(),
    )?);

    let watched = registry.load().by_dev.len();
    tracing::info!(mode = c0.mode.as_str(), containers = watched, "driftgate ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&watchdog::status_line(&sources.snapshot()))]);
    if let Some(s) = &sentinel {
        tracing::info!(pid = s.pid(), stall_secs = c0.stall_timeout.as_secs(), "sentinel watching decisions");
        s.set_stall(c0.stall_timeout);
    }
    let mut fast = FastPath::new(Arc::clone(&shared), 1 << 16);
    let result = event_loop(&group, &sfd, &mut fast, || {
        let _ = reloader.reload();
    });

    tracing::info!("driftgate stopping");
    stopping.store(true, Ordering::Relaxed);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    workers.stop(&shared);
    found.stop();
    for t in threads {
        let _ = t.join();
    }
    // Dropping the group closes the fanotify fd. The metadata thread ends when its last sender
    // (discovery's, the hot path's) is gone.
    drop((fast, group, sources, reloader, shared));
    let _ = meta_thread.join();
    let _ = sinks.thread.join();
    result
}
