//! Watching a container's mount namespaces for changes: each one's mount table kept open
//! (`POLLPRI` on every mount, unmount and remount, on any kernel) and, where the kernel has
//! them, fanotify's mount events; re-reading one that changed.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::{Marker, NsPoll};
use crate::container::Container;

impl Marker {
    /// The open mount tables of the known mount namespaces, to poll.
    pub fn ns_polls(&self) -> Vec<(u64, NsPoll)> {
        self.mountinfo.lock().map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect()).unwrap_or_default()
    }

    /// Re-reads mount namespace `ns` (its mount table changed). `false` when it could not be
    /// (the process it was found through is gone): then a scan finds it again.
    pub fn reread(&self, ns: u64) -> bool {
        let Some(c) = self.mountinfo.lock().ok().and_then(|m| m.get(&ns).map(|p| Arc::clone(&p.container)))
        else {
            return false;
        };
        let pid = c.namespaces.lock().ok().and_then(|n| n.mnt.get(&ns).map(|m| m.pid));
        match pid.map(|pid| self.mark_namespace(&c, pid, ns)) {
            Some(Ok(_)) => true,
            _ => {
                if let Ok(mut m) = self.mountinfo.lock() {
                    m.remove(&ns);
                }
                false
            }
        }
    }

    /// Whether drift is refused in container `c` (its mount changes are then handled at once).
    pub fn enforced(&self, c: &Container) -> bool {
        self.memfd.load().kernel_policy(c) & driftgate_bpf::policy::ENFORCE != 0
    }

    /// Asks for the namespace's mount events, once per namespace: its mount table kept open
    /// (polled by discovery), and fanotify's mount events where the kernel has them.
    pub(super) fn watch_mount_events(&self, pdir: &OwnedFd, ns: u64, c: &Arc<Container>) {
        if let Ok(mut m) = self.mountinfo.lock() {
            if let std::collections::hash_map::Entry::Vacant(slot) = m.entry(ns) {
                if let Ok(fd) = nix::fcntl::openat(
                    pdir,
                    "mountinfo",
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                ) {
                    slot.insert(NsPoll { fd: Arc::new(fd), container: Arc::clone(c) });
                }
            }
        }
        let Some(w) = &self.ns_watch else { return };
        let Ok(mut seen) = self.watched_ns.lock() else { return };
        if seen.contains(&ns) {
            return;
        }
        let fd = nix::fcntl::openat(
            pdir,
            "ns/mnt",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        match fd
            .map_err(|e| driftgate_sys::SysError::new("open(ns/mnt)", e))
            .and_then(|fd| w.watch(fd.as_fd()))
        {
            Ok(()) => {
                seen.insert(ns);
            }
            Err(e) => tracing::debug!(mnt_ns = ns, error = %e, "no mount events for a container namespace"),
        }
    }
}
