//! Every exec path with real runtimes (containerd + runc, Docker, Podman): a `-v` volume, an
//! exec-able tmpfs, `/dev/shm`, a script handed to the image's shell, a program run through
//! the image's dynamic loader, and fileless execution. Each runtime runs the same workload in
//! enforce mode, then in audit mode after a live reload; the image's own programs, script and
//! loader use run without a finding throughout.

use std::path::Path;
use std::process::Output;

use crate::common::runtimes::*;
use crate::common::*;
use serde_json::Value;

/// Prints `name=rc` for each path; `shm_noexec=1` when the runtime mounts /dev/shm noexec.
const WORKLOAD: &str =
    "grep -q ' /dev/shm .*noexec' /proc/self/mountinfo && echo shm_noexec=1 || echo shm_noexec=0\n\
    cp /opt/true /scratch/true; /scratch/true; echo tmpfs=$?\n\
    cp /opt/true /dev/shm/true; /dev/shm/true; echo shm=$?\n\
    /vol/true; echo vol=$?\n\
    printf 'echo pwned\\n' > /tmp/x.sh; /opt/bash /tmp/x.sh; echo script=$?\n\
    cp /opt/dyntrue /tmp/t; /lib64/ld-linux-x86-64.so.2 /tmp/t; echo loader=$?\n\
    /opt/memfd_exec /bin/busybox sleep 0.3; echo memfd=$?\n\
    /opt/true; echo image=$?\n\
    /opt/dyntrue; echo image_dynamic=$?\n\
    /opt/bash /opt/run.sh; echo image_script=$?\n\
    /lib64/ld-linux-x86-64.so.2 /opt/dyntrue; echo image_loader=$?\n";

/// A host directory with an added binary, for `-v`.
fn volume(dir: &Path) -> std::path::PathBuf {
    let v = dir.join("vol");
    std::fs::create_dir_all(&v).unwrap();
    std::fs::copy(BUSYBOX, v.join("true")).unwrap();
    v
}

/// Checks one run of [`WORKLOAD`] in `mode` and returns the findings it added.
fn check(out: &Output, d: &Daemon, mode: &str, before: usize) -> Vec<Value> {
    let r = results(out);
    println!("{mode}: {}", String::from_utf8_lossy(&out.stdout).replace('\n', " "));
    let drift = if mode == "enforce" { 126 } else { 0 };
    for k in ["tmpfs", "vol", "script", "loader", "memfd"] {
        assert_eq!(r.get(k), Some(&drift), "{mode}: {k}: {out:?}\n{}", d.log_text());
    }
    let shm_noexec = r.get("shm_noexec") == Some(&1);
    assert_eq!(r.get("shm"), Some(&if shm_noexec { 126 } else { drift }), "{mode}: shm: {out:?}");
    for k in ["image", "image_dynamic", "image_script", "image_loader"] {
        assert_eq!(r.get(k), Some(&0), "{mode}: {k} is the image's: {out:?}\n{}", d.log_text());
    }
    // tmpfs, volume, script, loader (+ /dev/shm where exec is possible; + fileless in audit).
    let want = 4 + usize::from(!shm_noexec) + usize::from(mode == "audit");
    let all = d.findings(before + want);
    let f: Vec<Value> = all.into_iter().skip(before).collect();
    let mut got: Vec<String> = f
        .iter()
        .map(|x| format!("{} {}", x["category"].as_str().unwrap(), x["file"]["path"].as_str().unwrap()))
        .collect();
    got.sort();
    let mut expected = vec![
        "ADDED_BINARY_EXECUTED /scratch/true".to_owned(),
        "ADDED_BINARY_EXECUTED /tmp/t".to_owned(),
        "ADDED_BINARY_EXECUTED /vol/true".to_owned(),
        "ADDED_SCRIPT_EXECUTED /tmp/x.sh".to_owned(),
    ];
    if !shm_noexec {
        expected.push("ADDED_BINARY_EXECUTED /dev/shm/true".to_owned());
    }
    if mode == "audit" {
        expected.push("FILELESS_EXECUTION /memfd:dropper (deleted)".to_owned());
    }
    expected.sort();
    assert_eq!(got, expected, "{mode}: {f:#?}");
    let action = if mode == "enforce" { "blocked" } else { "audited" };
    assert!(f.iter().filter(|x| x["category"] != "FILELESS_EXECUTION").all(|x| x["action"] == action));
    f
}

#[test]
fn docker_every_exec_path_is_covered() {
    if !privileged() || !tools_present(&["containerd", "dockerd", "docker", "runc", "gcc"]) {
        return;
    }
    let dir = tmpdir("dgcovd-");
    let c = Containerd::start(&dir.path().join("containerd"));
    let dk = Dockerd::start(&dir.path().join("docker"), &c);
    let (_, tar) = coverage_rootfs(&dir.path().join("image"));
    assert!(dk.docker(&["import", tar.to_str().unwrap(), "dgcov:latest"]).status.success());
    let vol = volume(dir.path());
    let d = Daemon::start(dir.path(), DaemonOpts { docker_root: Some(dk.data_root()), ..Default::default() });
    let v = format!("{}:/vol", vol.display());
    let mut before = 0;
    for (i, mode) in ["enforce", "audit"].into_iter().enumerate() {
        if mode == "audit" {
            d.reload_mode("audit");
        }
        let name = format!("dgtest-cov{i}");
        let out = dk.docker(&[
            "run",
            "--rm",
            "--name",
            &name,
            "-v",
            &v,
            "--tmpfs",
            "/scratch:exec",
            "dgcov:latest",
            "/bin/sh",
            "-c",
            WORKLOAD,
        ]);
        let f = check(&out, &d, mode, before);
        assert!(f.iter().all(|x| x["container"]["runtime"] == "docker"));
        let vf = f.iter().find(|x| x["file"]["path"] == "/vol/true").unwrap();
        assert_eq!(vf["file"]["mount"]["root"].as_str().map(|r| r.ends_with("/vol")), Some(true), "{vf}");
        before += f.len();
    }
}

#[test]
fn podman_every_exec_path_is_covered() {
    if !privileged() || !tools_present(&["podman", "runc", "gcc"]) {
        return;
    }
    let dir = tmpdir("dgcovp-");
    let p = Podman::new(&dir.path().join("podman"));
    let (_, tar) = coverage_rootfs(&dir.path().join("image"));
    assert!(p.podman(&["import", tar.to_str().unwrap(), "localhost/dgcov:latest"]).status.success());
    let vol = volume(dir.path());
    let d =
        Daemon::start(dir.path(), DaemonOpts { podman: Some((p.root(), p.runroot())), ..Default::default() });
    let v = format!("{}:/vol", vol.display());
    let mut before = 0;
    for mode in ["enforce", "audit"] {
        if mode == "audit" {
            d.reload_mode("audit");
        }
        let out = p.podman(&[
            "run",
            "--rm",
            "-v",
            &v,
            "--tmpfs",
            "/scratch:rw,exec",
            "localhost/dgcov:latest",
            "/bin/sh",
            "-c",
            WORKLOAD,
        ]);
        let f = check(&out, &d, mode, before);
        assert!(f.iter().all(|x| x["container"]["runtime"] == "podman"));
        before += f.len();
    }
}

#[test]
fn containerd_every_exec_path_is_covered() {
    if !privileged() || !tools_present(&["containerd", "ctr", "runc", "umoci", "gcc"]) {
        return;
    }
    let dir = tmpdir("dgcovc-");
    let c = Containerd::start(&dir.path().join("containerd"));
    let (rootfs, _) = coverage_rootfs(&dir.path().join("image"));
    c.build_image_from("localhost/dgcov", &rootfs);
    let vol = volume(dir.path());
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            containerd_state: Some(c.state()),
            containerd_address: Some(c.sock()),
            ..Default::default()
        },
    );
    let v = format!("type=bind,src={},dst=/vol,options=rbind:rw", vol.display());
    let mut before = 0;
    for (i, mode) in ["enforce", "audit"].into_iter().enumerate() {
        if mode == "audit" {
            d.reload_mode("audit");
        }
        let id = format!("dgcov-{}-{i}", std::process::id());
        // `ctr run` can drop the last lines a task writes when it exits at once (its output
        // copy is cancelled with the task): the workload writes its results to the volume.
        let _ = std::fs::remove_file(vol.join("results.txt"));
        let script = format!("{{\n{WORKLOAD}}} >/vol/results.txt 2>&1\n");
        let mut out = c.ctr(&[
            "run",
            "--rm",
            "--mount",
            &v,
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/scratch,options=rw",
            "localhost/dgcov:latest",
            &id,
            "/bin/sh",
            "-c",
            &script,
        ]);
        out.stdout = std::fs::read(vol.join("results.txt")).unwrap_or_default();
        let f = check(&out, &d, mode, before);
        assert!(f.iter().all(|x| x["container"]["runtime"] == "containerd"));
        before += f.len();
    }
}
