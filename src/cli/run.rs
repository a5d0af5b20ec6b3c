//! `driftgate run`: the daemon in the foreground.

use crate::engine::Mode;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Override the configured mode.
    #[arg(long, value_name = "MODE", value_parser = ["audit", "enforce"])]
    pub mode: Option<String>,
    /// Debug logging (same as DRIFTGATE_LOG=debug).
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: RunArgs) -> i32 {
    // Before the logging thread exists (see `block_signals`).
    if let Err(e) = crate::daemon::block_signals() {
        eprintln!("driftgate: {e}");
        return exit::FAILURE;
    }
    let _log = super::init_logging(args.verbose);
    // The configuration is validated completely before anything is marked.
    let mut cfg = match args.config.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(m) = args.mode {
        cfg.mode = m.parse::<Mode>().expect("clap restricts the values");
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("driftgate: `run` needs root (CAP_SYS_ADMIN for fanotify permission events)");
        return exit::NOPERM;
    }
    match crate::daemon::run(cfg) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "driftgate failed");
            eprintln!("driftgate: {e}");
            exit::FAILURE
        }
    }
}
