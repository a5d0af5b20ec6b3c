use super::*;

#[test]
fn concurrent_execs_of_distinct_added_files_cannot_exhaust_fds_or_stop_decisions() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let n = 1100;
    added_programs(&s, "/tmp/flood", n);
    let cfg_dir = s.root().join("d");
    let d0 = Daemon::start(
        &cfg_dir,
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_tables: "[findings]\naggregate_window_secs = 1\n",
            ..Default::default()
        },
    );
    let (config, spool) = (d0.config.clone(), d0.spool.clone());
    drop(d0);
    // The old default limit (1024) and slow storage: every hash takes 300 ms.
    let d = Daemon::start_limited(&config, &spool, &[("DRIFTGATE_TEST_HASH_DELAY_MS", "300")], Some(1024));
    let script = format!(
        "for f in /tmp/flood/*; do $f & done\n\
         a=$(cat /proc/uptime); /opt/img/true; echo image=$?; b=$(cat /proc/uptime); echo image_took=$a $b\n\
         fails=0; for p in $(jobs -p); do wait $p || fails=$((fails+1)); done\necho blocked={n}\necho failed=$fails\n"
    );
    let start = std::time::Instant::now();
    let out = s.run_in_container(&script, T);
    let took = start.elapsed();
    let r = results(&out);
    assert_eq!(r.get("image"), Some(&0), "{out:?}\n{}", d.log_text());
    let text = String::from_utf8_lossy(&out.stdout);
    let l = text.lines().find_map(|l| l.strip_prefix("image_took=")).unwrap();
    let v: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(v[2] - v[0] < 2.0, "the image's program ran without waiting for the flood: {l}");
    assert_eq!(r["failed"], n as i32, "every added program was blocked: {out:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let st = d.status();
    let l = &st["limits"];
    assert_eq!(l["nofile"], 1024, "{l}");
    assert_eq!(l["read_errors"], 0, "no exec was denied for want of an fd: {l}");
    assert!(l["over_budget"].as_u64() > Some(0), "the budget was reached: {l}");
    assert!(st["decisions"]["denied"].as_u64() >= Some(n as u64), "{st}");
    // Every blocked exec is on record: its own finding or an aggregate's count.
    let mut d = d;
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    assert_eq!(executions_recorded(&spool) + st["limits"]["findings_suppressed"].as_u64().unwrap(), n as u64);
    println!("fd budget: {n} concurrent execs in {took:?}; limits {l}");
}

#[test]
fn too_few_fds_leave_containers_unwatched_counted_and_the_daemon_alive() {
    if !privileged() {
        return;
    }
    let scratches: Vec<Scratch> = (0..40).map(|_| Scratch::new()).collect();
    let dir = tempfile::tempdir().unwrap();
    let d0 = Daemon::start(
        dir.path(),
        DaemonOpts {
            globs: scratches.iter().map(|s| s.merged.clone()).collect(),
            // With open events too: an interpreter exec over the fd budget must still be decided.
            extra_tables: "[libraries]\nenabled = true\n",
            ..Default::default()
        },
    );
    let (config, spool) = (d0.config.clone(), d0.spool.clone());
    let fds_all = open_fds(d0.pid());
    drop(d0);
    // Room for about half of them once the daemon's reserve for decisions (426) is kept.
    let nofile = 426 + fds_all as u64 / 2 + 10;
    let d = Daemon::start_limited(&config, &spool, &[], Some(nofile));
    let st = d.status();
    let (watched, unwatched) =
        (st["containers"].as_array().unwrap().len(), st["unwatched"].as_array().unwrap());
    assert!(!unwatched.is_empty() && watched > 0, "{nofile} fds: some watched (all took {fds_all}): {st}");
    assert_eq!(watched + unwatched.len(), 40, "{st}");
    assert!(unwatched[0]["error"].as_str().unwrap().contains("raise LimitNOFILE"), "{}", unwatched[0]);
    assert!(d.log_text().contains("container NOT watched"), "{}", d.log_text());
    let text = String::from_utf8_lossy(
        &std::process::Command::new(driftgate_bin())
            .args(["status", "--socket"])
            .arg(d.socket())
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let count = |prefix: &str| -> usize {
        text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };
    let (not_watched, watched_now) =
        (count("containers NOT watched (execs in them are not checked): "), count("containers watched: "));
    assert!(not_watched > 0 && not_watched + watched_now == 40, "{text}");
    // Still deciding: a watched container's added program is blocked, its image's runs.
    let ids: Vec<&str> =
        st["containers"].as_array().unwrap().iter().map(|c| c["rootfs"].as_str().unwrap()).collect();
    let w = scratches.iter().find(|s| ids.contains(&s.merged.to_str().unwrap())).expect("one is watched");
    let out = w.run_in_container(
        "cp /opt/img/true /tmp/t; /tmp/t; echo added=$?; /opt/img/true; echo image=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!((r.get("added"), r.get("image")), (Some(&126), Some(&0)), "{out:?}\n{}", d.log_text());
    println!("{watched} of 40 containers watched with {nofile} fds; {fds_all} fds with every one watched");
}
