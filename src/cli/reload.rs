//! `driftgate reload`: asks the running daemon to read its configuration again, and says
//! whether it took it. systemd's `ExecReload=` runs it, so `systemctl reload driftgate` fails,
//! with the reason, when the new configuration is invalid (the daemon keeps the running one).

use std::path::PathBuf;

use super::common::CliError;

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// The daemon's status socket [default: the configured one, /run/driftgate/driftgate.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

pub fn run(a: ReloadArgs) -> Result<(), CliError> {
    // The socket comes from the configuration; a configuration that no longer parses is the
    // very case a reload must report, so the default socket is asked then (the daemon reads
    // the file itself, and says what is wrong with it).
    let socket = match a.socket {
        Some(s) => s,
        None => a
            .config
            .load()
            .map(|c| c.socket)
            .unwrap_or_else(|_| driftgate_core::config::Config::defaults().socket),
    };
    let reply = crate::daemon::socket::request_reload(&socket)
        .map_err(|e| CliError::Failure(format!("no daemon answered on {}: {e}", socket.display())))?;
    if reply.ok {
        println!("configuration reloaded");
        Ok(())
    } else {
        Err(CliError::Config(format!(
            "reload refused; the daemon keeps its running configuration: {}",
            reply.error.unwrap_or_default()
        )))
    }
}
