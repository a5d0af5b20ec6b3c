//! Known-bad hashes on the hot path: real overlay containers, real daemon (root).

use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

fn with_iocs(s: &Scratch, mode: &str, feed: &std::path::Path, block: bool) -> Daemon {
    Daemon::start(
        s.root(),
        DaemonOpts {
            mode,
            globs: vec![s.merged.clone()],
            // These tests are about files in the writable layer, and their IoC is busybox, which
            // is also the image's shell: with the image indexed, the shell itself would match.
            extra_tables: &format!(
                "[ioc]\npaths = [{:?}]\nblock = {block}\n[index]\nenabled = false\n",
                feed.display().to_string()
            ),
            ..Default::default()
        },
    )
}

#[test]
fn an_added_known_bad_binary_is_critical_and_audit_blocks_it_only_with_block() {
    if !privileged() {
        return;
    }
    let busybox = sha256_file(std::path::Path::new(BUSYBOX));
    for (block, want_rc, action) in [(false, 0, "audited"), (true, 126, "blocked")] {
        let s = Scratch::new();
        let feed = s.root().join("feed.txt");
        std::fs::write(&feed, format!("{busybox} Test.BusyBox\n")).unwrap();
        let d = with_iocs(&s, "audit", &feed, block);
        assert_eq!(d.status()["ioc_entries"], 1);
        let out =
            s.run_in_container("mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo rc=$?\n", T);
        assert_eq!(results(&out)["rc"], want_rc, "block={block}: {out:?}");
        let f = d.findings(1);
        assert_eq!(f[0]["category"], "ADDED_MALICIOUS_BINARY_EXECUTED");
        assert_eq!(f[0]["severity"], "CRITICAL");
        assert_eq!(f[0]["action"], action);
        assert_eq!(f[0]["mode"], "audit");
        assert_eq!(f[0]["ioc"]["name"], "Test.BusyBox");
        assert_eq!(f[0]["ioc"]["source"], feed.display().to_string());
    }
}

#[test]
fn an_ioc_file_edited_while_the_daemon_runs_takes_effect_without_restart() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let feed = s.root().join("feed.txt");
    std::fs::write(&feed, format!("{}\n", "ab".repeat(32))).unwrap();
    let d = with_iocs(&s, "audit", &feed, true);
    let out = s.run_in_container("mkdir /tmp/a; cp /opt/img/true /tmp/a/true; /tmp/a/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 0, "not known yet: audited only");
    let busybox = sha256_file(std::path::Path::new(BUSYBOX));
    std::fs::write(&feed, format!("{}\n{busybox} added-later\n", "ab".repeat(32))).unwrap();
    let start = std::time::Instant::now();
    while d.status()["ioc_entries"] != 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same file again: the cached decision is re-checked against the new set.
    let out = s.run_in_container("/tmp/a/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 126, "known now, and block = true: {out:?}");
    // A file with no valid line: a failed reload keeps the previous set and says why.
    std::fs::write(&feed, "garbage\n").unwrap();
    assert!(d.wait_log("keeping the previous set", Duration::from_secs(10)), "{}", d.log_text());
    assert_eq!(d.status()["ioc_entries"], 2);
}

#[test]
fn a_copied_up_image_binary_that_is_known_bad_is_builtin_malicious() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let feed = s.root().join("feed.txt");
    std::fs::write(&feed, format!("{} image-ships-it\n", sha256_file(std::path::Path::new(BUSYBOX))))
        .unwrap();
    let d = with_iocs(&s, "enforce", &feed, false);
    let out = s.run_in_container("chmod 700 /opt/img/true; /opt/img/true; echo rc=$?\n", T);
    assert_eq!(results(&out)["rc"], 126, "{out:?}");
    let f = d.findings(1);
    assert_eq!(f[0]["category"], "BUILTIN_MALICIOUS_BINARY_EXECUTED");
    assert_eq!(f[0]["severity"], "CRITICAL");
    assert_eq!(f[0]["file"]["path"], "/opt/img/true");
}

#[test]
fn policy_rules_scope_actions_by_container_and_path_and_findings_name_the_rule() {
    if !privileged() {
        return;
    }
    let a = Scratch::new();
    let b = Scratch::new();
    let d = Daemon::start(
        a.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![a.merged.clone(), b.merged.clone()],
            extra_tables: &format!(
                "[[policy.rules]]\nname = \"jit-cache\"\naction = \"allow\"\npaths = [\"/var/jit/*\"]\n\
                 [[policy.rules]]\nname = \"hardened\"\naction = \"enforce\"\ncontainers = [{:?}]\n",
                a.merged.display().to_string()
            ),
            ..Default::default()
        },
    );
    let script = "mkdir -p /tmp/a /var/jit; cp /opt/img/true /tmp/a/true; cp /opt/img/true /var/jit/true\n\
                  /tmp/a/true; echo added=$?\n/var/jit/true; echo jit=$?\n";
    let ra = results(&a.run_in_container(script, T));
    let rb = results(&b.run_in_container(script, T));
    assert_eq!((ra["added"], ra["jit"]), (126, 0), "container a: enforced, but the JIT path is allowed");
    assert_eq!((rb["added"], rb["jit"]), (0, 0), "container b: audit (global)");
    let f = d.findings(2);
    assert_eq!(f.len(), 2, "allowed execs leave no finding: {f:?}");
    let by: std::collections::HashMap<String, (String, String)> = f
        .iter()
        .map(|f| {
            (
                f["container"]["id"].as_str().unwrap().to_owned(),
                (f["action"].as_str().unwrap().to_owned(), f["rule"].as_str().unwrap().to_owned()),
            )
        })
        .collect();
    assert_eq!(by[&a.merged.display().to_string()], ("blocked".into(), "hardened".into()));
    assert_eq!(by[&b.merged.display().to_string()], ("audited".into(), "global".into()));
}
