//! What an executed file grants the process that runs it: set-user-ID and set-group-ID bits,
//! and file capabilities (the `security.capability` extended attribute, `struct
//! vfs_cap_data` in the kernel's `include/uapi/linux/capability.h`). Parsed here, read by the
//! sys crate.

/// What running a file grants (MITRE T1548.001, Setuid and Setgid; file capabilities too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privilege {
    pub setuid: bool,
    pub setgid: bool,
    /// The permitted file capabilities, by name.
    pub capabilities: Vec<String>,
}

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o010;

impl Privilege {
    /// From a file's mode bits and its raw `security.capability`. Set-group-ID without group
    /// execute is mandatory locking, not privilege. Capabilities the kernel could not parse
    /// are refused at exec, so they grant nothing.
    pub fn of(mode: u32, caps: Option<&[u8]>) -> Privilege {
        let caps = caps.and_then(|b| FileCaps::parse(b).ok()).map_or(0, |c| c.permitted);
        let g = Grants::of(mode, 0, 0, caps);
        Privilege { setuid: g.setuid, setgid: g.setgid, capabilities: names(g.caps) }
    }

    /// Whether the file grants anything at all.
    pub fn any(&self) -> bool {
        self.setuid || self.setgid || !self.capabilities.is_empty()
    }
}

/// What the process calling exec has, from its status: what decides whether running a
/// privileged file raises it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caller {
    pub euid: u32,
    pub egid: u32,
    /// Effective and bounding capability sets.
    pub cap_eff: u64,
    pub cap_bnd: u64,
    /// `no_new_privs`: set-user-ID, set-group-ID and file capabilities are not honoured.
    pub no_new_privs: bool,
}

/// A file that grants something, as an exec would see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    pub setuid: bool,
    pub setgid: bool,
    /// Its owner and group (what set-user-ID and set-group-ID make the caller).
    pub uid: u32,
    pub gid: u32,
    /// Its permitted file capabilities.
    pub caps: u64,
}

impl Grants {
    /// From a file's mode, owner, group and permitted file capabilities.
    pub fn of(mode: u32, uid: u32, gid: u32, caps: u64) -> Grants {
        Grants {
            setuid: mode & S_ISUID != 0,
            setgid: mode & S_ISGID != 0 && mode & S_IXGRP != 0,
            uid,
            gid,
            caps,
        }
    }

    pub fn any(&self) -> bool {
        self.setuid || self.setgid || self.caps != 0
    }

    /// What `caller` would gain by running it: the user or group it would become when that is
    /// not its effective one, and the capabilities it would be permitted (within its bounding
    /// set) that it has not. Nothing under `no_new_privs`.
    pub fn gained_by(&self, caller: &Caller) -> Privilege {
        if caller.no_new_privs {
            return Privilege::default();
        }
        Privilege {
            setuid: self.setuid && self.uid != caller.euid,
            setgid: self.setgid && self.gid != caller.egid,
            capabilities: names(self.caps & caller.cap_bnd & !caller.cap_eff),
        }
    }
}

/// `security.capability` of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCaps {
    /// The effective bit: the permitted set is raised at exec without the program asking.
    pub effective: bool,
    pub permitted: u64,
    pub inheritable: u64,
    /// Version 3 (namespaced) capabilities: the user ID that is root for them.
    pub rootid: Option<u32>,
}

/// Why `security.capability` could not be read as capabilities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    #[error("{0} bytes: too short for a capability set")]
    Short(usize),
    #[error("unknown capability revision {0:#x}")]
    Revision(u32),
}

const REVISION_MASK: u32 = 0xFF00_0000;
const FLAG_EFFECTIVE: u32 = 0x0000_0001;
const REVISION_1: u32 = 0x0100_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl FileCaps {
    /// Parses the attribute's bytes: revision 1 (one 32-bit set), 2 (two), or 3 (two, and the
    /// root user ID of the namespace that set them).
    pub fn parse(b: &[u8]) -> Result<FileCaps, CapsError> {
        if b.len() < 4 {
            return Err(CapsError::Short(b.len()));
        }
        let magic = le32(b, 0);
        let (words, need) = match magic & REVISION_MASK {
            REVISION_1 => (1, 12),
            REVISION_2 => (2, 20),
            REVISION_3 => (2, 24),
            r => return Err(CapsError::Revision(r)),
        };
        if b.len() < need {
            return Err(CapsError::Short(b.len()));
        }
        let (mut permitted, mut inheritable) = (0u64, 0u64);
        for w in 0..words {
            permitted |= u64::from(le32(b, 4 + w * 8)) << (32 * w);
            inheritable |= u64::from(le32(b, 8 + w * 8)) << (32 * w);
        }
        let rootid = (magic & REVISION_MASK == REVISION_3).then(|| le32(b, 20));
        Ok(FileCaps { effective: magic & FLAG_EFFECTIVE != 0, permitted, inheritable, rootid })
    }

    /// The permitted capabilities by name (`cap_net_raw`), lowest first.
    pub fn permitted_names(&self) -> Vec<String> {
        names(self.permitted)
    }
}

/// Capability names by number (`include/uapi/linux/capability.h`).
const NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// The names of the capabilities in `mask`; a number this table does not know is `cap_<n>`.
pub fn names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|i| mask & (1u64 << i) != 0)
        .map(|i| NAMES.get(i).map_or_else(|| format!("cap_{i}"), |n| (*n).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(effective: bool, permitted: u64) -> Vec<u8> {
        let mut b = (REVISION_2 | u32::from(effective)).to_le_bytes().to_vec();
        b.extend((permitted as u32).to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(((permitted >> 32) as u32).to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b
    }

    #[test]
    fn setcap_cap_net_raw_plus_ep_reads_back() {
        // What `setcap cap_net_raw+ep` writes: revision 2, effective, bit 13.
        let c = FileCaps::parse(&v2(true, 1 << 13)).unwrap();
        assert!(c.effective);
        assert_eq!(c.permitted_names(), ["cap_net_raw"]);
        assert_eq!(c.rootid, None);
        let high = FileCaps::parse(&v2(false, (1 << 40) | (1 << 21) | (1 << 63))).unwrap();
        assert_eq!(high.permitted_names(), ["cap_sys_admin", "cap_checkpoint_restore", "cap_63"]);
    }

    #[test]
    fn mode_bits_and_capabilities_make_the_privilege() {
        assert!(!Privilege::of(0o100755, None).any());
        let p = Privilege::of(0o104755, None);
        assert!(p.setuid && !p.setgid && p.any());
        assert!(Privilege::of(0o102755, None).setgid);
        assert!(!Privilege::of(0o102745, None).setgid, "setgid without group execute: locking");
        let p = Privilege::of(0o100755, Some(&v2(true, 1 << 13)));
        assert_eq!(p.capabilities, ["cap_net_raw"]);
        assert!(!Privilege::of(0o100755, Some(&[9, 9])).any(), "unparsable: refused at exec");
    }

    #[test]
    fn namespaced_and_old_revisions_and_bad_bytes() {
        let mut v3 = v2(true, 1 << 7);
        v3[3] = 0x03;
        v3.extend(100_000u32.to_le_bytes());
        let c = FileCaps::parse(&v3).unwrap();
        assert_eq!((c.rootid, c.permitted_names()), (Some(100_000), vec!["cap_setuid".to_owned()]));
        let mut v1 = REVISION_1.to_le_bytes().to_vec();
        v1.extend(1u32.to_le_bytes());
        v1.extend(0u32.to_le_bytes());
        assert_eq!(FileCaps::parse(&v1).unwrap().permitted_names(), ["cap_chown"]);
        assert_eq!(FileCaps::parse(&[1, 2]), Err(CapsError::Short(2)));
        assert_eq!(FileCaps::parse(&v3[..20]), Err(CapsError::Short(20)));
        assert_eq!(FileCaps::parse(&0x0700_0000u32.to_le_bytes()), Err(CapsError::Revision(0x0700_0000)));
    }

    #[test]
    fn a_caller_gains_what_it_does_not_have_unless_no_new_privs() {
        let suid_root = Grants::of(0o104755, 0, 0, 0);
        let user = Caller { euid: 1000, egid: 1000, cap_eff: 0, cap_bnd: !0, no_new_privs: false };
        let root = Caller { euid: 0, egid: 0, cap_eff: !0, cap_bnd: !0, no_new_privs: false };
        assert!(suid_root.gained_by(&user).setuid);
        assert!(!suid_root.gained_by(&root).any(), "root becomes root");
        assert!(!suid_root.gained_by(&Caller { no_new_privs: true, ..user }).any());
        let ping = Grants::of(0o100755, 0, 0, 1 << 13);
        assert_eq!(ping.gained_by(&user).capabilities, ["cap_net_raw"]);
        assert!(!ping.gained_by(&root).any());
        let docker_root = Caller { cap_eff: 0xa80425fb, cap_bnd: 0xa80425fb, ..root };
        assert!(!ping.gained_by(&docker_root).any(), "cap_net_raw is dropped from the bounding set");
        let admin = Grants::of(0o100755, 0, 0, 1 << 21);
        assert!(!admin.gained_by(&docker_root).any(), "outside the bounding set: not permitted");
        assert!(!Grants::of(0o102745, 0, 50, 0).any(), "setgid without group execute");
        assert!(Grants::of(0o102755, 0, 50, 0).gained_by(&user).setgid);
    }
}
