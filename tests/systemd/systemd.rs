//! The systemd unit and the daemon's side of systemd's protocols: `systemd-analyze verify`
//! and `security`, sd_notify (READY, STATUS, WATCHDOG), and marking from a private mount
//! namespace with slave propagation (what the unit's PrivateMounts/ProtectSystem give it).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::runtimes::tools_present;
use crate::common::*;

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
fn the_unit_exposure_score_is_at_most_2_6() {
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
    // 2.4 with RestrictSUIDSGID=yes, which refuses openat2 (see the unit).
    assert!(score <= 2.6, "exposure {score}:\n{text}");
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
             [daemon]\nsocket = {:?}\n[kernel]\nenabled = \"off\"\n",
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
    let root = s.root().to_path_buf();
    nix::mount::mount::<Path, Path, str, str>(Some(&root), &root, None, nix::mount::MsFlags::MS_BIND, None)
        .unwrap();
    let _unbind = DetachOnDrop(root.clone());
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
    while driftgate::daemon::socket::query(&sock).is_err() {
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

#[test]
fn fileless_execution_is_refused_under_the_units_read_only_proc_sys_and_hidden_pids() {
    if !privileged() {
        return;
    }
    // The unit's ProtectKernelTunables= makes /proc/sys read-only but for the one file its
    // ReadWritePaths= names, and ProtectProc=invisible mounts /proc with hidepid=invisible; the
    // same, in a mount namespace of the test.
    let (_tools, s, _) = fileless_container();
    let d = Daemon::start(s.root(), DaemonOpts { globs: vec![s.merged.clone()], ..Default::default() });
    let cfg = d.config.clone();
    drop(d);
    let script = format!(
        "mount -t proc -o hidepid=invisible proc /proc && mount --bind /proc/sys /proc/sys && \
         mount -o remount,bind,ro /proc/sys && F=/proc/sys/vm/memfd_noexec && mount --bind $F $F && \
         mount -o remount,bind,rw $F && test ! -w /proc/sys/vm/overcommit_memory && test -w $F && \
         exec {} run --config {}",
        driftgate_bin(),
        cfg.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "slave", "sh", "-c", &script]);
    let log = std::fs::File::create(s.root().join("daemon.log")).unwrap();
    cmd.stderr(log);
    let mut child = cmd.spawn().unwrap();
    let sock = s.root().join("driftgate.sock");
    let start = Instant::now();
    while driftgate::daemon::socket::query(&sock).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = s.run_in_container(FILELESS, Duration::from_secs(60));
    let st = driftgate::daemon::socket::query(&sock).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(s.root().join("daemon.log")).unwrap_or_default();
    assert_eq!(results(&out)["memfd"], 126, "{out:?}\n{log}");
    assert!(st.containers[0].memfd_noexec.contains(&"2".to_owned()), "{:?}", st.containers[0]);
}

/// journalctl shows a field that is not valid UTF-8 (or holds control characters) as an array
/// of byte values.
fn journal_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Array(a) => a.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
        other => panic!("unexpected journal value {other}"),
    }
}

#[test]
fn findings_reach_a_real_journald_with_their_fields_even_for_a_hostile_name() {
    if !privileged()
        || !tools_present(&["journalctl", "unshare"])
        || !Path::new("/lib/systemd/systemd-journald").exists()
    {
        return;
    }
    let s = Scratch::new();
    let j = crate::common::runtimes::Journald::start(&s.root().join("journald"));
    let d = Daemon::start(
        s.root(),
        DaemonOpts { globs: vec![s.merged.clone()], journald_socket: Some(j.socket()), ..Default::default() },
    );
    let name: &[u8] = b"/tmp/evil\nMESSAGE_ID=forged\x1b[2J\xff";
    let script = "cp /opt/img/true \"$(printf '/tmp/evil\\nMESSAGE_ID=forged\\033[2J\\377')\"\n\
                  \"$(printf '/tmp/evil\\nMESSAGE_ID=forged\\033[2J\\377')\"; echo evil=$?\n";
    let out = s.run_in_container(script, Duration::from_secs(60));
    assert_eq!(results(&out)["evil"], 126, "{out:?}");
    let f = d.findings(1);
    let id = f[0]["id"].as_str().unwrap().to_owned();
    let start = Instant::now();
    let entry = loop {
        let e = j.entries(&[&format!("DRIFTGATE_FINDING_ID={id}")]);
        if let Some(e) = e.into_iter().next() {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no journal entry for finding {id}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["MESSAGE_ID"], "6c1f4a3e0b9d4c8e9a2f7d5b3e1c0a91");
    assert_eq!(entry["PRIORITY"], "5");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "driftgate");
    assert_eq!(entry["DRIFTGATE_CATEGORY"], "ADDED_BINARY_EXECUTED");
    assert_eq!(entry["ACTION"], "blocked");
    assert_eq!(entry["CONTAINER_ID"], s.merged.display().to_string());
    assert_eq!(entry["SHA256"], f[0]["file"]["sha256"]);
    assert_eq!(entry["TARGET_PID"], f[0]["process"]["pid"].to_string());
    assert_eq!(journal_bytes(&entry["FILE_PATH"]), name, "the exact bytes of the name");
    let msg = journal_bytes(&entry["MESSAGE"]);
    assert!(!msg.contains(&b'\n') && !msg.contains(&0x1b), "MESSAGE stays one escaped line");
    // The name could not forge a field.
    assert_ne!(entry["MESSAGE_ID"], "forged");
    // journalctl MESSAGE_ID=... finds findings by category.
    assert_eq!(j.entries(&["MESSAGE_ID=6c1f4a3e0b9d4c8e9a2f7d5b3e1c0a91"]).len(), 1);
}
