//! Detections beyond drift, from the same held exec. On the exec of an image shell or
//! interpreter (the pending call is read for it anyway): `REVERSE_SHELL` (a standard stream on
//! a remote TCP peer, see [`reverse`]) and `UNEXPECTED_CHILD_SHELL` (a shell started by a
//! service of the image, see [`driftgate_core::engine::shells`]). On every exec, only while the
//! IoC lists name URLs or domains: `MALICIOUS_URL_OBSERVED` (see
//! [`driftgate_core::index::netioc`]). On the exec of an image program that runs set-user-ID,
//! set-group-ID or with file capabilities: `PRIVILEGED_PROGRAM_EXECUTED` when its caller gains
//! by it (see [`driftgate_core::privilege::Grants::gained_by`]). Each is decided by the rules'
//! `detections` (audit when no rule says), recorded, and refused where a rule enforces it.

use std::sync::Arc;

use driftgate_core::engine::shells::{self, Parent};
use driftgate_core::finding::Finding;
use driftgate_core::model::{Action, Category, RuleAction};
use driftgate_sys::fanotify::PendingExec;
use driftgate_sys::proc;

use crate::container::Container;
use crate::daemon::hot::Shared;

mod reverse;

/// The process that is to be a shell's parent, as read from `/proc`.
struct ShellParent {
    pid: i32,
    exe: Vec<u8>,
    comm: Vec<u8>,
    init: bool,
    outside: bool,
}

/// The name of process `pid` running `exe`, read only where it matters
/// ([`shells::needs_name`]: busybox, which is whatever applet it was run as).
fn busybox_name(pid: i32, exe: &[u8]) -> Vec<u8> {
    if shells::needs_name(exe) {
        proc::read_comm(pid).unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// Whether process `pid`, running `exe`, may start shells ([`shells::may_start_shells`]).
fn program_may_start_shells(pid: i32, exe: &[u8]) -> bool {
    shells::may_start_shells(exe, &busybox_name(pid, exe))
}

impl ShellParent {
    /// The parent of thread `tid` (about to exec a shell). `None` if it cannot be read (gone).
    /// A parent that may start shells (a shell, a launcher) is known from its program alone;
    /// another one outside the container from its namespace; only one inside has its status
    /// read, to tell the init.
    fn of(tid: i32) -> Option<ShellParent> {
        let st = proc::read_status(tid)?;
        if st.ppid <= 0 {
            return Some(ShellParent {
                pid: 0,
                exe: Vec::new(),
                comm: Vec::new(),
                init: false,
                outside: true,
            });
        }
        let exe = proc::read_exe(st.ppid).unwrap_or_default();
        if program_may_start_shells(st.ppid, &exe) {
            // Its name is not asked again: a program that may start shells.
            return Some(ShellParent { pid: st.ppid, exe, comm: Vec::new(), init: false, outside: false });
        }
        // Outside: in another PID namespace (two readlinks, cheaper than its status); in the
        // host's PID namespace (a hostPID container) that says nothing: the mount namespace does.
        let kind = if st.ns_depth > 1 { "pid" } else { "mnt" };
        if proc::ns_id(st.ppid, kind) != proc::ns_id(tid, kind) {
            return Some(ShellParent { pid: st.ppid, exe, comm: Vec::new(), init: false, outside: true });
        }
        let pst = proc::read_status(st.ppid)?;
        Some(ShellParent {
            pid: st.ppid,
            exe,
            init: st.ns_depth > 1 && pst.ns_pid == Some(1),
            comm: pst.name,
            outside: false,
        })
    }

    fn parent(&self) -> Parent<'_> {
        if self.outside {
            Parent::Outside
        } else if self.init {
            Parent::Init
        } else {
            Parent::Program { exe: &self.exe, comm: &self.comm }
        }
    }
}

impl Shared {
    /// What the rules say about a detection on thread `tid` of container `c` running `path`
    /// (`shell_parent`: for a shell, its parent's program): `None` when a rule allows it, else
    /// the action and the rule's name.
    fn detection_action(
        &self,
        c: &Container,
        tid: i32,
        path: &[u8],
        shell_parent: Option<&[u8]>,
    ) -> Option<(Action, String)> {
        let policy = self.policy.load();
        let session = if policy.needs_session() { crate::daemon::hot::facts::session_now(tid) } else { None };
        let path = String::from_utf8_lossy(path);
        let parent = shell_parent.map(String::from_utf8_lossy);
        let exec = driftgate_core::policy::Subject {
            path: &path,
            session,
            shell_parent: parent.as_deref(),
            ..Default::default()
        };
        let d = c.describe(exec, |s| policy.detection(s));
        match d.action {
            RuleAction::Allow => None,
            RuleAction::Audit => Some((Action::Audited, d.rule)),
            RuleAction::Enforce => Some((Action::Blocked, d.rule)),
        }
    }

    /// Looks at thread `tid` of container `c`, about to run the image shell or interpreter at
    /// `path` (`shell`: a shell, not another interpreter). Records what it finds; `true` when a
    /// rule enforces it and the exec is to be refused.
    ///
    /// What it costs: two or three readlinks of its standard streams, and for a shell one of
    /// the program it runs now. A shell forks before it execs, so that program is its parent's:
    /// when it is a shell (a script's commands, nearly every shell exec), the shell is
    /// expected and nothing more is read. Otherwise (a service's shell, a launcher's, an
    /// init's, an exec session's) its status and its parent are read, and a terminal's relay
    /// looked for.
    pub(crate) fn check_shell(&self, c: &Arc<Container>, tid: i32, path: &[u8], shell: bool) -> bool {
        let links = reverse::stdio_links(tid);
        let mut net = reverse::remote_stdio(tid, &links);
        let caller = if shell { proc::read_exe(tid) } else { None };
        // A shell that forked to run this one is its parent. A launcher is not enough: it may
        // exec the shell in its own place (a service's `env sh`), so its parent is read.
        let by_shell = caller.as_deref().is_some_and(|exe| shells::is_shell(exe, &busybox_name(tid, exe)));
        let parent = if shell && !by_shell { ShellParent::of(tid) } else { None };
        if net.is_none() && reverse::on_terminal(&links) {
            // A relay: its parent in the container holds the connection.
            net = parent.as_ref().filter(|p| !p.outside).and_then(|p| reverse::relayed_stdio(p.pid));
        }
        let unexpected = parent.as_ref().is_some_and(|p| !shells::expected(p.parent()));
        if net.is_none() && !unexpected {
            return false;
        }
        let shell_parent = parent.as_ref().map(|p| &p.exe[..]).or(caller.as_deref());
        let Some((action, rule)) = self.detection_action(c, tid, path, shell_parent) else {
            return false;
        };
        if let Some(net) = net {
            let fill = |f: &mut Finding| f.network = Some(net);
            self.record_detection(c, tid, path, Category::ReverseShell, action, &rule, fill);
        }
        if unexpected {
            self.record_detection(c, tid, path, Category::UnexpectedChildShell, action, &rule, |_| ());
        }
        action == Action::Blocked
    }

    /// `MALICIOUS_URL_OBSERVED`: while the IoC lists name URLs or domains, the arguments of
    /// every exec in a watched container (its pending call) are matched against them. Records
    /// a match; `true` when a rule enforces it and the exec is to be refused. Costs nothing
    /// while no URL or domain is listed.
    pub(crate) fn check_urls(&self, c: &Arc<Container>, ev: &PendingExec) -> bool {
        use std::sync::atomic::Ordering;
        let iocs = self.iocs.load();
        if !iocs.has_network() {
            return false;
        }
        let tid = ev.tid();
        self.stats.url_checks.fetch_add(1, Ordering::Relaxed);
        let Some(args) = ev.exec_call().and_then(|c| c.argv.as_ref()) else {
            self.stats.url_unread.fetch_add(1, Ordering::Relaxed);
            self.health.note(crate::daemon::health::Problem::ArgumentsUnread, || {
                format!("container {}: the arguments of an exec could not be read: not matched against URL indicators", c.id())
            });
            return false;
        };
        let Some((m, ioc)) = iocs.match_args(args) else { return false };
        let path = driftgate_sys::fs::fd_path(ev.fd()).unwrap_or_default();
        let Some((action, rule)) = self.detection_action(c, tid, &path, None) else { return false };
        let fill = |f: &mut Finding| {
            f.reason = Some(format!(
                "argument {} contains {}, listed as {} in {}",
                m.arg, m.found, m.indicator, ioc.source
            ));
            f.url = Some(driftgate_core::finding::UrlRef {
                found: m.found,
                host: m.host,
                indicator: m.indicator,
                argument: m.arg,
            });
            f.ioc = Some(driftgate_core::finding::IocRef { name: ioc.name, source: ioc.source });
        };
        self.record_detection(c, tid, &path, Category::MaliciousUrlObserved, action, &rule, fill);
        action == Action::Blocked
    }

    /// `PRIVILEGED_PROGRAM_EXECUTED`: the image file of `ev` grants `grants`; records it when
    /// its caller gains by it (another user or group, capabilities it has not). `true` when a
    /// rule enforces it and the exec is to be refused.
    pub(crate) fn check_privileged(
        &self,
        c: &Arc<Container>,
        ev: &PendingExec,
        grants: driftgate_core::privilege::Grants,
    ) -> bool {
        let tid = ev.tid();
        let Some(st) = proc::read_status(tid) else { return false };
        let gained = grants.gained_by(&st.caller());
        if !gained.any() {
            return false;
        }
        let path = driftgate_sys::fs::fd_path(ev.fd()).unwrap_or_default();
        let Some((action, rule)) = self.detection_action(c, tid, &path, None) else { return false };
        let mut what = Vec::new();
        if gained.setuid {
            what.push(format!("user {}", grants.uid));
        }
        if gained.setgid {
            what.push(format!("group {}", grants.gid));
        }
        if !gained.capabilities.is_empty() {
            what.push(gained.capabilities.join(", "));
        }
        let reason =
            format!("run by user {} (group {}), it would gain {}", st.euid, st.egid, what.join("; "));
        let fill = |f: &mut Finding| {
            f.reason = Some(reason);
            f.file.setuid = gained.setuid;
            f.file.setgid = gained.setgid;
            f.file.capabilities = gained.capabilities;
        };
        self.record_detection(c, tid, &path, Category::PrivilegedProgramExecuted, action, &rule, fill);
        action == Action::Blocked
    }
}
