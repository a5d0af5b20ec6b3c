//! Stage 1 for opens (`[libraries]`): every open of a file in a container raises a
//! `FAN_OPEN_PERM` event. Only inodes whose bytes cannot change under a mark are switched off
//! for good after the first (an evictable inode ignore mark): not a regular file; an image
//! inode proven by lower-layer identity. Every other file is checked on each open, its ELF
//! header read under a read lease held a moment (writers wait): a file that is not a shared
//! object (no ELF magic, or an ELF type other than `ET_DYN`: its exec still comes as an exec
//! event) is let through, and is checked again next time, since a write that raises no modify
//! event (Linux AIO) could turn it into one. (Where the kernel has BPF LSM, the kernel layer
//! also checks the mapping itself.) A copy-up with the image's bytes is switched off until it
//! is written again (stage 3).
//!
//! What is left is a shared object in the writable layer or on a mount: decided as a binary is
//! (stage 2 hashes it, stage 3 judges it as a library), unless the open is an exec's own (the
//! kernel opens the program and its loader for the exec event first, then for an open event)
//! or the daemon's own (reading a script an interpreter was given).
//!
//! An interpreter's open of code that is not the image's (`import x`) is decided as a script
//! (`code_open.rs`).
//!
//! Nothing here opens a file: the event loop must never wait for its own answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::container::mounts::ContainerMount;
use crate::container::Container;
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::fs::{self as sfs, FileId};
use driftgate_sys::proc;

use super::fast::{identity_candidates, FastPath};
use super::state::{Job, OpenStage, Outcome, Routed, Shared};

/// What the first bytes of an opened file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    /// Not something the dynamic loader maps.
    Harmless,
    SharedObject,
}

/// Reads the ELF identification and type through the event's fd.
pub(super) fn header(fd: std::os::fd::BorrowedFd<'_>) -> Header {
    let mut head = [0u8; 18];
    match nix::sys::uio::pread(fd, &mut head, 0) {
        Ok(n) if driftgate_core::engine::elf::is_shared_object(&head[..n]) => Header::SharedObject,
        Ok(_) => Header::Harmless,
        // Unreadable now (an I/O error): not proven harmless, so decided.
        Err(_) => Header::SharedObject,
    }
}

/// Filesystems whose reads are served locally (memory or a local block device): a file's
/// header is read on the event loop. Any other (NFS, FUSE, CIFS, Ceph...) could hang in `read`,
/// so its header is read by a worker.
fn reads_locally(fstype: &str) -> bool {
    matches!(
        fstype,
        "tmpfs"
            | "ramfs"
            | "devtmpfs"
            | "ext4"
            | "ext3"
            | "ext2"
            | "xfs"
            | "btrfs"
            | "overlay"
            | "f2fs"
            | "vfat"
    )
}

impl FastPath {
    /// Decides an open event on the event loop, or hands it to the workers.
    pub(super) fn open(&mut self, ev: PendingExec) -> Routed {
        let shared = Arc::clone(&self.shared);
        let stats = &shared.stats;
        stats.opens.fetch_add(1, Ordering::Relaxed);
        if !shared.libraries.on() {
            // Switched off by a reload: let opens through and stop them inode by inode.
            shared.ignore_opens(&ev);
            shared.answer(ev, true);
            return Routed::Done;
        }
        let st = match sfs::fstat_fd(ev.fd()) {
            Ok(st) => st,
            Err(_) => {
                shared.answer(ev, true);
                return Routed::Done;
            }
        };
        if !sfs::is_regular(&st) {
            // A device, FIFO or socket is never mapped as code.
            shared.ignore_opens(&ev);
            shared.answer(ev, true);
            return Routed::Done;
        }
        let Some((container, mount)) = shared.container_of(&ev, &st) else {
            // Not (or no longer) a container's: never decided, and not ignored either, so a
            // container that comes back under this superblock is checked.
            shared.answer(ev, true);
            return Routed::Done;
        };
        let id = driftgate_sys::fs::file_id(&st);
        if mount.as_ref().is_some_and(|m| !reads_locally(&m.fstype)) {
            let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
            let mut job = Job::new(ev, &container, id, raw_path, mount);
            job.open = Some(OpenStage::Unclassified);
            return Routed::Slow(Box::new(job));
        }
        if header(ev.fd()) == Header::Harmless {
            // Only an image inode is switched off: its bytes cannot change under the mark
            // without a copy-up (a new inode). Anything else is checked on every open: a
            // write that raises no modify event (Linux AIO) would turn an ignored file into
            // a library unseen.
            if mount.is_none() && image_inode(&container, &ev, &id) {
                shared.ignore_harmless(&ev);
                shared.answer(ev, true);
                return Routed::Done;
            }
            // Code an interpreter loads (`import x`): decided as a script, never switched off.
            let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
            if shared.loads_code(ev.tid(), &raw_path) {
                return shared.code_open(ev, &container, mount, id, raw_path);
            }
            // Where the kernel layer checks this container's executable mappings itself, a
            // file rewritten unseen cannot be mapped as code: it is switched off too (unless
            // its name is code to an interpreter, which no mapping check sees).
            let kernel_checks = shared.namespaces.kernel().checks_mappings(&container);
            if kernel_checks && !driftgate_core::engine::indirect::code_name(&raw_path) {
                shared.ignore_harmless(&ev);
                shared.answer(ev, true);
                return Routed::Done;
            }
            // The header is read again under a read lease, held a moment (writers wait): the
            // bytes the loader maps through this open are the bytes checked.
            let _ = shared.pin_event(&ev, &id);
            if header(ev.fd()) == Header::Harmless {
                stats.opens_rechecked.fetch_add(1, Ordering::Relaxed);
                shared.answer(ev, true);
                return Routed::Done;
            }
        }
        self.shared_object(ev, &container, mount, id)
    }

    /// A shared object: the image's (by identity), or decided as a library.
    fn shared_object(
        &mut self,
        ev: PendingExec,
        c: &Arc<Container>,
        mount: Option<Arc<ContainerMount>>,
        id: FileId,
    ) -> Routed {
        let shared = Arc::clone(&self.shared);
        let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
        if mount.is_none() {
            for p in identity_candidates(&raw_path, c.rootfs_bytes()) {
                let Some(layer) = c.layers.lower_identical(p, &id) else { continue };
                if let Some(h) = c.index.load().hash_for(layer, p, &id) {
                    if shared.iocs.load().lookup(&h).is_some() {
                        // The image's own library is known-bad: decided on every open.
                        let outcome = Outcome::image_file(p.to_vec(), h);
                        let mut job = Job::new(ev, c, id, raw_path, None);
                        job.open = Some(OpenStage::Library);
                        return shared.finish(job, outcome);
                    }
                }
                shared.ignore_opens(&ev);
                shared.answer(ev, true);
                return Routed::Done;
            }
        }
        let mut job = Job::new(ev, c, id, raw_path, mount);
        job.open = Some(OpenStage::Library);
        match shared.library_open(job) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }
}

/// Whether the event's file is an image inode, proven by lower-layer identity.
fn image_inode(c: &Container, ev: &PendingExec, id: &FileId) -> bool {
    let raw_path = sfs::fd_path(ev.fd()).unwrap_or_default();
    identity_candidates(&raw_path, c.rootfs_bytes())
        .into_iter()
        .any(|p| c.layers.lower_identical(p, id).is_some())
}

impl Shared {
    /// Places an ignore mark for the opens of the event's inode (a failure only costs the
    /// next open an event).
    pub(super) fn ignore_opens(&self, ev: &PendingExec) {
        match ev.ignore_opens() {
            Ok(()) => self.stats.ignore_marks.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let n = self.stats.ignore_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, errors = n, "could not place an ignore mark; those opens stay checked");
                }
                n
            }
        };
    }

    /// Ignores a file that is not a shared object, unless someone has it open for writing:
    /// a write clears an ignore mark, but bytes stored through a shared writable mapping do
    /// not, so a file being written stays checked on every open.
    fn ignore_harmless(&self, ev: &PendingExec) {
        match sfs::try_read_lease(ev.fd()) {
            Ok(()) => {
                sfs::release_lease(ev.fd());
                self.ignore_opens(ev);
            }
            Err(e) if e.errno == nix::errno::Errno::EAGAIN => {
                self.stats.opens_being_written.fetch_add(1, Ordering::Relaxed);
            }
            // No leases on this filesystem: nothing tells whether it is being written.
            Err(_) => self.ignore_opens(ev),
        }
    }

    /// A shared object that is not proven to be the image's, opened: the exec's own open and
    /// the daemon's own are let through; anything else is decided (from the caches, or handed
    /// back for hashing).
    #[must_use]
    pub(super) fn library_open(&self, job: Job) -> Option<Job> {
        match self.open_by(&job) {
            Some(allow) => {
                self.answer(job.ev, allow);
                None
            }
            None => {
                self.stats.library_opens.fetch_add(1, Ordering::Relaxed);
                self.try_complete(job, false)
            }
        }
    }

    /// Opens of a shared object that are not a load to decide, by who makes them: the daemon
    /// itself, an exec (its program or loader, decided on the exec event), a writer (a load
    /// opens for reading; a writer is never refused, and the file is not ignored while written),
    /// the thread whose exec of this file was just refused (refused again, no second finding).
    /// `Some(answer)` for those; `None`: decide it as a load.
    pub(super) fn open_by(&self, job: &Job) -> Option<bool> {
        let tid = job.ev.tid();
        if proc::own_thread(tid) {
            self.stats.opens_by_daemon.fetch_add(1, Ordering::Relaxed);
            return Some(true);
        }
        let call = driftgate_sys::calls::pending_call(tid);
        if call == Some(driftgate_sys::calls::PendingCall::Exec) || self.loader_run(tid, &job.id) {
            // The program (or its loader) being executed, or the program the loader was
            // asked to run: decided on the exec.
            self.stats.opens_by_exec.fetch_add(1, Ordering::Relaxed);
            return Some(true);
        }
        if call.is_some_and(|c| c.writes()) {
            self.stats.opens_being_written.fetch_add(1, Ordering::Relaxed);
            return Some(true);
        }
        let refused = self.refused_execs.lock().ok().is_some_and(|m| {
            m.get(&(tid, job.id)).is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10))
        });
        if refused {
            self.stats.opens_after_refusal.fetch_add(1, Ordering::Relaxed);
            return Some(false);
        }
        None
    }

    /// Whether thread `tid` was just allowed to run file version `id` through the image's
    /// loader (each allowance covers the loader's open, within a few seconds).
    fn loader_run(&self, tid: i32, id: &FileId) -> bool {
        let Ok(m) = self.loader_runs.lock() else { return false };
        m.get(&(tid, *id)).is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10))
    }

    /// On a worker: reads the header of a file on a remote mount, then goes on as the event
    /// loop would have. `None` when it was answered.
    pub(super) fn classify_open(&self, mut job: Job) -> Option<Job> {
        if header(job.ev.fd()) == Header::Harmless {
            if self.loads_code(job.ev.tid(), &job.raw_path) {
                job.open = Some(OpenStage::Code);
                if let Some(allow) = self.open_by(&job) {
                    self.answer(job.ev, allow);
                    return None;
                }
                self.stats.code_opens.fetch_add(1, Ordering::Relaxed);
                return Some(job);
            }
            // A mount's file: never switched off (see `FastPath::open`).
            self.stats.opens_rechecked.fetch_add(1, Ordering::Relaxed);
            self.answer(job.ev, true);
            return None;
        }
        job.open = Some(OpenStage::Library);
        if let Some(allow) = self.open_by(&job) {
            self.answer(job.ev, allow);
            return None;
        }
        self.stats.library_opens.fetch_add(1, Ordering::Relaxed);
        Some(job)
    }
}
