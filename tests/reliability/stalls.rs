use super::*;

#[test]
fn a_stopped_daemon_is_ended_by_its_sentinel_within_the_stall_timeout() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let load = Load::new();
    let mut d = Daemon::start(
        s.root(),
        DaemonOpts {
            globs: vec![s.merged.clone(), load.s.merged.clone()],
            extra_daemon: "stall_timeout_secs = 5\n",
            ..Default::default()
        },
    );
    assert!(d.wait_log("sentinel watching decisions", Duration::from_secs(10)), "{}", d.log_text());
    let busy = load.run(8);
    std::thread::sleep(Duration::from_secs(1));
    let sentinel: i32 = d
        .log_text()
        .lines()
        .find(|l| l.contains("sentinel watching decisions"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or_else(|| panic!("{}", d.log_text()));
    d.signal(nix::sys::signal::Signal::SIGSTOP);
    let start = std::time::Instant::now();
    let out = s.run_in_container("/opt/img/true; echo rc=$?\n", T);
    let held = start.elapsed();
    assert_eq!(results(&out)["rc"], 0, "released (allowed) when the daemon was killed: {out:?}");
    assert!(held >= Duration::from_secs(3) && held <= Duration::from_millis(5600), "held {held:?}");
    let st = d.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "{st:?}");
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{sentinel}")).exists()));
    let l = busy.join().unwrap();
    assert_eq!((l["failed"], l["escaped"]), (0.0, 0.0), "{l:?}");
    assert!(l["max_us"] <= 5_600_000.0, "the load's execs were held no longer: {l:?}");
    println!(
        "SIGSTOP: exec held {held:?} (stall timeout 5 s); load {:.0} execs/s, its longest wait {:.0} ms",
        l["rate"],
        l["max_us"] / 1000.0
    );
}

#[test]
fn a_deadlocked_decision_thread_ends_the_daemon_within_the_stall_timeout() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let load = Load::new();
    let d0 = Daemon::start(
        s.root(),
        DaemonOpts {
            globs: vec![s.merged.clone(), load.s.merged.clone()],
            extra_daemon: "stall_timeout_secs = 5\n",
            ..Default::default()
        },
    );
    let (config, spool) = (d0.config.clone(), d0.spool.clone());
    drop(d0);
    let mut d = Daemon::start_with_env(&config, &spool, &[("DRIFTGATE_TEST_DEADLOCK_DECISIONS", "1")]);
    let busy = load.run(8);
    let start = std::time::Instant::now();
    let out = s.run_in_container("/opt/img/true; echo rc=$?\n", T);
    let held = start.elapsed();
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    assert!(held >= Duration::from_secs(3) && held <= Duration::from_millis(5600), "held {held:?}");
    assert_eq!(d.child.wait().unwrap().code(), Some(75), "{}", d.log_text());
    let l = busy.join().unwrap();
    assert_eq!((l["failed"], l["escaped"]), (0.0, 0.0), "{l:?}");
    assert!(l["max_us"] <= 5_600_000.0, "{l:?}");
    println!("deadlocked decision thread: exec held {held:?} (stall timeout 5 s)");
}

#[test]
fn a_huge_sparse_program_is_decided_in_bounded_time_without_holding_up_others() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let other = Scratch::new();
    // 8 GiB, sparse: a valid program (its first page) followed by a hole.
    let big = s.merged.join("tmp/huge");
    {
        let mut b = driftgate_bench::elf::exit0(0);
        b.resize(4096, 0);
        write_exec(&big, &b);
        std::fs::OpenOptions::new().write(true).open(&big).unwrap().set_len(8 << 30).unwrap();
    }
    for (max_bytes, expect) in
        [("", "hashing.max_file_bytes"), ("max_file_bytes = 17179869184\nmax_secs = 2\n", "hashing.max_secs")]
    {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(
            dir.path(),
            DaemonOpts {
                mode: "enforce",
                globs: vec![s.merged.clone(), other.merged.clone()],
                extra_tables: &format!("[hashing]\n{max_bytes}"),
                ..Default::default()
            },
        );
        let (root, merged) = (s.root().to_path_buf(), s.merged.clone());
        let start = std::time::Instant::now();
        let runner =
            std::thread::spawn(move || run_in_container(&root, &merged, "/tmp/huge; echo huge=$?\n", T));
        std::thread::sleep(Duration::from_millis(200));
        let t = std::time::Instant::now();
        let o = other.run_in_container("/opt/img/true; echo image=$?\n", T);
        let other_took = t.elapsed();
        let out = runner.join().unwrap();
        let took = start.elapsed();
        assert_eq!(results(&o)["image"], 0);
        assert!(other_took < Duration::from_secs(2), "another container waited {other_took:?}");
        assert_eq!(results(&out)["huge"], 126, "blocked: {out:?}\n{}", d.log_text());
        assert!(took < Duration::from_secs(5), "decided in {took:?}");
        let f = d.findings(1);
        assert!(f[0]["reason"].as_str().unwrap_or("").contains(expect), "{}", f[0]);
        assert!(f[0]["file"]["sha256"].is_null(), "{}", f[0]);
        println!("8 GiB sparse program ({expect}): decided in {took:?}; another container's exec took {other_took:?}");
    }
}
