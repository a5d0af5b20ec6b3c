//! Reliability under attack and faults, end to end: a real daemon, real fanotify marks on
//! scratch overlay containers, real execs. Each test bounds every wait. The slow, long forms
//! (100,000-exec races, 20,000 execs/s floods for 30 s, 1,000 containers) run by hand with
//! `scripts/torture.sh`; these are their CI-sized versions.
//!
//! `race`: the check-then-exec race; `limits`: fds and unwatched containers; `stalls`: a
//! stopped or deadlocked daemon, a huge file; `flood`: SIGKILL mid-flood, floods of blocked
//! execs; `faults`: journald and the spool failing; `hostile`: hostile files and runtime
//! state; `scale`: many containers.

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod flood;
mod hostile;
mod limits;
mod race;
mod scale;
mod stalls;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

/// Writes `n` distinct small programs (each a different file version, none in the image)
/// into `dir` inside the container's rootfs (through the host's view of the overlay).
fn added_programs(s: &Scratch, dir: &str, n: usize) -> Vec<String> {
    let d = s.merged.join(dir.trim_start_matches('/'));
    std::fs::create_dir_all(&d).unwrap();
    (0..n)
        .map(|i| {
            let mut b = driftgate_bench::elf::exit0(0);
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

/// A container with the load tool and the image program (`/opt/img/victim`), plus `added`
/// programs of its own (not in the image) under /tmp/added.
fn load_container(tools: &Path, added: usize) -> (Scratch, Vec<String>) {
    let victim = tools.join("victim");
    if !victim.exists() {
        std::fs::write(&victim, driftgate_bench::elf::exit0(0)).unwrap();
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
