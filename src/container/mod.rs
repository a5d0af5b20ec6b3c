//! Which overlay mounts are container root filesystems, and what is known about each.
//!
//! A mount is a container rootfs only when it is an overlay *and* its mountpoint matches a
//! runtime's known layout (containerd: `<state>/io.containerd.runtime.v2.task/<ns>/<id>/rootfs`)
//! or an operator's `overlay_globs`: each runtime is a module of [`runtime`]. Nothing else is
//! ever marked.

pub mod cgroup;
pub mod cluster;
pub mod containerd_api;
pub mod diffids;
mod identity;
pub mod layers;
pub mod meta;
pub mod mountinfo;
pub mod mounts;
pub mod runtime;
pub mod state_file;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driftgate_core::config::Config;
use layers::Layers;
use mountinfo::{overlay_layers, MountEntry, OverlayLayers};

pub use identity::Identity;
pub use state_file::{is_json_array, read_state, state_warning, STATE_FILE_MAX};

/// A container rootfs found in the mount table, not yet verified or marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub identity: Identity,
    pub mount: MountEntry,
    pub layers: OverlayLayers,
}

/// A watched container.
#[derive(Debug)]
pub struct Container {
    /// Unique per daemon run; keys caches so a recycled device number never aliases.
    pub generation: u64,
    pub identity: Identity,
    pub mount_id: u64,
    pub dev: u64,
    /// The overlay's filesystem id (see [`Registry::by_fsid`]).
    pub fsid: Option<u64>,
    pub rootfs: PathBuf,
    pub layers: Layers,
    pub since: std::time::SystemTime,
    /// Filled in by the metadata thread; read by findings.
    pub meta: arc_swap::ArcSwap<meta::Metadata>,
    /// Counts metadata lookups stored; findings wait for a lookup made after they were raised.
    pub meta_version: std::sync::atomic::AtomicU64,
    /// When discovery woke up for the mount change that revealed this container (`None` for
    /// containers found at start-up), when its superblock was marked, and whether an exec in
    /// it was seen yet: the first-exec race measurement.
    pub mount_seen: Option<std::time::Instant>,
    pub marked_at: std::sync::OnceLock<std::time::Instant>,
    pub first_exec_seen: std::sync::atomic::AtomicBool,
    /// Manifests of the lower layers, attached by the indexer thread as they become known.
    pub index: arc_swap::ArcSwap<driftgate_core::index::union::ContainerIndex>,
    /// Its mount and PID namespaces, and what was marked or set in each.
    pub namespaces: std::sync::Mutex<mounts::Namespaces>,
    /// Whether a mount namespace of the container is known (and its mounts marked). Until one
    /// is, the hot path asks which namespace each exec comes from, and marks it before answering.
    pub ns_known: std::sync::atomic::AtomicBool,
    /// Whether a PID namespace of the container (other than the host's) was handled
    /// (`vm.memfd_noexec` applied). Until one is, the hot path asks each exec's caller.
    pub pid_known: std::sync::atomic::AtomicBool,
    /// While no namespace is known: when (ms on the daemon's clock) the hot path may ask an
    /// exec's caller again, after one that was not in the container (a host-side exec).
    pub ns_probe_after: std::sync::atomic::AtomicU64,
    /// Findings of this container counted but not recorded (its recording budget was spent).
    pub findings_suppressed: std::sync::atomic::AtomicU64,
    /// It ran while memfds could be executable (audit mode), and was enforced since: a memfd
    /// made then may still run where the kernel layer does not refuse it.
    pub memfd_predates: std::sync::atomic::AtomicBool,
}

impl Container {
    /// A container that was never mounted: for unit tests of the stages that read it.
    #[cfg(test)]
    pub fn for_test(identity: Identity) -> Container {
        Container {
            generation: 1,
            identity,
            mount_id: 0,
            dev: 0,
            fsid: None,
            rootfs: "/nonexistent/rootfs".into(),
            layers: Layers::open(None, &[]).expect("no layers to open"),
            since: std::time::SystemTime::now(),
            meta: Default::default(),
            meta_version: Default::default(),
            mount_seen: None,
            marked_at: Default::default(),
            first_exec_seen: Default::default(),
            index: Default::default(),
            namespaces: Default::default(),
            ns_known: Default::default(),
            pid_known: Default::default(),
            ns_probe_after: Default::default(),
            findings_suppressed: Default::default(),
            memfd_predates: Default::default(),
        }
    }

    /// The container id a responder knows: the runtime's, once metadata resolved it.
    pub fn id(&self) -> String {
        self.meta.load().id.clone().unwrap_or_else(|| self.identity.id.clone())
    }

    /// Whether an open file (`fd`, `st` from `fstat`) is on this container's rootfs.
    pub fn holds(&self, fd: std::os::fd::BorrowedFd<'_>, st: &nix::sys::stat::FileStat) -> bool {
        st.st_dev == self.dev || (self.fsid.is_some() && driftgate_sys::fs::overlay_fsid(fd) == self.fsid)
    }

    pub fn runtime(&self) -> &'static str {
        self.meta.load().runtime.unwrap_or(self.identity.runtime)
    }

    /// The rules' view of an exec in this container: `exec`'s own facts (path, hash, mount,
    /// session, shell parent) with the container's (namespace, pod, name, id, image, runtime)
    /// from the metadata known now.
    pub fn describe<R>(
        &self,
        exec: driftgate_core::policy::Subject<'_>,
        f: impl FnOnce(&driftgate_core::policy::Subject<'_>) -> R,
    ) -> R {
        let m = self.meta.load();
        let id = m.id.clone().unwrap_or_else(|| self.identity.id.clone());
        f(&driftgate_core::policy::Subject {
            namespace: m.pod_namespace.as_deref(),
            pod: m.pod_name.as_deref(),
            container: Some(m.name.as_deref().unwrap_or(&id)),
            container_id: Some(&id),
            image: m.image.as_deref(),
            runtime: m.runtime.unwrap_or(self.identity.runtime),
            ..exec
        })
    }

    /// The container as a finding describes it, from the metadata known now.
    pub fn container_ref(&self) -> driftgate_core::finding::ContainerRef {
        let m = self.meta.load();
        driftgate_core::finding::ContainerRef {
            id: m.id.clone().unwrap_or_else(|| self.identity.id.clone()),
            runtime: m.runtime.unwrap_or(self.identity.runtime).into(),
            rootfs: self.rootfs.to_string_lossy().into_owned(),
            name: m.name.clone(),
            image: m.image.clone(),
            image_digest: m.image_digest.clone(),
            pod_namespace: m.pod_namespace.clone(),
            pod_name: m.pod_name.clone(),
            pod_uid: m.pod_uid.clone(),
            labels: m.labels.clone(),
            runtime_namespace: self.identity.runtime_namespace.clone(),
        }
    }

    /// The mountpoint as bytes, for stripping it off host-side paths.
    pub fn rootfs_bytes(&self) -> &[u8] {
        self.rootfs.as_os_str().as_bytes()
    }
}

/// The set of watched containers, by overlay device number. Published with `ArcSwap` so the
/// hot path reads it without a lock.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub by_dev: HashMap<u64, Arc<Container>>,
    /// By overlay fsid ([`driftgate_sys::fs::overlay_fsid`]), for the files an overlay reports
    /// with a layer's pseudo device; an fsid that two containers share is in neither.
    pub by_fsid: HashMap<u64, Arc<Container>>,
}

impl Registry {
    /// Rebuilds [`Registry::by_fsid`] from `by_dev` (after containers come or go).
    pub fn index_fsids(&mut self) {
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for f in self.by_dev.values().filter_map(|c| c.fsid) {
            *seen.entry(f).or_default() += 1;
        }
        self.by_fsid = self
            .by_dev
            .values()
            .filter_map(|c| c.fsid.filter(|f| seen.get(f) == Some(&1)).map(|f| (f, Arc::clone(c))))
            .collect();
    }

    /// The container whose rootfs an open file (`fd`, with `st` from `fstat`) is on.
    pub fn rootfs_of(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        st: &nix::sys::stat::FileStat,
    ) -> Option<&Arc<Container>> {
        self.by_dev.get(&st.st_dev).or_else(|| {
            if self.by_fsid.is_empty() {
                return None;
            }
            self.by_fsid.get(&driftgate_sys::fs::overlay_fsid(fd)?)
        })
    }
}

/// Classifies one mount. `None` means "not a container: leave it alone".
pub fn classify(entry: &MountEntry, cfg: &Config) -> Option<Candidate> {
    if entry.fstype != "overlay" || entry.mountpoint == Path::new("/") {
        return None;
    }
    let identity = runtime::identify(&entry.mountpoint, cfg)?;
    let layers = overlay_layers(&entry.super_options)?;
    Some(Candidate { identity, mount: entry.clone(), layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mp: &str, fstype: &str) -> MountEntry {
        MountEntry {
            mount_id: 1,
            dev: 99,
            mountpoint: mp.into(),
            fstype: fstype.into(),
            super_options: b"rw,lowerdir=/l,upperdir=/u,workdir=/w".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn containerd_rootfs_is_recognised_by_layout() {
        let cfg = Config::defaults();
        let c = classify(
            &entry("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs", "overlay"),
            &cfg,
        )
        .unwrap();
        assert_eq!(c.identity.id, "abc");
        assert_eq!(c.identity.runtime, "containerd");
        assert_eq!(c.identity.runtime_namespace.as_deref(), Some("k8s.io"));
        assert_eq!(c.layers.upper, Some("/u".into()));
    }

    #[test]
    fn near_misses_are_not_containers() {
        let cfg = Config::defaults();
        for mp in [
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs/x",
            "/run/containerd/io.containerd.runtime.v2.task/abc/rootfs",
            "/tmp/containerd-mount123",
            "/",
        ] {
            assert!(classify(&entry(mp, "overlay"), &cfg).is_none(), "{mp}");
        }
        // Right path, wrong filesystem type.
        assert!(classify(&entry("/run/containerd/io.containerd.runtime.v2.task/d/abc/rootfs", "ext4"), &cfg)
            .is_none());
    }

    #[test]
    fn overlay_globs_make_plain_overlays_containers() {
        let cfg = Config::from_toml("[discovery]\noverlay_globs = [\"/srv/ct/*/merged\"]\n", None).unwrap();
        let c = classify(&entry("/srv/ct/one/merged", "overlay"), &cfg).unwrap();
        assert_eq!(c.identity.runtime, "overlay");
        assert_eq!(c.identity.id, "/srv/ct/one/merged");
        assert!(classify(&entry("/srv/ct/one/merged", "tmpfs"), &cfg).is_none());
        assert!(classify(
            &entry("/", "overlay"),
            &Config::from_toml("[discovery]\noverlay_globs = [\"/**\"]\n", None).unwrap()
        )
        .is_none());
    }

    #[test]
    fn docker_and_containers_storage_rootfs_are_recognised() {
        let cfg = Config::defaults();
        let d = classify(&entry("/var/lib/docker/overlay2/abc123/merged", "overlay"), &cfg).unwrap();
        assert_eq!((d.identity.runtime, d.identity.id.as_str()), ("docker", "abc123"));
        assert!(classify(&entry("/var/lib/docker/overlay2/abc123-init/merged", "overlay"), &cfg).is_none());
        assert!(classify(&entry("/var/lib/docker/overlay2/abc123/diff", "overlay"), &cfg).is_none());
        let p = classify(&entry("/var/lib/containers/storage/overlay/L1/merged", "overlay"), &cfg).unwrap();
        assert_eq!((p.identity.runtime, p.identity.id.as_str()), ("podman", "L1"));
        assert_eq!(p.identity.storage.as_ref().unwrap().0, PathBuf::from("/var/lib/containers/storage"));
        let cfg = Config::from_toml(
            "[discovery.podman]\nenabled = false\n[discovery.crio]\nroot = \"/srv/crio\"\n[discovery.docker]\nenabled = false\n",
            None,
        )
        .unwrap();
        assert!(classify(&entry("/var/lib/docker/overlay2/abc123/merged", "overlay"), &cfg).is_none());
        assert!(classify(&entry("/var/lib/containers/storage/overlay/L1/merged", "overlay"), &cfg).is_none());
        let c = classify(&entry("/srv/crio/overlay/L2/merged", "overlay"), &cfg).unwrap();
        assert_eq!(c.identity.runtime, "cri-o");
    }

    #[test]
    fn containerd_discovery_can_be_disabled() {
        let cfg = Config::from_toml("[discovery.containerd]\nenabled = false\n", None).unwrap();
        assert!(classify(
            &entry("/run/containerd/io.containerd.runtime.v2.task/d/abc/rootfs", "overlay"),
            &cfg
        )
        .is_none());
    }
}
