//! `driftgate bench exec`: exec-latency benchmark (see `driftgate_bench::exec`).

use std::io::IsTerminal;
use std::path::PathBuf;

use super::common::CliError;

use driftgate_bench::exec::{self, LoadOptions, Options, LOAD_CONFIGS};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Measure spawn-and-wait latency of a small static binary in scratch overlay containers,
    /// with no listener, the kernel's floor, driftgate (and fapolicyd when installed),
    /// interleaved in rounds (needs root). With --containers/--concurrency: exec storms.
    Exec(ExecArgs),
    /// Measure IoC set load time, memory and lookup time with N generated hashes.
    Ioc(IocArgs),
    /// Measure layer-indexing throughput: offline (plain, gzip, zstd layers) and on the node
    /// (from scratch, and re-checking an unchanged layer).
    Index(IndexArgs),
    /// Measure what library coverage ([libraries]) costs open() inside a scratch container:
    /// steady-state opens of image and writable-layer files, a find+cat over an image tree
    /// (cold and warm), a dynamic program's start-up; driftgate against no listener (needs root).
    Open(OpenArgs),
    /// (used by `bench exec`) Time a workload inside a scratch container's mount namespace.
    #[command(hide = true)]
    ExecInside(InsideArgs),
    /// (used by `bench open`) Time an open workload chrooted into a scratch container.
    #[command(hide = true)]
    OpenInside(OpenInsideArgs),
    /// (used by `bench exec`) The `floor` listener: mark, read, allow, until SIGTERM.
    #[command(hide = true)]
    Floor(FloorArgs),
}

#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// A directory whose filesystem to mark (repeatable)
    #[arg(long = "mark", required = true)]
    pub marks: Vec<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InsideArgs {
    /// The container's rootfs (chrooted into)
    #[arg(long)]
    pub root: std::path::PathBuf,
    /// SRC:DST bind mounts made in the new mount namespace before the chroot
    #[arg(long)]
    pub bind: Vec<String>,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// The program and its arguments, as the container sees them
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct OpenArgs {
    /// Timed opens per steady-state workload per round.
    #[arg(long, default_value_t = 20_000)]
    pub iterations: usize,
    /// Rounds; the two configurations alternate which goes first.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Small files in the image's tree (the find+cat workload).
    #[arg(long, default_value_t = 10_000)]
    pub files: usize,
    /// Timed starts of the dynamic program per round.
    #[arg(long, default_value_t = 200)]
    pub starts: usize,
    /// A dynamic program of this host to start in the container (with every library it
    /// needs) [default: curl, systemctl or python3].
    #[arg(long, value_name = "PATH")]
    pub program: Option<PathBuf>,
    /// Pin the benchmark (and the daemon it starts) to this CPU.
    #[arg(long, value_name = "CPU")]
    pub pin: Option<usize>,
    /// A TOML file appended to the daemon's configuration.
    #[arg(long, value_name = "FILE")]
    pub daemon_toml: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run driftgate with the kernel layer off, and show the layer's own cost (where the
    /// kernel has BPF LSM).
    #[arg(long)]
    pub kernel_layer: bool,
}

#[derive(Debug, clap::Args)]
pub struct OpenInsideArgs {
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub phase: String,
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    #[arg(long)]
    pub program: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// Layer size in MiB
    #[arg(long, default_value_t = 256)]
    pub mb: usize,
    /// Files in the layer (half executables)
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct IocArgs {
    /// Number of hashes
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Timed execs per configuration per round (per worker in load mode). First-exec
    /// configurations run at most 512 MiB worth of fresh files per round.
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Rounds; configurations are interleaved within each round.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Pin the benchmark (and the daemon it starts) to this CPU.
    #[arg(long, value_name = "CPU")]
    pub pin: Option<usize>,
    /// Configurations to run, comma-separated [default: all; fapolicyd only when installed].
    /// Single mode: none, none-added, floor, floor-added, driftgate-audit, driftgate-enforce,
    /// driftgate-enforce-bare, driftgate-enforce-index-ioc-1m, driftgate-audit-cached-added,
    /// driftgate-first-exec-1m, driftgate-first-exec-16m, driftgate-first-exec-128m, fapolicyd.
    /// Load mode: none, floor, driftgate-enforce, driftgate-audit-with-128m-first-execs.
    /// Any single-mode driftgate configuration with `-kernel-off` appended runs with the kernel
    /// layer off (`driftgate-enforce-kernel-off`): the layer's cost, side by side; with
    /// `-libraries`, with `[libraries]` on (`driftgate-enforce-script-libraries`).
    /// Inside a container: none-script, driftgate-enforce-script (the image's shell given the
    /// image's script), none-dynamic, driftgate-enforce-dynamic, none-volume,
    /// driftgate-enforce-volume; with --image: none-python, driftgate-enforce-python,
    /// driftgate-enforce-python-libraries (`python3 -c pass`).
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// A real root file system (such as `scripts/debian-image.sh` makes) as the image of a
    /// second container, for the python configurations.
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// Another driftgate executable (a build from before a change): every driftgate
    /// configuration also runs with it, as `<config>@baseline`, interleaved in the same rounds,
    /// so a change is measured against what it changed on the same noisy machine.
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Load mode: number of scratch containers exec storms run in.
    #[arg(long, value_name = "K")]
    pub containers: Option<usize>,
    /// Load mode: concurrent exec workers [default: 2 x CPUs].
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// A static binary to execute instead of the built-in exit(0) executable.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// A TOML file appended to the configuration the driftgate configurations run with (its
    /// tables come after the benchmark's own): measure with your own settings
    #[arg(long, value_name = "FILE")]
    pub daemon_toml: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<(), CliError> {
    let a = match cmd {
        BenchCommand::Exec(a) => a,
        BenchCommand::Ioc(i) => return run_ioc(i),
        BenchCommand::Index(i) => return run_index(i),
        BenchCommand::ExecInside(i) => return run_inside(i),
        BenchCommand::Open(o) => return run_open(o),
        BenchCommand::OpenInside(i) => {
            return driftgate_bench::open::run_open_inside(
                &i.root,
                &i.phase,
                i.iterations,
                i.program.as_deref(),
            )
            .map_err(|e| CliError::Failure(format!("bench open-inside: {e}")));
        }
        BenchCommand::Floor(f) => {
            return driftgate_bench::listener::floor(&f.marks).map_err(|e| CliError::Failure(e.to_string()))
        }
    };
    if !nix::unistd::Uid::effective().is_root() {
        return Err(CliError::NoPerm("`bench exec` needs root (overlay mount, fanotify)".to_string()));
    }
    if a.iterations == 0 || a.rounds == 0 {
        return Err(CliError::Usage("--iterations and --rounds must be at least 1".to_string()));
    }
    let driftgate = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return Err(CliError::Failure(format!("cannot find own executable: {e}")));
        }
    };
    let tty = std::io::stderr().is_terminal();
    let show = |round: usize, rounds: usize, name: &str| {
        if tty {
            eprint!("\rround {}/{} {:<40}", round + 1, rounds, name);
        }
    };
    let daemon_extra = daemon_toml(&a.daemon_toml)?;
    if a.containers.is_some() || a.concurrency.is_some() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let opts = LoadOptions {
            containers: a.containers.unwrap_or(20).max(1),
            concurrency: a.concurrency.unwrap_or(2 * cpus).max(1),
            iterations: a.iterations,
            rounds: a.rounds,
            configs: if a.configs.is_empty() {
                LOAD_CONFIGS.iter().map(|s| s.to_string()).collect()
            } else {
                a.configs
            },
            binary: a.binary,
            driftgate,
            daemon_extra: daemon_extra.clone(),
        };
        let res = exec::run_load(&opts, |r, n| show(r, opts.rounds, n));
        if tty {
            eprintln!();
        }
        return match res {
            Ok(r) => {
                if a.json {
                    println!("{}", serde_json::to_string(&r).expect("report serializes"));
                } else {
                    print!("{}", exec::render_load(&r));
                }
                Ok(())
            }
            Err(e) => Err(CliError::Failure(format!("{e}"))),
        };
    }
    let opts = Options {
        iterations: a.iterations,
        rounds: a.rounds,
        pin: a.pin,
        configs: with_baseline(
            if a.configs.is_empty() { exec::default_configs() } else { a.configs },
            a.baseline.is_some(),
        ),
        binary: a.binary,
        driftgate,
        daemon_extra,
        image: a.image,
        baseline: a.baseline,
    };
    let res = exec::run(&opts, |round, name| show(round, opts.rounds, name));
    if tty {
        eprintln!();
    }
    match res {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
            } else {
                print!("{}", exec::render(&r));
            }
            Ok(())
        }
        Err(e) => Err(CliError::Failure(format!("{e}"))),
    }
}

fn run_ioc(a: IocArgs) -> Result<(), CliError> {
    match driftgate_bench::ioc::run(a.entries) {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string(&r).expect("report serializes"));
            Ok(())
        }
        Ok(r) => {
            println!(
                "IoC set of {} hashes ({} MB file): loaded in {:.0} ms, {:.1} MiB heap ({:.1} MiB RSS growth), \
                 lookup {:.0} ns (hit) / {:.0} ns (miss)",
                r.entries,
                r.file_bytes / 1_000_000,
                r.load_ms,
                r.heap_mib,
                r.rss_growth_mib,
                r.lookup_hit_ns,
                r.lookup_miss_ns
            );
            Ok(())
        }
        Err(e) => Err(CliError::Failure(format!("bench ioc: {e}"))),
    }
}

fn run_index(a: IndexArgs) -> Result<(), CliError> {
    if a.mb == 0 || a.files == 0 {
        return Err(CliError::Usage("--mb and --files must be at least 1".to_string()));
    }
    let tty = std::io::stderr().is_terminal();
    let r = driftgate_bench::index::run(a.mb, a.files, |what| {
        if tty {
            eprintln!("driftgate: bench index: {what}");
        }
    });
    match r {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string(&r).expect("report serializes"));
            Ok(())
        }
        Ok(r) => {
            print!("{}", driftgate_bench::index::render(&r));
            Ok(())
        }
        Err(e) => Err(CliError::Failure(format!("bench index: {e}"))),
    }
}

fn run_inside(a: InsideArgs) -> Result<(), CliError> {
    let mut binds = Vec::new();
    for b in &a.bind {
        let Some((src, dst)) = b.split_once(':') else {
            return Err(CliError::Usage(format!("--bind {b:?}: expected SRC:DST")));
        };
        binds.push((src.into(), dst.into()));
    }
    match driftgate_bench::inside::run_inside(&a.root, &binds, a.warmup, a.iterations, &a.argv) {
        Ok(samples) => {
            let text: Vec<String> = samples.iter().map(|s| format!("{s:.3}")).collect();
            println!("{}", text.join(" "));
            Ok(())
        }
        Err(e) => Err(CliError::Failure(format!("bench exec-inside: {e}"))),
    }
}

fn run_open(a: OpenArgs) -> Result<(), CliError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(CliError::NoPerm("`bench open` needs root (overlay mount, fanotify)".to_string()));
    }
    if a.iterations == 0 || a.rounds == 0 || a.files == 0 {
        return Err(CliError::Usage("--iterations, --rounds and --files must be at least 1".to_string()));
    }
    let driftgate =
        std::env::current_exe().map_err(|e| CliError::Failure(format!("cannot find own executable: {e}")))?;
    let daemon_extra = daemon_toml(&a.daemon_toml)?;
    let opts = driftgate_bench::open::OpenOptions {
        iterations: a.iterations,
        rounds: a.rounds,
        files: a.files,
        starts: a.starts,
        pin: a.pin,
        program: a.program,
        driftgate,
        daemon_extra,
        kernel_layer: a.kernel_layer,
    };
    let tty = std::io::stderr().is_terminal();
    let res = driftgate_bench::open::run(&opts, |round, name| {
        if tty {
            eprint!("\rround {}/{} {:<40}", round + 1, opts.rounds, name);
        }
    });
    if tty {
        eprintln!();
    }
    let r = res.map_err(|e| CliError::Failure(format!("{e}")))?;
    if a.json {
        println!("{}", serde_json::to_string(&r).expect("report serializes"));
    } else {
        print!("{}", driftgate_bench::open::render(&r));
    }
    Ok(())
}

/// The `--daemon-toml` file's text (empty without one).
fn daemon_toml(path: &Option<PathBuf>) -> Result<String, CliError> {
    match path {
        None => Ok(String::new()),
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CliError::NotFound(format!("--daemon-toml {}: {e}", p.display()))),
    }
}

/// `configs`, each driftgate configuration followed by its `@baseline` twin when a baseline
/// executable is given (named ones are kept as they are).
fn with_baseline(configs: Vec<String>, baseline: bool) -> Vec<String> {
    if !baseline {
        return configs;
    }
    let mut out = Vec::with_capacity(configs.len() * 2);
    for c in configs {
        let twin = (c.starts_with("driftgate") && !c.ends_with(exec::BASELINE))
            .then(|| format!("{c}{}", exec::BASELINE));
        out.push(c);
        out.extend(twin);
    }
    out
}
