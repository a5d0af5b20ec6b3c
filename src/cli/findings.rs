//! `driftgate findings`: read the spool.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::config::Config;
use crate::exit;
use crate::finding::Finding;
use crate::sink::journald::printable;
use crate::sink::spool;

#[derive(Debug, clap::Args)]
pub struct FindingsArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Spool directory to read [default: the configured spool]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// One JSON object per line (schema driftgate.finding.v1)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FindingsArgs) -> i32 {
    let dir = match args.spool_dir {
        Some(d) => d,
        None => match Config::load(args.config.config.as_deref()) {
            Ok(c) => c.spool_dir,
            Err(e) => {
                eprintln!("driftgate: configuration error: {e}");
                return exit::CONFIG;
            }
        },
    };
    let (findings, bad) = match spool::read_all(&dir) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("driftgate: {e}");
            return exit::FAILURE;
        }
    };
    for b in &bad {
        eprintln!("driftgate: {}: line {}: unreadable finding: {}", b.file.display(), b.line, b.error);
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let res = if args.json { print_json(&mut out, &findings) } else { print_table(&mut out, &findings) };
    match res {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("driftgate: {e}");
            exit::FAILURE
        }
    }
}

fn print_json(out: &mut impl Write, findings: &[Finding]) -> std::io::Result<()> {
    for f in findings {
        serde_json::to_writer(&mut *out, f)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn print_table(out: &mut impl Write, findings: &[Finding]) -> std::io::Result<()> {
    if findings.is_empty() {
        if std::io::stdout().is_terminal() {
            writeln!(out, "no findings")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<8} {:<25} {:<16} {:<8} {:<12} PATH",
        "TIME", "ACTION", "CATEGORY", "CONTAINER", "PID", "SHA256"
    )?;
    for f in findings {
        let time = f.time.get(..19).unwrap_or(&f.time).replace('T', " ");
        let cid = printable(f.container.id.as_bytes());
        let cid = if cid.chars().count() > 16 {
            format!("{}…", cid.chars().take(15).collect::<String>())
        } else {
            cid
        };
        let sha = f.file.sha256.as_deref().map_or("-".to_owned(), |s| s.chars().take(12).collect());
        writeln!(
            out,
            "{:<20} {:<8} {:<25} {:<16} {:<8} {:<12} {}",
            time,
            f.action.as_str(),
            f.category.as_str(),
            cid,
            f.process.pid,
            sha,
            printable(&f.path_bytes())
        )?;
    }
    Ok(())
}
