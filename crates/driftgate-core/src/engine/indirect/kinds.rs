//! Which image files are loaders and interpreters, what each language loads as code, and
//! where a loader's program or a non-shell interpreter's script is on its command line.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::shell;

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

/// The file name endings each language loads as code (besides shared objects, which are
/// decided as libraries): what an interpreter opens with these names is code it runs.
fn code_endings(lang: Lang) -> &'static [&'static [u8]] {
    match lang {
        Lang::Python => &[b".py", b".pyc", b".pth", b".zip"],
        Lang::Perl => &[b".pl", b".pm"],
        Lang::Ruby => &[b".rb"],
        Lang::Node => &[b".js", b".mjs", b".cjs"],
        Lang::Php => &[b".php"],
        // A shell reads data files the way it reads code: nothing is known at an open.
        Lang::Shell | Lang::Other => &[],
    }
}

/// Whether interpreter `lang` loads a file named `name` as code.
pub fn loads_as_code(lang: Lang, name: &[u8]) -> bool {
    code_endings(lang).iter().any(|e| name.ends_with(e))
}

/// Whether some interpreter loads a file named `name` as code.
pub fn code_name(name: &[u8]) -> bool {
    [Lang::Python, Lang::Perl, Lang::Ruby, Lang::Node, Lang::Php].into_iter().any(|l| loads_as_code(l, name))
}

/// For a compiled Python file, the source file it caches: `d/__pycache__/m.cpython-311.pyc`
/// and the legacy `d/m.pyc` are of `d/m.py`.
pub fn pyc_source(path: &[u8]) -> Option<Vec<u8>> {
    let stem = path.strip_suffix(b".pyc")?;
    let (dir, file) = match stem.iter().rposition(|&b| b == b'/') {
        Some(i) => (&stem[..i], &stem[i + 1..]),
        None => (&b""[..], stem),
    };
    let mut out;
    if let Some(parent) =
        dir.strip_suffix(b"/__pycache__").or(if dir == b"__pycache__" { Some(&b""[..]) } else { None })
    {
        // `m.cpython-311.opt-1`: the module name is before the first dot.
        let module = file.split(|&b| b == b'.').next()?;
        out = parent.to_vec();
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(module);
    } else {
        out = stem.to_vec();
    }
    out.extend_from_slice(b".py");
    Some(out)
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
        Lang::Shell => shell::parse(args, true).script,
        Lang::Python => super::python::parse(args).operand,
        Lang::Perl => short_opts(args, b"eE", b"I", b""),
        Lang::Ruby => short_opts(args, b"e", b"ICEFKTWx", b"r"),
        Lang::Node => node(args),
        Lang::Php => short_opts(args, b"rBRFE", b"cdzt", b"f"),
        Lang::Other => short_opts(args, b"", b"", b""),
    }
}

/// Whether a busybox applet is a shell.
pub fn shell_applet(applet: &[u8]) -> bool {
    matches!(applet, b"sh" | b"ash" | b"bash" | b"hush")
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
