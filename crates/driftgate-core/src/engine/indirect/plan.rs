//! What an exec of an image loader or interpreter will run as code, by that program's own
//! rules: every file, in the order the program reads them, each as the lookup the program
//! makes. Pure: the command line, and a [`ExecContext`] for the little of the process that the
//! rules need (its environment, its home, whether stdin is a terminal), in; a [`Plan`] out.
//!
//! When the rules need what could not be read (an argument list cut before the operand, an
//! environment variable that needs shell expansion), the plan is [`Plan::Unverifiable`]: the
//! daemon decides that as drift, so a hole in what is read is never an allowed exec.

use super::kinds::{base_name, loader_target, script_target, shell_applet, ExecKind, Lang};
use super::python;
use super::shell::{self, Dialect};
use crate::model::Executed;

/// One file of code the exec will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// What the file is to the program: `script`, `program`, `BASH_ENV`, `~/.profile`, ...
    pub role: &'static str,
    /// Where the program looks for it, in order; the first that exists is the one it runs.
    /// Absolute paths are in the process's root, relative ones from its working directory.
    pub candidates: Vec<Vec<u8>>,
    /// The index of the argument that named it, if one did.
    pub arg: Option<usize>,
    /// Python: a directory named as the script runs its `__main__.py`.
    pub python_dir: bool,
    pub executed: Executed,
}

impl Code {
    fn path(role: &'static str, path: Vec<u8>, arg: Option<usize>) -> Code {
        Code { role, candidates: vec![path], arg, python_dir: false, executed: Executed::Script }
    }
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// These files are run, in this order (none: the code comes from the command line or
    /// stdin, out of reach by design).
    Run(Vec<Code>),
    /// What is run cannot be told from what could be read: why.
    Unverifiable(String),
}

/// The parts of the pending exec that the rules need beyond its arguments.
pub trait ExecContext {
    /// Every value of an environment variable of the exec (a variable set twice has two).
    fn env(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String>;
    /// The home directory the shell uses: `HOME`, or the user's entry in the passwd file.
    fn home(&mut self) -> Result<Vec<Vec<u8>>, String>;
    /// Whether stdin is a terminal: a shell given no script and no `-c` is then interactive.
    fn stdin_is_terminal(&mut self) -> bool;
}

/// The `PATH` a shell searches when the environment has none.
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Plans the exec of `kind` (a loader or interpreter whose file is named `file_name`) with
/// `args` (`args[0]` is its program name). `complete` says the argument list was read whole.
pub fn plan(
    kind: ExecKind,
    file_name: &[u8],
    args: &[Vec<u8>],
    complete: bool,
    ctx: &mut dyn ExecContext,
) -> Plan {
    let cut = |what: &str| {
        Plan::Unverifiable(format!(
            "the argument list was not read whole ({} read) and the {what} is not among them",
            args.len()
        ))
    };
    // With a list read in part, its last element may be cut short too.
    let usable = if complete { args.len() } else { args.len().saturating_sub(1) };
    match kind {
        ExecKind::Plain => Plan::Run(Vec::new()),
        ExecKind::Loader => match loader_target(&args[..usable]) {
            Some(i) => Plan::Run(vec![Code {
                executed: Executed::Binary,
                ..Code::path("program", args[i].clone(), Some(i))
            }]),
            None if !complete => cut("program"),
            None => Plan::Run(Vec::new()),
        },
        ExecKind::MultiCall => match multicall_applet(args) {
            Some((applet, at, login)) if shell_applet(applet) => {
                let mut sub = args[at..].to_vec();
                if login && !sub[0].starts_with(b"-") {
                    sub[0].insert(0, b'-');
                }
                shift(plan_shell(Dialect::Posix, &sub, complete, ctx), at)
            }
            Some(_) => Plan::Run(Vec::new()),
            None if !complete => cut("applet"),
            None => Plan::Run(Vec::new()),
        },
        ExecKind::Interpreter(Lang::Shell) => {
            let sa = shell::parse(args, complete);
            let dialect = shell::dialect(file_name, &args[0], sa.posix);
            plan_shell(dialect, args, complete, ctx)
        }
        ExecKind::Interpreter(Lang::Python) => plan_python(args, complete, ctx),
        ExecKind::Interpreter(Lang::Perl) => plan_perl(args, complete, ctx),
        ExecKind::Interpreter(lang) => match script_target(lang, &args[..usable]) {
            Some(i) => Plan::Run(vec![Code::path("script", args[i].clone(), Some(i))]),
            None if !complete => cut("script"),
            None => Plan::Run(Vec::new()),
        },
    }
}

fn shift(p: Plan, by: usize) -> Plan {
    match p {
        Plan::Run(codes) => {
            Plan::Run(codes.into_iter().map(|c| Code { arg: c.arg.map(|a| a + by), ..c }).collect())
        }
        u => u,
    }
}

/// busybox's own rules for which applet runs: the program name without a leading `-` (a
/// login shell), by its last component; a name starting with `busybox` (whatever the file is
/// called) takes the applet from the next argument, again and again (`busybox busybox sh`).
/// Returns the applet, the index of its own `argv[0]`, and whether it is a login shell.
/// Whether an exec of a `kind` file with arguments `args` starts a shell or an interpreter
/// (what a reverse shell is): an interpreter, or a multi-call binary invoked as a shell.
pub fn starts_interpreter(kind: ExecKind, args: &[Vec<u8>]) -> bool {
    match kind {
        ExecKind::Interpreter(_) => true,
        ExecKind::MultiCall => {
            multicall_applet(args).is_some_and(|(applet, _, _)| super::kinds::shell_applet(applet))
        }
        ExecKind::Plain | ExecKind::Loader => false,
    }
}

pub fn multicall_applet(args: &[Vec<u8>]) -> Option<(&[u8], usize, bool)> {
    let a0 = args.first()?;
    let login = a0.first() == Some(&b'-');
    let mut name = base_name(a0.strip_prefix(b"-").unwrap_or(a0));
    let mut at = 0;
    while name.starts_with(b"busybox") {
        at += 1;
        let next = args.get(at)?;
        if next.starts_with(b"--") {
            return None; // --help, --list, --install: no applet runs
        }
        // `busybox /bin/sh x` runs `sh`: the applet is the last component.
        name = next.rsplit(|&b| b == b'/').next().unwrap_or(next);
    }
    Some((name, at, login && at == 0))
}

fn plan_shell(dialect: Dialect, args: &[Vec<u8>], complete: bool, ctx: &mut dyn ExecContext) -> Plan {
    match shell_codes(dialect, args, complete, ctx) {
        Ok(c) => Plan::Run(c),
        Err(why) => Plan::Unverifiable(why),
    }
}

fn shell_codes(
    dialect: Dialect,
    args: &[Vec<u8>],
    complete: bool,
    ctx: &mut dyn ExecContext,
) -> Result<Vec<Code>, String> {
    let sa = shell::parse(args, complete);
    if sa.incomplete {
        return Err(format!(
            "the argument list was not read whole ({} read) and the shell's options run past it",
            args.len()
        ));
    }
    let bash = dialect == Dialect::Bash;
    let interactive =
        sa.interactive || (sa.script.is_none() && !sa.command && !sa.stdin && ctx.stdin_is_terminal());
    let mut codes = Vec::new();
    if sa.login && !(bash && sa.noprofile) {
        codes.push(Code::path("/etc/profile", b"/etc/profile".to_vec(), None));
        for home in ctx.home()? {
            let names: &[&[u8]] =
                if bash { &[b".bash_profile", b".bash_login", b".profile"] } else { &[b".profile"] };
            let candidates = names.iter().map(|n| join(&home, n)).collect();
            codes.push(Code { candidates, ..Code::path("login profile", Vec::new(), None) });
        }
    }
    if bash {
        if interactive && !sa.login && !sa.norc && sa.rcfile.is_none() {
            codes.push(Code::path("/etc/bash.bashrc", b"/etc/bash.bashrc".to_vec(), None));
            for home in ctx.home()? {
                codes.push(Code::path("~/.bashrc", join(&home, b".bashrc"), None));
            }
        }
        if !interactive {
            for v in ctx.env("BASH_ENV")? {
                codes.push(Code::path("BASH_ENV", expand(&v, "BASH_ENV", ctx)?, None));
            }
        }
    } else if interactive {
        for v in ctx.env("ENV")? {
            codes.push(Code::path("ENV", expand(&v, "ENV", ctx)?, None));
        }
    }
    if let Some(r) = sa.rcfile {
        codes.push(Code::path("--rcfile", args[r].clone(), Some(r)));
    }
    if let Some(i) = sa.script {
        let name = &args[i];
        let code = if name.contains(&b'/') {
            Code::path("script", name.clone(), Some(i))
        } else {
            // Opened from the working directory, else searched for in PATH (bash's rule;
            // looked at for every shell, so that none is given less than it may run).
            let mut candidates = vec![name.clone()];
            candidates.extend(path_dirs(ctx)?.iter().map(|d| join(d, name)));
            Code { candidates, ..Code::path("script", Vec::new(), Some(i)) }
        };
        codes.push(code);
    }
    Ok(codes)
}

/// `dir/name` (an empty directory is the working directory, as in `PATH`).
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The directories of `PATH`, in order (of every value, if it is set twice).
fn path_dirs(ctx: &mut dyn ExecContext) -> Result<Vec<Vec<u8>>, String> {
    let mut values = ctx.env("PATH")?;
    if values.is_empty() {
        values.push(DEFAULT_PATH.to_vec());
    }
    Ok(values.iter().flat_map(|v| v.split(|&b| b == b':').map(<[u8]>::to_vec)).collect())
}

/// A startup-file variable's value as the shell expands it: `$HOME` and `${HOME}` are
/// followed; any other expansion (a variable, a command substitution) is not evaluated here,
/// so such a value is unverifiable.
fn expand(v: &[u8], var: &str, ctx: &mut dyn ExecContext) -> Result<Vec<u8>, String> {
    if !v.contains(&b'$') && !v.contains(&b'`') {
        return Ok(v.to_vec());
    }
    let home = ctx.home()?.into_iter().next().unwrap_or_default();
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let rest = &v[i..];
        if let Some(n) = [&b"${HOME}"[..], b"$HOME"].iter().find(|p| rest.starts_with(p)).map(|p| p.len()) {
            let boundary = rest.get(n).is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'));
            if boundary || n == 7 {
                out.extend_from_slice(&home);
                i += n;
                continue;
            }
        }
        if rest[0] == b'$' || rest[0] == b'`' {
            return Err(format!(
                "{var} ({}) needs a shell expansion driftgate does not evaluate",
                String::from_utf8_lossy(v)
            ));
        }
        out.push(rest[0]);
        i += 1;
    }
    Ok(out)
}

/// Python's command line: the script (a file, a directory or a zip archive), `-m MODULE`
/// found in the working directory or `PYTHONPATH` (one from the standard library is the
/// image's), and `PYTHONSTARTUP` for an interactive interpreter.
fn plan_python(args: &[Vec<u8>], complete: bool, ctx: &mut dyn ExecContext) -> Plan {
    let usable = if complete { args.len() } else { args.len().saturating_sub(1) };
    let py = python::parse(&args[..usable]);
    let python::PythonArgs { operand, inline, ignore_env, safe_path, inspect, .. } = py;
    let module = py.module.map(|m| m.to_vec());
    if py.module_missing && !complete {
        return Plan::Unverifiable(
            "the argument list was not read whole and -m's module is not among them".into(),
        );
    }
    let mut codes = Vec::new();
    let interactive =
        inspect || (operand.is_none() && module.is_none() && !inline && ctx.stdin_is_terminal());
    if interactive && !ignore_env {
        match ctx.env("PYTHONSTARTUP") {
            Ok(v) => codes.extend(v.into_iter().map(|p| Code::path("PYTHONSTARTUP", p, None))),
            Err(e) => return Plan::Unverifiable(e),
        }
    }
    if let Some(i) = operand {
        codes.push(Code { python_dir: true, ..Code::path("script", args[i].clone(), Some(i)) });
    } else if let Some(m) = module {
        if !m.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.') || m.is_empty() {
            return Plan::Run(codes); // not a module name: Python fails
        }
        let rel: Vec<u8> = m.iter().map(|&c| if c == b'.' { b'/' } else { c }).collect();
        let mut bases: Vec<Vec<u8>> = Vec::new();
        if !safe_path {
            bases.push(Vec::new()); // the working directory
        }
        if !ignore_env {
            match ctx.env("PYTHONPATH") {
                Ok(v) => bases.extend(v.iter().flat_map(|v| v.split(|&b| b == b':').map(<[u8]>::to_vec))),
                Err(e) => return Plan::Unverifiable(e),
            }
        }
        let mut candidates = Vec::new();
        for b in &bases {
            let mut py = join(b, &rel);
            py.extend_from_slice(b".py");
            candidates.push(py);
            candidates.push(join(&join(b, &rel), b"__main__.py"));
        }
        if !candidates.is_empty() {
            codes.push(Code { candidates, ..Code::path("module", Vec::new(), None) });
        }
    } else if !inline && !complete {
        return Plan::Unverifiable(format!(
            "the argument list was not read whole ({} read) and the script is not among them",
            args.len()
        ));
    }
    Plan::Run(codes)
}

/// Perl's command line: the script, looked for in `PATH` first with `-S`.
fn plan_perl(args: &[Vec<u8>], complete: bool, ctx: &mut dyn ExecContext) -> Plan {
    let usable = if complete { args.len() } else { args.len().saturating_sub(1) };
    let mut search = false;
    let mut i = 1;
    let mut operand = None;
    let mut inline = false;
    'args: while i < usable {
        let a = args[i].as_slice();
        if a == b"--" {
            operand = (i + 1 < usable).then_some(i + 1);
            break;
        }
        if a == b"-" {
            inline = true;
            break;
        }
        if a.starts_with(b"-") && a.len() > 1 {
            let mut takes = 0;
            for (k, f) in a[1..].iter().enumerate() {
                match f {
                    b'e' | b'E' => {
                        inline = true;
                        break 'args;
                    }
                    b'S' => search = true,
                    b'I' if k + 2 == a.len() => takes = 1,
                    // The rest of the cluster is this switch's value.
                    b'I' | b'0' | b'i' | b'l' | b'C' | b'd' | b'D' | b'M' | b'm' | b'x' | b'V' => break,
                    _ => {}
                }
            }
            i += 1 + takes;
            continue;
        }
        operand = Some(i);
        break;
    }
    let Some(i) = operand else {
        if !inline && !complete {
            return Plan::Unverifiable(format!(
                "the argument list was not read whole ({} read) and the script is not among them",
                args.len()
            ));
        }
        return Plan::Run(Vec::new());
    };
    let name = &args[i];
    let mut candidates = Vec::new();
    if search && !name.contains(&b'/') {
        match path_dirs(ctx) {
            Ok(d) => candidates.extend(d.iter().map(|d| join(d, name))),
            Err(e) => return Plan::Unverifiable(e),
        }
    }
    candidates.push(name.clone());
    Plan::Run(vec![Code { candidates, ..Code::path("script", Vec::new(), Some(i)) }])
}
