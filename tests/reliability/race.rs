use super::*;

/// `exec_race` output: good=N bad=N txtbsy=N denied=N other=N.
fn race_counts(out: &std::process::Output) -> std::collections::HashMap<String, u64> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("good=")).unwrap_or_else(|| panic!("no result: {out:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// A container whose image has `/opt/img/victim` (a program that exits 0) and the race tool.
fn race_container() -> (tempfile::TempDir, Scratch) {
    let tools = tempfile::tempdir().unwrap();
    let tool = static_tool(tools.path(), "exec_race");
    let victim = tools.path().join("victim");
    std::fs::write(&victim, driftgate_bench::elf::exit0(0)).unwrap();
    let s = Scratch::with_image_files(&[("/opt/img/exec_race", &tool), ("/opt/img/victim", &victim)]);
    (tools, s)
}

/// Runs the race in the container: a writer flips the program's exit-status byte between the
/// image's (0) and a modified one (5) while the program is executed `n` times.
fn race(s: &Scratch, n: u32, pause_us: u32) -> std::collections::HashMap<String, u64> {
    let off = driftgate_bench::elf::status_offset();
    let out =
        s.run_in_container(&format!("/opt/img/exec_race /opt/img/victim {off} 0 5 {n} {pause_us}\n"), T);
    assert!(out.status.success(), "{out:?}");
    race_counts(&out)
}

#[test]
fn a_writer_racing_an_exec_never_gets_modified_bytes_run() {
    if !privileged() {
        return;
    }
    let (_tools, s) = race_container();
    let n: u32 = std::env::var("DRIFTGATE_RACE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    // Control: with writers not held off, the race is won (the test can fail).
    let d = Daemon::start(
        &s.root().join("control"),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_daemon: "writer_hold_ms = 0\n",
            ..Default::default()
        },
    );
    let control = race(&s, n, 10);
    drop(d);
    assert!(control["bad"] > 0, "the race is not reproduced without the hold: {control:?}");

    let d = daemon(&s, "enforce");
    for pause in [0, 10, 50, 200] {
        let r = race(&s, n, pause);
        println!("race, writer pause {pause} us: {r:?}");
        assert_eq!(r["bad"], 0, "modified bytes ran (writer pause {pause} us): {r:?}\n{}", d.log_text());
        assert_eq!(r["other"], 0, "{r:?}");
        assert_eq!(r["good"] + r["txtbsy"] + r["denied"], n as u64);
        assert!(r["denied"] > 0, "the modified program was seen and blocked: {r:?}");
    }
    let st = d.status();
    let w = &st["writer_hold"];
    assert!(w["kept"].as_u64() > Some(0) && w["unsettled"].as_u64() > Some(0), "{w}");
    // Every exec was accounted for: blocked ones have findings (some aggregated).
    assert!(!d.findings(1).is_empty());
}

#[test]
fn a_held_file_delays_a_writer_by_the_hold_and_no_longer() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_daemon: "writer_hold_ms = 300\n",
            ..Default::default()
        },
    );
    // Copy the image's program up, run it, and time a write to it right after.
    let out = s.run_in_container(
        "cp /opt/img/true /tmp/t0; touch /opt/img/true; /opt/img/true; echo ran=$?\n\
         a=$(cat /proc/uptime); echo x >> /tmp/unrelated; b=$(cat /proc/uptime); echo free=\"$a $b\"\n\
         a=$(cat /proc/uptime); printf '' >> /opt/img/true; b=$(cat /proc/uptime); echo held=\"$a $b\"\n\
         /opt/img/true; echo again=$?\n",
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ran=0"), "{out:?}\n{}", d.log_text());
    let span = |key: &str| -> f64 {
        let l = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}: {out:?}"));
        let v: Vec<f64> = l[key.len()..].split_whitespace().map(|x| x.parse().unwrap()).collect();
        v[2] - v[0]
    };
    assert!(span("held=") >= 0.15, "the writer waited for the hold: {text}");
    assert!(span("held=") < 2.0, "and not much longer: {text}");
    assert!(span("free=") < 0.15, "{text}");
    assert_eq!(d.status()["writer_hold"]["hold_ms"], 300);
}
