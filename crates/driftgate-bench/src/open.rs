//! `driftgate bench open`: what library coverage (`[libraries]`, `FAN_OPEN_PERM`) costs the
//! opens of a container, measured inside a scratch container with driftgate (enforce mode,
//! default settings plus `[libraries] enabled = true`) against the same container with no
//! listener, interleaved in rounds.
//!
//! Workloads, each run by `driftgate bench open-inside` (hidden) chrooted into the container:
//! - `image`: `open` + `close` of an image file, again and again (steady state);
//! - `upper`: the same for a data file the container wrote (its writable layer);
//! - `tree`: "find + cat" over the image's tree of small files: each opened, read and closed.
//!   The first pass after the listener starts opens every inode for the first time (cold:
//!   each costs one event, then an ignore mark); the second is warm;
//! - `dynamic`: `posix_spawn` + wait of a dynamic program of the host copied into the image with
//!   every library it needs (`curl` when there is one: ~30 libraries), `--version`.
//!
//! Between workloads the daemon's status says how many open events it read: warm workloads
//! should add almost none.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::error::{setup, BenchError};
use crate::fixture::Containers;
use crate::listener::{Listener, ListenerKind};
use crate::measure::{interrupt_fd, interrupted, kernel, pin};
use crate::stats::{median, percentile};
use driftgate_core::engine::Mode;

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Timed opens per steady-state workload per round.
    pub iterations: usize,
    pub rounds: usize,
    /// Files in the image's tree.
    pub files: usize,
    /// Timed starts of the dynamic program per round.
    pub starts: usize,
    pub pin: Option<usize>,
    /// The dynamic program (default: curl, systemctl or python3, whichever the host has).
    pub program: Option<PathBuf>,
    pub driftgate: PathBuf,
    pub daemon_extra: String,
    /// Also run driftgate with the kernel layer off (`[kernel] enabled = "off"`): the layer's
    /// own cost is then the ratio of the two driftgate figures.
    pub kernel_layer: bool,
}

/// One workload, no listener against driftgate: the median over rounds of each round's figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    /// What the figure is: the p50 of one operation, or a whole pass.
    pub unit: String,
    pub none_us: f64,
    pub driftgate_us: f64,
    pub ratio: f64,
    /// The target for this ratio, if it has one.
    pub target: Option<f64>,
    /// Open events the daemon read during the workload (median over rounds), and per second.
    pub events: u64,
    pub events_per_sec: f64,
    /// With `kernel_layer`: driftgate with the layer off, and driftgate_us over it (the
    /// layer's own cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_off_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    pub kernel: String,
    pub rounds: usize,
    pub iterations: usize,
    pub files: usize,
    pub program: Option<String>,
    pub program_libraries: usize,
    pub pinned_cpu: Option<usize>,
    pub rows: Vec<Row>,
    /// The kernel layer's programs: runs and time per configuration (where it ran).
    #[serde(default)]
    pub kernel_layer: Vec<crate::kernelcost::ProgramCost>,
    /// What the first open of a fresh image inode costs: (cold pass with driftgate - cold pass
    /// without) / files.
    pub first_open_us: f64,
}

/// The workloads of the runner.
const PHASES: [&str; 4] = ["tree", "image", "upper", "dynamic"];

/// Runs the benchmark; `progress` is called after each configuration of each round.
pub fn run(opts: &OpenOptions, mut progress: impl FnMut(usize, &str)) -> Result<OpenReport, BenchError> {
    let sig = interrupt_fd()?;
    pin(opts.pin)?;
    let program = opts.program.clone().or_else(default_program);
    let libs = match &program {
        Some(p) => libraries_of(p)?,
        None => Vec::new(),
    };
    let files = opts.files;
    let c = Containers::with_image(&crate::elf::exit0(0), 1, &|lower: &Path| {
        write_tree(lower, files)?;
        std::fs::create_dir_all(lower.join("etc")).map_err(setup("mkdir"))?;
        std::fs::write(lower.join("etc/data.txt"), b"image data\n").map_err(setup("write"))?;
        if let Some(p) = &program {
            copy_into(lower, p, p)?;
            for (named, real) in &libs {
                copy_into(lower, named, real)?;
            }
        }
        Ok(())
    })?;
    let root = &c.merged[0];
    // `[libraries]` is off by default; this measures it on (a --daemon-toml can still say otherwise).
    let extra = opts.daemon_extra.clone();
    let dg = ListenerKind::Driftgate {
        mode: Mode::Enforce,
        index: false,
        iocs: 0,
        allow_vol: false,
        kernel: true,
        libraries: true,
    };
    let mut kinds = vec![("none", ListenerKind::None), ("driftgate", dg)];
    if opts.kernel_layer {
        kinds.push(("driftgate-kernel-off", dg.without_kernel_layer()));
    }
    let _stats = crate::kernelcost::StatsOn::enable();
    let mut kernel_layer = Vec::new();
    // [config][phase][round]: the round's figure; events likewise.
    let mut figures = vec![vec![Vec::new(); PHASES.len() + 1]; kinds.len()];
    let mut events = vec![vec![Vec::new(); PHASES.len() + 1]; kinds.len()];
    for round in 0..opts.rounds {
        // Rotate which configuration goes first, so drift over time hits all alike.
        let order: Vec<usize> = (0..kinds.len()).map(|i| (i + round) % kinds.len()).collect();
        for ci in order {
            let (name, kind) = kinds[ci];
            let listener = Listener::start(kind, &c, &opts.driftgate, &extra)?;
            let socket = c.root().join("driftgate.sock");
            let count = || open_events(&opts.driftgate, &socket, listener.pid().is_some());
            // Tree twice (cold, warm), then the steady-state workloads.
            let plan: [(&str, usize, usize); 5] = [
                ("tree", 1, 0),
                ("tree", 1, 1),
                ("image", opts.iterations, 2),
                ("upper", opts.iterations, 3),
                ("dynamic", if program.is_some() { opts.starts } else { 0 }, 4),
            ];
            for (phase, n, slot) in plan {
                if n == 0 {
                    continue;
                }
                if interrupted(&sig) {
                    return Err(BenchError::Interrupted);
                }
                let before = count()?;
                let t = Instant::now();
                let samples = run_phase(&opts.driftgate, root, phase, n, program.as_deref())?;
                let secs = t.elapsed().as_secs_f64();
                let n_events = count()?.saturating_sub(before);
                let mut sorted = samples.clone();
                sorted.sort_by(f64::total_cmp);
                figures[ci][slot].push(if phase == "tree" { sorted[0] } else { percentile(&sorted, 50.0) });
                events[ci][slot].push((n_events, secs));
            }
            if listener.pid().is_some() {
                let runs = crate::kernelcost::program_runs(&opts.driftgate, &socket);
                crate::kernelcost::add(&mut kernel_layer, name, runs);
            }
            drop(listener);
            progress(round, name);
        }
    }
    let workloads = [
        ("find+cat, first pass (cold)", "pass", None),
        ("find+cat, second pass (warm)", "pass", Some(1.10)),
        ("open image file", "p50 per open", Some(1.05)),
        ("open writable-layer file", "p50 per open", Some(1.05)),
        ("dynamic program start", "p50 per start", Some(1.10)),
    ];
    let mut rows = Vec::new();
    for (slot, (workload, unit, target)) in workloads.into_iter().enumerate() {
        if figures[1][slot].is_empty() {
            continue;
        }
        let none = median(&mut figures[0][slot].clone());
        let dg = median(&mut figures[1][slot].clone());
        let mut ev: Vec<f64> = events[1][slot].iter().map(|(n, _)| *n as f64).collect();
        let mut per_sec: Vec<f64> = events[1][slot].iter().map(|(n, s)| *n as f64 / s.max(1e-9)).collect();
        rows.push(Row {
            workload: workload.into(),
            unit: unit.into(),
            none_us: none,
            driftgate_us: dg,
            ratio: dg / none,
            target,
            events: median(&mut ev) as u64,
            events_per_sec: median(&mut per_sec),
            kernel_off_us: kinds.get(2).map(|_| median(&mut figures[2][slot].clone())),
            kernel_ratio: kinds.get(2).map(|_| dg / median(&mut figures[2][slot].clone())),
        });
    }
    let first_open_us = rows.first().map_or(0.0, |r| (r.driftgate_us - r.none_us) / files.max(1) as f64);
    Ok(OpenReport {
        kernel: kernel(),
        rounds: opts.rounds,
        iterations: opts.iterations,
        files,
        program: program.map(|p| format!("{} --version", p.display())),
        program_libraries: libs.len(),
        pinned_cpu: opts.pin,
        rows,
        first_open_us,
        kernel_layer,
    })
}

/// The human-readable table.
pub fn render(r: &OpenReport) -> String {
    let mut s = format!(
        "open latency inside a container, driftgate (enforce, [libraries] on) vs no listener: {} rounds, \
         {} opens per steady-state workload, {} image files, kernel {}{}\n",
        r.rounds,
        r.iterations,
        r.files,
        r.kernel,
        r.pinned_cpu.map(|c| format!(", pinned to CPU {c}")).unwrap_or_default()
    );
    if let Some(p) = &r.program {
        s.push_str(&format!("dynamic program: {p} ({} libraries in the image)\n", r.program_libraries));
    }
    s.push_str(&format!(
        "{:<32} {:>14} {:>11} {:>12} {:>7} {:>8} {:>9} {:>10}\n",
        "workload", "figure", "none_us", "driftgate_us", "ratio", "target", "events", "events/s"
    ));
    let with_kernel = r.rows.iter().any(|x| x.kernel_ratio.is_some());
    for row in &r.rows {
        let target = row
            .target
            .map_or("-".to_owned(), |t| format!("{}{t:.2}", if row.ratio <= t { "<=" } else { "MISS " }));
        s.push_str(&format!(
            "{:<32} {:>14} {:>11.3} {:>12.3} {:>7.3} {:>8} {:>9} {:>10.0}\n",
            row.workload,
            row.unit,
            row.none_us,
            row.driftgate_us,
            row.ratio,
            target,
            row.events,
            row.events_per_sec
        ));
    }
    if with_kernel {
        s.push_str(&format!(
            "{:<32} {:>14} {:>16} {:>12} {:>12}\n",
            "kernel layer (BPF LSM)", "figure", "layer_off_us", "layer_on_us", "on/off"
        ));
        for row in r.rows.iter().filter(|x| x.kernel_ratio.is_some()) {
            s.push_str(&format!(
                "{:<32} {:>14} {:>16.3} {:>12.3} {:>12.3}\n",
                row.workload,
                row.unit,
                row.kernel_off_us.unwrap_or_default(),
                row.driftgate_us,
                row.kernel_ratio.unwrap_or_default()
            ));
        }
    }
    s.push_str(&format!(
        "first open of a fresh image inode: {:.2} us (cold pass difference / {} files)\n\
         figures are medians over rounds; events are the daemon's open events during the workload\n",
        r.first_open_us, r.files
    ));
    s.push_str(&crate::kernelcost::render(&r.kernel_layer));
    s
}

/// `files` small image files in 100 directories under `/data`.
fn write_tree(lower: &Path, files: usize) -> Result<(), BenchError> {
    let body = vec![b'x'; 512];
    for i in 0..files {
        let d = lower.join(format!("data/d{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&d).map_err(setup("mkdir"))?;
        }
        std::fs::write(d.join(format!("f{i:05}")), &body).map_err(setup("write image file"))?;
    }
    Ok(())
}

/// Copies host file `real` into the image at `named` (the path the loader looks it up by).
fn copy_into(lower: &Path, named: &Path, real: &Path) -> Result<(), BenchError> {
    let dst = lower.join(named.strip_prefix("/").unwrap_or(named));
    std::fs::create_dir_all(dst.parent().expect("a file")).map_err(setup("mkdir"))?;
    std::fs::copy(real, &dst).map_err(setup("copy into the image"))?;
    Ok(())
}

fn default_program() -> Option<PathBuf> {
    ["/usr/bin/curl", "/usr/bin/systemctl", "/usr/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The shared objects `program` loads, as `ldd` lists them: (the name the loader uses, the file).
fn libraries_of(program: &Path) -> Result<Vec<(PathBuf, PathBuf)>, BenchError> {
    let out = Command::new("ldd").arg(program).output().map_err(setup("ldd"))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!("ldd {}: not a dynamic program", program.display())));
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let named = PathBuf::from(p);
            let real = std::fs::canonicalize(&named).map_err(setup("library"))?;
            v.push((named, real));
        }
    }
    Ok(v)
}

/// The daemon's open events so far (0 without a daemon).
fn open_events(driftgate: &Path, socket: &Path, daemon: bool) -> Result<u64, BenchError> {
    if !daemon {
        return Ok(0);
    }
    let out = Command::new(driftgate)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .map_err(setup("driftgate status"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(setup("driftgate status"))?;
    Ok(v["libraries"]["open_events"].as_u64().unwrap_or(0))
}

/// Runs one workload in the container; its samples (µs).
fn run_phase(
    driftgate: &Path,
    root: &Path,
    phase: &str,
    n: usize,
    program: Option<&Path>,
) -> Result<Vec<f64>, BenchError> {
    let mut cmd = Command::new(driftgate);
    cmd.args(["bench", "open-inside", "--root"]).arg(root).args([
        "--phase",
        phase,
        "--iterations",
        &n.to_string(),
    ]);
    if let Some(p) = program {
        cmd.arg("--program").arg(p);
    }
    let out = cmd.stdin(Stdio::null()).output().map_err(setup("open-inside"))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "open-inside {phase}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().map_err(|e| BenchError::Setup(format!("open-inside output: {e}"))))
        .collect()
}

/// posix_spawn + waitpid of `program --version` with its output to `out`; µs.
fn spawn_quiet(program: &Path, out: &std::fs::File) -> Result<f64, String> {
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(program.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let args = [path.clone(), c"--version".to_owned()];
    let mut actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    actions.add_dup2(out.as_raw_fd(), 1).map_err(|e| e.to_string())?;
    actions.add_dup2(out.as_raw_fd(), 2).map_err(|e| e.to_string())?;
    let attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    let envp: [&std::ffi::CStr; 0] = [];
    let t = Instant::now();
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, &args, &envp)
        .map_err(|e| format!("posix_spawn {}: {e}", program.display()))?;
    let st = nix::sys::wait::waitpid(pid, None).map_err(|e| format!("waitpid: {e}"))?;
    let dt = t.elapsed();
    match st {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(dt.as_secs_f64() * 1e6),
        other => Err(format!("{} --version failed: {other:?}", program.display())),
    }
}

/// The runner (a process of its own, single-threaded): enters a new mount namespace, chroots
/// into the container and, as PID 1 of a PID namespace of the container's own (as every runtime
/// makes; driftgate's kernel layer knows a container by it), execs the container's first program
/// and times `phase` (see the module comment). Prints the samples, in µs.
pub fn run_open_inside(
    root: &Path,
    phase: &str,
    iterations: usize,
    program: Option<&Path>,
) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    nix::unistd::chroot(root).map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
    let code = driftgate_sys::process::run_as_pid_namespace_init(|| {
        use std::io::Write;
        let res = crate::inside::spawn_wait(&["/bin/true".to_owned()])
            .and_then(|_| time_phase(phase, iterations, program));
        match res {
            Ok(samples) => {
                let text: Vec<String> = samples.iter().map(|s| format!("{s:.3}")).collect();
                let mut out = std::io::stdout().lock();
                let ok = writeln!(out, "{}", text.join(" ")).and_then(|_| out.flush()).is_ok();
                if ok {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("{e}");
                1
            }
        }
    })
    .map_err(|e| e.to_string())?;
    match code {
        0 => Ok(()),
        c => Err(format!("the workload {phase:?} failed (exit status {c})")),
    }
}

/// Times `phase` in the container (run by [`run_open_inside`]).
fn time_phase(phase: &str, iterations: usize, program: Option<&Path>) -> Result<Vec<f64>, String> {
    let time_opens = |path: &str| -> Result<Vec<f64>, String> {
        let mut v = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            let f = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
            drop(f);
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(v)
    };
    match phase {
        "tree" => {
            let t = Instant::now();
            let mut n = 0usize;
            for d in std::fs::read_dir("/data").map_err(|e| format!("/data: {e}"))? {
                let d = d.map_err(|e| e.to_string())?.path();
                for f in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
                    let p = f.map_err(|e| e.to_string())?.path();
                    n += std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?.len();
                }
            }
            std::hint::black_box(n);
            Ok(vec![t.elapsed().as_secs_f64() * 1e6])
        }
        "image" => time_opens("/etc/data.txt"),
        "upper" => {
            std::fs::write("/tmp/bench-data.txt", b"container data\n").map_err(|e| format!("write: {e}"))?;
            time_opens("/tmp/bench-data.txt")
        }
        "dynamic" => {
            let p = program.ok_or("no --program")?;
            // Its output goes to a file opened once (an open for writing is never ignored).
            let out = std::fs::File::create("/tmp/dynamic.out").map_err(|e| format!("create: {e}"))?;
            (0..iterations).map(|_| spawn_quiet(p, &out)).collect()
        }
        other => Err(format!("unknown phase {other:?} (known: {})", PHASES.join(", "))),
    }
}
