//! `driftgate evidence`: the copies of the files behind findings (`[evidence]`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::common::{io_error, CliError};

use crate::sink::evidence;
use driftgate_core::finding::Finding;

#[derive(Debug, clap::Subcommand)]
pub enum EvidenceCommand {
    /// List the stored copies, with the findings that reference each
    List(ListArgs),
    /// Write a stored copy's bytes (or a tar of the bytes and the findings that reference them)
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// The evidence store [default: the configured one, <state_dir>/evidence]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Spool whose findings are matched to the copies [default: the configured spool]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// The copy's SHA-256 (or a unique prefix of it), or the id of a finding whose file it is
    #[arg(value_name = "SHA256|FINDING-ID")]
    pub sha256: String,
    /// Where to write it (created; never made executable)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// `bytes`, or `tar`: the bytes (as `<sha256>.bin`) and `findings.jsonl`
    /// [default: tar when FILE ends in .tar, else bytes]
    #[arg(long, value_parser = ["bytes", "tar"])]
    pub format: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

pub fn run(cmd: EvidenceCommand) -> Result<(), CliError> {
    match cmd {
        EvidenceCommand::List(a) => list(a),
        EvidenceCommand::Export(a) => export(a),
    }
}

/// The store's directory and the spool, from the flags or the configuration.
fn locations(
    config: &super::common::ConfigArg,
    dir: &Option<PathBuf>,
    spool: &Option<PathBuf>,
) -> Result<(PathBuf, PathBuf), CliError> {
    if let (Some(d), Some(s)) = (dir, spool) {
        return Ok((d.clone(), s.clone()));
    }
    let c = config.load()?;
    Ok((dir.clone().unwrap_or(c.evidence.dir), spool.clone().unwrap_or(c.spool_dir)))
}

/// Whether finding `f` is about the copy `sha` (its file, or the copy it points at).
fn refers_to(f: &Finding, sha: &str) -> bool {
    f.file.sha256.as_deref() == Some(sha)
        || f.evidence.as_ref().and_then(|e| e.sha256.as_deref()) == Some(sha)
}

fn list(a: ListArgs) -> Result<(), CliError> {
    let (dir, spool) = locations(&a.config, &a.dir, &a.spool_dir)?;
    let entries = evidence::list(&dir).map_err(|e| io_error(dir.display(), &e))?;
    let findings = super::findings::read_spool_if_any(&spool)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let res = (|| {
        if !a.json {
            writeln!(out, "{:<64} {:>10} {:<20} {:>8} PATHS", "SHA256", "SIZE", "STORED", "FINDINGS")?;
        }
        for e in &entries {
            let refs: Vec<&Finding> = findings.iter().filter(|f| refers_to(f, &e.sha256)).collect();
            let mut paths: Vec<String> =
                refs.iter().map(|f| driftgate_core::util::printable(&f.path_bytes())).collect();
            paths.sort();
            paths.dedup();
            if a.json {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["findings"] = refs.iter().map(|f| f.id.clone()).collect::<Vec<_>>().into();
                v["paths"] = paths.into();
                writeln!(out, "{v}")?;
            } else {
                let stored = e.stored.get(..19).unwrap_or(&e.stored).replace('T', " ");
                writeln!(
                    out,
                    "{:<64} {:>10} {:<20} {:>8} {}",
                    e.sha256,
                    e.size,
                    stored,
                    refs.len(),
                    paths.join(", ")
                )?;
            }
        }
        Ok::<(), std::io::Error>(())
    })();
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Failure(e.to_string())),
        _ => Ok(()),
    }
}

fn export(a: ExportArgs) -> Result<(), CliError> {
    let (dir, spool) = locations(&a.config, &a.dir, &a.spool_dir)?;
    let entries = evidence::list(&dir).map_err(|e| io_error(dir.display(), &e))?;
    let arg = a.sha256.to_ascii_lowercase();
    let is_hex = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_hexdigit());
    let a_copy = is_hex && entries.iter().any(|e| e.sha256.starts_with(&arg));
    let tar = match a.format.as_deref() {
        Some(f) => f == "tar",
        None => a.out.extension().is_some_and(|x| x == "tar"),
    };
    // Read once, and only when needed: to find a finding by id, or to put findings in a tar.
    let all = if tar || !a_copy { super::findings::read_spool_if_any(&spool)? } else { Vec::new() };
    // A SHA-256 (prefix) of a copy, else a finding's id (prefix): its file's copy.
    let want = if a_copy {
        arg
    } else {
        let hits: Vec<_> = all.iter().filter(|f| f.id.starts_with(&arg)).collect();
        match hits.iter().find(|f| f.id == arg).copied().or_else(|| (hits.len() == 1).then(|| hits[0])) {
            Some(f) => {
                f.evidence
                    .as_ref()
                    .and_then(|e| e.sha256.clone())
                    .or_else(|| f.file.sha256.clone())
                    .ok_or_else(|| CliError::NotFound(format!("finding {} has no hash, so no copy", f.id)))?
            }
            None if is_hex => arg,
            None => {
                return Err(CliError::Usage(format!(
                    "{:?} is neither a SHA-256 (or a prefix of one) nor a finding id in {}",
                    a.sha256,
                    spool.display()
                )))
            }
        }
    };
    let hits: Vec<&evidence::Entry> = entries.iter().filter(|e| e.sha256.starts_with(&want)).collect();
    let e = match hits.as_slice() {
        [e] => *e,
        [] => {
            return Err(CliError::NotFound(format!(
            "no copy of {want} in {} (see `driftgate evidence list`, and the finding's `evidence.reason`)",
            dir.display()
        )))
        }
        _ => {
            return Err(CliError::Usage(format!(
                "{want} is a prefix of {} copies; give more of it",
                hits.len()
            )))
        }
    };
    let src = evidence::objects(&dir).join(&e.sha256);
    let bytes = std::fs::read(&src).map_err(|err| io_error(src.display(), &err))?;
    // Never executable, never over an existing file (a planted symlink included).
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.out)
        .map_err(|err| io_error(a.out.display(), &err))?;
    let write = |out: &mut std::fs::File| -> std::io::Result<()> {
        if !tar {
            return out.write_all(&bytes);
        }
        let mut jsonl = Vec::new();
        for f in all.iter().filter(|f| refers_to(f, &e.sha256)) {
            serde_json::to_writer(&mut jsonl, f)?;
            jsonl.push(b'\n');
        }
        let mut b = tar::Builder::new(out);
        let mtime = e.mtime.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for (name, data, mode) in
            [(format!("{}.bin", e.sha256), &bytes, 0o400), ("findings.jsonl".to_owned(), &jsonl, 0o600)]
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(mtime);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice())?;
        }
        b.finish()
    };
    write(&mut out).map_err(|err| io_error(a.out.display(), &err))?;
    eprintln!(
        "wrote {} ({} bytes of {}{})",
        a.out.display(),
        bytes.len(),
        e.sha256,
        if tar { ", with its findings" } else { "" }
    );
    Ok(())
}
