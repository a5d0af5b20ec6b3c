//! Command-line interface: one module per subcommand, each returning `Result<(), CliError>`;
//! `main` prints the error and exits with its status.

mod args;
pub(crate) mod assets;
pub(crate) mod bench;
pub(crate) mod common;
pub(crate) mod config_check;
pub(crate) mod evidence;
pub(crate) mod findings;
pub(crate) mod index;
pub(crate) mod ioc;
pub(crate) mod policy;
pub(crate) mod reload;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod thaw;
pub(crate) mod unpin;

pub use args::{Cli, Command, ConfigCommand};
pub use common::CliError;

/// Runs the command line's subcommand.
pub fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Findings(a) => findings::run(a),
        Command::Status(a) => status::run(a),
        Command::Reload(a) => reload::run(a),
        Command::Evidence(c) => evidence::run(c),
        Command::Thaw(a) => thaw::run(a),
        Command::Unpin(a) => unpin::run(a),
        Command::Config(ConfigCommand::Check(a)) => config_check::run(a),
        Command::Ioc(c) => ioc::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Index(c) => index::run(c),
        Command::Bench(b) => bench::run(b),
        Command::GenerateAssets(a) => assets::run(a, <Cli as clap::CommandFactory>::command()),
    }
}
