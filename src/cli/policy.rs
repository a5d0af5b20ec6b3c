//! `driftgate policy simulate`: replay recorded findings against a candidate policy, to check
//! an enforce rollout before making it.

use std::path::PathBuf;

use super::common::CliError;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Print what a candidate configuration would have blocked, audited and allowed, per
    /// namespace and image, over the recorded findings
    Simulate(SimulateArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The candidate configuration (its mode, [ioc] block and [[policy.rules]] are used)
    #[arg(long, value_name = "CANDIDATE.toml")]
    pub config: PathBuf,
    /// Only findings recorded in this recent period (e.g. 7d, 12h) or since an RFC 3339 time
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Spool to replay [default: the running configuration's]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: PolicyCommand) -> Result<(), CliError> {
    let PolicyCommand::Simulate(a) = cmd;
    let candidate = match Config::from_file(&a.config) {
        Ok(c) => c,
        Err(e) => {
            return Err(CliError::Config(format!("candidate configuration error: {e}")));
        }
    };
    let spool_dir = match a.spool_dir {
        Some(d) => d,
        None => match super::common::load_config(None) {
            Ok(c) => c.spool_dir,
            Err(e) => return Err(e),
        },
    };
    let since =
        match a.since.as_deref().map(|s| super::findings::parse_time(s, time::OffsetDateTime::now_utc())) {
            Some(Err(e)) => {
                return Err(CliError::Usage(format!("--since: {e}")));
            }
            Some(Ok(t)) => Some(t),
            None => None,
        };
    let findings = super::findings::read_spool(&spool_dir)?;
    let findings: Vec<_> = findings
        .into_iter()
        .filter(|f| {
            since.is_none_or(|s| {
                time::OffsetDateTime::parse(&f.time, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| t >= s)
            })
        })
        .collect();
    let sim =
        crate::engine::simulate::simulate(&findings, &candidate.policy, candidate.mode, candidate.ioc_block);
    if a.json {
        println!("{}", serde_json::to_string(&sim).expect("simulation serializes"));
        return Ok(());
    }
    println!(
        "{} recorded execs replayed against {} ({} rules, fallback mode {}):",
        sim.total.blocked + sim.total.audited + sim.total.allowed,
        a.config.display(),
        candidate.policy.rules.len(),
        candidate.mode.as_str()
    );
    println!("{:<24} {:<40} {:>8} {:>8} {:>8}", "NAMESPACE", "IMAGE", "BLOCKED", "AUDITED", "ALLOWED");
    for r in &sim.rows {
        println!(
            "{:<24} {:<40} {:>8} {:>8} {:>8}",
            crate::util::printable(r.namespace.as_bytes()),
            crate::util::printable(r.image.as_bytes()),
            r.counts.blocked,
            r.counts.audited,
            r.counts.allowed
        );
    }
    println!(
        "{:<24} {:<40} {:>8} {:>8} {:>8}",
        "TOTAL", "", sim.total.blocked, sim.total.audited, sim.total.allowed
    );
    println!("{} execs would be treated differently from what was recorded", sim.changed);
    Ok(())
}
