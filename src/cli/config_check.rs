//! `driftgate config check`: validate everything (keys, values, policy rules, IoC sources)
//! without starting the daemon.

use driftgate_core::index::ioc::IocSet;

use super::common::CliError;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
}

pub fn run(args: CheckArgs) -> Result<(), CliError> {
    let c = args.config.load()?;
    let src = c.source.as_ref().map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    let mut ok = true;
    let mut ioc_entries = 0;
    if !c.ioc_paths.is_empty() {
        let (set, reports, errors) = IocSet::load(&c.ioc_paths);
        ioc_entries = set.len();
        for e in &errors {
            eprintln!("driftgate: ioc.paths: {e}");
            ok = false;
        }
        for r in reports.iter().filter(|r| r.invalid > 0) {
            for b in &r.examples {
                eprintln!("driftgate: {}: line {}: {}", r.source, b.line, b.reason);
            }
            if r.invalid > r.examples.len() {
                eprintln!("driftgate: {}: {} more invalid lines", r.source, r.invalid - r.examples.len());
            }
        }
    }
    // Header values from the environment: the daemon's, which may not be this shell's.
    let headers = [
        c.export.webhook.as_ref().map(|w| ("export.webhook_headers", &w.headers)),
        c.export.otlp.as_ref().map(|o| ("export.otlp.headers", &o.headers)),
    ];
    for (key, h) in headers.into_iter().flatten() {
        if let Err(why) = driftgate_core::config::expand_headers(key, h) {
            eprintln!("driftgate: warning: {why} here; the daemon needs it in its environment (EnvironmentFile=, a Secret's envFrom)");
        }
    }
    let (imported, errors) = driftgate_image::store::load_imports(&c.index.import_dirs);
    for e in &errors {
        eprintln!("driftgate: index.import_dirs: {e}");
        ok = false;
    }
    if !ok {
        // Each problem was printed above, with its file and line.
        return Err(CliError::Reported(crate::exit::CONFIG));
    }
    println!(
        "{src}: OK (mode {}, spool {}, {} policy rules, {} IoC entries, {} imported layer manifests)",
        c.mode.as_str(),
        c.spool_dir.display(),
        c.policy.rules.len(),
        ioc_entries,
        imported.by_diff_id.len()
    );
    Ok(())
}
