//! Privileged end-to-end tests of files run by an image program rather than executed: the
//! program the dynamic loader is asked to run, and the script an interpreter is given.
//!
//! The scratch image gets a real dynamic loader, libc and a dynamic `/usr/bin/true` from the
//! host, and bash-static as `/opt/img/bash`. (Debian's busybox-static runs its own `sh` applet
//! in-process: `sh x.sh` from its shell never execs, so a real shell stands in for it.)

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
use crate::common::{loader_image as image, LD};

/// A daemon in `mode` that records every exec as its own finding (no aggregation). With
/// `[libraries]` on: the loader's or interpreter's file is then found without opening it and
/// read by a worker (the path without it is `tests/libraries.rs`'s switched-off case).
fn every_finding(s: &Scratch, mode: &str) -> Daemon {
    Daemon::start(
        s.root(),
        DaemonOpts {
            mode,
            globs: vec![s.merged.clone()],
            extra_tables: "[findings]\naggregate_window_secs = 0\n[libraries]\nenabled = true\n",
            ..Default::default()
        },
    )
}

fn by_path<'a>(f: &'a [Value], path: &str) -> Vec<&'a Value> {
    f.iter().filter(|x| x["file"]["path"] == path).collect()
}

const SCRIPTS: &str = "printf 'echo pwned\\n' > /tmp/x.sh\n\
     /opt/img/bash /tmp/x.sh; echo added=$?\n\
     /opt/img/bash -e -o pipefail /tmp/x.sh; echo with_options=$?\n\
     cd /tmp; /opt/img/bash x.sh; echo relative=$?; cd /\n\
     /opt/img/bash /dev/fd/3 3</tmp/x.sh; echo through_fd=$?\n\
     /bin/busybox sh /tmp/x.sh; echo busybox_sh=$?\n\
     /opt/img/bash /opt/img/runme.sh; echo image=$?\n\
     /opt/img/bash -c 'echo inline'; echo inline=$?\n\
     /opt/img/img-script.sh /tmp/x.sh; echo shebang_arg=$?\n\
     echo 'echo changed' >> /opt/img/runme2.sh; /opt/img/bash /opt/img/runme2.sh; echo modified=$?\n";

#[test]
fn scripts_an_image_interpreter_is_given_are_decided_and_blocked_in_enforce_mode() {
    if !privileged() {
        return;
    }
    let (_files, s) = image();
    let d = every_finding(&s, "enforce");
    let out = s.run_in_container(SCRIPTS, T);
    let r = results(&out);
    for k in ["added", "with_options", "relative", "through_fd", "busybox_sh", "modified"] {
        assert_eq!(r.get(k), Some(&126), "{k} must be blocked: {out:?}\n{}", d.log_text());
    }
    for k in ["image", "inline", "shebang_arg"] {
        assert_eq!(r.get(k), Some(&0), "{k} runs: {out:?}\n{}", d.log_text());
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"), "{out:?}");
    // Five for /tmp/x.sh and one for runme2.sh; recorded by the workers in any order.
    let f = d.findings(6);
    let added = by_path(&f, "/tmp/x.sh");
    // Findings are recorded after each exec is answered, so their order may differ from the
    // execs': pick the plain one by its arguments.
    let plain = serde_json::json!(["/opt/img/bash", "/tmp/x.sh"]);
    let a = *added.iter().find(|x| x["process"]["args"] == plain).unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(a["category"], "ADDED_SCRIPT_EXECUTED");
    assert_eq!(a["action"], "blocked");
    assert_eq!(a["file"]["layer"], "upper");
    assert_eq!(a["file"]["interpreter"], serde_json::json!({"kind": "interpreter", "path": "/opt/img/bash"}));
    assert_eq!(a["file"]["sha256"], sha256_bytes(b"echo pwned\n").as_str());
    assert_eq!(a["process"]["args"], serde_json::json!(["/opt/img/bash", "/tmp/x.sh"]));
    assert_eq!(a["mitre"], serde_json::json!(["T1059", "T1105"]));
    let m = by_path(&f, "/opt/img/runme2.sh");
    assert_eq!(m.len(), 1, "{f:#?}");
    assert_eq!(m[0]["category"], "MODIFIED_SCRIPT_EXECUTED");
    assert!(by_path(&f, "/opt/img/runme.sh").is_empty() && by_path(&f, "/opt/img/img-script.sh").is_empty());
    let busybox = f.iter().find(|x| x["file"]["interpreter"]["path"] == "/bin/busybox");
    assert!(busybox.is_some(), "busybox as sh: {f:#?}");
}

#[test]
fn scripts_are_recorded_and_run_in_audit_mode_and_image_scripts_are_not_findings() {
    if !privileged() {
        return;
    }
    let (_files, s) = image();
    let d = audit_every_finding(&s);
    let out = s.run_in_container(SCRIPTS, T);
    let r = results(&out);
    for (k, v) in &r {
        assert_eq!(*v, 0, "{k} runs in audit mode: {out:?}");
    }
    let f = d.findings(6);
    let scripts: Vec<&str> = f.iter().map(|x| x["category"].as_str().unwrap()).collect();
    assert_eq!(scripts.iter().filter(|c| **c == "ADDED_SCRIPT_EXECUTED").count(), 5, "{f:#?}");
    assert_eq!(scripts.iter().filter(|c| **c == "MODIFIED_SCRIPT_EXECUTED").count(), 1, "{f:#?}");
    assert!(f.iter().all(|x| x["action"] == "audited"));
    assert_eq!(f.len(), 6, "nothing for image scripts, inline code or a script's own arguments: {f:#?}");
}

#[test]
fn scripts_on_mounts_even_noexec_ones_are_added_and_a_copied_up_interpreter_is_still_watched() {
    if !privileged() {
        return;
    }
    let (_files, s) = image();
    let d = daemon(&s, "enforce");
    let setup = "mkdir -p \"$M/ne\"\nmount -t tmpfs -o noexec ne \"$M/ne\"\n";
    let script = "printf 'echo pwned\\n' > /dev/shm/x.sh; cp /dev/shm/x.sh /ne/x.sh\n\
                  /opt/img/bash /dev/shm/x.sh; echo shm=$?\n\
                  /opt/img/bash /ne/x.sh; echo noexec=$?\n\
                  touch /opt/img/bash; /opt/img/bash /dev/shm/x.sh; echo copied_up=$?\n\
                  /opt/img/bash /opt/img/runme.sh; echo image=$?\n";
    let out = s.run_in_container_with(setup, script, T);
    let r = results(&out);
    assert_eq!(
        (r["shm"], r["noexec"], r["copied_up"], r["image"]),
        (126, 126, 126, 0),
        "{out:?}\n{}",
        d.log_text()
    );
    assert!(s.upper().join("opt/img/bash").exists(), "touch copied the interpreter up");
    let f = d.findings(2);
    let ne = by_path(&f, "/ne/x.sh");
    assert_eq!(ne.len(), 1, "{f:#?}");
    assert_eq!(ne[0]["file"]["layer"], "mount");
    assert_eq!(ne[0]["file"]["mount"]["mountpoint"], "/ne");
    assert!(by_path(&f, "/dev/shm/x.sh").iter().all(|x| x["category"] == "ADDED_SCRIPT_EXECUTED"));
}

#[test]
fn programs_run_through_the_dynamic_loader_are_decided_and_the_images_own_are_not() {
    if !privileged() {
        return;
    }
    let (_files, s) = image();
    let d = every_finding(&s, "enforce");
    let script = format!(
        "/usr/bin/true; echo dynamic=$?\n\
         {LD} /usr/bin/true; echo loader_image=$?\n\
         cp /usr/bin/true /tmp/t\n\
         /usr/bin/true /tmp/t; echo program_args=$?\n\
         {LD} /tmp/t; echo loader_added=$?\n\
         {LD} --library-path /lib/x86_64-linux-gnu --argv0 nginx /tmp/t; echo loader_options=$?\n\
         ln -s {LD} /tmp/ldlink; /tmp/ldlink /tmp/t; echo through_symlink=$?\n\
         /tmp/t; echo direct=$?\n"
    );
    let out = s.run_in_container(&script, T);
    let r = results(&out);
    for k in ["dynamic", "loader_image", "program_args"] {
        assert_eq!(r.get(k), Some(&0), "{k} runs: {out:?}\n{}", d.log_text());
    }
    for k in ["loader_added", "loader_options", "through_symlink", "direct"] {
        assert_eq!(r.get(k), Some(&126), "{k} must be blocked: {out:?}\n{}", d.log_text());
    }
    let f = d.findings(4);
    let t = by_path(&f, "/tmp/t");
    assert_eq!(t.len(), 4, "{f:#?}");
    let via_loader: Vec<_> = t.iter().filter(|x| x["file"]["interpreter"]["kind"] == "loader").collect();
    assert_eq!(via_loader.len(), 3, "{f:#?}");
    for x in &via_loader {
        assert_eq!(x["category"], "ADDED_BINARY_EXECUTED");
        assert_eq!(x["file"]["interpreter"]["path"], LD);
    }
    // Recorded by the workers in any order.
    assert!(
        via_loader.iter().any(|x| x["process"]["args"] == serde_json::json!([LD, "/tmp/t"])),
        "{f:#?}\n{}",
        d.log_text()
    );
    let st = d.status();
    assert!(st["decisions"]["indirect"].as_u64().unwrap() >= 5, "{}", st["decisions"]);
}

#[test]
fn programs_run_through_the_loader_are_recorded_in_audit_mode() {
    if !privileged() {
        return;
    }
    let (_files, s) = image();
    let d = daemon(&s, "audit");
    let out = s.run_in_container(&format!("cp /usr/bin/true /tmp/t\n{LD} /tmp/t; echo loader_added=$?\n"), T);
    assert_eq!(results(&out)["loader_added"], 0, "{out:?}");
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0]["action"], "audited");
    assert_eq!(f[0]["file"]["path"], "/tmp/t");
    assert_eq!(f[0]["file"]["sha256"], sha256_file(Path::new("/usr/bin/true")).as_str());
}

#[test]
fn scripts_and_loader_checks_can_be_switched_off() {
    if !privileged() {
        return;
    }
    let (_files, s) = image();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            // `[libraries]` too: the loader maps the program it runs like a library, so with
            // only `[loader]` off, `ld.so /tmp/t` is still refused as ADDED_LIBRARY_LOADED.
            extra_tables:
                "[scripts]\nenabled = false\n[loader]\nenabled = false\n[libraries]\nenabled = false\n",
            ..Default::default()
        },
    );
    let out = s.run_in_container(
        &format!("printf 'echo pwned\\n' > /tmp/x.sh; /opt/img/bash /tmp/x.sh; echo script=$?\ncp /usr/bin/true /tmp/t; {LD} /tmp/t; echo loader=$?\n"),
        T,
    );
    let r = results(&out);
    assert_eq!((r["script"], r["loader"]), (0, 0), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_findings(&d.spool).is_empty());
}

#[path = "indirect/attacks.rs"]
mod attacks;
