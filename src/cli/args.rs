//! The command line's shape (clap): every subcommand and its arguments.

use clap::{Parser, Subcommand};

use super::{assets, bench, config_check, evidence, findings, index, ioc, policy};
use super::{reload, run, status, thaw, unpin};

#[derive(Debug, Parser)]
#[command(
    name = "driftgate",
    version,
    about = "Blocks and reports binaries executed in containers that were not part of their image",
    long_about = "driftgate holds every exec inside a container (fanotify FAN_OPEN_EXEC_PERM on the \
container's overlay rootfs) until it has decided whether the executed file is the image's own, \
unmodified file. Added or modified binaries are audited (allowed and recorded) or blocked (EPERM) \
and recorded as findings in journald and a durable local spool."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (needs root: CAP_SYS_ADMIN for fanotify).
    Run(run::RunArgs),
    /// Print recorded findings from the spool (filter them, or follow new ones).
    Findings(findings::FindingsArgs),
    /// Show the running daemon's state: mode, containers, decisions, latency, spool.
    Status(status::StatusArgs),
    /// Ask the running daemon to reload its configuration; fails (78) when it is invalid.
    Reload(reload::ReloadArgs),
    /// Copies of the files behind findings: list them, export one.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Thaw a container frozen by a rule's `response = "freeze"`.
    Thaw(thaw::ThawArgs),
    /// Remove the kernel layer's pins (it then holds only while a daemon runs).
    Unpin(unpin::UnpinArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Known-bad hashes (IoCs).
    #[command(subcommand)]
    Ioc(ioc::IocCommand),
    /// Image-layer manifests: build offline, list, show.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Scoped policy: check a candidate against recorded findings.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets(assets::AssetsArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without starting the daemon.
    Check(config_check::CheckArgs),
}
