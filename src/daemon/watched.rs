//! A watched container as `status` shows it: its metadata, mounts, `vm.memfd_noexec`, and
//! which layer guards it.

use serde::{Deserialize, Serialize};

use super::kernel::Kernel;
use super::namespaces::MemfdRule;
use crate::container::Container;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WatchedContainer {
    pub id: String,
    pub runtime: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub rootfs: String,
    pub since: String,
    /// Image layers (lower layers but Docker's `-init`), and how many of them have a manifest.
    #[serde(default)]
    pub layers: usize,
    #[serde(default)]
    pub indexed_layers: usize,
    /// Mount namespaces found (through the container's processes); 0 until one is.
    #[serde(default)]
    pub mount_namespaces: usize,
    /// Its mounts other than the rootfs, in every namespace, and whether each is marked.
    #[serde(default)]
    pub mounts: Vec<MountStatus>,
    /// `vm.memfd_noexec` in its PID namespace(s): `2`, `0`, `not set: host PID namespace`,
    /// `failed: <error>`; absent until a namespace is found or while nothing was set.
    #[serde(default)]
    pub memfd_noexec: Vec<String>,
    /// Findings of this container counted but not recorded (over its recording budget).
    #[serde(default)]
    pub findings_suppressed: u64,
    /// Which layer guards it (`kernel+fanotify` or `fanotify`), and the holes that remain.
    #[serde(default, flatten)]
    pub guard: super::kernel::status::Guard,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountStatus {
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
    /// `marked`, `skipped: <why>` or `not marked: <error>`.
    pub state: String,
}

/// Container `c` as `status` lists it; `libraries`: `[libraries]` is on (and the marks hold opens).
pub fn watched(c: &Container, kernel: &Kernel, rule: &MemfdRule, libraries: bool) -> WatchedContainer {
    use std::sync::atomic::Ordering;
    let m = c.meta.load();
    let host_pid = c
        .namespaces
        .lock()
        .is_ok_and(|n| n.pid.values().any(|s| *s == crate::container::mounts::MemfdState::HostPid));
    WatchedContainer {
        id: c.id(),
        runtime: c.runtime().to_owned(),
        name: m.name.clone(),
        image: m.image.clone(),
        pod_namespace: m.pod_namespace.clone(),
        pod_name: m.pod_name.clone(),
        rootfs: c.rootfs.display().to_string(),
        since: driftgate_core::util::rfc3339(c.since),
        layers: c.index.load().image_layers,
        indexed_layers: c.index.load().known(),
        mount_namespaces: c.namespaces.lock().map_or(0, |n| n.mnt.len()),
        mounts: mount_statuses(c),
        memfd_noexec: memfd_statuses(c),
        findings_suppressed: c.findings_suppressed.load(Ordering::Relaxed),
        guard: kernel.guard(
            c,
            rule.kernel_policy(c) & driftgate_bpf::policy::ENFORCE != 0,
            libraries,
            host_pid,
        ),
    }
}

fn memfd_statuses(c: &Container) -> Vec<String> {
    use crate::container::mounts::MemfdState;
    let Ok(ns) = c.namespaces.lock() else { return Vec::new() };
    ns.pid
        .values()
        .map(|s| match s {
            MemfdState::Set(v) => v.to_string(),
            MemfdState::HostPid => "not set: host PID namespace".to_owned(),
            MemfdState::Failed(e) => format!("failed: {e}"),
        })
        .collect()
}

/// A container's mounts other than its rootfs (pseudo filesystems left out), one line per
/// mountpoint even when several namespaces have it.
fn mount_statuses(c: &Container) -> Vec<MountStatus> {
    use crate::container::mounts::{MountState, Skip};
    let Ok(ns) = c.namespaces.lock() else { return Vec::new() };
    let mut out: Vec<MountStatus> = Vec::new();
    for m in ns.mnt.values().flat_map(|n| &n.mounts) {
        if matches!(m.state, MountState::Skipped(Skip::Rootfs | Skip::Pseudo)) {
            continue;
        }
        let mountpoint = String::from_utf8_lossy(&m.mountpoint).into_owned();
        if out.iter().any(|o| o.mountpoint == mountpoint) {
            continue;
        }
        out.push(MountStatus {
            mountpoint,
            fstype: m.fstype.clone(),
            source: String::from_utf8_lossy(&m.source).into_owned(),
            state: m.state.describe(),
        });
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}
