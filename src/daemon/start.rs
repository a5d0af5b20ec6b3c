//! Start-up steps of [`super::run`], in the order it takes them.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::error::DaemonError;
use super::hot::{self, HotStats, ModeCell, Shared};
use super::{discovery, metrics, namespaces, socket, status, wake};
use crate::container::{Container, Registry};
use crate::sink::{self, spool::SpoolWriter, FindingSender, JournalTarget, SinkStats};
use driftgate_core::config::Config;
use driftgate_sys::fanotify::PermGroup;
use driftgate_sys::mountwatch::MountWatch;
use driftgate_sys::sentinel::Sentinel;
use driftgate_sys::SysError;

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

/// Blocks the daemon's signals (to read them from the returned signalfd) and ignores SIGIO
/// (what a lease break sends) and SIGPIPE.
pub(super) fn signals() -> Result<SignalFd, DaemonError> {
    let mask = block_signals()?;
    driftgate_sys::process::ignore_signal(Signal::SIGIO)?;
    driftgate_sys::process::ignore_signal(Signal::SIGPIPE)?;
    Ok(SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| SysError::new("signalfd", e))?)
}

/// Forked before the fanotify group exists; paused until decisions start (start-up is bounded
/// by the service manager's start timeout).
pub(super) fn sentinel() -> Option<Arc<Sentinel>> {
    match Sentinel::start(Duration::ZERO) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!(error = %e, "no sentinel: a stopped daemon would hold execs until it runs again");
            None
        }
    }
}

/// The sink thread and its counters.
pub(super) struct Sinks {
    pub stats: Arc<SinkStats>,
    pub thread: JoinHandle<()>,
}

/// What the hot path needs to reach the sink thread. The sender is the thread's only one: the
/// thread ends when the hot path is dropped.
pub(super) type SinkHandles =
    (Arc<driftgate_core::aggregate::Aggregator<sink::ContainerHandle>>, FindingSender);

/// Opens the spool and journald and starts the sink thread.
pub(super) fn sinks(
    c0: &Config,
    cfg: &driftgate_core::config::SharedConfig,
) -> Result<(Sinks, SinkHandles), DaemonError> {
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
    let stats = Arc::new(SinkStats::default());
    let aggregator = Arc::new(driftgate_core::aggregate::Aggregator::new(
        c0.aggregate_window,
        c0.max_open_windows,
        sink::new_finding_id,
    ));
    // A store that cannot be opened costs the copies, never the daemon.
    let evidence =
        c0.evidence.enabled.then(|| sink::evidence::Store::open(&c0.evidence, Arc::clone(&stats.evidence)));
    let evidence = match evidence {
        Some(Ok(store)) => {
            stats.evidence_open.store(true, std::sync::atomic::Ordering::Relaxed);
            Some(store)
        }
        Some(Err(e)) => {
            tracing::error!(dir = %c0.evidence.dir.display(), error = %e, "evidence store unavailable: findings keep no copy");
            None
        }
        None => None,
    };
    let outputs = sink::Outputs {
        evidence,
        export: sink::export::Exporter::start(&c0.export, Arc::clone(&stats.export))
            .map_err(DaemonError::Config)?,
    };
    let (findings, thread) =
        sink::start(spool, journal, Arc::clone(&stats), Arc::clone(&aggregator), Arc::clone(cfg), outputs);
    Ok((Sinks { stats, thread }, (aggregator, findings)))
}

/// The fanotify group that holds execs (and opens, with `[libraries]`). Refused here (a seccomp
/// filter without `fanotify_init` or `fanotify_mark`, no `CAP_SYS_ADMIN`): an error that says
/// why, and exit status 78, so that systemd does not restart the daemon forever.
pub(super) fn perm_group(c0: &Config) -> Result<Arc<PermGroup>, DaemonError> {
    use driftgate_sys::probe::{Confinement, CAP_SYS_ADMIN};
    let refused = |e: SysError| match e.errno {
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES | nix::errno::Errno::ENOSYS => {
            DaemonError::Refused(Confinement::of_self().explain(
                e.call,
                e.errno,
                Some((CAP_SYS_ADMIN, "CAP_SYS_ADMIN")),
            ))
        }
        _ => DaemonError::Sys(e),
    };
    let group =
        if c0.libraries_enabled { PermGroup::with_opens() } else { PermGroup::new() }.map_err(refused)?;
    group.probe_mark().map_err(refused)?;
    Ok(group)
}

/// The kernel layer (`[kernel]`): loaded, or taken over from a previous daemon, where the
/// kernel has BPF LSM. Where it cannot be: with `enabled = "on"` the daemon does not start
/// (exit status 78); with `auto` the reason is in `status` and the log, and a kernel that lists
/// BPF LSM as active but refuses the program is a health problem in enforce mode.
pub(super) fn kernel_layer(
    c0: &Config,
    health: &super::health::Health,
) -> Result<Arc<super::kernel::Kernel>, DaemonError> {
    use driftgate_core::config::KernelLayer;
    let k = super::kernel::Kernel::start(&c0.kernel);
    if k.on() {
        tracing::info!(
            pinned = %k.pinned.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "no".into()),
            taken_over = k.reused,
            "kernel layer on: BPF LSM verifies at the moment of use what the daemon decided"
        );
        return Ok(Arc::new(k));
    }
    match c0.kernel.enabled {
        KernelLayer::On => {
            return Err(DaemonError::Refused(format!(
                "[kernel] enabled = \"on\", but the kernel layer {}",
                k.state
            )))
        }
        KernelLayer::Off => tracing::info!("kernel layer off ([kernel] enabled = \"off\")"),
        KernelLayer::Auto => {
            let effect = "containers are guarded by fanotify alone: execs from mounts it has not marked (detached, new, remounted), memfds and changed libraries are not refused (enforce) or reported (audit) at the moment of use (`status` lists the holes)";
            // A kernel that has BPF LSM active but refuses the program (a seccomp filter, a
            // missing capability, a platform that forbids BPF trampolines) is an alarm; one
            // without BPF LSM is what the fallback is for, said in the log and in `status`.
            let listed = driftgate_bpf::active_lsms().is_some_and(|l| l.split(',').any(|x| x == "bpf"));
            if listed {
                health.syscall(
                    "bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_LSM)",
                    Err(k.state.trim_start_matches("off: ").to_owned()),
                    effect,
                    true,
                );
            } else {
                tracing::warn!(why = %k.state, effect, "kernel layer off");
            }
        }
    }
    Ok(Arc::new(k))
}

/// Tries the other system calls the daemon needs, once, and records what is refused
/// ([`super::health`]): said at start, in `status` and in the metrics.
pub(super) fn probe_syscalls(c0: &Config, health: &super::health::Health) {
    use driftgate_sys::probe::{self, Confinement};
    let conf = Confinement::of_self();
    let why = |call: &str, e: nix::errno::Errno, cap: Option<(u32, &str)>| conf.explain(call, e, cap);
    let openat2 = if driftgate_sys::fs::openat2_refused() {
        Err(why("openat2", nix::errno::Errno::ENOSYS, None))
    } else {
        Ok(())
    };
    health.syscall(
        "openat2",
        openat2,
        "paths a container chose are looked up one component at a time instead (the same checks, a few more system calls)",
        false,
    );
    let indirect = c0.scripts_enabled || c0.loader_enabled;
    health.syscall(
        "process_vm_readv",
        probe::process_vm_readv_works().map_err(|e| why("process_vm_readv", e, None)),
        "the arguments of a loader's or interpreter's exec cannot be read: the script or program it is given is not checked",
        indirect,
    );
    // A pending call: /proc/<tid>/syscall (this thread's own), and another user's needs
    // CAP_SYS_PTRACE.
    let ptrace = std::fs::read("/proc/thread-self/syscall")
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        .and_then(
            |_| if conf.has_cap(probe::CAP_SYS_PTRACE) { Ok(()) } else { Err(nix::errno::Errno::EPERM) },
        )
        .map_err(|e| why("read(/proc/<pid>/syscall)", e, Some((probe::CAP_SYS_PTRACE, "CAP_SYS_PTRACE"))));
    health.syscall(
        "read(/proc/<pid>/syscall)",
        ptrace,
        "a loader's or interpreter's pending exec cannot be read: the script or program it is given is not checked",
        indirect,
    );
    let memfd = c0.memfd_noexec != driftgate_core::config::MemfdNoexec::Off;
    health.syscall(
        "setns(CLONE_NEWPID)",
        probe::setns_pid_works()
            .map_err(|e| why("setns(CLONE_NEWPID)", e, Some((probe::CAP_SYS_ADMIN, "CAP_SYS_ADMIN")))),
        "vm.memfd_noexec cannot be set in containers: fileless (memfd) execution is not refused",
        memfd,
    );
}

/// The hot path's shared state.
#[allow(clippy::too_many_arguments)]
pub(super) fn shared(
    c0: &Config,
    nofile: u64,
    registry: &Arc<ArcSwap<Registry>>,
    marker: &Arc<namespaces::Marker>,
    stats: &Arc<HotStats>,
    (aggregator, findings): SinkHandles,
    meta_tx: crossbeam_channel::Sender<Arc<Container>>,
    health: &Arc<super::health::Health>,
) -> Arc<Shared> {
    Arc::new(Shared {
        health: Arc::clone(health),
        mode: ModeCell::new(c0.mode),
        node: c0.node_name.clone(),
        cluster: c0.cluster.clone().or_else(|| {
            crate::container::cluster::from_kubelet(crate::container::cluster::KUBELET_KUBECONFIG)
        }),
        registry: Arc::clone(registry),
        hashes: Mutex::new(hot::cache::BoundedMap::new(c0.hash_cache_entries)),
        outcomes: Mutex::new(hot::cache::BoundedMap::new(c0.hash_cache_entries)),
        aggregator,
        findings,
        stats: Arc::clone(stats),
        meta_refresh: Some(meta_tx),
        // Loaded after the first marking.
        iocs: ArcSwap::from_pointee(Default::default()),
        block_iocs: AtomicBool::new(c0.ioc_block),
        policy: ArcSwap::from_pointee(c0.policy.clone()),
        knowledge: Arc::new(AtomicU64::new(0)),
        log_limiter: Mutex::new(driftgate_core::ratelimit::RateLimiter::new(
            driftgate_core::ratelimit::DEFAULT_BURST,
            driftgate_core::ratelimit::DEFAULT_PER_SEC,
        )),
        namespaces: Arc::clone(marker),
        indirect_cfg: ArcSwap::from_pointee(hot::IndirectConfig::from_config(c0)),
        targets: Mutex::new(hot::cache::BoundedMap::new(c0.hash_cache_entries)),
        router: arc_swap::ArcSwapOption::empty(),
        readers: hot::reader_pool::ReaderPool::with_reader(hot::reader_pool::daemon_reader()),
        hash_limits: ArcSwap::from_pointee(hot::HashLimits::from_config(c0)),
        budget: hot::budget::FdBudget::new(nofile, c0.max_pending),
        max_arg_bytes: std::sync::atomic::AtomicUsize::new(c0.max_arg_bytes),
        redact: ArcSwap::from_pointee(c0.redact.clone()),
        record_limiter: Mutex::new(driftgate_core::ratelimit::RateLimiter::new(
            c0.container_burst,
            c0.container_per_sec,
        )),
        suppressed: AtomicU64::new(0),
        // At most a quarter of the fd limit, so holds never starve waiting execs.
        holder: hot::pin::Holder::new(c0.writer_hold, hot::budget::FdBudget::holds_for(nofile) as usize),
        libraries: hot::Libraries::new(c0.libraries_enabled),
        loader_runs: Mutex::new(hot::cache::BoundedMap::new(4096)),
        refused_execs: Mutex::new(hot::cache::BoundedMap::new(4096)),
        frozen: Mutex::new(Vec::new()),
    })
}

/// The discovery thread, after a first marking of every running container and its mounts.
pub(super) struct Discovery {
    pub unwatched: Arc<ArcSwap<Vec<status::UnwatchedContainer>>>,
    pub rescan: Arc<OwnedFd>,
    /// Kicked by discovery when containers come or go (the fileless recorder listens only
    /// while some container needs it).
    pub containers_changed: Arc<OwnedFd>,
    stop: Arc<OwnedFd>,
    thread: JoinHandle<()>,
}

impl Discovery {
    pub fn stop(self) {
        wake::kick(&self.stop);
        let _ = self.thread.join();
    }
}

pub(super) fn discovery(
    c0: &Config,
    cfg: &driftgate_core::config::SharedConfig,
    group: &Arc<PermGroup>,
    registry: &Arc<ArcSwap<Registry>>,
    marker: &Arc<namespaces::Marker>,
    meta_tx: crossbeam_channel::Sender<Arc<Container>>,
) -> Result<Discovery, DaemonError> {
    let mut disco = discovery::Discovery::new(
        Arc::clone(cfg),
        Arc::clone(group),
        Arc::clone(registry),
        Arc::clone(marker),
    );
    disco.set_metadata_sink(meta_tx);
    let unwatched = disco.unwatched();
    let watch = match c0.mount_watch {
        driftgate_core::config::MountWatchKind::Auto => MountWatch::open()?,
        driftgate_core::config::MountWatchKind::Fanotify => MountWatch::open_fanotify()?,
        driftgate_core::config::MountWatchKind::Mountinfo => MountWatch::open_mountinfo()?,
    };
    disco.rescan();
    disco.scan_namespaces();
    // What a previous daemon registered with the kernel layer for containers that are gone.
    marker.kernel().reconcile();
    let stop = wake::eventfd()?;
    let rescan = wake::eventfd()?;
    let containers_changed = wake::eventfd()?;
    disco.set_change_signal(Arc::clone(&containers_changed));
    let thread =
        discovery::spawn_discovery(disco, watch, Arc::clone(&stop), Arc::clone(&rescan), Arc::clone(cfg))?;
    Ok(Discovery { unwatched, rescan, containers_changed, stop, thread })
}

/// The status socket and the metrics endpoint; neither failing stops the daemon.
pub(super) fn services(
    c0: &Config,
    sources: &Arc<status::Sources>,
    stopping: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    match socket::serve(&c0.socket, Arc::clone(sources), Arc::clone(stopping)) {
        Ok(t) => threads.push(t),
        Err(e) => tracing::warn!(socket = %c0.socket.display(), error = %e, "status socket unavailable"),
    }
    if let Some(l) = &c0.metrics_listen {
        match metrics::serve(l, Arc::clone(sources), Arc::clone(stopping)) {
            Ok(t) => {
                tracing::info!(listen = %l, "serving Prometheus metrics");
                threads.push(t);
            }
            Err(e) => tracing::error!(listen = %l, error = %e, "could not serve metrics"),
        }
    }
    threads
}
