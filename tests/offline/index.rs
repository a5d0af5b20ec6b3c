//! Image-layer manifests on real overlay containers and real runtimes (root): built on the node
//! in the background, persisted and re-checked, built offline from an OCI layout (umoci) and a
//! docker-save archive and matched to running containers by diffID, and used on the hot path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::runtimes::*;
use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Waits until every watched container has a manifest for each of its layers.
fn wait_indexed(d: &Daemon, containers: usize) -> Value {
    let start = Instant::now();
    loop {
        let st = d.status();
        let cs = st["containers"].as_array().cloned().unwrap_or_default();
        if cs.len() >= containers
            && cs.iter().all(|c| c["layers"].as_u64() > Some(0) && c["layers"] == c["indexed_layers"])
        {
            return st;
        }
        assert!(start.elapsed() < T, "layers not indexed: {st}\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn opts<'a>(s: &Scratch, mode: &'a str, tables: &'a str) -> DaemonOpts<'a> {
    DaemonOpts { mode, globs: vec![s.merged.clone()], extra_tables: tables, ..Default::default() }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(driftgate_bin()).args(args).output().unwrap()
}

#[test]
fn image_layers_are_indexed_in_the_background_and_a_known_bad_image_file_is_builtin_malicious() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let script = s.lower().join("opt/img/script.sh");
    let feed = s.root().join("feed.txt");
    std::fs::write(&feed, format!("{} Test.ImageScript\n", sha256_file(&script))).unwrap();
    let tables = format!("[ioc]\npaths = [{:?}]\n", feed.display().to_string());
    let d = Daemon::start(s.root(), opts(&s, "enforce", &tables));
    let st = wait_indexed(&d, 1);
    assert_eq!(st["index"]["node_layers"], 1, "{st}");
    assert_eq!(st["indexed_layers"], 1);
    // Persisted under the state directory.
    let stored: Vec<PathBuf> =
        std::fs::read_dir(s.root().join("state/index")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    let out = s.run_in_container("/opt/img/true; echo img=$?\n/opt/img/script.sh; echo script=$?\n", T);
    let r = results(&out);
    assert_eq!((r["img"], r["script"]), (0, 126), "{out:?}\n{}", d.log_text());
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["category"], "BUILTIN_MALICIOUS_BINARY_EXECUTED");
    assert_eq!(f[0]["action"], "blocked");
    assert_eq!(f[0]["file"]["layer"], "lower");
    assert_eq!(f[0]["file"]["path"], "/opt/img/script.sh");
    assert_eq!(f[0]["file"]["sha256"], sha256_file(&script));
    assert_eq!(f[0]["ioc"]["name"], "Test.ImageScript");
    let st = d.status();
    assert_eq!(st["decisions"]["hashed"], 0, "no file was read at exec time: {st}");
    assert!(st["index"]["manifest_hashes"].as_u64() >= Some(1), "{st}");

    // `index list` / `index show` read what the daemon stored.
    let cfg = d.config.display().to_string();
    let out = cli(&["index", "list", "--config", &cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&s.lower().display().to_string()), "{text}");
    let out = cli(&["index", "show", "--config", &cfg, &s.lower().display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{} /opt/img/script.sh", sha256_file(&script))), "{text}");
    assert!(text.contains("/bin/busybox") && !text.contains("/bin/sh"), "symlinks are not files: {text}");
}

#[test]
fn copy_ups_modifications_and_image_copies_are_decided_against_the_manifest() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let mut d = Daemon::start(s.root(), opts(&s, "audit", ""));
    wait_indexed(&d, 1);
    let out = s.run_in_container(
        "chmod 700 /opt/img/true; /opt/img/true; echo same=$?\n\
         cp /opt/img/false /tmp/true; /tmp/true; echo copy=$?\n\
         echo 'echo changed' >> /opt/img/script.sh; /opt/img/script.sh; echo modified=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!((r["same"], r["copy"], r["modified"]), (0, 0, 0), "audit mode: {out:?}");
    let f = d.findings(2);
    let by_path = |p: &str| f.iter().find(|x| x["file"]["path"] == p).cloned();
    assert!(by_path("/opt/img/true").is_none(), "an unchanged copy-up is the image's file: {f:?}");
    let copy = by_path("/tmp/true").expect("copy finding");
    assert_eq!(copy["category"], "ADDED_BINARY_EXECUTED");
    // busybox, /opt/img/true and /opt/img/false are the same bytes in this image.
    assert_eq!(
        copy["file"]["image_paths"],
        serde_json::json!(["/bin/busybox", "/opt/img/false", "/opt/img/true"]),
        "{copy}"
    );
    assert_eq!(by_path("/opt/img/script.sh").expect("modified")["category"], "MODIFIED_BINARY_EXECUTED");
    let st = d.status();
    assert!(
        st["index"]["manifest_hashes"].as_u64() >= Some(2),
        "the image side came from the manifest: {st}"
    );
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));

    // Restarted with `image_copies = "allow"` in enforce mode: the stored manifest is reused
    // (re-checked by a walk, nothing re-hashed), image copies run, other added files do not.
    let mut s = s;
    let d = Daemon::start(s.root(), opts(&s, "enforce", "[policy]\nimage_copies = \"allow\"\n"));
    wait_indexed(&d, 1);
    assert!(d.wait_log("hashed=0", Duration::from_secs(10)), "{}", d.log_text());
    let out = s.run_in_container(
        "/tmp/true; echo copy=$?\nprintf '#!/bin/sh\\necho new\\n' > /tmp/y; chmod +x /tmp/y; /tmp/y; echo new=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!((r["copy"], r["new"]), (0, 126), "{out:?}");
    let f = d.findings(3);
    let y = f.iter().find(|x| x["file"]["path"] == "/tmp/y").expect("new file finding");
    assert!(y["file"].get("image_paths").is_none(), "{y}");
    assert_eq!(
        f.iter().filter(|x| x["file"]["path"] == "/tmp/true").count(),
        1,
        "the copy was allowed: {f:?}"
    );
    s.umount();
}

#[test]
fn a_layer_changed_on_disk_since_it_was_indexed_is_detected_and_re_indexed() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    let mut d = Daemon::start(s.root(), opts(&s, "audit", ""));
    wait_indexed(&d, 1);
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    // Someone with host access rewrites an image file while driftgate is down.
    let script = s.lower().join("opt/img/script.sh");
    std::fs::write(&script, b"#!/bin/sh\necho tampered\n").unwrap();
    let d = Daemon::start(s.root(), opts(&s, "audit", ""));
    assert!(d.wait_log("changed on disk since it was indexed", T), "{}", d.log_text());
    let st = wait_indexed(&d, 1);
    assert_eq!(st["index"]["changed"], 1, "{st}");
    let out = cli(&[
        "index",
        "show",
        "--json",
        "--config",
        &d.config.display().to_string(),
        &s.lower().display().to_string(),
    ]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry =
        m["files"].as_array().unwrap().iter().find(|f| f["path"] == "/opt/img/script.sh").unwrap().clone();
    assert_eq!(entry["sha256"], sha256_file(&script), "the stored manifest has the new content");
}

#[test]
fn whiteouts_and_opaque_directories_of_a_real_layer_directory_are_recorded() {
    if !privileged() {
        return;
    }
    let t = tempfile::Builder::new().prefix("dglayer-").tempdir_in("/tmp").unwrap();
    let l = t.path();
    std::fs::create_dir_all(l.join("etc")).unwrap();
    std::fs::create_dir_all(l.join("var/lib")).unwrap();
    write_exec(&l.join("var/lib/tool"), b"#!/bin/sh\n");
    nix::sys::stat::mknod(
        &l.join("etc/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    xattr_set(&l.join("var"), "trusted.overlay.opaque", b"y");
    let (m, _) = driftgate_image::layerdir::index_layer_dir(l, None, &mut |_| {}).unwrap();
    assert!(m.whiteouts.contains(b"/etc/gone".as_slice()));
    assert!(m.opaque.contains(b"/var".as_slice()));
    assert!(m.files.contains_key(b"/var/lib/tool".as_slice()));
    // Over a lower layer, the union shows the opaque directory's own file and hides the rest.
    let mut lower = driftgate_core::index::manifest::Manifest::new("t");
    let e = m.files[b"/var/lib/tool".as_slice()].clone();
    lower.insert(b"/var/old".to_vec(), e.clone());
    lower.insert(b"/etc/gone".to_vec(), e.clone());
    lower.insert(b"/bin/kept".to_vec(), e);
    let u = driftgate_core::index::union::union(&[&m, &lower]);
    let paths: Vec<&[u8]> = u.keys().map(Vec::as_slice).collect();
    assert_eq!(paths, [b"/bin/kept".as_slice(), b"/var/lib/tool".as_slice()]);
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let r = rustix::fs::setxattr(p, name, value, rustix::fs::XattrFlags::empty());
    assert!(r.is_ok(), "setxattr {name}: {r:?}");
}

/// Waits for a container of `runtime` to be watched with all its layers matched; returns it.
fn wait_runtime_indexed(d: &Daemon, runtime: &str) -> Value {
    let start = Instant::now();
    loop {
        let st = d.status();
        let c =
            st["containers"].as_array().and_then(|cs| cs.iter().find(|c| c["runtime"] == runtime).cloned());
        if let Some(c) = c.filter(|c| c["layers"].as_u64() > Some(0) && c["layers"] == c["indexed_layers"]) {
            return c;
        }
        assert!(start.elapsed() < T, "no indexed {runtime} container: {st}\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Imported manifests only (`enabled = false`: nothing is indexed on the node), an IoC on the
/// image's `/opt/mark.sh`.
fn import_tables(imports: &Path, feed: &Path) -> String {
    format!(
        "[index]\nenabled = false\nimport_dirs = [{:?}]\n[ioc]\npaths = [{:?}]\n",
        imports.display().to_string(),
        feed.display().to_string()
    )
}

fn mark_feed(dir: &Path) -> PathBuf {
    use sha2::Digest;
    let h: String = sha2::Sha256::digest(MARK_SCRIPT).iter().map(|b| format!("{b:02x}")).collect();
    let feed = dir.join("feed.txt");
    std::fs::write(&feed, format!("{h} Test.Mark\n")).unwrap();
    feed
}

fn build_bundle(source: &Path, imports: &Path) {
    std::fs::create_dir_all(imports).unwrap();
    let out_file = imports.join("image.jsonl");
    let out =
        cli(&["index", "build", &source.display().to_string(), "--out", &out_file.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "index build: {err}");
    assert!(err.contains("MB/s"), "{err}");
}

fn assert_builtin_mark(d: &Daemon) {
    let f = d.findings(1);
    assert_eq!(f.len(), 1, "{f:?}\n{}", d.log_text());
    assert_eq!(f[0]["category"], "BUILTIN_MALICIOUS_BINARY_EXECUTED");
    assert_eq!(f[0]["file"]["path"], "/opt/mark.sh");
    assert_eq!(f[0]["file"]["layer"], "lower");
    assert_eq!(f[0]["ioc"]["name"], "Test.Mark");
    assert!(d.status()["index"]["imported_matched"].as_u64() >= Some(1));
}

#[test]
fn a_docker_save_archive_is_indexed_offline_and_matched_to_a_docker_container_by_diff_id() {
    if !privileged() || !tools_present(&["containerd", "dockerd", "docker", "runc"]) {
        return;
    }
    let dir = tempfile::Builder::new().prefix("dgidxd-").tempdir_in("/tmp").unwrap();
    let c = Containerd::start(&dir.path().join("containerd"));
    let dk = Dockerd::start(&dir.path().join("docker"), &c);
    dk.import_test_image();
    let archive = dir.path().join("dgtest.tar");
    let out = dk.docker(&["save", "-o", &archive.display().to_string(), "dgtest:latest"]);
    assert!(out.status.success(), "docker save: {}", String::from_utf8_lossy(&out.stderr));
    let imports = dir.path().join("imports");
    build_bundle(&archive, &imports);
    let feed = mark_feed(dir.path());
    let tables = import_tables(&imports, &feed);
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            mode: "audit",
            docker_root: Some(dk.data_root()),
            extra_tables: &tables,
            ..Default::default()
        },
    );
    let out = dk.docker(&["run", "-d", "--name", "dgtest-d1", "dgtest:latest", "/bin/sleep", "120"]);
    assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
    let ct = wait_runtime_indexed(&d, "docker");
    assert_eq!(ct["name"], "dgtest-d1");
    let out = dk.docker(&["exec", "dgtest-d1", "/opt/mark.sh"]);
    assert!(out.status.success(), "audit mode runs it: {out:?}");
    assert_builtin_mark(&d);
}

#[test]
fn an_oci_layout_built_with_umoci_is_indexed_offline_and_matched_to_a_containerd_container() {
    if !privileged() || !tools_present(&["containerd", "ctr", "runc", "umoci"]) {
        return;
    }
    let dir = tempfile::Builder::new().prefix("dgidxc-").tempdir_in("/tmp").unwrap();
    let c = Containerd::start(&dir.path().join("containerd"));
    c.build_image("localhost/dgidx");
    // The OCI layout umoci wrote (and imported into containerd).
    let layout = dir.path().join("containerd/image/oci");
    let imports = dir.path().join("imports");
    build_bundle(&layout, &imports);
    let feed = mark_feed(dir.path());
    let tables = import_tables(&imports, &feed);
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            mode: "enforce",
            containerd_state: Some(c.state()),
            containerd_address: Some(c.sock()),
            extra_tables: &tables,
            ..Default::default()
        },
    );
    let out = c.ctr(&["run", "-d", "localhost/dgidx:latest", "dgidx1", "/bin/sleep", "120"]);
    assert!(out.status.success(), "ctr run: {}", String::from_utf8_lossy(&out.stderr));
    wait_runtime_indexed(&d, "containerd");
    let out = c.ctr(&["task", "exec", "--exec-id", "mark", "dgidx1", "/opt/mark.sh"]);
    assert!(!out.status.success(), "enforce mode blocks the known-bad image file: {out:?}");
    assert_builtin_mark(&d);
}

#[test]
fn an_oci_archive_saved_by_podman_is_indexed_offline_and_matched_through_containers_storage() {
    if !privileged() || !tools_present(&["podman", "runc"]) {
        return;
    }
    let dir = tempfile::Builder::new().prefix("dgidxp-").tempdir_in("/tmp").unwrap();
    let p = Podman::with_test_image(&dir.path().join("podman"));
    let archive = dir.path().join("dgtest-oci.tar");
    let out = p.podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &archive.display().to_string(),
        "localhost/dgtest:latest",
    ]);
    assert!(out.status.success(), "podman save: {}", String::from_utf8_lossy(&out.stderr));
    let imports = dir.path().join("imports");
    build_bundle(&archive, &imports);
    let feed = mark_feed(dir.path());
    let tables = import_tables(&imports, &feed);
    let d = Daemon::start(
        dir.path(),
        DaemonOpts {
            mode: "audit",
            podman: Some((p.root(), p.runroot())),
            extra_tables: &tables,
            ..Default::default()
        },
    );
    let out = p.podman(&["run", "-d", "--name", "dgtest-p1", "localhost/dgtest:latest", "/bin/sleep", "120"]);
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    wait_runtime_indexed(&d, "podman");
    let out = p.podman(&["exec", "dgtest-p1", "/opt/mark.sh"]);
    assert!(out.status.success(), "audit mode runs it: {out:?}");
    assert_builtin_mark(&d);
    let _ = p.podman(&["rm", "-f", "-t", "0", "dgtest-p1"]);
}

#[test]
fn a_layer_shared_by_several_containers_is_indexed_once() {
    if !privileged() {
        return;
    }
    let s = Scratch::new();
    // A second container on the same image layer.
    let second = s.root().join("second");
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir_all(second.join(d)).unwrap();
    }
    let opts_str = format!(
        "lowerdir={},upperdir={},workdir={}",
        s.lower().display(),
        second.join("upper").display(),
        second.join("work").display()
    );
    let merged2 = second.join("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged2,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts_str.as_str()),
    )
    .unwrap();
    let _detach = DetachOnDrop(merged2.clone());
    let d = Daemon::start(
        s.root(),
        DaemonOpts { mode: "audit", globs: vec![s.merged.clone(), merged2.clone()], ..Default::default() },
    );
    let st = wait_indexed(&d, 2);
    assert_eq!(st["index"]["node_layers"], 1, "{st}");
    std::thread::sleep(Duration::from_millis(300));
    let indexed = d.log_text().lines().filter(|l| l.contains("layer indexed")).count();
    assert_eq!(indexed, 1, "{}", d.log_text());
}
