//! Exec latency measured *inside* a scratch container: for exec paths that only exist in a
//! container's own mount namespace (a volume) or that driftgate decides from the process's
//! view (an interpreter given a script, a dynamic program and its loader).
//!
//! `driftgate bench exec-inside` (hidden) is the runner: it enters a new mount namespace,
//! bind-mounts the volumes, chroots into the container's rootfs, execs one rootfs program
//! (as every container starts: that exec is what makes driftgate mark the namespace's mounts),
//! then times `posix_spawn` + `waitpid` of the workload and prints the samples (µs).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::BenchError;

/// What runs inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inside {
    /// `/vol/true` from a bind-mounted host directory.
    Volume,
    /// `/bin/sh /opt/script.sh` (busybox as sh, an image script that exits).
    Script,
    /// `/usr/bin/true`, a dynamic program: its exec and its loader's.
    Dynamic,
    /// `python3 -c pass` in a real image: an interpreter start (its exec, its loader's, and
    /// with `[libraries]` the opens of its libraries and standard library).
    Python,
}

impl Inside {
    pub fn name(self) -> &'static str {
        match self {
            Inside::Volume => "volume",
            Inside::Script => "script",
            Inside::Dynamic => "dynamic",
            Inside::Python => "python",
        }
    }

    /// The program and its arguments, as the container sees them.
    fn argv(self) -> &'static [&'static str] {
        match self {
            Inside::Volume => &["/vol/true"],
            Inside::Script => &["/bin/sh", "/opt/script.sh"],
            Inside::Dynamic => &["/usr/bin/true"],
            Inside::Python => &["/usr/bin/python3", "-c", "pass"],
        }
    }
}

/// Host files the inside workloads need in the image: (path in the image, host file).
pub fn image_files() -> Vec<(&'static str, PathBuf)> {
    let canon = |p: &str| std::fs::canonicalize(p).ok();
    let mut v = Vec::new();
    if let Some(bb) = canon("/bin/busybox") {
        v.push(("bin/sh", bb));
    }
    for (img, host) in [
        ("lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"),
        ("lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ("usr/bin/true", "/usr/bin/true"),
    ] {
        if let Some(h) = canon(host) {
            v.push((img, h));
        }
    }
    v
}

/// Measures `iterations` execs of the `what` workload inside the container at `rootfs` (after
/// `warmup` untimed ones), with `volume` bind-mounted at `/vol`. An interrupt (`sig`) stops the
/// runner at once.
pub fn measure(
    driftgate: &Path,
    rootfs: &Path,
    volume: &Path,
    what: Inside,
    warmup: usize,
    iterations: usize,
    sig: &nix::sys::signalfd::SignalFd,
) -> Result<Vec<f64>, BenchError> {
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut cmd = Command::new(driftgate);
    cmd.args(["bench", "exec-inside", "--root"])
        .arg(rootfs)
        .arg("--bind")
        .arg(format!("{}:/vol", volume.display()))
        .args(["--warmup", &warmup.to_string(), "--iterations", &iterations.to_string(), "--"])
        .args(what.argv())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = driftgate_sys::process::unblock_signals_in_child(&mut cmd)
        .spawn()
        .map_err(|e| BenchError::Setup(format!("exec-inside: {e}")))?;
    // Wait for the runner, or for an interrupt (then stop the runner by its pid).
    let mut stdout = child.stdout.take().expect("piped");
    loop {
        let mut fds = [
            nix::poll::PollFd::new(stdout.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(sig.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Interrupted);
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            break;
        }
    }
    let mut text = String::new();
    let _ = stdout.read_to_string(&mut text);
    let out = child.wait_with_output().map_err(|e| BenchError::Setup(format!("exec-inside: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "exec-inside {}: {}",
            what.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    text.split_whitespace()
        .map(|v| v.parse().map_err(|e| BenchError::Setup(format!("exec-inside output: {e}"))))
        .collect()
}

/// The runner (in a process of its own, single-threaded when it starts).
pub fn run_inside(
    root: &Path,
    binds: &[(PathBuf, PathBuf)],
    warmup: usize,
    iterations: usize,
    argv: &[String],
) -> Result<Vec<f64>, String> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .map_err(|e| format!("make / private: {e}"))?;
    for (src, dst) in binds {
        let at = root.join(dst.strip_prefix("/").unwrap_or(dst));
        std::fs::create_dir_all(&at).map_err(|e| format!("mkdir {}: {e}", at.display()))?;
        mount::<Path, Path, str, str>(Some(src), &at, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .map_err(|e| format!("bind {}: {e}", src.display()))?;
    }
    nix::unistd::chroot(root).map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
    // A PID namespace of the container's own, as every runtime makes: the workload runs in it
    // (its init is a child that waits), so driftgate's kernel layer sees a container task.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(pid): {e}"))?;
    let init = driftgate_sys::process::fork_pid_namespace_init().map_err(|e| e.to_string())?;
    let run = || -> Result<Vec<f64>, String> {
        // The container's first exec, from its rootfs.
        spawn_wait(&["/bin/true".to_owned()])?;
        for _ in 0..warmup {
            spawn_wait(argv)?;
        }
        (0..iterations).map(|_| spawn_wait(argv)).collect()
    };
    let res = run();
    let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(init, None);
    res
}

/// posix_spawn + waitpid; µs.
pub(crate) fn spawn_wait(argv: &[String]) -> Result<f64, String> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
    let args: Vec<CString> = argv.iter().map(|a| CString::new(a.as_bytes()).expect("no NUL")).collect();
    let actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    let attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    let envp: [&std::ffi::CStr; 0] = [];
    let t = Instant::now();
    let pid = posix_spawn(args[0].as_c_str(), &actions, &attr, &args, &envp)
        .map_err(|e| format!("posix_spawn {}: {e}", argv[0]))?;
    let st = nix::sys::wait::waitpid(pid, None).map_err(|e| format!("waitpid: {e}"))?;
    let dt = t.elapsed();
    match st {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(dt.as_secs_f64() * 1e6),
        other => Err(format!("{} failed: {other:?}", argv[0])),
    }
}
