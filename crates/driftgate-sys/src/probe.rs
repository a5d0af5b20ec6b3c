//! What the daemon may do here: the system calls it needs, tried once at start-up in a harmless
//! way, and why one is refused (a seccomp filter, a missing capability, an old kernel).
//!
//! A service manager or a container runtime can take any system call away (systemd's
//! `SystemCallFilter=` and `RestrictSUIDSGID=`, systemd-nspawn's default filter, a Pod's
//! seccomp profile), and a call that fails only when it is needed makes coverage shrink
//! silently. So each call is tried before the daemon reports ready, and what is refused is said
//! at start, in `status` and in the metrics.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;

/// `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`, `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`, `CAP_LEASE`.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_LEASE: u32 = 28;

/// How this process is confined, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Effective capabilities (`CapEff`).
    pub cap_eff: u64,
    /// `Seccomp:` 0 none, 1 strict, 2 filter; and how many filters are stacked.
    pub seccomp: u8,
    pub seccomp_filters: u32,
}

impl Confinement {
    pub fn of_self() -> Confinement {
        std::fs::read("/proc/self/status").map(|t| Self::parse(&t)).unwrap_or_default()
    }

    pub fn parse(status: &[u8]) -> Confinement {
        let mut c = Confinement::default();
        for line in status.split(|b| *b == b'\n') {
            let Some((k, v)) = std::str::from_utf8(line).ok().and_then(|l| l.split_once(':')) else {
                continue;
            };
            let v = v.trim();
            match k {
                "CapEff" => c.cap_eff = u64::from_str_radix(v, 16).unwrap_or(0),
                "Seccomp" => c.seccomp = v.parse().unwrap_or(0),
                "Seccomp_filters" => c.seccomp_filters = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        c
    }

    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }

    /// Why `call` failed with `errno` here, in words an operator can act on.
    pub fn explain(&self, call: &str, errno: Errno, cap: Option<(u32, &str)>) -> String {
        if let Some((bit, name)) = cap {
            if !self.has_cap(bit) {
                return format!(
                    "{call} refused ({errno}): the process lacks {name} (CapEff={:016x}); the unit's CapabilityBoundingSet= or the container's capabilities must include it",
                    self.cap_eff
                );
            }
        }
        match (errno, self.seccomp) {
            (Errno::ENOSYS | Errno::EPERM | Errno::EACCES, 2) => format!(
                "{call} refused ({errno}) by a seccomp filter ({} filter(s) on this process): allow it in the unit's SystemCallFilter= (systemd's RestrictSUIDSGID=yes refuses openat2 whole), with systemd-nspawn --system-call-filter=, or in the Pod's seccomp profile",
                self.seccomp_filters
            ),
            (Errno::ENOSYS, _) => format!("{call} is not in this kernel (ENOSYS)"),
            _ => format!("{call} refused ({errno})"),
        }
    }
}

/// `process_vm_readv` (how a pending exec's arguments are read), tried on this process's own
/// memory.
pub fn process_vm_readv_works() -> Result<(), Errno> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    let src = [7u8; 8];
    let mut dst = [0u8; 8];
    let remote = [RemoteIoVec { base: src.as_ptr() as usize, len: src.len() }];
    let n = process_vm_readv(nix::unistd::getpid(), &mut [std::io::IoSliceMut::new(&mut dst)], &remote)?;
    if n == 8 && dst == src {
        Ok(())
    } else {
        Err(Errno::EIO)
    }
}

/// `setns(CLONE_NEWPID)` (how `vm.memfd_noexec` is set inside a container's PID namespace), tried
/// into this process's own PID namespace on a thread of its own (a no-op for its children).
pub fn setns_pid_works() -> Result<(), Errno> {
    let ns: OwnedFd = std::fs::File::open("/proc/self/ns/pid").map_err(|e| errno_of(&e))?.into();
    let t = std::thread::Builder::new()
        .name("driftgate-probe".into())
        .spawn(move || {
            // SAFETY: setns on a valid namespace fd, into the namespace this process is in
            // already; it only concerns this thread's future children, and the thread ends here.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } == 0 {
                Ok(())
            } else {
                Err(Errno::last())
            }
        })
        .map_err(|e| errno_of(&e))?;
    t.join().unwrap_or(Err(Errno::EIO))
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_reads_capabilities_and_seccomp_and_explains_refusals() {
        let c =
            Confinement::parse(b"Name:\tx\nCapEff:\t0000000000200000\nSeccomp:\t2\nSeccomp_filters:\t3\n");
        assert!(c.has_cap(CAP_SYS_ADMIN) && !c.has_cap(CAP_NET_ADMIN));
        assert_eq!((c.seccomp, c.seccomp_filters), (2, 3));
        let why = c.explain("fanotify_init", Errno::EPERM, Some((CAP_SYS_ADMIN, "CAP_SYS_ADMIN")));
        assert!(why.contains("seccomp filter") && why.contains("SystemCallFilter"), "{why}");
        let why = c.explain("connector", Errno::EPERM, Some((CAP_NET_ADMIN, "CAP_NET_ADMIN")));
        assert!(why.contains("lacks CAP_NET_ADMIN"), "{why}");
        let free = Confinement::parse(b"CapEff:\t000001ffffffffff\nSeccomp:\t0\n");
        assert!(free.explain("openat2", Errno::ENOSYS, None).contains("not in this kernel"));
    }

    #[test]
    fn the_probes_pass_where_nothing_refuses_them() {
        assert_eq!(process_vm_readv_works(), Ok(()));
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(setns_pid_works(), Ok(()));
        }
    }
}
