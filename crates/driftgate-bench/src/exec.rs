//! `driftgate bench exec`: spawn-and-wait latency of a small static binary inside scratch
//! overlay "containers", with and without interception, interleaved in rounds so that machine
//! noise hits every configuration alike.
//!
//! Configurations (see [`CONFIGS`]): `none` (no listener); `floor` (a minimal in-process
//! listener: mark, read, allow, close: the kernel's round trip that no enforcer can beat);
//! `driftgate-audit` / `driftgate-enforce` deciding an image binary (the common case);
//! `driftgate-audit-cached-added` (an added binary re-executed: hash cache + a finding per
//! exec); `driftgate-first-exec-{1m,16m,128m}` (a fresh added binary each time: the hashing
//! path); `fapolicyd` (Debian's fapolicyd with allow-all rules, when installed).
//!
//! Load mode ([`run_load`]) runs exec storms from K containers with C workers at once.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::Serialize;

use super::inside::Inside;
use super::stats::{relate, summarize, Summary};
use driftgate_core::engine::Mode;
use driftgate_sys::fanotify::PermGroup;
use driftgate_sys::fs::open_dir_readable;

/// Every configuration, in the order they run.
pub const CONFIGS: &[&str] = &[
    "none",
    "none-added",
    "floor",
    "floor-added",
    "driftgate-audit",
    "driftgate-enforce",
    "driftgate-enforce-bare",
    "driftgate-enforce-index-ioc-1m",
    "driftgate-audit-cached-added",
    "driftgate-first-exec-1m",
    "driftgate-first-exec-16m",
    "driftgate-first-exec-128m",
    "none-volume",
    "driftgate-enforce-volume",
    "none-script",
    "floor-script",
    "driftgate-enforce-script",
    "none-dynamic",
    "floor-dynamic",
    "driftgate-enforce-dynamic",
    "fapolicyd",
];

/// The default set: everything, with `fapolicyd` only when it is installed.
pub fn default_configs() -> Vec<String> {
    CONFIGS
        .iter()
        .filter(|c| **c != "fapolicyd" || fapolicyd_path().is_some())
        .map(|c| c.to_string())
        .collect()
}

pub fn fapolicyd_path() -> Option<PathBuf> {
    ["/usr/sbin/fapolicyd", "/sbin/fapolicyd", "/usr/bin/fapolicyd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[derive(Debug, Clone)]
pub struct Options {
    pub iterations: usize,
    pub rounds: usize,
    pub pin: Option<usize>,
    pub configs: Vec<String>,
    /// A static binary to run instead of the built-in `exit(0)` executable.
    pub binary: Option<PathBuf>,
    /// The driftgate executable that runs the daemon configurations.
    pub driftgate: PathBuf,
    /// TOML appended to the daemon's configuration (`--daemon-toml`): measure with your settings.
    pub daemon_extra: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub binary: String,
    pub binary_bytes: u64,
    pub iterations: usize,
    pub rounds: usize,
    pub pinned_cpu: Option<usize>,
    pub kernel: String,
    pub configs: Vec<Summary>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Setup(String),
    #[error("bench: interrupted")]
    Interrupted,
    #[error("bench: unknown configuration {0:?} (known: {CONFIGS:?})")]
    UnknownConfig(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// What a configuration listens with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListenerKind {
    None,
    Floor,
    /// The daemon, with layer indexing on or off, and an IoC set of this many generated
    /// hashes (none: 0).
    Driftgate {
        mode: Mode,
        index: bool,
        iocs: usize,
        /// A rule that allows the trusted volume at /vol.
        allow_vol: bool,
    },
    Fapolicyd,
}

impl ListenerKind {
    /// The daemon as installed: default configuration.
    const fn driftgate(mode: Mode) -> ListenerKind {
        ListenerKind::Driftgate { mode, index: true, iocs: 0, allow_vol: false }
    }
}

/// What a configuration executes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    /// The image's binary.
    Image,
    /// A binary added to the container once, executed again and again.
    CachedAdded,
    /// A fresh added binary of this many bytes for every exec.
    FirstExec(usize),
    /// Run inside the container's own mount namespace.
    Inside(super::inside::Inside),
}

fn plan(name: &str) -> Result<(ListenerKind, Workload), BenchError> {
    Ok(match name {
        "none" => (ListenerKind::None, Workload::Image),
        "none-added" => (ListenerKind::None, Workload::CachedAdded),
        "floor" => (ListenerKind::Floor, Workload::Image),
        // The kernel's round trip for the writable-layer file `driftgate-audit-cached-added` runs.
        "floor-added" => (ListenerKind::Floor, Workload::CachedAdded),
        "driftgate-audit" => (ListenerKind::driftgate(Mode::Audit), Workload::Image),
        "driftgate-enforce" => (ListenerKind::driftgate(Mode::Enforce), Workload::Image),
        "driftgate-enforce-bare" => (
            ListenerKind::Driftgate { mode: Mode::Enforce, index: false, iocs: 0, allow_vol: false },
            Workload::Image,
        ),
        "driftgate-enforce-index-ioc-1m" => (
            ListenerKind::Driftgate { mode: Mode::Enforce, index: true, iocs: 1_000_000, allow_vol: false },
            Workload::Image,
        ),
        "driftgate-audit-cached-added" => (ListenerKind::driftgate(Mode::Audit), Workload::CachedAdded),
        "driftgate-first-exec-1m" => (ListenerKind::driftgate(Mode::Audit), Workload::FirstExec(1 << 20)),
        "driftgate-first-exec-16m" => (ListenerKind::driftgate(Mode::Audit), Workload::FirstExec(16 << 20)),
        "driftgate-first-exec-128m" => (ListenerKind::driftgate(Mode::Audit), Workload::FirstExec(128 << 20)),
        // A trusted tools volume: its executables allowed by a `mounts` rule (otherwise drift).
        "none-volume" => (ListenerKind::None, Workload::Inside(Inside::Volume)),
        "driftgate-enforce-volume" => (
            ListenerKind::Driftgate { mode: Mode::Enforce, index: true, iocs: 0, allow_vol: true },
            Workload::Inside(Inside::Volume),
        ),
        // The image's shell given the image's script: the interpreter's arguments are read.
        "none-script" => (ListenerKind::None, Workload::Inside(Inside::Script)),
        "floor-script" => (ListenerKind::Floor, Workload::Inside(Inside::Script)),
        "driftgate-enforce-script" => {
            (ListenerKind::driftgate(Mode::Enforce), Workload::Inside(Inside::Script))
        }
        // A dynamic program: two events (the program, its loader), the loader's call checked.
        "none-dynamic" => (ListenerKind::None, Workload::Inside(Inside::Dynamic)),
        "floor-dynamic" => (ListenerKind::Floor, Workload::Inside(Inside::Dynamic)),
        "driftgate-enforce-dynamic" => {
            (ListenerKind::driftgate(Mode::Enforce), Workload::Inside(Inside::Dynamic))
        }
        "fapolicyd" => (ListenerKind::Fapolicyd, Workload::Image),
        other => return Err(BenchError::UnknownConfig(other.to_owned())),
    })
}

/// Scratch containers: overlays whose lower layer holds the binary. Unmounted and removed on
/// drop.
pub(crate) struct Containers {
    dir: tempfile::TempDir,
    merged: Vec<PathBuf>,
}

impl Containers {
    pub(crate) fn new(binary: &[u8], count: usize) -> Result<Containers, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("driftgate-bench-")
            .tempdir_in(std::env::temp_dir())
            .map_err(setup("temporary directory"))?;
        let mut c = Containers { dir, merged: Vec::new() };
        for i in 0..count {
            let r = c.dir.path().join(format!("c{i}"));
            for d in ["lower/bin", "lower/tmp", "upper", "work", "merged"] {
                std::fs::create_dir_all(r.join(d)).map_err(setup("mkdir"))?;
            }
            std::fs::set_permissions(r.join("lower/tmp"), std::fs::Permissions::from_mode(0o1777))
                .map_err(setup("chmod"))?;
            write_exec(&r.join("lower/bin/true"), binary)?;
            // What the inside workloads run: a shell with a script, a dynamic program.
            for (img, host) in super::inside::image_files() {
                let dst = r.join("lower").join(img);
                std::fs::create_dir_all(dst.parent().expect("a file")).map_err(setup("mkdir"))?;
                std::fs::copy(&host, &dst).map_err(setup("copy image file"))?;
            }
            std::fs::create_dir_all(r.join("lower/opt")).map_err(setup("mkdir"))?;
            std::fs::write(r.join("lower/opt/script.sh"), b"exit 0\n").map_err(setup("write script"))?;
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                r.join("lower").display(),
                r.join("upper").display(),
                r.join("work").display()
            );
            let merged = r.join("merged");
            nix::mount::mount(
                Some("overlay"),
                &merged,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(setup("mount overlay"))?;
            c.merged.push(merged);
        }
        Ok(c)
    }

    fn image_binary(&self, i: usize) -> PathBuf {
        self.merged[i].join("bin/true")
    }

    /// The glob that matches every scratch container's rootfs.
    fn glob(&self) -> String {
        format!("{}/c*/merged", self.dir.path().display())
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for m in &self.merged {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn write_exec(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, bytes).map_err(setup("write binary"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))
}

/// Writes `binary` padded with zeros (written, not sparse) to `size` bytes.
fn write_padded(path: &Path, binary: &[u8], size: usize) -> Result<(), BenchError> {
    let mut f = std::fs::File::create(path).map_err(setup("create"))?;
    f.write_all(binary).map_err(setup("write"))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size.saturating_sub(binary.len());
    while left > 0 {
        let n = left.min(zeros.len());
        f.write_all(&zeros[..n]).map_err(setup("write"))?;
        left -= n;
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))
}

fn write_sparse(path: &Path, binary: &[u8], size: u64) -> Result<(), BenchError> {
    let f = std::fs::File::create(path).map_err(setup("create"))?;
    (&f).write_all(binary).map_err(setup("write"))?;
    f.set_len(size).map_err(setup("truncate"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))
}

/// A running listener.
enum Listener {
    None,
    Floor { stop: Arc<AtomicBool>, thread: Option<std::thread::JoinHandle<()>> },
    Process { child: Child, name: &'static str, binds: Vec<PathBuf> },
}

impl Listener {
    fn start(
        kind: ListenerKind,
        c: &Containers,
        driftgate: &Path,
        extra: &str,
    ) -> Result<Listener, BenchError> {
        match kind {
            ListenerKind::None => Ok(Listener::None),
            ListenerKind::Floor => {
                let group = PermGroup::new().map_err(setup("fanotify_init"))?;
                for m in &c.merged {
                    let dirfd = open_dir_readable(m).map_err(setup("open merged"))?;
                    group.mark_filesystem(dirfd.as_fd()).map_err(setup("fanotify_mark"))?;
                }
                let stop = Arc::new(AtomicBool::new(false));
                let st = Arc::clone(&stop);
                let thread = std::thread::spawn(move || {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    while !st.load(Ordering::Relaxed) {
                        let mut fds = [PollFd::new(group.as_fd(), PollFlags::POLLIN)];
                        let _ = poll(&mut fds, PollTimeout::from(50u16));
                        while let Ok(evs) = group.read() {
                            if evs.is_empty() {
                                break;
                            }
                            for ev in evs {
                                let _ = ev.answer(true);
                            }
                        }
                    }
                });
                Ok(Listener::Floor { stop, thread: Some(thread) })
            }
            ListenerKind::Driftgate { mode, index, iocs, allow_vol } => {
                Self::driftgate(mode, index, iocs, allow_vol, c, driftgate, extra)
            }
            ListenerKind::Fapolicyd => fapolicyd::start(c),
        }
    }

    fn driftgate(
        mode: Mode,
        index: bool,
        iocs: usize,
        allow_vol: bool,
        c: &Containers,
        driftgate: &Path,
        extra: &str,
    ) -> Result<Listener, BenchError> {
        let root = c.root();
        let name = format!("{}-{}-{iocs}-{allow_vol}", mode.as_str(), if index { "index" } else { "bare" });
        let cfg = root.join(format!("driftgate-{name}.toml"));
        // Each configuration has its own state: an index persisted by another does
        // not help this one.
        let state = root.join(format!("state-{name}"));
        let mut knowledge = format!("[index]\nenabled = {index}\n");
        if iocs > 0 {
            let feed = root.join(format!("feed-{iocs}.txt"));
            if !feed.exists() {
                super::ioc::write_feed(&feed, iocs).map_err(setup("write IoC feed"))?;
            }
            knowledge.push_str(&format!("[ioc]\npaths = [{:?}]\n", feed.display().to_string()));
        }
        if allow_vol {
            knowledge
                .push_str("[[policy.rules]]\nname = \"tools\"\naction = \"allow\"\nmounts = [\"/vol\"]\n");
        }
        let base = format!(
            "mode = {:?}\nstate_dir = {:?}\n[spool]\ndir = {:?}\n[discovery]\noverlay_globs = [{:?}]\n\
             [discovery.containerd]\nenabled = false\n[discovery.docker]\nenabled = false\n\
             [discovery.podman]\nenabled = false\n[discovery.crio]\nenabled = false\n\
             [journald]\nenabled = false\n[daemon]\nsocket = {:?}\n{knowledge}",
            mode.as_str(),
            state.display().to_string(),
            root.join("spool").display().to_string(),
            c.glob(),
            root.join("driftgate.sock").display().to_string(),
        );
        std::fs::write(&cfg, with_extra(&base, extra)?).map_err(setup("write config"))?;
        let log_path = root.join("driftgate.log");
        let log = std::fs::File::create(&log_path).map_err(setup("daemon log"))?;
        let child = driftgate_sys::process::unblock_signals_in_child(&mut Command::new(driftgate))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("DRIFTGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(setup("start driftgate"))?;
        let l = Listener::Process { child, name: "driftgate", binds: Vec::new() };
        l.wait_log(&log_path, "driftgate ready")?;
        if index {
            // Measured with the image's layers indexed (and the IoC set loaded).
            l.wait_log(&log_path, "layer indexed")?;
        }
        if iocs > 0 {
            l.wait_log(&log_path, "IoC set loaded")?;
        }
        Ok(l)
    }

    fn wait_log(&self, log_path: &Path, needle: &str) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(log_path) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains(needle) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Setup(format!("listener not ready: {text}")));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn pid(&self) -> Option<i32> {
        match self {
            Listener::Process { child, .. } => Some(child.id() as i32),
            _ => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match self {
            Listener::None => {}
            Listener::Floor { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Listener::Process { child, name, binds } => {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                let start = Instant::now();
                let mut stopped = false;
                while start.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = child.try_wait() {
                        stopped = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !stopped {
                    eprintln!("bench: {name} did not stop on SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // Bind mounts made in the benchmark's private mount namespace.
                for b in binds.drain(..) {
                    let _ = nix::mount::umount2(&b, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

/// posix_spawn + waitpid of `path`; returns the latency, or an error when it failed.
fn spawn_wait(path: &Path) -> Result<Duration, String> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
    let actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    let attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    let argv = [c"true"];
    let envp: [&std::ffi::CStr; 0] = [];
    let t = Instant::now();
    let pid = posix_spawn(path, &actions, &attr, &argv, &envp).map_err(|e| format!("posix_spawn: {e}"))?;
    let st = nix::sys::wait::waitpid(pid, None).map_err(|e| format!("waitpid: {e}"))?;
    let dt = t.elapsed();
    match st {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(dt),
        other => Err(format!("benchmark binary failed: {other:?}")),
    }
}

fn interrupted(sig: &SignalFd) -> bool {
    matches!(sig.read_signal(), Ok(Some(_)))
}

/// Runs `n` timed execs; `prep` makes the path for exec `i` (untimed), `done` cleans up after.
fn measure(
    n: usize,
    sig: &SignalFd,
    mut prep: impl FnMut(usize) -> Result<PathBuf, BenchError>,
    mut done: impl FnMut(&Path),
) -> Result<Vec<f64>, BenchError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 64 == 0 && interrupted(sig) {
            return Err(BenchError::Interrupted);
        }
        let path = prep(i)?;
        let dt = spawn_wait(&path).map_err(BenchError::Setup)?;
        done(&path);
        out.push(dt.as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Blocks SIGINT/SIGTERM so they are read between batches and everything is torn down.
fn interrupt_fd() -> Result<SignalFd, BenchError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(setup("sigprocmask"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(setup("signalfd"))
}

fn pin(cpu: Option<usize>) -> Result<(), BenchError> {
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).map_err(setup("cpu set"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(setup("sched_setaffinity"))?;
    }
    Ok(())
}

/// Microseconds to SHA-256 `size` bytes in memory (best of three): the hashing cost a first
/// exec cannot avoid.
pub fn sha256_us(size: usize) -> f64 {
    use sha2::{Digest, Sha256};
    let data = vec![0x5au8; size];
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let h = Sha256::digest(&data);
            std::hint::black_box(h);
            t.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

fn load_binary(p: &Option<PathBuf>) -> Result<Vec<u8>, BenchError> {
    match p {
        Some(p) => std::fs::read(p).map_err(setup("read --binary")),
        None => Ok(super::elf::exit0(0)),
    }
}

/// Runs the benchmark. `progress` is called after each configuration of each round.
pub fn run(opts: &Options, mut progress: impl FnMut(usize, &str)) -> Result<Report, BenchError> {
    let plans = opts.configs.iter().map(|c| plan(c)).collect::<Result<Vec<_>, _>>()?;
    let sig = interrupt_fd()?;
    let _ns = fapolicyd::isolate_if(plans.iter().any(|p| p.0 == ListenerKind::Fapolicyd))?;
    pin(opts.pin)?;
    let binary = load_binary(&opts.binary)?;
    let c = Containers::new(&binary, 1)?;
    let image = c.image_binary(0);
    let added_dir = c.merged[0].join("tmp/added");
    std::fs::create_dir_all(&added_dir).map_err(setup("mkdir"))?;
    let added = added_dir.join("true");
    write_exec(&added, &binary)?;
    // The volume of the inside workloads: a host directory, bind-mounted at /vol.
    let volume = c.root().join("volume");
    std::fs::create_dir_all(&volume).map_err(setup("mkdir"))?;
    write_exec(&volume.join("true"), &binary)?;

    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); opts.configs.len()];
    let warmup = (opts.iterations / 20).clamp(10, 200);
    let mut fresh = 0usize;
    for round in 0..opts.rounds {
        for (ci, (name, (kind, work))) in opts.configs.iter().zip(&plans).enumerate() {
            let listener = Listener::start(*kind, &c, &opts.driftgate, &opts.daemon_extra)?;
            let s = match *work {
                Workload::Image => {
                    measure(warmup, &sig, |_| Ok(image.clone()), |_| {})?;
                    measure(opts.iterations, &sig, |_| Ok(image.clone()), |_| {})?
                }
                Workload::CachedAdded => {
                    measure(warmup, &sig, |_| Ok(added.clone()), |_| {})?;
                    measure(opts.iterations, &sig, |_| Ok(added.clone()), |_| {})?
                }
                Workload::FirstExec(size) => {
                    let n = opts.iterations.min(((512usize << 20) / size).max(8));
                    let dir = added_dir.clone();
                    measure(
                        n,
                        &sig,
                        |_| {
                            fresh += 1;
                            let d = dir.join(format!("f{fresh}"));
                            std::fs::create_dir_all(&d).map_err(setup("mkdir"))?;
                            let p = d.join("true");
                            write_padded(&p, &binary, size)?;
                            Ok(p)
                        },
                        |p| {
                            let _ = std::fs::remove_file(p);
                        },
                    )?
                }
                Workload::Inside(what) => super::inside::measure(
                    &opts.driftgate,
                    &c.merged[0],
                    &volume,
                    what,
                    warmup,
                    opts.iterations,
                    &sig,
                )?,
            };
            drop(listener);
            samples[ci].push(s);
            progress(round, name);
        }
    }
    let mut configs: Vec<Summary> = opts.configs.iter().zip(&samples).map(|(n, s)| summarize(n, s)).collect();
    // Each configuration is related to a no-listener run of the very same file: identical
    // copies of a binary at different paths exec at measurably different speeds.
    let none = configs.iter().find(|c| c.name == "none").cloned();
    let none_added = configs.iter().find(|c| c.name == "none-added").cloned();
    let all = configs.clone();
    for (c, (_, work)) in configs.iter_mut().zip(&plans) {
        let inside_base = |w: Inside| all.iter().find(|b| b.name == format!("none-{}", w.name()));
        let base = match work {
            Workload::CachedAdded => none_added.as_ref().or(none.as_ref()),
            Workload::Inside(w) => inside_base(*w),
            _ => none.as_ref(),
        };
        if let Some(b) = base {
            relate(c, b);
        }
    }
    let floor_added = configs.iter().find(|c| c.name == "floor").and_then(|f| f.added_p50_us);
    for (s, (_, work)) in configs.iter_mut().zip(&plans) {
        if let Workload::FirstExec(size) = work {
            // A `--binary` larger than the nominal size is written whole: hash what is executed.
            let h = sha256_us((*size).max(binary.len()));
            s.sha256_us = Some(h);
            if let Some(fl) = floor_added {
                // Target: added latency over `none` at most 1.2 x (hash time + floor).
                s.target_added_p50_us = Some(1.2 * (h + fl));
            }
        }
    }
    Ok(Report {
        binary: opts.binary.as_ref().map_or("built-in exit(0) ELF".into(), |p| p.display().to_string()),
        binary_bytes: binary.len() as u64,
        iterations: opts.iterations,
        rounds: opts.rounds,
        pinned_cpu: opts.pin,
        kernel: kernel(),
        configs,
    })
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "exec latency: {} ({} bytes), {} rounds x {} execs per configuration, kernel {}{}\n",
        r.binary,
        r.binary_bytes,
        r.rounds,
        r.iterations,
        r.kernel,
        r.pinned_cpu.map(|c| format!(", pinned to CPU {c}")).unwrap_or_default()
    );
    s.push_str(&format!(
        "{:<30} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
        "config",
        "samples",
        "mean_us",
        "p50_us",
        "p90_us",
        "p99_us",
        "p99.9_us",
        "ratio_p50",
        "ratio_p99",
        "added_p50",
        "spread"
    ));
    let f = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |x| format!("{x:.prec$}"));
    for c in &r.configs {
        s.push_str(&format!(
            "{:<30} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9} {:>9} {:>7.3}\n",
            c.name,
            c.samples,
            c.mean_us,
            c.p50_us,
            c.p90_us,
            c.p99_us,
            c.p999_us,
            f(c.ratio_p50, 3),
            f(c.ratio_p99, 3),
            f(c.added_p50_us, 1),
            c.round_spread
        ));
    }
    for c in &r.configs {
        if let (Some(h), Some(t), Some(a)) = (c.sha256_us, c.target_added_p50_us, c.added_p50_us) {
            s.push_str(&format!(
                "{}: SHA-256 of its bytes {h:.0} us; added p50 {a:.0} us vs target <= 1.2 x (hash + floor) = {t:.0} us ({})\n",
                c.name,
                if a <= t { "met" } else { "missed" }
            ));
        }
    }
    s.push_str(
        "p50 is the median of the rounds' p50s; ratios are against the no-listener run of the same file \
         (`none`, or `none-added` for the cached added binary) from this run; spread is max/min of the rounds' p50s.\n",
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Load mode

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub containers: usize,
    pub concurrency: usize,
    /// Execs per worker per round.
    pub iterations: usize,
    pub rounds: usize,
    pub configs: Vec<String>,
    pub binary: Option<PathBuf>,
    pub driftgate: PathBuf,
    /// TOML appended to the daemon's configuration.
    pub daemon_extra: String,
}

/// Load configurations: the same listeners, plus a pair that runs fresh 128 MiB binaries in
/// the background while the storm runs, without and with driftgate hashing them (to show that
/// a long hash holds up nobody).
pub const LOAD_CONFIGS: &[&str] = &[
    "none",
    "floor",
    "driftgate-enforce",
    "none-with-128m-first-execs",
    "driftgate-audit-with-128m-first-execs",
];

#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub name: String,
    pub execs: u64,
    pub failed: u64,
    pub execs_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    /// Daemon CPU time (user + system) per 1,000 execs.
    pub daemon_cpu_ms_per_1000: Option<f64>,
    /// Daemon resident set at the end of the storm.
    pub daemon_rss_kib: Option<u64>,
    /// Background 128 MiB first execs completed during the storm.
    pub background_first_execs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub containers: usize,
    pub concurrency: usize,
    pub iterations_per_worker: usize,
    pub rounds: usize,
    pub kernel: String,
    pub configs: Vec<LoadSummary>,
}

fn proc_cpu_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3; utime/stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Runs exec storms: `concurrency` workers, each running `iterations` execs round-robin over
/// `containers` scratch containers.
pub fn run_load(opts: &LoadOptions, mut progress: impl FnMut(usize, &str)) -> Result<LoadReport, BenchError> {
    for c in &opts.configs {
        if !LOAD_CONFIGS.contains(&c.as_str()) {
            return Err(BenchError::Setup(format!(
                "unknown load configuration {c:?} (known: {LOAD_CONFIGS:?})"
            )));
        }
    }
    let sig = interrupt_fd()?;
    let binary = load_binary(&opts.binary)?;
    let c = Containers::new(&binary, opts.containers.max(1))?;
    let clk_tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    type Acc = (Vec<f64>, u64, u64, f64, Vec<f64>, Vec<u64>, u64);
    let mut acc: Vec<Acc> = vec![(Vec::new(), 0, 0, 0.0, Vec::new(), Vec::new(), 0); opts.configs.len()];
    for round in 0..opts.rounds {
        for (ci, name) in opts.configs.iter().enumerate() {
            if interrupted(&sig) {
                return Err(BenchError::Interrupted);
            }
            let (kind, background) = match name.as_str() {
                "none" => (ListenerKind::None, false),
                "floor" => (ListenerKind::Floor, false),
                "driftgate-enforce" => (ListenerKind::driftgate(Mode::Enforce), false),
                "none-with-128m-first-execs" => (ListenerKind::None, true),
                _ => (ListenerKind::driftgate(Mode::Audit), true),
            };
            let listener = Listener::start(kind, &c, &opts.driftgate, &opts.daemon_extra)?;
            let cpu0 = listener.pid().and_then(proc_cpu_ticks);
            let stop = Arc::new(AtomicBool::new(false));
            let bg_done = Arc::new(AtomicU64::new(0));
            let bg = background.then(|| {
                let (stop, done) = (Arc::clone(&stop), Arc::clone(&bg_done));
                let dir = c.merged[0].join("tmp");
                let bin = binary.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let d = dir.join(format!("big{i}"));
                        let _ = std::fs::create_dir_all(&d);
                        let p = d.join("true");
                        // Sparse padding: creating the file costs the harness nothing, while
                        // hashing it still means reading all 128 MiB.
                        if write_sparse(&p, &bin, 128 << 20).is_ok() && spawn_wait(&p).is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = std::fs::remove_dir_all(&d);
                    }
                })
            });
            let barrier = Arc::new(Barrier::new(opts.concurrency + 1));
            let failed = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..opts.concurrency)
                .map(|w| {
                    let paths: Vec<PathBuf> = (0..c.merged.len()).map(|i| c.image_binary(i)).collect();
                    let (barrier, failed, n) = (Arc::clone(&barrier), Arc::clone(&failed), opts.iterations);
                    std::thread::spawn(move || {
                        let mut lat = Vec::with_capacity(n);
                        barrier.wait();
                        for i in 0..n {
                            match spawn_wait(&paths[(w + i) % paths.len()]) {
                                Ok(d) => lat.push(d.as_secs_f64() * 1e6),
                                Err(_) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        lat
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            let mut lat = Vec::new();
            for w in workers {
                lat.extend(w.join().map_err(|_| BenchError::Setup("worker panicked".into()))?);
            }
            let wall = t.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            if let Some(b) = bg {
                let _ = b.join();
            }
            let cpu1 = listener.pid().and_then(proc_cpu_ticks);
            let rss = listener.pid().and_then(|p| driftgate_sys::proc::rss_kib(&p.to_string()));
            drop(listener);
            let a = &mut acc[ci];
            let execs = lat.len() as u64;
            a.0.extend(lat);
            a.1 += execs;
            a.2 += failed.load(Ordering::Relaxed);
            a.3 += wall;
            if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
                a.4.push((c1 - c0) as f64 / clk_tck * 1000.0 / (execs.max(1) as f64 / 1000.0));
            }
            if let Some(r) = rss {
                a.5.push(r);
            }
            a.6 += bg_done.load(Ordering::Relaxed);
            progress(round, name);
        }
    }
    let mut out: Vec<LoadSummary> = opts
        .configs
        .iter()
        .zip(acc)
        .map(|(name, (mut lat, execs, failed, wall, mut cpu, rss, bg))| {
            lat.sort_by(|a, b| a.total_cmp(b));
            use super::stats::{median, percentile};
            LoadSummary {
                name: name.clone(),
                execs,
                failed,
                execs_per_s: execs as f64 / wall.max(1e-9),
                p50_us: percentile(&lat, 50.0),
                p90_us: percentile(&lat, 90.0),
                p99_us: percentile(&lat, 99.0),
                p999_us: percentile(&lat, 99.9),
                ratio_p50: None,
                ratio_p99: None,
                daemon_cpu_ms_per_1000: (!cpu.is_empty()).then(|| median(&mut cpu)),
                daemon_rss_kib: rss.iter().copied().max(),
                background_first_execs: bg,
            }
        })
        .collect();
    // Ratios against the no-listener run under the same load (same background work).
    let none = out.iter().find(|c| c.name == "none").cloned();
    let none_bg = out.iter().find(|c| c.name == "none-with-128m-first-execs").cloned();
    for c in &mut out {
        let base = if c.name.ends_with("with-128m-first-execs") { none_bg.as_ref() } else { none.as_ref() };
        if let Some(b) = base {
            c.ratio_p50 = Some(c.p50_us / b.p50_us);
            c.ratio_p99 = Some(c.p99_us / b.p99_us);
        }
    }
    Ok(LoadReport {
        containers: c.merged.len(),
        concurrency: opts.concurrency,
        iterations_per_worker: opts.iterations,
        rounds: opts.rounds,
        kernel: kernel(),
        configs: out,
    })
}

pub fn render_load(r: &LoadReport) -> String {
    let mut s = format!(
        "exec storm: {} containers, {} concurrent workers x {} execs, {} rounds, kernel {}\n",
        r.containers, r.concurrency, r.iterations_per_worker, r.rounds, r.kernel
    );
    s.push_str(&format!(
        "{:<40} {:>8} {:>6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9}\n",
        "config",
        "execs",
        "failed",
        "execs/s",
        "p50_us",
        "p99_us",
        "p99.9_us",
        "ratio_p99",
        "cpu_ms/1k",
        "rss_kib",
        "bg_128m"
    ));
    let f = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |x| format!("{x:.prec$}"));
    for c in &r.configs {
        s.push_str(&format!(
            "{:<40} {:>8} {:>6} {:>9.0} {:>8.1} {:>8.1} {:>9.1} {:>9} {:>9} {:>10} {:>9}\n",
            c.name,
            c.execs,
            c.failed,
            c.execs_per_s,
            c.p50_us,
            c.p99_us,
            c.p999_us,
            f(c.ratio_p99, 3),
            f(c.daemon_cpu_ms_per_1000, 2),
            c.daemon_rss_kib.map_or("-".into(), |v| v.to_string()),
            c.background_first_execs
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// fapolicyd, the open-source peer with the same kernel mechanism.

mod fapolicyd {
    use super::*;

    /// fapolicyd marks every overlay mount it sees. The benchmark therefore moves itself into
    /// a private mount namespace first: fapolicyd, started from there, sees copies of the
    /// host's mounts whose marks only catch execs made through those copies, that is, the
    /// benchmark's own. Its configuration directories are bind-mounted over in that namespace
    /// so the host's (possibly default, deny-everything) configuration is never used.
    pub(super) fn isolate_if(needed: bool) -> Result<Option<()>, BenchError> {
        if !needed {
            return Ok(None);
        }
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(setup("unshare(CLONE_NEWNS)"))?;
        nix::mount::mount::<str, str, str, str>(
            None,
            "/",
            None,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None,
        )
        .map_err(setup("make / private"))?;
        Ok(Some(()))
    }

    pub(super) fn start(c: &Containers) -> Result<Listener, BenchError> {
        let exe = fapolicyd_path().ok_or_else(|| BenchError::Setup("fapolicyd is not installed".into()))?;
        let root = c.root().join("fapolicyd");
        let etc = root.join("etc");
        let lib = root.join("lib");
        let run = root.join("run");
        for d in [&etc, &etc.join("rules.d"), &etc.join("trust.d"), &lib, &run] {
            std::fs::create_dir_all(d).map_err(setup("mkdir"))?;
        }
        std::fs::write(
            etc.join("fapolicyd.conf"),
            "permissive = 0\nnice_val = 14\nq_size = 800\nuid = 0\ngid = 0\ndo_stat_report = 0\n\
             detailed_report = 0\ndb_max_size = 50\nsubj_cache_size = 1549\nobj_cache_size = 8191\n\
             watch_fs = overlay\ntrust = file\nintegrity = none\nsyslog_format = rule,dec,perm,auid,pid,exe,:,path,ftype,trust\n\
             rpm_sha256_only = 0\nallow_filesystem_mark = 0\n",
        )
        .map_err(setup("write fapolicyd.conf"))?;
        std::fs::write(etc.join("rules.d/10-allow.rules"), "allow perm=any all : all\n")
            .map_err(setup("rules"))?;
        std::fs::write(etc.join("compiled.rules"), "allow perm=any all : all\n").map_err(setup("rules"))?;
        std::fs::write(etc.join("fapolicyd.trust"), "").map_err(setup("trust"))?;
        std::fs::write(etc.join("fapolicyd-filter.conf"), "").map_err(setup("filter"))?;
        for (src, dst) in [(&etc, "/etc/fapolicyd"), (&lib, "/var/lib/fapolicyd"), (&run, "/run/fapolicyd")] {
            std::fs::create_dir_all(dst).map_err(setup("mkdir"))?;
            nix::mount::mount::<Path, str, str, str>(
                Some(src),
                dst,
                None,
                nix::mount::MsFlags::MS_BIND,
                None,
            )
            .map_err(setup("bind fapolicyd dirs"))?;
        }
        let log_path = root.join("fapolicyd.log");
        let log = std::fs::File::create(&log_path).map_err(setup("fapolicyd log"))?;
        let child = driftgate_sys::process::unblock_signals_in_child(&mut Command::new(exe))
            .arg("--debug-deny")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(setup("log"))?)
            .stderr(log)
            .spawn()
            .map_err(setup("start fapolicyd"))?;
        let l = Listener::Process {
            child,
            name: "fapolicyd",
            binds: ["/etc/fapolicyd", "/var/lib/fapolicyd", "/run/fapolicyd"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        };
        l.wait_log(&log_path, "Starting to listen for events")?;
        Ok(l)
    }
}

/// The benchmark's configuration with the user's (`--daemon-toml`) merged in: the user's keys
/// win, tables merge key by key, and arrays of tables (`[[policy.rules]]`) are appended.
pub fn with_extra(base: &str, extra: &str) -> Result<String, BenchError> {
    if extra.trim().is_empty() {
        return Ok(base.to_string());
    }
    let mut b: toml::Table = base.parse().map_err(|e| BenchError::Setup(format!("bench config: {e}")))?;
    let x: toml::Table = extra.parse().map_err(|e| BenchError::Setup(format!("--daemon-toml: {e}")))?;
    merge_toml(&mut b, x);
    toml::to_string(&b).map_err(|e| BenchError::Setup(format!("bench config: {e}")))
}

fn merge_toml(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_toml(a, b),
            (Some(toml::Value::Array(a)), toml::Value::Array(b))
                if a.iter().chain(b.iter()).all(|v| v.is_table()) =>
            {
                a.extend(b)
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_settings_merge_into_the_benchmarks_configuration() {
        let base = "mode = \"enforce\"\n[daemon]\nsocket = \"/s\"\n[[policy.rules]]\naction = \"allow\"\nmounts = [\"/vol\"]\n";
        let extra = "[daemon]\nwriter_hold_ms = 0\n[[policy.rules]]\naction = \"audit\"\npaths = [\"/x\"]\n";
        let merged: toml::Table = with_extra(base, extra).unwrap().parse().unwrap();
        let c = driftgate_core::config::Config::from_toml(&toml::to_string(&merged).unwrap(), None);
        assert!(c.is_ok(), "{c:?}");
        assert_eq!(merged["daemon"]["socket"].as_str(), Some("/s"));
        assert_eq!(merged["daemon"]["writer_hold_ms"].as_integer(), Some(0));
        assert_eq!(merged["policy"]["rules"].as_array().unwrap().len(), 2);
        assert!(
            matches!(with_extra(base, "[daemon"), Err(BenchError::Setup(m)) if m.contains("--daemon-toml"))
        );
    }
}
