//! Privileged tests of what a responder uses after a finding: process ancestry, related
//! findings, the evidence store, freezing a container, the exports, and `policy simulate`
//! against the running daemon's spool. Real overlays, real processes, a real daemon.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use serde_json::Value;

#[path = "response/otlp.rs"]
mod otlp;
#[path = "response/tls.rs"]
mod tls;

const T: Duration = Duration::from_secs(60);

pub(super) fn dg(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(driftgate_bin());
    cmd.args(args);
    run_with_deadline(cmd, T)
}

pub(super) fn stderr(o: &Output) -> String {
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
    // Enforce: a refused exec's parents are read before the answer, so even a parent that
    // moves on at once (the `sh -c` below) is there.
    let d = daemon_with(&s, "enforce", EVERY_FINDING);
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/true\nsh -c '/tmp/true first; echo rc=$?'\n/tmp/true second\necho done=$?\n",
        T,
    );
    assert_eq!(results(&out)["done"], 126, "{out:?}");
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
    let o = dg(&["findings", "--spool-dir", spool, "--related", &id[..id.len() - 4], "--json"]);
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

/// The store's copy of `sha`, as the daemon under `d` keeps it.
fn evidence_copy(d: &Daemon, sha: &str) -> std::path::PathBuf {
    d.config.parent().unwrap().join("state/evidence/sha256").join(sha)
}

#[test]
fn evidence_keeps_the_decided_bytes_after_the_container_deletes_or_rewrites_the_file() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "enforce", EVERY_FINDING);
    // Two paths with the same bytes (one copy), one deleted at once, one rewritten at once,
    // and a third file whose exec is refused after which it is overwritten in place.
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/a; cp /opt/img/true /tmp/b\n/tmp/a; echo a=$?; rm /tmp/a\n/tmp/b; echo b=$?; echo gone > /tmp/b\n\
         printf '#!/bin/sh\\necho dropped\\n' > /tmp/c.sh; chmod +x /tmp/c.sh\n/tmp/c.sh; echo c=$?\n\
         printf '#!/bin/sh\\necho rewritten-after\\n' > /tmp/c.sh\n",
        T,
    );
    let r = results(&out);
    assert_eq!((r["a"], r["b"], r["c"]), (126, 126, 126), "{out:?}");
    let f = d.findings(3);
    assert_eq!(f.len(), 3, "{f:?}");
    let true_sha = sha256_file(&s.lower().join("opt/img/true"));
    for x in &f {
        let sha = x["file"]["sha256"].as_str().unwrap();
        assert_eq!(x["evidence"]["sha256"], sha, "{x}");
        assert_eq!(x["evidence"]["stored"], true, "{x}");
        let copy = evidence_copy(&d, sha);
        assert_eq!(sha256_file(&copy), sha, "the copy's bytes are the decided ones");
        let md = std::fs::metadata(&copy).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777, 0o400);
    }
    let script = f.iter().find(|x| x["file"]["path"] == "/tmp/c.sh").unwrap();
    let copy = std::fs::read(evidence_copy(&d, script["file"]["sha256"].as_str().unwrap())).unwrap();
    assert_eq!(copy, b"#!/bin/sh\necho dropped\n");
    // One copy for the two paths with the same bytes.
    let refs: Vec<&Value> = f.iter().filter(|x| x["file"]["sha256"] == true_sha.as_str()).collect();
    assert_eq!(refs.len(), 2);
    let reasons: Vec<&Value> = refs.iter().map(|x| &x["evidence"]["reason"]).collect();
    assert!(
        reasons.contains(&&Value::Null) && reasons.contains(&&Value::from("already stored")),
        "{reasons:?}"
    );
    let st = d.status();
    assert_eq!(st["evidence"]["files"], 2, "{}", st["evidence"]);
    assert_eq!(st["evidence"]["stored"], 2);
    assert_eq!(st["evidence"]["already_stored"], 1);

    // The commands: list (with the findings of each copy), export the bytes and a tar.
    let cfg = d.config.to_str().unwrap();
    let o = dg(&["evidence", "list", "--config", cfg, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = json_lines(&o);
    let entry = listed.iter().find(|e| e["sha256"] == true_sha.as_str()).expect("listed");
    assert_eq!(entry["findings"].as_array().unwrap().len(), 2);
    assert_eq!(entry["paths"], serde_json::json!(["/tmp/a", "/tmp/b"]));
    let out_bin = s.root().join("exported.bin");
    let o = dg(&["evidence", "export", "--config", cfg, &true_sha[..16], "--out", out_bin.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256_file(&out_bin), true_sha);
    let md = std::fs::metadata(&out_bin).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o111, 0, "never executable");
    let o = dg(&["evidence", "export", "--config", cfg, &true_sha, "--out", out_bin.to_str().unwrap()]);
    assert!(!o.status.success(), "an existing file is never overwritten");
    let out_tar = s.root().join("case.tar");
    let o = dg(&["evidence", "export", "--config", cfg, &true_sha, "--out", out_tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list = std::process::Command::new("tar").arg("-tf").arg(&out_tar).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(names.contains(&format!("{true_sha}.bin")) && names.contains("findings.jsonl"), "{names}");
    let x =
        std::process::Command::new("tar").arg("-xOf").arg(&out_tar).arg("findings.jsonl").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&x.stdout).lines().count(), 2);
    let o = dg(&[
        "evidence",
        "export",
        "--config",
        cfg,
        "ffff",
        "--out",
        s.root().join("none").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
}

/// A one-thread HTTP server: answers each request with the next status of `statuses` (then
/// 200), and hands over each request's body.
fn http_server(statuses: Vec<u16>) -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let got = answer(&mut c, statuses.next().unwrap_or(200));
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Reads one HTTP request from `c` and answers it with `status`: its head and body.
fn answer<S: std::io::Read + std::io::Write>(c: &mut S, status: u16) -> (String, Vec<u8>) {
    use std::io::{BufRead, BufReader, Read};
    let mut r = BufReader::new(&mut *c);
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    drop(r);
    let _ = write!(c, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = c.flush();
    (head, body)
}

#[test]
fn findings_reach_a_webhook_in_falco_shape_with_retries_and_an_ocsf_file() {
    if !privileged() {
        return;
    }
    let (port, rx) = http_server(vec![500]);
    let s = Scratch::new();
    let ocsf = s.root().join("export/findings.ocsf.jsonl");
    std::fs::create_dir_all(ocsf.parent().unwrap()).unwrap();
    let tables = format!(
        "[export]\nwebhook = \"http://127.0.0.1:{port}/hook\"\nwebhook_format = \"falco\"\nocsf_file = {:?}\n\
         [export.webhook_headers]\nAuthorization = \"Bearer test-token\"\n",
        ocsf.display().to_string()
    );
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra: "cluster = \"prod-eu\"\n",
            extra_tables: &tables,
            ..Default::default()
        },
    );
    let out = s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 126);
    let f = d.findings(1);
    assert_eq!(f[0]["cluster"], "prod-eu");
    // The first post is refused (500), the retry is taken.
    let (head1, _) = rx.recv_timeout(Duration::from_secs(20)).expect("first post");
    let (head2, body) = rx.recv_timeout(Duration::from_secs(20)).expect("retried post");
    for h in [&head1, &head2] {
        assert!(h.starts_with("POST /hook HTTP/1.1"), "{h}");
        assert!(h.to_ascii_lowercase().contains("authorization: bearer test-token"), "{h}");
        assert!(h.to_ascii_lowercase().contains("content-type: application/json"), "{h}");
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["rule"], "Added Binary Executed");
    assert_eq!(v["priority"], "Notice");
    assert_eq!(v["time"], f[0]["time"]);
    assert_eq!(v["output_fields"]["fd.name"], "/tmp/true");
    assert_eq!(v["output_fields"]["driftgate.finding_id"], f[0]["id"]);
    assert!(v["output"].as_str().unwrap().contains("/tmp/true"));
    assert!(wait_until(Duration::from_secs(10), || d.status()["export"]["webhook_sent"] == 1));
    let st = d.status();
    assert_eq!(st["export"]["webhook_failures"], 1, "{}", st["export"]);
    assert_eq!(st["export"]["webhook_dropped"], 0);
    let o = dg(&["status", "--socket", d.socket().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "export: webhook http://127.0.0.1:{port}/hook (falco): 1 sent, 1 failed tries"
        )),
        "{text}"
    );
    assert!(text.contains("evidence: 1 copies"), "{text}");
    // The OCSF file, and the same mapping from the spool.
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_to_string(&ocsf)
        .is_ok_and(|t| t.lines().count() == 1)));
    let line: Value = serde_json::from_str(std::fs::read_to_string(&ocsf).unwrap().trim()).unwrap();
    assert_eq!(line["class_uid"], 2004);
    assert_eq!(line["finding_info"]["uid"], f[0]["id"]);
    assert_eq!(line["evidences"][0]["file"]["hashes"][0]["value"], f[0]["file"]["sha256"]);
    assert_eq!(line["disposition"], "Blocked");
    assert_eq!(line["resources"][1], serde_json::json!({"type": "Cluster", "name": "prod-eu"}));
    // Valid OCSF 1.4.0, checked against the Detection Finding schema (tests/data/ocsf).
    assert_eq!(ocsf_errors(&line), Vec::<String>::new(), "{line:#}");
    let o = dg(&["findings", "--spool-dir", d.spool.to_str().unwrap(), "--format", "ocsf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o), vec![line.clone()]);
    otlp::collector_filelog_reads(&line, f[0]["severity"].as_str().unwrap());
}

#[test]
fn a_dead_webhook_never_holds_a_decision_and_its_losses_are_counted() {
    if !privileged() {
        return;
    }
    // A port with nobody listening (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = Scratch::new();
    let tables = format!("[findings]\naggregate_window_secs = 0\n[export]\nwebhook = \"http://127.0.0.1:{port}/\"\nwebhook_queue = 2\n");
    let d = daemon_with(&s, "enforce", &tables);
    let start = std::time::Instant::now();
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/true\ni=0; while [ $i -lt 20 ]; do /tmp/true; i=$((i+1)); done; echo rc=$?\n",
        T,
    );
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "decisions did not wait for the webhook");
    assert_eq!(d.findings(20).len(), 20, "every finding is in the spool");
    assert!(wait_until(Duration::from_secs(10), || {
        let e = &d.status()["export"];
        e["webhook_dropped"].as_u64().unwrap() > 0 && e["webhook_failures"].as_u64().unwrap() > 0
    }));
}

/// A cgroup made for a test container (cgroup v2 where mounted, else the v1 freezer), thawed
/// and removed on drop after the container it holds is killed.
struct TestCgroup {
    dir: std::path::PathBuf,
    container: Option<Background>,
}

/// Where a hierarchy is mounted: cgroup2, or the v1 cgroup with option `opt`.
fn cgroup_mount(fstype: &str, opt: Option<&str>) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let f: Vec<&str> = post.split(' ').collect();
        let ok = f[0] == fstype && opt.is_none_or(|o| f[2].split(',').any(|x| x == o));
        ok.then(|| pre.split(' ').nth(4).unwrap().to_owned())
    })
}

impl TestCgroup {
    /// In cgroup v2 where mounted (what the daemon prefers), else in the v1 freezer.
    fn new() -> TestCgroup {
        let base = cgroup_mount("cgroup2", None)
            .or_else(|| cgroup_mount("cgroup", Some("freezer")))
            .expect("a cgroup to freeze with");
        Self::under(&base, "v2")
    }

    fn under(base: &str, tag: &str) -> TestCgroup {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::path::Path::new(base).join(format!("dgtest-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TestCgroup { dir, container: None }
    }

    fn adopt(&mut self, b: Background) {
        let init = b.init_pid().expect("container init");
        std::fs::write(self.dir.join("cgroup.procs"), init.to_string()).unwrap();
        self.container = Some(b);
    }

    fn frozen(&self) -> bool {
        if let Ok(v) = std::fs::read_to_string(self.dir.join("cgroup.freeze")) {
            return v.trim() == "1";
        }
        std::fs::read_to_string(self.dir.join("freezer.state")).unwrap().trim() != "THAWED"
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        self.container = None;
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_freeze_rule_freezes_only_a_cgroup_of_the_containers_own_and_thaw_undoes_it() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "audit", "[[policy.rules]]\nname = \"hardened\"\naction = \"enforce\"\npaths = [\"/tmp/*\"]\nresponse = \"freeze\"\n");
    // First, a container that shares the test's own cgroup: the exec is blocked, and the
    // freeze refused (it would freeze the test, and the host's root cgroup).
    let out = s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 126, "{out:?}");
    let f = d.findings(1);
    assert_eq!(f[0]["response"]["action"], "freeze", "{}", f[0]);
    assert_eq!(f[0]["response"]["ok"], false);
    // (A root cgroup here; under a service manager, a cgroup that holds the daemon too.)
    let why = f[0]["response"]["error"].as_str().unwrap();
    assert!(
        why.contains("root cgroup")
            || why.contains("driftgate itself")
            || why.contains("not in the container"),
        "{why}"
    );

    // Then a container in a cgroup of its own: frozen after the blocked exec, its processes
    // in place; `driftgate thaw` lets it go on.
    frozen_in_its_own_cgroup_until_thawed(&s, &d, TestCgroup::new(), 2);
}

/// Enforce, and freeze, on execs from /tmp.
const FREEZE_TMP: &str =
    "[[policy.rules]]\naction = \"enforce\"\npaths = [\"/tmp/*\"]\nresponse = \"freeze\"\n";

/// The refused exec, and where its exit status is written.
const REFUSED_IN_CONTAINER: &str = "/tmp/other; echo rc=$? > /after";

#[test]
fn a_process_in_a_nested_pid_namespace_does_not_keep_its_container_from_being_frozen() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "audit", FREEZE_TMP);
    // A process of its own in a PID namespace nested in the container's (no capability
    // needed, in a user namespace), and the refused exec from another one.
    let nested = "/bin/busybox unshare -U -r -p -f /bin/busybox sleep 100 &\n\
                  /bin/busybox unshare -U -r -p -f /bin/sh -c '/tmp/other; echo rc=$? > /after'";
    frozen_with(&s, &d, TestCgroup::new(), 1, nested);
}

/// A container started in `cg`: its blocked exec (finding number `n`) freezes it, status
/// lists it, `driftgate thaw` lets it go on.
fn frozen_in_its_own_cgroup_until_thawed(s: &Scratch, d: &Daemon, cg: TestCgroup, n: usize) {
    frozen_with(s, d, cg, n, REFUSED_IN_CONTAINER)
}

/// [`frozen_in_its_own_cgroup_until_thawed`], with `refused` run in the container once it is
/// told to go: it runs `/tmp/other` (refused) and writes its status to `/after`.
fn frozen_with(s: &Scratch, d: &Daemon, mut cg: TestCgroup, n: usize, refused: &str) {
    let script = format!(
        "cp /opt/img/true /tmp/other\ntouch /ready\nwhile [ ! -e /go ]; do sleep 0.05; done\n{refused}\nsleep 100\n"
    );
    let script = script.as_str();
    cg.adopt(Background::start(s.root(), &s.merged, "", script, &s.merged.join("ready")));
    std::fs::write(s.merged.join("go"), "").unwrap();
    let f = d.findings(n);
    assert_eq!(f.len(), n, "{f:?}");
    let r = &f[n - 1]["response"];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["cgroup"], cg.dir.display().to_string());
    assert!(wait_until(Duration::from_secs(5), || cg.frozen()), "frozen");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!s.merged.join("after").exists(), "the container stopped where it was");
    let st = d.status();
    assert_eq!(st["frozen"][0]["cgroup"], cg.dir.display().to_string(), "{}", st["frozen"]);
    assert_eq!(st["frozen"][0]["finding"], f[n - 1]["id"]);
    let sock = d.socket();
    let o = dg(&["status", "--socket", sock.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FROZEN: container"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let id = s.merged.display().to_string();
    let o = dg(&["thaw", "--config", d.config.to_str().unwrap(), &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("thawed"));
    assert!(wait_until(Duration::from_secs(5), || s.merged.join("after").exists()), "thawed: it goes on");
    assert_eq!(std::fs::read_to_string(s.merged.join("after")).unwrap().trim(), "rc=126");
    assert!(d.status()["frozen"].as_array().unwrap().is_empty());
    let o = dg(&["thaw", "--config", d.config.to_str().unwrap(), &id]);
    assert_eq!(o.status.code(), Some(66), "nothing frozen any more: {}", stderr(&o));
}

#[test]
fn an_aggregate_points_at_the_copy_its_windows_first_finding_kept() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "audit", "[findings]\naggregate_window_secs = 1\n");
    s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true; /tmp/true; /tmp/true\n", T);
    let f = d.findings(2);
    assert_eq!(f.len(), 2, "{f:?}");
    let (first, agg) = (&f[0], &f[1]);
    assert_eq!(agg["count"], 2, "{agg}");
    assert_eq!(first["evidence"]["stored"], true);
    assert_eq!(agg["evidence"]["stored"], true, "{agg}");
    assert_eq!(agg["evidence"]["sha256"], first["file"]["sha256"]);
    assert_eq!(d.status()["evidence"]["files"], 1);
}

#[test]
fn a_silent_webhook_cannot_hold_the_daemons_stop() {
    if !privileged() {
        return;
    }
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let s = Scratch::new();
    let tables = format!(
        "{EVERY_FINDING}[export]\nwebhook = \"http://127.0.0.1:{port}/\"\nwebhook_timeout_secs = 2\n"
    );
    let mut d = daemon_with(&s, "enforce", &tables);
    s.run_in_container(
        "cp /opt/img/true /tmp/true\ni=0; while [ $i -lt 10 ]; do /tmp/true; i=$((i+1)); done\n",
        T,
    );
    assert_eq!(d.findings(10).len(), 10);
    let start = std::time::Instant::now();
    assert_eq!(d.terminate(Duration::from_secs(20)), Some(0), "a clean stop");
    assert!(start.elapsed() < Duration::from_secs(8), "stopped in {:?}", start.elapsed());
    drop(silent);
}

#[test]
fn the_v1_freezer_freezes_a_container_without_a_v2_cgroup_of_its_own() {
    if !privileged() {
        return;
    }
    let own_v2 = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("0::") && l != "0::/");
    let Some(freezer) = cgroup_mount("cgroup", Some("freezer")).filter(|_| !own_v2) else {
        eprintln!(
            "SKIPPED: no cgroup v1 freezer hierarchy here (or the test runs in a v2 cgroup of its own)"
        );
        return;
    };
    let s = Scratch::new();
    let d = daemon_with(&s, "audit", FREEZE_TMP);
    let cg = TestCgroup::under(&freezer, "v1");
    assert!(cg.dir.join("freezer.state").exists());
    frozen_in_its_own_cgroup_until_thawed(&s, &d, cg, 1);
}

#[test]
fn secrets_on_command_lines_are_replaced_before_any_sink() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let ocsf = s.root().join("export/findings.ocsf.jsonl");
    std::fs::create_dir_all(ocsf.parent().unwrap()).unwrap();
    let tables = format!(
        "[findings]\naggregate_window_secs = 0\n[export]\nocsf_file = {:?}\n",
        ocsf.display().to_string()
    );
    let d = daemon_with(&s, "audit", &tables);
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/true\n\
         /tmp/true --db-password=hunter2 --token s3cr3t-tok AWS_SECRET_ACCESS_KEY=akia-secret https://u:pw-secret@h/x; echo rc=$?\n\
         /bin/busybox sh -c 'GITHUB_TOKEN=ghp-secret /tmp/true'; echo sub=$?\n",
        T,
    );
    assert_eq!(results(&out)["rc"], 0, "{out:?}");
    let f = d.findings(2);
    let direct = f.iter().find(|x| x["process"]["args"].as_array().is_some_and(|a| a.len() > 2)).unwrap();
    assert_eq!(
        direct["process"]["args"],
        serde_json::json!([
            "/tmp/true",
            "--db-password=[REDACTED]",
            "--token",
            "[REDACTED]",
            "AWS_SECRET_ACCESS_KEY=[REDACTED]",
            "https://u:[REDACTED]@h/x"
        ])
    );
    assert_eq!(direct["process"]["args_redacted"], true);
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_to_string(&ocsf)
        .is_ok_and(|t| t.lines().count() == 2)));
    // No sink has a secret: the spool, the OCSF file, the ancestors' command lines.
    let mut everything = std::fs::read_to_string(&ocsf).unwrap();
    for e in std::fs::read_dir(&d.spool).unwrap() {
        everything += &String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap());
    }
    for secret in ["hunter2", "s3cr3t-tok", "akia-secret", "pw-secret", "ghp-secret"] {
        assert!(!everything.contains(secret), "{secret} reached a sink");
    }
    assert!(everything.contains("GITHUB_TOKEN=[REDACTED]"), "the ancestor's command line, redacted");
}
