//! How Python reads its command line: the operand (a script, a directory or an archive),
//! `-m MODULE`, code from `-c` or stdin, and the switches that change where it looks (`-E`,
//! `-I`, `-P`) or make it interactive (`-i`). Options that take a value (`-W`, `-X`, attached
//! or the next argument; `--check-hash-based-pycs MODE`) are skipped with it.

/// Python's command line, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonArgs<'a> {
    /// The operand's index: the file, directory or archive Python runs.
    pub operand: Option<usize>,
    /// `-m`'s module name.
    pub module: Option<&'a [u8]>,
    /// `-m` was the last argument: its module is not among them.
    pub module_missing: bool,
    /// `-c` or `-`: the code is on the command line or stdin.
    pub inline: bool,
    /// `-E` or `-I`: the `PYTHON*` variables are ignored.
    pub ignore_env: bool,
    /// `-P` or `-I`: the working directory is not put on the path.
    pub safe_path: bool,
    /// `-i`.
    pub inspect: bool,
}

/// Reads `args` (`args[0]` is the program name).
pub fn parse(args: &[Vec<u8>]) -> PythonArgs<'_> {
    let mut p = PythonArgs::default();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        if a == b"--" {
            p.operand = (i + 1 < args.len()).then_some(i + 1);
            return p;
        }
        if a == b"-" {
            p.inline = true; // stdin
            return p;
        }
        if a.starts_with(b"--") {
            i += if a == b"--check-hash-based-pycs" { 2 } else { 1 };
            continue;
        }
        if a.starts_with(b"-") {
            let flags = &a[1..];
            for (k, f) in flags.iter().enumerate() {
                match f {
                    b'c' => {
                        p.inline = true;
                        return p;
                    }
                    b'm' => {
                        let attached = &flags[k + 1..];
                        if attached.is_empty() {
                            p.module = args.get(i + 1).map(Vec::as_slice);
                            p.module_missing = p.module.is_none();
                        } else {
                            p.module = Some(attached);
                        }
                        return p;
                    }
                    b'E' => p.ignore_env = true,
                    b'P' => p.safe_path = true,
                    b'I' => (p.ignore_env, p.safe_path) = (true, true),
                    b'i' => p.inspect = true,
                    b'W' | b'X' => {
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
        p.operand = Some(i);
        return p;
    }
    p
}
