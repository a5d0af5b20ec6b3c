//! The mounts of a container other than its rootfs: which can hold a file the kernel would
//! execute, and so need a mark of their own.
//!
//! A container's rootfs is one overlay superblock, marked as a whole. Everything else a
//! container sees comes from other mounts in its mount namespace: tmpfs (`/dev`, `/dev/shm`,
//! `--tmpfs`, `emptyDir` with `medium: Memory`), bind mounts of host directories and files
//! (volumes, `hostPath`, `emptyDir` on disk, configMaps, secrets, `/etc/hosts`), other
//! filesystems. An exec from any of them raises no event on the rootfs mark. Pure: mountinfo
//! entries in, a plan out.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::mountinfo::MountEntry;

/// One mount of a container other than its rootfs, as found in one of its mount namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    /// The legacy mount id (`/proc/<pid>/mountinfo`).
    pub mount_id: u64,
    /// The never-reused mount id (Linux 6.8+; the legacy id before), which keys events.
    pub key: Option<u64>,
    pub dev: u64,
    /// Where the container sees it.
    pub mountpoint: Vec<u8>,
    pub fstype: String,
    /// The mount source as the kernel shows it (`tmpfs`, `shm`, `/dev/vda1`).
    pub source: Vec<u8>,
    /// The directory of its filesystem that is mounted (a bind mount's host-side directory on
    /// that filesystem; `/` for a whole filesystem).
    pub root: Vec<u8>,
    pub state: MountState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    Marked,
    Skipped(Skip),
    /// Hidden under another mount (its mountpoint leads elsewhere): no path reaches it, so
    /// nothing can be marked through one; looked at again on every scan (a runtime setting up
    /// a container over-mounts and moves mounts for a moment).
    Covered(String),
    /// Could not be opened or marked (gone meanwhile, an error).
    Failed(String),
}

impl MountState {
    pub fn describe(&self) -> String {
        match self {
            MountState::Marked => "marked".into(),
            MountState::Skipped(s) => format!("skipped: {}", s.as_str()),
            MountState::Covered(e) => format!("hidden: {e}"),
            MountState::Failed(e) => format!("not marked: {e}"),
        }
    }
}

/// One mount namespace of a container.
#[derive(Debug, Clone)]
pub struct NsMounts {
    /// The process it was read through.
    pub pid: i32,
    pub mounts: Vec<Arc<ContainerMount>>,
}

/// What memfd execution is set to in one PID namespace of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemfdState {
    /// `vm.memfd_noexec` set to this value in the namespace.
    Set(u8),
    /// The container shares the host's PID namespace: setting it would change the host.
    HostPid,
    Failed(String),
}

/// The namespaces of a container and what was done in each.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// Mount namespaces by inode number.
    pub mnt: BTreeMap<u64, NsMounts>,
    /// PID namespaces by inode number.
    pub pid: BTreeMap<u64, MemfdState>,
    /// The PID namespaces `vm.memfd_noexec` was set in, held open: a namespace that ended
    /// cannot hand its inode number to a new one while it is recorded here, so the value
    /// read back later is this namespace's (a new one would still have the host's 0, and
    /// look tampered with).
    pub pid_held: BTreeMap<u64, Arc<std::os::fd::OwnedFd>>,
}

impl Namespaces {
    /// The mount of this container that `mount_id` (legacy) or `dev` names, in any of its
    /// namespaces, marked or not.
    pub fn find_mount(&self, mount_id: u64) -> Option<Arc<ContainerMount>> {
        self.mnt.values().flat_map(|n| &n.mounts).find(|m| m.mount_id == mount_id).cloned()
    }
}

/// Filesystems no file is ever executed from (the kernel refuses, or they hold no regular
/// files a process could write and run).
const NEVER_EXEC: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "pstore",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "efivarfs",
    "autofs",
    "nsfs",
    "hugetlbfs",
    "selinuxfs",
    "rpc_pipefs",
];

/// Why a mount of a container is not marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The rootfs overlay (or a bind of part of it): its superblock mark covers it.
    Rootfs,
    /// A pseudo filesystem nothing is executed from.
    Pseudo,
    /// Mounted `noexec`: the kernel refuses every exec from it.
    NoExec,
    /// A bind mount of a device, socket or FIFO (`/dev/null` in a user-namespaced container):
    /// nothing on it can be executed.
    NotAFile,
}

impl Skip {
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::Rootfs => "rootfs",
            Skip::Pseudo => "pseudo filesystem",
            Skip::NoExec => "noexec",
            Skip::NotAFile => "a device, socket or FIFO",
        }
    }
}

/// Whether a mount in a container's namespace needs a mark, or why not.
pub fn plan(entry: &MountEntry, rootfs_dev: u64) -> Result<(), Skip> {
    if entry.dev == rootfs_dev {
        return Err(Skip::Rootfs);
    }
    if NEVER_EXEC.contains(&entry.fstype.as_str()) {
        return Err(Skip::Pseudo);
    }
    if entry.noexec() {
        return Err(Skip::NoExec);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::mountinfo::parse;

    /// A Docker container's mountinfo as read from `/proc/<pid>/mountinfo` (abridged).
    const DOCKER: &[u8] = b"\
1067 1007 0:88 / / rw,relatime master:310 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1068 1067 0:92 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1069 1067 0:93 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1070 1069 0:94 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620
1071 1067 0:95 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1072 1071 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1073 1069 0:91 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1074 1069 0:96 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
1075 1067 8:1 /var/lib/docker/volumes/data/_data /data rw,relatime - ext4 /dev/vda1 rw
1076 1067 8:1 /var/lib/docker/containers/c1/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
1077 1067 0:97 / /scratch rw,nosuid,nodev,relatime - tmpfs tmpfs rw
1078 1067 0:88 /opt /mnt/opt rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
";

    #[test]
    fn only_mounts_that_can_hold_an_executed_file_are_marked() {
        let rootfs_dev = libc::makedev(0, 88);
        let planned: Vec<(String, Result<(), Skip>)> =
            parse(DOCKER).iter().map(|e| (e.mountpoint.display().to_string(), plan(e, rootfs_dev))).collect();
        let want = [
            ("/", Err(Skip::Rootfs)),
            ("/proc", Err(Skip::Pseudo)),
            ("/dev", Ok(())),
            ("/dev/pts", Err(Skip::Pseudo)),
            ("/sys", Err(Skip::Pseudo)),
            ("/sys/fs/cgroup", Err(Skip::Pseudo)),
            ("/dev/mqueue", Err(Skip::Pseudo)),
            ("/dev/shm", Err(Skip::NoExec)),
            ("/data", Ok(())),
            ("/etc/hosts", Ok(())),
            ("/scratch", Ok(())),
            ("/mnt/opt", Err(Skip::Rootfs)),
        ];
        let want: Vec<(String, Result<(), Skip>)> =
            want.into_iter().map(|(m, p)| (m.to_owned(), p)).collect();
        assert_eq!(planned, want);
    }
}
