//! Interpreters of a real image (Debian's python3, perl, bash and dash), with `[libraries]` on:
//! what they are given by their own rules (a directory, an archive, a module, `perl -S`) and
//! what they load by themselves (`import`, `PYTHONPATH`, `-M`), decided; and what the image
//! itself does with them, never a finding.

use super::*;

const LIBRARIES: &str = "[libraries]\nenabled = true\n[findings]\naggregate_window_secs = 0\n";

/// Each line drops code and runs it through an image interpreter; `name=$?` after it.
const DROPPED: &[(&str, &str, &str)] = &[
    // name, shell lines, the file decided
    (
        "python_dir",
        "mkdir -p /tmp/app; echo 'print(\"pwned\")' > /tmp/app/__main__.py; python3 /tmp/app",
        "/tmp/app/__main__.py",
    ),
    (
        "python_zip",
        "echo 'print(\"pwned\")' > /tmp/m.txt; python3 -c 'import zipfile; z = zipfile.ZipFile(\"/tmp/app.zip\", \"w\"); z.write(\"/tmp/m.txt\", \"__main__.py\"); z.close()'; python3 /tmp/app.zip",
        "/tmp/app.zip",
    ),
    (
        "python_module",
        "echo 'print(\"pwned\")' > /tmp/evilmod.py; cd /tmp; python3 -m evilmod",
        "/tmp/evilmod.py",
    ),
    (
        "perl_path_search",
        "echo 'print \"pwned\\n\";' > /tmp/tool.pl; chmod +x /tmp/tool.pl; PATH=/tmp:$PATH perl -S tool.pl",
        "/tmp/tool.pl",
    ),
    // Loaded by the interpreter: decided at the open.
    (
        "python_import",
        "echo 'print(\"pwned\")' > /tmp/evil_imp.py; cd /tmp; python3 -c 'import evil_imp'",
        "/tmp/evil_imp.py",
    ),
    (
        "python_path",
        "mkdir -p /tmp/pp; echo 'print(\"pwned\")' > /tmp/pp/ppmod.py; PYTHONPATH=/tmp/pp python3 -c 'import ppmod'",
        "/tmp/pp/ppmod.py",
    ),
    (
        "perl_module",
        "echo 'package evilpm; print \"pwned\\n\"; 1;' > /tmp/evilpm.pm; perl -I/tmp -Mevilpm -e 1",
        "/tmp/evilpm.pm",
    ),
];

fn dropped_in(mode: &str) {
    let c = DebianContainer::new(false);
    let d = c.daemon(mode, LIBRARIES);
    let action = if mode == "enforce" { "blocked" } else { "audited" };
    for (name, lines, path) in DROPPED {
        let out = c.run(&format!("{lines}; echo {name}=$?\n"));
        let rc = results(&out).get(*name).copied();
        let text = String::from_utf8_lossy(&out.stdout);
        if mode == "enforce" {
            assert!(
                rc.is_some_and(|r| r != 0) && !text.contains("pwned"),
                "{name}: {out:?}\n{}",
                d.log_text()
            );
        } else {
            assert_eq!(rc, Some(0), "{name}: {out:?}\n{}", d.log_text());
        }
        // (A shell that finds `python3` refused in /usr/bin tries /bin too, the same file on
        // a merged /usr: two execs, two decisions.)
        assert!(
            wait_until(Duration::from_secs(10), || read_findings(&d.spool)
                .iter()
                .any(|f| f["file"]["path"] == *path)),
            "{name}: {:#?}",
            read_findings(&d.spool)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let f = read_findings(&d.spool);
    for x in &f {
        assert!(DROPPED.iter().any(|(_, _, p)| x["file"]["path"] == *p), "only the dropped files: {x:#}");
        assert_eq!(x["category"], "ADDED_SCRIPT_EXECUTED", "{x:#}");
        assert_eq!(x["action"], action, "{x:#}");
    }
    if mode == "audit" {
        assert_eq!(f.len(), DROPPED.len(), "one finding each when each runs: {f:#?}");
    }
    let st = d.status();
    assert!(st["libraries"]["code_decided"].as_u64() >= Some(3), "{}", st["libraries"]);
}

#[test]
fn code_a_real_interpreter_is_given_or_loads_is_refused_in_enforce_mode() {
    if !privileged() {
        return;
    }
    dropped_in("enforce");
}

#[test]
fn code_a_real_interpreter_is_given_or_loads_is_one_finding_in_audit_mode() {
    if !privileged() {
        return;
    }
    dropped_in("audit");
}

/// What containers of this image really run: interpreters starting and importing C
/// extension modules, the standard library's tools, pip, login and interactive shells with
/// the image's startup files, dpkg and apt, an image script, a copy-up.
const NORMAL_USE: &str =
    "python3 -c 'import json, ssl, ctypes, sqlite3, decimal, hashlib, zlib'; echo imports=$?\n\
echo '{\"a\": 1}' | python3 -m json.tool >/dev/null; echo json_tool=$?\n\
python3 -m venv --help >/dev/null; echo venv_help=$?\n\
pip --version >/dev/null; echo pip=$?\n\
python3 -c 'import site, sysconfig; sysconfig.get_paths()'; echo site=$?\n\
perl -MPOSIX -MFile::Temp -MData::Dumper -e 1; echo perl=$?\n\
HOME=/root bash -l -c true; echo bash_login=$?\n\
HOME=/root bash -i -c true </dev/null 2>/dev/null; echo bash_interactive=$?\n\
HOME=/root sh -l -c true; echo sh_login=$?\n\
HOME=/root ENV=/root/.profile sh -i </dev/null >/dev/null 2>&1; echo sh_interactive=$?\n\
HOME=/root BASH_ENV=/etc/bash.bashrc bash -c true; echo bash_env=$?\n\
dpkg -l >/dev/null; echo dpkg=$?\n\
dpkg-query -W -f='${Package}\\n' bash >/dev/null; echo dpkg_query=$?\n\
apt-cache policy bash >/dev/null; echo apt_cache=$?\n\
apt-config dump >/dev/null; echo apt_config=$?\n\
sh /usr/bin/zcat --version >/dev/null; echo image_script=$?\n\
cd /usr/bin; bash zcat --version >/dev/null; echo image_script_relative=$?; cd /\n\
bash - /usr/bin/zcat --version >/dev/null; echo image_script_dash=$?\n\
/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /usr/bin/true; echo loader=$?\n\
touch /usr/bin/ls; /usr/bin/ls / >/dev/null; echo touched=$?\n";

fn normal_use(mode: &str) {
    let c = DebianContainer::new(false);
    let d = c.daemon(mode, LIBRARIES);
    let out = c.run(NORMAL_USE);
    let r = results(&out);
    assert_eq!(r.len(), NORMAL_USE.lines().count(), "{out:?}");
    assert!(r.values().all(|v| *v == 0), "{r:?}\n{out:?}\n{}", d.log_text());
    std::thread::sleep(Duration::from_millis(500));
    let f = read_findings(&d.spool);
    assert!(f.is_empty(), "{mode}: {f:#?}");
    let st = d.status();
    assert_eq!(st["decisions"]["denied"], 0, "{}", st["decisions"]);
    assert_eq!(st["decisions"]["indirect_unverifiable"], 0, "{}", st["decisions"]);
    assert_eq!(st["health"]["state"], "ok", "{:#}", st["health"]);
    println!("{mode}: libraries {}", st["libraries"]);
}

#[test]
fn normal_use_of_a_real_image_with_libraries_on_is_no_finding_in_audit_mode() {
    if !privileged() {
        return;
    }
    normal_use("audit");
}

#[test]
fn normal_use_of_a_real_image_with_libraries_on_is_never_refused_in_enforce_mode() {
    if !privileged() {
        return;
    }
    normal_use("enforce");
}
