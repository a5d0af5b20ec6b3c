//! Programs that run other files: the dynamic loader (`ld.so /tmp/tool`) and interpreters
//! (`sh /tmp/x.sh`, `python3 /tmp/x.py`). The kernel raises an exec event only for the image's
//! loader or interpreter; the file it is asked to run is one of its arguments. This module
//! says which image files are loaders or interpreters, and which argument names the file to
//! decide on. Pure: names and argument lists in, a verdict on which argument out.
//!
//! Out of reach by design: code given on the command line (`sh -c '…'`, `python3 -c`, `perl
//! -e`), read from stdin or a pipe, or produced by the interpreter itself (`python3 -m mod`
//! imports by module name; `eval`; a script that downloads and runs code).

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A script language, which decides how its interpreter's arguments are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Shell,
    Python,
    Perl,
    Ruby,
    Node,
    Php,
    /// A name an operator added: the first argument that is not an option is the script.
    Other,
}

/// What an image file is, for what its exec may run besides itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExecKind {
    /// A program: it runs itself.
    #[default]
    Plain,
    /// The dynamic loader: run directly, its first non-option argument is a program.
    Loader,
    /// An interpreter: its script argument is run.
    Interpreter(Lang),
    /// A multi-call binary (busybox): an interpreter when invoked as `sh` or `ash`.
    MultiCall,
}

impl ExecKind {
    pub fn is_plain(self) -> bool {
        self == ExecKind::Plain
    }
}

/// The interpreters an operator wants watched (`[scripts] interpreters`): globs on the file
/// name of the executed file (the file itself, after symlinks: `python3.11`, `perl5.36.0`).
#[derive(Debug, Clone)]
pub struct Interpreters {
    names: Vec<String>,
    set: GlobSet,
}

/// The default `[scripts] interpreters`.
/// A bad `scripts.interpreters` entry (`index`), or list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", index.map(|i| format!("[{i}]: ")).unwrap_or_default())]
pub struct InterpreterError {
    pub index: Option<usize>,
    pub message: String,
}

pub const DEFAULT_INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh*", "mksh", "busybox", "python*", "perl*", "ruby*", "node",
    "nodejs", "php*",
];

impl Interpreters {
    pub fn new(names: &[String]) -> Result<Interpreters, InterpreterError> {
        let bad = |index, message: String| InterpreterError { index, message };
        let mut b = GlobSetBuilder::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || n.contains('/') {
                return Err(bad(Some(i), format!("{n:?} is not a file name glob")));
            }
            b.add(Glob::new(n).map_err(|e| bad(Some(i), e.to_string()))?);
        }
        let set = b.build().map_err(|e| bad(None, e.to_string()))?;
        Ok(Interpreters { names: names.to_vec(), set })
    }

    pub fn defaults() -> Interpreters {
        let names: Vec<String> = DEFAULT_INTERPRETERS.iter().map(|s| s.to_string()).collect();
        Interpreters::new(&names).expect("default interpreters are valid")
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The kind of an interpreter named `file_name`, if it is one of the watched ones.
    pub fn kind_of(&self, file_name: &[u8]) -> Option<ExecKind> {
        let name = std::str::from_utf8(file_name).ok()?;
        if !self.set.is_match(name) {
            return None;
        }
        Some(match name {
            "busybox" => ExecKind::MultiCall,
            "sh" | "bash" | "dash" | "ash" | "zsh" | "mksh" | "hush" => ExecKind::Interpreter(Lang::Shell),
            n if n.starts_with("ksh") => ExecKind::Interpreter(Lang::Shell),
            n if n.starts_with("python") => ExecKind::Interpreter(Lang::Python),
            n if n.starts_with("perl") => ExecKind::Interpreter(Lang::Perl),
            n if n.starts_with("ruby") => ExecKind::Interpreter(Lang::Ruby),
            "node" | "nodejs" => ExecKind::Interpreter(Lang::Node),
            n if n.starts_with("php") => ExecKind::Interpreter(Lang::Php),
            _ => ExecKind::Interpreter(Lang::Other),
        })
    }
}

/// Whether a file name can be a dynamic loader's: glibc `ld-linux-x86-64.so.2`,
/// `ld-linux-aarch64.so.1`, `ld64.so.2`, `ld.so`, and before glibc 2.34 the real file
/// `ld-2.31.so`; musl `ld-musl-x86_64.so.1`. The name is only the cheap first test: a file is
/// a loader only if its ELF header agrees (a shared object without an interpreter of its own).
pub fn loader_name(file_name: &[u8]) -> bool {
    file_name.starts_with(b"ld") && file_name.windows(3).any(|w| w == b".so")
}

/// The file name part of a path.
pub fn base_name(path: &[u8]) -> &[u8] {
    let p = path.strip_suffix(b" (deleted)").unwrap_or(path);
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

/// Which argument of a direct loader invocation is the program: the first that is not one of
/// the loader's own options (`--list`, `--verify`, `--library-path DIR`, `--preload LIST`,
/// `--argv0 NAME`, ...). `args[0]` is the loader's own name.
pub fn loader_target(args: &[Vec<u8>]) -> Option<usize> {
    const WITH_VALUE: &[&[u8]] = &[
        b"--library-path",
        b"--inhibit-rpath",
        b"--audit",
        b"--preload",
        b"--argv0",
        b"--glibc-hwcaps-prepend",
        b"--glibc-hwcaps-mask",
    ];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        if a == b"--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if a.starts_with(b"--") {
            // `--opt=value` carries its value; `--opt value` takes the next argument.
            if !a.contains(&b'=') && WITH_VALUE.contains(&a) {
                i += 1;
            }
            i += 1;
            continue;
        }
        return Some(i);
    }
    None
}

/// Which argument of an interpreter invocation names a file of code it will run: the script,
/// or a file it loads first (`bash --rcfile F`, `node -r F`, `ruby -r F`, `php -f F`). `None`
/// when the code comes from the command line or stdin. `args[0]` is the program name.
pub fn script_target(lang: Lang, args: &[Vec<u8>]) -> Option<usize> {
    match lang {
        Lang::Shell => shell(args),
        Lang::Python => python(args),
        Lang::Perl => short_opts(args, b"eE", b"I", b""),
        Lang::Ruby => short_opts(args, b"e", b"ICEFKTWx", b"r"),
        Lang::Node => node(args),
        Lang::Php => short_opts(args, b"rBRFE", b"cdzt", b"f"),
        Lang::Other => short_opts(args, b"", b"", b""),
    }
}

/// For a multi-call binary: the applet and where its arguments start (`busybox sh x.sh` or
/// `sh x.sh` through a link named `sh`). Returns `(applet, index of the applet's argv[0])`.
pub fn multicall_applet(args: &[Vec<u8>]) -> Option<(&[u8], usize)> {
    let first = base_name(args.first()?);
    if first == b"busybox" {
        let applet = base_name(args.get(1)?);
        return Some((applet, 1));
    }
    Some((first, 0))
}

/// Whether a busybox applet is a shell.
pub fn shell_applet(applet: &[u8]) -> bool {
    matches!(applet, b"sh" | b"ash" | b"bash" | b"hush")
}

fn shell(args: &[Vec<u8>]) -> Option<usize> {
    const LONG_WITH_FILE: &[&[u8]] = &[b"--rcfile", b"--init-file"];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        if a == b"--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if a == b"-" {
            return None; // stdin
        }
        if LONG_WITH_FILE.contains(&a) {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if a.starts_with(b"--") {
            i += 1;
            continue;
        }
        if (a.starts_with(b"-") || a.starts_with(b"+")) && a.len() > 1 {
            let flags = &a[1..];
            if flags.contains(&b'c') || flags.contains(&b's') {
                return None; // a command string, or stdin
            }
            // `-o option` / `+O shopt` take the next argument (also inside a cluster: `-euo x`).
            i += 1 + flags.iter().filter(|&&f| f == b'o' || f == b'O').count();
            continue;
        }
        return Some(i);
    }
    None
}

fn python(args: &[Vec<u8>]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        if a == b"--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if a == b"-" {
            return None;
        }
        if a.starts_with(b"--") {
            // --check-hash-based-pycs MODE takes a value; other long options do not.
            i += if a == b"--check-hash-based-pycs" { 2 } else { 1 };
            continue;
        }
        if a.starts_with(b"-") {
            let flags = &a[1..];
            for (k, f) in flags.iter().enumerate() {
                match f {
                    b'c' | b'm' => return None, // code, or a module by name
                    b'W' | b'X' => {
                        // The value is the rest of the cluster, or the next argument.
                        if k + 1 == flags.len() {
                            i += 1;
                        }
                        break;
                    }
                    _ => {}
                }
            }
            i += 1;
            continue;
        }
        return Some(i);
    }
    None
}

fn node(args: &[Vec<u8>]) -> Option<usize> {
    const WITH_VALUE: &[&[u8]] =
        &[b"-C", b"--conditions", b"--input-type", b"--title", b"--env-file", b"--inspect-port"];
    const CODE: &[&[u8]] = &[b"-e", b"--eval", b"-p", b"--print"];
    const LOADS: &[&[u8]] = &[b"-r", b"--require", b"--import", b"--loader", b"--experimental-loader"];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        if a == b"--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if a == b"-" || CODE.contains(&a) {
            return None;
        }
        if LOADS.contains(&a) {
            // A preloaded module given as a path is code from a file.
            if args.get(i + 1).is_some_and(|v| v.contains(&b'/')) {
                return Some(i + 1);
            }
            i += 2;
            continue;
        }
        if a.starts_with(b"-") {
            i += if !a.contains(&b'=') && WITH_VALUE.contains(&a) { 2 } else { 1 };
            continue;
        }
        return Some(i);
    }
    None
}

/// Single-letter option languages (perl, ruby, php and operator-added interpreters):
/// `code` letters mean the code is on the command line (no script); `value` letters take a
/// value (attached, or the next argument); `file` letters take a file of code to run.
fn short_opts(args: &[Vec<u8>], code: &[u8], value: &[u8], file: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        if a == b"--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if a == b"-" {
            return None;
        }
        if a.starts_with(b"--") {
            i += 1;
            continue;
        }
        if a.starts_with(b"-") && a.len() > 1 {
            let f = a[1];
            let attached = a.len() > 2;
            if file.contains(&f) {
                if attached {
                    // `-fscript.php`: the file is in this argument; not a separate path.
                    return None;
                }
                return (i + 1 < args.len()).then_some(i + 1);
            }
            if a[1..].iter().any(|c| code.contains(c)) {
                return None;
            }
            i += if value.contains(&f) && !attached { 2 } else { 1 };
            continue;
        }
        return Some(i);
    }
    None
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            t("ld.so --library-path /tmp/lib --preload /tmp/x.so ./tool a").as_deref(),
            Some("./tool")
        );
        assert_eq!(t("ld.so --list /tmp/tool").as_deref(), Some("/tmp/tool"));
        assert_eq!(t("ld.so --argv0 nginx /tmp/tool").as_deref(), Some("/tmp/tool"));
        assert_eq!(t("ld.so --argv0=nginx /tmp/tool").as_deref(), Some("/tmp/tool"));
        assert_eq!(t("ld.so -- /tmp/tool").as_deref(), Some("/tmp/tool"));
        assert_eq!(t("ld.so --help"), None);
        assert_eq!(t("ld.so"), None);
    }

    #[test]
    fn the_script_a_shell_is_given() {
        let t = |c| target(|a| script_target(Lang::Shell, a), c);
        assert_eq!(t("sh /tmp/x.sh a b").as_deref(), Some("/tmp/x.sh"));
        assert_eq!(t("bash -x -e /tmp/x.sh").as_deref(), Some("/tmp/x.sh"));
        assert_eq!(t("bash -euo pipefail /tmp/x.sh").as_deref(), Some("/tmp/x.sh"));
        assert_eq!(t("bash -o errexit +O extglob x.sh").as_deref(), Some("x.sh"));
        assert_eq!(t("bash --norc --noprofile ./x.sh").as_deref(), Some("./x.sh"));
        assert_eq!(t("bash --rcfile /tmp/rc -i").as_deref(), Some("/tmp/rc"));
        assert_eq!(t("sh -- -weird-name.sh").as_deref(), Some("-weird-name.sh"));
        assert_eq!(t("sh -c /tmp/x.sh"), None, "-c: the argument is a command string");
        assert_eq!(t("sh -ec echo"), None);
        assert_eq!(t("sh -s arg"), None, "stdin");
        assert_eq!(t("sh -"), None);
        assert_eq!(t("sh -i"), None);
        assert_eq!(t("sh"), None);
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
        assert_eq!(t("python3 -m http.server"), None, "a module by name: out of reach");
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
        assert_eq!(
            node("node -r dotenv/config app.js").as_deref(),
            Some("dotenv/config"),
            "a path-like module"
        );
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
    fn busybox_is_a_shell_only_as_sh() {
        let a = argv("sh /tmp/x.sh");
        assert_eq!(multicall_applet(&a), Some((&b"sh"[..], 0)));
        let a = argv("/bin/busybox sh /tmp/x.sh");
        assert_eq!(multicall_applet(&a), Some((&b"sh"[..], 1)));
        assert_eq!(script_target(Lang::Shell, &a[1..]).map(|i| i + 1), Some(2));
        let a = argv("/usr/bin/ls /tmp");
        assert_eq!(multicall_applet(&a), Some((&b"ls"[..], 0)));
        assert!(shell_applet(b"sh") && shell_applet(b"ash") && !shell_applet(b"ls"));
        assert_eq!(multicall_applet(&[]), None);
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
}
