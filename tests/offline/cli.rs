//! The CLI as a user runs it: the real binary in a temporary directory. No root needed.

use std::path::Path;
use std::process::{Command, Output};

fn dg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftgate")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_config_exits_78_naming_file_line_and_key_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "mode = \"audit\"\n[spool]\ndir = \"/tmp/x\"\nretention = 3\n").unwrap();
    let o = dg(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(cfg.to_str().unwrap()), "{e}");
    assert!(e.contains("line 4"), "{e}");
    assert!(e.contains("retention"), "{e}");
    assert!(!e.contains("ready"), "{e}");
}

#[test]
fn bad_values_are_reported_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "mode = \"enforce\"\n[discovery]\noverlay_globs = [\"/ok/*\", \"/x/[\"]\n").unwrap();
    let o = dg(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("line 3: `discovery.overlay_globs[1]`"), "{}", stderr(&o));

    std::fs::write(&cfg, "mode = \"enforced\"\n").unwrap();
    let o = dg(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("line 1") && stderr(&o).contains("enforced"), "{}", stderr(&o));

    let o = dg(&["config", "check", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("missing.toml: cannot read"), "{}", stderr(&o));
}

#[test]
fn a_valid_config_checks_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "mode = \"enforce\"\n[spool]\ndir = \"/srv/spool\"\n[discovery]\noverlay_globs = []\n",
    )
    .unwrap();
    let o = dg(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mode enforce, spool /srv/spool"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn findings_on_an_empty_or_missing_spool_print_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for d in [dir.path().to_path_buf(), dir.path().join("nope")] {
        let o = dg(&["findings", "--json", "--spool-dir", d.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}

fn finding_line(id: &str, path: &str) -> String {
    serde_json::json!({
        "schema": "driftgate.finding.v1", "id": id, "time": "2026-11-26T10:00:00Z",
        "category": "ADDED_BINARY_EXECUTED", "severity": "LOW", "action": "blocked", "mode": "enforce",
        "node": "n1",
        "container": {"id": "c1", "runtime": "containerd", "rootfs": "/r", "name": null, "image": null,
                      "image_digest": null, "pod_namespace": null, "pod_name": null},
        "process": {"pid": 10, "ppid": 1, "uid": 0, "comm": "sh", "args": ["/tmp/x"], "cwd": "/"},
        "file": {"path": path, "sha256": "ab", "size": 3, "layer": "upper"},
        "mitre": ["T1105"], "virustotal": null
    })
    .to_string()
}

#[test]
fn findings_reports_unreadable_lines_with_file_and_line_and_prints_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("findings-0000000000000001.jsonl");
    std::fs::write(
        &seg,
        format!("{}\ngarbage\n{}\n", finding_line("a", "/tmp/x"), finding_line("b", "/tmp/a\nb")),
    )
    .unwrap();
    let o = dg(&["findings", "--json", "--spool-dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(stderr(&o).contains(&format!("{}: line 2", seg.display())), "{}", stderr(&o));
    // The table escapes a hostile path onto one line.
    let o = dg(&["findings", "--spool-dir", dir.path().to_str().unwrap()]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("/tmp/a\\nb"), "{table}");
}

#[test]
fn help_is_complete_for_every_subcommand() {
    let o = dg(&["--help"]);
    let h = String::from_utf8(o.stdout).unwrap();
    for sub in ["run", "findings", "config"] {
        assert!(h.contains(sub), "{h}");
    }
    for (args, needles) in [
        (&["run", "--help"][..], &["--config", "--mode", "audit", "enforce"][..]),
        (&["findings", "--help"], &["--spool-dir", "--json", "--config"]),
        (&["config", "check", "--help"], &["--config"]),
    ] {
        let o = dg(args);
        assert!(o.status.success());
        let h = String::from_utf8(o.stdout).unwrap();
        for n in needles {
            assert!(h.contains(n), "{args:?}: {h}");
        }
    }
    let o = dg(&["run", "--mode", "block"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects unknown modes");
    assert!(!Path::new("/nonexistent").exists());
}

#[test]
fn the_packaged_default_config_is_valid() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/driftgate.toml");
    let o = dg(&["config", "check", "--config", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("mode audit, spool /var/lib/driftgate/spool"));
}

#[test]
fn man_pages_and_completions_are_generated_from_the_cli_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let o = dg(&["generate-assets", "--out", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let man = std::fs::read_to_string(dir.path().join("man/driftgate.8")).unwrap();
    assert!(
        man.contains(".TH driftgate 8") || man.contains(".TH DRIFTGATE"),
        "{}",
        &man[..200.min(man.len())]
    );
    for sub in ["run", "findings", "status", "config", "bench"] {
        let p = dir.path().join(format!("man/driftgate-{sub}.8"));
        assert!(p.exists(), "{}", p.display());
    }
    let run = std::fs::read_to_string(dir.path().join("man/driftgate-run.8")).unwrap();
    assert!(run.contains("mode"), "options are documented");
    let findings = std::fs::read_to_string(dir.path().join("man/driftgate-findings.8")).unwrap();
    for flag in ["since", "until", "category", "container", "namespace", "action", "follow", "json"] {
        assert!(findings.contains(flag), "{flag}");
    }
    let bash = std::fs::read_to_string(dir.path().join("completions/driftgate.bash")).unwrap();
    assert!(bash.contains("findings") && bash.contains("--spool-dir"));
    assert!(dir.path().join("completions/_driftgate").exists());
    assert!(dir.path().join("completions/driftgate.fish").exists());
    assert!(
        !String::from_utf8_lossy(&dg(&["--help"]).stdout).contains("generate-assets"),
        "hidden from --help"
    );
}

#[test]
fn ioc_check_names_the_source_for_files_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, b"malware").unwrap();
    use sha2::Digest;
    let h: String = sha2::Sha256::digest(b"malware").iter().map(|b| format!("{b:02x}")).collect();
    let list = dir.path().join("feed.txt");
    std::fs::write(&list, format!("# test feed\n{} Test.Malware\nbogus line\n", h.to_uppercase())).unwrap();
    let ok = dir.path().join("ok.bin");
    std::fs::write(&ok, b"fine").unwrap();
    let o = dg(&[
        "ioc",
        "check",
        "--source",
        list.to_str().unwrap(),
        bad.to_str().unwrap(),
        ok.to_str().unwrap(),
        &h,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("KNOWN-BAD") && lines[0].contains("Test.Malware") && lines[0].contains("feed.txt"),
        "{out}"
    );
    assert!(lines[1].contains("not known"), "{out}");
    assert!(lines[2].contains("KNOWN-BAD"), "{out}");
    assert!(stderr(&o).contains("feed.txt: 1 invalid lines (first at line 3)"), "{}", stderr(&o));
}

#[test]
fn policy_simulate_replays_findings_against_a_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let simulate = |cand: &std::path::Path, more: &[&str]| {
        let mut args = vec!["policy", "simulate", "--config", cand.to_str().unwrap()];
        args.extend_from_slice(more);
        dg(&args)
    };
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let mk = |id: &str, ns: Option<&str>, path: &str, count: u64| {
        let mut v: serde_json::Value = serde_json::from_str(&finding_line(id, path)).unwrap();
        v["action"] = "audited".into();
        v["mode"] = "audit".into();
        v["container"]["pod_namespace"] = ns.map_or(serde_json::Value::Null, Into::into);
        v["container"]["image"] = "registry.example/shop:1".into();
        if count > 1 {
            v["count"] = count.into();
        }
        v.to_string()
    };
    std::fs::write(
        spool.join("findings-0000000000000001.jsonl"),
        [
            mk("a", Some("payments-eu"), "/tmp/x", 3),
            mk("b", Some("default"), "/tmp/y", 1),
            mk("c", Some("default"), "/var/jit/z", 2),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let cand = dir.path().join("candidate.toml");
    std::fs::write(
        &cand,
        "mode = \"audit\"\n[[policy.rules]]\nname = \"pay\"\naction = \"enforce\"\nnamespaces = [\"payments-*\"]\n\
         [[policy.rules]]\naction = \"allow\"\npaths = [\"/var/jit/*\"]\n",
    )
    .unwrap();
    let o = simulate(&cand, &["--spool-dir", spool.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], serde_json::json!({"blocked": 3, "audited": 1, "allowed": 2}), "{v}");
    assert_eq!(v["changed"], 5, "3 newly blocked + 2 newly allowed");
    let rows = v["rows"].as_array().unwrap();
    let pay = rows.iter().find(|r| r["namespace"] == "payments-eu").unwrap();
    assert_eq!(pay["counts"]["blocked"], 3);
    let o = simulate(&cand, &["--spool-dir", spool.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("payments-eu") && text.contains("TOTAL"), "{text}");
    assert!(text.contains(&format!("from spool {} (given with --spool-dir)", spool.display())), "{text}");
    // No --spool-dir and no daemon answering: the candidate's own spool.dir, and it says so.
    let named = format!(
        "mode = \"audit\"\n[spool]\ndir = {:?}\n[daemon]\nsocket = {:?}\n",
        spool.display().to_string(),
        dir.path().join("nobody.sock").display().to_string()
    );
    let cand2 = dir.path().join("named.toml");
    std::fs::write(&cand2, &named).unwrap();
    // (--socket: a daemon installed on this machine must not answer for the candidate.)
    let nobody = dir.path().join("nobody.sock");
    let o = simulate(&cand2, &["--socket", nobody.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["spool"], spool.display().to_string(), "{v}");
    assert!(v["spool_source"].as_str().unwrap().contains("candidate"), "{v}");
    assert_eq!(v["total"]["audited"], 6, "every recorded exec replayed: {v}");
    // A spool that does not exist is an error naming it, not "0 execs replayed".
    std::fs::write(&cand2, named.replace(spool.to_str().unwrap(), "/nonexistent/spool")).unwrap();
    let o = simulate(&cand2, &["--socket", nobody.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/spool"), "{}", stderr(&o));
    // A bad candidate is a configuration error naming the line.
    std::fs::write(&cand, "[[policy.rules]]\naction = \"enforce\"\nimages = [\"[\"]\n").unwrap();
    let o = simulate(&cand, &["--spool-dir", spool.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("line 1: `policy.rules[0].images[0]`"), "{}", stderr(&o));
}

#[test]
fn config_check_validates_ioc_sources_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{}\nnot-a-hash\nhttp://evil.example/x dropper\n", "ab".repeat(32)))
        .unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[ioc]\npaths = [{:?}]\n", feed.display().to_string())).unwrap();
    let o = dg(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 IoC entries"), "a hash and a URL");
    assert!(stderr(&o).contains(&format!("{}: line 2: not a SHA-256", feed.display())), "{}", stderr(&o));
    std::fs::write(
        &cfg,
        format!("[ioc]\npaths = [{:?}, {:?}]\n", feed.display().to_string(), empty.display().to_string()),
    )
    .unwrap();
    let o = dg(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "a source without a valid line fails the check");
    assert!(stderr(&o).contains("empty.txt: no valid SHA-256, URL or domain line"), "{}", stderr(&o));
}

/// A one-image OCI layout: one gzip layer with `/bin/tool` and a whiteout.
fn oci_layout(dir: &std::path::Path, wrong_diff_id: bool) {
    let mut t = tar::Builder::new(Vec::new());
    for (name, data, mode) in [("bin/tool", &b"\x7fELF-tool"[..], 0o755), ("etc/.wh.passwd", b"", 0o644)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        t.append_data(&mut h, name, data).unwrap();
    }
    let layer = t.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer).unwrap();
    let gz = gz.finish().unwrap();
    // With `wrong_diff_id`, the config names the hash of other bytes.
    let diff_of: &[u8] = if wrong_diff_id { b"not the layer" } else { &layer };
    driftgate_bench::index::write_oci_layout(
        dir,
        diff_of,
        &gz,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Some("tool:1"),
    )
    .unwrap();
}

#[test]
fn index_build_list_show_and_config_check_of_import_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    oci_layout(&layout, false);
    let imports = dir.path().join("imports");
    std::fs::create_dir(&imports).unwrap();
    let bundle = imports.join("tool.jsonl");
    let o = dg(&["index", "build", layout.to_str().unwrap(), "--out", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 image(s), 1 layer(s), 1 executable files"), "{}", stderr(&o));
    assert!(stderr(&o).contains("tool:1: sha256:"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert_eq!(text.lines().count(), 1);
    let m: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(m["files"][0]["path"], "/bin/tool");
    assert_eq!(m["whiteouts"][0], "/etc/passwd");
    let diff_id = m["diff_id"].as_str().unwrap().to_owned();

    // The same image as an OCI archive (a tar of the layout) gives the same manifest.
    let archive = dir.path().join("layout.tar");
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("-C").arg(&layout).arg("-cf").arg(&archive).arg(".");
    assert!(cmd.status().unwrap().success());
    let o = dg(&["index", "build", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&diff_id));

    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n[index]\nimport_dirs = [{:?}]\n",
            dir.path().join("state").display().to_string(),
            imports.display().to_string()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = dg(&["config", "check", "--config", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 imported layer manifests"));
    let o = dg(&["index", "list", "--config", c]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&diff_id), "{}", String::from_utf8_lossy(&o.stdout));
    let o = dg(&["index", "show", "--config", c, &diff_id["sha256:".len()..][..12]]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("0755") && out.contains("/bin/tool") && out.contains("whiteout /etc/passwd"),
        "{out}"
    );
    let o = dg(&["index", "show", "--config", c, "sha256:ffffffffffff"]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));

    // A bad bundle fails the check, naming file and line.
    std::fs::write(imports.join("bad.jsonl"), format!("{}\n{{\"schema\":\"x\"}}\n", text.trim())).unwrap();
    let o = dg(&["config", "check", "--config", c]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("bad.jsonl: line 2"), "{}", stderr(&o));

    // A layer whose content does not match the diffID its config names is refused.
    let wrong = dir.path().join("wrong");
    oci_layout(&wrong, true);
    let o = dg(&["index", "build", wrong.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("but the image config says"), "{}", stderr(&o));
    // A missing source is "not found" (66), not malformed data.
    let o = dg(&["index", "build", dir.path().join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(66));
    assert!(stderr(&o).contains("nothing"), "{}", stderr(&o));
}
