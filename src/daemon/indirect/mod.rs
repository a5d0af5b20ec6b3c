//! Files an image program runs besides itself: the program the dynamic loader is asked to run
//! (`/lib64/ld-linux-x86-64.so.2 /tmp/tool`) and the script an interpreter is given
//! (`sh /tmp/x.sh`, `python3 /tmp/x.py`). Only the loader or interpreter raises an exec event;
//! this finds the file among the pending exec's arguments, resolves it as the process would
//! (its root and cwd), and decides on it as if it were executed.
//!
//! Only files classified as loaders or interpreters (once per file version) pay for this;
//! every other exec pays nothing. Which argument is the file is [`driftgate_core::engine::indirect`].
//!
//! Was the loader (or interpreter) invoked *directly*? It also runs when the kernel executes a
//! dynamic program (the loader is its `PT_INTERP`) or a `#!` script: then its arguments are the
//! program's, and the program was decided on its own exec event. The test: the pending call's
//! file name, resolved in the process's root, is the event's file. (Remembering "an
//! interpreter comes next" per thread would be cheaper and forgeable: an exec that fails after
//! it is allowed, with a bad argument pointer, leaves the expectation behind.)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::hot::{identity_candidates, Job, Outcome, Routed, Shared, Target};
use crate::container::Container;
use crate::daemon::health::Problem;
use driftgate_core::engine::indirect::{self as ind, ExecKind};
use driftgate_core::engine::{Evidence, Executed};
use driftgate_core::finding::InterpreterRef;
use driftgate_sys::fs::{self as sfs, FileId};
use driftgate_sys::proc;

mod context;
use context::ExecView;

/// How deep a loader running a loader running an interpreter is followed.
const MAX_DEPTH: usize = 4;

impl Shared {
    /// What an executed image file can run besides itself: by its name, else by what the
    /// image calls the same content. A hard link of busybox named `ls`, or a copy of it named
    /// `x` (allowed under `image_copies = "allow"`), is still busybox: its content's image
    /// paths (from the manifest hash `sha`), or for a hard link the image's interpreter paths
    /// with the same inode, say so. A loader is one only if its ELF header agrees (read
    /// through `fd`).
    pub fn classify(
        &self,
        c: &Container,
        path: &[u8],
        fd: BorrowedFd<'_>,
        sha: Option<[u8; 32]>,
    ) -> ExecKind {
        let by_name = self.classify_name(path, fd);
        if !by_name.is_plain() {
            return by_name;
        }
        if let Some(h) = sha {
            for (p, _) in c.index.load().paths_with(&h) {
                let k = self.classify_name(&p, fd);
                if !k.is_plain() {
                    return k;
                }
            }
        }
        // Hard links share the inode: look at the usual shells' image paths.
        const SHELLS: &[&[u8]] = &[
            b"/bin/busybox",
            b"/usr/bin/busybox",
            b"/bin/sh",
            b"/usr/bin/sh",
            b"/bin/bash",
            b"/usr/bin/bash",
            b"/bin/dash",
            b"/usr/bin/dash",
            b"/bin/ash",
        ];
        match sfs::fstat_fd(fd) {
            Ok(st) if st.st_nlink > 1 && sfs::is_regular(&st) => {
                let id = driftgate_sys::fs::file_id(&st);
                SHELLS
                    .iter()
                    .filter(|p| c.layers.lower_identical(p, &id).is_some())
                    .map(|p| self.classify_name(p, fd))
                    .find(|k| !k.is_plain())
                    .unwrap_or(ExecKind::Plain)
            }
            _ => ExecKind::Plain,
        }
    }

    /// What a file named `path` is by its name alone (and a loader's ELF header).
    fn classify_name(&self, path: &[u8], fd: BorrowedFd<'_>) -> ExecKind {
        let cfg = self.indirect_cfg.load();
        let name = ind::base_name(path);
        if cfg.scripts {
            if let Some(k) = cfg.interpreters.kind_of(name) {
                return k;
            }
        }
        if cfg.loader && ind::loader_name(name) {
            let mut head = [0u8; 4096];
            if let Ok(n) = nix::sys::uio::pread(fd, &mut head, 0) {
                if let Some(e) = driftgate_core::engine::elf::parse(&head[..n]) {
                    if e.e_type == driftgate_core::engine::elf::ET_DYN && e.has_interp == Some(false) {
                        return ExecKind::Loader;
                    }
                }
            }
        }
        ExecKind::Plain
    }

    /// Decides an exec of an image loader or interpreter (`kind`, not plain) at `exec_path`:
    /// allows it, hands back a job for a drift file it would run, or decides it as drift when
    /// what it would run cannot be established ([`Evidence::Unverifiable`]).
    ///
    /// When the marks hold opens, files are found without opening them for reading (`O_PATH`;
    /// an image program's header is read from its lower layer on the host): this may be the
    /// event loop, which must never wait for the answer to its own open. A job whose file must
    /// be read is reopened by a hashing worker ([`Target::reopen`]).
    pub fn indirect(
        &self,
        ev: driftgate_sys::fanotify::PendingExec,
        c: &Arc<Container>,
        kind: ExecKind,
        exec_path: &[u8],
    ) -> Routed {
        self.stats.indirect.fetch_add(1, Ordering::Relaxed);
        let may_open = !self.libraries.marked;
        let found = self.find_target(&ev, c, kind, exec_path, may_open);
        let job = match found {
            Found::Target(target, id, path, mount) => Job::with_target(ev, c, id, path, mount, target),
            Found::Nothing => {
                self.answer(ev, true);
                return Routed::Done;
            }
            // A detection a rule enforces (recorded already).
            Found::Refused => {
                self.answer(ev, false);
                return Routed::Done;
            }
            Found::Unverifiable { why, path, executed, interpreter } => {
                self.stats.indirect_unverifiable.fetch_add(1, Ordering::Relaxed);
                self.health.note(Problem::ArgumentsUnread, || {
                    format!("container {}: {}: {why}", c.id(), driftgate_core::util::printable(exec_path))
                });
                let Ok(st) = sfs::fstat_fd(ev.fd()) else {
                    self.answer(ev, false);
                    return Routed::Done;
                };
                let Ok(fd) = ev.fd().try_clone_to_owned() else {
                    self.answer(ev, false);
                    return Routed::Done;
                };
                let o = Outcome::unverifiable(path, format!("not verifiable: {why}"));
                let target = Target { fd, reopen: false, executed, interpreter, proven: Some(o) };
                Job::with_target(ev, c, driftgate_sys::fs::file_id(&st), exec_path.to_vec(), None, target)
            }
        };
        match self.try_complete(job, false) {
            None => Routed::Done,
            Some(job) => Routed::Slow(Box::new(job)),
        }
    }

    /// What an indirect exec would run that is not the image's.
    fn find_target(
        &self,
        ev: &driftgate_sys::fanotify::PendingExec,
        c: &Arc<Container>,
        kind: ExecKind,
        exec_path: &[u8],
        may_open: bool,
    ) -> Found {
        // Gone: the exec will not happen.
        let Some(pdir) = proc::ProcDir::open(ev.tid()) else { return Found::Nothing };
        let what = if kind == ExecKind::Loader { "loader" } else { "interpreter" };
        let executed = if kind == ExecKind::Loader { Executed::Binary } else { Executed::Script };
        let runner_ref = |runner: &[u8], role: Option<&str>| InterpreterRef {
            kind: what.into(),
            path: String::from_utf8_lossy(runner).into_owned(),
            role: role.map(str::to_string),
        };
        let unverifiable = |why: String, path: &[u8], role: Option<&str>| Found::Unverifiable {
            why,
            path: path.to_vec(),
            executed,
            interpreter: runner_ref(exec_path, role),
        };
        let Some(call) = ev.exec_call() else {
            self.stats.indirect_unread.fetch_add(1, Ordering::Relaxed);
            return unverifiable(
                "its pending call (/proc/<tid>/syscall) could not be read".into(),
                exec_path,
                None,
            );
        };
        let Some(argv) = call.argv.as_ref() else {
            self.stats.indirect_unread.fetch_add(1, Ordering::Relaxed);
            return unverifiable("its argument list could not be read".into(), exec_path, None);
        };
        if ind::starts_interpreter(kind, argv) {
            let shell = matches!(kind, ExecKind::Interpreter(ind::Lang::Shell) | ExecKind::MultiCall);
            if self.check_shell(c, ev.tid(), exec_path, shell) {
                return Found::Refused;
            }
        }
        let complete = !call.argv_truncated;
        let mut view = ExecView::new(&pdir, call);
        if let Err(why) = view.root() {
            return unverifiable(why, exec_path, None);
        }
        let Ok(exec_st) = sfs::fstat_fd(ev.fd()) else { return Found::Nothing };
        let mut direct: Option<bool> = None;
        let mut is_direct =
            |view: &mut ExecView<'_>| *direct.get_or_insert_with(|| invoked_directly(view, call, &exec_st));
        let mut kind = kind;
        let mut start = 0usize;
        let mut runner = exec_path.to_vec();
        // A loader's exec is nearly always a dynamic program's PT_INTERP: rule that out first.
        if kind == ExecKind::Loader && !is_direct(&mut view) {
            return Found::Nothing;
        }
        'plans: for _ in 0..MAX_DEPTH {
            let args = &argv[start..];
            let codes = match ind::plan(kind, ind::base_name(&runner), args, complete, &mut view) {
                ind::Plan::Run(codes) => codes,
                ind::Plan::Unverifiable(why) => return unverifiable(why, &runner, None),
            };
            for code in codes {
                let role = (code.role != "script" && code.role != "program").then_some(code.role);
                let mut found = None;
                for cand in &code.candidates {
                    match self.lookup_code(&mut view, cand, code.python_dir) {
                        Ok(None) => continue,
                        Ok(Some(f)) => {
                            found = Some(f);
                            break;
                        }
                        Err(why) => return unverifiable(format!("{}: {why}", code.role), cand, role),
                    }
                }
                let Some((opath, st)) = found else { continue };
                let id = driftgate_sys::fs::file_id(&st);
                let path = sfs::fd_path(opath.as_fd()).unwrap_or_else(|_| code.candidates[0].clone());
                // The fd the target is decided through: readable, or `O_PATH` for a worker to reopen.
                let readable = || {
                    if may_open {
                        sfs::reopen_readonly(opath.as_fd()).ok()
                    } else {
                        opath.try_clone().ok()
                    }
                };
                let reopen = !may_open;
                let interpreter = runner_ref(&runner, role);
                let mut mount = None;
                if c.holds(opath.as_fd(), &st) {
                    match self.image_proof(c, &id, &path) {
                        // The image's own file; an IoC shipped in the image is still decided.
                        Some(ImageProof::KnownBad(o)) => {
                            let Some(fd) = readable() else { return Found::Nothing };
                            let target =
                                Target { fd, reopen, executed: code.executed, interpreter, proven: Some(o) };
                            return Found::Target(target, id, path, None);
                        }
                        Some(ImageProof::Clean) if code.role == "program" => {
                            // The loader runs an image program; an interpreter runs its script.
                            let head = if may_open {
                                readable()
                            } else {
                                identity_candidates(&path, c.rootfs_bytes())
                                    .into_iter()
                                    .find_map(|p| c.layers.open_lower_readable(p, &id))
                            };
                            let Some(head) = head else { return Found::Nothing };
                            let next = self.classify(c, &path, head.as_fd(), None);
                            if next.is_plain() {
                                return Found::Nothing;
                            }
                            kind = next;
                            start += code.arg.unwrap_or(0);
                            runner = path;
                            continue 'plans;
                        }
                        Some(ImageProof::Clean) => continue,
                        None => {}
                    }
                } else {
                    mount = self.target_mount(c, opath.as_fd());
                }
                // Drift. The file a `#!` script's interpreter or a program's loader is handed
                // by the kernel was decided on its own exec: only a direct invocation's is new.
                if code.arg.is_some() && role.is_none() && !is_direct(&mut view) {
                    self.stats.indirect_not_direct.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(fd) = readable() else { return Found::Nothing };
                let target = Target { fd, reopen, executed: code.executed, interpreter, proven: None };
                return Found::Target(target, id, path, mount);
            }
            return Found::Nothing;
        }
        Found::Nothing
    }

    /// Looks up one candidate file of code: `Ok(None)` when there is no such file (or it is
    /// not one a program can run: a pipe, a directory that is not Python's).
    fn lookup_code(
        &self,
        view: &mut ExecView<'_>,
        cand: &[u8],
        python_dir: bool,
    ) -> Result<Option<(OwnedFd, nix::sys::stat::FileStat)>, String> {
        let Some(fd) = view.lookup(cand)? else {
            self.stats.indirect_unresolved.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let st = sfs::fstat_fd(fd.as_fd()).map_err(|e| e.to_string())?;
        if sfs::is_regular(&st) {
            return Ok(Some((fd, st)));
        }
        if python_dir && sfs::is_dir(&st) {
            // `python3 DIR` runs DIR/__main__.py (or its compiled form).
            for main in [&b"/__main__.py"[..], b"/__main__.pyc"] {
                let mut p = cand.to_vec();
                p.extend_from_slice(main);
                if let Some(found) = self.lookup_code(view, &p, false)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Whether a file of container `c`'s rootfs is an image file (lower-layer inode), and if
    /// its manifest says it is known-bad.
    fn image_proof(&self, c: &Container, id: &FileId, path: &[u8]) -> Option<ImageProof> {
        let key = (c.generation, *id);
        if self.targets.lock().ok().is_some_and(|m| m.get(&key).is_some()) {
            return Some(ImageProof::Clean);
        }
        for p in identity_candidates(path, c.rootfs_bytes()) {
            let Some(layer) = c.layers.lower_identical(p, id) else { continue };
            if let Some(h) = c.index.load().hash_for(layer, p, id) {
                if self.iocs.load().lookup(&h).is_some() {
                    return Some(ImageProof::KnownBad(Outcome::image_file(p.to_vec(), h)));
                }
            }
            if let Ok(mut m) = self.targets.lock() {
                m.insert(key, ());
            }
            return Some(ImageProof::Clean);
        }
        None
    }

    /// The container mount a target file off the rootfs is on (marked or not: a script on a
    /// `noexec` mount is still read by its interpreter).
    fn target_mount(
        &self,
        c: &Container,
        fd: BorrowedFd<'_>,
    ) -> Option<Arc<crate::container::mounts::ContainerMount>> {
        if let Some(hit) = self.namespaces.lookup(fd) {
            if hit.container.generation == c.generation {
                return Some(hit.mount);
            }
        }
        let (legacy, _) = sfs::statx_mount_ids(fd).ok()?;
        c.namespaces.lock().ok()?.find_mount(legacy)
    }
}

/// What an indirect exec was found to run.
enum Found {
    /// A file that is not the image's (or is a known-bad image file): decided by a job.
    Target(Target, FileId, Vec<u8>, Option<Arc<crate::container::mounts::ContainerMount>>),
    /// Only the image's files, or nothing from a file.
    Nothing,
    /// A detection that a rule enforces: refused.
    Refused,
    /// What it would run could not be established: `why`, about `path`.
    Unverifiable { why: String, path: Vec<u8>, executed: Executed, interpreter: InterpreterRef },
}

enum ImageProof {
    Clean,
    KnownBad(Outcome),
}

/// Whether the pending exec names the event's file itself (a direct invocation), rather than a
/// program or script whose loader or interpreter this is. When the name cannot be resolved,
/// it counts as direct: the arguments are then checked, never skipped.
fn invoked_directly(view: &mut ExecView<'_>, call: &proc::ExecCall, exec: &nix::sys::stat::FileStat) -> bool {
    let named = if call.filename.is_empty() && call.regs.flags & libc::AT_EMPTY_PATH != 0 {
        // fexecve / execveat(fd, "", AT_EMPTY_PATH): the file is that fd.
        view.pdir.open_entry(&format!("fd/{}", call.regs.dirfd))
    } else if call.filename.first() == Some(&b'/') || call.regs.dirfd == libc::AT_FDCWD {
        view.lookup(&call.filename).ok().flatten()
    } else {
        view.pdir
            .open_entry(&format!("fd/{}", call.regs.dirfd))
            .and_then(|dir| sfs::open_from(dir.as_fd(), &call.filename).ok())
    };
    match named.and_then(|fd| sfs::fstat_fd(fd.as_fd()).ok()) {
        Some(st) => st.st_dev == exec.st_dev && st.st_ino == exec.st_ino,
        None => true,
    }
}

impl Outcome {
    /// An image file proven by identity whose manifest hash is `sha256`.
    pub fn image_file(path: Vec<u8>, sha256: [u8; 32]) -> Outcome {
        Outcome::new(Evidence::ImageFile, path, Some(sha256))
    }
}
