use super::*;

/// `n` overlay containers sharing one image layer (busybox), mounted under `dir`; unmounted on
/// drop.
struct ManyRootfs {
    merged: Vec<std::path::PathBuf>,
}

impl ManyRootfs {
    fn mount(dir: &Path, from: usize, n: usize) -> ManyRootfs {
        let lower = dir.join("lower");
        if !lower.exists() {
            std::fs::create_dir_all(lower.join("bin")).unwrap();
            std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        }
        let merged = (from..from + n)
            .map(|i| {
                let c = dir.join(format!("c{i}"));
                for d in ["upper", "work", "merged"] {
                    std::fs::create_dir_all(c.join(d)).unwrap();
                }
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    c.join("upper").display(),
                    c.join("work").display()
                );
                let m = c.join("merged");
                nix::mount::mount(
                    Some("overlay"),
                    &m,
                    Some("overlay"),
                    nix::mount::MsFlags::empty(),
                    Some(opts.as_str()),
                )
                .unwrap();
                m
            })
            .collect();
        ManyRootfs { merged }
    }
}

impl Drop for ManyRootfs {
    fn drop(&mut self) {
        for m in &self.merged {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn many_containers_are_watched_quickly_with_bounded_memory_and_fds() {
    if !privileged() {
        return;
    }
    let n: usize = std::env::var("DRIFTGATE_CONTAINERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let t = tempfile::Builder::new().prefix("dgmany-").tempdir_in("/tmp").unwrap();
    let first = ManyRootfs::mount(t.path(), 0, n);
    let glob = t.path().join("c*/merged");
    let dir = t.path().join("daemon");
    // Start-up with n running containers: what a restart after a crash costs, on top of
    // RestartSec.
    let start = std::time::Instant::now();
    let d = Daemon::start(&dir, DaemonOpts { globs: vec![glob.clone()], ..Default::default() });
    let ready = start.elapsed();
    let st = d.status();
    assert_eq!(st["containers"].as_array().unwrap().len(), n, "all watched at start");
    let (rss, fds) = (vm_rss_kib(d.pid()), open_fds(d.pid()));
    // As many again while it runs.
    let t1 = std::time::Instant::now();
    let second = ManyRootfs::mount(t.path(), n, n);
    assert!(
        wait_until(Duration::from_secs(120), || d.status()["containers"].as_array().unwrap().len() == 2 * n),
        "{}",
        d.status()
    );
    let more = t1.elapsed();
    let (rss2, fds2) = (vm_rss_kib(d.pid()), open_fds(d.pid()));
    // Every one decides: an added program is blocked in the last one mounted.
    let last = second.merged.last().unwrap();
    std::fs::create_dir_all(last.join("tmp")).unwrap();
    std::fs::copy(BUSYBOX, last.join("tmp/added")).unwrap();
    assert!(std::process::Command::new(last.join("tmp/added")).arg("true").status().is_err());
    // Gone: forgotten.
    drop(second);
    drop(first);
    assert!(wait_until(Duration::from_secs(60), || d.status()["containers"].as_array().unwrap().is_empty()));
    let fds3 = open_fds(d.pid());
    println!(
        "{n} containers: ready in {ready:?} (RSS {rss} KiB, {fds} fds); {n} more marked in {more:?} (RSS {rss2} KiB, {fds2} fds); all gone: {fds3} fds"
    );
    assert!(fds3 < fds, "fds are given back: {fds3} >= {fds}");
}
