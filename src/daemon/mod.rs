//! Wiring: the fanotify group, discovery, the hot path, hashing workers, sinks, signals, status,
//! reload and the watchdog.
//!
//! Threads: `main` reads permission events and runs the fast path; `driftgate-discovery`
//! watches the mount table and marks containers; `driftgate-meta` reads runtime metadata;
//! `driftgate-hash-N` and `driftgate-hash-large` hash files for the slow path;
//! `driftgate-sink` writes findings; `driftgate-status` serves `driftgate status`;
//! `driftgate-watchdog` pings systemd while decisions progress and ends a stalled daemon. If
//! the process dies for any reason the kernel allows every exec still pending, so no failure
//! leaves an exec hung.

pub mod budget;
pub mod cache;
pub mod discovery;
pub mod fileless;
pub mod hasher;
pub mod hot;
pub mod indexer;
pub mod indirect;
pub mod latency;
pub mod metadata;
pub mod metrics;
pub mod namespaces;
pub mod pin;
pub mod queue;
pub mod report;
pub mod status;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{Config, SharedConfig};
use crate::container::Registry;
use crate::sink::{self, spool::SpoolWriter, JournalTarget, SinkStats};
use crate::sys::fanotify::PermGroup;
use crate::sys::mountwatch::MountWatch;
use crate::sys::SysError;
use hot::{FastPath, HotStats, Job, ModeCell, Routed, Shared};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("{0}")]
    Spool(#[from] sink::spool::SpoolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn eventfd() -> Result<Arc<OwnedFd>, SysError> {
    let e = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| SysError::new("eventfd", e))?;
    Ok(Arc::new(e.into()))
}

fn kick(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
}

fn drain_eventfd(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd.as_fd(), &mut b);
}

/// The signals the daemon takes through its signalfd (SIGTERM, SIGINT, SIGHUP), blocked in the
/// calling thread. Call it before any thread starts (the logging thread too): threads inherit
/// the mask, and a thread that had them unblocked would take SIGTERM's default action (end the
/// process at once) instead of the daemon's orderly stop.
pub fn block_signals() -> Result<SigSet, SysError> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| SysError::new("pthread_sigmask", e))?;
    Ok(mask)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(initial: Config) -> Result<(), DaemonError> {
    let started = SystemTime::now();
    let config_path = initial.source.clone();
    let cfg: SharedConfig = Arc::new(ArcSwap::from_pointee(initial));
    let c0 = cfg.load_full();
    // SIGIO is what a lease break sends: ignore it.
    let mask = block_signals()?;
    crate::sys::process::ignore_signal(Signal::SIGIO)?;
    crate::sys::process::ignore_signal(Signal::SIGPIPE)?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| SysError::new("signalfd", e))?;
    // Forked before the fanotify group exists; paused until decisions start (start-up is
    // bounded by the service manager's start timeout).
    let sentinel = match crate::sys::sentinel::Sentinel::start(Duration::ZERO) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!(error = %e, "no sentinel: a stopped daemon would hold execs until it runs again");
            None
        }
    };

    let spool = SpoolWriter::open(&c0.spool_dir, c0.spool_segment_bytes)?;
    let journal = if c0.journald_enabled {
        match sink::journald::Journal::connect(&c0.journald_socket) {
            Ok(j) => JournalTarget::Journald(j),
            Err(e) => {
                tracing::info!(socket = %c0.journald_socket.display(), error = %e, "no journald; findings go to stderr");
                JournalTarget::Stderr
            }
        }
    } else {
        JournalTarget::Stderr
    };
    let sink_stats = Arc::new(SinkStats::default());
    let aggregator = Arc::new(sink::aggregate::Aggregator::new(c0.aggregate_window, c0.max_open_windows));
    let (findings, sink_thread) =
        sink::start(spool, journal, Arc::clone(&sink_stats), Arc::clone(&aggregator), Arc::clone(&cfg));

    let (meta_tx, meta_rx) = crossbeam_channel::unbounded::<Arc<crate::container::Container>>();
    // Every waiting exec holds an fd: take all the process may have (see `budget`).
    let (nofile, nofile_hard) = crate::sys::process::raise_nofile_limit();
    tracing::info!(soft = nofile, hard = nofile_hard, "open-file limit");
    let group = PermGroup::new()?;
    let marker = Arc::new(namespaces::Marker::new(Arc::clone(&group), c0.mounts_enabled));
    marker.set_memfd_rule(memfd_rule(&c0));
    let registry: Arc<ArcSwap<Registry>> = Arc::new(ArcSwap::from_pointee(Registry::default()));
    let hot_stats = Arc::new(HotStats::default());
    let shared = Arc::new(Shared {
        mode: ModeCell::new(c0.mode),
        node: c0.node_name.clone(),
        registry: Arc::clone(&registry),
        hashes: Mutex::new(cache::BoundedMap::new(c0.hash_cache_entries)),
        outcomes: Mutex::new(cache::BoundedMap::new(c0.hash_cache_entries)),
        aggregator,
        findings,
        stats: Arc::clone(&hot_stats),
        meta_refresh: Some(meta_tx.clone()),
        // Loaded after the first marking (below): marks protect running containers at once,
        // and a large IoC set takes seconds to read.
        iocs: ArcSwap::from_pointee(Default::default()),
        block_iocs: AtomicBool::new(c0.ioc_block),
        policy: ArcSwap::from_pointee(c0.policy.clone()),
        knowledge: Arc::new(AtomicU64::new(0)),
        log_limiter: Mutex::new(sink::ratelimit::RateLimiter::new(
            sink::ratelimit::DEFAULT_BURST,
            sink::ratelimit::DEFAULT_PER_SEC,
        )),
        namespaces: Arc::clone(&marker),
        indirect_cfg: ArcSwap::from_pointee(hot::IndirectConfig::from_config(&c0)),
        targets: Mutex::new(cache::BoundedMap::new(c0.hash_cache_entries)),
        router: arc_swap::ArcSwapOption::empty(),
        hasher: hasher::Hasher::with_reader(hasher::daemon_reader()),
        hash_limits: ArcSwap::from_pointee(hot::HashLimits::from_config(&c0)),
        budget: budget::FdBudget::new(nofile, c0.max_pending),
        max_arg_bytes: std::sync::atomic::AtomicUsize::new(c0.max_arg_bytes),
        record_limiter: Mutex::new(sink::ratelimit::RateLimiter::new(
            c0.container_burst,
            c0.container_per_sec,
        )),
        suppressed: AtomicU64::new(0),
        // At most a quarter of the fd limit, so holds never starve waiting execs.
        holder: pin::Holder::new(c0.writer_hold, budget::FdBudget::holds_for(nofile) as usize),
    });

    // Discovery: mark every running container before reporting ready.
    let index_stats = Arc::new(indexer::IndexStats::default());
    let (index_tx, index_rx) = crossbeam_channel::unbounded::<indexer::Msg>();
    let _index_thread =
        indexer::spawn(Arc::clone(&cfg), Arc::clone(&shared.knowledge), Arc::clone(&index_stats), index_rx)?;
    let meta_thread = metadata::spawn(Arc::clone(&cfg), meta_rx, Some(index_tx.clone()))?;
    let mut disco = discovery::Discovery::new(
        Arc::clone(&cfg),
        Arc::clone(&group),
        Arc::clone(&registry),
        Arc::clone(&marker),
    );
    disco.set_metadata_sink(meta_tx);
    let unwatched = disco.unwatched();
    let watch = match c0.mount_watch {
        crate::config::MountWatchKind::Auto => MountWatch::open()?,
        crate::config::MountWatchKind::Fanotify => MountWatch::open_fanotify()?,
        crate::config::MountWatchKind::Mountinfo => MountWatch::open_mountinfo()?,
    };
    disco.rescan();
    // The mounts of every running container, also before reporting ready.
    disco.scan_namespaces();
    if let Some(set) = load_iocs(&c0.ioc_paths, 0) {
        shared.set_iocs(set);
    }
    let stop_fd = eventfd()?;
    let rescan_fd = eventfd()?;
    // Kicked by discovery when containers come or go (the fileless recorder listens only while
    // some container needs it).
    let containers_changed = eventfd()?;
    disco.set_change_signal(Arc::clone(&containers_changed));
    let disco_thread =
        spawn_discovery(disco, watch, Arc::clone(&stop_fd), Arc::clone(&rescan_fd), Arc::clone(&cfg))?;

    let small = Arc::new(queue::FairQueue::<Job>::new());
    let large = Arc::new(queue::FairQueue::<Job>::new());
    let mut workers = Vec::new();
    for i in 0..c0.hash_workers {
        workers.push(spawn_worker(
            format!("driftgate-hash-{i}"),
            Arc::clone(&shared),
            Arc::clone(&small),
            false,
        )?);
    }
    workers.push(spawn_worker("driftgate-hash-large".into(), Arc::clone(&shared), Arc::clone(&large), true)?);
    shared.router.store(Some(Arc::new(hot::Router {
        small: Arc::clone(&small),
        large: Arc::clone(&large),
        large_bytes: c0.large_file_bytes,
    })));
    // The fds held so far (containers' layers, sockets): what the slow path's budget is not.
    shared.budget.refresh(0, 0);
    tracing::info!(limit = shared.budget.limit(), "execs that may wait for the slow path");
    let fileless_stats = Arc::new(fileless::FilelessStats::default());
    let reloads = Arc::new(AtomicU64::new(0));
    let reload_errors = Arc::new(AtomicU64::new(0));
    let sources = Arc::new(status::Sources {
        cfg: Arc::clone(&cfg),
        started,
        registry: Arc::clone(&registry),
        hot: Arc::clone(&hot_stats),
        sink: Arc::clone(&sink_stats),
        shared: Arc::clone(&shared),
        reloads: Arc::clone(&reloads),
        reload_errors: Arc::clone(&reload_errors),
        index: Arc::clone(&index_stats),
        fileless: Arc::clone(&fileless_stats),
        unwatched,
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let status_thread = match status::serve(&c0.socket, Arc::clone(&sources), Arc::clone(&stopping)) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(socket = %c0.socket.display(), error = %e, "status socket unavailable");
            None
        }
    };
    let metrics_thread = match &c0.metrics_listen {
        Some(l) => match metrics::serve(l, Arc::clone(&sources), Arc::clone(&stopping)) {
            Ok(t) => {
                tracing::info!(listen = %l, "serving Prometheus metrics");
                Some(t)
            }
            Err(e) => {
                tracing::error!(listen = %l, error = %e, "could not serve metrics");
                None
            }
        },
        None => None,
    };
    let ioc_watch = spawn_ioc_watch(Arc::clone(&cfg), Arc::clone(&shared), Arc::clone(&stopping))?;
    let fileless_thread = Some(fileless::spawn(
        Arc::clone(&shared),
        Arc::clone(&cfg),
        Arc::clone(&fileless_stats),
        Arc::clone(&stopping),
        Arc::clone(&containers_changed),
    )?);
    let watchdog = spawn_watchdog(
        Arc::clone(&group),
        Arc::clone(&sources),
        Arc::clone(&stopping),
        Arc::clone(&cfg),
        sentinel.clone(),
    )?;

    let watched = registry.load().by_dev.len();
    tracing::info!(mode = c0.mode.as_str(), containers = watched, "driftgate ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status_line(&sources.snapshot()))]);

    let mut fast = FastPath::new(Arc::clone(&shared), 1 << 16);
    let reload = || match Config::load(config_path.as_deref()) {
        Ok(new) => {
            let old = cfg.load_full();
            if new.mode != old.mode {
                tracing::warn!(from = old.mode.as_str(), to = new.mode.as_str(), "mode changed by reload");
            }
            shared.mode.set(new.mode);
            shared.namespaces.set_enabled(new.mounts_enabled);
            shared.namespaces.set_memfd_rule(memfd_rule(&new));
            shared.indirect_cfg.store(Arc::new(hot::IndirectConfig::from_config(&new)));
            shared.hash_limits.store(Arc::new(hot::HashLimits::from_config(&new)));
            shared.max_arg_bytes.store(new.max_arg_bytes, Ordering::Relaxed);
            shared.holder.set_hold(new.writer_hold);
            if let Some(s) = &sentinel {
                s.set_stall(new.stall_timeout);
            }
            if (new.container_burst, new.container_per_sec) != (old.container_burst, old.container_per_sec) {
                if let Ok(mut l) = shared.record_limiter.lock() {
                    *l = sink::ratelimit::RateLimiter::new(new.container_burst, new.container_per_sec);
                }
            }
            // Which image files are loaders or interpreters may have changed.
            shared.knowledge.fetch_add(1, Ordering::Relaxed);
            shared.block_iocs.store(new.ioc_block, Ordering::Relaxed);
            shared.policy.store(Arc::new(new.policy.clone()));
            if let Some(set) = load_iocs(&new.ioc_paths, shared.iocs.load().len()) {
                shared.set_iocs(set);
            }
            cfg.store(Arc::new(new));
            let _ = index_tx.send(indexer::Msg::Reload);
            reloads.fetch_add(1, Ordering::Relaxed);
            kick(&rescan_fd);
            tracing::info!("configuration reloaded");
        }
        Err(e) => {
            reload_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
        }
    };
    if let Some(s) = &sentinel {
        tracing::info!(pid = s.pid(), stall_secs = c0.stall_timeout.as_secs(), "sentinel watching decisions");
        s.set_stall(c0.stall_timeout);
    }
    let result = event_loop(&group, &sfd, &mut fast, reload);

    tracing::info!("driftgate stopping");
    stopping.store(true, Ordering::Relaxed);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Prompt, whatever is being hashed: every hash wait ends now; what is still queued is
    // allowed (the kernel allows it anyway once the fanotify fd is closed); workers finish the
    // job in hand and exit; dropping the group closes the fanotify fd.
    shared.hasher.stop();
    shared.holder.stop();
    shared.router.store(None);
    for j in small.close().into_iter().chain(large.close()) {
        shared.answer(j.ev, true);
    }
    for w in workers {
        let _ = w.join();
    }
    kick(&stop_fd);
    let _ = disco_thread.join();
    let _ = watchdog.join();
    let _ = ioc_watch.join();
    for t in [status_thread, metrics_thread, fileless_thread].into_iter().flatten() {
        let _ = t.join();
    }
    drop(fast);
    drop(group);
    // The metadata thread ends when its last sender (discovery's, the hot path's) is gone.
    drop(sources);
    drop(shared);
    let _ = meta_thread.join();
    let _ = sink_thread.join();
    result
}

fn memfd_rule(c: &Config) -> namespaces::MemfdRule {
    namespaces::MemfdRule { setting: c.memfd_noexec, mode: c.mode, policy: Arc::new(c.policy.clone()) }
}

/// Loads the IoC sources, logging what each gave. `None` means "keep the previous set": every
/// source failed while a previous set had entries.
fn load_iocs(paths: &[std::path::PathBuf], previous: usize) -> Option<crate::index::ioc::IocSet> {
    if paths.is_empty() {
        return Some(Default::default());
    }
    let start = Instant::now();
    let (set, reports, errors) = crate::index::ioc::IocSet::load(paths);
    for r in &reports {
        if r.invalid > 0 {
            let first: Vec<String> =
                r.examples.iter().map(|b| format!("line {}: {}", b.line, b.reason)).collect();
            tracing::warn!(source = %r.source, valid = r.valid, invalid = r.invalid, first = ?first, "IoC source has invalid lines");
        }
    }
    for e in &errors {
        tracing::error!(error = %e, "IoC source not loaded");
    }
    if set.is_empty() && !errors.is_empty() && previous > 0 {
        tracing::error!(previous, "no IoC source could be loaded; keeping the previous set");
        return None;
    }
    tracing::info!(entries = set.len(), ms = start.elapsed().as_millis() as u64, "IoC set loaded");
    Some(set)
}

/// Reloads the IoC set when a source file changes (checked every two seconds by size and
/// modification time, which also notices files added to a source directory).
fn spawn_ioc_watch(
    cfg: SharedConfig,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    fn fingerprint(paths: &[std::path::PathBuf]) -> Vec<(std::path::PathBuf, u64, Option<SystemTime>)> {
        paths
            .iter()
            .flat_map(|p| crate::index::ioc::expand(p).unwrap_or_default())
            .map(|f| {
                let m = std::fs::metadata(&f).ok();
                let len = m.as_ref().map_or(0, |m| m.len());
                let mtime = m.and_then(|m| m.modified().ok());
                (f, len, mtime)
            })
            .collect()
    }
    std::thread::Builder::new().name("driftgate-ioc-watch".into()).spawn(move || {
        let mut last = fingerprint(&cfg.load().ioc_paths);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let paths = cfg.load().ioc_paths.clone();
            let now = fingerprint(&paths);
            if now != last {
                last = now;
                tracing::info!("an IoC source changed; reloading the IoC set");
                if let Some(set) = load_iocs(&paths, shared.iocs.load().len()) {
                    shared.set_iocs(set);
                }
            }
        }
    })
}

fn status_line(s: &status::Status) -> String {
    format!(
        "mode={} containers={} decisions={} denied={} findings={} p99={}us",
        s.mode,
        s.containers.len(),
        s.decisions.allowed + s.decisions.denied,
        s.decisions.denied,
        s.findings.values().sum::<u64>(),
        s.latency_us.p99.map_or("-".into(), |v| format!("{v:.0}")),
    )
}

fn event_loop(
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
            if let Err(e) = crate::sys::process::set_this_thread_idle_policy() {
                tracing::warn!(error = %e, "could not move the large-file hashing thread to SCHED_IDLE");
                crate::sys::process::lower_this_thread_priority(19);
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

fn spawn_discovery(
    mut disco: discovery::Discovery,
    mut watch: MountWatch,
    stop: Arc<OwnedFd>,
    rescan: Arc<OwnedFd>,
    cfg: SharedConfig,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("driftgate-discovery".into()).spawn(move || {
        tracing::info!(kind = watch.kind(), "watching mount changes");
        let ns_watch = disco.ns_watch();
        loop {
            let interval = cfg.load().rescan_interval;
            // Wake for the next namespace scan of new containers, if one is due sooner.
            let wait = disco
                .next_namespace_scan()
                .map_or(interval, |at| at.saturating_duration_since(Instant::now()).min(interval));
            let timeout = PollTimeout::try_from(wait.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            let flags = watch.poll_flags();
            let mut fds = vec![
                PollFd::new(watch.fd(), flags),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(rescan.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(w) = &ns_watch {
                fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            }
            let woke = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 1,
                Err(e) => {
                    tracing::error!(error = %e, "poll on mount watch failed");
                    std::thread::sleep(Duration::from_millis(100));
                    1
                }
            };
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            let changed = fds[0].revents().is_some_and(|r| !r.is_empty());
            let kicked = fds[2].revents().is_some_and(|r| !r.is_empty());
            let ns_changed = fds.get(3).is_some_and(|f| f.revents().is_some_and(|r| !r.is_empty()));
            drop(fds);
            if kicked {
                drain_eventfd(&rescan);
            }
            let woken = Instant::now();
            if ns_changed {
                // A container mounted something: mark it first (a burst of mounts is one scan).
                if let Some(w) = &ns_watch {
                    w.drain();
                }
                disco.scan_for_mount_event(woken);
            }
            if changed || woke == 0 || kicked {
                watch.drain();
                disco.rescan_after(changed.then_some(woken));
            }
            if !ns_changed && (woke == 0 || kicked) {
                // A timeout (periodic, or a scan scheduled after a new container) or a reload.
                disco.scan_namespaces_if_due(kicked || wait >= interval);
            }
        }
    })
}

/// Pings systemd's watchdog only while decisions make progress, updates `STATUS=`, and ends
/// the daemon when an exec has been held for `stall` with no decision made meanwhile: exiting
/// closes the fanotify fd, the kernel allows what was held, and systemd restarts the daemon.
fn spawn_watchdog(
    group: Arc<PermGroup>,
    sources: Arc<status::Sources>,
    stopping: Arc<AtomicBool>,
    cfg: SharedConfig,
    sentinel: Option<Arc<crate::sys::sentinel::Sentinel>>,
) -> std::io::Result<JoinHandle<()>> {
    // WATCHDOG_USEC from systemd: ping at half of it (at most every TICK).
    let systemd_period = sd_notify::watchdog_enabled();
    let ping_every = systemd_period.map(|d| (d / 2).max(TICK));
    std::thread::Builder::new().name("driftgate-watchdog".into()).spawn(move || {
        let hot = Arc::clone(&sources.hot);
        let answered = || hot.allowed.load(Ordering::Relaxed) + hot.denied.load(Ordering::Relaxed);
        let mut last_answered = answered();
        let mut last_reads = hot.reads.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        let mut last_ping = Instant::now();
        let mut last_status = Instant::now();
        let mut last_refresh = Instant::now();
        while !stopping.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            if last_refresh.elapsed() >= Duration::from_secs(1) {
                last_refresh = Instant::now();
                sources.shared.budget.refresh(hot.in_flight(), sources.shared.holder.held() as u64);
            }
            // Progress: execs read are being answered, and execs queued in the kernel are being
            // read (a decision thread stuck before it counts an event shows as the second).
            let now_answered = answered();
            let in_flight = hot.in_flight();
            let reads = hot.reads.load(Ordering::Relaxed);
            let queued = group.queued_bytes().unwrap_or(0);
            let progressing =
                (in_flight == 0 || now_answered != last_answered) && (queued == 0 || reads != last_reads);
            last_answered = now_answered;
            last_reads = reads;
            if progressing {
                last_progress = Instant::now();
                if let Some(s) = &sentinel {
                    s.beat();
                }
                if ping_every.is_some_and(|p| last_ping.elapsed() >= p) {
                    last_ping = Instant::now();
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            } else {
                // Just before the sentinel would (it kills at the stall timeout since the last
                // beat): an exit with a status and a log line says more than SIGKILL.
                let stall = cfg.load().stall_timeout;
                let stalled = last_progress.elapsed();
                if stalled + TICK >= stall {
                    tracing::error!(
                        in_flight,
                        queued_bytes = queued,
                        stalled_ms = stalled.as_millis() as u64,
                        "decisions stalled; exiting so the kernel releases the held execs"
                    );
                    crate::sys::process::exit_now(
                        crate::exit::STALLED,
                        "driftgate: decisions stalled; exiting so the kernel releases the held execs\n",
                    );
                }
            }
            if last_status.elapsed() >= Duration::from_secs(5) {
                last_status = Instant::now();
                let _ =
                    sd_notify::notify(&[sd_notify::NotifyState::Status(&status_line(&sources.snapshot()))]);
            }
        }
    })
}

/// How often the watchdog looks at progress.
const TICK: Duration = Duration::from_millis(250);
