//! Finds container rootfs mounts, verifies each one, and marks its superblock.
//!
//! The mount table is re-read whenever it changes (mount events, or `POLLPRI` on mountinfo)
//! and every `rescan_interval` as a safety net. A mount is marked only after the opened
//! mountpoint is proven to be the very mount that was classified: same mount id (statx), an
//! overlayfs (fstatfs), same device. The mark is placed through that fd, never by path: a
//! path can be unmounted and reveal the host filesystem underneath between check and mark.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::status::UnwatchedContainer;
use crate::container::layers::Layers;
use crate::container::{classify, mountinfo, Candidate, Container, Registry};
use driftgate_core::config::SharedConfig;
use driftgate_sys::fanotify::PermGroup;
use driftgate_sys::fs::{fstat_fd, is_overlayfs, open_dir_readable, statx_mount_id};
use driftgate_sys::mountwatch::MountWatch;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

static GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("{0}")]
    Sys(#[from] driftgate_sys::SysError),
    #[error("mount id changed (expected {expected}, found {found}): the mount went away")]
    MountChanged { expected: u64, found: u64 },
    #[error("not an overlayfs any more")]
    NotOverlay,
    #[error("device changed (expected {expected:#x}, found {found:#x})")]
    DevChanged { expected: u64, found: u64 },
    #[error("refusing to mark the filesystem the daemon itself runs from")]
    OwnFilesystem,
}

/// Owns the container set; publishes it to the hot path through `registry`.
pub struct Discovery {
    cfg: SharedConfig,
    group: Arc<PermGroup>,
    registry: Arc<ArcSwap<Registry>>,
    /// Mounted and marked: mount id -> device.
    active: HashMap<u64, u64>,
    /// Devices whose host mount is gone but whose superblock may live on in a container's
    /// mount namespace: still decided as containers until the kernel drops the mark.
    detached: HashSet<u64>,
    forbidden_devs: Vec<u64>,
    meta_tx: Option<crossbeam_channel::Sender<Arc<Container>>>,
    marker: Arc<super::namespaces::Marker>,
    /// When to look for the namespaces of new containers again (soonest last).
    ns_scans: Vec<Instant>,
    /// The last scan made for a container's mount event.
    last_event_scan: Option<Instant>,
    /// Written to when containers come or go.
    changed: Option<Arc<std::os::fd::OwnedFd>>,
    /// Containers found but not watched, as of the last scan (for status).
    unwatched: Arc<ArcSwap<Vec<UnwatchedContainer>>>,
    /// Their mount ids, so each failure is logged once, and its recovery too.
    unwatched_ids: HashSet<u64>,
    /// The open-file limit: watching a container holds its layer directories open.
    nofile: u64,
}

/// Scans for containers' mount events are at least this far apart: a container that mounts
/// and unmounts in a loop cannot keep discovery scanning.
const EVENT_SCAN_SPACING: Duration = Duration::from_millis(20);

/// After a new container appears, its namespace is looked for at these delays (its runtime
/// sets up its mounts and starts it within milliseconds to seconds). The first exec from its
/// rootfs marks them at once anyway; these find containers whose first exec came from
/// elsewhere (a volume).
const NS_SCAN_BACKOFF_MS: [u64; 8] = [5, 15, 40, 100, 250, 600, 1500, 4000];

impl Discovery {
    pub fn new(
        cfg: SharedConfig,
        group: Arc<PermGroup>,
        registry: Arc<ArcSwap<Registry>>,
        marker: Arc<super::namespaces::Marker>,
    ) -> Self {
        let forbidden_devs = ["/", "/proc/self/exe"]
            .iter()
            .filter_map(|p| nix::sys::stat::stat(*p).ok().map(|s| s.st_dev))
            .collect();
        Self {
            cfg,
            group,
            registry,
            active: HashMap::new(),
            detached: HashSet::new(),
            forbidden_devs,
            meta_tx: None,
            marker,
            ns_scans: Vec::new(),
            last_event_scan: None,
            changed: None,
            unwatched: Arc::default(),
            unwatched_ids: HashSet::new(),
            nofile: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft),
        }
    }

    /// The containers found but not watched, as of the last scan.
    pub fn unwatched(&self) -> Arc<ArcSwap<Vec<UnwatchedContainer>>> {
        Arc::clone(&self.unwatched)
    }

    /// An eventfd written to whenever the set of containers changes.
    pub fn set_change_signal(&mut self, fd: Arc<std::os::fd::OwnedFd>) {
        self.changed = Some(fd);
    }

    fn signal_change(&self) {
        if let Some(fd) = &self.changed {
            let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
        }
    }

    /// A container mounted something (noticed at `woken`): scan now, or as soon as the spacing
    /// allows. Logs how long the new mounts went unmarked: the window of a mount made after the
    /// container started.
    pub fn scan_for_mount_event(&mut self, woken: Instant) {
        let now = Instant::now();
        match self.last_event_scan {
            Some(last) if now < last + EVENT_SCAN_SPACING => {
                self.ns_scans.push(last + EVENT_SCAN_SPACING);
                self.ns_scans.sort_by(|a, b| b.cmp(a));
            }
            _ => {
                self.last_event_scan = Some(now);
                self.log_marked(woken, "container mounts made after start marked", |d| {
                    // Only a known namespace can have sent the event: re-read those first.
                    if !d.marker.rescan_known(&d.registry.load_full()) {
                        d.scan_namespaces();
                    }
                });
            }
        }
    }

    /// Runs `f`, then logs how many mounts it marked and how long after `woken`: the window of
    /// a mount made after the container started.
    fn log_marked<R>(&mut self, woken: Instant, what: &'static str, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = self.marker.stats.mounts_marked.load(Ordering::Relaxed);
        let r = f(self);
        let marked = self.marker.stats.mounts_marked.load(Ordering::Relaxed) - before;
        if marked > 0 {
            tracing::info!(mounts = marked, event_to_mark_us = woken.elapsed().as_micros() as u64, "{what}");
        }
        r
    }

    /// The open mount tables of the containers' mount namespaces.
    pub fn marker_polls(&self) -> Vec<(u64, super::namespaces::NsPoll)> {
        self.marker.ns_polls()
    }

    /// The mount tables of namespaces `nss` changed: an enforced container's is re-read at
    /// once (a new mount runs unchecked until it is marked); others' with the event spacing.
    pub fn namespaces_changed(&mut self, nss: &[u64], woken: Instant) {
        let polls: HashMap<u64, super::namespaces::NsPoll> = self.marker.ns_polls().into_iter().collect();
        let what = "mounts of an enforced container marked as its mount table changed";
        let spaced = self.log_marked(woken, what, |d| {
            let mut spaced = false;
            for ns in nss {
                match polls.get(ns) {
                    Some(p) if d.marker.enforced(&p.container) => spaced |= !d.marker.reread(*ns),
                    _ => spaced = true,
                }
            }
            spaced
        });
        if spaced {
            self.scan_for_mount_event(woken);
        }
    }

    /// Finds and marks the mount namespaces of every watched container now.
    pub fn scan_namespaces(&mut self) {
        let reg = self.registry.load_full();
        let n = self.marker.scan(&reg);
        if n > 0 {
            tracing::debug!(namespaces = n, "container namespaces marked by scan");
        }
        // Scheduled scans of new containers are only useful while one has no namespace known;
        // a scan deferred by the event spacing is always made.
        let event_deferred = self.last_event_scan.map(|l| l + EVENT_SCAN_SPACING);
        if reg.by_dev.values().all(|c| c.ns_known.load(Ordering::Relaxed)) {
            self.ns_scans.retain(|t| Some(*t) == event_deferred && *t > Instant::now());
        }
    }

    /// Scans if one of the scheduled scans is due, or `periodic` says so.
    pub fn scan_namespaces_if_due(&mut self, periodic: bool) {
        let now = Instant::now();
        let due = self.ns_scans.last().is_some_and(|t| *t <= now);
        while self.ns_scans.last().is_some_and(|t| *t <= now) {
            self.ns_scans.pop();
        }
        if due || periodic {
            self.scan_namespaces();
        }
    }

    /// The mount-event watch of the containers' namespaces, if the kernel has one.
    pub fn ns_watch(&self) -> Option<Arc<driftgate_sys::mountwatch::NsWatch>> {
        self.marker.ns_watch()
    }

    /// When the next scheduled namespace scan is due.
    pub fn next_namespace_scan(&self) -> Option<Instant> {
        self.ns_scans.last().copied()
    }

    /// Where newly marked containers are sent for their metadata.
    pub fn set_metadata_sink(&mut self, tx: crossbeam_channel::Sender<Arc<Container>>) {
        self.meta_tx = Some(tx);
    }

    /// Re-reads the mount table, marks new containers and forgets gone ones. `woken` is when
    /// a mount change was noticed (None for start-up and periodic scans).
    pub fn rescan(&mut self) {
        self.rescan_after(None)
    }

    pub fn rescan_after(&mut self, woken: Option<Instant>) {
        let text = match std::fs::read("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read /proc/self/mountinfo");
                return;
            }
        };
        let cfg = self.cfg.load_full();
        let candidates: HashMap<u64, Candidate> = mountinfo::parse(&text)
            .iter()
            .filter_map(|m| classify(m, &cfg))
            .map(|c| (c.mount.mount_id, c))
            .collect();

        let mut reg = (**self.registry.load()).clone();
        let mut changed = false;

        // Containers whose mount is gone.
        let gone: Vec<u64> = self
            .active
            .iter()
            .filter(|(mid, dev)| candidates.get(mid).is_none_or(|c| c.mount.dev != **dev))
            .map(|(mid, _)| *mid)
            .collect();
        for mid in gone {
            if let Some(dev) = self.active.remove(&mid) {
                if let Some(c) = reg.by_dev.get(&dev) {
                    tracing::info!(container = %c.identity.id, runtime = c.identity.runtime, "container rootfs unmounted");
                }
                self.detached.insert(dev);
            }
        }

        // New containers: verify, publish, then mark.
        let mut to_mark = Vec::new();
        let mut unwatched: Vec<(u64, UnwatchedContainer)> = Vec::new();
        let unwatched_entry = |cand: &Candidate, e: &dyn std::fmt::Display| UnwatchedContainer {
            id: cand.identity.id.clone(),
            runtime: cand.identity.runtime.to_string(),
            rootfs: cand.mount.mountpoint.display().to_string(),
            error: e.to_string(),
        };
        // Fds in use, counted once and then kept up to date as containers are added.
        let mut open_fds: Option<u64> = None;
        for (mid, cand) in &candidates {
            if self.active.contains_key(mid) {
                continue;
            }
            // Its layer directories stay open while it is watched (and its rootfs while it is
            // being marked).
            let needs = cand.layers.lower.len() as u64 + u64::from(cand.layers.upper.is_some()) + 1;
            let open =
                *open_fds.get_or_insert_with(|| driftgate_sys::process::open_fd_count().unwrap_or(0) as u64);
            if open + needs + super::hot::budget::RESERVED > self.nofile {
                let e = format!(
                    "not enough file descriptors: watching it needs {needs}, {open} are in use, and {} of the open-file limit ({}) are kept for decisions (raise LimitNOFILE)",
                    super::hot::budget::RESERVED,
                    self.nofile
                );
                unwatched.push((*mid, unwatched_entry(cand, &e)));
                continue;
            }
            open_fds = Some(open + needs - 1);
            match self.prepare(cand, woken) {
                Ok((container, dirfd)) => {
                    self.detached.remove(&container.dev);
                    reg.by_dev.insert(container.dev, Arc::clone(&container));
                    to_mark.push((container, dirfd));
                    changed = true;
                }
                // The mount is not (or no longer) what was listed: not a container to watch.
                Err(
                    e @ (MarkError::MountChanged { .. }
                    | MarkError::NotOverlay
                    | MarkError::DevChanged { .. }
                    | MarkError::OwnFilesystem),
                ) => {
                    tracing::debug!(mountpoint = %cand.mount.mountpoint.display(), error = %e, "not marking mount");
                }
                // A container that cannot be watched (out of file descriptors, a layer that
                // cannot be opened): counted, logged once, retried on every scan.
                Err(e) => unwatched.push((*mid, unwatched_entry(cand, &e))),
            }
        }
        if changed {
            reg.index_fsids();
            self.registry.store(Arc::new(reg.clone()));
            self.signal_change();
        }
        let mut failed = false;
        for (c, dirfd) in to_mark {
            match self.group.mark_filesystem(dirfd.as_fd()) {
                Ok(()) => {
                    let _ = c.marked_at.set(Instant::now());
                    self.active.insert(c.mount_id, c.dev);
                    self.marker.kernel().add_container(&c);
                    if let Some(tx) = &self.meta_tx {
                        let _ = tx.send(Arc::clone(&c));
                    }
                    let now = Instant::now();
                    self.ns_scans =
                        NS_SCAN_BACKOFF_MS.iter().rev().map(|ms| now + Duration::from_millis(*ms)).collect();
                    tracing::info!(
                        container = %c.identity.id,
                        runtime = c.identity.runtime,
                        rootfs = %c.rootfs.display(),
                        layers = c.layers.lower_paths.len(),
                        "watching container"
                    );
                }
                Err(e) => {
                    reg.by_dev.remove(&c.dev);
                    failed = true;
                    unwatched.push((
                        c.mount_id,
                        UnwatchedContainer {
                            id: c.identity.id.clone(),
                            runtime: c.identity.runtime.to_string(),
                            rootfs: c.rootfs.display().to_string(),
                            error: format!("could not mark its rootfs: {e}"),
                        },
                    ));
                }
            }
            // `dirfd` closes here: holding it would keep the mount busy.
        }

        // Forget detached containers once the kernel dropped their superblock's mark.
        if !self.detached.is_empty() {
            if let Ok(marked) = self.group.marked_superblocks() {
                let marked: HashSet<u64> = marked.into_iter().collect();
                let dead: Vec<u64> = self.detached.iter().copied().filter(|d| !marked.contains(d)).collect();
                for dev in dead {
                    self.detached.remove(&dev);
                    if let Some(c) = reg.by_dev.remove(&dev) {
                        self.marker.forget(&c);
                        tracing::info!(container = %c.identity.id, "container filesystem gone; forgotten");
                    }
                    failed = true;
                }
            }
        }
        if failed {
            reg.index_fsids();
            self.registry.store(Arc::new(reg));
            self.signal_change();
        }
        self.publish_unwatched(unwatched, &candidates);
    }

    /// Logs containers that became unwatched (once each) and those watched again, and
    /// publishes the list for status.
    fn publish_unwatched(
        &mut self,
        now: Vec<(u64, UnwatchedContainer)>,
        candidates: &HashMap<u64, Candidate>,
    ) {
        let ids: HashSet<u64> = now.iter().map(|(m, _)| *m).collect();
        for (mid, u) in &now {
            if !self.unwatched_ids.contains(mid) {
                tracing::error!(
                    container = %u.id,
                    runtime = %u.runtime,
                    rootfs = %u.rootfs,
                    error = %u.error,
                    unwatched = now.len(),
                    "container NOT watched: its execs are not checked (retried on every scan)"
                );
            }
        }
        for mid in self.unwatched_ids.difference(&ids) {
            if self.active.contains_key(mid) {
                let id = candidates.get(mid).map(|c| c.identity.id.clone()).unwrap_or_default();
                tracing::info!(container = %id, "container watched after all");
            }
        }
        self.unwatched_ids = ids;
        if !now.is_empty() || !self.unwatched.load().is_empty() {
            self.unwatched.store(Arc::new(now.into_iter().map(|(_, u)| u).collect()));
        }
    }

    fn prepare(
        &self,
        cand: &Candidate,
        woken: Option<Instant>,
    ) -> Result<(Arc<Container>, std::os::fd::OwnedFd), MarkError> {
        let dirfd = open_dir_readable(&cand.mount.mountpoint)?;
        let found = statx_mount_id(dirfd.as_fd())?;
        if found != cand.mount.mount_id {
            return Err(MarkError::MountChanged { expected: cand.mount.mount_id, found });
        }
        if !is_overlayfs(dirfd.as_fd())? {
            return Err(MarkError::NotOverlay);
        }
        let st = fstat_fd(dirfd.as_fd())?;
        if st.st_dev != cand.mount.dev {
            return Err(MarkError::DevChanged { expected: cand.mount.dev, found: st.st_dev });
        }
        if self.forbidden_devs.contains(&st.st_dev) {
            return Err(MarkError::OwnFilesystem);
        }
        let layers = Layers::open(cand.layers.upper.as_deref(), &cand.layers.lower)?;
        let container = Arc::new(Container {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            identity: cand.identity.clone(),
            mount_id: cand.mount.mount_id,
            dev: st.st_dev,
            fsid: driftgate_sys::fs::overlay_fsid(dirfd.as_fd()),
            rootfs: cand.mount.mountpoint.clone(),
            layers,
            since: SystemTime::now(),
            // Plain overlays have nothing to look up: complete from the start.
            meta: arc_swap::ArcSwap::from_pointee(crate::container::meta::Metadata {
                complete: cand.identity.runtime == "overlay",
                ..Default::default()
            }),
            meta_version: std::sync::atomic::AtomicU64::new(0),
            mount_seen: woken,
            marked_at: std::sync::OnceLock::new(),
            first_exec_seen: std::sync::atomic::AtomicBool::new(false),
            index: Default::default(),
            namespaces: Default::default(),
            ns_known: std::sync::atomic::AtomicBool::new(false),
            pid_known: std::sync::atomic::AtomicBool::new(false),
            ns_probe_after: std::sync::atomic::AtomicU64::new(0),
            findings_suppressed: std::sync::atomic::AtomicU64::new(0),
            memfd_predates: std::sync::atomic::AtomicBool::new(false),
        });
        Ok((container, dirfd))
    }
}

/// The discovery thread: rescans when the mount table changes (or periodically), scans
/// container namespaces when due, and stops when `stop` is kicked.
pub(super) fn spawn_discovery(
    mut disco: Discovery,
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
            // Every container mount namespace's mount table: POLLPRI on any mount, unmount or
            // remount there (remounts raise no fanotify mount event).
            let base = fds.len();
            let polls = disco.marker_polls();
            for (_, p) in &polls {
                fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLPRI));
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
            let ns_changed =
                ns_watch.is_some() && fds.get(3).is_some_and(|f| f.revents().is_some_and(|r| !r.is_empty()));
            let tables_changed: Vec<u64> = polls
                .iter()
                .zip(&fds[base..])
                .filter(|(_, f)| {
                    f.revents().is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR))
                })
                .map(|((ns, _), _)| *ns)
                .collect();
            drop(fds);
            if !tables_changed.is_empty() {
                disco.namespaces_changed(&tables_changed, Instant::now());
            }
            if kicked {
                super::wake::drain_eventfd(&rescan);
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
