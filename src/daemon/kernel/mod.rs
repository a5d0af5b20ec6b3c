//! The kernel layer in the daemon: where the kernel has BPF LSM, the program of
//! `driftgate-bpf` verifies at the moment of use what the daemon decided (fanotify decides in
//! user space; the program refuses, in an enforced container, anything that is not the image's
//! own or decided since: a mount the daemon never saw, a memfd, a file changed after its
//! decision, and it keeps doing so while the daemon is down).
//!
//! This module tells the program about containers (their rootfs superblock, PID namespaces and
//! own cgroups, with the container's policy), marked mounts, and files allowed, and turns
//! what the program reports into findings (`events`). Where the kernel has no BPF LSM (or
//! refuses to load the program), everything here is a no-op and `status` says why.

pub mod events;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use driftgate_bpf::{policy, FileKey, FileVer, Maps};

use crate::container::Container;
use driftgate_sys::fs::FileId;

/// How many scans look for a container's own cgroup before it is told by its PID namespaces
/// alone.
const CGROUP_TRIES: u32 = 5;

/// The daemon's side of the kernel layer.
pub struct Kernel {
    /// The loaded program (its links are held here while the daemon runs).
    layer: Option<driftgate_bpf::Layer>,
    /// `on`, or why not.
    pub state: String,
    pub pinned: Option<PathBuf>,
    /// The program was taken over from a previous daemon (pinned links), not attached anew.
    pub reused: bool,
    reg: Mutex<Registered>,
    /// Files already put in the decided-files map, in the version put there.
    allowed: Mutex<HashSet<(u32, u64, i128, u64)>>,
    pub stats: KernelStats,
    events: Mutex<Option<driftgate_bpf::Events>>,
}

#[derive(Debug, Default)]
pub struct KernelStats {
    /// Reports read from the program, and those that named no known container.
    pub events: AtomicU64,
    pub unattributed: AtomicU64,
    pub files_allowed: AtomicU64,
}

/// What is registered with the program, by container generation.
#[derive(Default)]
struct Registered {
    containers: HashMap<u64, Arc<Container>>,
    rootfs: HashMap<u64, u32>,
    /// PID namespaces: container generation, policy, and the start time of the namespace's init.
    pidns: HashMap<u32, (u64, u32, u64)>,
    cgroups: HashMap<u64, (u64, u32)>,
    /// How many times each container's cgroup was looked at without being registered (a
    /// container's cgroup may hold its runtime's process for a moment as it starts).
    cgroup_tries: HashMap<u64, u32>,
    /// Why a container's cgroup was not registered.
    cgroup_notes: HashMap<u64, String>,
    mounts: HashSet<u64>,
    /// Registrations a previous daemon left (pinned maps), dropped by [`Kernel::reconcile`]
    /// unless found again.
    stale: (Vec<u32>, Vec<u64>, Vec<u32>, Vec<u64>),
}

impl Kernel {
    /// A kernel layer that is not in use, and why.
    pub fn off(why: impl Into<String>) -> Kernel {
        Kernel {
            layer: None,
            state: format!("off: {}", why.into()),
            pinned: None,
            reused: false,
            reg: Mutex::default(),
            allowed: Mutex::default(),
            stats: KernelStats::default(),
            events: Mutex::new(None),
        }
    }

    /// Loads (or takes over) the program as `[kernel]` says; off, with the reason, where it
    /// cannot be.
    pub fn start(cfg: &driftgate_core::config::KernelConfig) -> Kernel {
        if cfg.enabled == driftgate_core::config::KernelLayer::Off {
            return Self::off("[kernel] enabled = \"off\"");
        }
        let mut layer = match driftgate_bpf::Layer::start(&cfg.pin_dir, cfg.persist) {
            Ok(l) => l,
            Err(e) => return Self::off(e.to_string()),
        };
        let events = layer.take_events();
        let stale = layer.maps.registered();
        let k = Kernel {
            state: "on".into(),
            pinned: layer.pinned.clone(),
            reused: layer.reused,
            reg: Mutex::new(Registered { stale, ..Registered::default() }),
            allowed: Mutex::default(),
            stats: KernelStats::default(),
            events: Mutex::new(events),
            layer: Some(layer),
        };
        k.update_config();
        k
    }

    fn maps(&self) -> Option<&Maps> {
        self.layer.as_ref().map(|l| &l.maps)
    }

    pub fn on(&self) -> bool {
        self.layer.is_some()
    }

    /// The program's reports, once (for the thread that reads them).
    pub fn take_events(&self) -> Option<driftgate_bpf::Events> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Switches the program's checks on once a container is registered, and hands it
    /// overlayfs's layout (read from the kernel's or the overlay module's BTF, which exists
    /// once overlayfs is loaded, that is once a container is).
    fn update_config(&self) {
        let Some(maps) = self.maps() else { return };
        let mut c = maps.config().unwrap_or_default();
        let (any, cgroup_only) = self
            .reg
            .lock()
            .map(|r| {
                let any = !r.pidns.is_empty()
                    || !r.cgroups.is_empty()
                    || !r.stale.0.is_empty()
                    || !r.stale.1.is_empty();
                let with_ns: HashSet<u64> = r.pidns.values().map(|x| x.0).collect();
                (any, r.cgroups.values().any(|(g, _)| !with_ns.contains(g)) || !r.stale.1.is_empty())
            })
            .unwrap_or((false, false));
        c.on = u32::from(any);
        c.cg_ancestors = u32::from(cgroup_only);
        c.tick_ns = driftgate_sys::pidns::tick_ns();
        if c.ovl_ok == 0 {
            if let Some(v) = driftgate_bpf::btf::member_offsets(
                std::path::Path::new("/sys/kernel/btf"),
                "overlay",
                "ovl_inode",
                &["vfs_inode", "__upperdentry"],
            ) {
                c.ovl_ok = 1;
                c.ovl_vfs_inode = v[0];
                c.ovl_upperdentry = v[1];
            }
        }
        if let Err(e) = maps.set_config(&c) {
            tracing::error!(error = %e, "kernel layer: could not set the program's configuration");
        }
    }

    /// Whether overlayfs's layout is known to the program (image inodes told from others).
    pub fn overlay_known(&self) -> bool {
        self.maps().and_then(|m| m.config().ok()).is_some_and(|c| c.ovl_ok == 1)
    }

    /// A container is watched: its rootfs superblock.
    pub fn add_container(&self, c: &Arc<Container>) {
        let Some(maps) = self.maps() else { return };
        let dev = driftgate_bpf::kernel_dev(c.dev);
        if let Err(e) = maps.add_rootfs(dev) {
            tracing::error!(container = %c.id(), error = %e, "kernel layer: rootfs not registered");
            return;
        }
        if let Ok(mut r) = self.reg.lock() {
            r.containers.insert(c.generation, Arc::clone(c));
            r.rootfs.insert(c.generation, dev);
            r.stale.2.retain(|d| *d != dev);
        }
        self.update_config();
    }

    /// A PID namespace of container `c` (never the host's; `None` for a process of a `hostPID`
    /// container), found through its process `pid`, and the container's policy (see
    /// `MemfdRule::kernel_policy` in the namespaces module); also the container's own
    /// cgroup, looked for once.
    pub fn add_namespace(&self, c: &Arc<Container>, pidns: Option<u64>, pid: i32, policy: u32) {
        let Some(maps) = self.maps() else { return };
        let inum = pidns.map(|n| n as u32);
        let (known, check_cgroup) = match self.reg.lock() {
            Ok(mut r) => {
                r.containers.entry(c.generation).or_insert_with(|| Arc::clone(c));
                if let Some(i) = inum {
                    r.stale.0.retain(|x| *x != i);
                }
                let known = inum
                    .is_none_or(|i| r.pidns.get(&i).is_some_and(|x| (x.0, x.1) == (c.generation, policy)));
                let registered = r.cgroups.values().any(|(g, _)| *g == c.generation);
                let tries = r.cgroup_tries.entry(c.generation).or_default();
                let check = !registered && *tries < CGROUP_TRIES;
                if check {
                    *tries += 1;
                }
                (known, check)
            }
            Err(_) => return,
        };
        if let (false, Some(inum)) = (known, inum) {
            let init_start =
                self.reg.lock().ok().and_then(|r| r.pidns.get(&inum).map(|x| x.2)).filter(|s| *s != 0);
            let Some(init_start) = init_start
                .or_else(|| driftgate_sys::pidns::init_of(pid).and_then(driftgate_sys::pidns::start_ticks))
            else {
                tracing::debug!(container = %c.id(), pid, "kernel layer: the PID namespace's init is gone");
                return;
            };
            let v = driftgate_bpf::PidNs { policy, pad: 0, init_start };
            match maps.set_pidns(inum, &v) {
                Ok(()) => {
                    if let Ok(mut r) = self.reg.lock() {
                        r.pidns.insert(inum, (c.generation, policy, init_start));
                    }
                    tracing::info!(container = %c.id(), pid_ns = inum, policy, "kernel layer: container PID namespace registered");
                }
                Err(e) => {
                    tracing::error!(container = %c.id(), error = %e, "kernel layer: PID namespace not registered")
                }
            }
        }
        if check_cgroup {
            self.add_cgroup(c, pid, policy);
        }
        self.update_cgroup_policy(c, policy);
        self.update_config();
    }

    /// The policy of a container's registered cgroup, when it changed.
    fn update_cgroup_policy(&self, c: &Container, policy: u32) {
        let Some(maps) = self.maps() else { return };
        let Ok(mut r) = self.reg.lock() else { return };
        for (id, (g, p)) in r.cgroups.iter_mut() {
            if *g == c.generation && *p != policy && maps.set_cgroup(*id, policy).is_ok() {
                *p = policy;
            }
        }
    }

    /// The container's cgroup v2, when it is provably the container's own (every process in
    /// it and below in the container's PID namespaces; not the daemon's; not a root cgroup):
    /// `hostPID` containers are covered through it.
    fn add_cgroup(&self, c: &Arc<Container>, pid: i32, policy: u32) {
        let Some(maps) = self.maps() else { return };
        let top = driftgate_sys::proc::pid_ns_chain(pid).and_then(|c| c.last().copied());
        let id = match crate::container::cgroup::own_v2_id(pid, top, c.dev) {
            Ok(id) => id,
            Err(why) => {
                tracing::info!(container = %c.id(), why = %why, "kernel layer: the container's cgroup is not its own; it is told by its PID namespaces");
                if let Ok(mut r) = self.reg.lock() {
                    r.cgroup_notes.insert(c.generation, why);
                }
                return;
            }
        };
        if maps.set_cgroup(id, policy).is_ok() {
            if let Ok(mut r) = self.reg.lock() {
                r.cgroups.insert(id, (c.generation, policy));
                r.stale.1.retain(|x| *x != id);
            }
            tracing::info!(container = %c.id(), cgroup_id = id, policy, "kernel layer: container cgroup registered");
        }
    }

    /// The policy of every registered container again (a reload changed the mode or rules).
    pub fn repolicy(&self, policy_of: impl Fn(&Container) -> u32) {
        let Some(maps) = self.maps() else { return };
        let Ok(mut r) = self.reg.lock() else { return };
        let containers = r.containers.clone();
        for (inum, (gen, p, init_start)) in r.pidns.iter_mut() {
            if let Some(c) = containers.get(gen) {
                let new = policy_of(c);
                let v = driftgate_bpf::PidNs { policy: new, pad: 0, init_start: *init_start };
                if new != *p && maps.set_pidns(*inum, &v).is_ok() {
                    *p = new;
                }
            }
        }
        for (id, (gen, p)) in r.cgroups.iter_mut() {
            if let Some(c) = containers.get(gen) {
                let new = policy_of(c);
                if new != *p && maps.set_cgroup(*id, new).is_ok() {
                    *p = new;
                }
            }
        }
    }

    /// The kernel policy registered for container `c` (0: none).
    pub fn policy_of(&self, c: &Container) -> u32 {
        self.reg
            .lock()
            .ok()
            .and_then(|r| {
                r.pidns
                    .values()
                    .map(|x| (x.0, x.1))
                    .chain(r.cgroups.values().copied())
                    .find(|(g, _)| *g == c.generation)
                    .map(|x| x.1)
            })
            .unwrap_or(0)
    }

    /// Whether the program checks container `c`'s executable mappings (enforced, with
    /// `[libraries]`): a library changed after it was decided is refused at its mapping.
    pub fn checks_mappings(&self, c: &Container) -> bool {
        let p = self.policy_of(c);
        p & policy::ENFORCE != 0 && p & policy::LIBRARIES != 0
    }

    /// Whether container `c` is registered (its execs are seen by the program).
    pub fn covers(&self, c: &Container) -> bool {
        self.policy_of(c) != 0
    }

    /// A container is gone: everything registered for it.
    pub fn forget(&self, c: &Container) {
        let Some(maps) = self.maps() else { return };
        let Ok(mut r) = self.reg.lock() else { return };
        r.containers.remove(&c.generation);
        if let Some(dev) = r.rootfs.remove(&c.generation) {
            maps.remove_rootfs(dev);
        }
        let gen = c.generation;
        r.pidns.retain(|inum, (g, _, _)| {
            let keep = *g != gen;
            if !keep {
                maps.remove_pidns(*inum);
            }
            keep
        });
        r.cgroups.retain(|id, (g, _)| {
            let keep = *g != gen;
            if !keep {
                maps.remove_cgroup(*id);
            }
            keep
        });
        r.cgroup_tries.remove(&gen);
        r.cgroup_notes.remove(&gen);
    }

    /// A mount marked (its unique id), `allowed` when a rule lets every file on it run.
    pub fn add_mount(&self, key: u64, allowed: bool) {
        let Some(maps) = self.maps() else { return };
        let flags = driftgate_bpf::mount::MARKED | if allowed { driftgate_bpf::mount::ALLOWED } else { 0 };
        if maps.set_mount(key, flags).is_ok() {
            if let Ok(mut r) = self.reg.lock() {
                r.mounts.insert(key);
                r.stale.3.retain(|k| *k != key);
            }
        }
    }

    pub fn remove_mount(&self, key: u64) {
        let Some(maps) = self.maps() else { return };
        maps.remove_mount(key);
        if let Ok(mut r) = self.reg.lock() {
            r.mounts.remove(&key);
        }
    }

    /// A file of container `c` decided and allowed, in version `id`: a writable-layer file
    /// (`mount`: false; keyed by the container's overlay superblock) or a mount's. The program
    /// lets only such files (and the image's own inodes) run and map executable in an enforced
    /// container. Put in before the exec is answered.
    pub fn allow(&self, c: &Container, id: &FileId, on_mount: bool) {
        let Some(maps) = self.maps() else { return };
        let dev = driftgate_bpf::kernel_dev(if on_mount { id.dev } else { c.dev });
        let seen = (dev, id.ino, id.ctime_ns, id.size);
        if self.allowed.lock().is_ok_and(|a| a.contains(&seen)) {
            return;
        }
        let key = FileKey { dev, pad: 0, ino: id.ino };
        let ver = FileVer {
            ctime_sec: id.ctime_ns.div_euclid(1_000_000_000) as i64,
            ctime_nsec: id.ctime_ns.rem_euclid(1_000_000_000) as u32,
            pad: 0,
            size: id.size as i64,
        };
        match maps.allow_file(&key, &ver) {
            Ok(()) => {
                self.stats.files_allowed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut a) = self.allowed.lock() {
                    if a.len() > 65536 {
                        a.clear();
                    }
                    a.insert(seen);
                }
            }
            Err(e) => tracing::warn!(error = %e, "kernel layer: decided file not registered"),
        }
    }

    /// After the first full discovery: drops what a previous daemon registered for containers,
    /// namespaces and mounts that are gone (a previous daemon's registrations are kept until
    /// then, so that nothing is unprotected while this one starts).
    pub fn reconcile(&self) {
        let Some(maps) = self.maps() else { return };
        let Ok(mut r) = self.reg.lock() else { return };
        let (pidns, cgroups, rootfs, mounts) = std::mem::take(&mut r.stale);
        let n = pidns.len() + cgroups.len() + rootfs.len() + mounts.len();
        for i in pidns {
            maps.remove_pidns(i);
        }
        for i in cgroups {
            maps.remove_cgroup(i);
        }
        for d in rootfs {
            maps.remove_rootfs(d);
        }
        for m in mounts {
            maps.remove_mount(m);
        }
        drop(r);
        if n > 0 {
            tracing::info!(entries = n, "kernel layer: registrations of containers that are gone dropped");
        }
        self.update_config();
    }

    /// The container a report is about: by the reporting task's PID namespaces (it may be in
    /// one nested in the container's), else by its cgroup.
    pub fn container_of(&self, tgid: i32, pidns: u32, cgroup: u64) -> Option<Arc<Container>> {
        let r = self.reg.lock().ok()?;
        let by_gen = |g: &u64| r.containers.get(g).cloned();
        if let Some((g, _, _)) = r.pidns.get(&pidns) {
            return by_gen(g);
        }
        if let Some(chain) = driftgate_sys::proc::pid_ns_chain(tgid) {
            if let Some(c) =
                chain.iter().find_map(|ns| r.pidns.get(&(*ns as u32)).and_then(|(g, _, _)| by_gen(g)))
            {
                return Some(c);
            }
        }
        r.cgroups.get(&cgroup).and_then(|(g, _)| by_gen(g))
    }

    /// Counts for `status`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        self.reg
            .lock()
            .map(|r| (r.rootfs.len(), r.pidns.len(), r.cgroups.len(), r.mounts.len()))
            .unwrap_or_default()
    }

    /// Each attached program's run statistics (see [`status::ProgramRuns`]).
    pub fn run_stats(&self) -> Vec<driftgate_bpf::RunStats> {
        self.layer.as_ref().map(|l| l.run_stats()).unwrap_or_default()
    }

    pub fn program_stats(&self) -> driftgate_bpf::Stats {
        self.maps().map(|m| m.stats()).unwrap_or_default()
    }
}

/// The kernel policy bits for a container decision: `enforce` refuses, else reports; `fileless`
/// (memfd execution refused there too); `libraries` (executable mappings checked too).
pub fn policy_bits(enforce: bool, audit: bool, fileless: bool, libraries: bool) -> u32 {
    match (enforce, audit) {
        (true, _) => {
            policy::ENFORCE
                | if fileless { policy::FILELESS } else { 0 }
                | if libraries { policy::LIBRARIES } else { 0 }
        }
        (false, true) => policy::AUDIT,
        _ => 0,
    }
}
