//! Privileged tests of what a responder uses after a finding: process ancestry, related
//! findings, the evidence store, freezing a container, the exports, and `policy simulate`
//! against the running daemon's spool. Real overlays, real processes, a real daemon.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn dg(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(driftgate_bin());
    cmd.args(args);
    run_with_deadline(cmd, T)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn findings_name_the_parents_up_to_the_container_init_and_relate_to_each_other() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = audit_every_finding(&s);
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/true\nsh -c '/tmp/true first; echo rc=$?'\n/tmp/true second\necho done=$?\n",
        T,
    );
    assert_eq!(results(&out)["done"], 0, "{out:?}");
    let f = d.findings(2);
    assert_eq!(f.len(), 2, "{f:?}");
    let first = f.iter().find(|f| f["process"]["args"][1] == "first").expect("first exec recorded");
    let anc = first["process"]["ancestors"].as_array().expect("ancestors");
    // The `sh -c` child, then the container's init; nothing above it (unshare is outside the
    // container's PID namespace).
    assert_eq!(anc.len(), 2, "{anc:?}");
    assert_eq!(anc[0]["args"], serde_json::json!(["sh", "-c", "/tmp/true first; echo rc=$?"]));
    assert_eq!(anc[0]["pid"], first["process"]["ppid"]);
    assert_eq!(anc[1]["container_pid"], 1);
    assert_eq!(anc[1]["exe"], "/bin/busybox");
    let init_args = anc[1]["args"].as_array().unwrap();
    assert!(init_args.iter().any(|a| a.as_str().unwrap().contains("/tmp/true second")), "{anc:?}");
    let second = f.iter().find(|f| f["process"]["args"][1] == "second").unwrap();
    assert_eq!(second["process"]["ancestors"].as_array().unwrap().len(), 1, "the init only");

    // Related: both findings of this container, in time order; none with a zero window
    // around a finding of another container.
    let id = first["id"].as_str().unwrap();
    let spool = d.spool.to_str().unwrap();
    let o = dg(&["findings", "--spool-dir", spool, "--related", &id[..20], "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rel = json_lines(&o);
    assert_eq!(rel.len(), 2, "{rel:?}");
    assert_eq!(rel[0]["id"], first["id"], "time order");
    let o = dg(&["findings", "--spool-dir", spool, "--related", "no-such-id"]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
}

#[test]
fn policy_simulate_replays_the_running_daemons_spool_and_says_so() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = audit_every_finding(&s);
    s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true\n/tmp/true\n", T);
    assert_eq!(d.findings(2).len(), 2);
    // The candidate names neither the spool nor the socket: the daemon answers on the socket
    // given, and its spool is the one replayed.
    let cand = s.root().join("candidate.toml");
    std::fs::write(&cand, "mode = \"enforce\"\n").unwrap();
    let sock = d.socket();
    let o =
        dg(&["policy", "simulate", "--config", cand.to_str().unwrap(), "--socket", sock.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with(&format!(
            "2 recorded execs from spool {} (the running daemon's, pid {}",
            d.spool.display(),
            d.pid()
        )),
        "{text}"
    );
}
