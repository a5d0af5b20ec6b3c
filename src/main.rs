//! The `driftgate` binary: parse arguments, dispatch, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = driftgate::cli::Cli::parse();
    let code = match driftgate::cli::dispatch(cli) {
        Ok(()) => driftgate::exit::OK,
        Err(e) => e.report(),
    };
    std::process::exit(code);
}
