//! What the program reports: one record per refused use (or, in an audited container, per use
//! fanotify cannot see), `struct event` of the program, read from the ring buffer.

/// The record's size in the program (`struct event`).
pub const RAW_SIZE: usize = 408;

/// The program's `struct event`, as laid out in memory (read field by field, never cast).
#[repr(C)]
pub struct Raw {
    head: [u32; 8],
    wide: [u64; 4],
    comm: [u8; 16],
    name: [u8; 64],
    path: [u8; 256],
    tail: [u32; 2],
}

/// What was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Exec,
    /// `mmap` with `PROT_EXEC`.
    Mmap,
    /// `mprotect` adding `PROT_EXEC` to a file mapping.
    Mprotect,
}

/// Why it was not what was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Neither the container's rootfs nor a mount the daemon marked (a detached or new mount,
    /// one remounted exec, a new mount namespace's copy, a memfd, shared memory).
    Unwatched,
    /// A writable-layer or mount file not decided allowed, or changed since.
    Undecided,
    /// Open for writing.
    Written,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub what: What,
    pub why: Why,
    pub policy: u32,
    pub refused: bool,
    pub pid: u32,
    pub tgid: u32,
    /// The PID namespace (inode number) through which the program found the container: a
    /// registered one, which names the container even once a task of a namespace nested in it
    /// has exited; the task's own where the cgroup found it.
    pub pidns: u32,
    /// The file's superblock (kernel `dev_t`), inode number, mount id, filesystem magic.
    pub dev: u32,
    pub cgroup: u64,
    pub ino: u64,
    pub mnt_id: u64,
    /// The mount's legacy id (as `/proc/<pid>/mountinfo` lists it).
    pub mnt_legacy: u32,
    pub magic: u64,
    pub comm: Vec<u8>,
    /// The file's name (its dentry's).
    pub name: Vec<u8>,
    /// Its path as the task sees it (empty when it could not be read).
    pub path: Vec<u8>,
}

fn cstr(b: &[u8]) -> Vec<u8> {
    b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())].to_vec()
}

impl Event {
    /// Parses one ring-buffer record; `None` for a record of another size or unknown values.
    pub fn parse(b: &[u8]) -> Option<Event> {
        if b.len() < RAW_SIZE {
            return None;
        }
        let u32_at = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_ne_bytes(b[32 + i * 8..40 + i * 8].try_into().unwrap_or_default());
        let what = match u32_at(0) {
            1 => What::Exec,
            2 => What::Mmap,
            3 => What::Mprotect,
            _ => return None,
        };
        let why = match u32_at(1) {
            1 => Why::Unwatched,
            2 => Why::Undecided,
            3 => Why::Written,
            _ => return None,
        };
        Some(Event {
            what,
            why,
            policy: u32_at(2),
            refused: u32_at(3) != 0,
            pid: u32_at(4),
            tgid: u32_at(5),
            pidns: u32_at(6),
            dev: u32_at(7),
            cgroup: u64_at(0),
            ino: u64_at(1),
            mnt_id: u64_at(2),
            magic: u64_at(3),
            mnt_legacy: u32_at(100),
            comm: cstr(&b[64..80]),
            name: cstr(&b[80..144]),
            path: cstr(&b[144..400]),
        })
    }

    /// A memfd or SysV shared memory segment (what the program's `fileless` says).
    pub fn fileless(&self) -> bool {
        self.name.starts_with(b"memfd:") || self.name.starts_with(b"SYSV")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_parses_field_by_field_and_short_or_unknown_ones_are_refused() {
        let mut b = vec![0u8; RAW_SIZE];
        for (i, v) in [1u32, 1, 6, 1, 42, 41, 4026532184, 61].iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        for (i, v) in [7u64, 99, 12, 0x0102_1994].iter().enumerate() {
            b[32 + i * 8..40 + i * 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[64..69].copy_from_slice(b"bash\0");
        b[80..92].copy_from_slice(b"memfd:x (de)");
        b[144..153].copy_from_slice(b"/memfd:x\0");
        let e = Event::parse(&b).unwrap();
        assert_eq!(
            (e.what, e.why, e.refused, e.tgid, e.pidns, e.dev),
            (What::Exec, Why::Unwatched, true, 41, 4026532184, 61)
        );
        assert_eq!((e.cgroup, e.ino, e.mnt_id), (7, 99, 12));
        b[400..404].copy_from_slice(&33u32.to_ne_bytes());
        assert_eq!(Event::parse(&b).unwrap().mnt_legacy, 33);
        assert_eq!((e.comm.as_slice(), e.path.as_slice()), (&b"bash"[..], &b"/memfd:x"[..]));
        assert!(e.fileless());
        assert!(Event::parse(&b[..100]).is_none());
        b[0] = 9;
        assert!(Event::parse(&b).is_none());
    }
}
