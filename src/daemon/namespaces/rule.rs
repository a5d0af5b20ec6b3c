//! What decides, per container, `vm.memfd_noexec` and the kernel layer's policy: the mode and
//! the rules, applied to the container.

use std::sync::Arc;

use crate::container::Container;
use driftgate_core::config::MemfdNoexec;
use driftgate_core::engine::Mode;
use driftgate_core::policy::RuleAction;

/// What decides the `vm.memfd_noexec` value of a container's PID namespace, and the policy the
/// kernel layer holds for the container.
#[derive(Debug, Clone, Default)]
pub struct MemfdRule {
    pub setting: MemfdNoexec,
    pub mode: Mode,
    pub policy: Arc<driftgate_core::policy::Policy>,
    /// `[libraries] enabled`: the kernel layer checks executable mappings too.
    pub libraries: bool,
}

impl MemfdRule {
    /// The value for container `c`: 2 (memfds never executable) where drift is blocked, or
    /// everywhere with `always`; 0 (the kernel's default) otherwise. With `enforce`, the
    /// container is matched against the rules with the path `/memfd:` (what a fileless
    /// program's path reads as), so a rule can make an exception for one workload.
    pub fn value_for(&self, c: &Container) -> u8 {
        match self.setting {
            MemfdNoexec::Off => 0,
            MemfdNoexec::Always => 2,
            MemfdNoexec::Enforce => {
                if self.action_at(c, "/memfd:", None) == RuleAction::Enforce {
                    2
                } else {
                    0
                }
            }
        }
    }

    /// The kernel layer's policy for container `c` (`driftgate_bpf::policy` bits): what the
    /// rules say of a file at no particular path (`/`), the container's own mode; memfds
    /// refused where `vm.memfd_noexec` is 2; executable mappings checked with `[libraries]`.
    pub fn kernel_policy(&self, c: &Container) -> u32 {
        let action = self.action_at(c, "/", Some("/"));
        crate::daemon::kernel::policy_bits(
            action == RuleAction::Enforce,
            action == RuleAction::Audit,
            self.value_for(c) == 2,
            self.libraries,
        )
    }

    fn action_at(&self, c: &Container, path: &str, mount: Option<&str>) -> RuleAction {
        // Per container: a rule that matches only some sessions or shells does not apply.
        let exec = driftgate_core::policy::Subject { path, mount, ..Default::default() };
        c.describe(exec, |s| self.policy.decide(s, self.mode).action)
    }
}
