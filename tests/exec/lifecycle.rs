//! The daemon's life cycle with real containers: marking new containers before their first
//! exec, forgetting gone ones, stopping on SIGTERM/SIGINT, SIGKILL leaving nothing hung.

use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn a_new_container_is_marked_before_its_first_exec() {
    if !privileged() {
        return;
    }
    let mut s = Scratch::new();
    s.umount();
    let d = daemon(&s, "enforce");
    assert!(d.marked_devs().is_empty());
    std::fs::copy(BUSYBOX, s.upper().join("added")).unwrap();
    s.mount();
    // Exec right after the mount, from inside the new container (after a pause that stands in
    // for the runtime's own start-up work; see the mountinfo test).
    let out = s.run_in_container("sleep 0.05\n/added true; echo first=$?\n", T);
    assert_eq!(results(&out)["first"], 126, "{out:?}\n{}", d.log_text());
    assert_eq!(d.marked_devs(), vec![s.dev()]);
}

#[test]
fn a_container_that_goes_away_is_forgotten() {
    if !privileged() {
        return;
    }
    let mut s = Scratch::new();
    let d = daemon(&s, "enforce");
    assert!(d.wait_log("watching container", Duration::from_secs(5)));
    s.umount();
    assert!(d.wait_log("forgotten", Duration::from_secs(10)), "{}", d.log_text());
    assert!(d.marked_devs().is_empty());
}

#[test]
fn sigkill_during_an_exec_loop_leaves_nothing_hung() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    // Every exec is its own finding here (no aggregation), so progress is visible in the spool.
    let mut d = audit_every_finding(&s);
    let (root, merged) = (s.root().to_path_buf(), s.merged.clone());
    let spool = d.spool.clone();
    let runner = std::thread::spawn(move || {
        // Both the fast path (image) and the slow path (added) are in flight when it dies.
        let script = "mkdir /tmp/x; cp /opt/img/true /tmp/x/true\ni=0\nwhile [ $i -lt 1500 ]; do /opt/img/true; /tmp/x/true; i=$((i+1)); done\necho loop=0\n";
        run_in_container(&root, &merged, script, Duration::from_secs(120))
    });
    // Wait until the daemon is deciding execs of the loop, then kill it mid-loop.
    let start = std::time::Instant::now();
    while read_findings(&spool).len() < 20 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill();
    let before = read_findings(&spool).len();
    assert!((20..1500).contains(&before), "killed mid-loop after {before} findings");
    let out = runner.join().unwrap();
    assert_eq!(results(&out).get("loop"), Some(&0), "the loop finished after the daemon died: {out:?}");
}

#[test]
fn sigterm_stops_promptly_and_findings_survive_a_restart() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let mut d = daemon(&s, "enforce");
    let out = s.run_in_container("cp /opt/img/true /tmp/true\n/tmp/true; echo a=$?\n", T);
    assert_eq!(results(&out)["a"], 126);
    assert_eq!(d.findings(1).len(), 1);
    let start = std::time::Instant::now();
    assert_eq!(d.terminate(Duration::from_secs(5)), Some(0));
    assert!(start.elapsed() < Duration::from_secs(2), "stopped in {:?}", start.elapsed());
    // After a stop nothing is blocked any more.
    let out = s.run_in_container("/tmp/true; echo b=$?\n", T);
    assert_eq!(results(&out)["b"], 0);
    let d2 = Daemon::start_with_config(&d.config, &d.spool);
    let out = s.run_in_container("/tmp/true; echo c=$?\n", T);
    assert_eq!(results(&out)["c"], 126);
    let f = d2.findings(2);
    assert_eq!(f.len(), 2, "the first run's finding is still there: {f:?}");
}

#[test]
fn sigint_stops_the_daemon_too() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let mut d = daemon(&s, "enforce");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), nix::sys::signal::Signal::SIGINT);
    let start = std::time::Instant::now();
    let mut code = None;
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(st)) = d.child.try_wait() {
            code = st.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(code, Some(0));
}
