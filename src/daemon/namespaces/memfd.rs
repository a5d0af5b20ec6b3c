//! `vm.memfd_noexec` in a container's PID namespaces: set to what the rule says when a
//! process of the container is found (`super::Marker` finds them), never in the host's.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Marker;
use crate::container::mounts::MemfdState;
use crate::container::Container;
use driftgate_sys::proc;

impl Marker {
    /// Sets `vm.memfd_noexec` in the PID namespace of a process of container `c` to what
    /// the rule says, when it is not already that.
    /// Also registers the namespace (or, for a `hostPID` container, only its cgroup) with the
    /// kernel layer, with the container's policy.
    /// `verify`: where it was set to 2, read it back, and set it again (with a finding) when
    /// it was lowered from inside the container (kernels before 6.6 let a namespace lower it).
    pub(super) fn apply_memfd(&self, c: &Arc<Container>, pdir: &OwnedFd, pid: i32, verify: bool) {
        let Some(pidns) = nix::fcntl::readlinkat(pdir, "ns/pid")
            .ok()
            .and_then(|l| proc::parse_ns_link(l.as_encoded_bytes()))
        else {
            return;
        };
        let host = self.host_pid.contains(&pidns);
        let rule = self.memfd.load();
        self.kernel.add_namespace(c, (!host).then_some(pidns), pid, rule.kernel_policy(c));
        let current = c.namespaces.lock().ok().and_then(|n| n.pid.get(&pidns).cloned());
        if host {
            if current.is_none() {
                tracing::warn!(container = %c.id(), "a process of the container is in the host's PID namespace (hostPID): vm.memfd_noexec is not set there (it would change the host); fileless execution is recorded, not refused");
                if let Ok(mut n) = c.namespaces.lock() {
                    n.pid.insert(pidns, MemfdState::HostPid);
                }
            }
            return;
        }
        c.pid_known.store(true, Ordering::Relaxed);
        let want = rule.value_for(c);
        let have = match &current {
            Some(MemfdState::Set(v)) => Some(*v),
            // Never set: the namespace has the kernel's default (what the host has).
            None => Some(0),
            Some(MemfdState::Failed(_)) | Some(MemfdState::HostPid) => None,
        };
        if have == Some(want) && want == 2 && verify {
            match self.read_memfd_noexec(pdir) {
                Some(now) if now < 2 => {
                    tracing::warn!(container = %c.id(), pid_ns = pidns, value = now, "vm.memfd_noexec was lowered inside the container; setting it to 2 again");
                    if let Some(sink) = self.tamper_sink.get() {
                        sink(c, pid, now);
                    }
                }
                _ => return,
            }
        } else if have == Some(want) || (current.is_none() && want == 0) {
            return;
        }
        if want == 2
            && c.pid_known.load(Ordering::Relaxed)
            && matches!(current, None | Some(MemfdState::Set(0)))
        {
            // The container ran while memfds could be executable: one made then still can be,
            // where the kernel layer does not refuse it (see `fileless::needed`).
            c.memfd_predates.store(true, Ordering::Relaxed);
        }
        let open_ns = || {
            nix::fcntl::openat(
                pdir,
                "ns/pid",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| driftgate_sys::SysError::new("open(ns/pid)", e))
        };
        let held = open_ns().ok();
        let res = open_ns().and_then(|fd| driftgate_sys::nsexec::set_memfd_noexec(fd, want));
        let state = match res {
            Ok(()) => {
                tracing::info!(container = %c.id(), pid_ns = pidns, value = want, "vm.memfd_noexec set in the container's PID namespace");
                MemfdState::Set(want)
            }
            // The namespace ended meanwhile (its init exited): nothing left to protect.
            Err(e) if e.errno == nix::errno::Errno::ESRCH => {
                tracing::debug!(container = %c.id(), pid_ns = pidns, error = %e, "PID namespace gone");
                return;
            }
            Err(e) => {
                self.health.note(crate::daemon::health::Problem::MemfdNoexec, || {
                    format!("container {}, PID namespace {pidns}: {e}", c.id())
                });
                MemfdState::Failed(e.to_string())
            }
        };
        if let Ok(mut n) = c.namespaces.lock() {
            n.pid.insert(pidns, state);
            if let Some(fd) = held {
                n.pid_held.insert(pidns, Arc::new(fd));
            }
        }
    }

    /// The value now in the PID namespace of the process `pdir` is of.
    fn read_memfd_noexec(&self, pdir: &OwnedFd) -> Option<u8> {
        let fd = nix::fcntl::openat(
            pdir,
            "ns/pid",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        driftgate_sys::nsexec::memfd_noexec(fd).ok()
    }
}
