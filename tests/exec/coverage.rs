//! Privileged end-to-end tests of exec paths beyond the container's rootfs: volumes (bind
//! mounts of host directories), tmpfs mounts, `/dev` and `/dev/shm`. Real fanotify marks on
//! real mounts in the container's own mount namespace; run as root (CI does).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A host directory holding an added binary (`true`, a busybox copy), used as a volume.
fn volume(s: &Scratch, name: &str) -> PathBuf {
    let v = s.root().join(name);
    std::fs::create_dir_all(&v).unwrap();
    std::fs::copy(BUSYBOX, v.join("true")).unwrap();
    v
}

/// Setup lines for a container with `vol` bind-mounted at /vol, a tmpfs at /scratch and a
/// noexec tmpfs at /ne (made before the container's first exec, as runtimes do).
fn mounts_setup(vol: &Path) -> String {
    format!(
        "mkdir -p \"$M/vol\" \"$M/scratch\" \"$M/ne\"\nmount --bind '{}' \"$M/vol\"\n\
         mount -t tmpfs scratch \"$M/scratch\"\nmount -t tmpfs -o noexec ne \"$M/ne\"\n",
        vol.display()
    )
}

const EXEC_EVERYWHERE: &str = "cp /opt/img/true /dev/shm/true; /dev/shm/true; echo shm=$?\n\
     cp /opt/img/true /scratch/true; /scratch/true; echo tmpfs=$?\n\
     cp /opt/img/true /dev/true; /dev/true; echo dev=$?\n\
     /vol/true; echo vol=$?\n\
     cp /opt/img/true /ne/true; /ne/true; echo noexec=$?\n\
     /opt/img/true; echo image=$?\n";

fn mount_of(f: &Value) -> (&str, &str) {
    (f["file"]["mount"]["mountpoint"].as_str().unwrap_or("-"), f["file"]["path"].as_str().unwrap_or("-"))
}

#[test]
fn execs_from_volumes_tmpfs_dev_and_dev_shm_are_blocked_in_enforce_mode() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let vol = volume(&s, "vol");
    let d = daemon(&s, "enforce");
    // The image's layer is indexed in the background; its manifest names image copies.
    assert!(wait_until(T, || d.status()["index"]["node_layers"].as_u64() >= Some(1)));
    let out = s.run_in_container_with(&mounts_setup(&vol), EXEC_EVERYWHERE, T);
    let r = results(&out);
    for k in ["shm", "tmpfs", "dev", "vol"] {
        assert_eq!(r.get(k), Some(&126), "{k} must be blocked: {out:?}\n{}", d.log_text());
    }
    assert_eq!(r["noexec"], 126, "the kernel refuses exec on a noexec mount");
    assert_eq!(r["image"], 0);
    let f = d.findings(4);
    let mut got: Vec<(&str, &str)> = f.iter().map(mount_of).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("/dev", "/dev/true"),
            ("/dev/shm", "/dev/shm/true"),
            ("/scratch", "/scratch/true"),
            ("/vol", "/vol/true")
        ],
        "{f:#?}"
    );
    let sha = sha256_file(Path::new(BUSYBOX));
    for x in &f {
        assert_eq!(x["category"], "ADDED_BINARY_EXECUTED");
        assert_eq!(x["action"], "blocked");
        assert_eq!(x["file"]["layer"], "mount");
        assert_eq!(x["file"]["sha256"], sha.as_str());
        assert!(x["process"]["args"].is_array(), "{x}");
    }
    let volf = f.iter().find(|x| x["file"]["path"] == "/vol/true").unwrap();
    assert_eq!(volf["file"]["mount"]["root"], vol.display().to_string(), "the volume's host directory");
    let shm = f.iter().find(|x| x["file"]["path"] == "/dev/shm/true").unwrap();
    assert_eq!(shm["file"]["mount"]["fstype"], "tmpfs");
    assert_eq!(shm["file"]["mount"]["source"], "shm");
    assert_eq!(
        shm["file"]["image_paths"],
        serde_json::json!(["/bin/busybox", "/opt/img/false", "/opt/img/true"]),
        "a copy of image content is named as such"
    );
}

#[test]
fn execs_from_mounts_are_allowed_and_recorded_in_audit_mode() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let vol = volume(&s, "vol");
    let d = daemon(&s, "audit");
    let out = s.run_in_container_with(&mounts_setup(&vol), EXEC_EVERYWHERE, T);
    let r = results(&out);
    for k in ["shm", "tmpfs", "dev", "vol", "image"] {
        assert_eq!(r.get(k), Some(&0), "{k} runs in audit mode: {out:?}");
    }
    let f = d.findings(4);
    assert_eq!(f.len(), 4, "{f:#?}");
    assert!(f.iter().all(|x| x["action"] == "audited" && x["file"]["layer"] == "mount"));
}

#[test]
fn the_hosts_own_view_of_a_volume_is_never_intercepted() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let vol = volume(&s, "vol");
    let d = daemon(&s, "enforce");
    let c = Background::start(
        s.root(),
        &s.merged,
        &mounts_setup(&vol),
        "touch /ready\nwhile true; do sleep 1; done\n",
        &s.merged.join("ready"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || d.log_text().contains("mountpoint=/vol")),
        "the container's /vol is marked: {}",
        d.log_text()
    );
    // The same file through the host's path: no event, no finding.
    for _ in 0..5 {
        let out = run_with_deadline(std::process::Command::new(vol.join("true")), T);
        assert!(out.status.success(), "the host's view runs: {out:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_findings(&d.spool).is_empty(), "no finding for the host's execs");
    // Through the container's mount it is decided (and blocked).
    let pid = c.init_pid().expect("container init").to_string();
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args(["-t", &pid, "-m", "-r", "/vol/true"]);
    let out = run_with_deadline(cmd, T);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0]["file"]["path"], "/vol/true");
}

#[test]
fn a_rule_on_mounts_allows_a_trusted_tools_volume_and_nothing_else() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let vol = volume(&s, "tools");
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_tables: "[[policy.rules]]\nname = \"tools\"\naction = \"allow\"\nmounts = [\"/vol\"]\n",
            ..Default::default()
        },
    );
    let out = s.run_in_container_with(&mounts_setup(&vol), EXEC_EVERYWHERE, T);
    let r = results(&out);
    assert_eq!(r["vol"], 0, "the allowed volume runs: {out:?}");
    for k in ["shm", "tmpfs", "dev"] {
        assert_eq!(r.get(k), Some(&126), "{k} is not covered by the rule: {out:?}");
    }
    let f = d.findings(3);
    assert!(f.iter().all(|x| x["file"]["path"] != "/vol/true"), "{f:#?}");
    assert_eq!(f.len(), 3);
}

#[test]
fn status_lists_each_containers_mounts_and_whether_they_are_marked() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let vol = volume(&s, "vol");
    let d = daemon(&s, "enforce");
    let _c = Background::start(
        s.root(),
        &s.merged,
        &mounts_setup(&vol),
        "touch /ready\nwhile true; do sleep 1; done\n",
        &s.merged.join("ready"),
    );
    let mut st = Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        st = d.status();
        st["containers"][0]["mount_namespaces"] == 1
    }));
    let mounts: Vec<(String, String)> = st["containers"][0]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountpoint"].as_str().unwrap().to_owned(), m["state"].as_str().unwrap().to_owned()))
        .collect();
    let state = |mp: &str| mounts.iter().find(|(m, _)| m == mp).map(|(_, s)| s.as_str());
    assert_eq!(state("/vol"), Some("marked"), "{mounts:?}");
    assert_eq!(state("/dev/shm"), Some("marked"));
    assert_eq!(state("/dev"), Some("marked"));
    assert_eq!(state("/scratch"), Some("marked"));
    assert_eq!(state("/ne"), Some("skipped: noexec"));
    assert_eq!(state("/proc"), None, "pseudo filesystems are not listed");
    assert!(st["coverage"]["mounts_marked"].as_u64().unwrap() >= 4, "{}", st["coverage"]);
    let text = std::process::Command::new(driftgate_bin())
        .args(["status", "--socket"])
        .arg(d.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("mount /vol (") && text.contains("): marked"), "{text}");
}

#[test]
fn a_volume_file_shared_by_two_containers_is_hashed_once() {
    if !privileged() {
        return;
    }
    let (a, b) = (Scratch::new(), Scratch::new());
    let vol = volume(&a, "shared");
    let d = Daemon::start(
        a.root(),
        DaemonOpts { mode: "audit", globs: vec![a.merged.clone(), b.merged.clone()], ..Default::default() },
    );
    for s in [&a, &b] {
        let out = s.run_in_container_with(&mounts_setup(&vol), "/vol/true; echo vol=$?\n", T);
        assert_eq!(results(&out)["vol"], 0, "{out:?}");
    }
    let f = d.findings(2);
    assert_eq!(f.len(), 2, "one finding per container: {f:#?}");
    assert_ne!(f[0]["container"]["id"], f[1]["container"]["id"]);
    let st = d.status();
    assert_eq!(st["decisions"]["hashed"], 1, "one file version, hashed once: {}", st["decisions"]);
    assert!(st["decisions"]["hash_cache_hits"].as_u64().unwrap() >= 1);
}

#[test]
fn containers_running_before_the_daemon_starts_have_their_mounts_marked_before_it_is_ready() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let vol = volume(&s, "vol");
    let _c = Background::start(
        s.root(),
        &s.merged,
        &mounts_setup(&vol),
        "cp /opt/img/true /dev/shm/true\ntouch /ready\nwhile [ ! -e /go ]; do sleep 0.05; done\n\
         /dev/shm/true; echo shm=$? > /result.tmp; /vol/true; echo vol=$? >> /result.tmp; mv /result.tmp /result\n\
         while true; do sleep 1; done\n",
        &s.merged.join("ready"),
    );
    let d = daemon(&s, "enforce");
    std::fs::write(s.merged.join("go"), b"").unwrap();
    assert!(wait_until(T, || s.merged.join("result").exists()), "{}", d.log_text());
    let result = std::fs::read_to_string(s.merged.join("result")).unwrap();
    assert!(result.contains("shm=126") && result.contains("vol=126"), "{result}\n{}", d.log_text());
}

#[test]
fn a_mount_the_container_makes_after_it_started_is_marked() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon(&s, "enforce");
    // The scratch container runs as root in the host's user namespace: it may mount, like a
    // privileged container. The pause stands in for what a workload does between mounting
    // and running something; the window itself is measured by `cargo bench --bench
    // first_exec_race -- --late-mounts`.
    let out = s.run_in_container(
        "mkdir /late\nmount -t tmpfs late /late\ncp /opt/img/true /late/true\nsleep 0.2\n\
         /late/true; echo late=$?\n",
        T,
    );
    assert_eq!(results(&out)["late"], 126, "{out:?}\n{}", d.log_text());
    let f = d.findings(1);
    assert_eq!(f[0]["file"]["mount"]["mountpoint"], "/late", "{f:#?}");
}

#[test]
fn memfd_execution_is_refused_in_the_container_where_drift_is_blocked_and_nowhere_else() {
    if !privileged() {
        return;
    }
    let (_tools, s, tool) = fileless_container();
    let d = daemon(&s, "enforce");
    let out = s.run_in_container(FILELESS, T);
    assert_eq!(results(&out)["memfd"], 126, "{out:?}\n{}", d.log_text());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("memfd_create(MFD_EXEC): Permission denied"), "{err}");
    assert!(err.contains("fexecve: Permission denied"), "a plain memfd is sealed non-executable: {err}");
    // (The test harness's own `unshare` also has the container's root, in the host's PID
    // namespace: that one is listed as not set.)
    let states = d.status()["containers"][0]["memfd_noexec"].clone();
    assert!(states.as_array().unwrap().contains(&serde_json::json!("2")), "{states}");
    // The host's PID namespace is untouched: fileless execution still works there.
    let mut cmd = std::process::Command::new(&tool);
    cmd.args([BUSYBOX, "true"]);
    assert!(run_with_deadline(cmd, T).status.success(), "the host keeps vm.memfd_noexec = 0");
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_findings(&d.spool).is_empty(), "nothing ran, nothing to record");
}

#[test]
fn fileless_execution_is_recorded_in_audit_mode_with_the_programs_hash() {
    if !privileged() {
        return;
    }
    let (tools, s, _) = fileless_container();
    let d = daemon(&s, "audit");
    let out = s.run_in_container(FILELESS, T);
    assert_eq!(results(&out)["memfd"], 0, "runs in audit mode: {out:?}");
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:#?}");
    let f = &f[0];
    assert_eq!(f["category"], "FILELESS_EXECUTION");
    assert_eq!(f["severity"], "HIGH");
    assert_eq!(f["action"], "audited");
    assert_eq!(f["file"]["layer"], "memfd");
    assert!(f["file"]["path"].as_str().unwrap().starts_with("/memfd:dropper"), "{f}");
    assert_eq!(f["file"]["sha256"], sha256_file(&tools.path().join("bb2")).as_str());
    assert_eq!(f["process"]["args"], serde_json::json!(["sleep", "0.5"]));
    assert_eq!(f["mitre"], serde_json::json!(["T1620", "T1106"]));
    // The memfd's bytes are kept (read through /proc/<pid>/exe while the program runs).
    assert_eq!(f["evidence"]["stored"], true, "{f}");
    assert_eq!(f["evidence"]["sha256"], f["file"]["sha256"]);
    let copy =
        d.config.parent().unwrap().join("state/evidence/sha256").join(f["file"]["sha256"].as_str().unwrap());
    assert_eq!(sha256_file(&copy), f["file"]["sha256"].as_str().unwrap());
    let states = d.status()["containers"][0]["memfd_noexec"].clone();
    assert!(!states.as_array().unwrap().contains(&serde_json::json!("2")), "audit sets nothing: {states}");
    assert_eq!(d.status()["coverage"]["fileless_audit"], "listening");
}

#[test]
fn a_known_bad_fileless_program_is_critical() {
    if !privileged() {
        return;
    }
    let (tools, s, _) = fileless_container();
    let iocs = s.root().join("iocs.txt");
    std::fs::write(&iocs, format!("{} dropper-x\n", sha256_file(&tools.path().join("bb2")))).unwrap();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![s.merged.clone()],
            extra_tables: &format!("[ioc]\npaths = [{:?}]\n", iocs.display().to_string()),
            ..Default::default()
        },
    );
    let out = s.run_in_container(FILELESS, T);
    assert_eq!(results(&out)["memfd"], 0, "{out:?}");
    let f = d.findings(1);
    assert_eq!(f[0]["category"], "FILELESS_MALICIOUS_EXECUTION", "{f:#?}");
    assert_eq!(f[0]["severity"], "CRITICAL");
    assert_eq!(f[0]["ioc"]["name"], "dropper-x");
}

#[test]
fn a_container_sharing_the_hosts_pid_namespace_is_not_changed_but_its_fileless_execution_is_recorded() {
    if !privileged() {
        return;
    }
    let (_tools, s, _) = fileless_container();
    let d = daemon(&s, "enforce");
    let cmd = container_command_in(s.root(), &s.merged, "", FILELESS, false);
    let out = run_with_deadline(cmd, T);
    assert_eq!(results(&out)["memfd"], 0, "vm.memfd_noexec cannot be set for it: {out:?}");
    let f = d.findings(1);
    assert_eq!(f[0]["category"], "FILELESS_EXECUTION", "{f:#?}");
    assert_eq!(
        d.status()["containers"][0]["memfd_noexec"],
        serde_json::json!(["not set: host PID namespace"])
    );
    assert!(d.log_text().contains("in the host's PID namespace (hostPID)"));
}
