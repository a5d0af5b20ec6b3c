use super::*;

#[test]
fn hostile_names_huge_arguments_and_vanishing_files_give_valid_findings() {
    if !privileged() {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let prog = tools.path().join("prog");
    std::fs::write(&prog, driftgate_bench::elf::exit0(0)).unwrap();
    let s = Scratch::with_image_files(&[("/opt/img/prog", &prog)]);
    let d0 = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![s.merged.clone()],
            extra_tables: "[findings]\naggregate_window_secs = 0\n",
            ..Default::default()
        },
    );
    let (config, spool) = (d0.config.clone(), d0.spool.clone());
    drop(d0);
    // Slow storage (300 ms a hash): the program is deleted while its exec waits.
    let mut d = Daemon::start_with_env(&config, &spool, &[("DRIFTGATE_TEST_HASH_DELAY_MS", "300")]);
    // A path of more than 4,000 bytes (20 directories of 200 bytes), a name with a newline
    // and invalid UTF-8, 200 KB of arguments, and a program deleted while its exec waits.
    let long: String = (0..20).map(|i| format!("/{}", format!("{i:02}").repeat(100))).collect();
    let script = format!(
        "mkdir -p '/tmp{long}'; cp /opt/img/prog '/tmp{long}/t'; '/tmp{long}/t'; echo long=$?\n\
         n=\"$(printf '/tmp/evil\\nname\\377')\"; cp /opt/img/prog \"$n\"; \"$n\"; echo evil=$?\n\
         a=A; for i in $(seq 16); do a=$a$a; done\n\
         cp /opt/img/prog /tmp/args; /tmp/args \"$a\" \"$a\"; echo args=$?\n\
         cp /opt/img/prog /tmp/gone; /tmp/gone & sleep 0.1; rm /tmp/gone; wait $!; echo gone=$?\n"
    );
    let out = s.run_in_container(&script, T);
    let r = results(&out);
    for k in ["long", "evil", "args", "gone"] {
        assert_eq!(r.get(k), Some(&0), "{k}: {out:?}");
    }
    let f = d.findings(4);
    let sha = sha256_file(&prog);
    let by = |pred: &dyn Fn(&str) -> bool| {
        f.iter().find(|x| pred(x["file"]["path"].as_str().unwrap_or(""))).unwrap_or_else(|| panic!("{f:#?}"))
    };
    let l = by(&|p| p.len() > 4000);
    assert_eq!(l["file"]["path"].as_str().unwrap(), format!("/tmp{long}/t"));
    let e = by(&|p| p.starts_with("/tmp/evil"));
    assert!(e["file"]["path_raw"].is_string() || e["file"]["path"].as_str().unwrap().contains('\n'), "{e}");
    let a = by(&|p| p == "/tmp/args");
    assert_eq!(a["process"]["args_truncated"], true, "{a}");
    let kept: usize =
        a["process"]["args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().len()).sum();
    assert!(kept <= 8192, "{kept} argument bytes kept");
    let g = by(&|p| p.starts_with("/tmp/gone"));
    assert_eq!((&g["file"]["path"], &g["file"]["deleted"]), (&"/tmp/gone".into(), &true.into()), "{g}");
    for x in &f {
        assert_eq!(x["file"]["sha256"], sha.as_str(), "{x}");
        assert_eq!(x["category"], "ADDED_BINARY_EXECUTED");
    }
    let rss = vm_rss_kib(d.pid());
    assert!(rss < 128 * 1024, "RSS {rss} KiB");
    let code = d.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "alive until asked to stop: {:?}\n{}", d.child.try_wait(), d.log_text());
}

/// An overlay mounted where a runtime keeps a container's rootfs: `lower` (busybox as the
/// image), `upper`, `work`, `merged` given as paths.
struct FakeRootfs {
    merged: std::path::PathBuf,
}

impl FakeRootfs {
    fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> FakeRootfs {
        for d in [lower.join("bin"), upper.to_path_buf(), work.to_path_buf(), merged.to_path_buf()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", lower.join("bin/sh")).unwrap();
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        nix::mount::mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        FakeRootfs { merged: merged.to_path_buf() }
    }
}

impl Drop for FakeRootfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Truncated, wrong-typed and oversized runtime records.
fn hostile_state_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("truncated", b"{\"ID\":\"abc\",\"Config\":{\"Labels\":{\"a\":".to_vec()),
        ("wrong types", b"{\"ID\":5,\"Config\":[],\"Name\":{\"x\":1},\"State\":\"up\"}".to_vec()),
        ("not json", vec![0xff, 0x00, 0x13, 0x37]),
    ]
}

#[test]
fn hostile_runtime_state_is_logged_and_the_container_still_watched() {
    if !privileged() {
        return;
    }
    let t = tempfile::Builder::new().prefix("dgstate-").tempdir_in("/tmp").unwrap();
    let (docker, storage, imports) =
        (t.path().join("docker"), t.path().join("storage"), t.path().join("imports"));
    // Docker's layout: overlay2/<layer>/merged; the layer named by layerdb/mounts/<id>/mount-id.
    let d_layer = "a".repeat(64);
    let d_root = FakeRootfs::mount(
        &docker.join("overlay2/base/diff"),
        &docker.join(format!("overlay2/{d_layer}/diff")),
        &docker.join(format!("overlay2/{d_layer}/work")),
        &docker.join(format!("overlay2/{d_layer}/merged")),
    );
    let cid = "c".repeat(64);
    let mounts = docker.join("image/overlay2/layerdb/mounts").join(&cid);
    std::fs::create_dir_all(&mounts).unwrap();
    std::fs::write(mounts.join("mount-id"), &d_layer).unwrap();
    std::fs::create_dir_all(docker.join("containers").join(&cid)).unwrap();
    // A layerdb entry whose files are garbage.
    let ldb = docker.join("image/overlay2/layerdb/sha256").join("e".repeat(64));
    std::fs::create_dir_all(&ldb).unwrap();
    std::fs::write(ldb.join("cache-id"), [0xffu8, 0xfe]).unwrap();
    std::fs::write(ldb.join("diff"), "not a digest").unwrap();
    // containers/storage's layout: overlay/<layer>/merged; containers.json, layers.json.
    let s_layer = "b".repeat(64);
    let s_root = FakeRootfs::mount(
        &storage.join("overlay/base/diff"),
        &storage.join(format!("overlay/{s_layer}/diff")),
        &storage.join(format!("overlay/{s_layer}/work")),
        &storage.join(format!("overlay/{s_layer}/merged")),
    );
    for d in ["overlay-containers", "overlay-layers", "overlay-images"] {
        std::fs::create_dir_all(storage.join(d)).unwrap();
    }
    // Manifest bundles: truncated, wrong types, a line too long to be a manifest... and huge.
    std::fs::create_dir_all(&imports).unwrap();
    std::fs::write(imports.join("truncated.jsonl"), b"{\"schema\":\"driftgate.manifest.v1\",\"diff_id\":")
        .unwrap();
    std::fs::write(imports.join("types.jsonl"), b"{\"schema\":7,\"files\":\"none\"}\n").unwrap();
    std::fs::write(imports.join("binary.json"), [0u8, 0xff, 0x10]).unwrap();
    let huge = std::fs::File::create(imports.join("huge.jsonl")).unwrap();
    huge.set_len(200 << 20).unwrap();
    drop(huge);

    let cfg_dir = t.path().join("daemon");
    let mut rounds = hostile_state_files();
    // Too large to be read: 100 MiB (sparse).
    rounds.push(("huge", Vec::new()));
    for (what, bytes) in rounds {
        let write = |p: &Path| {
            if what == "huge" {
                let f = std::fs::File::create(p).unwrap();
                f.set_len(100 << 20).unwrap();
            } else {
                std::fs::write(p, &bytes).unwrap();
            }
        };
        write(&docker.join("containers").join(&cid).join("config.v2.json"));
        write(&storage.join("overlay-containers/containers.json"));
        write(&storage.join("overlay-layers/layers.json"));
        write(&storage.join("overlay-images/images.json"));
        let _ = std::fs::remove_dir_all(&cfg_dir);
        let d = Daemon::start(
            &cfg_dir,
            DaemonOpts {
                docker_root: Some(docker.clone()),
                podman: Some((storage.clone(), t.path().join("runroot"))),
                extra_tables: &format!("[index]\nimport_dirs = [{:?}]\n", imports.display().to_string()),
                ..Default::default()
            },
        );
        let st = d.status();
        let runtimes: Vec<&str> =
            st["containers"].as_array().unwrap().iter().map(|c| c["runtime"].as_str().unwrap()).collect();
        assert!(runtimes.contains(&"docker") && runtimes.contains(&"podman"), "{what}: {st}");
        // Decisions in both: an added program is blocked, the image's shell runs.
        for root in [&d_root.merged, &s_root.merged] {
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::copy(BUSYBOX, root.join("tmp/added")).unwrap();
            let added = std::process::Command::new(root.join("tmp/added")).arg("true").status();
            assert!(added.is_err(), "{what}: added program blocked in {}", root.display());
            let image = std::process::Command::new(root.join("bin/busybox")).arg("true").status().unwrap();
            assert!(image.success(), "{what}");
        }
        assert!(
            wait_until(Duration::from_secs(10), || d.log_text().contains("runtime state file not used")),
            "{what}: {}",
            d.log_text()
        );
        assert!(
            wait_until(Duration::from_secs(10), || d.log_text().matches("index import skipped").count() >= 4),
            "{what}: every bad bundle is reported: {}",
            d.log_text()
        );
        assert!(d.status()["pid"].as_u64().is_some(), "{what}: alive");
    }
}
