//! driftgate's kernel layer: the BPF LSM program of `bpf/driftgate.bpf.c` (compiled by
//! `scripts/build-bpf.sh`; the object is committed and embedded), and the daemon's side of it.
//!
//! The daemon decides in user space (fanotify); the program verifies at the moment of use
//! (`bprm_check_security`, `mmap_file`, `file_mprotect`) that what runs in an enforced container
//! is what was decided: see the program's header comment. [`Layer::start`] loads and attaches
//! it, or, where a previous daemon left it pinned (it keeps holding while no daemon runs),
//! takes over the pinned links and maps. [`Maps`] is how the daemon tells the program about
//! containers, mounts and decided files; [`Events`] is what the program reports.
//!
//! With `unsafe` (the `bpf(2)` map calls, `Pod` for the shared types), like `driftgate-sys`;
//! every block says why it is sound.

pub mod btf;
pub mod event;
mod sys;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{MapData, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::Lsm;

use sys::{bpf, get_next_key, lookup, prog_run_stats, remove, update, MapElem, BPF_MAP_LOOKUP_ELEM};

pub use event::Event;

/// The program, as `scripts/build-bpf.sh` compiled it.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/driftgate.bpf.o");

/// The hooks, by program name.
const PROGRAMS: [(&str, &str); 3] =
    [("dg_exec", "bprm_check_security"), ("dg_mmap", "mmap_file"), ("dg_mprotect", "file_mprotect")];

/// A container's policy bits (values of the pid-namespace and cgroup maps).
pub mod policy {
    /// Report what fanotify cannot see; refuse nothing.
    pub const AUDIT: u32 = 1;
    /// Refuse anything but what was decided.
    pub const ENFORCE: u32 = 2;
    /// With `ENFORCE`: refuse memfds and shared memory too.
    pub const FILELESS: u32 = 4;
    /// With `ENFORCE`: check executable mappings (`[libraries]`) too.
    pub const LIBRARIES: u32 = 8;
}

/// Values of the mounts map.
pub mod mount {
    pub const MARKED: u32 = 1;
    /// A rule allows every file on this mount.
    pub const ALLOWED: u32 = 2;
}

/// Why the kernel layer is not in use.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("BPF LSM is not active in this kernel (the active LSMs are: {0}); boot with lsm=...,bpf")]
    NotActive(String),
    #[error("the kernel has no BTF (/sys/kernel/btf/vmlinux): {0}")]
    NoBtf(String),
    #[error("loading the BPF LSM program failed: {0}")]
    Load(String),
    #[error("pinning in {path}: {error}")]
    Pin { path: PathBuf, error: String },
    #[error("{call}: {errno}")]
    Sys { call: &'static str, errno: nix::errno::Errno },
}

/// The kernel's active LSMs (`/sys/kernel/security/lsm`), `None` when securityfs is not mounted.
pub fn active_lsms() -> Option<String> {
    std::fs::read_to_string("/sys/kernel/security/lsm").ok().map(|s| s.trim().to_owned())
}

/// Key of the decided-files map: the file's superblock (kernel `dev_t`) and inode number.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey {
    pub dev: u32,
    pub pad: u32,
    pub ino: u64,
}

/// The version of a decided file: change time and size, as the kernel has them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVer {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub pad: u32,
    pub size: i64,
}

/// The program's configuration.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Some container is registered (until then every task leaves at once).
    pub on: u32,
    /// `struct ovl_inode`'s layout is known (below).
    pub ovl_ok: u32,
    pub ovl_vfs_inode: u64,
    pub ovl_upperdentry: u64,
    /// Nanoseconds per clock tick (`USER_HZ`): how `/proc/<pid>/stat` counts start times.
    pub tick_ns: u64,
    /// Some container is told by its cgroup alone (`hostPID`): the task's cgroup's ancestors
    /// are looked up too (a process moved into a cgroup below its container's stays covered).
    pub cg_ancestors: u32,
    pub pad: u32,
}

/// A registered PID namespace: the container's policy, and the start time of the namespace's
/// init (clock ticks since boot, field 22 of `/proc/<pid>/stat`), so that an entry left for a
/// namespace that is gone never matches a new namespace given the same inode number.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidNs {
    pub policy: u32,
    pub pad: u32,
    pub init_start: u64,
}

/// A kernel `dev_t` (as `struct super_block` has it) from a user-space `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

/// The loaded program: its links (pinned, or held only by this process) and the events.
pub struct Layer {
    /// Held open while the daemon runs (pinned ones also hold when it does not).
    _links: Vec<FdLink>,
    pub maps: Maps,
    events: Option<RingBuf<MapData>>,
    /// Where it is pinned (`None`: not pinned; it goes when this process does).
    pub pinned: Option<PathBuf>,
    /// Whether the links were taken over from a previous daemon rather than attached now.
    pub reused: bool,
}

impl Layer {
    /// Loads and attaches the program, its maps pinned under `pin_root/<version>/` (and its
    /// links too when `persist`: they then keep holding while no daemon runs). A previous
    /// daemon's pinned links of the same version are taken over, never attached twice; other
    /// versions' pins are removed once this one holds.
    pub fn start(pin_root: &Path, persist: bool) -> Result<Layer, Error> {
        if let Some(lsms) = active_lsms() {
            if !lsms.split(',').any(|l| l == "bpf") {
                return Err(Error::NotActive(lsms));
            }
        }
        let btf = aya::Btf::from_sys_fs().map_err(|e| Error::NoBtf(e.to_string()))?;
        let dir = pin_root.join(version());
        let pin_err = |error: String| Error::Pin { path: dir.clone(), error };
        // Pins live on a bpffs: the host's (/sys/fs/bpf, which systemd mounts), never one of
        // this process's own mount namespace, which would go with it.
        let on_bpffs = pin_root
            .ancestors()
            .find(|p| p.exists())
            .and_then(|p| nix::sys::statfs::statfs(p).ok())
            .is_some_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
        if !on_bpffs {
            return Err(pin_err(
                "not on a bpffs (mount -t bpf bpf /sys/fs/bpf, as systemd does at boot)".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| pin_err(e.to_string()))?;
        let mut ebpf = aya::EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(&dir)
            .load(OBJECT)
            .map_err(|e| Error::Load(chain(&e)))?;
        let mut links = Vec::new();
        let mut reused = persist;
        for (name, hook) in PROGRAMS {
            let pin = dir.join(format!("link_{name}"));
            if persist {
                if let Ok(l) = PinnedLink::from_pin(&pin) {
                    links.push(FdLink::from(l));
                    continue;
                }
            }
            reused = false;
            let prog: &mut Lsm = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Load(format!("no program {name}")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| Error::Load(chain(&e)))?;
            prog.load(hook, &btf).map_err(|e| Error::Load(format!("{name}: {}", chain(&e))))?;
            let id = prog.attach().map_err(|e| Error::Load(format!("{name}: {}", chain(&e))))?;
            let link: FdLink =
                prog.take_link(id).map_err(|e| Error::Load(format!("{name}: {}", chain(&e))))?.into();
            links.push(if persist {
                let _ = std::fs::remove_file(&pin);
                FdLink::from(link.pin(&pin).map_err(|e| pin_err(e.to_string()))?)
            } else {
                link
            });
        }
        let maps = Maps::from(&mut ebpf)?;
        let events = ebpf.take_map("dg_events").and_then(|m| RingBuf::try_from(m).ok());
        remove_other_versions(pin_root, &dir);
        if !persist {
            // The maps stay pinned (a later daemon finds them), the links do not.
            for (name, _) in PROGRAMS {
                let _ = std::fs::remove_file(dir.join(format!("link_{name}")));
            }
        }
        Ok(Layer { _links: links, maps, events, pinned: persist.then_some(dir), reused })
    }

    /// The program's reports, once (the caller's thread reads them).
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take().map(|ring| Events { ring })
    }

    /// Each attached program's name, runs and time spent (what the kernel counts while
    /// `kernel.bpf_stats_enabled` is 1; zeros otherwise).
    pub fn run_stats(&self) -> Vec<RunStats> {
        self._links
            .iter()
            .filter_map(|l| l.info().ok())
            .filter_map(|i| prog_run_stats(i.program_id()))
            .collect()
    }
}

/// One program's run statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
}

/// What the program reports, read from its ring buffer.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl Events {
    /// The fd to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// The next report, if one is waiting.
    pub fn read(&mut self) -> Option<Event> {
        loop {
            let item = self.ring.next()?;
            if let Some(e) = Event::parse(&item) {
                return Some(e);
            }
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// A version tag of the program (an FNV-1a hash of the object): pins of another build are
/// replaced, never mixed with this one's.
fn version() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in OBJECT {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("v{:016x}", h)
}

fn remove_other_versions(root: &Path, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p != keep && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('v')) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Removes everything pinned under `pin_root` (programs detach when no process holds their
/// links any more). Returns whether anything was there.
pub fn unpin(pin_root: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(pin_root) {
        Ok(rd) => {
            let mut any = false;
            for e in rd.flatten() {
                any = true;
                let p = e.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
            Ok(any)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The program's maps, by fd: updated from any thread (each update is one `bpf(2)` call).
#[derive(Debug)]
pub struct Maps {
    config: OwnedFd,
    pidns: OwnedFd,
    cgroup: OwnedFd,
    rootfs: OwnedFd,
    mounts: OwnedFd,
    allowed: OwnedFd,
    stats: OwnedFd,
}

/// The program's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub checked: u64,
    pub refused: u64,
    pub reported: u64,
    pub lost: u64,
}

impl Maps {
    fn from(ebpf: &mut aya::Ebpf) -> Result<Maps, Error> {
        let fd = |name: &str| -> Result<OwnedFd, Error> {
            let map = ebpf.map(name).ok_or_else(|| Error::Load(format!("no map {name}")))?;
            let data: &MapData = match map {
                aya::maps::Map::Array(d)
                | aya::maps::Map::HashMap(d)
                | aya::maps::Map::LruHashMap(d)
                | aya::maps::Map::PerCpuArray(d) => d,
                _ => return Err(Error::Load(format!("map {name} has an unexpected type"))),
            };
            data.fd().as_fd().try_clone_to_owned().map_err(|e| Error::Load(e.to_string()))
        };
        Ok(Maps {
            config: fd("dg_config")?,
            pidns: fd("dg_pidns")?,
            cgroup: fd("dg_cgroup")?,
            rootfs: fd("dg_rootfs")?,
            mounts: fd("dg_mounts")?,
            allowed: fd("dg_allowed")?,
            stats: fd("dg_stats")?,
        })
    }

    pub fn set_config(&self, c: &Config) -> Result<(), Error> {
        update(self.config.as_fd(), &0u32, c)
    }

    pub fn config(&self) -> Result<Config, Error> {
        lookup(self.config.as_fd(), &0u32)
    }

    pub fn set_pidns(&self, inum: u32, v: &PidNs) -> Result<(), Error> {
        update(self.pidns.as_fd(), &inum, v)
    }

    pub fn remove_pidns(&self, inum: u32) {
        remove(self.pidns.as_fd(), &inum);
    }

    pub fn set_cgroup(&self, id: u64, policy: u32) -> Result<(), Error> {
        update(self.cgroup.as_fd(), &id, &policy)
    }

    pub fn remove_cgroup(&self, id: u64) {
        remove(self.cgroup.as_fd(), &id);
    }

    /// A container's rootfs superblock (kernel `dev_t`, see [`kernel_dev`]).
    pub fn add_rootfs(&self, dev: u32) -> Result<(), Error> {
        update(self.rootfs.as_fd(), &dev, &1u32)
    }

    pub fn remove_rootfs(&self, dev: u32) {
        remove(self.rootfs.as_fd(), &dev);
    }

    /// A marked mount, by its unique (or, before Linux 6.8, legacy) id, with [`mount`] flags.
    pub fn set_mount(&self, id: u64, flags: u32) -> Result<(), Error> {
        update(self.mounts.as_fd(), &id, &flags)
    }

    pub fn remove_mount(&self, id: u64) {
        remove(self.mounts.as_fd(), &id);
    }

    /// A file decided and allowed, in this version.
    pub fn allow_file(&self, key: &FileKey, ver: &FileVer) -> Result<(), Error> {
        update(self.allowed.as_fd(), key, ver)
    }

    pub fn forget_file(&self, key: &FileKey) {
        remove(self.allowed.as_fd(), key);
    }

    /// Every key of a map of `u32` or `u64` keys, for clearing what a previous daemon left.
    fn keys<K: Copy + Default>(fd: BorrowedFd<'_>) -> Vec<K> {
        let mut out = Vec::new();
        let mut prev: Option<K> = None;
        loop {
            let mut next = K::default();
            let ok = match &prev {
                Some(p) => get_next_key(fd, Some(p), &mut next),
                None => get_next_key::<K>(fd, None, &mut next),
            };
            if !ok || out.len() > 1 << 20 {
                return out;
            }
            out.push(next);
            prev = Some(next);
        }
    }

    /// Registered pid namespaces, cgroups, rootfs superblocks and mounts (what a previous
    /// daemon left, for the new one to reconcile with what it finds).
    pub fn registered(&self) -> (Vec<u32>, Vec<u64>, Vec<u32>, Vec<u64>) {
        (
            Self::keys(self.pidns.as_fd()),
            Self::keys(self.cgroup.as_fd()),
            Self::keys(self.rootfs.as_fd()),
            Self::keys(self.mounts.as_fd()),
        )
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> Stats {
        let ncpu = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_CONF)
            .ok()
            .flatten()
            .map_or(1, |n| n.max(1) as usize)
            .max(possible_cpus());
        let sum = |i: u32| -> u64 {
            let mut vals = vec![0u64; ncpu];
            let attr = MapElem {
                map_fd: self.stats.as_raw_fd() as u32,
                pad: 0,
                key: &i as *const u32 as u64,
                value: vals.as_mut_ptr() as u64,
                flags: 0,
            };
            if bpf(BPF_MAP_LOOKUP_ELEM, &attr).is_ok() {
                vals.iter().sum()
            } else {
                0
            }
        };
        Stats { checked: sum(0), refused: sum(1), reported: sum(2), lost: sum(3) }
    }
}

/// The number of possible CPUs (per-CPU map values have one slot each).
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim().split(',').map(|r| r.rsplit('-').next()?.parse::<usize>().ok()).max().flatten()
        })
        .map_or(1, |n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_devs_are_the_superblock_encoding() {
        // st_dev 0:61 (an overlay) is 61 in both encodings; 253:2 differs.
        assert_eq!(kernel_dev(libc::makedev(0, 61)), 61);
        assert_eq!(kernel_dev(libc::makedev(253, 2)), (253 << 20) | 2);
    }

    #[test]
    fn the_shared_types_have_the_programs_layout() {
        assert_eq!(std::mem::size_of::<FileKey>(), 16);
        assert_eq!(std::mem::size_of::<FileVer>(), 24);
        assert_eq!(std::mem::size_of::<Config>(), 40);
        assert_eq!(std::mem::size_of::<PidNs>(), 16);
        assert_eq!(std::mem::size_of::<event::Raw>(), event::RAW_SIZE);
    }
}
