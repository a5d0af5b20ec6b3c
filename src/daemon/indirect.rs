//! Files an image program runs besides itself: the program the dynamic loader is asked to run
//! (`/lib64/ld-linux-x86-64.so.2 /tmp/tool`) and the script an interpreter is given
//! (`sh /tmp/x.sh`, `python3 /tmp/x.py`). Only the loader or interpreter raises an exec event;
//! this finds the file among the pending exec's arguments, resolves it as the process would
//! (its root and cwd), and decides on it as if it were executed.
//!
//! Only files classified as loaders or interpreters (once per file version) pay for this;
//! every other exec pays nothing. Which argument is the file is [`crate::engine::indirect`].
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
use crate::engine::indirect::{self as ind, ExecKind, Lang};
use crate::engine::{Evidence, Executed};
use crate::finding::InterpreterRef;
use crate::sys::fs::{self as sfs, FileId};
use crate::sys::proc;

/// How deep a loader running a loader running an interpreter is followed.
const MAX_DEPTH: usize = 4;

impl Shared {
    /// What an executed image file can run besides itself, from its name and (for a possible
    /// loader) its ELF header, read through `fd`.
    pub fn classify(&self, path: &[u8], fd: BorrowedFd<'_>) -> ExecKind {
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
                if let Some(e) = crate::engine::elf::parse(&head[..n]) {
                    if e.e_type == crate::engine::elf::ET_DYN && e.has_interp == Some(false) {
                        return ExecKind::Loader;
                    }
                }
            }
        }
        ExecKind::Plain
    }

    /// Decides an exec of an image loader or interpreter (`kind`, not plain) at `exec_path`:
    /// allows it, or hands back a job for the file it was asked to run.
    ///
    /// When the marks hold opens, the file is found without opening it for reading (`O_PATH`;
    /// an image program's header is read from its lower layer on the host): this may be the
    /// event loop, which must never wait for the answer to its own open. A job whose file must
    /// be read is reopened by a hashing worker ([`Target::reopen`]).
    pub fn indirect(
        &self,
        ev: crate::sys::fanotify::PendingExec,
        c: &Arc<Container>,
        kind: ExecKind,
        exec_path: &[u8],
    ) -> Routed {
        self.stats.indirect.fetch_add(1, Ordering::Relaxed);
        let may_open = !self.libraries.marked;
        match self.find_target(&ev, c, kind, exec_path, may_open) {
            Some((target, id, path, mount)) => {
                let job = Job::with_target(ev, c, id, path, mount, target);
                match self.try_complete(job, false) {
                    None => Routed::Done,
                    Some(job) => Routed::Slow(Box::new(job)),
                }
            }
            None => {
                self.answer(ev, true);
                Routed::Done
            }
        }
    }

    /// The drift file an indirect exec would run, or `None` when there is nothing to decide.
    #[allow(clippy::type_complexity)]
    fn find_target(
        &self,
        ev: &crate::sys::fanotify::PendingExec,
        c: &Arc<Container>,
        kind: ExecKind,
        exec_path: &[u8],
        may_open: bool,
    ) -> Option<(Target, FileId, Vec<u8>, Option<Arc<crate::container::mounts::ContainerMount>>)> {
        // Gone: the exec will not happen.
        let pdir = proc::ProcDir::open(ev.tid())?;
        let unread = |what: &str| {
            self.stats.indirect_unread.fetch_add(1, Ordering::Relaxed);
            self.health.note(Problem::ArgumentsUnread, || {
                format!(
                    "container {}: {} {}: {what}",
                    c.id(),
                    crate::util::printable(exec_path),
                    if kind == ExecKind::Loader { "(loader)" } else { "(interpreter)" }
                )
            });
        };
        let Some(call) = pdir.exec_call() else {
            unread("its pending call (/proc/<tid>/syscall) could not be read");
            return None;
        };
        let Some(argv) = call.argv.as_ref() else {
            unread("its argument list could not be read");
            return None;
        };
        // The process's root, opened only once there is a name to resolve.
        let mut root_fd: Option<OwnedFd> = None;
        let mut root = || -> Option<OwnedFd> {
            if root_fd.is_none() {
                root_fd = pdir.open_entry("root");
                if root_fd.is_none() {
                    unread("its root directory (/proc/<tid>/root) could not be opened");
                }
            }
            root_fd.as_ref().and_then(|f| f.try_clone().ok())
        };
        let exec_st = sfs::fstat_fd(ev.fd()).ok()?;
        let mut kind = kind;
        let mut start = 0usize;
        let mut runner = exec_path.to_vec();
        // A loader's exec is nearly always a dynamic program's PT_INTERP: rule that out first.
        let mut direct_known = false;
        if kind == ExecKind::Loader {
            if !invoked_directly(&pdir, root()?.as_fd(), &call, &exec_st) {
                return None;
            }
            direct_known = true;
        }
        for _ in 0..MAX_DEPTH {
            let args = &argv[start..];
            let (idx, executed, what) = match kind {
                ExecKind::Plain => return None,
                ExecKind::Loader => (ind::loader_target(args)?, Executed::Binary, "loader"),
                ExecKind::Interpreter(lang) => {
                    (ind::script_target(lang, args)?, Executed::Script, "interpreter")
                }
                ExecKind::MultiCall => {
                    let (applet, at) = ind::multicall_applet(args)?;
                    if !ind::shell_applet(applet) {
                        return None;
                    }
                    (at + ind::script_target(Lang::Shell, &args[at..])?, Executed::Script, "interpreter")
                }
            };
            let arg = &args[idx];
            let opath = match resolve(&pdir, root()?.as_fd(), arg) {
                Ok(fd) => fd,
                Err(e) => {
                    self.stats.indirect_unresolved.fetch_add(1, Ordering::Relaxed);
                    // No such file: the interpreter fails too. Anything else was not checked.
                    if !matches!(e, nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) {
                        self.health.note(Problem::ArgumentUnresolved, || {
                            format!("container {}: {}: {e}", c.id(), crate::util::printable(arg))
                        });
                    }
                    return None;
                }
            };
            let st = sfs::fstat_fd(opath.as_fd()).ok()?;
            if !sfs::is_regular(&st) {
                return None;
            }
            let id = FileId::from_stat(&st);
            let path = sfs::fd_path(opath.as_fd()).unwrap_or_else(|_| arg.clone());
            // The fd the target is decided through: readable, or `O_PATH` for a worker to reopen.
            let readable = || {
                if may_open {
                    sfs::reopen_readonly(opath.as_fd()).ok()
                } else {
                    opath.try_clone().ok()
                }
            };
            let reopen = !may_open;
            let interpreter =
                InterpreterRef { kind: what.into(), path: String::from_utf8_lossy(&runner).into_owned() };
            let mut mount = None;
            if c.holds(opath.as_fd(), &st) {
                if let Some(image) = self.image_proof(c, &id, &path) {
                    match image {
                        // The image's own file; an IoC shipped in the image is still decided.
                        ImageProof::KnownBad(o) => {
                            let target =
                                Target { fd: readable()?, reopen, executed, interpreter, proven: Some(o) };
                            return Some((target, id, path, None));
                        }
                        ImageProof::Clean if kind == ExecKind::Loader => {
                            // The loader runs an image program; an interpreter runs its script.
                            let head = if may_open {
                                readable()?
                            } else {
                                identity_candidates(&path, c.rootfs_bytes())
                                    .into_iter()
                                    .find_map(|p| c.layers.open_lower_readable(p, &id))?
                            };
                            let next = self.classify(&path, head.as_fd());
                            if next.is_plain() {
                                return None;
                            }
                            kind = next;
                            start += idx;
                            runner = path;
                            continue;
                        }
                        ImageProof::Clean => return None,
                    }
                }
            } else {
                mount = self.target_mount(c, opath.as_fd());
            }
            // Drift. Unless the runner was invoked directly, these are a program's arguments.
            if !direct_known && !invoked_directly(&pdir, root()?.as_fd(), &call, &exec_st) {
                self.stats.indirect_not_direct.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            return Some((
                Target { fd: readable()?, reopen, executed, interpreter, proven: None },
                id,
                path,
                mount,
            ));
        }
        None
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

enum ImageProof {
    Clean,
    KnownBad(Outcome),
}

/// Resolves a path argument of the process as the process would: absolute ones in its root,
/// relative ones from its cwd; `/dev/fd/N`, `/proc/self/fd/N` and `/dev/stdin` through its fd
/// table. `O_PATH`; `None` when there is no such file.
fn resolve(pdir: &proc::ProcDir, root: BorrowedFd<'_>, arg: &[u8]) -> Result<OwnedFd, nix::errno::Errno> {
    if let Some(n) = fd_argument(arg) {
        return pdir.open_entry(&format!("fd/{n}")).ok_or(nix::errno::Errno::ENOENT);
    }
    if arg.first() == Some(&b'/') {
        return sfs::open_in_root(root, arg, false).map_err(|e| e.errno);
    }
    let mut full = pdir.readlink("cwd").ok_or(nix::errno::Errno::EACCES)?;
    full.push(b'/');
    full.extend_from_slice(arg);
    sfs::open_in_root(root, &full, false).map_err(|e| e.errno)
}

/// `/dev/fd/N`, `/proc/self/fd/N` (the process's own fds) and `/dev/stdin` (fd 0).
fn fd_argument(arg: &[u8]) -> Option<u32> {
    if arg == b"/dev/stdin" {
        return Some(0);
    }
    let n = arg.strip_prefix(b"/dev/fd/").or_else(|| arg.strip_prefix(b"/proc/self/fd/"))?;
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// Whether the pending exec names the event's file itself (a direct invocation), rather than a
/// program or script whose loader or interpreter this is. When the name cannot be resolved,
/// it counts as direct: the arguments are then checked, never skipped.
fn invoked_directly(
    pdir: &proc::ProcDir,
    root: BorrowedFd<'_>,
    call: &proc::ExecCall,
    exec: &nix::sys::stat::FileStat,
) -> bool {
    let named = if call.filename.is_empty() && call.regs.flags & libc::AT_EMPTY_PATH != 0 {
        // fexecve / execveat(fd, "", AT_EMPTY_PATH): the file is that fd.
        pdir.open_entry(&format!("fd/{}", call.regs.dirfd))
    } else if call.filename.first() == Some(&b'/') {
        sfs::open_in_root(root, &call.filename, false).ok()
    } else {
        let base = if call.regs.dirfd == libc::AT_FDCWD {
            pdir.readlink("cwd")
        } else {
            pdir.readlink(&format!("fd/{}", call.regs.dirfd))
        };
        base.and_then(|mut full| {
            full.push(b'/');
            full.extend_from_slice(&call.filename);
            sfs::open_in_root(root, &full, false).ok()
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_arguments_are_recognised() {
        assert_eq!(fd_argument(b"/dev/fd/63"), Some(63));
        assert_eq!(fd_argument(b"/proc/self/fd/3"), Some(3));
        assert_eq!(fd_argument(b"/dev/stdin"), Some(0));
        assert_eq!(fd_argument(b"/dev/fd/x"), None);
        assert_eq!(fd_argument(b"/tmp/x.sh"), None);
    }
}
