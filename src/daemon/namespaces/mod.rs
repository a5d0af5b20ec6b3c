//! Every mount of every watched container: its mount namespaces are found through its
//! processes, and each mount that can hold an executable file gets a `FAN_MARK_MOUNT` mark.
//!
//! How a namespace is found: any process whose root is the container's rootfs. The hot path
//! asks for the namespace of each exec's caller only while a container has none known yet, so
//! a new container's first exec (from its rootfs) is held until its mounts are marked. The
//! discovery thread also scans `/proc` at start-up, shortly after each new container, and on
//! every periodic rescan, which finds namespaces of containers whose first exec came from
//! somewhere else, namespaces created later, and mounts added later.
//!
//! Safety, as for rootfs marks: nothing in the daemon's own or PID 1's mount namespace is ever
//! marked; the process's root must be the container's overlay; every mount is opened through
//! that root (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`), its
//! mount id checked on the opened fd, and the mark placed through that fd, never by path. A
//! mount mark covers that one mount: the host's own view of a volume is never intercepted.

mod memfd;
mod rule;
mod watch;

pub use rule::MemfdRule;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::container::mountinfo;
use crate::container::mounts::{self, ContainerMount, MountState, NsMounts};
use crate::container::{Container, Registry};
use driftgate_sys::fanotify::PermGroup;
use driftgate_sys::fs as sfs;
use driftgate_sys::proc;

/// After a hot-path question about an exec's caller that taught nothing, the next one waits.
pub const PROBE_BACKOFF_MS: u64 = 50;

/// A container mount an event came from.
#[derive(Debug, Clone)]
pub struct MountHit {
    pub container: Arc<Container>,
    pub mount: Arc<ContainerMount>,
}

/// Marked container mounts by mount key (the never-reused mount id where the kernel has one).
pub type MountTable = HashMap<u64, MountHit>;

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("{0}")]
    Sys(#[from] driftgate_sys::SysError),
    #[error("process {0} is gone")]
    Gone(i32),
    #[error("the mount namespace is the host's")]
    HostNamespace,
    #[error("process {0} does not have the container's rootfs as its root")]
    NotInContainer(i32),
}

/// Counters for status.
#[derive(Debug, Default)]
pub struct NsStats {
    pub namespaces: AtomicU64,
    pub mounts_marked: AtomicU64,
    pub mounts_failed: AtomicU64,
    pub scans: AtomicU64,
}

/// Marks the mounts of containers' namespaces; shared by the hot path and discovery.
pub struct Marker {
    group: Arc<PermGroup>,
    table: ArcSwap<MountTable>,
    /// The daemon's own and PID 1's mount namespaces: never marked.
    host_mnt: Vec<u64>,
    /// Serialises marking (the hot path and discovery can both find a namespace).
    lock: std::sync::Mutex<()>,
    pub stats: NsStats,
    enabled: std::sync::atomic::AtomicBool,
    /// Mount events of the containers' namespaces (Linux 6.14+), for mounts made later.
    ns_watch: Option<Arc<driftgate_sys::mountwatch::NsWatch>>,
    /// Namespaces already watched for mount events.
    watched_ns: std::sync::Mutex<HashSet<u64>>,
    /// The daemon's own and PID 1's PID namespaces: `vm.memfd_noexec` is never set there.
    host_pid: Vec<u64>,
    /// Where memfd execution is refused, and the mode and rules that decide it.
    memfd: ArcSwap<MemfdRule>,
    /// The clock of `Container::ns_probe_after`.
    epoch: std::time::Instant,
    /// Where a mount that cannot be marked, or a `vm.memfd_noexec` that cannot be set, is said.
    health: Arc<crate::daemon::health::Health>,
    /// The kernel layer: told of every marked mount and every namespace found.
    kernel: Arc<crate::daemon::kernel::Kernel>,
    /// Where a protection found undone in a container is reported (a finding).
    tamper_sink: std::sync::OnceLock<TamperSink>,
    /// Each known mount namespace's `/proc/<pid>/mountinfo`, open: it polls `POLLPRI` on every
    /// mount, unmount and remount in that namespace (any kernel), for discovery to re-read it.
    mountinfo: std::sync::Mutex<HashMap<u64, NsPoll>>,
}

/// A mount namespace's open mount table, and whose it is.
#[derive(Clone)]
pub struct NsPoll {
    pub fd: Arc<OwnedFd>,
    pub container: Arc<Container>,
}

/// Records that `vm.memfd_noexec` was found lowered (to the value given) in a PID namespace of
/// the container, through one of its processes.
pub type TamperSink = Box<dyn Fn(&Arc<Container>, i32, u8) + Send + Sync>;

impl Marker {
    pub fn new(
        group: Arc<PermGroup>,
        enabled: bool,
        health: Arc<crate::daemon::health::Health>,
        kernel: Arc<crate::daemon::kernel::Kernel>,
    ) -> Marker {
        let me = std::process::id() as i32;
        let host_mnt = [me, 1].iter().filter_map(|p| proc::ns_id(*p, "mnt")).collect();
        let host_pid = [me, 1].iter().filter_map(|p| proc::ns_id(*p, "pid")).collect();
        let ns_watch = match driftgate_sys::mountwatch::NsWatch::open() {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                health.syscall(
                    "fanotify_init(FAN_REPORT_MNT)",
                    Err(format!("{e} (mount events need Linux 6.14)")),
                    "mounts a container makes after it started are found by the periodic scan (discovery.rescan_interval_secs), not at once",
                    false,
                );
                None
            }
        };
        Marker {
            ns_watch,
            watched_ns: Default::default(),
            host_pid,
            memfd: ArcSwap::from_pointee(MemfdRule::default()),
            epoch: std::time::Instant::now(),
            group,
            table: ArcSwap::from_pointee(HashMap::new()),
            host_mnt,
            lock: std::sync::Mutex::new(()),
            stats: NsStats::default(),
            enabled: std::sync::atomic::AtomicBool::new(enabled),
            health,
            kernel,
            tamper_sink: std::sync::OnceLock::new(),
            mountinfo: Default::default(),
        }
    }

    /// The mount-event watch of containers' namespaces, for discovery to poll.
    pub fn ns_watch(&self) -> Option<Arc<driftgate_sys::mountwatch::NsWatch>> {
        self.ns_watch.clone()
    }

    /// What decides `vm.memfd_noexec` (at start and on reload; applied on the next scan).
    pub fn set_memfd_rule(&self, rule: MemfdRule) {
        self.memfd.store(Arc::new(rule));
    }

    /// What decides `vm.memfd_noexec` and the kernel layer's policy now.
    pub fn rule(&self) -> Arc<MemfdRule> {
        self.memfd.load_full()
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The container mount an exec event's file is on, if it is a marked container mount.
    /// One `statx`; only asked for files that are not on a container rootfs.
    /// Marks already placed stay after `[mounts] enabled = false` is reloaded (a mark cannot be
    /// removed without its mount), so a disabled marker lets their execs through here.
    pub fn lookup(&self, fd: BorrowedFd<'_>) -> Option<MountHit> {
        if !self.enabled() {
            return None;
        }
        let key = sfs::statx_mount_key(fd).ok()?;
        self.table.load().get(&key).cloned()
    }

    /// The marked container mount with key `key` (its unique id), whatever the marker's switch.
    pub fn by_key(&self, key: u64) -> Option<MountHit> {
        self.table.load().get(&key).cloned()
    }

    /// Hot path, for a container with no mount or PID namespace known yet: if thread `tid`
    /// is a process of the container (its root is the container's rootfs), marks the mounts of
    /// its mount namespace and applies `vm.memfd_noexec` to its PID namespace, before the exec
    /// is answered. Asking costs a few µs (new `/proc` entries for each new pid): a caller that
    /// is not in the container (an exec through the host-side mountpoint) puts the next question
    /// off by [`PROBE_BACKOFF_MS`]; scans cover that time.
    pub fn on_event(&self, c: &Arc<Container>, tid: i32) {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < c.ns_probe_after.load(Ordering::Relaxed) {
            return;
        }
        if proc::root_dev_ino(tid).map(|(dev, _)| dev) != Some(c.dev) {
            c.ns_probe_after.store(now + PROBE_BACKOFF_MS, Ordering::Relaxed);
            return;
        }
        if self.enabled() && !c.ns_known.load(Ordering::Relaxed) {
            match proc::ns_id(tid, "mnt") {
                // Sharing the host's mount namespace with the container's root: chroot-like,
                // nothing of the container's own to mark.
                Some(ns) if self.host_mnt.contains(&ns) => {}
                Some(ns) => {
                    if let Err(e) = self.mark_namespace(c, tid, ns) {
                        tracing::debug!(container = %c.id(), tid, error = %e, "namespace of an exec not marked");
                    }
                }
                None => {}
            }
        }
        if !c.pid_known.load(Ordering::Relaxed) {
            self.apply_memfd_through(c, tid, false);
            if proc::ns_id(tid, "pid").is_some_and(|ns| self.host_pid.contains(&ns)) {
                // A hostPID container: nothing can be set for it, and asking on every exec
                // would cost each one. Scans still find any PID namespace it makes later.
                c.pid_known.store(true, Ordering::Relaxed);
            }
        }
        if !c.ns_known.load(Ordering::Relaxed) || !c.pid_known.load(Ordering::Relaxed) {
            // A process of the container, but nothing could be learnt from it (a namespace
            // shared with the host): do not ask on every exec.
            c.ns_probe_after.store(now + PROBE_BACKOFF_MS, Ordering::Relaxed);
        }
    }

    /// Discovery: finds every mount and PID namespace of every watched container through
    /// `/proc`, marks new mount namespaces and re-reads known ones (mounts added or removed
    /// since), and applies `vm.memfd_noexec` to each PID namespace (the rule may have changed:
    /// metadata arrived, a reload). Returns how many mount namespaces were newly marked.
    pub fn scan(&self, reg: &Registry) -> usize {
        if reg.by_dev.is_empty() {
            return 0;
        }
        self.stats.scans.fetch_add(1, Ordering::Relaxed);
        // (container dev, namespace) -> one process in it.
        let mut mnt: HashMap<(u64, u64), i32> = HashMap::new();
        let mut pid_ns: HashMap<(u64, u64), i32> = HashMap::new();
        for pid in proc::all_pids() {
            let Some((dev, _)) = proc::root_dev_ino(pid) else { continue };
            if !reg.by_dev.contains_key(&dev) {
                continue;
            }
            if let Some(ns) = proc::ns_id(pid, "mnt").filter(|ns| !self.host_mnt.contains(ns)) {
                mnt.entry((dev, ns)).or_insert(pid);
            }
            if let Some(ns) = proc::ns_id(pid, "pid") {
                pid_ns.entry((dev, ns)).or_insert(pid);
            }
        }
        // Mount tables of namespaces no process of a container is in any more: closed (an open
        // one keeps its namespace, and with it the container's rootfs, alive).
        let live: HashSet<u64> = mnt.keys().map(|(_, ns)| *ns).collect();
        if let Ok(mut m) = self.mountinfo.lock() {
            m.retain(|ns, _| live.contains(ns));
        }
        let mut new = 0;
        if self.enabled() {
            for ((dev, ns), pid) in mnt {
                let Some(c) = reg.by_dev.get(&dev) else { continue };
                let known = c.namespaces.lock().map(|n| n.mnt.contains_key(&ns)).unwrap_or(false);
                match self.mark_namespace(c, pid, ns) {
                    Ok(_) if !known => new += 1,
                    Ok(_) => {}
                    Err(e) => tracing::debug!(container = %c.id(), pid, error = %e, "namespace not marked"),
                }
            }
        }
        for ((dev, _), pid) in pid_ns {
            if let Some(c) = reg.by_dev.get(&dev) {
                self.apply_memfd_through(c, pid, true);
            }
        }
        new
    }

    /// Re-reads the mount namespaces already known (a mount event came from one of them),
    /// through the process each was found with. `false` when one of those processes is gone:
    /// then a full [`Marker::scan`] is needed.
    pub fn rescan_known(&self, reg: &Registry) -> bool {
        if !self.enabled() {
            return true;
        }
        let mut ok = true;
        for c in reg.by_dev.values() {
            let known: Vec<(u64, i32)> = c
                .namespaces
                .lock()
                .map(|n| n.mnt.iter().map(|(ns, m)| (*ns, m.pid)).collect())
                .unwrap_or_default();
            for (ns, pid) in known {
                if self.mark_namespace(c, pid, ns).is_err() {
                    ok = false;
                }
            }
        }
        ok
    }

    /// Applies `vm.memfd_noexec` to the PID namespace of process `pid` of container `c`.
    /// `verify`: read the value back where it was set to 2 (a scan; not on the hot path).
    fn apply_memfd_through(&self, c: &Arc<Container>, pid: i32, verify: bool) {
        let Some(dir) = proc::proc_dir() else { return };
        let Ok(pdir) = nix::fcntl::openat(
            dir,
            pid.to_string().as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            return;
        };
        // The process must (still) be the container's: its root is the container's rootfs.
        let root_dev =
            nix::sys::stat::fstatat(&pdir, "root", nix::fcntl::AtFlags::empty()).map(|st| st.st_dev);
        if root_dev != Ok(c.dev) {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_memfd(c, &pdir, pid, verify);
    }

    /// Where tampering found by a scan is reported (set once, after the hot path's state).
    pub fn set_tamper_sink(&self, sink: TamperSink) {
        let _ = self.tamper_sink.set(sink);
    }

    /// The kernel layer this marker tells.
    pub fn kernel(&self) -> &Arc<crate::daemon::kernel::Kernel> {
        &self.kernel
    }

    /// Drops the table entries of a container that is forgotten (and its kernel-layer ones).
    pub fn forget(&self, c: &Container) {
        self.kernel.forget(c);
        if let Ok(mut m) = self.mountinfo.lock() {
            m.retain(|_, p| p.container.generation != c.generation);
        }
        if let (Ok(ns), Ok(mut seen)) = (c.namespaces.lock(), self.watched_ns.lock()) {
            for k in ns.mnt.keys() {
                seen.remove(k);
            }
        }
        self.table.rcu(|t| {
            let mut t = (**t).clone();
            t.retain(|_, hit| hit.container.generation != c.generation);
            t
        });
    }

    /// Marks (or re-reads) mount namespace `ns` of container `c` through process `pid`.
    /// Mounts marked before are kept; new ones are marked; ones gone are dropped.
    pub fn mark_namespace(&self, c: &Arc<Container>, pid: i32, ns: u64) -> Result<usize, NsError> {
        if self.host_mnt.contains(&ns) {
            return Err(NsError::HostNamespace);
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Everything is read relative to the process's /proc directory, opened once: if the
        // process exits and its pid is reused, the reads fail rather than describe another one.
        let pdir = nix::fcntl::openat(
            proc::proc_dir().ok_or(NsError::Gone(pid))?,
            pid.to_string().as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|_| NsError::Gone(pid))?;
        let root = nix::fcntl::openat(
            &pdir,
            "root",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|_| NsError::Gone(pid))?;
        if sfs::fstat_fd(root.as_fd())?.st_dev != c.dev {
            return Err(NsError::NotInContainer(pid));
        }
        let text = read_at(&pdir, "mountinfo").ok_or(NsError::Gone(pid))?;
        let ns_now = nix::fcntl::readlinkat(&pdir, "ns/mnt")
            .ok()
            .and_then(|l| proc::parse_ns_link(l.as_encoded_bytes()));
        if ns_now != Some(ns) {
            return Err(NsError::Gone(pid));
        }
        self.watch_mount_events(&pdir, ns, c);
        let entries = mountinfo::parse(&text);
        let previous: HashMap<u64, Arc<ContainerMount>> = c
            .namespaces
            .lock()
            .ok()
            .and_then(|n| {
                n.mnt.get(&ns).map(|m| m.mounts.iter().map(|x| (x.mount_id, Arc::clone(x))).collect())
            })
            .unwrap_or_default();
        let mut mounts = Vec::with_capacity(entries.len());
        let mut marked_now = Vec::new();
        for e in &entries {
            if let Some(p) = previous.get(&e.mount_id).filter(|p| p.dev == e.dev) {
                // A skipped mount is planned again: its flags may have changed (a remount to
                // exec raises no mount event, and must not leave it unmarked).
                if p.state == MountState::Marked
                    || (matches!(p.state, MountState::Skipped(_)) && mounts::plan(e, c.dev).is_err())
                {
                    mounts.push(Arc::clone(p));
                    continue;
                }
            }
            let m = Arc::new(self.mark_one(root.as_fd(), e, c.dev));
            match &m.state {
                MountState::Marked => {
                    self.stats.mounts_marked.fetch_add(1, Ordering::Relaxed);
                    marked_now.push(Arc::clone(&m));
                    tracing::info!(
                        container = %c.id(),
                        mountpoint = %String::from_utf8_lossy(&m.mountpoint),
                        fstype = %m.fstype,
                        "watching container mount"
                    );
                }
                MountState::Failed(err) => {
                    self.stats.mounts_failed.fetch_add(1, Ordering::Relaxed);
                    let detail = || {
                        format!(
                            "container {}: {} ({}): {err}",
                            c.id(),
                            driftgate_core::util::printable(&m.mountpoint),
                            m.fstype
                        )
                    };
                    // A mount can go away, or its path change, between the read of the mount
                    // table and the open: a failure that holds at the next scan is a hole.
                    if previous.get(&e.mount_id).is_some_and(|p| matches!(p.state, MountState::Failed(_))) {
                        self.health.note(crate::daemon::health::Problem::MountNotMarked, detail);
                    } else {
                        tracing::warn!(detail = %detail(), "container mount not marked; trying again at the next scan");
                    }
                }
                MountState::Skipped(_) | MountState::Covered(_) => {}
            }
            mounts.push(m);
        }
        let present: HashSet<u64> = mounts.iter().filter_map(|m| m.key).collect();
        let gone: Vec<u64> =
            previous.values().filter_map(|p| p.key).filter(|k| !present.contains(k)).collect();
        // The kernel layer learns of the mounts before of the namespaces (`scan` marks mount
        // namespaces first): an enforced container's new mount is refused until it is marked.
        for m in &marked_now {
            if let Some(k) = m.key {
                self.kernel.add_mount(k, false);
            }
        }
        for k in &gone {
            self.kernel.remove_mount(*k);
        }
        if !marked_now.is_empty() || !gone.is_empty() {
            self.table.rcu(|t| {
                let mut t = (**t).clone();
                for k in &gone {
                    t.remove(k);
                }
                for m in &marked_now {
                    if let Some(k) = m.key {
                        t.insert(k, MountHit { container: Arc::clone(c), mount: Arc::clone(m) });
                    }
                }
                t
            });
        }
        let n = marked_now.len();
        if let Ok(mut st) = c.namespaces.lock() {
            if st.mnt.insert(ns, NsMounts { pid, mounts }).is_none() {
                self.stats.namespaces.fetch_add(1, Ordering::Relaxed);
                tracing::info!(container = %c.id(), pid, mnt_ns = ns, "container mount namespace found");
            }
        }
        c.ns_known.store(true, Ordering::Relaxed);
        Ok(n)
    }

    /// Opens one mount through the container's root, checks it is that mount, and marks it.
    fn mark_one(&self, root: BorrowedFd<'_>, e: &mountinfo::MountEntry, rootfs_dev: u64) -> ContainerMount {
        use std::os::unix::ffi::OsStrExt;
        let mut m = ContainerMount {
            mount_id: e.mount_id,
            key: None,
            dev: e.dev,
            mountpoint: e.mountpoint.as_os_str().as_bytes().to_vec(),
            fstype: e.fstype.clone(),
            source: e.source.clone(),
            root: e.root.clone(),
            state: MountState::Marked,
        };
        if let Err(skip) = mounts::plan(e, rootfs_dev) {
            m.state = MountState::Skipped(skip);
            return m;
        }
        match open_mount(root, &m.mountpoint, e.mount_id) {
            Ok((fd, key)) => {
                m.key = Some(key);
                if let Err(err) = self.group.mark_mount(fd.as_fd()) {
                    m.state = MountState::Failed(err.to_string());
                }
            }
            Err(OpenMount::Covered(found)) => {
                m.state = MountState::Covered(format!("the path leads to mount {found}, not {}", e.mount_id))
            }
            Err(OpenMount::NotAFile) => m.state = MountState::Skipped(mounts::Skip::NotAFile),
            Err(OpenMount::Failed(err)) => m.state = MountState::Failed(err),
        }
        m
    }
}

/// Opens the mount at `mountpoint` (as the container sees it) through the container's root,
/// `O_PATH` (never for reading: a bind-mounted file on a mount whose opens this daemon already
/// holds would wait for the daemon's own answer), and checks that the fd is on the mount with
/// legacy id `mount_id`. Returns the fd and the mount's key.
fn open_mount(root: BorrowedFd<'_>, mountpoint: &[u8], mount_id: u64) -> Result<(OwnedFd, u64), OpenMount> {
    let failed = |e: driftgate_sys::SysError| OpenMount::Failed(e.to_string());
    let fd = sfs::open_in_root(root, mountpoint, true).map_err(failed)?;
    let st = sfs::fstat_fd(fd.as_fd()).map_err(failed)?;
    // Directories and regular files (a bind-mounted file such as /etc/hosts); a device,
    // socket or FIFO bind is never marked, and nothing can be executed from one.
    if !sfs::is_dir(&st) && !sfs::is_regular(&st) {
        return Err(OpenMount::NotAFile);
    }
    let (legacy, unique) = sfs::statx_mount_ids(fd.as_fd()).map_err(failed)?;
    if legacy != mount_id {
        return Err(OpenMount::Covered(legacy));
    }
    Ok((fd, unique.unwrap_or(legacy)))
}

/// Why a mount could not be opened through its mountpoint.
enum OpenMount {
    /// The mountpoint leads to this other mount (legacy id): the mount is hidden under it.
    Covered(u64),
    /// A device, socket or FIFO bound onto a file.
    NotAFile,
    Failed(String),
}

fn read_at(dir: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let fd = nix::fcntl::openat(
        dir,
        name,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut out = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut out).ok()?;
    Some(out)
}
