//! Command-line interface: one module per subcommand. Each returns an exit code.

pub mod assets;
pub mod bench;
pub mod config_check;
pub mod findings;
pub mod index;
pub mod ioc;
pub mod policy;
pub mod run;
pub mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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

/// `--config` as every subcommand takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file [default: /etc/driftgate/driftgate.toml if it exists, else built-in defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration, or the exit code after saying what is wrong with it.
    pub fn load(&self) -> Result<crate::config::Config, i32> {
        load_config(self.config.as_deref())
    }
}

/// Loads a configuration (`None`: the default file or built-in defaults); on error, prints it
/// (file, line and key) and returns the exit code for a bad configuration.
pub fn load_config(path: Option<&std::path::Path>) -> Result<crate::config::Config, i32> {
    crate::config::Config::load(path).map_err(|e| {
        eprintln!("driftgate: configuration error: {e}");
        crate::exit::CONFIG
    })
}

pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Findings(a) => findings::run(a),
        Command::Status(a) => status::run(a),
        Command::Config(ConfigCommand::Check(a)) => config_check::run(a),
        Command::Ioc(c) => ioc::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Index(c) => index::run(c),
        Command::Bench(b) => bench::run(b),
        Command::GenerateAssets(a) => assets::run(a),
    }
}

/// Sets up logging: journald when running under systemd (or when asked), stderr otherwise.
///
/// Log lines go through a bounded queue to a thread of their own that does the writing: a
/// journald that stops reading (or a stderr pipe nobody drains) can only make that thread
/// wait, never a thread that decides execs. When the queue is full, lines are dropped and
/// counted ([`crate::sink::log_lines_dropped`]). Keep the returned guard alive: dropping it
/// flushes what is queued.
pub fn init_logging(verbose: bool) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if verbose { "debug" } else { "info" }));
    let builder = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16_384)
        .thread_name("driftgate-log");
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let journal = under_systemd.then(crate::sink::journald::LogLines::open).flatten();
    if let Some(lines) = journal {
        let (writer, guard) = builder.finish(lines);
        crate::sink::set_log_drop_counter(writer.error_counter());
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .without_time()
            .with_target(false)
            .with_ansi(false);
        let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
        return guard;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = builder.finish(std::io::stderr());
    crate::sink::set_log_drop_counter(writer.error_counter());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(writer).with_target(false).with_ansi(ansi))
        .try_init();
    guard
}
