//! The kernel layer's reports, turned into findings on their own thread (`driftgate-kernel`).
//!
//! The program reports a use it refused (or, in an audited container, one fanotify cannot
//! see) after the fact: the task's exec or mapping has already failed or gone on. The thread
//! attributes the report to a container (by the task's PID namespaces, else its cgroup), finds
//! the file through the task's open files where it still has it (for its hash and the IoC
//! check), and records the finding like any other (aggregation, the container's budget). A
//! report of a mount the daemon has not marked also asks discovery to look at the container's
//! mounts again at once.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use driftgate_bpf::event::{What, Why};
use driftgate_bpf::Event;

use crate::container::Container;
use crate::daemon::hot::Shared;
use driftgate_core::finding::MountRef;
use driftgate_sys::fs as sfs;

/// Starts the thread that reads the program's reports; `None` when the layer is off.
pub fn spawn(
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    rescan: Arc<OwnedFd>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let kernel = Arc::clone(shared.namespaces.kernel());
    let Some(mut events) = kernel.take_events() else { return Ok(None) };
    let t = std::thread::Builder::new().name("driftgate-kernel".into()).spawn(move || {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        while !stop.load(Ordering::Relaxed) {
            {
                let mut fds = [PollFd::new(events.fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(200u16));
            }
            while let Some(e) = events.read() {
                kernel.stats.events.fetch_add(1, Ordering::Relaxed);
                let Some(c) = kernel.container_of(e.tgid as i32, e.pidns, e.cgroup) else {
                    kernel.stats.unattributed.fetch_add(1, Ordering::Relaxed);
                    // A use the program refused or reported, with no finding: never quiet.
                    tracing::warn!(
                        tgid = e.tgid,
                        pid_ns = e.pidns,
                        cgroup = e.cgroup,
                        refused = e.refused,
                        path = %String::from_utf8_lossy(if e.path.is_empty() { &e.name } else { &e.path }),
                        "kernel layer: a report about no container the daemon knows (gone since); no finding"
                    );
                    continue;
                };
                if e.why == Why::Unwatched && !e.fileless() {
                    // A mount the daemon has not marked yet: mark it now, not at the next scan.
                    super::super::wake::kick(&rescan);
                }
                record(&shared, &c, &e);
            }
        }
    })?;
    Ok(Some(t))
}

/// The finding for one report.
fn record(shared: &Shared, c: &Arc<Container>, e: &Event) {
    let file = find_file(e);
    let (sha, size) = match &file {
        Some(fd) => match sfs::fstat_fd(fd.as_fd()) {
            Ok(st) => {
                let id = driftgate_sys::fs::file_id(&st);
                let limit = shared.hash_limits.load().max_bytes;
                let sha = (id.size <= limit)
                    .then(|| crate::daemon::hot::hash_stable(fd.as_fd(), &id).map(|(h, _)| h))
                    .flatten();
                (sha, id.size)
            }
            Err(_) => (None, 0),
        },
        None => (None, 0),
    };
    let on_rootfs = e.dev == driftgate_bpf::kernel_dev(c.dev);
    let layer = if e.fileless() {
        "memfd"
    } else if on_rootfs && e.why != Why::Unwatched {
        "upper"
    } else {
        "mount"
    };
    let mount = (layer == "mount").then(|| mount_of(shared, e));
    let path = if e.path.is_empty() { e.name.clone() } else { e.path.clone() };
    let report = crate::daemon::hot::KernelReport {
        exec: e.what == What::Exec,
        fileless: e.fileless(),
        refused: e.refused,
        pid: e.tgid as i32,
        path,
        sha256: sha,
        size,
        layer,
        mount,
        reason: reason(e),
    };
    shared.record_kernel(c, report, file);
}

/// Why the program refused (or reported) the use, for the finding's `reason`.
fn reason(e: &Event) -> String {
    let what = match e.what {
        What::Exec => "exec",
        What::Mmap => "executable mapping",
        What::Mprotect => "mprotect adding PROT_EXEC",
    };
    let done = if e.refused {
        "refused by the kernel layer (BPF LSM)"
    } else {
        "seen by the kernel layer (BPF LSM)"
    };
    let why = match e.why {
        Why::Unwatched if e.fileless() => "a memfd or shared memory segment: no file of the image".to_owned(),
        Why::Unwatched => format!(
            "on a mount driftgate has not marked (detached, made or remounted exec since the last scan; {} mount {})",
            fstype(e.magic),
            e.mnt_id
        ),
        Why::Undecided => "not a file version the daemon decided and allowed (never decided, or changed since)".into(),
        Why::Written => "open for writing when it was used".into(),
    };
    format!("{what} {done}: {why}")
}

/// The file the report is about, through the task's own open files (it used one: an
/// `execveat` fd, a `dlopen`ed file still open, a memfd), matched by device and inode.
fn find_file(e: &Event) -> Option<OwnedFd> {
    let dir = std::fs::read_dir(format!("/proc/{}/fd", e.tgid)).ok()?;
    for ent in dir.flatten().take(4096) {
        let p = ent.path();
        let Ok(st) = nix::sys::stat::stat(&p) else { continue };
        if driftgate_bpf::kernel_dev(st.st_dev) == e.dev && st.st_ino == e.ino && sfs::is_regular(&st) {
            // Opened through the task's fd link: the very file, wherever it is mounted.
            return std::fs::File::open(&p).ok().map(OwnedFd::from);
        }
    }
    None
}

/// The mount a file is on, as the task sees it (its mount table, by the mount's legacy id), or
/// what the program said of it when the task's mount table does not have it (detached).
fn mount_of(shared: &Shared, e: &Event) -> MountRef {
    if let Some(hit) = shared.namespaces.by_key(e.mnt_id) {
        return crate::daemon::hot::facts::mount_ref(&hit.mount);
    }
    let text = std::fs::read(format!("/proc/{}/mountinfo", e.tgid)).unwrap_or_default();
    if let Some(m) =
        crate::container::mountinfo::parse(&text).into_iter().find(|m| m.mount_id == u64::from(e.mnt_legacy))
    {
        use std::os::unix::ffi::OsStrExt;
        let mountpoint = m.mountpoint.as_os_str().as_bytes();
        return crate::daemon::hot::facts::mount_ref_of(mountpoint, &m.fstype, &m.source, &m.root);
    }
    MountRef {
        mountpoint: format!("(not in the process's mount table: detached, mount {})", e.mnt_id),
        fstype: fstype(e.magic).to_owned(),
        source: String::new(),
        root: None,
    }
}

/// A file system's name from its magic number (the common ones).
fn fstype(magic: u64) -> &'static str {
    match magic {
        0x0102_1994 => "tmpfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlay",
        0x6573_5546 => "fuse",
        0x6969 => "nfs",
        0x8584_58f6 => "ramfs",
        0x2fc1_2fc1 => "zfs",
        0x9fa0 => "proc",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(what: What, why: Why, name: &[u8]) -> Event {
        Event {
            what,
            why,
            policy: 2,
            refused: true,
            pid: 1,
            tgid: 1,
            pidns: 1,
            dev: 1,
            cgroup: 1,
            ino: 1,
            mnt_id: 77,
            mnt_legacy: 7,
            magic: 0x0102_1994,
            comm: b"sh".to_vec(),
            name: name.to_vec(),
            path: Vec::new(),
        }
    }

    #[test]
    fn reasons_say_what_was_refused_and_why() {
        let r = reason(&event(What::Exec, Why::Unwatched, b"tool"));
        assert_eq!(r, "exec refused by the kernel layer (BPF LSM): on a mount driftgate has not marked (detached, made or remounted exec since the last scan; tmpfs mount 77)");
        let r = reason(&event(What::Exec, Why::Unwatched, b"memfd:x"));
        assert!(r.ends_with("a memfd or shared memory segment: no file of the image"), "{r}");
        let r = reason(&event(What::Mprotect, Why::Undecided, b"x.so"));
        assert!(r.starts_with("mprotect adding PROT_EXEC refused"), "{r}");
    }
}
