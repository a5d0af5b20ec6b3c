//! `driftgate generate-assets --out DIR`: the man pages and shell completions, generated from
//! the same clap definitions as `--help`, so they cannot drift from the binary. Used by
//! packaging; hidden from `--help`.

use std::path::{Path, PathBuf};

use super::common::CliError;

#[derive(Debug, clap::Args)]
pub struct AssetsArgs {
    /// Directory to write `man/` and `completions/` into
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `cli`: the whole command line (`Cli::command()`), passed in by the dispatcher.
pub fn run(a: AssetsArgs, cli: clap::Command) -> Result<(), CliError> {
    match generate(&a.out, cli) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Err(e) => Err(CliError::Failure(format!("generate-assets: {e}"))),
    }
}

/// Writes `man/driftgate.8`, one page per subcommand (`driftgate-run.8`, ...), and bash, zsh and
/// fish completions. Returns the files written.
pub fn generate(out: &Path, cli: clap::Command) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let cmd = cli.name("driftgate");
    let page = |c: clap::Command, name: &str| -> std::io::Result<PathBuf> {
        let p = man.join(format!("{name}.8"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).section("8").render(&mut buf)?;
        std::fs::write(&p, buf)?;
        Ok(p)
    };
    written.push(page(cmd.clone(), "driftgate")?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("driftgate-{}", sub.get_name());
        written.push(page(sub.clone().name(name.clone()), &name)?);
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "driftgate.bash"),
        (clap_complete::Shell::Zsh, "_driftgate"),
        (clap_complete::Shell::Fish, "driftgate.fish"),
    ] {
        let mut c = cmd.clone();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut c, "driftgate", &mut buf);
        let p = comp.join(file);
        std::fs::write(&p, buf)?;
        written.push(p);
    }
    Ok(written)
}
