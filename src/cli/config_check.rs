//! `driftgate config check`: validate without starting.

use crate::config::Config;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
}

pub fn run(args: CheckArgs) -> i32 {
    match Config::load(args.config.config.as_deref()) {
        Ok(c) => {
            let src = c.source.as_ref().map_or("built-in defaults".to_owned(), |p| p.display().to_string());
            println!("{src}: OK (mode {}, spool {})", c.mode.as_str(), c.spool_dir.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("driftgate: configuration error: {e}");
            exit::CONFIG
        }
    }
}
