//! Stage 2: what the executed file is. Its hash (through the event fd, under a read lease, on a
//! hashing worker when it is not cached), and what the image has at its path: an [`Outcome`].

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::container::layers::ImageLookup;
use crate::container::Container;
use driftgate_core::engine::indirect::ExecKind;
use driftgate_core::engine::{Evidence, ImageAtPath};
use driftgate_sys::fs as sfs;

use super::fast::candidate_paths;
use super::state::{HashState, Job, OpenStage, Outcome, OutcomeKey, Routed, Shared};

impl Shared {
    /// Decides a slow-path job, answers it and records a finding. Without `may_hash`, a job
    /// that would need a file hashed is handed back.
    #[must_use]
    pub fn try_complete(&self, mut job: Job, may_hash: bool) -> Option<Job> {
        if job.open == Some(OpenStage::Unclassified) || job.target.as_ref().is_some_and(|t| t.reopen) {
            if !may_hash {
                // Work that opens or reads files: never on the event loop.
                return Some(job);
            }
            if let Some(t) = job.target.as_mut().filter(|t| t.reopen) {
                // A file that cannot be reopened (gone) is decided without its hash.
                if let Ok(fd) = sfs::reopen_readonly(t.fd.as_fd()) {
                    t.fd = fd;
                }
                t.reopen = false;
            }
            if job.open == Some(OpenStage::Unclassified) {
                job = self.classify_open(job)?;
            }
        }
        if let Some(o) = job.target.as_mut().and_then(|t| t.proven.take()) {
            return self.finish(job, o).into_job();
        }
        let key: OutcomeKey = (job.container.generation, job.id, job.raw_path.clone());
        if let Some(o) = self.cached_outcome(&key) {
            return self.finish(job, o).into_job();
        }
        let Some(o) = self.evaluate(&job, may_hash) else { return Some(job) };
        // Only settled outcomes are remembered: a comparison that failed is retried.
        let settled = matches!(
            o.evidence,
            Evidence::UpperFile(
                ImageAtPath::Absent | ImageAtPath::SameContent | ImageAtPath::DifferentContent
            ) | Evidence::MountFile
        ) && o.sha256.is_some()
            && !o.newer;
        if settled {
            if let Ok(mut m) = self.outcomes.lock() {
                m.insert(key, o.clone());
            }
        }
        self.finish(job, o).into_job()
    }

    /// Completes a job on a hashing worker, and any job deciding it hands on (the script a
    /// copied-up interpreter was given).
    pub fn complete_on_worker(&self, job: Job) {
        let mut next = Some(job);
        while let Some(j) = next {
            next = self.try_complete(j, true);
        }
    }

    /// Sends a job that needs hashing to the workers (from any thread). With the slow path's
    /// fd budget spent, the exec is decided now, without its hash.
    pub fn route(&self, job: Job) {
        let waiting = self.stats.in_flight();
        if !self.budget.allows(waiting) {
            self.budget.spent.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "not hashed: {waiting} execs were waiting for the slow path, the most the daemon's file-descriptor budget allows ({})",
                self.budget.limit()
            );
            if job.open == Some(OpenStage::Unclassified) {
                // A file on a remote mount whose header is not read here (it could hang):
                // let through, checked again on its next open.
                self.stats.opens_over_budget.fetch_add(1, Ordering::Relaxed);
                self.answer(job.ev, true);
                return;
            }
            self.decide_unverified(job, reason);
            return;
        }
        match self.router.load().as_ref() {
            Some(r) => {
                let q = if job.id.size >= r.large_bytes { &r.large } else { &r.small };
                if let Err(job) = q.push(job.container.generation, job) {
                    // The workers are stopping: the kernel allows what is left anyway.
                    self.answer(job.ev, true);
                }
            }
            // No workers (stopping): what would open or read a file here is let through, as
            // the kernel does once the group is closed.
            None if job.open == Some(OpenStage::Unclassified)
                || job.target.as_ref().is_some_and(|t| t.reopen) =>
            {
                self.answer(job.ev, true)
            }
            None => self.complete_on_worker(job),
        }
    }

    /// Decides a job without the hash of its file (`reason` says why), answering now.
    pub fn decide_unverified(&self, job: Job, reason: String) {
        let o = self.outcome_for(&job, HashState::Missing(reason));
        if let Routed::Slow(j) = self.finish(job, o) {
            // The copied-up interpreter case hands on its argument: decided the same way.
            self.decide_unverified(*j, "not hashed: the daemon was over its budget".into());
        }
    }

    /// The settled decision of a writable-layer file seen before under this name.
    pub fn cached_outcome(&self, key: &OutcomeKey) -> Option<Outcome> {
        self.outcomes.lock().ok().and_then(|m| m.get(key).cloned())
    }

    pub(super) fn evaluate(&self, job: &Job, may_hash: bool) -> Option<Outcome> {
        // The hash first: without it (and without leave to compute it) nothing below is
        // needed yet, and the worker that hashes does the lookups once.
        match self.exec_hash(job, may_hash) {
            HashState::NotYet => None,
            state => Some(self.outcome_for(job, state)),
        }
    }

    /// What a job's file is, given what is known of its hash.
    pub(super) fn outcome_for(&self, job: &Job, state: HashState) -> Outcome {
        let c = &job.container;
        let newer = matches!(state, HashState::KnownNewer(_));
        let (sha, reason) = match state {
            HashState::Known(h) | HashState::KnownNewer(h) => (Some(h), None),
            HashState::Missing(r) => (None, Some(r)),
            HashState::NotYet => (None, None),
        };
        let may_hash = reason.is_none();
        // A file unlinked since it was opened (its name read back as `<name> (deleted)` if
        // that came after the unlink).
        let deleted = sfs::fstat_fd(job.file_fd()).is_ok_and(|st| st.st_nlink == 0);
        let raw_path = match job.raw_path.strip_suffix(b" (deleted)") {
            Some(name) if deleted => name,
            _ => &job.raw_path[..],
        };
        if let Some(m) = &job.mount {
            let image_paths = sha.map(|h| self.image_paths(c, &h)).unwrap_or_default();
            return Outcome {
                evidence: Evidence::MountFile,
                path: raw_path.to_vec(),
                sha256: sha,
                image_paths,
                mount: Some(Arc::clone(m)),
                kind: ExecKind::Plain,
                reason,
                newer,
                deleted,
            };
        }
        let cands = candidate_paths(raw_path, c.rootfs_bytes());
        // Prefer a candidate that names this very file in the upper layer.
        let verified = cands.iter().copied().find(|p| c.layers.upper_matches(p, &job.id));
        let path: Vec<u8> = match verified {
            Some(p) => p.to_vec(),
            // Unlinked, renamed meanwhile, or not found: the best guess, for display and for
            // the content comparison (which stays sound: equal bytes are image bytes).
            None => cands.last().map(|p| p.to_vec()).unwrap_or_else(|| raw_path.to_vec()),
        };

        let image_at_path = match c.layers.image_lookup(&path) {
            ImageLookup::Absent | ImageLookup::NotRegular => ImageAtPath::Absent,
            ImageLookup::Failed(e) => {
                let id = c.id();
                self.stats.lookup_errors.fetch_add(1, Ordering::Relaxed);
                self.container_warning(
                    &id,
                    || tracing::warn!(container = %id, error = %e, "image lookup failed"),
                );
                ImageAtPath::LookupFailed
            }
            ImageLookup::File(lf) => match sha {
                None => ImageAtPath::PresentUncompared,
                Some(_) if lf.stat.st_size as u64 != job.id.size => ImageAtPath::DifferentContent,
                // The image's hash from its layer manifest: the image file is not read.
                Some(h) if let Some(img) = self.manifest_hash(c, &lf, &path) => {
                    self.stats.manifest_hashes.fetch_add(1, Ordering::Relaxed);
                    if img == h {
                        ImageAtPath::SameContent
                    } else {
                        ImageAtPath::DifferentContent
                    }
                }
                Some(h) => match self.host_file_hash(&lf, may_hash, job.received) {
                    Some(img) if img == h => ImageAtPath::SameContent,
                    Some(_) => ImageAtPath::DifferentContent,
                    None => ImageAtPath::PresentUncompared,
                },
            },
        };
        let image_paths = match (image_at_path, sha) {
            (ImageAtPath::Absent, Some(h)) => self.image_paths(c, &h),
            _ => Vec::new(),
        };
        // A copy-up with the image's content is the image's program, and so is a copy elsewhere
        // (allowed by `image_copies = "allow"`): it may be a loader or an interpreter whose
        // argument is decided (`touch /bin/sh` and `cp /bin/busybox /tmp/x` must not switch
        // that off).
        let copy = image_at_path == ImageAtPath::SameContent || !image_paths.is_empty();
        let kind = if copy && job.target.is_none() && job.open.is_none() {
            self.classify(c, &path, job.ev.fd(), sha)
        } else {
            ExecKind::Plain
        };
        Outcome {
            evidence: Evidence::UpperFile(image_at_path),
            path,
            sha256: sha,
            image_paths,
            mount: None,
            kind,
            reason,
            newer,
            deleted,
        }
    }

    /// The manifest hash of an image file found by a layer lookup, if its layer has a
    /// manifest describing this very file version.
    pub(super) fn manifest_hash(
        &self,
        c: &Container,
        lf: &crate::container::layers::LayerFile,
        path: &[u8],
    ) -> Option<[u8; 32]> {
        c.index.load().hash_for(lf.lower_index?, path, &driftgate_sys::fs::file_id(&lf.stat))
    }

    /// Where the container's image has content with hash `h`, as the union of its layers
    /// shows it now (each candidate from a manifest is confirmed by a layer lookup).
    pub(super) fn image_paths(&self, c: &Container, h: &[u8; 32]) -> Vec<Vec<u8>> {
        const MAX: usize = 16;
        let candidates = c.index.load().paths_with(h);
        let mut out = Vec::new();
        for (p, layer) in candidates {
            if out.len() >= MAX {
                break;
            }
            if let ImageLookup::File(lf) = c.layers.image_lookup(&p) {
                if lf.lower_index == Some(layer) && self.manifest_hash(c, &lf, &p) == Some(*h) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The executed file's SHA-256, from the cache or (when allowed) read through the event fd.
    pub(super) fn exec_hash(&self, job: &Job, may_hash: bool) -> HashState {
        let key = job.hash_key();
        if let Some(h) = self.hashes.lock().ok().and_then(|m| m.get(&key).copied()) {
            self.stats.hash_cache_hits.fetch_add(1, Ordering::Relaxed);
            return HashState::Known(h);
        }
        let limits = **self.hash_limits.load();
        if job.id.size > limits.max_bytes {
            self.stats.too_big.fetch_add(1, Ordering::Relaxed);
            return HashState::Missing(format!(
                "not hashed: {} bytes is more than hashing.max_file_bytes ({})",
                job.id.size, limits.max_bytes
            ));
        }
        if !may_hash {
            return HashState::NotYet;
        }
        // `hashing.max_secs` bounds the whole wait of the exec, queueing included: a queue of
        // slow files cannot hold the execs behind it for longer.
        let left = limits.max_time.saturating_sub(job.received.elapsed());
        if left.is_zero() {
            self.stats.queue_timeouts.fetch_add(1, Ordering::Relaxed);
            return HashState::Missing(format!(
                "not hashed: the exec waited longer than hashing.max_secs ({:.1} s) for a hashing worker",
                limits.max_time.as_secs_f64()
            ));
        }
        use crate::daemon::hot::reader_pool::Hashed;
        // This daemon's own hold of an older version, left being broken by a writer that gave
        // up, would refuse the hash its lease.
        self.holder.clear_stale_break(&job.id);
        match self.readers.hash(job.file_fd(), &job.id, left) {
            Hashed::Done(h, version) => {
                self.stats.hashed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut m) = self.hashes.lock() {
                    m.insert((key.0, version), h);
                }
                if version == job.id {
                    HashState::Known(h)
                } else {
                    // Changed (or only its metadata) since the event: the hash is of what
                    // runs, but not of the version the event named.
                    HashState::KnownNewer(h)
                }
            }
            Hashed::Unsettled => HashState::Missing(
                "not hashed: the file was open for writing, or changed while it was read".into(),
            ),
            Hashed::TimedOut => HashState::Missing(format!(
                "not hashed: reading the file took longer than hashing.max_secs ({:.1} s)",
                limits.max_time.as_secs_f64()
            )),
            Hashed::Unavailable => HashState::Missing(
                "not hashed: every hashing reader is held by a file that does not return its data".into(),
            ),
            Hashed::Stopping => HashState::Missing("not hashed: the daemon is stopping".into()),
        }
    }

    /// The SHA-256 of an image file (to compare a writable-layer file with). `None` when it
    /// cannot be had in time (or at all, without leave to hash).
    pub(super) fn host_file_hash(
        &self,
        lf: &crate::container::layers::LayerFile,
        may_hash: bool,
        received: Instant,
    ) -> Option<[u8; 32]> {
        let id = driftgate_sys::fs::file_id(&lf.stat);
        let key = (0, id);
        if let Some(h) = self.hashes.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Some(h);
        }
        let limits = **self.hash_limits.load();
        if !may_hash || id.size > limits.max_bytes {
            return None;
        }
        let left = limits.max_time.saturating_sub(received.elapsed());
        if left.is_zero() {
            return None;
        }
        let fd = sfs::reopen_readonly(lf.fd.as_fd()).ok()?;
        let crate::daemon::hot::reader_pool::Hashed::Done(h, version) =
            self.readers.hash(fd.as_fd(), &id, left)
        else {
            return None;
        };
        if version != id {
            return None;
        }
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(key, h);
        }
        Some(h)
    }
}
