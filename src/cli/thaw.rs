//! `driftgate thaw CONTAINER`: undoes `response = "freeze"`. The frozen cgroups are found in
//! the running daemon's status and in the spool's findings (so a thaw works after a restart,
//! or with the daemon stopped).

use std::path::PathBuf;

use super::common::CliError;

use crate::container::cgroup;

#[derive(Debug, clap::Args)]
pub struct ThawArgs {
    #[command(flatten)]
    pub config: super::common::ConfigArg,
    /// The container: its id (or a prefix of it) or its name, as findings name it
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Spool to look for the freeze in [default: the configured spool]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Thaw this cgroup directory (as a finding's `response.cgroup` gives it) instead
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
}

pub fn run(a: ThawArgs) -> Result<(), CliError> {
    let cfg = a.config.load()?;
    let mut dirs: Vec<PathBuf> = a.cgroup.iter().cloned().collect();
    if a.cgroup.is_none() {
        let matches = |id: &str, name: Option<&str>| {
            id.starts_with(a.container.as_str()) || name == Some(a.container.as_str())
        };
        if let Ok(st) = crate::daemon::socket::query(&cfg.socket) {
            dirs.extend(st.frozen.iter().filter(|f| matches(&f.id, None)).map(|f| PathBuf::from(&f.cgroup)));
        }
        let spool = a.spool_dir.clone().unwrap_or(cfg.spool_dir.clone());
        for f in super::findings::read_spool_if_any(&spool)? {
            if let Some(r) = &f.response {
                if r.action == "freeze" && r.ok && matches(&f.container.id, f.container.name.as_deref()) {
                    dirs.extend(r.cgroup.iter().map(PathBuf::from));
                }
            }
        }
        dirs.sort();
        dirs.dedup();
    }
    let frozen: Vec<&PathBuf> = dirs.iter().filter(|d| cgroup::is_frozen(d)).collect();
    if frozen.is_empty() {
        return Err(CliError::NotFound(if dirs.is_empty() {
            format!("no freeze of container {:?} is recorded", a.container)
        } else {
            format!(
                "container {:?} is not frozen (its cgroup {} is thawed or gone)",
                a.container,
                dirs[0].display()
            )
        }));
    }
    for d in frozen {
        cgroup::set_frozen(d, false).map_err(CliError::Failure)?;
        println!("thawed {}", d.display());
    }
    Ok(())
}
