//! The `driftgate` binary: parse arguments, dispatch, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = driftgate::cli::Cli::parse();
    std::process::exit(driftgate::cli::dispatch(cli));
}
