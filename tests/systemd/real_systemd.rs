//! The shipped package and unit under a real systemd as PID 1: a minimal Debian booted with
//! `systemd-nspawn --boot` (fanotify allowed through nspawn's own seccomp filter, as a host
//! that filters system calls must allow it), the `.deb` installed with dpkg, containers made
//! inside the guest from a real Debian image. What an operator meets and the other suites do
//! not: the unit's sandbox (its seccomp filter, capability set, read-only /proc/sys), `READY=`,
//! the watchdog, `systemctl reload` and `stop`. Every guest is stopped by the pid the test
//! started; one guest at a time (each boots a whole system).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::guest::{deb_package, debian_image, Boot, Guest};
use crate::common::runtimes::tools_present;
use crate::common::*;
use serde_json::Value;

static ONE_GUEST: Mutex<()> = Mutex::new(());

const T: Duration = Duration::from_secs(120);

fn ready() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !privileged() {
        return None;
    }
    assert!(
        tools_present(&["systemd-nspawn", "debootstrap", "dpkg", "cargo-deb"]),
        "scripts/test-deps.sh installs systemd-container, debootstrap and cargo-deb"
    );
    Some(ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Boots a guest with the package bound at `/deb` and installs it (installing starts it).
fn guest_with_package(allow_fanotify: bool) -> Guest {
    let deb = deb_package();
    let g = Guest::boot(
        &debian_image(),
        Boot { allow_fanotify, binds: vec![(deb.parent().unwrap().to_path_buf(), "/deb")] },
    );
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    // A refused start makes dpkg report the postinst's failure: the unit's state says the rest.
    g.sh(&format!("dpkg -i /deb/{name}"), T);
    g
}

/// Waits until the unit is active (running) with a main process.
fn wait_active(g: &Guest) -> i32 {
    let start = Instant::now();
    loop {
        let (active, sub) = (g.unit("ActiveState"), g.unit("SubState"));
        let pid: i32 = g.unit("MainPID").parse().unwrap_or(0);
        if active == "active" && sub == "running" && pid > 0 {
            return pid;
        }
        assert!(start.elapsed() < T, "driftgate not active: {active}/{sub}\n{}", g.journal());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The shipped configuration with `mode`, the guest's hand-made containers and `extra`.
fn configure(g: &Guest, mode: &str, extra: &str) {
    g.ok(&format!(
        "set -e; f=/etc/driftgate/driftgate.toml\n\
         [ -e $f.shipped ] || cp $f $f.shipped; cp $f.shipped $f\n\
         sed -i 's/^mode = .*/mode = \"{mode}\"/; s|^overlay_globs = .*|overlay_globs = [\"/run/dgc/*/merged\"]|' $f\n\
         cat >> $f <<'DGEOF'\n{extra}\nDGEOF\n"
    ));
}

/// Makes container `name` in the guest (an overlay on the real Debian image) and waits until
/// the daemon watches it.
fn make_container(g: &Guest, name: &str) {
    g.ok(&format!(
        "set -e; C=/run/dgc/{name}; mkdir -p $C/upper $C/work $C/merged /run/dgc/vol\n\
         cp /usr/bin/ls /run/dgc/vol/tool\n\
         mount -t overlay overlay -o lowerdir=/images/debian,upperdir=$C/upper,workdir=$C/work $C/merged"
    ));
    let start = Instant::now();
    while !status(g)["containers"].to_string().contains(&format!("/run/dgc/{name}/merged")) {
        assert!(start.elapsed() < Duration::from_secs(30), "not watched: {}", status(g));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `workload` (bash, inline) in container `name`: new mount and PID namespaces, the
/// mounts a runtime makes (/proc, a tmpfs /dev with /dev/shm, a volume at /vol), pivot_root.
fn run_in(g: &Guest, name: &str, workload: &str) -> HashMap<String, i32> {
    let enter = format!(
        "set -e; C=/run/dgc/{name}; M=$C/merged\n\
         cat > $C/run.sh <<'DGEOF'\n{workload}\nDGEOF\n\
         exec unshare --mount --pid --fork --propagation private /bin/sh -c '\n\
         set -e; M={m}\n\
         mount --bind $M $M; mount -t proc proc $M/proc\n\
         mount -t tmpfs -o mode=755 dev $M/dev; touch $M/dev/null; mount --bind /dev/null $M/dev/null\n\
         ln -s /proc/self/fd $M/dev/fd; mkdir $M/dev/shm; mount -t tmpfs -o mode=1777 shm $M/dev/shm\n\
         mkdir -p $M/vol $M/.dgtest; mount --bind /run/dgc/vol $M/vol; cp {c}/run.sh $M/.dgtest/run.sh\n\
         cd $M; mkdir -p .oldroot; pivot_root . .oldroot\n\
         exec /bin/sh -c \"umount -l /.oldroot; rmdir /.oldroot; cd /; exec /bin/bash -c \\\"\\$(cat /.dgtest/run.sh)\\\"\"'",
        m = format_args!("/run/dgc/{name}/merged"),
        c = format_args!("/run/dgc/{name}"),
    );
    let out = g.sh(&enter, T);
    let r = results(&out);
    assert!(!r.is_empty(), "the workload ran: {out:?}");
    r
}

fn status(g: &Guest) -> Value {
    serde_json::from_str(&g.ok("driftgate status --json")).unwrap()
}

fn findings(g: &Guest) -> Vec<Value> {
    g.ok("driftgate findings --json").lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every exec path of the README's coverage table, as an attacker in a container of a real
/// Debian image tries it; and what the image itself runs.
const EVERY_PATH: &str = "cp /usr/bin/ls /tmp/added; /tmp/added >/dev/null; echo added=$?\n\
printf '#!/bin/sh\\necho pwned\\n' > /tmp/shebang; chmod +x /tmp/shebang; /tmp/shebang; echo shebang=$?\n\
printf 'echo pwned\\n' > /tmp/x.sh; sh /tmp/x.sh; echo sh_script=$?\n\
bash /tmp/x.sh; echo bash_script=$?\n\
printf 'print(\"pwned\")\\n' > /tmp/x.py; python3 /tmp/x.py; echo python_script=$?\n\
printf 'print \"pwned\\\\n\";\\n' > /tmp/x.pl; perl /tmp/x.pl; echo perl_script=$?\n\
/lib64/ld-linux-x86-64.so.2 /tmp/added >/dev/null; echo loader=$?\n\
cp /usr/bin/ls /dev/ls; /dev/ls >/dev/null; echo dev_tmpfs=$?\n\
cp /usr/bin/ls /dev/shm/ls; /dev/shm/ls >/dev/null; echo dev_shm=$?\n\
/vol/tool >/dev/null; echo volume=$?\n\
mkdir -p /mnt/late; mount -t tmpfs late /mnt/late; sleep 1; cp /usr/bin/ls /mnt/late/ls; /mnt/late/ls >/dev/null; echo later_mount=$?\n\
python3 -c 'import os, sys\nfd = os.memfd_create(\"x\", 0)\nos.write(fd, open(\"/usr/bin/true\", \"rb\").read())\ntry:\n    os.execv(\"/proc/self/fd/%d\" % fd, [\"x\"])\nexcept OSError:\n    sys.exit(126)'; echo memfd=$?\n\
/usr/bin/ls / >/dev/null; echo image=$?\n\
python3 -c 'import json'; echo image_python=$?\n\
perl -e 1; echo image_perl=$?\n\
dpkg-query -W bash >/dev/null; echo image_dpkg=$?\n\
touch /usr/bin/ls; /usr/bin/ls >/dev/null; echo touched_copy_up=$?\n";

const REFUSED: [&str; 12] = [
    "added",
    "shebang",
    "sh_script",
    "bash_script",
    "python_script",
    "perl_script",
    "loader",
    "dev_tmpfs",
    "dev_shm",
    "volume",
    "later_mount",
    "memfd",
];
const ALLOWED: [&str; 5] = ["image", "image_python", "image_perl", "image_dpkg", "touched_copy_up"];

fn every_path_refused(g: &Guest, name: &str) {
    make_container(g, name);
    let r = run_in(g, name, EVERY_PATH);
    for k in REFUSED {
        assert_eq!(r.get(k), Some(&126), "{k} must be refused: {r:?}\n{}", g.journal());
    }
    for k in ALLOWED {
        assert_eq!(r.get(k), Some(&0), "{k} runs: {r:?}\n{}", g.journal());
    }
}

#[test]
fn the_package_runs_under_systemd_as_pid_1_and_its_unit_refuses_every_exec_path_in_enforce_mode() {
    let Some(_one) = ready() else { return };
    let g = guest_with_package(true);
    // Installed, enabled, started; READY=1 makes it active (running), STATUS= says how it is.
    let pid = wait_active(&g);
    assert_eq!(g.unit("Type"), "notify");
    assert!(g.unit("StatusText").contains("mode=audit"), "{}", g.unit("StatusText"));
    let st = status(&g);
    assert_eq!(st["health"]["state"], "ok", "nothing the unit needs is refused: {:#}", st["health"]);
    let refused: Vec<&Value> =
        st["health"]["syscalls"].as_array().unwrap().iter().filter(|c| c["state"] != "ok").collect();
    assert!(refused.is_empty(), "under the shipped unit: {refused:#?}");

    // Enforce mode through `systemctl reload` (it waits for the daemon's answer).
    configure(&g, "enforce", "");
    g.ok("systemctl reload driftgate");
    assert_eq!(status(&g)["mode"], "enforce");
    every_path_refused(&g, "c1");
    let f = findings(&g);
    let paths: Vec<&str> = f.iter().filter_map(|x| x["file"]["path"].as_str()).collect();
    for p in [
        "/tmp/added",
        "/tmp/x.sh",
        "/tmp/x.py",
        "/tmp/x.pl",
        "/dev/ls",
        "/dev/shm/ls",
        "/vol/tool",
        "/mnt/late/ls",
    ] {
        assert!(paths.contains(&p), "a finding for {p}: {paths:?}");
    }
    assert!(f.iter().all(|x| x["action"] == "blocked" && x["mode"] == "enforce"), "{f:#?}");
    assert!(
        !f.iter().any(|x| x["file"]["path"] == "/usr/bin/ls"),
        "a copy-up with the image's bytes is no finding"
    );
    assert_eq!(status(&g)["health"]["state"], "ok", "{:#}", status(&g)["health"]);
    assert!(
        g.unit("StatusText").starts_with("mode=enforce")
            || wait_until(Duration::from_secs(8), || g.unit("StatusText").starts_with("mode=enforce"))
    );

    // A changed rule applies on reload; a bad file fails the reload visibly and changes nothing.
    configure(&g, "enforce", "[[policy.rules]]\nname = \"tools\"\naction = \"allow\"\nmounts = [\"/vol\"]\n");
    g.ok("systemctl reload driftgate");
    let r = run_in(&g, "c1", "/vol/tool >/dev/null; echo volume=$?\n");
    assert_eq!(r["volume"], 0, "the rule allows the volume now");
    g.ok("echo 'bogus_key = 1' >> /etc/driftgate/driftgate.toml");
    let out = g.sh("systemctl reload driftgate", T);
    assert!(!out.status.success(), "a bad configuration fails the reload: {out:?}");
    assert!(g.journal().contains("bogus_key"), "the reason is in the journal: {}", g.journal());
    assert_eq!(g.unit("MainPID").parse::<i32>().unwrap(), pid, "the daemon kept running");
    assert_eq!(g.unit("ActiveState"), "active");
    let r = run_in(&g, "c1", "cp /usr/bin/ls /tmp/again; /tmp/again >/dev/null; echo added=$?\n");
    assert_eq!(r["added"], 126, "still enforcing, with the running configuration");

    // Libraries ([libraries] is read at start-up): a shared object that is not the image's
    // is refused at its load, and the program runs without it.
    configure(&g, "enforce", "");
    g.ok("sed -i '/^\\[libraries\\]/,/^\\[/ s/^enabled = .*/enabled = true/' /etc/driftgate/driftgate.toml");
    let out = g.sh("systemctl restart driftgate", T);
    assert!(out.status.success(), "{}", g.journal());
    wait_active(&g);
    make_container(&g, "libs");
    let r = run_in(
        &g,
        "libs",
        "cp /usr/lib/x86_64-linux-gnu/libcap.so.2 /tmp/x.so\n\
         LD_PRELOAD=/tmp/x.so /usr/bin/ls / 2>/tmp/err >/dev/null; echo preload=$?\n\
         grep -q 'cannot be preloaded' /tmp/err; echo grep=$?\n\
         cat /tmp/err\n",
    );
    assert_eq!((r["preload"], r["grep"]), (0, 0), "the loader refused it and ls ran: {r:?}\n{}", g.journal());
    let f = findings(&g);
    let lib = f.iter().find(|x| x["file"]["path"] == "/tmp/x.so").unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(lib["category"], "ADDED_LIBRARY_LOADED");
    assert_eq!(lib["action"], "blocked");

    // `systemctl stop` is quick: every exec is held while the daemon runs, none while it stops.
    let t = Instant::now();
    g.ok("systemctl stop driftgate");
    let took = t.elapsed();
    println!("systemctl stop driftgate: {took:?}");
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    assert_eq!(g.unit("ActiveState"), "inactive");
}

#[test]
fn a_stopped_daemon_is_killed_and_restarted_and_protection_comes_back() {
    let Some(_one) = ready() else { return };
    let g = guest_with_package(true);
    configure(&g, "enforce", "");
    g.ok("systemctl restart driftgate");
    let pid = wait_active(&g);
    g.ok(&format!("kill -STOP {pid}"));
    let t = Instant::now();
    let start = Instant::now();
    let new_pid = loop {
        let now: i32 = g.unit("MainPID").parse().unwrap_or(0);
        if now > 0 && now != pid && g.unit("ActiveState") == "active" {
            break now;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "not restarted: {}", g.journal());
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("SIGSTOP: a new daemon ({new_pid}) after {:?}", t.elapsed());
    assert!(g.unit("NRestarts").parse::<u32>().unwrap() >= 1);
    every_path_refused(&g, "c2");
}

#[test]
fn with_restrict_suid_sgid_every_exec_path_is_still_refused() {
    let Some(_one) = ready() else { return };
    let g = guest_with_package(true);
    configure(&g, "enforce", "");
    // systemd's RestrictSUIDSGID=yes refuses openat2 whole: lookups take the component walk.
    g.ok("mkdir -p /etc/systemd/system/driftgate.service.d\n\
          printf '[Service]\\nRestrictSUIDSGID=yes\\n' > /etc/systemd/system/driftgate.service.d/suid.conf\n\
          systemctl daemon-reload; systemctl restart driftgate");
    wait_active(&g);
    let st = status(&g);
    let openat2 = st["health"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call"] == "openat2")
        .cloned()
        .unwrap();
    assert!(openat2["state"].as_str().unwrap().contains("seccomp"), "{openat2}");
    assert_eq!(st["health"]["state"], "ok", "an equivalent check: {:#}", st["health"]);
    every_path_refused(&g, "c3");
}

#[test]
fn a_service_manager_that_refuses_fanotify_stops_the_unit_with_78_and_the_reason() {
    let Some(_one) = ready() else { return };
    // nspawn's own seccomp filter refuses fanotify_init (EPERM) unless it is allowed.
    let g = guest_with_package(false);
    let start = Instant::now();
    while g.unit("ActiveState") != "failed" {
        assert!(start.elapsed() < Duration::from_secs(30), "{} {}", g.unit("ActiveState"), g.journal());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(g.unit("ExecMainStatus"), "78");
    assert_eq!(g.unit("NRestarts"), "0", "not restarted forever");
    let j = g.journal();
    assert!(j.contains("fanotify_init") && j.contains("seccomp filter"), "{j}");
}

/// The fleet path where it meets the unit: findings to an OTLP receiver (on the host, over
/// TLS against a CA file in /etc/driftgate) with the cluster's name and a header token taken
/// from an EnvironmentFile, the OCSF file in the unit's LogsDirectory, arguments redacted. The
/// shipped unit allows no IP traffic: until the packaged webhook.conf drop-in is installed,
/// every send fails, counted and logged, and the findings stay in the spool.
#[test]
fn under_the_unit_findings_reach_a_collector_over_tls_once_the_drop_in_allows_it() {
    let Some(_one) = ready() else { return };
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(pki_dir.path(), "collector");
    let rx = crate::common::otlp::Receiver::start(pki_dir.path(), Some((&cert, &key)));
    let g = guest_with_package(true);
    wait_active(&g);
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    configure(
        &g,
        "audit",
        &format!(
            "[export.otlp]\nendpoint = \"https://localhost:{}\"\nca_file = \"/etc/driftgate/collector-ca.pem\"\n\
             [export.otlp.headers]\nx-tenant = \"${{OTLP_TENANT}}\"\n",
            rx.grpc
        ),
    );
    g.ok(&format!(
        "set -e; f=/etc/driftgate/driftgate.toml\n\
         sed -i 's|^\\[export\\]$|[export]\\nocsf_file = \"/var/log/driftgate/findings.ocsf.jsonl\"|' $f\n\
         sed -i 's|^aggregate_window_secs = .*|aggregate_window_secs = 0|' $f\n\
         cat > /etc/driftgate/collector-ca.pem <<'DGEOF'\n{ca_pem}DGEOF\n\
         [ -e /etc/hosts ] || printf '127.0.0.1 localhost\\n::1 localhost ip6-localhost\\n' > /etc/hosts  # as the installer writes it\n\
         umask 077; printf 'CLUSTER_NAME=prod-eu\\nOTLP_TENANT=team-a\\n' > /etc/driftgate/fleet.env\n\
         mkdir -p /etc/systemd/system/driftgate.service.d\n\
         printf '[Service]\\nEnvironmentFile=/etc/driftgate/fleet.env\\n' > /etc/systemd/system/driftgate.service.d/env.conf\n\
         systemctl daemon-reload"
    ));
    let out = g.sh("systemctl restart driftgate", T);
    assert!(out.status.success(), "{}", g.journal());
    wait_active(&g);
    make_container(&g, "fleet");
    let drift = "cp /usr/bin/true /tmp/agent; /tmp/agent --password=hunter2 --token abc; echo added=$?\n";
    assert_eq!(run_in(&g, "fleet", drift)["added"], 0, "audit mode");
    // The unit allows no IP traffic: every try fails, is counted and logged.
    assert!(
        wait_until(Duration::from_secs(30), || status(&g)["export"]["otlp_failures"].as_u64() > Some(0)),
        "{:#}\n{}",
        status(&g)["export"],
        g.journal()
    );
    assert_eq!(status(&g)["export"]["otlp_sent"], 0);
    assert!(g.journal().contains("otlp"), "{}", g.journal());
    assert!(rx.received().is_empty());

    // The packaged drop-in lets it reach this node's loopback.
    g.ok("cp /usr/share/doc/driftgate/examples/webhook.conf /etc/systemd/system/driftgate.service.d/\n\
          systemctl daemon-reload; systemctl restart driftgate");
    wait_active(&g);
    make_container(&g, "fleet2");
    assert_eq!(run_in(&g, "fleet2", drift)["added"], 0);
    assert!(
        wait_until(Duration::from_secs(30), || !rx.received().is_empty()),
        "nothing received: {:#}\n{}",
        status(&g)["export"],
        g.journal()
    );
    let req = rx.received().remove(0);
    assert_eq!(req["_via"], "grpc \"team-a\"", "the header from the EnvironmentFile");
    let rl = &req["resourceLogs"][0];
    let res = &rl["resource"]["attributes"];
    assert_eq!(crate::common::otlp::attr(res, "k8s.cluster.name")["stringValue"], "prod-eu");
    let rec = &rl["scopeLogs"][0]["logRecords"][0];
    assert_eq!(crate::common::otlp::attr(&rec["attributes"], "file.path")["stringValue"], "/tmp/agent");
    let args = crate::common::otlp::attr(&rec["attributes"], "process.command_args").to_string();
    assert!(!args.contains("hunter2") && !args.contains("abc"), "redacted before any sink: {args}");
    assert_eq!(status(&g)["export"]["otlp_sent"], 1);

    // The OCSF file in the unit's LogsDirectory: valid, the cluster named, redacted.
    let lines = g.ok("cat /var/log/driftgate/findings.ocsf.jsonl");
    let events: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2, "both findings, before and after the drop-in: {lines}");
    for e in &events {
        assert_eq!(ocsf_errors(e), Vec::<String>::new(), "{e:#}");
        assert!(e["resources"].to_string().contains("prod-eu"), "{e:#}");
        assert!(!e.to_string().contains("hunter2"), "{e:#}");
    }
    let f = findings(&g);
    assert_eq!(f.len(), 2, "the spool has both: {f:#?}");
    assert!(f.iter().all(|x| x["cluster"] == "prod-eu"));
}
