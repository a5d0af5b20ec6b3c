//! `driftgate bench exec`: spawn-and-wait latency of a small static binary inside a scratch
//! overlay "container", with and without interception, interleaved in rounds so that machine
//! noise hits every configuration alike.
//!
//! Configurations: `none` (no listener); `floor` (a minimal in-process listener: mark, read,
//! allow, close: the kernel's round trip that no enforcer can beat); `driftgate-audit` and
//! `driftgate-enforce` (the real daemon, deciding an image binary: the common case).

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::Serialize;

use super::stats::{relate, summarize, Summary};
use crate::sys::fanotify::PermGroup;
use crate::sys::fs::open_dir_readable;

pub const ALL_CONFIGS: &[&str] = &["none", "floor", "driftgate-audit", "driftgate-enforce"];

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
    #[error("bench: unknown configuration {0:?} (known: {ALL_CONFIGS:?})")]
    UnknownConfig(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// The scratch container: an overlay whose lower layer holds the binary. Unmounted and
/// removed on drop.
struct Scratch {
    dir: tempfile::TempDir,
    merged: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn new(binary: &[u8]) -> Result<Scratch, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("driftgate-bench-")
            .tempdir_in(std::env::temp_dir())
            .map_err(setup("temporary directory"))?;
        let r = dir.path();
        for d in ["lower/bin", "upper", "work", "merged"] {
            std::fs::create_dir_all(r.join(d)).map_err(setup("mkdir"))?;
        }
        let bin = r.join("lower/bin/true");
        std::fs::write(&bin, binary).map_err(setup("write binary"))?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))?;
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
        Ok(Scratch { dir, merged, mounted: true })
    }

    fn binary(&self) -> PathBuf {
        self.merged.join("bin/true")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A running listener for one configuration.
enum Listener {
    None,
    Floor { stop: Arc<AtomicBool>, thread: Option<std::thread::JoinHandle<()>> },
    Daemon(Child),
}

impl Listener {
    fn start(name: &str, s: &Scratch, driftgate: &Path) -> Result<Listener, BenchError> {
        match name {
            "none" => Ok(Listener::None),
            "floor" => {
                let group = PermGroup::new().map_err(setup("fanotify_init"))?;
                let dirfd = open_dir_readable(&s.merged).map_err(setup("open merged"))?;
                group.mark_filesystem(dirfd.as_fd()).map_err(setup("fanotify_mark"))?;
                drop(dirfd);
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
            "driftgate-audit" | "driftgate-enforce" => {
                let mode = name.trim_start_matches("driftgate-");
                let root = s.dir.path();
                let cfg = root.join(format!("{mode}.toml"));
                std::fs::write(
                    &cfg,
                    format!(
                        "mode = {mode:?}\nstate_dir = {:?}\n[spool]\ndir = {:?}\n[discovery]\noverlay_globs = [{:?}]\n\
                         [discovery.containerd]\nenabled = false\n[journald]\nenabled = false\n",
                        root.join("state").display().to_string(),
                        root.join("spool").display().to_string(),
                        s.merged.display().to_string(),
                    ),
                )
                .map_err(setup("write config"))?;
                let log_path = root.join(format!("{mode}.log"));
                let log = std::fs::File::create(&log_path).map_err(setup("daemon log"))?;
                let child = Command::new(driftgate)
                    .args(["run", "--config"])
                    .arg(&cfg)
                    .env("DRIFTGATE_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(setup("start driftgate"))?;
                let mut l = Listener::Daemon(child);
                let start = Instant::now();
                loop {
                    let mut text = String::new();
                    if let Ok(mut f) = std::fs::File::open(&log_path) {
                        let _ = f.read_to_string(&mut text);
                    }
                    if text.contains("driftgate ready") {
                        return Ok(l);
                    }
                    if let Listener::Daemon(c) = &mut l {
                        if let Ok(Some(st)) = c.try_wait() {
                            return Err(BenchError::Setup(format!("driftgate exited ({st}): {text}")));
                        }
                    }
                    if start.elapsed() > Duration::from_secs(20) {
                        return Err(BenchError::Setup(format!("driftgate not ready: {text}")));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            other => Err(BenchError::UnknownConfig(other.to_owned())),
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
            Listener::Daemon(c) => {
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Spawns `path` and waits for it, `n` times; returns each latency in microseconds.
fn measure(path: &Path, n: usize, sig: &SignalFd) -> Result<Vec<f64>, BenchError> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
    let actions = PosixSpawnFileActions::init().map_err(setup("posix_spawn_file_actions_init"))?;
    let attr = PosixSpawnAttr::init().map_err(setup("posix_spawnattr_init"))?;
    let argv = [c"true"];
    let envp: [&std::ffi::CStr; 0] = [];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 256 == 0 && matches!(sig.read_signal(), Ok(Some(_))) {
            return Err(BenchError::Interrupted);
        }
        let t = Instant::now();
        let pid = posix_spawn(path, &actions, &attr, &argv, &envp).map_err(setup("posix_spawn"))?;
        let st = nix::sys::wait::waitpid(pid, None).map_err(setup("waitpid"))?;
        let dt = t.elapsed();
        if !matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)) {
            return Err(BenchError::Setup(format!("benchmark binary failed: {st:?}")));
        }
        out.push(dt.as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Runs the benchmark. `progress` is called after each configuration of each round.
pub fn run(opts: &Options, mut progress: impl FnMut(usize, &str)) -> Result<Report, BenchError> {
    for c in &opts.configs {
        if !ALL_CONFIGS.contains(&c.as_str()) {
            return Err(BenchError::UnknownConfig(c.clone()));
        }
    }
    // Interrupts are read between batches so that everything is torn down on the way out.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(setup("sigprocmask"))?;
    let sig = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(setup("signalfd"))?;
    if let Some(cpu) = opts.pin {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).map_err(setup("cpu set"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(setup("sched_setaffinity"))?;
    }
    let binary = match &opts.binary {
        Some(p) => std::fs::read(p).map_err(setup("read --binary"))?,
        None => super::elf::exit0(0),
    };
    let scratch = Scratch::new(&binary)?;
    let path = scratch.binary();
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); opts.configs.len()];
    let warmup = (opts.iterations / 20).clamp(10, 200);
    for round in 0..opts.rounds {
        for (ci, name) in opts.configs.iter().enumerate() {
            let listener = Listener::start(name, &scratch, &opts.driftgate)?;
            measure(&path, warmup, &sig)?;
            let s = measure(&path, opts.iterations, &sig)?;
            drop(listener);
            samples[ci].push(s);
            progress(round, name);
        }
    }
    let mut configs: Vec<Summary> = opts.configs.iter().zip(&samples).map(|(n, s)| summarize(n, s)).collect();
    if let Some(base) = configs.iter().find(|c| c.name == "none").cloned() {
        for c in &mut configs {
            relate(c, &base);
        }
    }
    let kernel =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Report {
        binary: opts.binary.as_ref().map_or("built-in exit(0) ELF".into(), |p| p.display().to_string()),
        binary_bytes: binary.len() as u64,
        iterations: opts.iterations,
        rounds: opts.rounds,
        pinned_cpu: opts.pin,
        kernel,
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
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "config",
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
            "{:<20} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9} {:>9} {:>8.3}\n",
            c.name,
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
    s.push_str("p50 is the median of the rounds' p50s; ratios are against `none` from this run; spread is max/min of the rounds' p50s.\n");
    s
}
