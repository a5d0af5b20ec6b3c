//! Privileged end-to-end tests of library coverage (`[libraries]`): a shared object that is not
//! the image's, loaded with `LD_PRELOAD` or `dlopen` from the writable layer, a volume, a tmpfs
//! or `/dev/shm`. Real fanotify `FAN_OPEN_PERM` marks and ignore marks on real overlay and tmpfs
//! mounts, a real glibc loader (the host's, shipped in the test image); run as root (CI does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// `[libraries]` is off by default.
const LIBRARIES: &str = "[libraries]\nenabled = true\n";

fn with_libraries(s: &Scratch, mode: &str, extra: &str) -> Daemon {
    Daemon::start(
        s.root(),
        DaemonOpts {
            mode,
            globs: vec![s.merged.clone()],
            extra_tables: &format!("{LIBRARIES}{extra}"),
            ..Default::default()
        },
    )
}

/// The tools: a dynamic program that `dlopen`s its arguments (`/opt/img/dltool`), the image's
/// libraries (`/opt/img/libimg.so`, `libcopy.so`, `libmod.so`: each says `img-loaded`) and,
/// on a volume, a drift library (`/vol/libdrift.so`: says `drift-loaded`).
struct Fixture {
    _tools: tempfile::TempDir,
    s: Scratch,
    vol: PathBuf,
    drift_sha: String,
}

fn gcc(args: &[&str], out: &Path, src: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/tools/{src}"));
    let mut cmd = Command::new("gcc");
    cmd.args(args).arg("-o").arg(out).arg(&src);
    let o = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(o.status.success(), "gcc (scripts/test-deps.sh installs gcc and libc6-dev): {o:?}");
}

fn fixture() -> Fixture {
    let tools = tempfile::tempdir().unwrap();
    let t = tools.path();
    gcc(&["-O2"], &t.join("dltool"), "dlopen_tool.c");
    gcc(&["-O2", "-shared", "-fPIC", "-DNAME=\"img\""], &t.join("libimg.so"), "lib_marker.c");
    gcc(&["-O2", "-shared", "-fPIC", "-DNAME=\"drift\""], &t.join("libdrift.so"), "lib_marker.c");
    let canon = |p: &str| std::fs::canonicalize(p).unwrap();
    let (ld, libc) = (canon("/lib64/ld-linux-x86-64.so.2"), canon("/lib/x86_64-linux-gnu/libc.so.6"));
    let s = Scratch::with_image_files(&[
        ("/lib64/ld-linux-x86-64.so.2", &ld),
        ("/lib/x86_64-linux-gnu/libc.so.6", &libc),
        ("/opt/img/dltool", &t.join("dltool")),
        ("/opt/img/libimg.so", &t.join("libimg.so")),
        ("/opt/img/libcopy.so", &t.join("libimg.so")),
        ("/opt/img/libmod.so", &t.join("libimg.so")),
        ("/etc/data.txt", Path::new("/etc/hostname")),
    ]);
    let vol = s.root().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::copy(t.join("libdrift.so"), vol.join("libdrift.so")).unwrap();
    // The same bytes without their first one, so a container can make copies: in enforce mode
    // no process (cp, cat) may read the library itself.
    let bytes = std::fs::read(vol.join("libdrift.so")).unwrap();
    std::fs::write(vol.join("libdrift.bin"), &bytes[1..]).unwrap();
    let drift_sha = sha256_file(&vol.join("libdrift.so"));
    Fixture { _tools: tools, s, vol, drift_sha }
}

/// Setup lines: the volume at /vol, a tmpfs at /scratch.
fn setup(vol: &Path) -> String {
    format!(
        "mkdir -p \"$M/vol\" \"$M/scratch\"\nmount --bind '{}' \"$M/vol\"\nmount -t tmpfs scratch \"$M/scratch\"\n",
        vol.display()
    )
}

/// Shell lines that write the drift library to `dst` without reading a library.
fn drop_lib(dst: &str) -> String {
    format!("printf '\\177' > {dst}; cat /vol/libdrift.bin >> {dst}\n")
}

/// Drops the drift library into the writable layer, `/dev/shm` and a tmpfs, then loads it from
/// there and from the volume with `dlopen` and with `LD_PRELOAD`; also loads the image's
/// libraries, reads a data file and loads a copied-up (chmod) image library.
fn load_everywhere() -> String {
    format!(
        "{}{}{}{LOAD_REST}",
        drop_lib("/tmp/libdrift.so"),
        drop_lib("/dev/shm/libdrift.so"),
        drop_lib("/scratch/libdrift.so")
    )
}

const LOAD_REST: &str = "cat /etc/data.txt > /tmp/data.copy; echo data=$?\n\
     chmod 600 /opt/img/libcopy.so\n\
     /opt/img/dltool /opt/img/libimg.so /opt/img/libcopy.so /tmp/libdrift.so /vol/libdrift.so /dev/shm/libdrift.so /scratch/libdrift.so\n\
     LD_PRELOAD=/tmp/libdrift.so /opt/img/dltool; echo preload=$?\n";

/// `dlopen <path>=ok|fail` lines of the tool.
fn loads(out: &std::process::Output) -> std::collections::BTreeMap<String, bool> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("dlopen "))
        .filter_map(|l| l.split_once('='))
        .map(|(p, r)| (p.to_owned(), r.starts_with("ok")))
        .collect()
}

fn library_findings(f: &[Value]) -> Vec<&Value> {
    f.iter().filter(|x| x["category"].as_str().is_some_and(|c| c.contains("LIBRARY"))).collect()
}

fn paths(f: &[&Value]) -> Vec<String> {
    let mut v: Vec<String> = f.iter().map(|x| x["file"]["path"].as_str().unwrap_or("-").to_owned()).collect();
    v.sort();
    v
}

const DRIFT_PATHS: [&str; 4] =
    ["/dev/shm/libdrift.so", "/scratch/libdrift.so", "/tmp/libdrift.so", "/vol/libdrift.so"];

#[test]
fn added_libraries_do_not_load_in_enforce_mode_and_the_program_still_runs() {
    if !privileged() {
        return;
    }
    let fx = fixture();
    let d = with_libraries(&fx.s, "enforce", "");
    let out = fx.s.run_in_container_with(&setup(&fx.vol), &load_everywhere(), T);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let l = loads(&out);
    assert_eq!(
        l.get("/opt/img/libimg.so"),
        Some(&true),
        "the image's library loads: {out:?}\n{}",
        d.log_text()
    );
    assert_eq!(
        l.get("/opt/img/libcopy.so"),
        Some(&true),
        "a chmod copy-up of an image library loads: {out:?}"
    );
    for p in DRIFT_PATHS {
        assert_eq!(l.get(p), Some(&false), "{p} must not load: {out:?}\n{}", d.log_text());
    }
    assert!(!text.contains("drift-loaded"), "the drift library's code never ran: {text}");
    assert_eq!(text.matches("main-ran").count(), 2, "both programs ran to their end: {text}");
    let r = results(&out);
    assert_eq!((r.get("data"), r.get("preload")), (Some(&0), Some(&0)), "{out:?}");
    // One finding per drift file (the preload and the dlopen of /tmp/libdrift.so share one).
    let f = d.findings(4);
    let libs = library_findings(&f);
    assert_eq!(paths(&libs), DRIFT_PATHS, "{f:#?}");
    for x in &libs {
        assert_eq!(x["category"], "ADDED_LIBRARY_LOADED", "{x}");
        assert_eq!(x["action"], "blocked");
        assert_eq!(x["file"]["sha256"], fx.drift_sha.as_str());
        assert_eq!(x["process"]["comm"], "dltool", "the opening process: {x}");
        assert!(x["process"]["exe"].as_str().is_some_and(|e| e.ends_with("/opt/img/dltool")), "{x}");
        assert!(x["process"]["args"][0].as_str().is_some_and(|a| a.ends_with("dltool")), "{x}");
    }
    let layer = |p: &str| libs.iter().find(|x| x["file"]["path"] == p).unwrap()["file"]["layer"].clone();
    assert_eq!(layer("/tmp/libdrift.so"), "upper");
    assert_eq!(layer("/vol/libdrift.so"), "mount");
    assert_eq!(layer("/dev/shm/libdrift.so"), "mount");
    let st = d.status();
    assert!(st["libraries"]["enabled"].as_bool().unwrap());
    assert!(st["libraries"]["ignore_marks"].as_u64().unwrap() > 0, "{}", st["libraries"]);
    assert_eq!(st["libraries"]["ignore_errors"], 0, "{}", st["libraries"]);
}

#[test]
fn added_libraries_load_and_are_recorded_in_audit_mode() {
    if !privileged() {
        return;
    }
    let fx = fixture();
    // The drift library is a known IoC.
    let iocs = fx.s.root().join("iocs.txt");
    std::fs::write(&iocs, format!("{} test-drift-lib\n", fx.drift_sha)).unwrap();
    let d = Daemon::start(
        fx.s.root(),
        DaemonOpts {
            mode: "audit",
            globs: vec![fx.s.merged.clone()],
            extra_tables: &format!("{LIBRARIES}[ioc]\npaths = [{:?}]\n", iocs.display().to_string()),
            ..Default::default()
        },
    );
    assert!(wait_until(T, || d.log_text().contains("IoC set loaded")));
    let script =
        format!("{}cp /opt/img/dltool /tmp/dlcopy; /tmp/dlcopy; echo added_program=$?\n", load_everywhere());
    let out = fx.s.run_in_container_with(&setup(&fx.vol), &script, T);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let l = loads(&out);
    for p in DRIFT_PATHS {
        assert_eq!(l.get(p), Some(&true), "{p} loads in audit mode: {out:?}\n{}", d.log_text());
    }
    assert!(text.contains("drift-loaded"), "{text}");
    assert_eq!(results(&out).get("added_program"), Some(&0));
    let f = d.findings(5);
    let libs = library_findings(&f);
    assert_eq!(paths(&libs), DRIFT_PATHS, "{f:#?}");
    for x in &libs {
        assert_eq!(x["category"], "ADDED_MALICIOUS_LIBRARY_LOADED", "{x}");
        assert_eq!(x["action"], "audited");
        assert_eq!(x["severity"], "CRITICAL");
        assert_eq!(x["ioc"]["name"], "test-drift-lib");
        assert!(x["process"]["pid"].as_i64().unwrap() > 0);
    }
    // An added dynamic program (position-independent, so ET_DYN) is an exec finding only: the
    // kernel's own open of it for the exec is not a library load.
    let progs: Vec<&Value> = f.iter().filter(|x| x["file"]["path"] == "/tmp/dlcopy").collect();
    assert_eq!(progs.len(), 1, "{f:#?}");
    assert_eq!(progs[0]["category"], "ADDED_BINARY_EXECUTED");
    assert!(d.status()["libraries"]["by_exec"].as_u64().unwrap() >= 1);
}

#[test]
fn a_rewritten_library_and_a_file_rewritten_after_it_was_ignored_are_checked_again() {
    if !privileged() {
        return;
    }
    let fx = fixture();
    let d = with_libraries(&fx.s, "enforce", "");
    // An image data file, opened again and again, is switched off after its first open: warm
    // opens reach no daemon. A writable-layer data file is checked on every open: its bytes can
    // change without a modify event (Linux AIO), so no ignore mark is trusted for it.
    let warm = "printf 'not a library\\n' > /tmp/later.so\n\
                for i in $(seq 1 200); do cat /tmp/later.so /etc/data.txt > /dev/null; done; echo warm=$?\n";
    let out = fx.s.run_in_container_with(&setup(&fx.vol), warm, T);
    assert_eq!(results(&out).get("warm"), Some(&0), "{out:?}");
    let st = d.status();
    let (before, rechecked) =
        (st["libraries"]["open_events"].as_u64().unwrap(), st["libraries"]["rechecked"].as_u64().unwrap());
    let out = fx.s.run_in_container_with(&setup(&fx.vol), warm.lines().nth(1).unwrap(), T);
    assert_eq!(results(&out).get("warm"), Some(&0), "{out:?}");
    let st = d.status();
    let events = st["libraries"]["open_events"].as_u64().unwrap() - before;
    // 400 opens of the two files: the 200 of the writable-layer file, and the run's own set-up
    // (a fresh /dev, its script); none of the image file's.
    assert!((200..240).contains(&events), "{events} open events for 200 opens of a writable-layer file");
    assert!(st["libraries"]["rechecked"].as_u64().unwrap() - rechecked >= 200, "{:#}", st["libraries"]);
    // Rewritten into a library after it was ignored; and an image library overwritten.
    let rewrite = format!(
        "{}{}/opt/img/dltool /tmp/later.so /opt/img/libmod.so\n",
        drop_lib("/tmp/later.so"),
        drop_lib("/opt/img/libmod.so")
    );
    let out = fx.s.run_in_container_with(&setup(&fx.vol), &rewrite, T);
    let l = loads(&out);
    assert_eq!(l.get("/tmp/later.so"), Some(&false), "{out:?}\n{}", d.log_text());
    assert_eq!(l.get("/opt/img/libmod.so"), Some(&false), "{out:?}");
    let f = d.findings(2);
    let libs = library_findings(&f);
    let cat = |p: &str| libs.iter().find(|x| x["file"]["path"] == p).map(|x| x["category"].clone());
    assert_eq!(cat("/tmp/later.so"), Some("ADDED_LIBRARY_LOADED".into()), "{f:#?}");
    assert_eq!(cat("/opt/img/libmod.so"), Some("MODIFIED_LIBRARY_LOADED".into()), "{f:#?}");
}

#[test]
fn a_rule_allows_a_plugin_directory_and_coverage_can_be_switched_off() {
    if !privileged() {
        return;
    }
    let fx = fixture();
    let rule = "[[policy.rules]]\nname = \"plugins\"\naction = \"allow\"\npaths = [\"/plugins/*\"]\n";
    let d = with_libraries(&fx.s, "enforce", rule);
    let script = format!(
        "mkdir -p /plugins\n{}{}/opt/img/dltool /plugins/libdrift.so /tmp/libdrift.so\n",
        drop_lib("/plugins/libdrift.so"),
        drop_lib("/tmp/libdrift.so")
    );
    let out = fx.s.run_in_container_with(&setup(&fx.vol), &script, T);
    let l = loads(&out);
    assert_eq!(l.get("/plugins/libdrift.so"), Some(&true), "{out:?}\n{}", d.log_text());
    assert_eq!(l.get("/tmp/libdrift.so"), Some(&false), "{out:?}");
    let libs: Vec<String> = paths(&library_findings(&d.findings(1)));
    assert_eq!(libs, ["/tmp/libdrift.so"]);
    drop(d);

    // Off (the default): no open events at all, and the library loads even in enforce mode.
    let dir = fx.s.root().join("off");
    let d = Daemon::start(
        &dir,
        DaemonOpts {
            mode: "enforce",
            globs: vec![fx.s.merged.clone()],
            // The default.
            extra_tables: "",
            ..Default::default()
        },
    );
    // Scripts are still decided (found and read on the event loop, as without open events).
    let script = "/opt/img/dltool /tmp/libdrift.so\nprintf 'echo pwned\\n' > /tmp/x.sh; /bin/busybox sh /tmp/x.sh; echo script=$?\n";
    let out = fx.s.run_in_container_with(&setup(&fx.vol), script, T);
    assert_eq!(loads(&out).get("/tmp/libdrift.so"), Some(&true), "{out:?}\n{}", d.log_text());
    assert_eq!(results(&out).get("script"), Some(&126), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"));
    let st = d.status();
    assert_eq!(st["libraries"]["marked"], false);
    assert_eq!(st["libraries"]["open_events"], 0, "{}", st["libraries"]);
}

#[test]
fn a_program_run_through_the_loader_is_refused_as_a_library_when_loader_checks_are_off() {
    if !privileged() {
        return;
    }
    let fx = fixture();
    let d = Daemon::start(
        fx.s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![fx.s.merged.clone()],
            extra_tables: &format!("{LIBRARIES}[loader]\nenabled = false\n"),
            ..Default::default()
        },
    );
    let script = "cp /opt/img/dltool /tmp/prog; /lib64/ld-linux-x86-64.so.2 /tmp/prog; echo via_loader=$?\n";
    let out = fx.s.run_in_container(script, T);
    assert_eq!(
        results(&out).get("via_loader"),
        Some(&127),
        "the loader cannot open it: {out:?}\n{}",
        d.log_text()
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("main-ran"), "{out:?}");
    let f = d.findings(1);
    let libs = library_findings(&f);
    assert_eq!(paths(&libs), ["/tmp/prog"], "{f:#?}");
    assert_eq!(libs[0]["process"]["comm"], "ld-linux-x86-64", "{}", libs[0]);
}

#[test]
fn writing_an_added_program_is_never_refused_and_a_refused_execs_reread_is_no_second_finding() {
    if !privileged() {
        return;
    }
    // /usr/bin/true is a PIE: an ELF shared object to the loader, so its opens are decided.
    let (_files, s) = loader_image();
    let d = with_libraries(&s, "enforce", "");
    let script = "cp /usr/bin/true /tmp/a; echo cp=$?\n\
         cp /usr/bin/true /tmp/a; echo cp_over=$?\n\
         : > /tmp/a; echo truncate=$?\n\
         cp /usr/bin/true /tmp/a; echo again=$?\n\
         echo x >> /tmp/a; echo append=$?\n\
         cp /usr/bin/true /tmp/b; /opt/img/bash -c '/tmp/b; echo exec=$?'\n\
         cat /tmp/b > /dev/null; echo read=$?\n";
    let out = s.run_in_container(script, T);
    let r = results(&out);
    for k in ["cp", "cp_over", "truncate", "again", "append"] {
        assert_eq!(r.get(k), Some(&0), "{k}: writing never fails: {out:?}\n{}", d.log_text());
    }
    assert_eq!(r.get("exec"), Some(&126), "{out:?}");
    // cat's read of an added shared object is refused like a load (a read and a load look
    // the same at the open): one finding of its own, by cat.
    assert_eq!(r.get("read"), Some(&1), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let f = d.findings(2);
    let b: Vec<&Value> = f.iter().filter(|x| x["file"]["path"] == "/tmp/b").collect();
    let cats: Vec<(&str, &str)> = b
        .iter()
        .map(|x| (x["category"].as_str().unwrap(), x["process"]["comm"].as_str().unwrap_or("-")))
        .collect();
    assert!(cats.contains(&("ADDED_BINARY_EXECUTED", "bash")), "{cats:?}");
    assert!(
        !cats.iter().any(|(c, comm)| *c == "ADDED_LIBRARY_LOADED" && *comm == "bash"),
        "bash reading the file it could not run is no library load: {cats:?}"
    );
    assert!(f.iter().all(|x| x["file"]["path"] != "/tmp/a"), "no finding for writes: {f:#?}");
    let st = d.status();
    assert!(st["libraries"]["after_refused_exec"].as_u64() >= Some(1), "{}", st["libraries"]);
    assert!(st["libraries"]["being_written"].as_u64() >= Some(3), "{}", st["libraries"]);
}
