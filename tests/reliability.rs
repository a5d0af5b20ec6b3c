//! Reliability under attack and faults, end to end: a real daemon, real fanotify marks on
//! scratch overlay containers, real execs. Each test bounds every wait. The slow, long forms
//! (100,000-exec races, 20,000 execs/s floods for 30 s, 1,000 containers) run by hand with
//! `scripts/torture.sh`; these are their CI-sized versions.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

/// `exec_race` output: good=N bad=N txtbsy=N denied=N other=N.
fn race_counts(out: &std::process::Output) -> std::collections::HashMap<String, u64> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("good=")).unwrap_or_else(|| panic!("no result: {out:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// A container whose image has `/opt/img/victim` (a program that exits 0) and the race tool.
fn race_container() -> (tempfile::TempDir, Scratch) {
    let tools = tempfile::tempdir().unwrap();
    let tool = static_tool(tools.path(), "exec_race");
    let victim = tools.path().join("victim");
    std::fs::write(&victim, driftgate::bench::elf::exit0(0)).unwrap();
    let s = Scratch::with_image_files(&[("/opt/img/exec_race", &tool), ("/opt/img/victim", &victim)]);
    (tools, s)
}

/// Runs the race in the container: a writer flips the program's exit-status byte between the
/// image's (0) and a modified one (5) while the program is executed `n` times.
fn race(s: &Scratch, n: u32, pause_us: u32) -> std::collections::HashMap<String, u64> {
    let off = driftgate::bench::elf::status_offset();
    let out =
        s.run_in_container(&format!("/opt/img/exec_race /opt/img/victim {off} 0 5 {n} {pause_us}\n"), T);
    assert!(out.status.success(), "{out:?}");
    race_counts(&out)
}

#[test]
fn a_writer_racing_an_exec_never_gets_modified_bytes_run() {
    if !privileged() {
        return;
    }
    let (_tools, s) = race_container();
    let n: u32 = std::env::var("DRIFTGATE_RACE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    // Control: with writers not held off, the race is won (the test can fail).
    let d = Daemon::start(
        &s.root().join("control"),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_daemon: "writer_hold_ms = 0\n",
            ..Default::default()
        },
    );
    let control = race(&s, n, 10);
    drop(d);
    assert!(control["bad"] > 0, "the race is not reproduced without the hold: {control:?}");

    let d = daemon(&s, "enforce");
    for pause in [0, 10, 50, 200] {
        let r = race(&s, n, pause);
        println!("race, writer pause {pause} us: {r:?}");
        assert_eq!(r["bad"], 0, "modified bytes ran (writer pause {pause} us): {r:?}\n{}", d.log_text());
        assert_eq!(r["other"], 0, "{r:?}");
        assert_eq!(r["good"] + r["txtbsy"] + r["denied"], n as u64);
        assert!(r["denied"] > 0, "the modified program was seen and blocked: {r:?}");
    }
    let st = d.status();
    let w = &st["writer_hold"];
    assert!(w["kept"].as_u64() > Some(0) && w["unsettled"].as_u64() > Some(0), "{w}");
    // Every exec was accounted for: blocked ones have findings (some aggregated).
    assert!(!d.findings(1).is_empty());
}

#[test]
fn a_held_file_delays_a_writer_by_the_hold_and_no_longer() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_daemon: "writer_hold_ms = 300\n",
            ..Default::default()
        },
    );
    // Copy the image's program up, run it, and time a write to it right after.
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/t0; touch /opt/img/true; /opt/img/true; echo ran=$?\n\
         a=$(cat /proc/uptime); echo x >> /tmp/unrelated; b=$(cat /proc/uptime); echo free=\"$a $b\"\n\
         a=$(cat /proc/uptime); printf '' >> /opt/img/true; b=$(cat /proc/uptime); echo held=\"$a $b\"\n\
         /opt/img/true; echo again=$?\n",
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ran=0"), "{out:?}\n{}", d.log_text());
    let span = |key: &str| -> f64 {
        let l = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}: {out:?}"));
        let v: Vec<f64> = l[key.len()..].split_whitespace().map(|x| x.parse().unwrap()).collect();
        v[2] - v[0]
    };
    assert!(span("held=") >= 0.15, "the writer waited for the hold: {text}");
    assert!(span("held=") < 2.0, "and not much longer: {text}");
    assert!(span("free=") < 0.15, "{text}");
    assert_eq!(d.status()["writer_hold"]["hold_ms"], 300);
}

/// Writes `n` distinct small programs (each a different file version, none in the image)
/// into `dir` inside the container's rootfs (through the host's view of the overlay).
fn added_programs(s: &Scratch, dir: &str, n: usize) -> Vec<String> {
    let d = s.merged.join(dir.trim_start_matches('/'));
    std::fs::create_dir_all(&d).unwrap();
    (0..n)
        .map(|i| {
            let mut b = driftgate::bench::elf::exit0(0);
            b.extend_from_slice(format!("{i:08}").as_bytes());
            write_exec(&d.join(i.to_string()), &b);
            format!("{dir}/{i}")
        })
        .collect()
}

fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// `exec_flood` output as numbers.
fn flood_counts(out: &std::process::Output) -> std::collections::HashMap<String, f64> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("execs=")).unwrap_or_else(|| panic!("no result: {out:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// Sum of `count` over the spool's records (aggregates stand for many execs).
fn executions_recorded(spool: &std::path::Path) -> u64 {
    read_findings(spool).iter().map(|f| f["count"].as_u64().unwrap_or(1)).sum()
}

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
        DaemonOpts { globs: scratches.iter().map(|s| s.merged.clone()).collect(), ..Default::default() },
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
        let mut b = driftgate::bench::elf::exit0(0);
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

/// A container with the load tool and the image program (`/opt/img/victim`), plus `added`
/// programs of its own (not in the image) under /tmp/added.
fn load_container(tools: &Path, added: usize) -> (Scratch, Vec<String>) {
    let victim = tools.join("victim");
    if !victim.exists() {
        std::fs::write(&victim, driftgate::bench::elf::exit0(0)).unwrap();
    }
    let flood = tools.join("exec_flood");
    if !flood.exists() {
        static_tool(tools, "exec_flood");
    }
    let s = Scratch::with_image_files(&[("/opt/img/exec_flood", &flood), ("/opt/img/victim", &victim)]);
    let files = added_programs(&s, "/tmp/added", added);
    (s, files)
}

/// Background exec load in a container of its own (image programs, 2 processes): what the
/// node's other containers keep doing while a fault is injected.
struct Load {
    _tools: tempfile::TempDir,
    pub s: Scratch,
}

impl Load {
    fn new() -> Load {
        let tools = tempfile::tempdir().unwrap();
        let (s, _) = load_container(tools.path(), 0);
        Load { _tools: tools, s }
    }

    fn run(&self, secs: u64) -> std::thread::JoinHandle<std::collections::HashMap<String, f64>> {
        let (root, merged) = (self.s.root().to_path_buf(), self.s.merged.clone());
        let script = format!("/opt/img/exec_flood run {secs} 2 /opt/img/victim\n");
        std::thread::spawn(move || flood_counts(&run_in_container(&root, &merged, &script, T)))
    }
}

fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

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

fn spool_counts(d: &Daemon) -> (u64, u64, u64, u64) {
    let st = d.status();
    let s = &st["spool"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    (n("recorded"), n("write_errors"), n("journald_errors"), n("recreated"))
}

/// Runs `n` execs of distinct added programs in the container (audit mode: each allowed, each
/// a finding) and returns how long they took.
fn drift_execs(s: &Scratch, tag: &str, n: usize) -> Duration {
    let files = added_programs(s, &format!("/tmp/{tag}"), n);
    let script = format!("for f in {}; do $f; done; echo done=0\n", files.join(" "));
    let t = std::time::Instant::now();
    let out = s.run_in_container(&script, T);
    assert_eq!(results(&out).get("done"), Some(&0), "{out:?}");
    t.elapsed()
}

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

#[test]
fn hostile_names_huge_arguments_and_vanishing_files_give_valid_findings() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let prog = tools.path().join("prog");
    std::fs::write(&prog, driftgate::bench::elf::exit0(0)).unwrap();
    let s = Scratch::with_image_files(&[("/opt/img/prog", &prog)]);
    let d0 = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![s.merged.clone()],
            extra_tables: "[findings]\naggregate_window_secs = 0\n",
            ..Default::default()
        },
    );
    let (config, spool) = (d0.config.clone(), d0.spool.clone());
    drop(d0);
    // Slow storage (300 ms a hash): the program is deleted while its exec waits.
    let mut d = Daemon::start_with_env(&config, &spool, &[("DRIFTGATE_TEST_HASH_DELAY_MS", "300")]);
    // A path of more than 4,000 bytes (20 directories of 200 bytes), a name with a newline
    // and invalid UTF-8, 200 KB of arguments, and a program deleted while its exec waits.
    let long: String = (0..20).map(|i| format!("/{}", format!("{i:02}").repeat(100))).collect();
    let script = format!(
        "mkdir -p '/tmp{long}'; cp /opt/img/prog '/tmp{long}/t'; '/tmp{long}/t'; echo long=$?\n\
         n=\"$(printf '/tmp/evil\\nname\\377')\"; cp /opt/img/prog \"$n\"; \"$n\"; echo evil=$?\n\
         a=A; for i in $(seq 16); do a=$a$a; done\n\
         cp /opt/img/prog /tmp/args; /tmp/args \"$a\" \"$a\"; echo args=$?\n\
         cp /opt/img/prog /tmp/gone; /tmp/gone & sleep 0.1; rm /tmp/gone; wait $!; echo gone=$?\n"
    );
    let out = s.run_in_container(&script, T);
    let r = results(&out);
    for k in ["long", "evil", "args", "gone"] {
        assert_eq!(r.get(k), Some(&0), "{k}: {out:?}");
    }
    let f = d.findings(4);
    let sha = sha256_file(&prog);
    let by = |pred: &dyn Fn(&str) -> bool| {
        f.iter().find(|x| pred(x["file"]["path"].as_str().unwrap_or(""))).unwrap_or_else(|| panic!("{f:#?}"))
    };
    let l = by(&|p| p.len() > 4000);
    assert_eq!(l["file"]["path"].as_str().unwrap(), format!("/tmp{long}/t"));
    let e = by(&|p| p.starts_with("/tmp/evil"));
    assert!(e["file"]["path_raw"].is_string() || e["file"]["path"].as_str().unwrap().contains('\n'), "{e}");
    let a = by(&|p| p == "/tmp/args");
    assert_eq!(a["process"]["args_truncated"], true, "{a}");
    let kept: usize =
        a["process"]["args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().len()).sum();
    assert!(kept <= 8192, "{kept} argument bytes kept");
    let g = by(&|p| p.starts_with("/tmp/gone"));
    assert_eq!((&g["file"]["path"], &g["file"]["deleted"]), (&"/tmp/gone".into(), &true.into()), "{g}");
    for x in &f {
        assert_eq!(x["file"]["sha256"], sha.as_str(), "{x}");
        assert_eq!(x["category"], "ADDED_BINARY_EXECUTED");
    }
    let rss = vm_rss_kib(d.pid());
    assert!(rss < 128 * 1024, "RSS {rss} KiB");
    let code = d.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "alive until asked to stop: {:?}\n{}", d.child.try_wait(), d.log_text());
}

/// An overlay mounted where a runtime keeps a container's rootfs: `lower` (busybox as the
/// image), `upper`, `work`, `merged` given as paths.
struct FakeRootfs {
    merged: std::path::PathBuf,
}

impl FakeRootfs {
    fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> FakeRootfs {
        for d in [lower.join("bin"), upper.to_path_buf(), work.to_path_buf(), merged.to_path_buf()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", lower.join("bin/sh")).unwrap();
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        nix::mount::mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        FakeRootfs { merged: merged.to_path_buf() }
    }
}

impl Drop for FakeRootfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Truncated, wrong-typed and oversized runtime records.
fn hostile_state_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("truncated", b"{\"ID\":\"abc\",\"Config\":{\"Labels\":{\"a\":".to_vec()),
        ("wrong types", b"{\"ID\":5,\"Config\":[],\"Name\":{\"x\":1},\"State\":\"up\"}".to_vec()),
        ("not json", vec![0xff, 0x00, 0x13, 0x37]),
    ]
}

#[test]
fn hostile_runtime_state_is_logged_and_the_container_still_watched() {
    if !privileged() {
        return;
    }
    let t = tempfile::Builder::new().prefix("dgstate-").tempdir_in("/tmp").unwrap();
    let (docker, storage, imports) =
        (t.path().join("docker"), t.path().join("storage"), t.path().join("imports"));
    // Docker's layout: overlay2/<layer>/merged; the layer named by layerdb/mounts/<id>/mount-id.
    let d_layer = "a".repeat(64);
    let d_root = FakeRootfs::mount(
        &docker.join("overlay2/base/diff"),
        &docker.join(format!("overlay2/{d_layer}/diff")),
        &docker.join(format!("overlay2/{d_layer}/work")),
        &docker.join(format!("overlay2/{d_layer}/merged")),
    );
    let cid = "c".repeat(64);
    let mounts = docker.join("image/overlay2/layerdb/mounts").join(&cid);
    std::fs::create_dir_all(&mounts).unwrap();
    std::fs::write(mounts.join("mount-id"), &d_layer).unwrap();
    std::fs::create_dir_all(docker.join("containers").join(&cid)).unwrap();
    // A layerdb entry whose files are garbage.
    let ldb = docker.join("image/overlay2/layerdb/sha256").join("e".repeat(64));
    std::fs::create_dir_all(&ldb).unwrap();
    std::fs::write(ldb.join("cache-id"), [0xffu8, 0xfe]).unwrap();
    std::fs::write(ldb.join("diff"), "not a digest").unwrap();
    // containers/storage's layout: overlay/<layer>/merged; containers.json, layers.json.
    let s_layer = "b".repeat(64);
    let s_root = FakeRootfs::mount(
        &storage.join("overlay/base/diff"),
        &storage.join(format!("overlay/{s_layer}/diff")),
        &storage.join(format!("overlay/{s_layer}/work")),
        &storage.join(format!("overlay/{s_layer}/merged")),
    );
    for d in ["overlay-containers", "overlay-layers", "overlay-images"] {
        std::fs::create_dir_all(storage.join(d)).unwrap();
    }
    // Manifest bundles: truncated, wrong types, a line too long to be a manifest... and huge.
    std::fs::create_dir_all(&imports).unwrap();
    std::fs::write(imports.join("truncated.jsonl"), b"{\"schema\":\"driftgate.manifest.v1\",\"diff_id\":")
        .unwrap();
    std::fs::write(imports.join("types.jsonl"), b"{\"schema\":7,\"files\":\"none\"}\n").unwrap();
    std::fs::write(imports.join("binary.json"), [0u8, 0xff, 0x10]).unwrap();
    let huge = std::fs::File::create(imports.join("huge.jsonl")).unwrap();
    huge.set_len(200 << 20).unwrap();
    drop(huge);

    let cfg_dir = t.path().join("daemon");
    let mut rounds = hostile_state_files();
    // Too large to be read: 100 MiB (sparse).
    rounds.push(("huge", Vec::new()));
    for (what, bytes) in rounds {
        let write = |p: &Path| {
            if what == "huge" {
                let f = std::fs::File::create(p).unwrap();
                f.set_len(100 << 20).unwrap();
            } else {
                std::fs::write(p, &bytes).unwrap();
            }
        };
        write(&docker.join("containers").join(&cid).join("config.v2.json"));
        write(&storage.join("overlay-containers/containers.json"));
        write(&storage.join("overlay-layers/layers.json"));
        write(&storage.join("overlay-images/images.json"));
        let _ = std::fs::remove_dir_all(&cfg_dir);
        let d = Daemon::start(
            &cfg_dir,
            DaemonOpts {
                docker_root: Some(docker.clone()),
                podman: Some((storage.clone(), t.path().join("runroot"))),
                extra_tables: &format!("[index]\nimport_dirs = [{:?}]\n", imports.display().to_string()),
                ..Default::default()
            },
        );
        let st = d.status();
        let runtimes: Vec<&str> =
            st["containers"].as_array().unwrap().iter().map(|c| c["runtime"].as_str().unwrap()).collect();
        assert!(runtimes.contains(&"docker") && runtimes.contains(&"podman"), "{what}: {st}");
        // Decisions in both: an added program is blocked, the image's shell runs.
        for root in [&d_root.merged, &s_root.merged] {
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::copy(BUSYBOX, root.join("tmp/added")).unwrap();
            let added = std::process::Command::new(root.join("tmp/added")).arg("true").status();
            assert!(added.is_err(), "{what}: added program blocked in {}", root.display());
            let image = std::process::Command::new(root.join("bin/busybox")).arg("true").status().unwrap();
            assert!(image.success(), "{what}");
        }
        assert!(
            wait_until(Duration::from_secs(10), || d.log_text().contains("runtime state file not used")),
            "{what}: {}",
            d.log_text()
        );
        assert!(
            wait_until(Duration::from_secs(10), || d.log_text().matches("index import skipped").count() >= 4),
            "{what}: every bad bundle is reported: {}",
            d.log_text()
        );
        assert!(d.status()["pid"].as_u64().is_some(), "{what}: alive");
    }
}

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
