//! The daemon under a seccomp filter, as a service manager or a container runtime confines it:
//! a refused `openat2` (systemd's `RestrictSUIDSGID=yes` refuses it whole, with `ENOSYS`) must
//! leave every exec path covered; a refused call that shrinks coverage must say so loudly; a
//! refused `fanotify_init` or `fanotify_mark` ends the daemon with status 78 and the reason.
//! Real seccomp filters (`tests/tools/seccomp_deny.c`), real fanotify marks, real overlays.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(60);
const ENOSYS: &str = "38";
const EPERM: &str = "1";

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const FANOTIFY_INIT: &str = "300";
    pub const FANOTIFY_MARK: &str = "301";
    pub const PROCESS_VM_READV: &str = "310";
    pub const OPENAT2: &str = "437";
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const FANOTIFY_INIT: &str = "262";
    pub const FANOTIFY_MARK: &str = "263";
    pub const PROCESS_VM_READV: &str = "270";
    pub const OPENAT2: &str = "437";
}

fn seccomp_deny(dir: &Path) -> PathBuf {
    // A dynamic build is fine: it runs on the host, not in a scratch container.
    let out = dir.join("seccomp_deny");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/seccomp_deny.c");
    let mut cmd = std::process::Command::new("gcc");
    cmd.args(["-O2", "-o"]).arg(&out).arg(&src);
    let o = run_with_deadline(cmd, T);
    assert!(o.status.success(), "gcc: {o:?}");
    out
}

fn opts(s: &Scratch, mode: &'static str) -> DaemonOpts<'static> {
    DaemonOpts { mode, globs: vec![s.merged.clone()], ..Default::default() }
}

/// Every path of the README's coverage table that a lookup of a container path serves: the
/// image's own files (lower-layer identity), a script an image interpreter is given, the
/// program the image's loader is asked to run, mounts (`/dev`, `/dev/shm`, a volume).
const EVERY_PATH: &str = "cp /opt/img/true /tmp/added; /tmp/added; echo added=$?\n\
     printf 'echo pwned\\n' > /tmp/x.sh; /opt/img/bash /tmp/x.sh; echo script=$?\n\
     cd /tmp; /opt/img/bash x.sh; echo script_relative=$?; cd /\n\
     cp /usr/bin/true /tmp/tool; /lib64/ld-linux-x86-64.so.2 /tmp/tool; echo loader=$?\n\
     cp /opt/img/true /dev/true; /dev/true; echo dev=$?\n\
     cp /opt/img/true /dev/shm/true; /dev/shm/true; echo shm=$?\n\
     /vol/true; echo vol=$?\n\
     /opt/img/true; echo image=$?\n\
     /usr/bin/true; echo image_dynamic=$?\n\
     /opt/img/bash /opt/img/runme.sh; echo image_script=$?\n\
     /lib64/ld-linux-x86-64.so.2 /usr/bin/true; echo image_loader=$?\n";

#[test]
fn every_exec_path_stays_covered_when_openat2_is_refused() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let deny = seccomp_deny(tools.path());
    let (_files, s) = loader_image();
    let vol = s.root().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::copy(BUSYBOX, vol.join("true")).unwrap();
    let prefix = [deny.as_os_str(), OsStr::new(ENOSYS), OsStr::new(nr::OPENAT2), OsStr::new("--")];
    let d = Daemon::start_under(s.root(), opts(&s, "enforce"), &prefix);
    let setup = format!("mkdir -p \"$M/vol\"\nmount --bind '{}' \"$M/vol\"\n", vol.display());
    let out = s.run_in_container_with(&setup, EVERY_PATH, T);
    let r = results(&out);
    for k in ["added", "script", "script_relative", "loader", "dev", "shm", "vol"] {
        assert_eq!(r.get(k), Some(&126), "{k} must be refused: {out:?}\n{}", d.log_text());
    }
    for k in ["image", "image_dynamic", "image_script", "image_loader"] {
        assert_eq!(r.get(k), Some(&0), "{k} runs: {out:?}\n{}", d.log_text());
    }
    let st = d.status();
    let openat2 =
        st["health"]["syscalls"].as_array().unwrap().iter().find(|c| c["call"] == "openat2").cloned();
    let openat2 = openat2.unwrap_or_else(|| panic!("openat2 was tried: {st:#}"));
    assert!(openat2["state"].as_str().unwrap().contains("seccomp"), "{openat2}");
    assert_eq!(openat2["degrades"], false);
    assert_eq!(st["health"]["state"], "ok", "the walk is an equivalent check: {st:#}");
    assert!(d.log_text().contains("openat2 refused"), "said at start: {}", d.log_text());
    // Each refused file is a finding (the script's second run is aggregated into the first).
    let f = d.findings(6);
    let mut paths: Vec<&str> = f.iter().filter_map(|x| x["file"]["path"].as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/dev/shm/true", "/dev/true", "/tmp/added", "/tmp/tool", "/tmp/x.sh", "/vol/true"],
        "{f:#?}"
    );
    assert!(f.iter().all(|x| x["action"] == "blocked"), "{f:#?}");
}

#[test]
fn a_refused_fanotify_init_or_mark_ends_the_daemon_with_status_78_naming_the_filter() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let deny = seccomp_deny(tools.path());
    let s = Scratch::new();
    for (call, what) in [(nr::FANOTIFY_INIT, "fanotify_init"), (nr::FANOTIFY_MARK, "fanotify_mark")] {
        let prefix = [deny.as_os_str(), OsStr::new(EPERM), OsStr::new(call), OsStr::new("--")];
        let out = Daemon::run_failing(&s.root().join(what), opts(&s, "enforce"), &prefix);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: not restarted by the unit: {err}");
        assert!(
            err.contains(what) && err.contains("seccomp filter") && err.contains("SystemCallFilter"),
            "{what}: the reason and the remedy: {err}"
        );
    }
}

#[test]
fn a_refused_call_that_shrinks_coverage_is_loud_in_status_metrics_and_the_log() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let deny = seccomp_deny(tools.path());
    let (_files, s) = loader_image();
    let prefix = [deny.as_os_str(), OsStr::new(EPERM), OsStr::new(nr::PROCESS_VM_READV), OsStr::new("--")];
    let metrics = s.root().join("metrics.sock");
    let extra = format!("[metrics]\nlisten = {:?}\n", metrics.display().to_string());
    let extra: &'static str = Box::leak(extra.into_boxed_str());
    let d = Daemon::start_under(s.root(), DaemonOpts { extra_tables: extra, ..opts(&s, "enforce") }, &prefix);
    let st = d.status();
    assert_eq!(st["health"]["state"], "degraded", "{st:#}");
    let reasons = st["health"]["reasons"].to_string();
    assert!(reasons.contains("process_vm_readv"), "{reasons}");
    assert!(
        d.log_text().lines().any(|l| l.contains("ERROR") && l.contains("process_vm_readv")),
        "an error line in enforce mode: {}",
        d.log_text()
    );
    // An interpreter's exec whose arguments cannot be read is decided as drift: in enforce
    // mode the container's own entry shell is refused, and it is a problem of its own.
    let out = s.run_in_container("echo started\n", T);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    assert!(d.status()["decisions"]["indirect_unverifiable"].as_u64() >= Some(1), "{}", d.status());
    assert!(wait_until(Duration::from_secs(5), || {
        d.status()["health"]["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["kind"] == "arguments_unread"))
    }));
    let text = http_get_unix(&metrics, "/metrics");
    assert!(text.contains("driftgate_coverage_degraded 1"), "{text}");
    assert!(text.contains("driftgate_syscall_refused{call=\"process_vm_readv\"} 1"), "{text}");
    assert!(text.contains("driftgate_coverage_problems_total{kind=\"arguments_unread\"}"), "{text}");
    // `driftgate status` (text) starts with the health.
    let out = std::process::Command::new(driftgate_bin())
        .args(["status", "--socket"])
        .arg(d.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("health: degraded") && text.contains("DEGRADED:"), "{text}");
}
