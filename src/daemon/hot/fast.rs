//! Stage 1, on the event loop's thread: the fast path. `fstat` the event fd; a file on an
//! unknown superblock, or an inode proven to be a lower-layer (image) inode, is allowed at once
//! (cached per file version). Anything else becomes a [`Job`] for stage 2.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::container::mounts::ContainerMount;
use crate::container::Container;
use driftgate_core::engine::indirect::ExecKind;
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::fs::{self as sfs, FileId};

use super::state::{Job, Outcome, OutcomeKey, Routed, Shared};

/// What the fast path keeps of an image file version.
#[derive(Debug, Clone, Copy)]
pub(super) struct ImageFile {
    /// What it runs besides itself.
    kind: ExecKind,
    /// Its permitted file capabilities (`security.capability`), read once.
    caps: u64,
}

/// Main-thread state: the cache of file versions proven to be image files.
pub struct FastPath {
    pub shared: Arc<Shared>,
    /// Image file versions proven by identity.
    pub(super) image_files: HashMap<(u64, FileId), ImageFile>,
    pub(super) image_cap: usize,
    pub(super) knowledge: u64,
}

impl FastPath {
    pub fn new(shared: Arc<Shared>, cap: usize) -> Self {
        Self { shared, image_files: HashMap::new(), image_cap: cap, knowledge: 0 }
    }

    /// Decides what can be decided without reading file content. The caller has counted the
    /// event in `stats.events` when it read it (so a decision path that never returns shows).
    pub fn handle(&mut self, ev: PendingExec) -> Routed {
        if ev.is_open() {
            return self.open(ev);
        }
        let stats = &self.shared.stats;
        let k = self.shared.knowledge.load(Ordering::Relaxed);
        if k != self.knowledge {
            self.image_files.clear();
            self.knowledge = k;
        }
        let st = match sfs::fstat_fd(ev.fd()) {
            Ok(st) => st,
            Err(e) => {
                tracing::error!(error = %e, "fstat on exec event failed; allowing");
                self.answer(ev, true);
                return Routed::Done;
            }
        };
        if !sfs::is_regular(&st) {
            self.answer(ev, true);
            return Routed::Done;
        }
        let Some((container, mount)) = self.shared.container_of(&ev, &st) else {
            // Never deny on a superblock or mount we do not know as a container's.
            self.answer(ev, true);
            return Routed::Done;
        };
        let container = &container;
        if !container.first_exec_seen.load(Ordering::Relaxed)
            && !container.first_exec_seen.swap(true, Ordering::Relaxed)
        {
            first_exec(container);
        }
        if !container.ns_known.load(Ordering::Relaxed) || !container.pid_known.load(Ordering::Relaxed) {
            // The container's first exec from its own namespaces: mark the mounts and set
            // vm.memfd_noexec before answering, so nothing the process starts next escapes.
            self.shared.namespaces.on_event(container, ev.tid());
        }
        if self.shared.check_urls(container, &ev) {
            self.answer(ev, false);
            return Routed::Done;
        }
        if let Some(mount) = mount {
            return self.mount_exec(ev, container, mount, driftgate_sys::fs::file_id(&st));
        }
        let id = driftgate_sys::fs::file_id(&st);
        let key = (container.generation, id);
        if let Some(ImageFile { kind, caps }) = self.image_files.get(&key).copied() {
            stats.image_cached.fetch_add(1, Ordering::Relaxed);
            if self.raises_privilege(&ev, container, &st, caps) {
                self.answer(ev, false);
                return Routed::Done;
            }
            if let Err(reason) = self.shared.pin_event(&ev, &id) {
                return self.unsettled(ev, container, id, reason);
            }
            if kind.is_plain() {
                self.answer(ev, true);
                return Routed::Done;
            }
            let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
            return self.shared.indirect(ev, container, kind, &raw_path);
        }
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        // A writable-layer file decided before (same version, same name, same container) is
        // decided from the outcome cache, without the layer lookups.
        let okey: OutcomeKey = (container.generation, id, raw_path);
        if let Some(o) = self.shared.cached_outcome(&okey) {
            let (_, _, raw_path) = okey;
            let job = Job::new(ev, container, id, raw_path, None);
            return self.shared.finish(job, o);
        }
        let (_, _, raw_path) = okey;
        for p in identity_candidates(&raw_path, container.rootfs_bytes()) {
            if let Some(layer) = container.layers.lower_identical(p, &id) {
                // An image file: its manifest hash (no reading) against the IoC set.
                let manifest_hash = container.index.load().hash_for(layer, p, &id);
                if let Some(h) = manifest_hash {
                    stats.manifest_hashes.fetch_add(1, Ordering::Relaxed);
                    if self.shared.iocs.load().lookup(&h).is_some() {
                        let o = Outcome::image_file(p.to_vec(), h);
                        let job = Job::new(ev, container, id, raw_path, None);
                        return self.shared.finish(job, o);
                    }
                }
                if self.image_files.len() >= self.image_cap {
                    self.image_files.clear();
                }
                let kind = self.shared.classify(container, &raw_path, ev.fd(), manifest_hash);
                let caps = driftgate_sys::fs::file_capabilities(ev.fd())
                    .and_then(|b| driftgate_core::privilege::FileCaps::parse(&b).ok())
                    .map_or(0, |c| c.permitted);
                self.image_files.insert(key, ImageFile { kind, caps });
                stats.image_fast.fetch_add(1, Ordering::Relaxed);
                if self.raises_privilege(&ev, container, &st, caps) {
                    self.answer(ev, false);
                    return Routed::Done;
                }
                if let Err(reason) = self.shared.pin_event(&ev, &id) {
                    return self.unsettled(ev, container, id, reason);
                }
                if kind.is_plain() {
                    self.answer(ev, true);
                    return Routed::Done;
                }
                return self.shared.indirect(ev, container, kind, &raw_path);
            }
        }
        let job = Job::new(ev, container, id, raw_path, None);
        // A file hashed before is decided right here; only hashing goes to the workers.
        match self.shared.try_complete(job, false) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }

    /// An exec of a file on one of the container's other mounts (a volume, a tmpfs,
    /// `/dev/shm`): never image content, so decided like an added file. Its hash is cached
    /// per file version for every container that mounts it.
    fn mount_exec(
        &mut self,
        ev: PendingExec,
        c: &Arc<Container>,
        m: Arc<ContainerMount>,
        id: FileId,
    ) -> Routed {
        self.shared.stats.mount_execs.fetch_add(1, Ordering::Relaxed);
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        let job = Job::new(ev, c, id, raw_path, Some(m));
        match self.shared.try_complete(job, false) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }

    fn answer(&self, ev: PendingExec, allow: bool) {
        self.shared.answer(ev, allow);
    }

    /// Whether an exec of an image file (`st`, with file capabilities `caps`) that runs
    /// set-user-ID, set-group-ID or with capabilities is to be refused: its caller's status is
    /// read only then ([`Shared::check_privileged`]).
    fn raises_privilege(
        &self,
        ev: &PendingExec,
        c: &Arc<Container>,
        st: &nix::sys::stat::FileStat,
        caps: u64,
    ) -> bool {
        let grants = driftgate_core::privilege::Grants::of(st.st_mode, st.st_uid, st.st_gid, caps);
        grants.any() && self.shared.check_privileged(c, ev, grants)
    }

    /// An image file that was being written, or had changed, when it was leased: its bytes
    /// are not the image's any more, so it is decided like a writable-layer file without a hash.
    fn unsettled(&self, ev: PendingExec, c: &Arc<Container>, id: FileId, reason: String) -> Routed {
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        self.shared.decide_unverified(Job::new(ev, c, id, raw_path, None), reason);
        Routed::Done
    }
}

impl Shared {
    /// The container an event's file belongs to: by its superblock (a rootfs), else by its
    /// mount (one of the containers' other mounts). `None` (counted) for anything else.
    pub(super) fn container_of(
        &self,
        ev: &PendingExec,
        st: &nix::sys::stat::FileStat,
    ) -> Option<(Arc<Container>, Option<Arc<ContainerMount>>)> {
        if let Some(c) = self.registry.load().rootfs_of(ev.fd(), st) {
            return Some((Arc::clone(c), None));
        }
        match self.namespaces.lookup(ev.fd()) {
            Some(hit) => Some((hit.container, Some(hit.mount))),
            None => {
                self.stats.not_container.fetch_add(1, Ordering::Relaxed);
                // Only container filesystems are marked: an overlay's file that no watched
                // container claims (two overlays sharing an fsid, `uuid=null`, with layers on
                // different filesystems) is a container's exec that was not decided.
                if driftgate_sys::fs::overlay_fsid(ev.fd()).is_some() {
                    self.health.note(crate::daemon::health::Problem::Unattributed, || {
                        format!(
                            "device {}:{} (an overlay layer's pseudo device, and an fsid no single container has)",
                            nix::sys::stat::major(st.st_dev),
                            nix::sys::stat::minor(st.st_dev)
                        )
                    });
                }
                None
            }
        }
    }
}

/// Logs the first-exec race figures of a container that appeared while the daemon ran: how
/// long after its mount was noticed the mark was in place, and when its first exec came.
pub(super) fn first_exec(c: &Container) {
    let (Some(seen), Some(marked)) = (c.mount_seen, c.marked_at.get()) else { return };
    let now = Instant::now();
    tracing::info!(
        container = %c.identity.id,
        runtime = c.identity.runtime,
        mount_to_mark_us = marked.saturating_duration_since(seen).as_micros() as u64,
        mount_to_first_exec_us = now.saturating_duration_since(seen).as_micros() as u64,
        "first exec in container"
    );
}

/// The in-container path candidates for the path the kernel reported. A process inside the
/// container's mount namespace gets the path as the container sees it; an exec through the
/// host-side mountpoint gets `<mountpoint>/<path>`. Both are tried, the verbatim one first;
/// every use checks the candidate against the file's identity, so a container that builds a
/// directory tree mimicking the host mountpoint gains nothing.
pub fn candidate_paths<'a>(raw: &'a [u8], rootfs: &[u8]) -> Vec<&'a [u8]> {
    let mut v = Vec::with_capacity(2);
    if raw.first() == Some(&b'/') {
        v.push(raw);
    }
    if !rootfs.is_empty() && raw.len() > rootfs.len() && raw.starts_with(rootfs) && raw[rootfs.len()] == b'/'
    {
        v.push(&raw[rootfs.len()..]);
    }
    v
}

/// For the lower-identity proof only: a file unlinked after it was opened reads back as
/// `<path> (deleted)`. An image file can be deleted in the container (a whiteout) while still
/// open, and its lower inode is still there, so the name without the suffix is also tried.
/// Sound because the proof checks the inode's identity, not the name.
pub fn identity_candidates<'a>(raw: &'a [u8], rootfs: &[u8]) -> Vec<&'a [u8]> {
    let mut v = candidate_paths(raw, rootfs);
    if let Some(stripped) = raw.strip_suffix(b" (deleted)") {
        v.extend(candidate_paths(stripped, rootfs));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_for_container_and_host_side_paths() {
        let root = b"/run/c/rootfs";
        assert_eq!(candidate_paths(b"/tmp/x", root), vec![&b"/tmp/x"[..]]);
        assert_eq!(
            candidate_paths(b"/run/c/rootfs/tmp/x", root),
            vec![&b"/run/c/rootfs/tmp/x"[..], &b"/tmp/x"[..]]
        );
        assert_eq!(candidate_paths(b"/run/c/rootfsX/y", root), vec![&b"/run/c/rootfsX/y"[..]]);
        assert!(candidate_paths(b"", root).is_empty());
        assert!(candidate_paths(b"memfd:x (deleted)", root).is_empty());
        assert_eq!(
            identity_candidates(b"/bin/ls (deleted)", root),
            vec![&b"/bin/ls (deleted)"[..], &b"/bin/ls"[..]]
        );
    }
}
