//! `driftgate bench exec` as an operator runs it: real overlay, real daemon, JSON report,
//! nothing left behind.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Mounts the benchmark made under `tmp` (each test gives it its own TMPDIR).
fn bench_mounts(tmp: &Path) -> usize {
    let needle = format!("{}/driftgate-bench-", tmp.display());
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&needle)).count()
}

/// Nothing left behind: no scratch overlay mounted, the scratch directory removed.
fn assert_cleaned_up(tmp: &Path) {
    assert_eq!(bench_mounts(tmp), 0, "scratch overlay unmounted");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "scratch directory removed");
}

#[test]
fn bench_exec_reports_every_configuration_against_none_and_cleans_up() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(driftgate_bin());
    let wanted =
        "none,floor,driftgate-audit,driftgate-enforce,driftgate-audit-cached-added,driftgate-first-exec-1m";
    cmd.args(["bench", "exec", "--iterations", "30", "--rounds", "2", "--json", "--configs", wanted])
        .env("TMPDIR", tmp.path());
    let out = run_with_deadline(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let configs = v["configs"].as_array().unwrap();
    let names: Vec<&str> = configs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, wanted.split(',').collect::<Vec<_>>());
    for c in configs {
        for k in ["p50_us", "p90_us", "p99_us", "p999_us", "mean_us", "ratio_p50", "ratio_p99"] {
            assert!(c[k].as_f64().unwrap() > 0.0, "{k} in {c}");
        }
        assert_eq!(c["rounds"], 2);
        assert_eq!(c["samples"], 60);
    }
    let first = &configs[5];
    assert!(first["sha256_us"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["target_added_p50_us"].as_f64().unwrap() > first["sha256_us"].as_f64().unwrap());
    assert_eq!(configs[0]["ratio_p50"], 1.0);
    assert_cleaned_up(tmp.path());
}

#[test]
fn a_baseline_executable_runs_every_driftgate_configuration_beside_the_current_one() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let copy = bin.path().join("driftgate-before");
    std::fs::copy(driftgate_bin(), &copy).unwrap();
    let bench = |baseline: &std::path::Path| {
        let mut cmd = std::process::Command::new(driftgate_bin());
        cmd.args(["bench", "exec", "--iterations", "20", "--rounds", "2", "--json"])
            .args(["--configs", "none,driftgate-enforce", "--baseline"])
            .arg(baseline)
            .env("TMPDIR", tmp.path());
        run_with_deadline(cmd, Duration::from_secs(120))
    };
    let out = bench(&copy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let configs = v["configs"].as_array().unwrap();
    let names: Vec<&str> = configs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["none", "driftgate-enforce", "driftgate-enforce@baseline"]);
    for c in &configs[1..] {
        assert_eq!(c["samples"], 40, "{c}");
        assert!(c["ratio_p50"].as_f64().unwrap() > 0.0, "related to none: {c}");
    }
    // The baseline is what runs its configurations: one that cannot start fails the run.
    let out = bench(&bin.path().join("missing"));
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_cleaned_up(tmp.path());
}

#[test]
fn inside_workloads_run_in_the_container_and_are_related_to_their_own_baseline() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(driftgate_bin());
    let wanted = "none-volume,driftgate-enforce-volume,none-script,driftgate-enforce-script,none-dynamic,driftgate-enforce-dynamic";
    cmd.args(["bench", "exec", "--iterations", "20", "--rounds", "1", "--json", "--configs", wanted])
        .env("TMPDIR", tmp.path());
    let out = run_with_deadline(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let configs = v["configs"].as_array().unwrap();
    for c in configs {
        assert_eq!(c["samples"], 20, "{c}");
        assert!(c["p50_us"].as_f64().unwrap() > 0.0);
        if c["name"].as_str().unwrap().starts_with("none-") {
            assert_eq!(c["ratio_p50"], 1.0, "each inside workload is its own baseline: {c}");
        } else {
            assert!(c["ratio_p50"].as_f64().is_some(), "related to its none- run: {c}");
        }
    }
    assert_eq!(bench_mounts(tmp.path()), 0, "scratch overlay unmounted");
}

#[test]
fn bench_exec_cleans_up_when_interrupted() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(driftgate_bin())
        .args(["bench", "exec", "--iterations", "100000", "--rounds", "50"])
        .args(["--configs", "none,driftgate-enforce"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while bench_mounts(tmp.path()) == 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(bench_mounts(tmp.path()), 1, "the benchmark is running");
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "bench did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    assert_eq!(bench_mounts(tmp.path()), 0, "scratch overlay unmounted after SIGINT");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "scratch directory removed");
}

#[test]
fn load_mode_reports_throughput_cpu_and_memory_without_failed_execs() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(driftgate_bin());
    cmd.args([
        "bench",
        "exec",
        "--containers",
        "3",
        "--concurrency",
        "2",
        "--iterations",
        "40",
        "--rounds",
        "1",
    ])
    .args(["--configs", "none,driftgate-enforce", "--json"])
    .env("TMPDIR", tmp.path());
    let out = run_with_deadline(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["containers"], 3);
    let c = v["configs"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    for x in c {
        assert_eq!(x["execs"], 80, "{x}");
        assert_eq!(x["failed"], 0, "{x}");
        assert!(x["execs_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(c[1]["daemon_rss_kib"].as_u64().unwrap() > 0);
    assert!(c[1]["daemon_cpu_ms_per_1000"].as_f64().is_some());
    assert_eq!(bench_mounts(tmp.path()), 0);
}

#[test]
fn bench_ioc_reports_load_memory_and_lookup() {
    let out = std::process::Command::new(driftgate_bin())
        .args(["bench", "ioc", "--entries", "20000", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], 20000);
    for k in ["load_ms", "heap_mib", "lookup_hit_ns", "lookup_miss_ns"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
}

#[test]
fn bench_open_measures_every_workload_and_warm_opens_reach_no_daemon() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(driftgate_bin());
    cmd.args([
        "bench",
        "open",
        "--iterations",
        "200",
        "--rounds",
        "2",
        "--files",
        "300",
        "--starts",
        "5",
        "--json",
    ])
    .env("TMPDIR", tmp.path());
    let out = run_with_deadline(cmd, Duration::from_secs(180));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let row = |w: &str| rows.iter().find(|r| r["workload"].as_str().unwrap().starts_with(w)).unwrap();
    for r in rows {
        assert!(r["none_us"].as_f64().unwrap() > 0.0 && r["driftgate_us"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The first pass opens each of the 300 image files for the first time: an event each;
    // the second pass and the steady-state opens are ignored by the kernel.
    let cold = row("find+cat, first")["events"].as_u64().unwrap();
    assert!((300..400).contains(&cold), "{v}");
    assert!(row("find+cat, second")["events"].as_u64().unwrap() < 10, "{v}");
    assert!(row("open image file")["events"].as_u64().unwrap() < 10, "{v}");
    assert!(v["first_open_us"].as_f64().is_some());
    assert_cleaned_up(tmp.path());
}
