//! Detections beyond drift, on the exec of an image shell or interpreter (the pending call is
//! read for it anyway): `REVERSE_SHELL` (a standard stream on a remote TCP peer, see
//! [`super::reverse`]) and `UNEXPECTED_CHILD_SHELL` (a shell started by a service of the image,
//! see [`driftgate_core::engine::shells`]). Each is decided by the rules' `detections` (audit
//! when no rule says), recorded, and refused where a rule enforces it.

use std::sync::Arc;

use driftgate_core::engine::shells::{self, Parent};
use driftgate_core::model::{Action, Category, RuleAction};
use driftgate_sys::proc;

use crate::container::Container;
use crate::daemon::hot::Shared;

/// The process that is to be a shell's parent, as read from `/proc`.
struct ShellParent {
    exe: Vec<u8>,
    comm: Vec<u8>,
    init: bool,
    outside: bool,
}

impl ShellParent {
    /// The parent of thread `tid` (about to exec a shell). `None` if it cannot be read (gone).
    fn of(tid: i32) -> Option<ShellParent> {
        let st = proc::read_status(tid)?;
        if st.ppid <= 0 {
            return Some(ShellParent { exe: Vec::new(), comm: Vec::new(), init: false, outside: true });
        }
        let pst = proc::read_status(st.ppid)?;
        // In the host's PID namespace (a hostPID container) depth says nothing: the mount
        // namespace does.
        let outside = pst.ns_depth < st.ns_depth
            || (st.ns_depth <= 1 && proc::ns_id(st.ppid, "mnt") != proc::ns_id(tid, "mnt"));
        Some(ShellParent {
            exe: proc::read_exe(st.ppid).unwrap_or_default(),
            init: st.ns_depth > 1 && pst.ns_pid == Some(1),
            comm: pst.name,
            outside,
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
    /// Looks at thread `tid` of container `c`, about to run the image shell or interpreter at
    /// `path` (`shell`: a shell, not another interpreter). Records what it finds; `true` when a
    /// rule enforces it and the exec is to be refused.
    pub(super) fn check_shell(&self, c: &Arc<Container>, tid: i32, path: &[u8], shell: bool) -> bool {
        let net = super::reverse::remote_stdio(tid);
        let parent = if shell { ShellParent::of(tid) } else { None };
        let unexpected = parent.as_ref().is_some_and(|p| !shells::expected(p.parent()));
        if net.is_none() && !unexpected {
            return false;
        }
        let policy = self.policy.load();
        let session = if policy.needs_session() { crate::daemon::hot::facts::session_now(tid) } else { None };
        let path_text = String::from_utf8_lossy(path);
        let parent_exe = parent.as_ref().map(|p| String::from_utf8_lossy(&p.exe));
        let exec = driftgate_core::policy::Subject {
            path: &path_text,
            session,
            shell_parent: parent_exe.as_deref(),
            ..Default::default()
        };
        let d = c.describe(exec, |s| policy.detection(s));
        let action = match d.action {
            RuleAction::Allow => return false,
            RuleAction::Audit => Action::Audited,
            RuleAction::Enforce => Action::Blocked,
        };
        if let Some(net) = net {
            self.record_detection(c, tid, path, Category::ReverseShell, action, &d.rule, Some(net));
        }
        if unexpected {
            self.record_detection(c, tid, path, Category::UnexpectedChildShell, action, &d.rule, None);
        }
        action == Action::Blocked
    }
}
