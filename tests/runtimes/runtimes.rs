//! Real runtimes from Debian's packages (containerd + runc, Docker, Podman), each started by
//! the test with its state in a temporary directory, and a locally built image. For each: an
//! added binary run in a container is blocked in enforce mode and the finding names the right
//! container, image and runtime. Kubernetes metadata is tested with the real CRI annotations
//! (no CRI client is packaged here to drive containerd's CRI plugin).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::runtimes::*;
use crate::common::*;
use serde_json::Value;

const ADD_AND_RUN: &str = "/opt/true; echo image=$?; cp /bin/busybox /tmp/true; /tmp/true; echo added=$?";

/// A containerd with the test image, and an enforcing daemon watching it.
fn containerd_and_daemon(prefix: &str) -> (tempfile::TempDir, Containerd, Daemon) {
    let dir = tmpdir(prefix);
    let c = Containerd::start(&dir.path().join("containerd"));
    c.build_image("localhost/dgtest");
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            containerd_state: Some(c.state()),
            containerd_address: Some(c.sock()),
            ..Default::default()
        },
    );
    (dir, c, d)
}

fn assert_blocked(out: &std::process::Output, d: &Daemon) {
    let r = results(out);
    assert_eq!(r.get("image"), Some(&0), "{out:?}\n{}", d.log_text());
    assert_eq!(r.get("added"), Some(&126), "{out:?}\n{}", d.log_text());
}

fn one_finding(d: &Daemon) -> Value {
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:?}");
    let f = f.into_iter().next().unwrap();
    assert_eq!(f["action"], "blocked");
    assert_eq!(f["category"], "ADDED_BINARY_EXECUTED");
    assert_eq!(f["file"]["path"], "/tmp/true");
    assert_eq!(f["file"]["sha256"], sha256_file(Path::new(BUSYBOX)).as_str());
    assert!(f["process"]["container_pid"].as_i64().unwrap() >= 1, "{f}");
    assert!(f["process"]["parent"]["pid"].as_i64().unwrap() > 1, "{f}");
    f
}

#[test]
fn containerd_ctr_container_is_blocked_and_named_with_its_image() {
    if !privileged() || !tools_present(&["containerd", "ctr", "runc", "umoci"]) {
        return;
    }
    let (_dir, c, d) = containerd_and_daemon("dgctr-");
    let id = format!("dgtest-{}", std::process::id());
    let out = c.ctr(&["run", "--rm", "localhost/dgtest:latest", &id, "/bin/sh", "-c", ADD_AND_RUN]);
    assert_blocked(&out, &d);
    let f = one_finding(&d);
    let ct = &f["container"];
    assert_eq!(ct["id"], id.as_str());
    assert_eq!(ct["runtime"], "containerd");
    assert_eq!(ct["runtime_namespace"], "default");
    assert_eq!(ct["name"], id.as_str(), "plain ctr containers are named by their id");
    assert_eq!(ct["image"], "localhost/dgtest:latest", "{f}");
    assert!(ct["image_digest"].as_str().unwrap().starts_with("sha256:"), "{f}");
    assert_eq!(
        ct["rootfs"],
        c.state()
            .join("io.containerd.runtime.v2.task/default")
            .join(&id)
            .join("rootfs")
            .display()
            .to_string()
    );
    assert!(d.wait_log("container rootfs unmounted", Duration::from_secs(10)), "{}", d.log_text());
}

#[test]
fn kubernetes_cri_annotations_fill_pod_metadata() {
    if !privileged() || !tools_present(&["containerd", "ctr", "runc", "umoci"]) {
        return;
    }
    let (_dir, c, d) = containerd_and_daemon("dgk8s-");
    let id = format!("k8s-{}", std::process::id());
    let mut args = vec!["run", "--rm"];
    let ann = [
        "io.kubernetes.cri.container-type=container",
        "io.kubernetes.cri.container-name=web",
        "io.kubernetes.cri.sandbox-name=web-6d4cf56db6-x2x7k",
        "io.kubernetes.cri.sandbox-namespace=payments",
        "io.kubernetes.cri.sandbox-uid=0b9e5a5c-1111-2222-3333-444455556666",
        "io.kubernetes.cri.image-name=registry.example/payments/web:1.4.2",
    ];
    for a in &ann {
        args.extend(["--annotation", a]);
    }
    args.extend(["localhost/dgtest:latest", &id, "/bin/sh", "-c", ADD_AND_RUN]);
    let out = c.ctr(&args);
    assert_blocked(&out, &d);
    let f = one_finding(&d);
    let ct = &f["container"];
    assert_eq!(ct["id"], id.as_str());
    assert_eq!(ct["name"], "web");
    assert_eq!(ct["pod_name"], "web-6d4cf56db6-x2x7k");
    assert_eq!(ct["pod_namespace"], "payments");
    assert_eq!(ct["pod_uid"], "0b9e5a5c-1111-2222-3333-444455556666");
    assert_eq!(ct["image"], "registry.example/payments/web:1.4.2", "the reference Kubernetes was given");
}

#[test]
fn docker_container_is_blocked_with_its_docker_id_name_image_and_labels() {
    if !privileged() || !tools_present(&["containerd", "dockerd", "docker", "runc"]) {
        return;
    }
    let dir = tmpdir("dgdock-");
    let c = Containerd::start(&dir.path().join("containerd"));
    let dk = Dockerd::start(&dir.path().join("docker"), &c);
    dk.import_test_image();
    let d = Daemon::start(dir.path(), DaemonOpts { docker_root: Some(dk.data_root()), ..Default::default() });
    let out = dk.docker(&[
        "run",
        "--name",
        "dgtest-run",
        "--label",
        "team=red",
        "dgtest:latest",
        "/bin/sh",
        "-c",
        ADD_AND_RUN,
    ]);
    assert_blocked(&out, &d);
    let inspect = dk.docker(&["inspect", "--format", "{{.Id}} {{.Image}}", "dgtest-run"]);
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    let (cid, image_id) = inspect.trim().split_once(' ').unwrap();
    let f = one_finding(&d);
    let ct = &f["container"];
    assert_eq!(ct["id"], cid, "the Docker container id, not the storage layer");
    assert_eq!(ct["runtime"], "docker");
    assert_eq!(ct["name"], "dgtest-run");
    assert_eq!(ct["image"], "dgtest:latest");
    assert_eq!(ct["image_digest"], image_id);
    assert_eq!(ct["labels"]["team"], "red");
}

/// Podman with the test image, an enforcing daemon watching it, and `sh -c script` run in a
/// container named `name` with `extra` options.
fn podman_run(
    prefix: &str,
    name: &str,
    extra: &[&str],
    script: &str,
) -> (tempfile::TempDir, Podman, Daemon, Output) {
    let dir = tmpdir(prefix);
    let p = Podman::with_test_image(&dir.path().join("podman"));
    let d =
        Daemon::start(dir.path(), DaemonOpts { podman: Some((p.root(), p.runroot())), ..Default::default() });
    let mut args = vec!["run", "--rm", "--name", name];
    args.extend(extra);
    args.extend(["localhost/dgtest:latest", "/bin/sh", "-c", script]);
    let out = p.podman(&args);
    (dir, p, d, out)
}

#[test]
fn podman_container_is_blocked_with_its_id_name_and_image() {
    if !privileged() || !tools_present(&["podman", "runc"]) {
        return;
    }
    let (_dir, _p, d, out) = podman_run("dgpod-", "dgtest-p1", &[], ADD_AND_RUN);
    assert_blocked(&out, &d);
    let f = one_finding(&d);
    let ct = &f["container"];
    assert_eq!(ct["runtime"], "podman");
    assert_eq!(ct["name"], "dgtest-p1");
    assert_eq!(ct["image"], "localhost/dgtest:latest");
    assert!(ct["image_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(ct["id"].as_str().unwrap().len(), 64, "{ct}");
}

#[test]
fn podman_container_with_a_user_namespace_mapping_is_watched() {
    if !privileged() || !tools_present(&["podman", "runc"]) {
        return;
    }
    // With --uidmap, containers/storage mounts the layers through idmapped mounts that it
    // unmounts at once: the overlay's options name layer paths that no longer exist.
    let map = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let script = format!("grep -q ' 100000 ' /proc/self/uid_map && echo mapped=0; {ADD_AND_RUN}");
    let (_dir, _p, d, out) = podman_run("dgpodns-", "dgtest-userns", &map, &script);
    assert_eq!(results(&out).get("mapped"), Some(&0), "not in a user namespace: {out:?}");
    assert_blocked(&out, &d);
    let f = one_finding(&d);
    assert_eq!(f["container"]["name"], "dgtest-userns");
    assert_eq!(f["container"]["runtime"], "podman");
    assert!(!d.log_text().contains("NOT watched"), "{}", d.log_text());
}

#[test]
fn crio_containers_are_told_apart_by_their_annotations_on_a_containers_storage_layout() {
    if !privileged() || !tools_present(&["podman", "runc"]) {
        return;
    }
    // CRI-O is not packaged here: a containers/storage layout made by Podman, with the
    // annotations CRI-O writes into the OCI spec, configured as CRI-O's storage.
    let dir = tmpdir("dgcrio-");
    let p = Podman::with_test_image(&dir.path().join("podman"));
    let d =
        Daemon::start(dir.path(), DaemonOpts { crio: Some((p.root(), p.runroot())), ..Default::default() });
    let mut args = vec!["run", "--rm", "--name", "k8s_web_pod"];
    let ann = [
        "io.container.manager=cri-o",
        "io.kubernetes.cri-o.ImageName=quay.io/example/web:2",
        // Podman parses --annotation as CSV: quote a value holding quotes.
        "\"io.kubernetes.cri-o.Labels={\"\"app\"\":\"\"web\"\"}\"",
        "io.kubernetes.pod.name=web-1",
        "io.kubernetes.pod.namespace=shop",
        "io.kubernetes.pod.uid=uid-9",
        "io.kubernetes.container.name=web",
    ];
    for a in &ann {
        args.extend(["--annotation", a]);
    }
    args.extend(["localhost/dgtest:latest", "/bin/sh", "-c", ADD_AND_RUN]);
    let out = p.podman(&args);
    assert_blocked(&out, &d);
    let f = one_finding(&d);
    let ct = &f["container"];
    assert_eq!(ct["runtime"], "cri-o");
    assert_eq!(ct["name"], "web");
    assert_eq!(ct["image"], "quay.io/example/web:2");
    assert_eq!((ct["pod_namespace"].as_str(), ct["pod_name"].as_str()), (Some("shop"), Some("web-1")));
    assert_eq!(ct["pod_uid"], "uid-9");
    assert_eq!(ct["labels"]["app"], "web");
}

#[test]
fn a_restarted_daemon_marks_running_containers_of_every_runtime_before_ready() {
    if !privileged() || !tools_present(&["containerd", "ctr", "runc", "umoci", "dockerd", "docker", "podman"])
    {
        return;
    }
    let dir = tmpdir("dgrestart-");
    let c = Containerd::start(&dir.path().join("containerd"));
    c.build_image("localhost/dgtest");
    let dk = Dockerd::start(&dir.path().join("docker"), &c);
    dk.import_test_image();
    let p = Podman::with_test_image(&dir.path().join("podman"));
    // Running containers, started before any daemon.
    let ctr_id = format!("dgtest-r{}", std::process::id());
    assert!(c.ctr(&["run", "-d", "localhost/dgtest:latest", &ctr_id, "/bin/sleep", "120"]).status.success());
    assert!(dk
        .docker(&["run", "-d", "--name", "dgtest-d1", "dgtest:latest", "/bin/sleep", "120"])
        .status
        .success());
    assert!(p
        .podman(&["run", "-d", "--name", "dgtest-p2", "localhost/dgtest:latest", "/bin/sleep", "120"])
        .status
        .success());
    let opts = || DaemonOpts {
        containerd_state: Some(c.state()),
        containerd_address: Some(c.sock()),
        docker_root: Some(dk.data_root()),
        podman: Some((p.root(), p.runroot())),
        ..Default::default()
    };
    for round in 0..2 {
        let mut d = Daemon::start(dir.path(), opts());
        // "ready" is printed only after the initial scan marked everything.
        assert_eq!(d.marked_devs().len(), 3, "round {round}: {}", d.log_text());
        let script = "cp /bin/busybox /tmp/t$$; /tmp/t$$ true; echo added=$?";
        let outs = [
            c.ctr(&["task", "exec", "--exec-id", &format!("x{round}"), &ctr_id, "/bin/sh", "-c", script]),
            dk.docker(&["exec", "dgtest-d1", "/bin/sh", "-c", script]),
            p.podman(&["exec", "dgtest-p2", "/bin/sh", "-c", script]),
        ];
        for out in &outs {
            assert_eq!(results(out).get("added"), Some(&126), "round {round}: {out:?}");
        }
        let f = d.findings(3 * (round + 1));
        let mut runtimes: Vec<&str> =
            f.iter().skip(3 * round).map(|f| f["container"]["runtime"].as_str().unwrap()).collect();
        runtimes.sort();
        assert_eq!(runtimes, ["containerd", "docker", "podman"], "round {round}");
        d.kill();
    }
    // The runtimes' drops remove the containers.
}

#[test]
fn a_runtime_api_that_is_down_delays_nothing_but_metadata() {
    if !privileged() || !tools_present(&["containerd", "ctr", "runc", "umoci"]) {
        return;
    }
    let dir = tmpdir("dgdown-");
    let c = Containerd::start(&dir.path().join("containerd"));
    c.build_image("localhost/dgtest");
    // A socket path where nothing listens: every API lookup fails.
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            containerd_state: Some(c.state()),
            containerd_address: Some(dir.path().join("nobody-listens.sock")),
            ..Default::default()
        },
    );
    let id = format!("down-{}", std::process::id());
    let start = std::time::Instant::now();
    let out = c.ctr(&["run", "--rm", "localhost/dgtest:latest", &id, "/bin/sh", "-c", ADD_AND_RUN]);
    assert!(start.elapsed() < Duration::from_secs(10), "the container ran at normal speed");
    assert_blocked(&out, &d);
    let f = one_finding(&d);
    assert_eq!(f["container"]["id"], id.as_str());
    assert_eq!(f["container"]["runtime"], "containerd");
    assert!(f["container"]["image"].is_null(), "unknown, not invented: {f}");
}
