//! Command-line interface: one module per subcommand, each returning `Result<(), CliError>`;
//! `main` prints the error and exits with its status.

mod args;
pub mod assets;
pub mod bench;
pub mod common;
pub mod config_check;
pub mod findings;
pub mod index;
pub mod ioc;
pub mod policy;
pub mod run;
pub mod status;

pub use args::{Cli, Command, ConfigCommand};
pub use common::CliError;

/// Runs the command line's subcommand.
pub fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Findings(a) => findings::run(a),
        Command::Status(a) => status::run(a),
        Command::Config(ConfigCommand::Check(a)) => config_check::run(a),
        Command::Ioc(c) => ioc::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Index(c) => index::run(c),
        Command::Bench(b) => bench::run(b),
        Command::GenerateAssets(a) => assets::run(a, <Cli as clap::CommandFactory>::command()),
    }
}
