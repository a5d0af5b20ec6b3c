//! A container's cgroup, for `response = "freeze"` and `driftgate thaw`: found from a
//! process's `/proc/<pid>/cgroup`, frozen with cgroup v2's `cgroup.freeze` or the v1
//! freezer's `freezer.state`.
//!
//! Freezing the wrong cgroup stops the node (or the daemon itself), so a cgroup is frozen only
//! when it is provably the container's own: not a root cgroup, not the daemon's or one of its
//! parents, and every process in it (and below it) in the container's PID namespace or one
//! nested in it, which is not the host's.
//!
//! Which are the container's PID namespace and cgroup is found from what a process inside
//! cannot change: the outermost PID namespace of the refused thread below the daemon's (a
//! process that makes PID namespaces of its own, `unshare -U -r -p -f`, stays inside it), and
//! the cgroup of the top process in it (the container's init, or an exec session's first
//! process), of which the refused thread's cgroup must be a part. Freezing a cgroup freezes
//! its whole subtree (v2 and the v1 freezer alike).

use std::path::{Path, PathBuf};

use crate::container::mountinfo;

/// A container frozen by a rule's response (listed by `status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frozen {
    pub id: String,
    pub cgroup: String,
    pub since: String,
    /// The finding that caused it.
    pub finding: String,
}

/// A cgroup directory and the file that freezes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The cgroup's directory (`/sys/fs/cgroup/system.slice/docker-….scope`).
    pub dir: PathBuf,
    /// Its path in its hierarchy, as `/proc/<pid>/cgroup` shows it.
    pub path: String,
    pub v2: bool,
}

/// The v2 path (`0::/x`) and the v1 freezer path (`N:freezer:/x`) of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let (mut v2, mut v1) = (None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = Some(path.to_owned());
        } else if ctrls.split(',').any(|c| c == "freezer") {
            v1 = Some(path.to_owned());
        }
    }
    (v2, v1)
}

/// The mounts of the hierarchies a freeze can use: cgroup2, and the v1 hierarchy with the
/// freezer controller.
fn freezable_mounts() -> Vec<mountinfo::MountEntry> {
    let text = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    mountinfo::parse(&text)
        .into_iter()
        .filter(|m| {
            m.fstype == "cgroup2"
                || (m.fstype == "cgroup" && m.super_options.split(|&b| b == b',').any(|o| o == b"freezer"))
        })
        .collect()
}

/// Where each hierarchy is mounted whole (a mount of a sub-tree cannot reach every cgroup):
/// the cgroup2 mount, the v1 freezer mount.
fn mounts() -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut v2, mut v1) = (None, None);
    for m in freezable_mounts().into_iter().filter(|m| m.root == b"/") {
        let slot = if m.fstype == "cgroup2" { &mut v2 } else { &mut v1 };
        slot.get_or_insert(m.mountpoint);
    }
    (v2, v1)
}

/// Why no cgroup can be frozen from here, if so: the cgroup filesystems are mounted read-only
/// (systemd's `ProtectControlGroups=yes`) or not at all.
pub fn cannot_freeze() -> Option<String> {
    let mounts = freezable_mounts();
    if mounts.is_empty() {
        return Some("no cgroup v2 or freezer hierarchy is mounted".into());
    }
    let ro = |m: &mountinfo::MountEntry| m.mount_options.split(|&b| b == b',').any(|o| o == b"ro");
    mounts.iter().all(ro).then(|| {
        format!(
            "the cgroup filesystem is mounted read-only here ({}): under the shipped unit, add the drop-in freeze.conf (ProtectControlGroups=no)",
            mounts[0].mountpoint.display()
        )
    })
}

fn join(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// The cgroup of process `pid` that can be frozen: its v2 cgroup when it has one of its own,
/// else its v1 freezer cgroup.
pub fn of_process(pid: i32) -> Result<Cgroup, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
    let (v2, v1) = parse_proc_cgroup(&text);
    let (m2, m1) = mounts();
    if let (Some(p), Some(m)) = (&v2, &m2) {
        let dir = join(m, p);
        if p != "/" && dir.join("cgroup.freeze").exists() {
            return Ok(Cgroup { dir, path: p.clone(), v2: true });
        }
    }
    if let (Some(p), Some(m)) = (&v1, &m1) {
        if p != "/" {
            return Ok(Cgroup { dir: join(m, p), path: p.clone(), v2: false });
        }
    }
    Err("the process is in a root cgroup: there is no cgroup of the container's own to freeze".into())
}

/// The container whose thread `tid` was refused, for a freeze: the outermost PID namespace
/// of the thread below the daemon's, and the cgroup to freeze (of the top process in that
/// namespace, which holds the thread's).
pub fn container_of_thread(tid: i32) -> Result<(u64, Cgroup), String> {
    use driftgate_sys::proc::{pid_ns_chain, read_status};
    let gone = || format!("thread {tid} is gone: its cgroup cannot be found");
    let chain = pid_ns_chain(tid).ok_or_else(gone)?;
    let Some(&top) = chain.last() else {
        return Err(
            "the container shares the host's PID namespace: its cgroup cannot be told from the host's".into(),
        );
    };
    // Up the parents while they are inside the container's PID namespace.
    let mut root = tid;
    for _ in 0..4096 {
        let Some(ppid) = read_status(root).map(|s| s.ppid).filter(|p| *p > 0) else { break };
        if !pid_ns_chain(ppid).is_some_and(|c| c.contains(&top)) {
            break;
        }
        root = ppid;
    }
    let cg = of_process(root)?;
    let mine = of_process(tid)?;
    if mine.v2 != cg.v2 || !within(&mine.path, &cg.path) {
        return Err(format!(
            "the refused process is in cgroup {}, outside its container's {}",
            mine.path, cg.path
        ));
    }
    Ok((top, cg))
}

/// Whether cgroup path `p` is `parent` or below it.
fn within(p: &str, parent: &str) -> bool {
    p == parent || p.starts_with(&format!("{}/", parent.trim_end_matches('/')))
}

/// Whether `cg` holds only the container's processes (in PID namespace `top` or one nested in
/// it), and none of the daemon's.
pub fn check_own(cg: &Cgroup, top: u64) -> Result<(), String> {
    check_members(cg, |pid| match driftgate_sys::proc::pid_ns_chain(pid) {
        Some(chain) => chain.contains(&top),
        // Gone since the list was read.
        None => true,
    })
}

/// Whether `cg` (and every cgroup below it) holds only processes that `ours` accepts, and none
/// of the daemon's.
fn check_members(cg: &Cgroup, ours: impl Fn(i32) -> bool) -> Result<(), String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let (v2, v1) = parse_proc_cgroup(&own);
    if let Some(mine) = if cg.v2 { v2 } else { v1 } {
        if within(&mine, &cg.path) {
            return Err(format!("{} holds driftgate itself", cg.path));
        }
    }
    let mut stack = vec![cg.dir.clone()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs"))
            .map_err(|e| format!("cannot read {}: {e}", d.join("cgroup.procs").display()))?;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if !ours(pid) {
                return Err(format!("{} holds process {pid}, which is not in the container", cg.path));
            }
        }
        for ent in std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?.flatten() {
            if ent.file_type().is_ok_and(|t| t.is_dir()) {
                seen += 1;
                if seen > 4096 {
                    return Err(format!("{} has too many child cgroups to check", cg.path));
                }
                stack.push(ent.path());
            }
        }
    }
    Ok(())
}

/// The id (as BPF's `bpf_get_current_cgroup_id` has it: the inode number of its directory in
/// the cgroup2 file system) of the v2 cgroup of process `pid` of a container, when that cgroup
/// is provably the container's own: not a root cgroup, not the daemon's, and every process in
/// it and below either in the container's PID namespace `top` (or one nested in it) or with the
/// container's rootfs (`rootfs_dev`) as its root. A `hostPID` container is told by its cgroup
/// alone. On cgroup-v1 hybrid hosts this is the unified hierarchy.
pub fn own_v2_id(pid: i32, top: Option<u64>, rootfs_dev: u64) -> Result<u64, String> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
    let path = parse_proc_cgroup(&text).0.ok_or("the process has no cgroup v2")?;
    if path == "/" {
        return Err("the process is in the root cgroup".into());
    }
    let mount = mounts().0.ok_or("no cgroup2 file system is mounted whole")?;
    let cg = Cgroup { dir: join(&mount, &path), path, v2: true };
    check_members(&cg, |p| {
        let in_ns =
            || top.is_some_and(|t| driftgate_sys::proc::pid_ns_chain(p).is_some_and(|c| c.contains(&t)));
        let in_root = || driftgate_sys::proc::root_dev_ino(p).is_none_or(|(dev, _)| dev == rootfs_dev);
        in_ns() || in_root()
    })?;
    std::fs::metadata(&cg.dir).map(|m| m.ino()).map_err(|e| format!("cannot stat {}: {e}", cg.dir.display()))
}

/// Freezes (`true`) or thaws the cgroup at `dir`, v2 or v1 as its files say.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<(), String> {
    let (file, value) = if dir.join("cgroup.freeze").exists() {
        ("cgroup.freeze", if frozen { "1" } else { "0" })
    } else if dir.join("freezer.state").exists() {
        ("freezer.state", if frozen { "FROZEN" } else { "THAWED" })
    } else {
        return Err(format!("{} is not a cgroup that can be frozen", dir.display()));
    };
    std::fs::write(dir.join(file), value)
        .map_err(|e| format!("cannot write {}: {e}", dir.join(file).display()))
}

/// Whether the cgroup at `dir` is frozen (or freezing) now.
pub fn is_frozen(dir: &Path) -> bool {
    if let Ok(v) = std::fs::read_to_string(dir.join("cgroup.freeze")) {
        return v.trim() == "1";
    }
    std::fs::read_to_string(dir.join("freezer.state"))
        .is_ok_and(|v| matches!(v.trim(), "FROZEN" | "FREEZING"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_gives_the_v2_and_freezer_paths() {
        let hybrid = "9:name=systemd:/\n6:freezer:/dg/x\n4:memory:/m\n0::/\n";
        assert_eq!(parse_proc_cgroup(hybrid), (Some("/".into()), Some("/dg/x".into())));
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(parse_proc_cgroup(v2), (Some("/system.slice/docker-abc.scope".into()), None));
        let joined = "5:cpu,freezer:/k8s/pod1\n";
        assert_eq!(parse_proc_cgroup(joined), (None, Some("/k8s/pod1".into())));
        assert_eq!(parse_proc_cgroup("garbage\n"), (None, None));
    }
}
