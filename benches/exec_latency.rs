//! `cargo bench --bench exec_latency`: the same harness as `driftgate bench exec` (needs root).
//! Environment: DRIFTGATE_BENCH_ITERATIONS, DRIFTGATE_BENCH_ROUNDS, DRIFTGATE_BENCH_PIN,
//! DRIFTGATE_BENCH_BINARY.

use driftgate_bench::exec::{default_configs, render, run, Options};

fn env<T: std::str::FromStr>(k: &str) -> Option<T> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: exec_latency needs root");
        return;
    }
    let opts = Options {
        iterations: env("DRIFTGATE_BENCH_ITERATIONS").unwrap_or(2000),
        rounds: env("DRIFTGATE_BENCH_ROUNDS").unwrap_or(5),
        pin: env("DRIFTGATE_BENCH_PIN"),
        configs: default_configs(),
        binary: std::env::var_os("DRIFTGATE_BENCH_BINARY").map(Into::into),
        driftgate: env!("CARGO_BIN_EXE_driftgate").into(),
        daemon_extra: String::new(),
        image: None,
        baseline: None,
    };
    match run(&opts, |_, _| {}) {
        Ok(r) => print!("{}", render(&r)),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
