//! Load mode: exec storms from K containers with C workers at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use serde::Serialize;

use crate::error::BenchError;
use crate::fixture::write_sparse;
use crate::fixture::Containers;
use crate::listener::{Listener, ListenerKind};
use crate::measure::{interrupt_fd, interrupted, kernel, load_binary, spawn_wait};
use driftgate_core::engine::Mode;

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
