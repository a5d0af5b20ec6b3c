//! `driftgate findings`: read the spool, filter, follow.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::CliError;

use crate::sink::spool;
use driftgate_core::engine::{Action, Category};
use driftgate_core::finding::Finding;
use driftgate_core::util::printable;

#[derive(Debug, clap::Args)]
pub struct FindingsArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// Spool directory to read [default: the configured spool]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// One JSON object per line (schema driftgate.finding.v1); the same as --format json
    #[arg(long)]
    pub json: bool,
    /// Output: text, json (driftgate.finding.v1), ocsf (OCSF 1.4.0 Detection Finding, class
    /// 2004) or falco (Falco's alert shape), one object per line for all but text
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json", "ocsf", "falco"], conflicts_with = "json")]
    pub format: Option<String>,
    /// Only findings at or after this time: RFC 3339, or an age such as 30m, 12h, 7d
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only findings before this time: RFC 3339, or an age such as 1h
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this category (e.g. ADDED_BINARY_EXECUTED)
    #[arg(long, value_name = "CATEGORY")]
    pub category: Option<String>,
    /// Only this container: its id (or a prefix of it) or its name
    #[arg(long, value_name = "ID|NAME")]
    pub container: Option<String>,
    /// Only this Kubernetes namespace
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this action: blocked or audited
    #[arg(long, value_name = "ACTION", value_parser = ["blocked", "audited"])]
    pub action: Option<String>,
    /// Only the findings related to finding ID (or a unique prefix of it): the same container
    /// or the same pod, within --window of it, in time order
    #[arg(long, value_name = "ID")]
    pub related: Option<String>,
    /// With --related: how far before and after the finding to look
    #[arg(long, value_name = "DURATION", default_value = "30m", requires = "related")]
    pub window: String,
    /// Keep printing new findings as they are recorded
    #[arg(long, short)]
    pub follow: bool,
}

/// The finding `--related` names, and what makes another one related to it.
#[derive(Debug)]
pub struct Related {
    container: String,
    /// (namespace, pod name) when the container belongs to a pod.
    pod: Option<(String, String)>,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
}

fn rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// When a record's execs happened: its own time, or an aggregate's first to last.
fn span(f: &Finding) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    let t = rfc3339(&f.time)?;
    let first = f.first_seen.as_deref().and_then(rfc3339).unwrap_or(t);
    let last = f.last_seen.as_deref().and_then(rfc3339).unwrap_or(t);
    Some((first.min(t), last.max(t)))
}

impl Related {
    /// Finds `id` (whole, or a prefix matching exactly one finding) among `all`.
    pub fn find(all: &[Finding], id: &str, window: std::time::Duration) -> Result<Related, CliError> {
        let hits: Vec<&Finding> = all.iter().filter(|f| f.id.starts_with(id)).collect();
        let f = match hits.as_slice() {
            [] => return Err(CliError::NotFound(format!("--related: no finding {id:?} in the spool"))),
            [f] => *f,
            many => match many.iter().find(|f| f.id == id) {
                Some(f) => *f,
                None => {
                    return Err(CliError::Usage(format!(
                        "--related: {id:?} is a prefix of {} findings; give more of the id",
                        many.len()
                    )))
                }
            },
        };
        let (first, last) = span(f).ok_or_else(|| {
            CliError::Data(format!("--related: finding {} has no valid time {:?}", f.id, f.time))
        })?;
        let pod = match (&f.container.pod_namespace, &f.container.pod_name) {
            (Some(ns), Some(p)) => Some((ns.clone(), p.clone())),
            _ => None,
        };
        Ok(Related { container: f.container.id.clone(), pod, from: first - window, to: last + window })
    }

    pub fn matches(&self, f: &Finding) -> bool {
        let same_pod = self.pod.as_ref().is_some_and(|(ns, p)| {
            f.container.pod_namespace.as_deref() == Some(ns.as_str())
                && f.container.pod_name.as_deref() == Some(p.as_str())
        });
        (f.container.id == self.container || same_pod)
            && span(f).is_some_and(|(first, last)| last >= self.from && first <= self.to)
    }
}

/// Validated filters.
#[derive(Debug, Default)]
pub struct Filter {
    since: Option<time::OffsetDateTime>,
    until: Option<time::OffsetDateTime>,
    category: Option<Category>,
    container: Option<String>,
    namespace: Option<String>,
    action: Option<Action>,
}

/// `2026-11-26T10:00:00Z` or an age (`30m`, `12h`, `7d`) before now.
pub fn parse_time(s: &str, now: time::OffsetDateTime) -> Result<time::OffsetDateTime, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let age = driftgate_core::util::parse_duration(s)
        .map_err(|_| format!("{s:?} is neither RFC 3339 nor an age like 30m"))?;
    Ok(now - age)
}

impl Filter {
    pub fn from_args(a: &FindingsArgs, now: time::OffsetDateTime) -> Result<Filter, String> {
        Ok(Filter {
            since: a
                .since
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(|e| format!("--since: {e}"))?,
            until: a
                .until
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(|e| format!("--until: {e}"))?,
            category: a
                .category
                .as_deref()
                .map(|c| Category::parse(c).ok_or_else(|| format!("--category: unknown category {c:?}")))
                .transpose()?,
            container: a.container.clone(),
            namespace: a.namespace.clone(),
            action: a
                .action
                .as_deref()
                .map(|x| if x == "blocked" { Action::Blocked } else { Action::Audited }),
        })
    }

    pub fn matches(&self, f: &Finding) -> bool {
        let t = time::OffsetDateTime::parse(&f.time, &time::format_description::well_known::Rfc3339).ok();
        if let Some(since) = self.since {
            if t.is_none_or(|t| t < since) {
                return false;
            }
        }
        if let Some(until) = self.until {
            if t.is_none_or(|t| t >= until) {
                return false;
            }
        }
        if self.category.is_some_and(|c| c != f.category) || self.action.is_some_and(|a| a != f.action) {
            return false;
        }
        if let Some(c) = &self.container {
            if !(f.container.id.starts_with(c.as_str()) || f.container.name.as_deref() == Some(c.as_str())) {
                return false;
            }
        }
        if let Some(ns) = &self.namespace {
            if f.container.pod_namespace.as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        true
    }
}

pub fn run(args: FindingsArgs) -> Result<(), CliError> {
    let dir = match &args.spool_dir {
        Some(d) => d.clone(),
        None => match args.config.load() {
            Ok(c) => c.spool_dir,
            Err(e) => return Err(e),
        },
    };
    let filter = match Filter::from_args(&args, time::OffsetDateTime::now_utc()) {
        Ok(f) => f,
        Err(e) => {
            return Err(CliError::Usage(e.to_string()));
        }
    };
    let findings = read_spool(&dir)?;
    let related = match &args.related {
        Some(id) => {
            let window = driftgate_core::util::parse_duration(&args.window).map_err(|_| {
                CliError::Usage(format!("--window: {:?} is not a duration like 30m", args.window))
            })?;
            Some(Related::find(&findings, id, window)?)
        }
        None => None,
    };
    let mut shown: Vec<&Finding> = findings
        .iter()
        .filter(|f| filter.matches(f) && related.as_ref().is_none_or(|r| r.matches(f)))
        .collect();
    if related.is_some() {
        shown.sort_by_key(|f| span(f).map(|s| s.0));
    }
    let format = match (args.json, args.format.as_deref()) {
        (true, _) | (_, Some("json")) => Format::Json,
        (_, Some("ocsf")) => Format::Ocsf,
        (_, Some("falco")) => Format::Falco,
        _ => Format::Text,
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    let text = format == Format::Text;
    let header = text && (!shown.is_empty() || args.follow);
    let res = (|| {
        if header {
            print_header(&mut out)?;
        } else if shown.is_empty() && text && std::io::stdout().is_terminal() {
            writeln!(out, "no findings")?;
        }
        for f in &shown {
            print_one(&mut out, f, format)?;
        }
        out.flush()?;
        if args.follow {
            follow(
                &dir,
                &|f| filter.matches(f) && related.as_ref().is_none_or(|r| r.matches(f)),
                format,
                &mut out,
            )?;
        }
        Ok::<(), std::io::Error>(())
    })();
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failure(format!("{e}"))),
    }
}

/// Every finding in the spool; unreadable lines are reported on stderr with file and line.
pub fn read_spool(dir: &Path) -> Result<Vec<Finding>, CliError> {
    let (findings, bad) = spool::read_all(dir).map_err(|e| CliError::Failure(e.to_string()))?;
    for b in &bad {
        eprintln!("driftgate: {}: line {}: unreadable finding: {}", b.file.display(), b.line, b.error);
    }
    Ok(findings)
}

/// [`read_spool`], or no findings when there is no spool (yet).
pub fn read_spool_if_any(dir: &Path) -> Result<Vec<Finding>, CliError> {
    if dir.is_dir() {
        read_spool(dir)
    } else {
        Ok(Vec::new())
    }
}

/// Prints findings appended after the current end of the spool, until interrupted.
fn follow(
    dir: &Path,
    filter: &dyn Fn(&Finding) -> bool,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<()> {
    use std::collections::HashMap;
    let mut offsets: HashMap<u64, u64> = HashMap::new();
    for (seq, p) in spool::segments(dir).unwrap_or_default() {
        offsets.insert(seq, std::fs::metadata(&p).map_or(0, |m| m.len()));
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        for (seq, p) in spool::segments(dir).unwrap_or_default() {
            let off = offsets.entry(seq).or_insert(0);
            let Ok(data) = std::fs::read(&p) else { continue };
            if (data.len() as u64) <= *off {
                continue;
            }
            let new = &data[*off as usize..];
            let complete = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for line in new[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(f) = serde_json::from_slice::<Finding>(line) {
                    if filter(&f) {
                        print_one(out, &f, format)?;
                    }
                }
            }
            *off += complete as u64;
        }
        out.flush()?;
    }
}

fn print_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<8} {:<25} {:<10} {:<16} {:<20} {:<6} {:<12} PATH",
        "TIME", "ACTION", "CATEGORY", "RUNTIME", "CONTAINER", "POD", "COUNT", "SHA256"
    )
}

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Ocsf,
    Falco,
}

fn print_one(out: &mut impl Write, f: &Finding, format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => serde_json::to_writer(&mut *out, f)?,
        Format::Ocsf => serde_json::to_writer(&mut *out, &driftgate_core::export::ocsf(f))?,
        Format::Falco => serde_json::to_writer(&mut *out, &driftgate_core::export::falco(f))?,
        Format::Text => return print_text(out, f),
    }
    out.write_all(b"\n")
}

fn print_text(out: &mut impl Write, f: &Finding) -> std::io::Result<()> {
    let time = f.time.get(..19).unwrap_or(&f.time).replace('T', " ");
    let short = |s: String, n: usize| {
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n - 1).collect::<String>())
        } else {
            s
        }
    };
    let who = f.container.name.clone().unwrap_or_else(|| f.container.id.clone());
    let pod = match (&f.container.pod_namespace, &f.container.pod_name) {
        (Some(ns), Some(p)) => format!("{ns}/{p}"),
        _ => "-".into(),
    };
    let sha = f.file.sha256.as_deref().map_or("-".to_owned(), |s| s.chars().take(12).collect());
    writeln!(
        out,
        "{:<20} {:<8} {:<25} {:<10} {:<16} {:<20} {:<6} {:<12} {}",
        time,
        f.action.as_str(),
        f.category.as_str(),
        f.container.runtime,
        short(printable(who.as_bytes()), 16),
        short(printable(pod.as_bytes()), 20),
        f.count,
        sha,
        printable(&f.path_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages() {
        let now = time::macros::datetime!(2026-11-26 12:00 UTC);
        assert_eq!(
            parse_time("2026-11-26T10:00:00Z", now).unwrap(),
            time::macros::datetime!(2026-11-26 10:00 UTC)
        );
        assert_eq!(parse_time("90m", now).unwrap(), time::macros::datetime!(2026-11-26 10:30 UTC));
        assert!(parse_time("yesterday", now).is_err());
    }

    fn at(id: &str, container: &str, pod: Option<(&str, &str)>, time: &str) -> Finding {
        let mut f = Finding::example(id);
        f.container.id = container.into();
        f.container.pod_namespace = pod.map(|p| p.0.into());
        f.container.pod_name = pod.map(|p| p.1.into());
        f.time = time.into();
        f
    }

    #[test]
    fn related_findings_share_the_container_or_pod_within_the_window() {
        let pod = Some(("shop", "web-1"));
        let all = vec![
            at("0191-a", "c1", pod, "2026-12-01T10:00:00Z"),
            at("0191-b", "c1", pod, "2026-12-01T10:20:00Z"),
            at("0191-c", "c2", pod, "2026-12-01T09:45:00Z"),
            at("0191-d", "c1", pod, "2026-12-01T11:00:00Z"),
            at("0191-e", "c3", Some(("shop", "web-2")), "2026-12-01T10:01:00Z"),
            at("0192-f", "c3", None, "2026-12-01T10:00:00Z"),
        ];
        let r = Related::find(&all, "0191-a", std::time::Duration::from_secs(1800)).unwrap();
        let ids: Vec<&str> = all.iter().filter(|f| r.matches(f)).map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["0191-a", "0191-b", "0191-c"]);
        // An aggregate whose execs reach into the window is related.
        let mut agg = at("0193-g", "c1", None, "2026-12-01T12:00:00Z");
        agg.first_seen = Some("2026-12-01T10:25:00Z".into());
        assert!(r.matches(&agg));
        // Prefixes: unique is enough, ambiguous is an error, unknown is not found.
        assert!(Related::find(&all, "0192", std::time::Duration::ZERO).is_ok());
        assert!(matches!(Related::find(&all, "0191", std::time::Duration::ZERO), Err(CliError::Usage(_))));
        assert!(matches!(Related::find(&all, "ffff", std::time::Duration::ZERO), Err(CliError::NotFound(_))));
        // A container without a pod: only its own findings.
        let r = Related::find(&all, "0192-f", std::time::Duration::from_secs(3600)).unwrap();
        let ids: Vec<&str> = all.iter().filter(|f| r.matches(f)).map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["0191-e", "0192-f"]);
    }
}
