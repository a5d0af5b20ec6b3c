//! `driftgate unpin`: removes the kernel layer's pins (`[kernel] pin_dir`), so that nothing of
//! it holds once no daemon runs. The package's removal calls it. A running daemon keeps its own
//! program attached until it stops (its links are its open files).

use std::path::PathBuf;

use super::common::CliError;

#[derive(Debug, clap::Args)]
pub struct UnpinArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// The pin directory [default: `[kernel] pin_dir` of the configuration, else /sys/fs/bpf/driftgate]
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
}

pub fn run(a: UnpinArgs) -> Result<(), CliError> {
    // A configuration that does not load (a package being removed) does not stop the unpin.
    let cfg = a.config.load().ok();
    let dir = a
        .pin_dir
        .or_else(|| cfg.as_ref().map(|c| c.kernel.pin_dir.clone()))
        .unwrap_or_else(|| PathBuf::from(driftgate_core::config::DEFAULT_PIN_DIR));
    let removed = driftgate_bpf::unpin(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            CliError::NoPerm(format!("{}: {e} (run as root)", dir.display()))
        }
        _ => CliError::Io(format!("{}: {e}", dir.display())),
    })?;
    let _ = std::fs::remove_dir(&dir);
    if removed {
        println!("removed the kernel layer's pins in {}", dir.display());
    } else {
        println!("nothing pinned in {}", dir.display());
    }
    let socket =
        cfg.map(|c| c.socket).unwrap_or_else(|| PathBuf::from(driftgate_core::config::DEFAULT_SOCKET));
    if crate::daemon::socket::query(&socket).is_ok() {
        println!("a daemon is running: its program stays attached until it stops, and it pins again when it starts");
    }
    Ok(())
}
