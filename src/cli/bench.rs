//! `driftgate bench exec`: exec-latency benchmark (see `crate::bench::exec`).

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::bench::exec::{self, Options, ALL_CONFIGS};
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Measure spawn-and-wait latency of a small static binary in a scratch overlay container,
    /// with no listener, the kernel's floor, and driftgate, interleaved in rounds (needs root).
    Exec(ExecArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Timed execs per configuration per round.
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Rounds; configurations are interleaved within each round.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Pin the benchmark (and the daemon it starts) to this CPU.
    #[arg(long, value_name = "CPU")]
    pub pin: Option<usize>,
    /// Configurations to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ALL_CONFIGS.iter().map(|s| s.to_string()))]
    pub configs: Vec<String>,
    /// A static binary to execute instead of the built-in exit(0) executable.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> i32 {
    let BenchCommand::Exec(a) = cmd;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("driftgate: `bench exec` needs root (overlay mount, fanotify)");
        return exit::NOPERM;
    }
    if a.iterations == 0 || a.rounds == 0 {
        eprintln!("driftgate: --iterations and --rounds must be at least 1");
        return exit::USAGE;
    }
    let driftgate = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("driftgate: cannot find own executable: {e}");
            return exit::FAILURE;
        }
    };
    let opts = Options {
        iterations: a.iterations,
        rounds: a.rounds,
        pin: a.pin,
        configs: a.configs,
        binary: a.binary,
        driftgate,
    };
    let tty = std::io::stderr().is_terminal();
    let res = exec::run(&opts, |round, name| {
        if tty {
            eprint!("\rround {}/{} {:<24}", round + 1, opts.rounds, name);
        }
    });
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
            exit::OK
        }
        Err(e) => {
            eprintln!("driftgate: {e}");
            exit::FAILURE
        }
    }
}
