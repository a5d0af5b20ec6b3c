//! What `status` (and the metrics) say of the kernel layer, and of each container: which layer
//! guards it, and the holes that remain where the kernel layer does not.

use serde::{Deserialize, Serialize};

use super::Kernel;
use crate::container::Container;
use crate::daemon::declare::{load, status_group};

status_group! {
    /// `status.kernel`.
    pub struct KernelStatus at "/kernel", "kernel layer (BPF LSM)", from |k: &Kernel|
        let (rootfs, pidns, cgroups, mounts) = k.counts();
        let p = k.program_stats();
    {
        /// `on`, or `off: <why>`.
        state: String = k.state.clone(),
        /// Where the program and its maps are pinned (they hold while no daemon runs); absent
        /// when they are not.
        pinned: Option<String> = k.pinned.as_ref().map(|p| p.display().to_string()),
        /// The program was taken over from a previous daemon, not attached anew.
        taken_over: bool = k.reused,
        /// Whether overlayfs's layout is known to the program (image inodes told from others).
        overlay_layout: bool = k.overlay_known(),
        /// Container root filesystems in its maps.
        rootfs: u64 = rootfs as u64 => "driftgate_kernel_map_entries" "rootfs",
        /// PID namespaces in its maps.
        pid_namespaces: u64 = pidns as u64 => "driftgate_kernel_map_entries" "pid_namespaces",
        /// Cgroups in its maps.
        cgroups: u64 = cgroups as u64 => "driftgate_kernel_map_entries" "cgroups",
        /// Mounts in its maps.
        mounts: u64 = mounts as u64 => "driftgate_kernel_map_entries" "mounts",
        /// File versions the daemon decided and told the program.
        files_allowed: u64 = load(&k.stats.files_allowed) => "driftgate_kernel_map_entries" "files_allowed",
        /// Uses the program checked (execs and, with `[libraries]`, executable mappings in
        /// enforced containers; execs in audited ones).
        checked: u64 = p.checked => "driftgate_kernel_uses_total" "checked",
        /// ... refused.
        refused: u64 = p.refused => "driftgate_kernel_uses_total" "refused",
        /// ... reported.
        reported: u64 = p.reported => "driftgate_kernel_uses_total" "reported",
        /// Reports lost (ring buffer full).
        lost: u64 = p.lost => "driftgate_kernel_uses_total" "lost",
        /// Reports read.
        events: u64 = load(&k.stats.events) => "driftgate_kernel_reports_total" "any",
        /// ... about no container the daemon knows.
        unattributed: u64 = load(&k.stats.unattributed) => "driftgate_kernel_reports_total" "none",
        /// Each program's runs and the time spent in it, as the kernel counts them while
        /// `sysctl kernel.bpf_stats_enabled=1` (zeros otherwise): what the layer costs on this node.
        programs: Vec<ProgramRuns> = k
            .run_stats()
            .into_iter()
            .map(|r| ProgramRuns {
                ns_per_run: if r.runs == 0 { 0.0 } else { r.run_ns as f64 / r.runs as f64 },
                name: r.name,
                runs: r.runs,
                run_ns: r.run_ns,
            })
            .collect(),
    }
}

/// One program's run statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProgramRuns {
    /// `dg_exec` (execs), `dg_mmap`, `dg_mprotect`.
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
    /// Mean nanoseconds per run (0 without runs).
    pub ns_per_run: f64,
}

/// Which layer guards a container, and what remains unchecked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Guard {
    /// `kernel+fanotify` or `fanotify`.
    pub guard: String,
    /// The kernel layer's policy for it: `enforce`, `audit` or `none`, with `+fileless` and
    /// `+libraries`.
    pub kernel_policy: String,
    /// What is not checked at the moment of use.
    pub holes: Vec<String>,
}

/// The holes fanotify alone leaves (the README's "Every exec path" table, last column).
pub const HOLE_DETACHED: &str = "detached mounts (open_tree, fsmount) used through their fds";
pub const HOLE_NEW_MOUNT: &str = "a mount made or remounted exec inside the container, until it is marked";
pub const HOLE_MEMFD: &str = "memfds made before enforcement, or where vm.memfd_noexec was lowered";
pub const HOLE_LIBRARIES: &str = "a library changed without a modify event (Linux AIO) after it was decided";
pub const HOLE_HOST_PID: &str = "fileless execution in a hostPID container (recorded, not refused)";
pub const HOLE_NOT_REGISTERED: &str = "not registered with the kernel layer yet (no process of it found)";
pub const HOLE_OVERLAY: &str =
    "the kernel layer does not know overlayfs's layout: image files are told by fanotify alone";

/// Every hole, with the label the metrics give it.
pub const HOLES: [(&str, &str); 7] = [
    (HOLE_DETACHED, "detached_mounts"),
    (HOLE_NEW_MOUNT, "new_mounts"),
    (HOLE_MEMFD, "memfd"),
    (HOLE_LIBRARIES, "libraries_aio"),
    (HOLE_HOST_PID, "host_pid_fileless"),
    (HOLE_NOT_REGISTERED, "not_registered"),
    (HOLE_OVERLAY, "overlay_layout"),
];

impl Kernel {
    pub fn status(&self) -> KernelStatus {
        KernelStatus::collect(self)
    }

    /// The guard of container `c`: `enforcing` (its drift is refused), `libraries` (`[libraries]`
    /// on), `host_pid` (it shares the host's PID namespace).
    pub fn guard(&self, c: &Container, enforcing: bool, libraries: bool, host_pid: bool) -> Guard {
        guard_for(self.on(), self.overlay_known(), self.policy_of(c), enforcing, libraries, host_pid)
    }
}

fn guard_for(
    on: bool,
    overlay_known: bool,
    policy: u32,
    enforcing: bool,
    libraries: bool,
    host_pid: bool,
) -> Guard {
    let mut holes = Vec::new();
    let guard = if on && policy != 0 {
        if !overlay_known {
            holes.push(HOLE_OVERLAY.to_owned());
        }
        "kernel+fanotify"
    } else {
        if on {
            holes.push(HOLE_NOT_REGISTERED.to_owned());
        }
        holes.push(HOLE_DETACHED.to_owned());
        holes.push(HOLE_NEW_MOUNT.to_owned());
        if enforcing {
            holes.push(HOLE_MEMFD.to_owned());
        }
        if libraries {
            holes.push(HOLE_LIBRARIES.to_owned());
        }
        if host_pid {
            holes.push(HOLE_HOST_PID.to_owned());
        }
        "fanotify"
    };
    Guard { guard: guard.into(), kernel_policy: policy_name(policy), holes }
}

/// `enforce+fileless+libraries`, `audit`, `none`.
pub fn policy_name(p: u32) -> String {
    use driftgate_bpf::policy;
    let mut s = if p & policy::ENFORCE != 0 {
        "enforce".to_owned()
    } else if p & policy::AUDIT != 0 {
        "audit".to_owned()
    } else {
        return "none".into();
    };
    if p & policy::FILELESS != 0 {
        s.push_str("+fileless");
    }
    if p & policy::LIBRARIES != 0 {
        s.push_str("+libraries");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_named() {
        use driftgate_bpf::policy;
        assert_eq!(policy_name(0), "none");
        assert_eq!(policy_name(policy::AUDIT), "audit");
        assert_eq!(
            policy_name(policy::ENFORCE | policy::FILELESS | policy::LIBRARIES),
            "enforce+fileless+libraries"
        );
    }

    #[test]
    fn without_the_kernel_layer_the_holes_are_listed() {
        let g = guard_for(false, false, 0, true, true, true);
        assert_eq!(g.guard, "fanotify");
        assert_eq!(g.holes, [HOLE_DETACHED, HOLE_NEW_MOUNT, HOLE_MEMFD, HOLE_LIBRARIES, HOLE_HOST_PID]);
        let g = guard_for(false, false, 0, false, false, false);
        assert_eq!(g.holes, [HOLE_DETACHED, HOLE_NEW_MOUNT]);
        let g = guard_for(true, true, driftgate_bpf::policy::ENFORCE, true, true, true);
        assert_eq!(
            (g.guard.as_str(), g.holes.len(), g.kernel_policy.as_str()),
            ("kernel+fanotify", 0, "enforce")
        );
        let g = guard_for(true, true, 0, true, false, false);
        assert_eq!(g.holes[0], HOLE_NOT_REGISTERED);
        assert_eq!(Kernel::off("test").status().state, "off: test");
    }
}
