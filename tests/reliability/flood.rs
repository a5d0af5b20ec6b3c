use super::*;

#[test]
fn sigkill_mid_flood_and_an_immediate_restart_hang_nothing_and_lose_no_record() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let containers: Vec<(Scratch, Vec<String>)> = (0..3).map(|_| load_container(tools.path(), 2)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        DaemonOpts {
            globs: containers.iter().map(|(s, _)| s.merged.clone()).collect(),
            extra_tables: "[findings]\naggregate_window_secs = 1\n",
            ..Default::default()
        },
    );
    let (config, spool) = (d.config.clone(), d.spool.clone());
    let secs = 6;
    let floods: Vec<_> = containers
        .iter()
        .map(|(s, files)| {
            let (root, merged) = (s.root().to_path_buf(), s.merged.clone());
            let script = format!("/opt/img/exec_flood run {secs} 2 /opt/img/victim {}\n", files.join(" "));
            std::thread::spawn(move || run_in_container(&root, &merged, &script, T))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let before = d.status()["decisions"].clone();
    let killed = std::time::Instant::now();
    d.kill();
    let d2 = Daemon::start_with_config(&config, &spool);
    let back = killed.elapsed();
    let results: Vec<_> = floods.into_iter().map(|t| flood_counts(&t.join().unwrap())).collect();
    let after = d2.status()["decisions"].clone();
    let total = |k: &str| results.iter().map(|r| r[k]).sum::<f64>();
    let rate = total("rate");
    let max_ms = results.iter().map(|r| r["max_us"]).fold(0.0, f64::max) / 1000.0;
    println!(
        "SIGKILL mid-flood: {} execs at {rate:.0}/s in 3 containers; protection back in {back:?}; max exec wait {max_ms:.1} ms; before {before}, after restart {after}",
        total("execs")
    );
    assert!(rate >= 1000.0, "load: {results:?}");
    assert_eq!(total("failed"), 0.0, "{results:?}");
    assert_eq!(total("escaped"), 0.0, "{results:?}");
    assert!(before["denied"].as_u64() > Some(0) && after["denied"].as_u64() > Some(0), "{before} {after}");
    assert!(back < Duration::from_secs(2), "restart took {back:?}");
    assert!(max_ms < 2000.0, "an exec waited {max_ms} ms");
    let (_, bad) = driftgate::sink::spool::read_all(&spool).unwrap();
    assert!(bad.is_empty(), "corrupt spool lines: {bad:?}");
}

#[test]
fn a_flood_of_blocked_execs_is_answered_fast_and_every_one_is_accounted_for() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let containers: Vec<(Scratch, Vec<String>)> = (0..2).map(|_| load_container(tools.path(), 8)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        DaemonOpts {
            globs: containers.iter().map(|(s, _)| s.merged.clone()).collect(),
            extra_tables: "[findings]\naggregate_window_secs = 1\n",
            ..Default::default()
        },
    );
    let rss0 = vm_rss_kib(d.pid());
    let secs: u64 = std::env::var("DRIFTGATE_FLOOD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let floods: Vec<_> = containers
        .iter()
        .map(|(s, files)| {
            let (root, merged) = (s.root().to_path_buf(), s.merged.clone());
            let script = format!("/opt/img/exec_flood attempt {secs} 8 {}\n", files.join(" "));
            std::thread::spawn(move || {
                run_in_container(&root, &merged, &script, T + Duration::from_secs(secs))
            })
        })
        .collect();
    let results: Vec<_> = floods.into_iter().map(|t| flood_counts(&t.join().unwrap())).collect();
    let total = |k: &str| results.iter().map(|r| r[k]).sum::<f64>();
    let p99_ms = results.iter().map(|r| r["p99_us"]).fold(0.0, f64::max) / 1000.0;
    let max_ms = results.iter().map(|r| r["max_us"]).fold(0.0, f64::max) / 1000.0;
    let (rss, hwm) = (vm_rss_kib(d.pid()), vm_hwm_kib(d.pid()));
    let st = d.status();
    println!(
        "exec flood: {} blocked exec attempts at {:.0}/s for {secs} s from 16 processes in 2 containers; p99 wait <= {p99_ms} ms, max {max_ms:.1} ms; daemon RSS {rss0} -> {rss} KiB (peak {hwm} KiB); findings counted not recorded {}",
        total("execs"),
        total("rate"),
        st["limits"]["findings_suppressed"]
    );
    assert_eq!(total("escaped"), 0.0, "{results:?}");
    assert_eq!(total("failed") + total("ok"), 0.0, "{results:?}");
    assert!(p99_ms <= 100.0, "p99 {p99_ms} ms: {results:?}");
    assert!(hwm < 256 * 1024, "peak RSS {hwm} KiB");
    // Every blocked exec: a finding, an aggregate's count, or counted as not recorded.
    let denied = st["decisions"]["denied"].as_u64().unwrap();
    assert_eq!(denied as f64, total("denied"), "{st}");
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    let recorded = executions_recorded(&d.spool);
    let suppressed = st["limits"]["findings_suppressed"].as_u64().unwrap();
    assert_eq!(recorded + suppressed, denied, "recorded {recorded} + suppressed {suppressed}");
}

#[test]
fn known_malware_is_recorded_with_its_copy_after_a_flood_of_junk_spent_the_budget() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let junk = added_programs(&s, "/tmp/junk", 300);
    let mut evil = driftgate_bench::elf::exit0(0);
    evil.extend_from_slice(b"known-bad");
    write_exec(&s.merged.join("tmp/evil"), &evil);
    let feed = s.root().join("iocs.txt");
    std::fs::write(&feed, format!("{} evil-tool\n", sha256_bytes(&evil))).unwrap();
    let tables = format!("[ioc]\npaths = [{:?}]\n", feed.display().to_string());
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_tables: &tables,
            ..Default::default()
        },
    );
    let script = format!("for f in {}; do $f; done\n/tmp/evil; echo evil=$?\n", junk.join(" "));
    let out = s.run_in_container(&script, T);
    assert_eq!(results(&out).get("evil"), Some(&126), "{out:?}");
    let st = d.status();
    assert!(
        st["limits"]["findings_suppressed"].as_u64() > Some(0),
        "the junk spent the budget: {}",
        st["limits"]
    );
    let f = d.findings(201);
    let bad: Vec<_> = f.iter().filter(|x| x["category"] == "ADDED_MALICIOUS_BINARY_EXECUTED").collect();
    assert_eq!(bad.len(), 1, "{} findings recorded", f.len());
    assert_eq!(bad[0]["file"]["path"], "/tmp/evil");
    assert_eq!(bad[0]["ioc"]["name"], "evil-tool");
    assert_eq!(bad[0]["evidence"]["stored"], true, "{}", bad[0]);
}
