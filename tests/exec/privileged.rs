//! Privileged end-to-end tests: real fanotify marks on real overlay mounts, with "containers"
//! that live in their own mount and PID namespaces after pivot_root. Run as root (CI does).

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn by_path<'a>(findings: &'a [Value], path: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["file"]["path"] == path).collect()
}

#[test]
fn image_binaries_and_scripts_run_without_findings_in_enforce_mode() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container(
        "/opt/img/true; echo true=$?\n/bin/busybox true; echo busybox=$?\n/opt/img/script.sh >/dev/null; echo script=$?\n\
         /opt/img/false; echo false=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!(r["true"], 0, "{out:?}");
    assert_eq!(r["busybox"], 0);
    assert_eq!(r["script"], 0);
    assert_eq!(r["false"], 1, "image binary ran and returned its own status");
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_findings(&d.spool).is_empty(), "no findings for image binaries");
}

#[test]
fn blocks_added_binary_in_enforce_mode_with_a_complete_finding() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/true\ncd /tmp\n/tmp/true -v 'two words'; echo added=$?\n",
        T,
    );
    assert_eq!(results(&out)["added"], 126, "EPERM: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!(f["schema"], "driftgate.finding.v1");
    assert_eq!(f["category"], "ADDED_BINARY_EXECUTED");
    assert_eq!(f["severity"], "LOW");
    assert_eq!(f["action"], "blocked");
    assert_eq!(f["mode"], "enforce");
    assert_eq!(f["node"], "test-node");
    assert_eq!(f["container"]["id"], s.merged.display().to_string());
    assert_eq!(f["container"]["runtime"], "overlay");
    assert_eq!(f["container"]["rootfs"], s.merged.display().to_string());
    assert!(f["container"]["image"].is_null());
    assert_eq!(f["file"]["path"], "/tmp/true");
    assert_eq!(f["file"]["layer"], "upper");
    let sha = sha256_file(&s.lower().join("opt/img/true"));
    assert_eq!(f["file"]["sha256"], sha.as_str());
    assert_eq!(f["file"]["size"], std::fs::metadata(BUSYBOX).unwrap().len());
    assert_eq!(f["virustotal"], format!("https://www.virustotal.com/gui/file/{sha}"));
    assert_eq!(f["mitre"], serde_json::json!(["T1105", "T1106"]));
    // The pending exec's arguments, not the shell's.
    assert_eq!(f["process"]["args"], serde_json::json!(["/tmp/true", "-v", "two words"]));
    assert_eq!(f["process"]["comm"], "busybox");
    assert_eq!(f["process"]["cwd"], "/tmp");
    assert_eq!(f["process"]["uid"], 0);
    assert!(f["process"]["pid"].as_i64().unwrap() > 1);
    assert!(f["process"]["ppid"].as_i64().unwrap() > 0);
    assert!(f["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn audits_added_binary_in_audit_mode() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    let out = s.run_in_container("cp /opt/img/false /tmp/false\n/tmp/false; echo added=$?\n", T);
    assert_eq!(results(&out)["added"], 1, "ran (false returns 1): {out:?}");
    let f = d.findings(1);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["action"], "audited");
    assert_eq!(f[0]["mode"], "audit");
    assert_eq!(f[0]["category"], "ADDED_BINARY_EXECUTED");
}

#[test]
fn modified_image_binary_is_blocked_or_audited() {
    if !privileged() {
        return;
    }
    for (mode, want_rc, action) in [("enforce", 126, "blocked"), ("audit", 0, "audited")] {
        let s = Scratch::new();
        let d = daemon(&s, mode);
        let out = s.run_in_container("echo >> /opt/img/true\n/opt/img/true; echo modified=$?\n", T);
        assert_eq!(results(&out)["modified"], want_rc, "{mode}: {out:?}");
        let f = d.findings(1);
        assert_eq!(f.len(), 1, "{mode}: {f:#?}");
        assert_eq!(f[0]["category"], "MODIFIED_BINARY_EXECUTED");
        assert_eq!(f[0]["severity"], "MEDIUM");
        assert_eq!(f[0]["action"], action);
        assert_eq!(f[0]["file"]["path"], "/opt/img/true");
        assert_eq!(f[0]["file"]["sha256"], sha256_file(&s.upper().join("opt/img/true")).as_str());
    }
}

#[test]
fn copy_up_without_content_change_is_not_a_finding() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container(
        "chmod 700 /opt/img/true\n/opt/img/true; echo chmod=$?\ntouch /opt/img/false\n/opt/img/false; echo touch=$?\n",
        T,
    );
    assert!(s.upper().join("opt/img/true").exists(), "chmod copied the file up");
    let r = results(&out);
    assert_eq!(r["chmod"], 0, "{out:?}");
    assert_eq!(r["touch"], 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_findings(&d.spool).is_empty());
}

#[test]
fn shebang_scripts_added_to_the_container_are_blocked() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container(
        "printf '#!/bin/sh\\necho pwned\\n' > /tmp/x.sh\nchmod +x /tmp/x.sh\n/tmp/x.sh; echo script=$?\n\
         /bin/busybox sh /tmp/x.sh >/dev/null; echo via_sh=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!(r["script"], 126, "{out:?}");
    // Handed to the image's shell, it is a script that shell runs: blocked as well. (Written as
    // `/bin/busybox sh`: busybox-static's shell may run its own `sh` applet without an exec.)
    assert_eq!(r["via_sh"], 126, "{out:?}");
    let f = d.findings(2);
    let mut cats: Vec<&str> =
        by_path(&f, "/tmp/x.sh").iter().map(|x| x["category"].as_str().unwrap()).collect();
    cats.sort();
    assert_eq!(cats, ["ADDED_BINARY_EXECUTED", "ADDED_SCRIPT_EXECUTED"], "{f:?}");
}

#[test]
fn host_side_exec_through_the_mountpoint_is_decided_with_the_container_path() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    std::fs::copy(BUSYBOX, s.merged.join("tmp/true")).unwrap();
    let d = daemon(&s, "enforce");
    let err = try_run_with_deadline(std::process::Command::new(s.merged.join("tmp/true")), T)
        .expect_err("exec of the added binary is denied");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let out = run_with_deadline(std::process::Command::new(s.merged.join("opt/img/true")), T);
    assert!(out.status.success(), "image binary via the host path runs");
    let f = d.findings(1);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["file"]["path"], "/tmp/true");
}

#[test]
fn host_execs_are_never_intercepted_and_only_the_container_is_marked() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    assert_eq!(d.marked_devs(), vec![s.dev()], "exactly one superblock marked: the test's overlay");
    std::fs::create_dir(s.root().join("hostbin")).unwrap();
    let scratch_bin = s.root().join("hostbin/true");
    std::fs::copy(BUSYBOX, &scratch_bin).unwrap();
    for _ in 0..20 {
        let out = run_with_deadline(std::process::Command::new("/bin/true"), Duration::from_secs(10));
        assert!(out.status.success());
        let c = std::process::Command::new(&scratch_bin);
        assert!(run_with_deadline(c, Duration::from_secs(10)).status.success());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(read_findings(&d.spool).is_empty());
}

#[test]
fn hard_links_renames_and_symlinks_do_not_turn_added_binaries_into_image_ones() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let m = s.merged.display().to_string();
    let script = format!(
        "cp /opt/img/true /tmp/a\n\
         ln /tmp/a /tmp/hard; /tmp/hard; echo hard=$?\n\
         mv /tmp/a /tmp/renamed; /tmp/renamed; echo renamed=$?\n\
         ln -s /tmp/renamed /tmp/sym; /tmp/sym; echo sym=$?\n\
         rm /opt/img/true; cp /tmp/renamed /opt/img/true; /opt/img/true; echo same_content=$?\n\
         rm /opt/img/false; cp /tmp/renamed /opt/img/false; echo >> /opt/img/false; /opt/img/false; echo replaced=$?\n\
         mkdir -p {m}/opt/img; cp /tmp/renamed {m}/opt/img/true; {m}/opt/img/true; echo mimic=$?\n\
         mkdir /tmp/l; ln -s /bin/busybox /tmp/l/true; /tmp/l/true; echo imglink=$?\n\
         exec 3</tmp/renamed; rm /tmp/renamed /tmp/hard /tmp/sym; /proc/self/fd/3; echo fdexec=$?\n"
    );
    let out = s.run_in_container(&script, T);
    let r = results(&out);
    for k in ["hard", "renamed", "sym", "replaced", "mimic", "fdexec"] {
        assert_eq!(r.get(k), Some(&126), "{k} must be blocked: {out:?}");
    }
    assert_eq!(r["imglink"], 0, "a symlink to an image binary runs the image binary");
    assert_eq!(
        r["same_content"], 0,
        "an image path re-created with the image's exact bytes runs those bytes"
    );
    let f = d.findings(6);
    let paths: Vec<&str> = f.iter().map(|f| f["file"]["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/tmp/hard"), "{paths:?}");
    assert!(paths.contains(&"/tmp/renamed"));
    let mimic = format!("{m}/opt/img/true");
    assert!(
        paths.contains(&mimic.as_str()),
        "mimicking the host path is reported as the added path: {paths:?}"
    );
    let replaced: Vec<_> = f.iter().filter(|f| f["file"]["path"] == "/opt/img/false").collect();
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0]["category"], "MODIFIED_BINARY_EXECUTED");
    assert!(!paths.contains(&"/opt/img/true"));
    // The one run through a descriptor after its names were removed: named by its last name,
    // flagged deleted.
    assert!(f.iter().any(|f| f["file"]["deleted"] == true && f["file"]["path"] == "/tmp/renamed"), "{f:#?}");
}

#[test]
fn hostile_file_names_cannot_break_or_forge_records() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let sock_path = s.root().join("journal.sock");
    let journal = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    journal.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            journald_socket: Some(sock_path),
            ..Default::default()
        },
    );
    // A name with a newline, an escape sequence, a fake JSON record and a byte that is not UTF-8.
    let name = b"/tmp/evil\n{\"schema\":\"driftgate.finding.v1\"}\x1b[2J\xff";
    let script = "cp /opt/img/true \"$(printf '/tmp/evil\\n{\"schema\":\"driftgate.finding.v1\"}\\033[2J\\377')\"\n\
                  \"$(printf '/tmp/evil\\n{\"schema\":\"driftgate.finding.v1\"}\\033[2J\\377')\"; echo evil=$?\n";
    let out = s.run_in_container(script, T);
    assert_eq!(results(&out)["evil"], 126, "{out:?}");
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "exactly one record: {f:?}");
    let raw = f[0]["file"]["path_raw"].as_str().expect("non-UTF-8 path keeps its raw bytes");
    assert_eq!(driftgate_core::finding::decode_raw(raw).unwrap(), name);
    // The journal entry: FILE_PATH carries the exact bytes, MESSAGE stays one escaped line.
    let mut buf = vec![0u8; 1 << 20];
    // (An empty datagram first: the daemon's probe of the socket at start.)
    let n = loop {
        let n = journal.recv(&mut buf).expect("journal entry");
        if n > 0 {
            break n;
        }
    };
    let fields = parse_journal_native(&buf[..n]);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("FILE_PATH").unwrap(), name);
    let msg = get("MESSAGE").unwrap();
    assert!(!msg.contains(&b'\n') && !msg.contains(&0x1b), "{:?}", String::from_utf8_lossy(&msg));
    assert_eq!(get("DRIFTGATE_CATEGORY").unwrap(), b"ADDED_BINARY_EXECUTED");
    assert_eq!(get("MESSAGE_ID").unwrap(), b"6c1f4a3e0b9d4c8e9a2f7d5b3e1c0a91");
    assert_eq!(get("PRIORITY").unwrap(), b"5");
    assert_eq!(get("SYSLOG_IDENTIFIER").unwrap(), b"driftgate");
    assert_eq!(get("ACTION").unwrap(), b"blocked");
    assert!(fields.iter().filter(|(n, _)| n == "FILE_PATH").count() == 1);
}

/// Parses journald's native datagram format (KEY=VALUE lines, or KEY\n<le64 len><bytes>\n).
fn parse_journal_native(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap();
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((String::from_utf8(line[..eq].to_vec()).unwrap(), line[eq + 1..].to_vec()));
            b = &b[nl + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).unwrap();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            out.push((name, b[nl + 9..nl + 9 + len].to_vec()));
            b = &b[nl + 9 + len + 1..];
        }
    }
    out
}

#[test]
fn large_added_file_does_not_hold_up_other_execs() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    // 512 MiB file: busybox followed by sparse padding (still a valid ELF). Hashing it takes
    // far longer than ten execs of an image binary.
    std::fs::create_dir(s.merged.join("tmp/big")).unwrap();
    let big = s.merged.join("tmp/big/true");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(&std::fs::read(BUSYBOX).unwrap()).unwrap();
        f.set_len(512 << 20).unwrap();
        f.write_all(b"x").unwrap();
        std::fs::set_permissions(&big, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let d = daemon(&s, "audit");
    let script = "( /tmp/big/true; echo big=$? > /tmp/big.done ) &\nsleep 0.1\n\
                  for i in 1 2 3 4 5 6 7 8 9 10; do /opt/img/true; cp /opt/img/true /tmp/t$i; done\n\
                  [ -e /tmp/big.done ]; echo big_done_first=$?\necho small=0\nwait\ncat /tmp/big.done\n";
    let start = std::time::Instant::now();
    let out = s.run_in_container(script, T);
    let r = results(&out);
    assert_eq!(r.get("small"), Some(&0), "{out:?}");
    assert_eq!(r.get("big"), Some(&0), "{out:?}");
    assert_eq!(
        r.get("big_done_first"),
        Some(&1),
        "the small execs finished while the big file was being hashed"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    let f = d.findings(1);
    assert_eq!(f[0]["file"]["path"], "/tmp/big/true");
}

#[test]
fn every_decision_in_audit_mode_allows_and_records_only_drift() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "audit");
    let out = s.run_in_container(
        "/opt/img/true; echo image=$?\nchmod 700 /opt/img/false; /opt/img/false; echo copyup=$?\n\
         mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo added=$?\n\
         cp /opt/img/true /opt/img/t2; echo >> /opt/img/true; /opt/img/true; echo modified=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!((r["image"], r["copyup"], r["added"], r["modified"]), (0, 1, 0, 0), "{out:?}");
    let f = d.findings(2);
    let mut cats: Vec<(&str, &str, &str)> = f
        .iter()
        .map(|f| {
            (
                f["file"]["path"].as_str().unwrap(),
                f["category"].as_str().unwrap(),
                f["action"].as_str().unwrap(),
            )
        })
        .collect();
    cats.sort();
    assert_eq!(
        cats,
        vec![
            ("/opt/img/true", "MODIFIED_BINARY_EXECUTED", "audited"),
            ("/tmp/a/true", "ADDED_BINARY_EXECUTED", "audited")
        ]
    );
}

#[test]
fn overlays_that_are_not_configured_containers_are_left_alone() {
    if !privileged() {
        return;
    }
    let ours = Scratch::new();
    let other = Scratch::new();
    std::fs::create_dir(other.merged.join("tmp/x")).unwrap();
    std::fs::copy(BUSYBOX, other.merged.join("tmp/x/true")).unwrap();
    let d = daemon(&ours, "enforce");
    assert_eq!(d.marked_devs(), vec![ours.dev()]);
    let out = other.run_in_container("/tmp/x/true; echo other=$?\n", T);
    assert_eq!(results(&out)["other"], 0, "an unconfigured overlay is never intercepted: {out:?}");
    let out = run_with_deadline(std::process::Command::new(other.merged.join("tmp/x/true")), T);
    assert!(out.status.success());
    assert!(read_findings(&d.spool).is_empty());
}

#[test]
fn mountinfo_polling_fallback_marks_new_containers() {
    if !privileged() {
        return;
    }
    let mut s = Scratch::new();
    s.umount();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_discovery: "mount_watch = \"mountinfo\"\n",
            ..Default::default()
        },
    );
    assert!(d.wait_log("mountinfo-poll", Duration::from_secs(5)), "{}", d.log_text());
    std::fs::create_dir(s.upper().join("x")).unwrap();
    std::fs::copy(BUSYBOX, s.upper().join("x/true")).unwrap();
    s.mount();
    // Runtimes take tens of milliseconds from the rootfs mount to the first exec (runc create
    // and start); a scratch container can exec within a few. The sleep stands in for that
    // runtime work, so this tests discovery, not the scheduler of a loaded 2-core test run.
    let out = s.run_in_container("sleep 0.05\n/x/true; echo first=$?\n", T);
    assert_eq!(results(&out)["first"], 126, "{out:?}\n{}", d.log_text());
}

#[test]
fn findings_go_to_stderr_when_there_is_no_journald() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            journald_socket: Some(s.root().join("no-such-journal.sock")),
            ..Default::default()
        },
    );
    let out = s.run_in_container("mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo a=$?\n", T);
    assert_eq!(results(&out)["a"], 126);
    assert!(d.wait_log("driftgate-finding {", Duration::from_secs(10)), "{}", d.log_text());
    let line = d.log_text().lines().find(|l| l.starts_with("driftgate-finding ")).unwrap().to_owned();
    let v: Value = serde_json::from_str(line.trim_start_matches("driftgate-finding ")).unwrap();
    assert_eq!(v["file"]["path"], "/tmp/a/true");
    assert_eq!(d.findings(1).len(), 1, "and it is in the spool too");
}

#[test]
fn an_image_binary_deleted_while_open_still_runs_as_the_image_binary() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container("exec 3</opt/img/true\nrm /opt/img/true\n/proc/self/fd/3; echo fd=$?\n", T);
    // busybox ran (it found no applet named "3"): not denied.
    assert_eq!(results(&out)["fd"], 127, "the lower inode is the image's: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("applet not found"), "{out:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(read_findings(&d.spool).is_empty());
}

#[test]
fn repeated_identical_findings_are_aggregated_and_every_exec_is_counted() {
    if !privileged() {
        return;
    }
    for (mode, want_rc) in [("audit", 0), ("enforce", 126)] {
        let s = Scratch::new();
        let d = Daemon::start(
            s.root(),
            DaemonOpts {
                mode,
                globs: vec![s.merged.clone()],
                extra_tables: "[findings]\naggregate_window_secs = 1\n",
                ..Default::default()
            },
        );
        let out = s.run_in_container(
            "mkdir /tmp/l; cp /opt/img/true /tmp/l/true\ni=0\nwhile [ $i -lt 50 ]; do /tmp/l/true; rc=$?; i=$((i+1)); done\n\
             echo last=$rc\n",
            T,
        );
        assert_eq!(results(&out)["last"], want_rc, "{mode}: {out:?}");
        // The window closes after a second; the aggregate follows.
        let f = d.findings(2);
        assert_eq!(f.len(), 2, "{mode}: one full finding and one aggregate: {f:?}");
        assert!(f[0].get("count").is_none(), "a single finding has no count");
        assert!(f[0]["process"]["args"].is_array());
        assert_eq!(f[1]["count"], 49, "{mode}");
        assert!(f[1]["first_seen"].is_string() && f[1]["last_seen"].is_string());
        assert_eq!(f[1]["file"]["path"], "/tmp/l/true");
        assert_eq!(f[1]["file"]["sha256"], f[0]["file"]["sha256"]);
        assert_ne!(f[1]["id"], f[0]["id"]);
    }
}
