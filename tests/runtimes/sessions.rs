//! Detections beyond drift with a real runtime: `docker exec` sessions.

use std::time::Duration;

use crate::common::runtimes::*;
use crate::common::*;

fn by_path<'a>(findings: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    findings
        .iter()
        .find(|f| f["file"]["path"] == path)
        .unwrap_or_else(|| panic!("no finding for {path}: {findings:#?}"))
}

/// Drift run by a Docker container's own process is `session = init`; run from a `docker exec`
/// session it is `exec`, with the terminal under `docker exec -t`. The exec session's shell is
/// not an unexpected child shell: its parent is outside the container.
#[test]
fn docker_exec_sessions_are_told_apart_from_the_init_and_their_shells_are_expected() {
    if !privileged() || !tools_present(&["containerd", "dockerd", "docker", "runc"]) {
        return;
    }
    let dir = tmpdir("dgsess-");
    let c = Containerd::start(&dir.path().join("containerd"));
    let dk = Dockerd::start(&dir.path().join("docker"), &c);
    dk.import_test_image();
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            mode: "audit",
            docker_root: Some(dk.data_root()),
            extra_tables: EVERY_FINDING,
            ..Default::default()
        },
    );
    let init = "mkdir /tmp/i && cp /bin/busybox /tmp/i/true && /tmp/i/true && while true; do sleep 1; done";
    let out = dk.docker(&["run", "-d", "--name", "dgtest-d1", "dgtest:latest", "/bin/sh", "-c", init]);
    assert!(out.status.success(), "{out:?}");
    d.findings(1);
    let out = dk.docker(&[
        "exec",
        "dgtest-d1",
        "/bin/sh",
        "-c",
        "mkdir /tmp/e && cp /bin/busybox /tmp/e/true && /tmp/e/true",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = dk.docker(&[
        "exec",
        "-t",
        "dgtest-d1",
        "/bin/sh",
        "-c",
        "mkdir /tmp/t && cp /bin/busybox /tmp/t/true && /tmp/t/true",
    ]);
    assert!(out.status.success(), "{out:?}");
    d.findings(3);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    assert_eq!(all.len(), 3, "the three drift execs and nothing else: {all:#?}");
    let i = by_path(&all, "/tmp/i/true");
    assert_eq!(i["process"]["session"], "init", "{i:#}");
    assert!(i["process"].get("tty").is_none(), "{i:#}");
    let e = by_path(&all, "/tmp/e/true");
    assert_eq!(e["process"]["session"], "exec", "{e:#}");
    assert!(e["process"].get("tty").is_none(), "{e:#}");
    let t = by_path(&all, "/tmp/t/true");
    assert_eq!(t["process"]["session"], "exec", "{t:#}");
    assert!(t["process"]["tty"].as_str().is_some_and(|t| t.starts_with("pts/")), "{t:#}");
    assert_eq!(t["container"]["name"], "dgtest-d1");
}
