//! How a shell reads its command line, by the shells' own rules (bash, dash, and busybox ash,
//! which follows dash): which operand is the script, whether the commands come from a string
//! or stdin, and whether the shell is a login or interactive shell (which decides the startup
//! files it reads before anything else).
//!
//! - `--` and a lone `-` both end the options; the next operand is the script (`sh - x.sh`
//!   runs `x.sh`).
//! - `-c` makes the first operand a command string; `-s` reads stdin, and the operands are
//!   positional parameters.
//! - `-i` is interactive; `-l`, bash's `--login`, or a program name starting with `-` (what
//!   `login`, `su -` and `exec -a -sh` give) is a login shell.
//! - `-o NAME`, `+o NAME`, `-O NAME` and `+O NAME` take the next argument, also inside a
//!   cluster (`-euo pipefail`); bash's `--rcfile FILE` and `--init-file FILE` too.

/// A shell's command line, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellArgs {
    /// The script operand's index, if the shell runs a file named on its command line.
    pub script: Option<usize>,
    /// `-c`: the first operand is a command string.
    pub command: bool,
    /// `-s`: commands come from stdin.
    pub stdin: bool,
    /// `-i`.
    pub interactive: bool,
    /// `-l`, `--login`, or a program name starting with `-`.
    pub login: bool,
    /// bash's `--rcfile FILE` / `--init-file FILE`: the index of FILE.
    pub rcfile: Option<usize>,
    /// bash's `--norc`, `--noprofile`, `--posix`.
    pub norc: bool,
    pub noprofile: bool,
    pub posix: bool,
    /// The options run past the end of an argument list that was not read whole: what the
    /// shell does with the rest is unknown.
    pub incomplete: bool,
}

/// Reads a shell's `args` (`args[0]` is its program name). `complete` says the list was read
/// whole; when it was not, its last element may be cut short: it is used only for what its
/// first bytes show (an option or not), never as a path.
pub fn parse(args: &[Vec<u8>], complete: bool) -> ShellArgs {
    let mut sa =
        ShellArgs { login: args.first().is_some_and(|a| a.first() == Some(&b'-')), ..Default::default() };
    // The index of an element that may be cut short.
    let cut = if complete { usize::MAX } else { args.len().saturating_sub(1) };
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_slice();
        let option = (a.first() == Some(&b'-') || a.first() == Some(&b'+')) && a.len() > 1;
        if i == cut && (option || a == b"-") {
            // A cut option: what it means (or takes) is unknown.
            sa.incomplete = true;
            return sa;
        }
        if a == b"--" || a == b"-" {
            i += 1;
            break;
        }
        if a.starts_with(b"--") {
            match a {
                b"--rcfile" | b"--init-file" => {
                    sa.rcfile = Some(i + 1);
                    i += 2;
                    continue;
                }
                b"--login" => sa.login = true,
                b"--norc" => sa.norc = true,
                b"--noprofile" => sa.noprofile = true,
                b"--posix" => sa.posix = true,
                _ => {}
            }
            i += 1;
            continue;
        }
        if option {
            let set = a[0] == b'-';
            let mut takes = 0;
            for &f in &a[1..] {
                match f {
                    b'o' | b'O' => takes += 1,
                    b'c' if set => sa.command = true,
                    b's' if set => sa.stdin = true,
                    b'i' if set => sa.interactive = true,
                    b'l' if set => sa.login = true,
                    _ => {}
                }
            }
            i += 1 + takes;
            continue;
        }
        break;
    }
    if sa.rcfile.is_some_and(|r| r >= args.len() || r == cut) {
        sa.rcfile = None;
        sa.incomplete |= !complete;
    }
    if i >= args.len() {
        // No operand among what was read: none at all, or one beyond the cut.
        sa.incomplete |= !complete;
    } else if !sa.command && !sa.stdin {
        // A script named by a cut element is not known.
        sa.incomplete |= i == cut;
        sa.script = Some(i);
    }
    sa
}

/// Which shell's startup rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// bash as itself: `~/.bash_profile`, `~/.bashrc`, `BASH_ENV`.
    Bash,
    /// dash, ash, busybox, and bash invoked as `sh` or with `--posix`: `~/.profile`, `ENV`.
    Posix,
}

/// The dialect of a shell whose file is named `file_name`, invoked as `argv0`.
pub fn dialect(file_name: &[u8], argv0: &[u8], posix: bool) -> Dialect {
    let a = argv0.strip_prefix(b"-").unwrap_or(argv0);
    let invoked = a.rsplit(|&b| b == b'/').next().unwrap_or(a);
    if file_name.starts_with(b"bash") && invoked != b"sh" && !posix {
        Dialect::Bash
    } else {
        Dialect::Posix
    }
}
