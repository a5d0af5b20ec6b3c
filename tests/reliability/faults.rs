use super::*;

#[test]
fn a_journald_that_stops_reading_or_goes_away_never_holds_decisions() {
    if !privileged() || !std::path::Path::new("/lib/systemd/systemd-journald").exists() {
        return;
    }
    // Three containers: each phase starts with a fresh per-container journal rate limit.
    let (s, s2, s3) = (Scratch::new(), Scratch::new(), Scratch::new());
    let j = common::runtimes::Journald::start(&s.root().join("journald"));
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![s.merged.clone(), s2.merged.clone(), s3.merged.clone()],
            journald_socket: Some(j.socket()),
            extra_tables: "[findings]\naggregate_window_secs = 0\ncontainer_burst = 100000\n",
            ..Default::default()
        },
    );
    // journald stopped: its socket queue fills, then every send would wait.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(j.pid()), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let n = 1500;
    let took = drift_execs(&s, "a", n);
    assert!(wait_until(Duration::from_secs(20), || spool_counts(&d).0 >= n as u64));
    let (recorded, lost, journald_errors, _) = spool_counts(&d);
    assert_eq!((recorded, lost), (n as u64, 0), "every finding is in the spool");
    assert!(journald_errors > 0, "journald's refusals are counted");
    println!(
        "journald stopped: {n} audited execs in {took:?}; {journald_errors} findings not taken by journald"
    );
    // It reads again: findings reach it again.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(j.pid()), nix::sys::signal::Signal::SIGCONT).unwrap();
    drift_execs(&s2, "b", 20);
    assert!(wait_until(Duration::from_secs(20), || spool_counts(&d).0 >= n as u64 + 20));
    let id2 = s2.merged.display().to_string();
    assert!(
        wait_until(Duration::from_secs(20), || !j.entries(&[&format!("CONTAINER_ID={id2}")]).is_empty()),
        "after SIGCONT journald takes findings again"
    );
    // Gone altogether: refused at once, counted, decisions unaffected.
    let before = spool_counts(&d).2;
    drop(j);
    let took = drift_execs(&s3, "c", 20);
    assert!(wait_until(Duration::from_secs(20), || spool_counts(&d).0 >= n as u64 + 40));
    assert!(
        wait_until(Duration::from_secs(5), || spool_counts(&d).2 >= before + 20),
        "{:?}",
        spool_counts(&d)
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_full_or_removed_spool_never_stops_decisions_and_recovers() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let spool = s.root().join("tinyspool");
    std::fs::create_dir(&spool).unwrap();
    nix::mount::mount(Some("tmpfs"), &spool, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=256k"))
        .unwrap();
    let _u = DetachOnDrop(spool.clone());
    let dir = spool.join("findings");
    let d0 = Daemon::start(
        &s.root().join("d"),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_tables: "[findings]\naggregate_window_secs = 0\ncontainer_burst = 100000\n",
            ..Default::default()
        },
    );
    let config = d0.config.clone();
    drop(d0);
    let text = std::fs::read_to_string(&config).unwrap();
    let old = text.lines().find(|l| l.starts_with("dir = ")).unwrap().to_owned();
    std::fs::write(&config, text.replace(&old, &format!("dir = {:?}", dir.display().to_string()))).unwrap();
    let d = Daemon::start_with_config(&config, &dir);
    // Full: decisions go on, the loss is counted.
    let filler = spool.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 256 * 1024]);
    drift_execs(&s, "a", 30);
    assert!(wait_until(Duration::from_secs(20), || {
        let (r, l, _, _) = spool_counts(&d);
        r + l == 30
    }));
    let (_, lost, _, _) = spool_counts(&d);
    assert!(lost > 0, "{:?}", spool_counts(&d));
    // Space again: recorded again.
    std::fs::remove_file(&filler).unwrap();
    drift_execs(&s, "b", 10);
    assert!(wait_until(Duration::from_secs(20), || spool_counts(&d).0 + spool_counts(&d).1 == 40));
    let (recorded_before, lost_before, _, _) = spool_counts(&d);
    assert!(recorded_before >= 10, "{:?}", spool_counts(&d));
    // Removed: made again, and what follows is readable there.
    std::fs::remove_dir_all(&dir).unwrap();
    drift_execs(&s, "c", 10);
    assert!(wait_until(Duration::from_secs(20), || spool_counts(&d).0 == recorded_before + 10));
    let (_, lost_after, _, recreated) = spool_counts(&d);
    assert_eq!((lost_after, recreated), (lost_before, 1));
    let (found, bad) = driftgate::sink::spool::read_all(&dir).unwrap();
    assert!(bad.is_empty());
    assert_eq!(found.len(), 10, "the findings after the removal are in the new directory");
}
