use super::*;

fn argv(s: &str) -> Vec<Vec<u8>> {
    s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
}

fn target(f: impl Fn(&[Vec<u8>]) -> Option<usize>, cmd: &str) -> Option<String> {
    let a = argv(cmd);
    f(&a).map(|i| String::from_utf8(a[i].clone()).unwrap())
}

#[test]
fn the_program_a_loader_is_asked_to_run() {
    let t = |c| target(loader_target, c);
    assert_eq!(t("/lib64/ld-linux-x86-64.so.2 /tmp/tool -v").as_deref(), Some("/tmp/tool"));
    assert_eq!(t("ld.so --library-path /tmp/lib --preload /tmp/x.so ./tool a").as_deref(), Some("./tool"));
    assert_eq!(t("ld.so --list /tmp/tool").as_deref(), Some("/tmp/tool"));
    assert_eq!(t("ld.so --argv0 nginx /tmp/tool").as_deref(), Some("/tmp/tool"));
    assert_eq!(t("ld.so --argv0=nginx /tmp/tool").as_deref(), Some("/tmp/tool"));
    assert_eq!(t("ld.so -- /tmp/tool").as_deref(), Some("/tmp/tool"));
    assert_eq!(t("ld.so --help"), None);
    assert_eq!(t("ld.so"), None);
}

#[test]
fn the_script_python_is_given() {
    let t = |c| target(|a| script_target(Lang::Python, a), c);
    assert_eq!(t("python3 /tmp/x.py --flag").as_deref(), Some("/tmp/x.py"));
    assert_eq!(t("python3 -u -B x.py").as_deref(), Some("x.py"));
    assert_eq!(t("python3 -W ignore x.py").as_deref(), Some("x.py"));
    assert_eq!(t("python3 -Wignore x.py").as_deref(), Some("x.py"));
    assert_eq!(t("python3 -X dev -E x.py").as_deref(), Some("x.py"));
    assert_eq!(t("python3 --check-hash-based-pycs always x.py").as_deref(), Some("x.py"));
    assert_eq!(t("python3 -c import"), None);
    assert_eq!(t("python3 -uc import"), None);
    assert_eq!(t("python3 -"), None);
    assert_eq!(t("python3"), None);
}

#[test]
fn the_script_perl_ruby_node_php_and_others_are_given() {
    let perl = |c| target(|a| script_target(Lang::Perl, a), c);
    assert_eq!(perl("perl -w -I /opt/lib /tmp/x.pl").as_deref(), Some("/tmp/x.pl"));
    assert_eq!(perl("perl -I/opt/lib x.pl").as_deref(), Some("x.pl"));
    assert_eq!(perl("perl -e print"), None);
    assert_eq!(perl("perl -ne print"), None);
    let ruby = |c| target(|a| script_target(Lang::Ruby, a), c);
    assert_eq!(ruby("ruby -r /tmp/evil.rb -e 1").as_deref(), Some("/tmp/evil.rb"));
    assert_eq!(ruby("ruby -I lib x.rb").as_deref(), Some("x.rb"));
    assert_eq!(ruby("ruby -e puts"), None);
    let node = |c| target(|a| script_target(Lang::Node, a), c);
    assert_eq!(node("node /app/server.js").as_deref(), Some("/app/server.js"));
    assert_eq!(node("node --inspect-port 9230 x.js").as_deref(), Some("x.js"));
    assert_eq!(node("node -r /tmp/hook.js app.js").as_deref(), Some("/tmp/hook.js"));
    assert_eq!(node("node -r dotenv/config app.js").as_deref(), Some("dotenv/config"), "a path-like module");
    assert_eq!(node("node -r dotenv app.js").as_deref(), Some("app.js"), "a module by name");
    assert_eq!(node("node -e 1"), None);
    assert_eq!(node("node --max-old-space-size=512 x.js").as_deref(), Some("x.js"));
    let php = |c| target(|a| script_target(Lang::Php, a), c);
    assert_eq!(php("php -f /tmp/x.php").as_deref(), Some("/tmp/x.php"));
    assert_eq!(php("php -d memory_limit=1G /tmp/x.php").as_deref(), Some("/tmp/x.php"));
    assert_eq!(php("php -r phpinfo();"), None);
    let other = |c| target(|a| script_target(Lang::Other, a), c);
    assert_eq!(other("lua -x /tmp/x.lua").as_deref(), Some("/tmp/x.lua"));
}

#[test]
fn interpreters_and_loaders_are_told_by_file_name() {
    let i = Interpreters::defaults();
    assert_eq!(i.kind_of(b"python3.11"), Some(ExecKind::Interpreter(Lang::Python)));
    assert_eq!(i.kind_of(b"bash"), Some(ExecKind::Interpreter(Lang::Shell)));
    assert_eq!(i.kind_of(b"perl5.36.0"), Some(ExecKind::Interpreter(Lang::Perl)));
    assert_eq!(i.kind_of(b"busybox"), Some(ExecKind::MultiCall));
    assert_eq!(i.kind_of(b"ls"), None);
    assert_eq!(i.kind_of(b"shred"), None, "names match whole");
    let custom = Interpreters::new(&["lua*".to_string()]).unwrap();
    assert_eq!(custom.kind_of(b"lua5.4"), Some(ExecKind::Interpreter(Lang::Other)));
    assert_eq!(custom.kind_of(b"bash"), None);
    assert!(Interpreters::new(&["/usr/bin/python".to_string()]).is_err());
    assert!(Interpreters::new(&["[".to_string()]).is_err());
    for l in [
        &b"ld-linux-x86-64.so.2"[..],
        b"ld-linux.so.2",
        b"ld-musl-x86_64.so.1",
        b"ld64.so.2",
        b"ld.so",
        b"ld-2.31.so",
    ] {
        assert!(loader_name(l), "{}", String::from_utf8_lossy(l));
    }
    for n in [&b"ld"[..], b"ldd", b"ldconfig", b"libc.so.6", b"busybox"] {
        assert!(!loader_name(n), "{}", String::from_utf8_lossy(n));
    }
    assert_eq!(base_name(b"/usr/bin/python3.11"), b"python3.11");
    assert_eq!(base_name(b"/bin/ls (deleted)"), b"ls");
}

/// A pending exec's environment and terminal, for the planner.
#[derive(Default)]
struct Ctx {
    env: Vec<(&'static str, &'static str)>,
    tty: bool,
}

impl ExecContext for Ctx {
    fn env(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        Ok(self.env.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_bytes().to_vec()).collect())
    }
    fn home(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let h = self.env("HOME")?;
        Ok(if h.is_empty() { vec![b"/root".to_vec()] } else { h })
    }
    fn stdin_is_terminal(&mut self) -> bool {
        self.tty
    }
}

/// The plan, as `role=candidate|candidate` strings (or `unverifiable`).
fn planned(kind: ExecKind, file: &str, cmd: &str, ctx: &mut Ctx) -> Vec<String> {
    planned_cut(kind, file, &argv(cmd), true, ctx)
}

fn planned_cut(kind: ExecKind, file: &str, a: &[Vec<u8>], complete: bool, ctx: &mut Ctx) -> Vec<String> {
    match plan(kind, file.as_bytes(), a, complete, ctx) {
        Plan::Unverifiable(_) => vec!["unverifiable".into()],
        Plan::Run(codes) => codes
            .iter()
            .map(|c| {
                let cands: Vec<String> =
                    c.candidates.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
                format!("{}={}", c.role, cands.join("|"))
            })
            .collect(),
    }
}

const SH: ExecKind = ExecKind::Interpreter(Lang::Shell);

#[test]
fn shells_follow_their_own_option_rules() {
    let mut c = Ctx::default();
    let cases: &[(&str, &str, &[&str])] = &[
        ("bash", "bash /tmp/x.sh a b", &["script=/tmp/x.sh"]),
        ("bash", "bash -x -e /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("bash", "bash -euo pipefail /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("bash", "bash -o errexit +O extglob ./x.sh", &["script=./x.sh"]),
        ("bash", "bash --norc --noprofile ./x.sh", &["script=./x.sh"]),
        // A lone `-` ends the options, as `--` does: the next operand is the script.
        ("dash", "sh - /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("bash", "bash - ./x.sh", &["script=./x.sh"]),
        ("dash", "sh -- /tmp/-w.sh", &["script=/tmp/-w.sh"]),
        ("dash", "sh -", &[]),
        // The rcfile and the script: both are run.
        ("bash", "bash --rcfile /opt/rc /tmp/x.sh", &["--rcfile=/opt/rc", "script=/tmp/x.sh"]),
        ("dash", "sh -c /tmp/x.sh", &[]),
        ("dash", "sh -ec echo", &[]),
        ("dash", "sh -s /tmp/x.sh", &[]),
        ("dash", "sh", &[]),
    ];
    for (file, cmd, want) in cases {
        assert_eq!(planned(SH, file, cmd, &mut c), *want, "{file}: {cmd}");
    }
}

#[test]
fn a_script_named_without_a_slash_is_looked_for_in_the_working_directory_then_path() {
    let mut c = Ctx { env: vec![("PATH", "/usr/bin:/opt/bin")], ..Default::default() };
    assert_eq!(planned(SH, "bash", "bash x.sh", &mut c), ["script=x.sh|/usr/bin/x.sh|/opt/bin/x.sh"]);
    let mut c = Ctx::default();
    let got = planned(SH, "bash", "bash x.sh", &mut c);
    assert!(got[0].starts_with("script=x.sh|/usr/local/sbin/x.sh|"), "no PATH: the default one: {got:?}");
    let mut c = Ctx { env: vec![("PATH", "/usr/bin")], ..Default::default() };
    let perl = ExecKind::Interpreter(Lang::Perl);
    assert_eq!(planned(perl, "perl", "perl -S tool.pl", &mut c), ["script=/usr/bin/tool.pl|tool.pl"]);
    assert_eq!(planned(perl, "perl", "perl -wS tool.pl", &mut c), ["script=/usr/bin/tool.pl|tool.pl"]);
    assert_eq!(planned(perl, "perl", "perl tool.pl", &mut c), ["script=tool.pl"]);
    assert_eq!(planned(perl, "perl", "perl -S /opt/t.pl", &mut c), ["script=/opt/t.pl"]);
    assert_eq!(planned(perl, "perl", "perl -I /opt/lib -Mstrict x.pl", &mut c), ["script=x.pl"]);
    assert_eq!(planned(perl, "perl", "perl -ne print x", &mut c), Vec::<String>::new());
}

#[test]
fn startup_files_are_the_ones_each_shell_reads() {
    let env = vec![("HOME", "/home/u"), ("BASH_ENV", "/tmp/benv"), ("ENV", "$HOME/.shrc")];
    let mut c = Ctx { env: env.clone(), ..Default::default() };
    // Non-interactive bash reads BASH_ENV before its script (or command string).
    assert_eq!(planned(SH, "bash", "bash /tmp/x.sh", &mut c), ["BASH_ENV=/tmp/benv", "script=/tmp/x.sh"]);
    assert_eq!(planned(SH, "bash", "bash -c true", &mut c), ["BASH_ENV=/tmp/benv"]);
    // bash invoked as sh, or --posix, is a POSIX shell: no BASH_ENV.
    assert_eq!(planned(SH, "bash", "sh -c true", &mut c), Vec::<String>::new());
    assert_eq!(planned(SH, "bash", "bash --posix -c true", &mut c), Vec::<String>::new());
    // Interactive: bash reads its rc files, a POSIX shell reads ENV (expanded).
    assert_eq!(
        planned(SH, "bash", "bash -i", &mut c),
        ["/etc/bash.bashrc=/etc/bash.bashrc", "~/.bashrc=/home/u/.bashrc"]
    );
    assert_eq!(planned(SH, "bash", "bash -i --norc", &mut c), Vec::<String>::new());
    assert_eq!(planned(SH, "dash", "sh -i", &mut c), ["ENV=/home/u/.shrc"]);
    assert_eq!(planned(SH, "dash", "sh -c true", &mut c), Vec::<String>::new(), "ENV: interactive only");
    // No script and no -c on a terminal: interactive.
    let mut tty = Ctx { env: env.clone(), tty: true };
    assert_eq!(planned(SH, "dash", "sh", &mut tty), ["ENV=/home/u/.shrc"]);
    assert_eq!(planned(SH, "dash", "sh /tmp/x.sh", &mut tty), ["script=/tmp/x.sh"]);
    // Login shells: -l, --login, or a name starting with `-`.
    let login = [
        "/etc/profile=/etc/profile",
        "login profile=/home/u/.bash_profile|/home/u/.bash_login|/home/u/.profile",
    ];
    assert_eq!(planned(SH, "bash", "-bash", &mut c), [login[0], login[1], "BASH_ENV=/tmp/benv"]);
    assert_eq!(planned(SH, "bash", "bash -l -c true", &mut c)[..2], login);
    assert_eq!(planned(SH, "bash", "bash --login -c true", &mut c)[..2], login);
    assert_eq!(planned(SH, "bash", "bash --noprofile -l -c true", &mut c), ["BASH_ENV=/tmp/benv"]);
    assert_eq!(
        planned(SH, "dash", "-sh", &mut c),
        ["/etc/profile=/etc/profile", "login profile=/home/u/.profile"]
    );
    // No HOME: the context's fallback (the passwd entry).
    let mut nohome = Ctx::default();
    assert_eq!(planned(SH, "dash", "-sh", &mut nohome)[1], "login profile=/root/.profile");
    // A variable set twice: both values are looked at.
    let mut twice = Ctx { env: vec![("BASH_ENV", "/a"), ("BASH_ENV", "/b")], ..Default::default() };
    assert_eq!(planned(SH, "bash", "bash -c :", &mut twice), ["BASH_ENV=/a", "BASH_ENV=/b"]);
    // An expansion driftgate does not evaluate: unverifiable, never skipped.
    let mut expand = Ctx { env: vec![("BASH_ENV", "$(cat /tmp/p)")], ..Default::default() };
    assert_eq!(planned(SH, "bash", "bash -c :", &mut expand), ["unverifiable"]);
    let mut expand = Ctx { env: vec![("BASH_ENV", "${HOME}/x"), ("HOME", "/h")], ..Default::default() };
    assert_eq!(planned(SH, "bash", "bash -c :", &mut expand), ["BASH_ENV=/h/x"]);
    let mut expand = Ctx { env: vec![("BASH_ENV", "$HOMEDIR/x"), ("HOME", "/h")], ..Default::default() };
    assert_eq!(planned(SH, "bash", "bash -c :", &mut expand), ["unverifiable"]);
}

#[test]
fn busybox_picks_its_applet_by_its_own_rules() {
    let mut c = Ctx { env: vec![("HOME", "/root")], ..Default::default() };
    let bb = ExecKind::MultiCall;
    let cases: &[(&str, &[&str])] = &[
        ("sh /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("/bin/busybox sh /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("busybox busybox sh /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("busybox /bin/ash /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("busybox-1.36 sh /tmp/x.sh", &["script=/tmp/x.sh"]),
        ("ash - /tmp/x.sh", &["script=/tmp/x.sh"]),
        // A login shell, by a leading `-` on the applet's name.
        ("-sh /tmp/x.sh", &["/etc/profile=/etc/profile", "login profile=/root/.profile", "script=/tmp/x.sh"]),
        ("-/bin/ash", &["/etc/profile=/etc/profile", "login profile=/root/.profile"]),
        ("ls /tmp/x.sh", &[]),
        ("busybox --help sh", &[]),
        ("busybox", &[]),
    ];
    for (cmd, want) in cases {
        assert_eq!(planned(bb, "busybox", cmd, &mut c), *want, "{cmd}");
    }
    let a = argv("busybox busybox sh /tmp/x.sh");
    match plan(bb, b"busybox", &a, true, &mut c) {
        Plan::Run(codes) => assert_eq!(codes[0].arg, Some(3), "the index is in the whole argument list"),
        p => panic!("{p:?}"),
    }
}

#[test]
fn python_runs_directories_archives_modules_and_its_startup_file() {
    let py = ExecKind::Interpreter(Lang::Python);
    let mut c = Ctx { env: vec![("PYTHONPATH", "/opt/lib"), ("PYTHONSTARTUP", "/tmp/st.py")], tty: false };
    assert_eq!(planned(py, "python3", "python3 /tmp/app", &mut c), ["script=/tmp/app"]);
    let a = argv("python3 /tmp/app");
    let Plan::Run(codes) = plan(py, b"python3", &a, true, &mut c) else { panic!() };
    assert!(codes[0].python_dir, "a directory runs its __main__.py");
    assert_eq!(planned(py, "python3", "python3 x.zip", &mut c), ["script=x.zip"]);
    assert_eq!(
        planned(py, "python3", "python3 -m tool.cli", &mut c),
        ["module=tool/cli.py|tool/cli/__main__.py|/opt/lib/tool/cli.py|/opt/lib/tool/cli/__main__.py"]
    );
    assert_eq!(planned(py, "python3", "python3 -I -m json.tool", &mut c), Vec::<String>::new());
    assert_eq!(planned(py, "python3", "python3 -E -m x", &mut c), ["module=x.py|x/__main__.py"]);
    assert_eq!(
        planned(py, "python3", "python3 -mx", &mut c),
        ["module=x.py|x/__main__.py|/opt/lib/x.py|/opt/lib/x/__main__.py"]
    );
    assert_eq!(planned(py, "python3", "python3 -c pass", &mut c), Vec::<String>::new());
    assert_eq!(planned(py, "python3", "python3 -i", &mut c), ["PYTHONSTARTUP=/tmp/st.py"]);
    let mut tty = Ctx { env: vec![("PYTHONSTARTUP", "/tmp/st.py")], tty: true };
    assert_eq!(planned(py, "python3", "python3", &mut tty), ["PYTHONSTARTUP=/tmp/st.py"]);
    assert_eq!(planned(py, "python3", "python3 -E", &mut tty), Vec::<String>::new());
}

#[test]
fn an_argument_list_read_in_part_is_unverifiable_where_the_operand_is_not_in_it() {
    let mut c = Ctx::default();
    let mut many = vec![b"bash".to_vec()];
    many.extend(std::iter::repeat_n(b"-e".to_vec(), 300));
    many.push(b"/tmp/x.sh".to_vec());
    let cut = &many[..256];
    assert_eq!(planned_cut(SH, "bash", cut, false, &mut c), ["unverifiable"]);
    assert_eq!(planned_cut(SH, "bash", &many, true, &mut c), ["script=/tmp/x.sh"]);
    // The operand comes before the cut: the rest are its arguments.
    let mut early = argv("bash /tmp/x.sh");
    early.extend(std::iter::repeat_n(b"a".to_vec(), 300));
    assert_eq!(planned_cut(SH, "bash", &early[..256], false, &mut c), ["script=/tmp/x.sh"]);
    // The last element read may be cut short itself: not trusted as a path or an option, but
    // a command string that was cut is still a command string.
    assert_eq!(planned_cut(SH, "bash", &argv("bash -e /tmp/x.s"), false, &mut c), ["unverifiable"]);
    assert_eq!(planned_cut(SH, "bash", &argv("bash -e -o"), false, &mut c), ["unverifiable"]);
    assert_eq!(planned_cut(SH, "bash", &argv("bash -c mkdir"), false, &mut c), Vec::<String>::new());
    assert_eq!(
        planned_cut(ExecKind::MultiCall, "busybox", &argv("busybox sh -c mkdir"), false, &mut c),
        Vec::<String>::new()
    );
    assert_eq!(planned_cut(SH, "bash", &argv("bash -s"), false, &mut c), ["unverifiable"]);
    let py = ExecKind::Interpreter(Lang::Python);
    assert_eq!(planned_cut(py, "python3", &argv("python3 -u -B"), false, &mut c), ["unverifiable"]);
    let ld = ExecKind::Loader;
    assert_eq!(planned_cut(ld, "ld.so", &argv("ld.so --list"), false, &mut c), ["unverifiable"]);
    assert_eq!(planned_cut(ld, "ld.so", &argv("ld.so /tmp/tool a"), false, &mut c), ["program=/tmp/tool"]);
    let perl = ExecKind::Interpreter(Lang::Perl);
    assert_eq!(planned_cut(perl, "perl", &argv("perl -w"), false, &mut c), ["unverifiable"]);
}

#[test]
fn what_each_interpreter_loads_as_code() {
    assert!(loads_as_code(Lang::Python, b"/app/x.py") && loads_as_code(Lang::Python, b"m.cpython-311.pyc"));
    assert!(loads_as_code(Lang::Python, b"/usr/lib/python3/dist-packages/x.pth"));
    assert!(loads_as_code(Lang::Python, b"/tmp/app.zip") && !loads_as_code(Lang::Python, b"x.pl"));
    assert!(loads_as_code(Lang::Perl, b"Foo.pm") && loads_as_code(Lang::Node, b"x.mjs"));
    assert!(loads_as_code(Lang::Ruby, b"x.rb") && loads_as_code(Lang::Php, b"index.php"));
    assert!(!loads_as_code(Lang::Shell, b"x.sh"), "a shell's code is not known at an open");
    assert!(code_name(b"/tmp/x.js") && !code_name(b"/tmp/data.json") && !code_name(b"/tmp/x.txt"));
    let src = |p: &str| pyc_source(p.as_bytes()).map(|s| String::from_utf8(s).unwrap());
    assert_eq!(
        src("/usr/lib/python3.11/__pycache__/json.cpython-311.pyc").as_deref(),
        Some("/usr/lib/python3.11/json.py")
    );
    assert_eq!(src("/a/__pycache__/m.cpython-311.opt-1.pyc").as_deref(), Some("/a/m.py"));
    assert_eq!(src("/a/m.pyc").as_deref(), Some("/a/m.py"));
    assert_eq!(src("__pycache__/m.cpython-311.pyc").as_deref(), Some("m.py"));
    assert_eq!(src("/a/m.py"), None);
}
