//! Stage 1 for opens of interpreter code (`[libraries]`): what an interpreter loads by itself,
//! which no argument names: `import x`, `PYTHONPATH`, `sitecustomize`, `.pth` files, `require`,
//! `-r`, `perl -MFoo`. An open for reading, by a process whose program is an interpreter, of a
//! file that is not the image's and that this interpreter loads as code (by its name:
//! [`driftgate_core::engine::indirect::loads_as_code`]) is decided as a script is.
//!
//! A compiled Python file in the writable layer is the interpreter's cache of its source when
//! that source is the image's and the file's header names the source's modification time and
//! size (or its hash, checked by Python): Python writes those beside the image's own sources
//! at run time, and uses them only while they match.
//!
//! Shells are not decided here: a shell reads data files the way it reads code.

use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::container::mounts::ContainerMount;
use crate::container::Container;
use driftgate_core::engine::indirect::{self as ind, ExecKind};
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::fs::FileId;
use driftgate_sys::proc;

use super::fast::identity_candidates;
use super::state::{Job, OpenStage, Routed, Shared};

impl Shared {
    /// Whether this open by thread `tid` of the file at `raw_path` is an interpreter loading
    /// code: the file's name is code to some interpreter, and the opener's program is one that
    /// loads it. Costs a readlink of the opener's `exe`, for such names only.
    pub(super) fn loads_code(&self, tid: i32, raw_path: &[u8]) -> bool {
        if !ind::code_name(raw_path) || proc::own_thread(tid) {
            return false;
        }
        let Some(exe) = proc::read_exe(tid) else { return false };
        let cfg = self.indirect_cfg.load();
        if !cfg.scripts {
            return false;
        }
        match cfg.interpreters.kind_of(ind::base_name(&exe)) {
            Some(ExecKind::Interpreter(lang)) => ind::loads_as_code(lang, raw_path),
            _ => false,
        }
    }

    /// Decides an interpreter's open of code that is not an image inode: the interpreter's
    /// own script (decided on its exec), a write, or Python's cache of an image source are let
    /// through; anything else is a job decided as a script.
    pub(super) fn code_open(
        &self,
        ev: PendingExec,
        c: &Arc<Container>,
        mount: Option<Arc<ContainerMount>>,
        id: FileId,
        raw_path: Vec<u8>,
    ) -> Routed {
        if mount.is_none() && self.pyc_of_image_source(c, ev.fd(), &raw_path) {
            self.stats.code_opens_cache.fetch_add(1, Ordering::Relaxed);
            self.answer(ev, true);
            return Routed::Done;
        }
        let mut job = Job::new(ev, c, id, raw_path, mount);
        job.open = Some(OpenStage::Code);
        if let Some(allow) = self.open_by(&job) {
            self.answer(job.ev, allow);
            return Routed::Done;
        }
        self.stats.code_opens.fetch_add(1, Ordering::Relaxed);
        match self.try_complete(job, false) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }

    /// Whether the opened file is a compiled Python file whose source is the image's file,
    /// with that source's modification time and size (or a hash Python checks) in its header.
    fn pyc_of_image_source(&self, c: &Container, fd: BorrowedFd<'_>, raw_path: &[u8]) -> bool {
        let mut head = [0u8; 16];
        let Ok(16) = nix::sys::uio::pread(fd, &mut head, 0) else { return false };
        let flags = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        for p in identity_candidates(raw_path, c.rootfs_bytes()) {
            let Some(src) = ind::pyc_source(p) else { continue };
            let crate::container::layers::ImageLookup::File(lf) = c.layers.image_lookup(&src) else {
                continue;
            };
            if lf.lower_index.is_none() {
                return false; // a source in the writable layer is drift itself
            }
            return match flags {
                // Timestamp-based: Python uses it while the source's mtime and size match.
                0 => {
                    let mtime = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
                    let size = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
                    mtime == lf.stat.st_mtime as u32 && size == lf.stat.st_size as u32
                }
                // Hash-based and checked: Python compares the source's hash itself.
                3 => true,
                _ => false,
            };
        }
        false
    }
}
