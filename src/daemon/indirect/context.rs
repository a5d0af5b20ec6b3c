//! The process of a held loader or interpreter exec, as the interpreter rules need it: its
//! environment (read from the pending call, once, only the variables the rules use), its home
//! directory, whether stdin is a terminal, and lookups of the paths it names as the process
//! would make them.
//!
//! Nothing here opens a container file for reading: lookups are `O_PATH`, and `/proc` is not
//! marked. The event loop may run this with `[libraries]` marks holding opens.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use driftgate_core::engine::indirect::ExecContext;
use driftgate_sys::fs as sfs;
use driftgate_sys::proc::{ExecCall, ProcDir, ProcStatus};
use driftgate_sys::procwalk;

/// The variables any rule reads.
const ENV_NAMES: &[&str] = &["HOME", "PATH", "ENV", "BASH_ENV", "PYTHONPATH", "PYTHONSTARTUP"];

pub(super) struct ExecView<'a> {
    pub pdir: &'a ProcDir,
    call: &'a ExecCall,
    root: Option<OwnedFd>,
    cwd: Option<OwnedFd>,
    status: Option<Option<ProcStatus>>,
    env: Option<Result<Variables, String>>,
}

/// Environment variables read from the pending call: name and value, in their order.
type Variables = Vec<(String, Vec<u8>)>;

impl<'a> ExecView<'a> {
    pub fn new(pdir: &'a ProcDir, call: &'a ExecCall) -> ExecView<'a> {
        ExecView { pdir, call, root: None, cwd: None, status: None, env: None }
    }

    /// The process's root directory.
    pub fn root(&mut self) -> Result<BorrowedFd<'_>, String> {
        if self.root.is_none() {
            self.root = Some(
                self.pdir
                    .open_entry("root")
                    .ok_or("its root directory (/proc/<tid>/root) could not be opened")?,
            );
        }
        Ok(self.root.as_ref().expect("set").as_fd())
    }

    fn cwd(&mut self) -> Result<BorrowedFd<'_>, String> {
        if self.cwd.is_none() {
            self.cwd = Some(
                self.pdir
                    .open_entry("cwd")
                    .ok_or("its working directory (/proc/<tid>/cwd) could not be opened")?,
            );
        }
        Ok(self.cwd.as_ref().expect("set").as_fd())
    }

    fn status(&mut self) -> Option<&ProcStatus> {
        if self.status.is_none() {
            self.status = Some(self.pdir.status());
        }
        self.status.as_ref().and_then(|s| s.as_ref())
    }

    /// Looks `path` up as the process would (absolute in its root, relative from its working
    /// directory, through its own `/proc/self`): `Ok(None)` when there is no such file (the
    /// program fails to open it too), `Err` when the lookup cannot be made.
    pub fn lookup(&mut self, path: &[u8]) -> Result<Option<OwnedFd>, String> {
        if path.is_empty() {
            return Ok(None);
        }
        // The one-call lookups answer for nearly every path; a failure (absent, or through
        // procfs, which the daemon cannot see as the process does) is asked of the walk.
        let fast = if path[0] == b'/' {
            sfs::open_in_root(self.root()?, path, false)
        } else {
            sfs::open_from(self.cwd()?, path)
        };
        if let Ok(fd) = fast {
            return Ok(Some(fd));
        }
        let (tgid, tid) = match self.status() {
            Some(ProcStatus { ns_tgid: Some(g), ns_pid: Some(t), .. }) => (*g, *t),
            _ => return Err("its /proc status could not be read".into()),
        };
        self.root()?;
        self.cwd()?;
        let p = procwalk::Process {
            dir: self.pdir,
            root: self.root.as_ref().expect("set").as_fd(),
            cwd: self.cwd.as_ref().expect("set").as_fd(),
            ns_tgid: tgid,
            ns_tid: tid,
        };
        match procwalk::open(&p, path) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if matches!(e.errno, nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Ok(None),
            Err(e) => {
                Err(format!("{} could not be followed: {}", driftgate_core::util::printable(path), e.errno))
            }
        }
    }

    fn environment(&mut self) -> Result<&[(String, Vec<u8>)], String> {
        if self.env.is_none() {
            let tid = self.pdir.tid();
            self.env = Some(driftgate_sys::procenv::exec_env(tid, self.call.regs.envp, ENV_NAMES));
        }
        match self.env.as_ref().expect("set") {
            Ok(v) => Ok(v),
            Err(e) => Err(e.clone()),
        }
    }
}

impl ExecContext for ExecView<'_> {
    fn env(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        debug_assert!(ENV_NAMES.contains(&name), "{name} is read from the environment");
        Ok(self.environment()?.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect())
    }

    fn home(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let h = self.env("HOME")?;
        if !h.is_empty() {
            return Ok(h);
        }
        // Without HOME a shell takes the passwd entry's; the daemon does not read the
        // container's passwd file on the hot path, and root's is `/root` in every image.
        match self.status().map(|s| s.uid) {
            Some(0) => Ok(vec![b"/root".to_vec()]),
            _ => Err("HOME is not set, and the user's home directory is not known".into()),
        }
    }

    fn stdin_is_terminal(&mut self) -> bool {
        self.pdir.readlink("fd/0").is_some_and(|l| {
            l.starts_with(b"/dev/pts/") || l.starts_with(b"/dev/tty") || l.starts_with(b"/dev/console")
        })
    }
}
