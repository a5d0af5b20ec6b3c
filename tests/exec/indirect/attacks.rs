//! An attacker with a container's default capabilities runs a dropped script or program
//! through an image interpreter or the loader, in every way that once ran it unchecked: by
//! the interpreters' own argument rules, through paths only the process can follow, with
//! arguments the daemon cannot read, and through the startup files a shell reads first.
//! Each is refused in enforce mode and is one finding in audit mode; the image's own scripts
//! started the same ways run without one.

use super::*;

const B: &str = "/opt/img/bash";
const X: &str = "/opt/img/argv_exec";
const BB: &str = "/bin/busybox";

/// How an attack is expected to be decided.
enum Want {
    /// A finding for this path, in this category.
    File(&'static str, &'static str),
    /// Decided as drift without a file to show: the category, and words of the reason.
    Unverifiable(&'static str, &'static str),
}

/// One attack: its name (the dropped script is `/tmp/<name>.sh`), the shell lines that run
/// it (`$N` is that script), and the decision.
struct Attack {
    name: &'static str,
    run: &'static str,
    want: Want,
}

const SCRIPT: &str = "ADDED_SCRIPT_EXECUTED";
const BINARY: &str = "ADDED_BINARY_EXECUTED";

fn attacks() -> Vec<Attack> {
    use Want::*;
    let a = |name, run, want| Attack { name, run, want };
    vec![
        // The interpreters' own argument rules.
        a("lone_dash_sh", "$X $BB sh - $N", File("$N", SCRIPT)),
        a("lone_dash_bash", "cd /tmp; $B - lone_dash_bash.sh", File("$N", SCRIPT)),
        a("login_sh", "$X $BB -sh $N", File("$N", SCRIPT)),
        a("login_ash", "$X $BB -ash $N", File("$N", SCRIPT)),
        a("exec_a_login", "$B -c \"exec -a -sh $BB $N\"", File("$N", SCRIPT)),
        a("busybox_busybox", "$BB busybox sh $N", File("$N", SCRIPT)),
        a("busybox_hard_link", "$X /opt/img/bbl sh $N", File("$N", SCRIPT)),
        a("rcfile_and_script", "$B --rcfile /opt/img/runme.sh $N", File("$N", SCRIPT)),
        a("path_search", "cd /; PATH=/tmp:/bin $B path_search.sh", File("$N", SCRIPT)),
        // What the daemon could not read, resolve or reach.
        a(
            "many_options",
            "$B $(i=0; while [ $i -lt 300 ]; do printf -- '-e '; i=$((i+1)); done) $N",
            Unverifiable(SCRIPT, "not read whole"),
        ),
        a("proc_self_root", "$B /proc/self/root$N", File("$N", SCRIPT)),
        a("proc_self_cwd", "cd /tmp; $B /proc/self/cwd/proc_self_cwd.sh", File("$N", SCRIPT)),
        a("proc_pid_fd", "exec 3<$N; $B /proc/$$/fd/3", Unverifiable(SCRIPT, "could not be followed")),
        a("proc_thread_self_fd", "$B /proc/thread-self/fd/3 3<$N", File("$N", SCRIPT)),
        a("dev_fd_file", "rm /dev/fd; mkdir /dev/fd; cp $N /dev/fd/5; $B /dev/fd/5", File("/dev/fd/5", SCRIPT)),
        a("dev_stdin_file", "rm /dev/stdin; cp $N /dev/stdin; $B /dev/stdin", File("/dev/stdin", SCRIPT)),
        a("long_cwd", LONG_CWD, File("long_cwd.sh", SCRIPT)),
        a("chroot_no_chdir", "$X --chroot /opt /img/bash bash tmp/chroot_no_chdir.sh", File("$N", SCRIPT)),
        a("chroot_relative_exec", "$X --chroot /opt opt/img/bash bash tmp/chroot_relative_exec.sh", File("$N", SCRIPT)),
        a("vvar_argument", "$X --vvar $B bash $N", Unverifiable(SCRIPT, "argument list could not be read")),
        // Code the shell runs before its argument.
        a("env_interactive", "ENV=$N $BB sh -i </dev/null", File("$N", SCRIPT)),
        a("bash_env", "BASH_ENV=$N $B /opt/img/runme.sh", File("$N", SCRIPT)),
        a("login_profile", "mkdir -p /tmp/h; cp $N /tmp/h/.profile; HOME=/tmp/h $X $BB -sh -c true", File("/tmp/h/.profile", SCRIPT)),
        a("bash_profile", "mkdir -p /tmp/hb; cp $N /tmp/hb/.bash_profile; HOME=/tmp/hb $B -l -c true", File("/tmp/hb/.bash_profile", SCRIPT)),
        // The loader running a non-PIE program (not a shared object: no library open decides it).
        a("loader_proc_root", "cp /opt/img/nopie /tmp/lp; $LD /proc/self/root/tmp/lp", File("/tmp/lp", BINARY)),
        a("loader_vvar", "cp /opt/img/nopie /tmp/lv; $X --vvar $LD ld.so /tmp/lv", Unverifiable(BINARY, "argument list could not be read")),
        a(
            "loader_many_options",
            "cp /opt/img/nopie /tmp/lm; $LD $(i=0; while [ $i -lt 150 ]; do printf -- '--argv0 x '; i=$((i+1)); done) /tmp/lm",
            Unverifiable(BINARY, "not read whole"),
        ),
        a("loader_chroot", "cp /opt/img/nopie /tmp/lc; $X --chroot /opt /img/ld.so ld.so tmp/lc", File("/tmp/lc", BINARY)),
    ]
}

/// A working directory deeper than PATH_MAX, reached one relative `cd` at a time.
const LONG_CWD: &str = "i=0; while [ $i -lt 45 ]; do \
    mkdir -p aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; \
    cd aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; \
    i=$((i+1)); done; cp $N long_cwd.sh; $B long_cwd.sh";

/// The image's own script, started in each of those ways: never refused, never a finding.
const CONTROLS: &[(&str, &str)] = &[
    ("lone_dash", "$B - /opt/img/runme.sh"),
    ("login_sh", "HOME=/ $X $BB -sh /opt/img/runme.sh"),
    ("busybox_busybox", "$BB busybox sh /opt/img/runme.sh"),
    ("busybox_hard_link", "$X /opt/img/bbl sh /opt/img/runme.sh"),
    ("rcfile", "$B --rcfile /opt/img/runme.sh /opt/img/runme.sh"),
    ("path_search", "cd /; PATH=/opt/img:/bin $B runme.sh"),
    ("proc_self_root", "$B /proc/self/root/opt/img/runme.sh"),
    ("proc_self_cwd", "cd /opt/img; $B /proc/self/cwd/runme.sh"),
    ("proc_thread_self_fd", "$B /proc/thread-self/fd/3 3</opt/img/runme.sh"),
    ("dev_fd", "$B /dev/fd/3 3</opt/img/runme.sh"),
    ("chroot", "$X --chroot /opt /img/bash bash /img/runme.sh"),
    ("bash_env", "BASH_ENV=/opt/img/runme.sh $B -c true"),
    ("env_interactive", "ENV=/opt/img/runme.sh $BB sh -i </dev/null"),
    ("loader", "$LD /opt/img/nopie"),
    ("loader_chroot", "$X --chroot /opt /img/ld.so ld.so /img/nopie"),
];

/// The loader image, plus: the attack tool, a hard link of busybox (`/opt/img/bbl`), a
/// dynamic non-PIE program, and the loader under `/opt/img` (reachable from a chroot there).
fn image() -> (tempfile::TempDir, tempfile::TempDir, Scratch) {
    let (files, mut s) = super::image();
    let tools = tempfile::tempdir().unwrap();
    let tool = static_tool(tools.path(), "argv_exec");
    let nopie = tools.path().join("nopie");
    let src = tools.path().join("nopie.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let mut cmd = std::process::Command::new("gcc");
    cmd.args(["-no-pie", "-o"]).arg(&nopie).arg(&src);
    assert!(run_with_deadline(cmd, T).status.success());
    s.umount();
    let lower = s.lower();
    for (dst, src) in [("opt/img/argv_exec", tool.as_path()), ("opt/img/nopie", nopie.as_path())] {
        std::fs::copy(src, lower.join(dst)).unwrap();
    }
    std::fs::hard_link(lower.join("bin/busybox"), lower.join("opt/img/bbl")).unwrap();
    std::fs::create_dir_all(lower.join("opt/lib64")).unwrap();
    std::fs::create_dir_all(lower.join("opt/lib/x86_64-linux-gnu")).unwrap();
    std::fs::copy(lower.join(LD.trim_start_matches('/')), lower.join("opt/img/ld.so")).unwrap();
    std::fs::copy(lower.join(LD.trim_start_matches('/')), lower.join("opt/lib64/ld-linux-x86-64.so.2"))
        .unwrap();
    std::fs::copy(
        lower.join("lib/x86_64-linux-gnu/libc.so.6"),
        lower.join("opt/lib/x86_64-linux-gnu/libc.so.6"),
    )
    .unwrap();
    s.mount();
    (files, tools, s)
}

fn expand(s: &str, name: &str) -> String {
    s.replace("$N", &format!("/tmp/{name}.sh"))
        .replace("$X", X)
        .replace("$BB", BB)
        .replace("$B", B)
        .replace("$LD", LD)
}

/// Runs one attack (or control) in its own container, printing `rc=<exit status>`.
fn run(s: &Scratch, name: &str, lines: &str) -> (i32, std::process::Output) {
    let script = format!(
        "printf 'echo pwned-{name}\\n' > /tmp/{name}.sh\n{}\nr=$?; echo; echo rc=$r\n",
        expand(lines, name)
    );
    let out = s.run_in_container(&script, T);
    (results(&out).get("rc").copied().unwrap_or(-1), out)
}

fn check_finding(f: &Value, a: &Attack, action: &str) {
    let ctx = format!("{}: {f:#}", a.name);
    assert_eq!(f["action"], action, "{ctx}");
    match &a.want {
        Want::File(path, category) => {
            assert_eq!(f["category"], *category, "{ctx}");
            let want = expand(path, a.name);
            let got = f["file"]["path"].as_str().unwrap_or_default();
            assert!(got == want || (!want.starts_with('/') && got.ends_with(&want)), "path {want}: {ctx}");
        }
        Want::Unverifiable(category, words) => {
            assert_eq!(f["category"], *category, "{ctx}");
            assert_eq!(f["file"]["layer"], "unknown", "{ctx}");
            let reason = f["reason"].as_str().unwrap_or_default();
            assert!(reason.starts_with("not verifiable: ") && reason.contains(words), "{ctx}");
        }
    }
}

fn attacks_in(mode: &str) {
    let (_files, _tools, s) = image();
    let d = every_finding(&s, mode);
    let (refused, action) = if mode == "enforce" { (126, "blocked") } else { (0, "audited") };
    let attacks = attacks();
    for (i, a) in attacks.iter().enumerate() {
        let (rc, out) = run(&s, a.name, a.run);
        assert_eq!(rc, refused, "{} in {mode} mode: {out:?}\n{}", a.name, d.log_text());
        if mode == "enforce" {
            assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"), "{}: {out:?}", a.name);
        }
        // One finding each, in order.
        let f = d.findings(i + 1);
        check_finding(&f[i], a, action);
    }
    for (name, lines) in CONTROLS {
        let (rc, out) = run(&s, name, lines);
        assert_eq!(rc, 0, "control {name}: {out:?}\n{}", d.log_text());
    }
    std::thread::sleep(Duration::from_millis(300));
    let f = read_findings(&d.spool);
    assert_eq!(f.len(), attacks.len(), "one finding per attack, none for a control: {f:#?}");
    let st = d.status();
    let unverifiable = attacks.iter().filter(|a| matches!(a.want, Want::Unverifiable(..))).count();
    assert_eq!(st["decisions"]["indirect_unverifiable"], unverifiable as u64, "{}", st["decisions"]);
}

#[test]
fn every_way_to_hand_an_image_interpreter_a_dropped_file_is_refused_in_enforce_mode() {
    if !privileged() {
        return;
    }
    attacks_in("enforce");
}

#[test]
fn every_way_to_hand_an_image_interpreter_a_dropped_file_is_one_finding_in_audit_mode() {
    if !privileged() {
        return;
    }
    attacks_in("audit");
}

#[test]
fn a_copy_of_busybox_allowed_as_an_image_copy_is_still_an_interpreter() {
    if !privileged() {
        return;
    }
    let (_files, _tools, s) = image();
    let d = Daemon::start(
        s.root(),
        DaemonOpts {
            mode: "enforce",
            globs: vec![s.merged.clone()],
            extra_tables: "[policy]\nimage_copies = \"allow\"\n[findings]\naggregate_window_secs = 0\n",
            ..Default::default()
        },
    );
    assert!(wait_until(T, || d.status()["containers"][0]["indexed_layers"].as_u64() > Some(0)));
    let out = s.run_in_container(
        "printf 'echo pwned\\n' > /tmp/x.sh\n\
         cp /bin/busybox /tmp/sh; /tmp/sh /tmp/x.sh; echo named_sh=$?\n\
         cp /bin/busybox /tmp/bbx; /opt/img/argv_exec /tmp/bbx sh /tmp/x.sh; echo other_name=$?\n\
         /opt/img/argv_exec /tmp/bbx true; echo copy_runs=$?\n",
        T,
    );
    let r = results(&out);
    assert_eq!((r["named_sh"], r["other_name"], r["copy_runs"]), (126, 126, 0), "{out:?}\n{}", d.log_text());
    let f = d.findings(2);
    assert!(f.iter().all(|x| x["file"]["path"] == "/tmp/x.sh" && x["category"] == SCRIPT), "{f:#?}");
    assert_eq!(f[0]["file"]["interpreter"]["path"], "/tmp/sh", "{f:#?}");
}

#[test]
fn an_interpreters_execve_check_is_decided_as_a_script() {
    if !privileged() {
        return;
    }
    let (_files, _tools, s) = image();
    for (mode, want) in [("enforce", "check=EPERM"), ("audit", "check=ok")] {
        let d = Daemon::start(
            &s.root().join(mode),
            DaemonOpts {
                mode,
                globs: vec![s.merged.clone()],
                extra_tables: "[findings]\naggregate_window_secs = 0\n",
                ..Default::default()
            },
        );
        let out = s.run_in_container(
            "printf 'echo pwned\\n' > /tmp/c.sh; chmod +x /tmp/c.sh\n\
             /opt/img/argv_exec --check /tmp/c.sh sh\n\
             /opt/img/argv_exec --check /opt/img/runme.sh sh\n",
            T,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, [want, "check=ok"], "{mode}: {out:?}\n{}", d.log_text());
        let f = d.findings(1);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0]["file"]["path"], "/tmp/c.sh");
        assert_eq!(
            f[0]["category"], SCRIPT,
            "AT_EXECVE_CHECK is an interpreter asking about a script: {f:#?}"
        );
        drop(d);
        let _ = s.run_in_container("rm -f /tmp/c.sh\n", T);
    }
}
