//! `driftgate index build|list|show`: image-layer manifests.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::common::CliError;

use driftgate_core::config::Config;
use driftgate_core::index::manifest::Manifest;
use driftgate_image::store::{load_imports, NodeStore};

#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Build layer manifests offline from an OCI image layout directory, an OCI archive or a
    /// `docker save` tarball (layers gzip, zstd or plain), keyed by diffID
    Build(BuildArgs),
    /// List the layers with a manifest: built on this node (state directory) and imported
    List(ListArgs),
    /// Show one layer's manifest: its executable files with SHA-256, size and mode
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// OCI layout directory, OCI archive (.tar) or docker-save tarball
    pub source: PathBuf,
    /// Write the bundle (one manifest per line) here instead of standard output; put it in a
    /// directory listed in `[index] import_dirs` on the nodes
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// No progress bar, even on a terminal
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// One JSON object per layer
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// diffID (`sha256:...`, or a unique prefix of its hex) or layer directory
    pub layer: String,
    /// The manifest as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: IndexCommand) -> Result<(), CliError> {
    match cmd {
        IndexCommand::Build(a) => build(a),
        IndexCommand::List(a) => list(a),
        IndexCommand::Show(a) => show(a),
    }
}

fn build(a: BuildArgs) -> Result<(), CliError> {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let built = match driftgate_image::build::build(&a.source, progress) {
        Ok(b) => b,
        Err(driftgate_image::build::BuildError::Open { path, source }) => {
            return Err(super::common::io_error(format_args!("index build: {}", path.display()), &source));
        }
        Err(e) => return Err(CliError::Data(format!("index build: {e}"))),
    };
    let mut text = String::new();
    for m in &built.manifests {
        text.push_str(&m.to_json_line());
        text.push('\n');
    }
    let written = match &a.out {
        Some(p) => write_atomic(p, text.as_bytes()),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    };
    if let Err(e) = written {
        let to = a.out.as_ref().map_or("standard output".into(), |p| p.display().to_string());
        return Err(CliError::Io(format!("index build: {to}: {e}")));
    }
    let mb = built.layer_bytes as f64 / 1e6;
    eprintln!(
        "driftgate: {} image(s), {} layer(s), {} executable files; {:.1} MB of layer data in {:.2} s ({:.1} MB/s)",
        built.images.len(),
        built.manifests.len(),
        built.files,
        mb,
        built.seconds,
        mb / built.seconds.max(1e-9)
    );
    for img in &built.images {
        eprintln!(
            "  {}: {}",
            img.name,
            img.layers.iter().map(|l| l.1.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

fn write_atomic(p: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = p.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, p)
}

/// A layer known to this node, from the state directory or an import.
struct Known {
    manifest: Manifest,
    /// `node` or `import`.
    kind: &'static str,
    file: PathBuf,
}

/// The known layers under the configuration `a` names; problems with stored or imported
/// manifests are printed, and reported in the second value.
fn load_known(a: &super::common::ConfigArg) -> Result<(Vec<Known>, bool), CliError> {
    let c = a.load()?;
    let (layers, errors) = known(&c);
    for e in &errors {
        eprintln!("driftgate: {e}");
    }
    Ok((layers, !errors.is_empty()))
}

fn known(c: &Config) -> (Vec<Known>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (file, m) in NodeStore::new(&c.state_dir).list() {
        match m {
            Ok(manifest) => out.push(Known { manifest, kind: "node", file }),
            Err(e) => errors.push(e),
        }
    }
    let (imp, errs) = load_imports(&c.index.import_dirs);
    errors.extend(errs);
    let mut imported: Vec<_> = imp.by_diff_id.into_values().collect();
    imported.sort_by(|a, b| a.0.diff_id.cmp(&b.0.diff_id));
    for (m, file) in imported {
        out.push(Known { manifest: (*m).clone(), kind: "import", file });
    }
    (out, errors)
}

fn list(a: ListArgs) -> Result<(), CliError> {
    let (layers, had_errors) = load_known(&a.config)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        for k in &layers {
            let m = &k.manifest;
            let v = serde_json::json!({
                "diff_id": m.diff_id,
                "layer_dir": m.layer_dir,
                "kind": k.kind,
                "files": m.files.len(),
                "layer_bytes": m.layer_bytes,
                "source": m.source,
                "manifest_file": k.file,
                "created": m.created,
            });
            let _ = writeln!(out, "{v}");
        }
    } else {
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>10}  {:<19}  {:<71}  SOURCE",
            "KIND", "FILES", "SIZE", "CREATED", "LAYER"
        );
        for k in &layers {
            let m = &k.manifest;
            // Where the manifest came from: this node's walk, or an image built offline
            // (and the bundle it was imported from).
            let source = match k.kind {
                "import" => format!("{} (bundle {})", m.source, k.file.display()),
                _ => "indexed on this node".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<6} {:>6} {:>10}  {:<19}  {:<71}  {}",
                k.kind,
                m.files.len(),
                human(m.layer_bytes),
                m.created.get(..19).unwrap_or(&m.created),
                driftgate_core::index::manifest::BytePath(m.label().into_bytes()),
                driftgate_core::index::manifest::BytePath(source.into_bytes())
            );
        }
    }
    if had_errors {
        // Each problem was printed above, with its file and line.
        Err(CliError::Reported(crate::exit::DATA))
    } else {
        Ok(())
    }
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn show(a: ShowArgs) -> Result<(), CliError> {
    let (layers, _) = load_known(&a.config)?;
    let want = a.layer.trim();
    let hex_part = want.strip_prefix("sha256:").unwrap_or(want).to_ascii_lowercase();
    let hits: Vec<&Known> = layers
        .iter()
        .filter(|k| {
            let by_dir = k.manifest.layer_dir.as_ref().is_some_and(|d| d.as_os_str() == want);
            let by_id = hex_part.len() >= 6
                && k.manifest.diff_id.as_ref().is_some_and(|d| d["sha256:".len()..].starts_with(&hex_part));
            by_dir || by_id
        })
        .collect();
    let k = match hits.as_slice() {
        [k] => *k,
        [] => {
            return Err(CliError::NotFound(format!(
                "index show: no indexed layer matches {want:?} (see `driftgate index list`)"
            )));
        }
        many => {
            return Err(CliError::Usage(format!(
                "index show: {want:?} matches {} layers; give more of the diffID",
                many.len()
            )));
        }
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let _ = writeln!(out, "{}", k.manifest.to_json_line());
        return Ok(());
    }
    let m = &k.manifest;
    let _ = writeln!(out, "layer:    {}", driftgate_core::index::manifest::BytePath(m.label().into_bytes()));
    if let (Some(d), Some(_)) = (&m.diff_id, &m.layer_dir) {
        let _ = writeln!(out, "diff_id:  {d}");
    }
    let _ = writeln!(out, "kind:     {} ({})", k.kind, k.file.display());
    let _ = writeln!(out, "source:   {}", m.source);
    let _ = writeln!(out, "created:  {}", m.created);
    let _ = writeln!(
        out,
        "files:    {} executable, {} whiteouts, {} opaque directories",
        m.files.len(),
        m.whiteouts.len(),
        m.opaque.len()
    );
    let doc = m.to_doc();
    for f in &doc.files {
        let _ = writeln!(out, "{:04o} {:>10} {} {}", f.mode, f.size, f.sha256, f.path);
    }
    for w in &doc.whiteouts {
        let _ = writeln!(out, "whiteout {w}");
    }
    for o in &doc.opaque {
        let _ = writeln!(out, "opaque   {o}");
    }
    Ok(())
}
