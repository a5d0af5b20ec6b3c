//! What operators do with a running daemon: status, reload, reading and following findings,
//! spool retention. Real daemon, real overlay containers (root).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(60);

#[test]
fn status_reports_mode_containers_decisions_latency_and_spool() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container(
        "/opt/img/true; mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo a=$?\n",
        T,
    );
    assert_eq!(results(&out)["a"], 126);
    assert_eq!(d.findings(1).len(), 1);
    let st = d.status();
    assert_eq!(st["schema"], "driftgate.status.v1");
    assert_eq!(st["mode"], "enforce");
    assert_eq!(st["node"], "test-node");
    let cs = st["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0]["id"], s.merged.display().to_string());
    assert_eq!(cs[0]["runtime"], "overlay");
    assert!(st["decisions"]["allowed"].as_u64().unwrap() >= 1);
    assert_eq!(st["decisions"]["denied"], 1);
    assert_eq!(st["decisions"]["in_flight"], 0);
    assert_eq!(st["findings"]["ADDED_BINARY_EXECUTED"], 1);
    assert!(st["latency_us"]["count"].as_u64().unwrap() >= 2);
    assert!(st["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(st["spool"]["recorded"], 1);
    assert!(st["spool"]["bytes"].as_u64().unwrap() > 0);
    // The socket is root-only.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.socket()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The human form.
    let out = Command::new(driftgate_bin()).args(["status", "--socket"]).arg(d.socket()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode enforce") && text.contains("containers watched: 1"), "{text}");
}

#[test]
fn sighup_reloads_the_mode_and_a_bad_config_keeps_the_running_one() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    let run = |n: &str| {
        let out = s.run_in_container(
            &format!("mkdir -p /tmp/{n}; cp /opt/img/true /tmp/{n}/true; /tmp/{n}/true; echo rc=$?\n"),
            T,
        );
        results(&out)["rc"]
    };
    assert_eq!(run("a"), 0, "audit");
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, cfg.replace("mode = \"audit\"", "mode = \"enforce\"")).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(d.wait_log("configuration reloaded", Duration::from_secs(5)), "{}", d.log_text());
    assert_eq!(run("b"), 126, "enforce after reload");
    assert_eq!(d.status()["reloads"], 1);
    std::fs::write(&d.config, "mode = \"enforce\"\nbogus_key = 1\n").unwrap();
    d.signal(Signal::SIGHUP);
    assert!(d.wait_log("keeping the running configuration", Duration::from_secs(5)), "{}", d.log_text());
    assert!(d.log_text().contains("bogus_key"), "the error names the key");
    assert_eq!(run("c"), 126, "still enforcing, still watching");
    let st = d.status();
    assert_eq!(st["reload_errors"], 1);
    assert_eq!(st["containers"].as_array().unwrap().len(), 1);
}

#[test]
fn driftgate_reload_waits_for_the_outcome_and_fails_on_a_bad_configuration() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    let reload =
        || Command::new(driftgate_bin()).args(["reload", "--config"]).arg(&d.config).output().unwrap();
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, cfg.replace("mode = \"audit\"", "mode = \"enforce\"")).unwrap();
    let out = reload();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.status()["mode"], "enforce", "applied before the command returned");
    std::fs::write(&d.config, cfg.replace("mode = \"audit\"", "mode = \"enforce\"\nbogus_key = 1")).unwrap();
    // The client cannot read the file either: it asks the socket the daemon was given.
    let out = Command::new(driftgate_bin()).args(["reload", "--socket"]).arg(d.socket()).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key") && err.contains("keeps its running configuration"), "{err}");
    let st = d.status();
    assert_eq!((st["reloads"].as_u64(), st["reload_errors"].as_u64()), (Some(1), Some(1)));
    assert_eq!(st["mode"], "enforce");
}

#[test]
fn findings_filters_and_follow() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    let mut follower = Command::new(driftgate_bin())
        .args(["findings", "--json", "--follow", "--category", "MODIFIED_BINARY_EXECUTED", "--spool-dir"])
        .arg(&d.spool)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = s.run_in_container(
        "mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true\necho >> /opt/img/false; /opt/img/false\necho done=0\n",
        T,
    );
    assert_eq!(results(&out)["done"], 0);
    assert_eq!(d.findings(2).len(), 2);
    // --follow printed only the new MODIFIED finding.
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).expect("follow prints the new finding");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["category"], "MODIFIED_BINARY_EXECUTED");
    assert!(rx.recv_timeout(Duration::from_millis(700)).is_err(), "the ADDED finding is filtered out");
    let _ = follower.kill();
    let _ = follower.wait();

    let q = |args: &[&str]| -> usize {
        let out = Command::new(driftgate_bin())
            .args(["findings", "--json", "--spool-dir"])
            .arg(&d.spool)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(q(&[]), 2);
    assert_eq!(q(&["--category", "ADDED_BINARY_EXECUTED"]), 1);
    assert_eq!(q(&["--action", "audited"]), 2);
    assert_eq!(q(&["--action", "blocked"]), 0);
    assert_eq!(q(&["--since", "1h"]), 2);
    assert_eq!(q(&["--until", "1h"]), 0);
    assert_eq!(q(&["--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00Z"]), 2);
    assert_eq!(q(&["--container", &s.merged.display().to_string()]), 2);
    assert_eq!(q(&["--container", "someone-else"]), 0);
    assert_eq!(q(&["--namespace", "payments"]), 0);
    let bad = Command::new(driftgate_bin())
        .args(["findings", "--since", "yesterday", "--spool-dir"])
        .arg(&d.spool)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
}

#[test]
fn spool_retention_bounds_the_spool_and_is_reported() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = audit_every_finding(&s);
    // Tiny segments and limit, set through the config file and a reload.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, cfg.replace("[spool]\n", "[spool]\nsegment_bytes = 4096\nmax_bytes = 16384\n"))
        .unwrap();
    d.signal(Signal::SIGHUP);
    assert!(d.wait_log("configuration reloaded", Duration::from_secs(5)));
    let out = s.run_in_container(
        "mkdir /tmp/a; cp /opt/img/true /tmp/a/true\ni=0; while [ $i -lt 60 ]; do /tmp/a/true; i=$((i+1)); done; echo done=0\n",
        T,
    );
    assert_eq!(results(&out)["done"], 0);
    let start = std::time::Instant::now();
    loop {
        let st = d.status();
        if st["spool"]["deleted_segments"].as_u64().unwrap() > 0
            && st["spool"]["recorded"].as_u64().unwrap() == 60
        {
            assert!(st["spool"]["bytes"].as_u64().unwrap() <= 16384 + 4096 * 2, "{st}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "retention did not run: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.log_text().contains("spool retention: deleted the oldest segment"));
}

#[test]
fn journal_output_is_rate_limited_per_container_but_the_spool_keeps_everything() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    // 60 distinct added binaries: 60 distinct findings, not aggregated.
    let out = s.run_in_container(
        "i=0; while [ $i -lt 60 ]; do mkdir /tmp/d$i; cp /opt/img/true /tmp/d$i/true; /tmp/d$i/true; i=$((i+1)); done; echo done=0\n",
        T,
    );
    assert_eq!(results(&out)["done"], 0);
    assert_eq!(d.findings(60).len(), 60, "the spool has every finding");
    let start = std::time::Instant::now();
    while d.status()["spool"]["journal_suppressed"].as_u64().unwrap() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", d.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = d.log_text().lines().filter(|l| l.starts_with("driftgate-finding ")).count();
    assert!((20..60).contains(&lines), "{lines} finding lines on stderr");
    assert!(
        d.wait_log("were not written to the journal (rate limit)", Duration::from_secs(15)),
        "{}",
        d.log_text()
    );
}

#[test]
fn prometheus_metrics_are_served_when_configured() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let sock = s.root().join("metrics.sock");
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            globs: vec![s.merged.clone()],
            extra_tables: &format!("[metrics]\nlisten = {:?}\n", sock.display().to_string()),
            ..Default::default()
        },
    );
    let out = s.run_in_container(
        "/opt/img/true; mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo a=$?\n",
        T,
    );
    assert_eq!(results(&out)["a"], 126);
    assert_eq!(d.findings(1).len(), 1);
    use std::io::{Read, Write};
    let body = http_get_unix(&sock, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for needle in [
        "driftgate_decisions_total{action=\"deny\"} 1",
        "driftgate_findings_total{category=\"ADDED_BINARY_EXECUTED\"} 1",
        "driftgate_containers_watched 1",
        "driftgate_events_in_flight 0",
        "driftgate_decision_latency_seconds_bucket{le=\"+Inf\"}",
        "driftgate_hash_cache_misses_total 1",
        "driftgate_enforce_mode 1",
        "driftgate_spool_bytes",
    ] {
        assert!(body.contains(needle), "{needle} missing:\n{body}");
    }
    // `status --metrics` prints the same declared series from the status report: every one of
    // its names is served, and the counts that cannot move now agree.
    let o = std::process::Command::new(driftgate_bin())
        .args(["status", "--metrics", "--socket", d.socket().to_str().unwrap()])
        .output()
        .unwrap();
    let cli = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && cli.lines().count() > 60, "{cli}");
    for line in cli.lines() {
        let name = line.split(['{', ' ']).next().unwrap();
        let served = name.strip_suffix("_total").unwrap_or(name);
        assert!(body.contains(&format!("# TYPE {served} ")), "{name} is not served:\n{body}");
    }
    for fixed in [
        "driftgate_decisions_total{action=\"deny\"} 1",
        "driftgate_containers_watched 1",
        "driftgate_enforce_mode 1",
    ] {
        assert!(cli.lines().any(|l| l == fixed), "{fixed} not in:\n{cli}");
    }
    // TCP too.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let s2 = Scratch::new();
    let d2 = Daemon::start(
        s2.root(),
        DaemonOpts {
            globs: vec![s2.merged.clone()],
            extra_tables: &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
            ..Default::default()
        },
    );
    // A client that connects and says nothing holds nobody else up.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let asked = std::time::Instant::now();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(body.contains("driftgate_containers_watched 1"), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(1), "answered in {:?}", asked.elapsed());
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");
    drop(d2);
}

#[test]
fn a_stalled_decision_path_ends_the_daemon_and_the_kernel_releases_the_exec() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = Daemon::start(
        s.root(),
        DaemonOpts { globs: vec![s.merged.clone()], extra_tables: "", ..Default::default() },
    );
    let (config, spool) = (d.config.clone(), d.spool.clone());
    drop(d);
    let cfg = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, cfg.replace("[daemon]\n", "[daemon]\nstall_timeout_secs = 5\n")).unwrap();
    // Hashing never finishes in this (debug-build) daemon: the slow path stalls.
    let mut d = Daemon::start_with_env(&config, &spool, &[("DRIFTGATE_TEST_STALL_HASHING", "1")]);
    let start = std::time::Instant::now();
    let out = s.run_in_container("mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo rc=$?\n", T);
    let held = start.elapsed();
    // Enforce mode, but the exec was released (allowed) when the stalled daemon exited.
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    assert!(held >= Duration::from_secs(5) && held < Duration::from_secs(30), "held {held:?}");
    let code = d.child.wait().unwrap().code();
    assert_eq!(code, Some(75), "exit status 75 means stalled; systemd restarts it");
    let log = d.log_text();
    assert!(log.contains("decisions stalled"), "{log}");
    // It says where each thread waited: the stuck hashing worker, asleep (the pool's other
    // workers wait for work: any of them may be listed first).
    let workers: Vec<&str> =
        log.lines().filter(|l| l.contains("thread ") && l.contains("driftgate-hash-")).collect();
    assert!(workers.iter().any(|l| l.contains("nanosleep")), "{log}");
}

#[test]
fn a_full_disk_never_stops_decisions_and_the_loss_is_counted() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    // The spool on a tiny tmpfs, filled up.
    let spool = s.root().join("tinyspool");
    std::fs::create_dir(&spool).unwrap();
    nix::mount::mount(Some("tmpfs"), &spool, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=64k"))
        .unwrap();
    let _u = DetachOnDrop(spool.clone());
    let d = audit_every_finding(&s);
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let spool_line = format!("dir = {:?}", d.spool.display().to_string());
    drop(d);
    std::fs::write(
        s.root().join("driftgate.toml"),
        cfg.replace(&spool_line, &format!("dir = {:?}", spool.display().to_string())),
    )
    .unwrap();
    let d = Daemon::start_with_config(&s.root().join("driftgate.toml"), &spool);
    let _ = std::fs::write(spool.join("filler"), vec![0u8; 60 * 1024]);
    let out = s.run_in_container(
        "i=0; while [ $i -lt 40 ]; do mkdir /tmp/d$i; cp /opt/img/true /tmp/d$i/true; /tmp/d$i/true; i=$((i+1)); done; echo done=0\n",
        T,
    );
    assert_eq!(results(&out)["done"], 0, "every exec was decided (audit: allowed)");
    let start = std::time::Instant::now();
    loop {
        let st = d.status();
        let (rec, lost) =
            (st["spool"]["recorded"].as_u64().unwrap(), st["spool"]["write_errors"].as_u64().unwrap());
        if rec + lost == 40 {
            assert!(lost > 0, "{st}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log_text().contains("driftgate-finding"), "findings still reach the journal/stderr");
    assert!(d.log_text().contains("could not write findings to the spool"));
}

/// A Kubernetes ConfigMap volume: each key a link to `..data/<key>`, `..data` a link to a
/// timestamped directory; an update writes a new directory and swaps `..data` atomically.
fn configmap_update(dir: &std::path::Path, generation: u32, text: &str) {
    let data = dir.join(format!("..2026_12_06_{generation:02}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("driftgate.toml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("driftgate.toml").is_symlink() {
        std::os::unix::fs::symlink("..data/driftgate.toml", dir.join("driftgate.toml")).unwrap();
    }
}

#[test]
fn a_configmap_update_is_validated_and_applied_and_a_bad_one_keeps_the_running_config() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let (generated, spool) = Daemon::write_config(
        &s.root().join("d"),
        DaemonOpts { mode: "audit", globs: vec![s.merged.clone()], ..Default::default() },
    );
    let cm = s.root().join("configmap");
    // The harness finds the daemon's socket beside its configuration.
    let text = std::fs::read_to_string(&generated).unwrap().replace(
        &s.root().join("d/driftgate.sock").display().to_string(),
        &cm.join("driftgate.sock").display().to_string(),
    );
    configmap_update(&cm, 1, &text);
    let d = Daemon::start_with_config(&cm.join("driftgate.toml"), &spool);
    assert!(
        d.wait_log("reloading when the configuration file changes", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
    assert_eq!(d.status()["mode"], "audit");
    configmap_update(&cm, 2, &text.replace("mode = \"audit\"", "mode = \"enforce\""));
    assert!(wait_until(Duration::from_secs(10), || d.status()["mode"] == "enforce"), "{}", d.log_text());
    assert_eq!(d.status()["reloads"], 1);
    let out = s.run_in_container("cp /opt/img/true /tmp/true; /tmp/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 126, "enforced after the update");
    // A bad update: logged with the key, counted, the running configuration kept.
    configmap_update(&cm, 3, "mode = \"audit\"\nbogus_key = 1\n");
    assert!(wait_until(Duration::from_secs(10), || d.status()["reload_errors"] == 1), "{}", d.log_text());
    assert!(d.log_text().contains("bogus_key"), "{}", d.log_text());
    assert_eq!(d.status()["mode"], "enforce");
    let metrics_reloads = d.status()["reloads"].clone();
    assert_eq!(metrics_reloads, 1);
    // A changed [export] is read at start only: the reload says so rather than ignore it.
    let with_export = format!(
        "{}\n[export]\nocsf_file = \"/tmp/dg-never-written.jsonl\"\n",
        text.replace("mode = \"audit\"", "mode = \"enforce\"")
    );
    configmap_update(&cm, 4, &with_export);
    assert!(wait_until(Duration::from_secs(10), || d.status()["reloads"] == 2), "{}", d.log_text());
    assert!(
        d.wait_log("section=\"[export]\"", Duration::from_secs(5))
            && d.log_text().contains("takes effect at the next start"),
        "{}",
        d.log_text()
    );
    assert!(d.status()["export"]["ocsf_file"].is_null(), "the running exports stay");
}
