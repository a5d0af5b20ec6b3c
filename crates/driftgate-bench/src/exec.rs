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

use std::path::PathBuf;

use serde::Serialize;

use crate::error::setup;
pub use crate::error::BenchError;
use crate::fixture::{write_exec, write_padded, Containers};
use crate::inside::Inside;
pub use crate::listener::with_extra;
use crate::listener::{fapolicyd, fapolicyd_path};
use crate::listener::{Listener, ListenerKind};
pub use crate::load::{render_load, run_load, LoadOptions, LoadReport, LoadSummary, LOAD_CONFIGS};
pub use crate::measure::sha256_us;
use crate::measure::{interrupt_fd, kernel, load_binary, measure, pin};
use crate::stats::{relate, summarize, Summary};
use driftgate_core::engine::Mode;

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

/// The suffix of a driftgate configuration run with the kernel layer off
/// (`driftgate-enforce-kernel-off`): not in the default set.
pub const KERNEL_OFF: &str = "-kernel-off";

/// The suffix of a driftgate configuration run with `[libraries]` on
/// (`driftgate-enforce-script-libraries`): opens decided too.
pub const LIBRARIES: &str = "-libraries";

/// Configurations that need a real image (`--image`), not in the default set: a Python
/// start (`python3 -c pass`) with no listener and under driftgate.
pub const IMAGE_CONFIGS: &[&str] =
    &["none-python", "driftgate-enforce-python", "driftgate-enforce-python-libraries"];

/// The default set: everything, with `fapolicyd` only when it is installed.
pub fn default_configs() -> Vec<String> {
    CONFIGS
        .iter()
        .filter(|c| **c != "fapolicyd" || fapolicyd_path().is_some())
        .map(|c| c.to_string())
        .collect()
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
    /// A real root file system (`scripts/debian-image.sh`), the image of a second container
    /// that the Python workloads run in.
    pub image: Option<PathBuf>,
    /// Another driftgate executable (`--baseline`, a build from before a change): every
    /// driftgate configuration `c` also runs with it, as `c@baseline`, in the same rounds.
    pub baseline: Option<PathBuf>,
}

/// The suffix of a configuration run with [`Options::baseline`].
pub const BASELINE: &str = "@baseline";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub binary: String,
    pub binary_bytes: u64,
    pub iterations: usize,
    pub rounds: usize,
    pub pinned_cpu: Option<usize>,
    pub kernel: String,
    pub configs: Vec<Summary>,
    /// The kernel layer's programs: runs and time per configuration (where it ran).
    pub kernel_layer: Vec<crate::kernelcost::ProgramCost>,
}

/// What a configuration executes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Workload {
    /// The image's binary.
    Image,
    /// A binary added to the container once, executed again and again.
    CachedAdded,
    /// A fresh added binary of this many bytes for every exec.
    FirstExec(usize),
    /// Run inside the container's own mount namespace.
    Inside(super::inside::Inside),
}

pub(crate) fn plan(name: &str) -> Result<(ListenerKind, Workload), BenchError> {
    Ok(match name {
        "none" => (ListenerKind::None, Workload::Image),
        "none-added" => (ListenerKind::None, Workload::CachedAdded),
        "floor" => (ListenerKind::Floor, Workload::Image),
        // The kernel's round trip for the writable-layer file `driftgate-audit-cached-added` runs.
        "floor-added" => (ListenerKind::Floor, Workload::CachedAdded),
        "driftgate-audit" => (ListenerKind::driftgate(Mode::Audit), Workload::Image),
        "driftgate-enforce" => (ListenerKind::driftgate(Mode::Enforce), Workload::Image),
        "driftgate-enforce-bare" => (
            ListenerKind::Driftgate {
                mode: Mode::Enforce,
                index: false,
                iocs: 0,
                allow_vol: false,
                kernel: true,
                libraries: false,
            },
            Workload::Image,
        ),
        "driftgate-enforce-index-ioc-1m" => (
            ListenerKind::Driftgate {
                mode: Mode::Enforce,
                index: true,
                iocs: 1_000_000,
                allow_vol: false,
                kernel: true,
                libraries: false,
            },
            Workload::Image,
        ),
        "driftgate-audit-cached-added" => (ListenerKind::driftgate(Mode::Audit), Workload::CachedAdded),
        "driftgate-first-exec-1m" => (ListenerKind::driftgate(Mode::Audit), Workload::FirstExec(1 << 20)),
        "driftgate-first-exec-16m" => (ListenerKind::driftgate(Mode::Audit), Workload::FirstExec(16 << 20)),
        "driftgate-first-exec-128m" => (ListenerKind::driftgate(Mode::Audit), Workload::FirstExec(128 << 20)),
        // A trusted tools volume: its executables allowed by a `mounts` rule (otherwise drift).
        "none-volume" => (ListenerKind::None, Workload::Inside(Inside::Volume)),
        "driftgate-enforce-volume" => (
            ListenerKind::Driftgate {
                mode: Mode::Enforce,
                index: true,
                iocs: 0,
                allow_vol: true,
                kernel: true,
                libraries: false,
            },
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
        // A Python start in the real image given with `--image`.
        "none-python" => (ListenerKind::None, Workload::Inside(Inside::Python)),
        "driftgate-enforce-python" => {
            (ListenerKind::driftgate(Mode::Enforce), Workload::Inside(Inside::Python))
        }
        "fapolicyd" => (ListenerKind::Fapolicyd, Workload::Image),
        // Any driftgate configuration with `[libraries]` on.
        other if other.starts_with("driftgate-") && other.ends_with(LIBRARIES) => {
            let (kind, work) = plan(&other[..other.len() - LIBRARIES.len()])?;
            (kind.with_libraries(), work)
        }
        // Any driftgate configuration with the kernel layer off (`[kernel] enabled = "off"`),
        // to measure the layer side by side where the kernel has BPF LSM.
        other if other.starts_with("driftgate-") && other.ends_with(KERNEL_OFF) => {
            let (kind, work) = plan(&other[..other.len() - KERNEL_OFF.len()])?;
            (kind.without_kernel_layer(), work)
        }
        other => {
            return Err(BenchError::UnknownConfig {
                name: other.to_owned(),
                known: format!(
                    "{}, {} (with --image), and any driftgate-* with {KERNEL_OFF} or {LIBRARIES}",
                    CONFIGS.join(", "),
                    IMAGE_CONFIGS.join(", ")
                ),
            })
        }
    })
}

/// Runs the benchmark. `progress` is called after each configuration of each round.
pub fn run(opts: &Options, mut progress: impl FnMut(usize, &str)) -> Result<Report, BenchError> {
    let plans = opts
        .configs
        .iter()
        .map(|c| match c.strip_suffix(BASELINE) {
            Some(_) if opts.baseline.is_none() => {
                Err(BenchError::Setup(format!("{c}: give --baseline PATH")))
            }
            Some(own) if !own.starts_with("driftgate") => {
                Err(BenchError::Setup(format!("{c}: only driftgate configurations run with --baseline")))
            }
            Some(own) => plan(own),
            None => plan(c),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sig = interrupt_fd()?;
    let _ns = fapolicyd::isolate_if(plans.iter().any(|p| p.0 == ListenerKind::Fapolicyd))?;
    pin(opts.pin)?;
    let binary = load_binary(&opts.binary)?;
    let mut c = Containers::new(&binary, 1)?;
    let real_image = match &opts.image {
        Some(dir) => Some(c.add_image_container(dir)?),
        None if plans.iter().any(|p| p.1 == Workload::Inside(Inside::Python)) => {
            return Err(BenchError::Setup(
                "the python configurations run in a real image: give --image DIR (a root file system with python3, such as scripts/debian-image.sh makes)".into(),
            ));
        }
        None => None,
    };
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
    let _stats = crate::kernelcost::StatsOn::enable();
    let mut kernel_layer = Vec::new();
    let warmup = (opts.iterations / 20).clamp(10, 200);
    let mut fresh = 0usize;
    for round in 0..opts.rounds {
        for (ci, (name, (kind, work))) in opts.configs.iter().zip(&plans).enumerate() {
            let exe = match (name.ends_with(BASELINE), &opts.baseline) {
                (true, Some(b)) => b,
                _ => &opts.driftgate,
            };
            let listener = Listener::start(*kind, &c, exe, &opts.daemon_extra)?;
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
                    exe,
                    if what == Inside::Python { real_image.as_ref().expect("checked") } else { &c.merged[0] },
                    &volume,
                    what,
                    warmup,
                    opts.iterations,
                    &sig,
                )?,
            };
            if listener.pid().is_some() && name.starts_with("driftgate") {
                let runs = crate::kernelcost::program_runs(exe, &c.root().join("driftgate.sock"));
                crate::kernelcost::add(&mut kernel_layer, name, runs);
            }
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
        kernel_layer,
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
    // The name column fits the longest name (`...-libraries@baseline`).
    let w = r.configs.iter().map(|c| c.name.len()).max().unwrap_or(0).max(30);
    s.push_str(&format!(
        "{:<w$} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
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
            "{:<w$} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9} {:>9} {:>7.3}\n",
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
    s.push_str(&crate::kernelcost::render(&r.kernel_layer));
    s
}

// ---------------------------------------------------------------------------------------------
// Load mode
