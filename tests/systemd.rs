//! The systemd unit and the daemon's side of systemd's protocols: `systemd-analyze verify`
//! and `security`, sd_notify (READY, STATUS, WATCHDOG), and marking from a private mount
//! namespace with slave propagation (what the unit's PrivateMounts/ProtectSystem give it).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::runtimes::tools_present;
use common::*;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/driftgate.service");

/// The unit with ExecStart pointing at the binary under test (the packaged path does not
/// exist on a build machine).
fn unit_copy(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(UNIT).unwrap().replace("/usr/bin/driftgate", driftgate_bin());
    let p = dir.join("driftgate.service");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_unit_verifies_cleanly() {
    if !tools_present(&["systemd-analyze"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit).output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && all.trim().is_empty(), "systemd-analyze verify: {all}");
}

#[test]
fn the_unit_exposure_score_is_at_most_2_5() {
    if !tools_present(&["systemd-analyze"]) {
        return;
    }
    let out = Command::new("systemd-analyze").args(["security", "--offline=true", UNIT]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for driftgate.service:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    println!("systemd-analyze security --offline=true: exposure {score}");
    assert!(score <= 2.5, "exposure {score}:\n{text}");
}

#[test]
fn notifies_ready_status_and_watchdog_while_decisions_progress() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let sock = s.root().join("notify.sock");
    let listener = UnixDatagram::bind(&sock).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cfg = s.root().join("dg.toml");
    std::fs::write(
        &cfg,
        format!(
            "mode = \"enforce\"\nstate_dir = {:?}\n[spool]\ndir = {:?}\n[discovery]\noverlay_globs = [{:?}]\n\
             [discovery.containerd]\nenabled = false\n[discovery.docker]\nenabled = false\n\
             [discovery.podman]\nenabled = false\n[discovery.crio]\nenabled = false\n[journald]\nenabled = false\n\
             [daemon]\nsocket = {:?}\n",
            s.root().join("state").display().to_string(),
            s.root().join("spool").display().to_string(),
            s.merged.display().to_string(),
            s.root().join("dg.sock").display().to_string(),
        ),
    )
    .unwrap();
    let mut child = Command::new(driftgate_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(10) {
        let Ok(n) = listener.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        got.push(msg);
        let all = got.join("\n");
        if all.contains("READY=1")
            && all.contains("STATUS=mode=enforce containers=1")
            && all.contains("WATCHDOG=1")
        {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = got.join("\n");
    assert!(all.contains("READY=1"), "{all}");
    assert!(all.contains("STATUS=mode=enforce containers=1"), "{all}");
    assert!(all.contains("WATCHDOG=1"), "{all}");
}

#[test]
fn marks_containers_from_a_private_mount_namespace_like_the_unit_gives_it() {
    if !privileged() {
        return;
    }
    // The unit runs the daemon in its own mount namespace, with host mounts propagating in
    // (systemd makes `/` shared; here `/` is private, so the test makes only its own directory
    // a shared mount, which is the same situation scoped to the test).
    let mut s = Scratch::new();
    s.umount();
    struct Unbind(std::path::PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let root = s.root().to_path_buf();
    nix::mount::mount::<Path, Path, str, str>(Some(&root), &root, None, nix::mount::MsFlags::MS_BIND, None)
        .unwrap();
    let _unbind = Unbind(root.clone());
    nix::mount::mount::<str, Path, str, str>(None, &root, None, nix::mount::MsFlags::MS_SHARED, None)
        .unwrap();
    let cfg_dir = s.root().join("d");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let d = Daemon::start(&cfg_dir, DaemonOpts { globs: vec![s.merged.clone()], ..Default::default() });
    let cfg = d.config.clone();
    drop(d);
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "slave", driftgate_bin(), "run", "--config"]).arg(&cfg);
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Ready when the status socket answers.
    let sock = cfg_dir.join("driftgate.sock");
    let start = Instant::now();
    while driftgate::daemon::status::query(&sock).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "daemon in a private namespace did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A container mounted on the host afterwards is seen through propagation and marked.
    std::fs::create_dir(s.upper().join("x")).unwrap();
    std::fs::copy(BUSYBOX, s.upper().join("x/true")).unwrap();
    s.mount();
    let out = s.run_in_container("sleep 0.1\n/x/true; echo rc=$?\n", Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(results(&out)["rc"], 126, "{out:?}");
}
