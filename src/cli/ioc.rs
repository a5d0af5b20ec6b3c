//! `driftgate ioc check FILE|SHA256...`: is it known-bad, and according to which source.

use driftgate_core::index::ioc::IocSet;
use driftgate_core::util::parse_sha256;

use super::common::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum IocCommand {
    /// Check files (hashed here) or SHA-256 values against the configured IoC sources
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// IoC source to use instead of the configured `[ioc] paths` (repeatable)
    #[arg(long = "source", value_name = "PATH")]
    pub sources: Vec<std::path::PathBuf>,
    /// Files or SHA-256 hex values
    #[arg(required = true, value_name = "FILE|SHA256")]
    pub items: Vec<String>,
}

pub fn run(cmd: IocCommand) -> Result<(), CliError> {
    let IocCommand::Check(a) = cmd;
    let paths = if a.sources.is_empty() {
        match a.config.load() {
            Ok(c) => c.ioc_paths,
            Err(e) => return Err(e),
        }
    } else {
        a.sources
    };
    let (set, reports, errors) = IocSet::load(&paths);
    for e in &errors {
        eprintln!("driftgate: {e}");
    }
    for r in reports.iter().filter(|r| r.invalid > 0) {
        eprintln!(
            "driftgate: {}: {} invalid lines (first at line {})",
            r.source, r.invalid, r.examples[0].line
        );
    }
    let mut failed = false;
    for item in &a.items {
        let hash = match parse_sha256(item.as_bytes()) {
            Some(h) => h,
            None => match hash_file(item) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("driftgate: {item}: {e}");
                    failed = true;
                    continue;
                }
            },
        };
        let hex = driftgate_core::util::hex(hash);
        match set.lookup(&hash) {
            Some(m) => println!(
                "{item}: KNOWN-BAD sha256={hex} name={} source={}",
                m.name.as_deref().unwrap_or("-"),
                m.source
            ),
            None => println!("{item}: not known sha256={hex}"),
        }
    }
    if failed {
        // Each unreadable item was printed above.
        Err(CliError::Reported(crate::exit::FAILURE))
    } else {
        Ok(())
    }
}

fn hash_file(path: &str) -> std::io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}
