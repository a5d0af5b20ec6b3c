//! `UNEXPECTED_CHILD_SHELL`: which programs are expected to start a shell.
//!
//! A shell is expected from another shell (scripts, pipelines, `sh -c` in a shell), from the
//! container's init (its entrypoint) and from outside the container (the runtime starting the
//! init, or an exec session entering it). From any other program of the image (a web server,
//! a language runtime, a database) it is how a remote code execution shows: the service runs
//! the attacker's command line through `sh -c`. Programs whose job is to run a command
//! (`env`, `xargs`, `sudo`, `tini`, `cron`, `make`, ...) are as expected as a shell.

/// Who the parent of a shell about to start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent<'a> {
    /// Outside the container: the runtime (starting its init) or an exec session.
    Outside,
    /// The container's init (PID 1 in its PID namespace).
    Init,
    /// Another process in the container: its program (`/proc/<pid>/exe`) and its `comm`.
    Program { exe: &'a [u8], comm: &'a [u8] },
}

/// Shells, by file name.
const SHELLS: &[&[u8]] = &[
    b"sh", b"bash", b"rbash", b"dash", b"ash", b"hush", b"zsh", b"ksh", b"ksh93", b"mksh", b"pdksh", b"yash",
    b"posh", b"fish", b"csh", b"tcsh",
];

/// Programs whose job is to run a command they are given, by file name.
const LAUNCHERS: &[&[u8]] = &[
    b"env",
    b"xargs",
    b"find",
    b"nohup",
    b"nice",
    b"ionice",
    b"timeout",
    b"time",
    b"watch",
    b"setsid",
    b"flock",
    b"stdbuf",
    b"chroot",
    b"unshare",
    b"nsenter",
    b"script",
    b"sudo",
    b"su",
    b"runuser",
    b"gosu",
    b"su-exec",
    b"tini",
    b"tini-static",
    b"dumb-init",
    b"catatonit",
    b"s6-svscan",
    b"s6-supervise",
    b"runsv",
    b"runsvdir",
    b"chpst",
    b"start-stop-daemon",
    b"cron",
    b"crond",
    b"sshd",
    b"login",
    b"make",
    b"gmake",
    b"tmux",
    b"screen",
    b"entr",
    b"parallel",
    b"systemd",
];

/// Busybox applets that are services or interpreters: a busybox process running one of
/// these (by its name) is not a shell.
const BUSYBOX_SERVICES: &[&[u8]] = &[
    b"httpd",
    b"nc",
    b"netcat",
    b"tcpsvd",
    b"udpsvd",
    b"ftpd",
    b"tftpd",
    b"ntpd",
    b"udhcpd",
    b"dnsd",
    b"fakeidentd",
    b"telnetd",
    b"inetd",
    b"syslogd",
    b"awk",
];

/// The file name of a process's program (`/proc/<pid>/exe`, which may end in ` (deleted)`).
fn file_name(exe: &[u8]) -> &[u8] {
    let exe = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
    exe.rsplit(|&b| b == b'/').next().unwrap_or(exe)
}

/// Whether the program's process name matters to the functions here: busybox is whatever
/// applet it runs as, any other program is its file.
pub fn needs_name(exe: &[u8]) -> bool {
    file_name(exe).starts_with(b"busybox")
}

/// Whether a program (`exe`, a path; `comm`, its process name) may start shells: a shell or
/// a launcher. A busybox process is one of its applets: one that may, unless its name is one
/// of busybox's services or interpreters (a shell running a script is named after the
/// script, so names are not matched the other way).
pub fn may_start_shells(exe: &[u8], comm: &[u8]) -> bool {
    let name = file_name(exe);
    if name.starts_with(b"busybox") {
        return !BUSYBOX_SERVICES.contains(&comm);
    }
    SHELLS.contains(&name) || LAUNCHERS.contains(&name)
}

/// Whether a program is a shell (not a launcher, which may exec a command in its own place:
/// a service's `env sh` is the service's shell). A busybox process is one unless its name is
/// one of busybox's services, interpreters or launchers.
pub fn is_shell(exe: &[u8], comm: &[u8]) -> bool {
    let name = file_name(exe);
    if name.starts_with(b"busybox") {
        return !BUSYBOX_SERVICES.contains(&comm) && !LAUNCHERS.contains(&comm);
    }
    SHELLS.contains(&name)
}

/// Whether a shell started by `parent` is expected (no finding).
pub fn expected(parent: Parent<'_>) -> bool {
    match parent {
        Parent::Outside | Parent::Init => true,
        Parent::Program { exe, comm } => may_start_shells(exe, comm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_init_and_outside_are_expected_services_are_not() {
        assert!(expected(Parent::Outside));
        assert!(expected(Parent::Init));
        let p = |exe: &'static str, comm: &'static str| Parent::Program {
            exe: exe.as_bytes(),
            comm: comm.as_bytes(),
        };
        for (exe, comm) in [
            ("/bin/bash", "bash"),
            ("/usr/bin/dash", "entrypoint.sh"),
            ("/bin/busybox", "sh"),
            ("/bin/busybox", "docker-entrypoi"),
            ("/bin/zsh (deleted)", "zsh"),
            ("/usr/bin/xargs", "xargs"),
            ("/sbin/tini", "tini"),
        ] {
            assert!(expected(p(exe, comm)), "{exe} {comm}");
        }
        for (exe, comm) in [
            ("/usr/sbin/nginx", "nginx"),
            ("/usr/bin/python3.11", "python3"),
            ("/usr/bin/node", "node"),
            ("/usr/bin/perl", "perl"),
            ("/bin/busybox", "httpd"),
            ("/bin/busybox", "tcpsvd"),
            ("/bin/busybox", "awk"),
            ("/usr/bin/awk", "awk"),
            ("/opt/java/bin/java", "java"),
            ("/usr/bin/shasum", "sh"),
        ] {
            assert!(!expected(p(exe, comm)), "{exe} {comm}");
        }
        // A process that is a shell forked to run one; a launcher may run it in its own place.
        assert!(is_shell(b"/bin/dash", b"dash") && is_shell(b"/bin/busybox", b"entrypoint.sh"));
        assert!(!is_shell(b"/usr/bin/env", b"env") && !is_shell(b"/bin/busybox", b"env"));
        assert!(!is_shell(b"/bin/busybox", b"awk") && !is_shell(b"/usr/bin/python3", b"python3"));
    }
}
