//! `driftgate policy simulate`: replay recorded findings against a candidate policy, to check
//! an enforce rollout before making it.

use std::path::PathBuf;

use super::common::CliError;

use driftgate_core::config::Config;

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
    /// Spool to replay [default: the running daemon's (asked over its status socket), else the
    /// candidate's `spool.dir`]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// The running daemon's status socket [default: the candidate's, then the installed
    /// configuration's]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
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
    let (spool_dir, source) = match a.spool_dir.clone() {
        Some(d) => (d, "given with --spool-dir".to_owned()),
        None => running_spool(&a, &candidate).unwrap_or_else(|| {
            (candidate.spool_dir.clone(), "the candidate's spool.dir; no daemon answered".into())
        }),
    };
    if !spool_dir.is_dir() {
        return Err(CliError::NotFound(format!(
            "spool {} ({source}): no such directory",
            spool_dir.display()
        )));
    }
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
    let sim = driftgate_core::engine::simulate::simulate(
        &findings,
        &candidate.policy,
        candidate.mode,
        candidate.ioc_block,
    );
    if a.json {
        let mut v = serde_json::to_value(&sim).expect("simulation serializes");
        v["spool"] = spool_dir.display().to_string().into();
        v["spool_source"] = source.into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} recorded execs from spool {} ({source}) replayed against {} ({} rules, fallback mode {}):",
        sim.total.blocked + sim.total.audited + sim.total.allowed,
        spool_dir.display(),
        a.config.display(),
        candidate.policy.rules.len(),
        candidate.mode.as_str()
    );
    println!("{:<24} {:<40} {:>8} {:>8} {:>8}", "NAMESPACE", "IMAGE", "BLOCKED", "AUDITED", "ALLOWED");
    for r in &sim.rows {
        println!(
            "{:<24} {:<40} {:>8} {:>8} {:>8}",
            driftgate_core::util::printable(r.namespace.as_bytes()),
            driftgate_core::util::printable(r.image.as_bytes()),
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

/// The spool of the daemon answering on `--socket`, the candidate's socket or the installed
/// configuration's, with which socket said so.
fn running_spool(a: &SimulateArgs, candidate: &Config) -> Option<(PathBuf, String)> {
    let mut sockets: Vec<PathBuf> = a.socket.iter().cloned().collect();
    if a.socket.is_none() {
        sockets.push(candidate.socket.clone());
        if let Ok(c) = super::common::load_config(None) {
            sockets.push(c.socket);
        }
        sockets.dedup();
    }
    sockets.iter().find_map(|s| {
        let st = crate::daemon::socket::query(s).ok()?;
        Some((
            PathBuf::from(st.spool.dir),
            format!("the running daemon's, pid {}, asked on {}", st.pid, s.display()),
        ))
    })
}
