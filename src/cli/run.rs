//! `driftgate run`: the daemon in the foreground.

use driftgate_core::engine::Mode;

use super::common::CliError;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// Override the configured mode.
    #[arg(long, value_name = "MODE", value_parser = ["audit", "enforce"])]
    pub mode: Option<String>,
    /// Debug logging (same as DRIFTGATE_LOG=debug).
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: RunArgs) -> Result<(), CliError> {
    // Before the logging thread exists (see `block_signals`).
    if let Err(e) = crate::daemon::block_signals() {
        return Err(CliError::Failure(format!("{e}")));
    }
    let _log = super::common::init_logging(args.verbose);
    // The configuration is validated completely before anything is marked.
    let mut cfg = args.config.load()?;
    if let Some(m) = args.mode {
        cfg.mode = m.parse::<Mode>().expect("clap restricts the values");
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err(CliError::NoPerm(
            "`run` needs root (CAP_SYS_ADMIN for fanotify permission events)".to_string(),
        ));
    }
    match crate::daemon::run(cfg) {
        Ok(()) => Ok(()),
        // Restarting cannot help (the unit does not restart on 78): say why, once.
        Err(crate::daemon::DaemonError::Refused(why)) => {
            tracing::error!("driftgate cannot run here: {why}");
            Err(CliError::Config(format!("driftgate cannot run here: {why}")))
        }
        Err(crate::daemon::DaemonError::Config(why)) => {
            tracing::error!("configuration: {why}");
            Err(CliError::Config(why))
        }
        Err(e) => {
            tracing::error!(error = %e, "driftgate failed");
            Err(CliError::Failure(format!("{e}")))
        }
    }
}
