//! Reporting: what a finding says about the process and the file, read from /proc and put
//! into the `driftgate.finding.v1` record. Used for decided execs (read while the exec is
//! held, before the answer replaces the process image) and for fileless execution (read
//! after the fact).

use crate::container::mounts::ContainerMount;
use crate::container::Container;
use driftgate_core::engine::{Action, Category, Mode};
use driftgate_core::finding::{self, FileRef, Finding, ProcessRef};
use driftgate_sys::proc;

/// The parent of the process: the finding's `process.parent`, and the first step of the walk
/// up its ancestors (read once for both).
struct ParentFacts {
    pid: i32,
    status: Option<proc::ProcStatus>,
    exe: Option<Vec<u8>>,
    /// It is in an outer PID namespace than the process (known from its status, read with the
    /// rest: a parent outside the container, an exec session's, may be gone by the walk).
    outer: bool,
}

/// What /proc says about the process a finding is about.
pub struct ProcFacts {
    pub status: Option<proc::ProcStatus>,
    pub args: Option<proc::Args>,
    pub cwd: Option<Vec<u8>>,
    pub exe: Option<Vec<u8>>,
    parent: Option<ParentFacts>,
    /// Its PID and mount namespaces: where the walk up its parents stops (read now: a short
    /// program is gone by the time the parents are read).
    namespaces: Option<(u64, u64)>,
    /// The parents, when read already ([`ProcFacts::read_ancestors`]), and whether the walk
    /// ended because the next parent is outside the container.
    ancestors: Option<(Vec<finding::AncestorRef>, bool)>,
    /// Its controlling terminal (`tty_nr`).
    tty_nr: Option<u32>,
    /// When these facts were read: the finding's time. On the hot path that is before the
    /// answer, so two execs of one process are in the order they ran, whichever thread builds
    /// its finding first.
    at: std::time::SystemTime,
}

impl ProcFacts {
    /// For thread `tid` waiting in an exec: the arguments are the pending call's (its
    /// `/proc/<pid>/cmdline` still shows the old program's).
    pub fn of_pending_exec(tid: i32) -> ProcFacts {
        Self::read(tid, proc::pending_exec_args(tid))
    }

    /// For a process that is running its program already: the arguments are its cmdline.
    pub fn of_running(pid: i32) -> ProcFacts {
        Self::read(pid, proc::read_cmdline(pid))
    }

    /// Reads the parents now (for a refused exec, before the answer: no parent can have moved
    /// on, and the refusal's latency does not matter). Otherwise [`build`] reads them, after
    /// the answer.
    pub fn read_ancestors(&mut self, max_arg_bytes: usize) {
        self.ancestors = Some(self.walk(max_arg_bytes));
    }

    fn walk(&self, max_arg_bytes: usize) -> (Vec<finding::AncestorRef>, bool) {
        match (&self.parent, self.namespaces) {
            (Some(p), Some(ns)) => ancestors(ns, p, max_arg_bytes),
            _ => (Vec::new(), false),
        }
    }

    /// Facts as a test gives them: `args` of a process nothing else is known of, read `at`.
    #[cfg(test)]
    pub fn given(args: Vec<Vec<u8>>, at: std::time::SystemTime) -> ProcFacts {
        ProcFacts {
            status: None,
            args: Some((args, false)),
            cwd: None,
            exe: None,
            parent: None,
            namespaces: None,
            ancestors: Some((Vec::new(), false)),
            tty_nr: None,
            at,
        }
    }

    fn read(tid: i32, args: Option<proc::Args>) -> ProcFacts {
        let at = std::time::SystemTime::now();
        let status = proc::read_status(tid);
        let parent = status.as_ref().filter(|s| s.ppid > 0).map(|s| {
            let pst = proc::read_status(s.ppid);
            ParentFacts {
                pid: s.ppid,
                outer: pst.as_ref().is_some_and(|p| p.ns_depth > 0 && p.ns_depth < s.ns_depth),
                status: pst,
                exe: proc::read_exe(s.ppid),
            }
        });
        ProcFacts {
            status,
            args,
            cwd: proc::read_cwd(tid),
            exe: proc::read_exe(tid),
            parent,
            namespaces: proc::ns_id(tid, "pid").zip(proc::ns_id(tid, "mnt")),
            at,
            ancestors: None,
            tty_nr: proc::read_tty_nr(tid),
        }
    }
}

/// The session thread `tid` runs in, found now for a rule that matches on it: `init` when
/// its parents lead to the container's PID 1, `exec` when one of them is outside the
/// container (the process an exec session entered with). `None` in the host's PID namespace
/// (a `hostPID` container's init is not told apart there) or when a parent is gone. Up to one
/// `/proc/<pid>/status` read per parent.
pub fn session_now(tid: i32) -> Option<&'static str> {
    let mut st = proc::read_status(tid)?;
    if st.ns_depth <= 1 {
        return None;
    }
    for _ in 0..64 {
        if st.ns_pid == Some(1) {
            return Some("init");
        }
        let parent = proc::read_status(st.ppid)?;
        if parent.ns_depth < st.ns_depth {
            return Some("exec");
        }
        st = parent;
    }
    None
}

/// What a finding says about the file.
pub struct FileFacts {
    pub path: Vec<u8>,
    pub sha256: Option<[u8; 32]>,
    pub size: u64,
    /// `lower`, `upper`, `mount` or `memfd`.
    pub layer: &'static str,
    pub mount: Option<finding::MountRef>,
    pub image_paths: Vec<Vec<u8>>,
    pub interpreter: Option<finding::InterpreterRef>,
    /// Unlinked by the time it was decided.
    pub deleted: bool,
}

impl FileFacts {
    /// A file known by its name, hash, size, layer and mount only (no image paths, no
    /// interpreter, not deleted).
    pub fn plain(
        path: Vec<u8>,
        sha256: Option<[u8; 32]>,
        size: u64,
        layer: &'static str,
        mount: Option<finding::MountRef>,
    ) -> FileFacts {
        FileFacts {
            path,
            sha256,
            size,
            layer,
            mount,
            image_paths: Vec::new(),
            interpreter: None,
            deleted: false,
        }
    }
}

/// Where and how a finding is recorded: the node, the mode, the argument bytes kept.
pub struct Recorder<'a> {
    pub node: &'a str,
    pub cluster: Option<&'a str>,
    pub mode: Mode,
    pub max_arg_bytes: usize,
    /// Secrets replaced before any sink sees the finding.
    pub redact: std::sync::Arc<driftgate_core::redact::Redactor>,
}

/// Keeps at most `max` bytes of arguments (whole arguments, then a cut last one).
pub fn cap_args(args: &mut Vec<Vec<u8>>, max: usize) -> bool {
    let mut total = 0usize;
    for i in 0..args.len() {
        if total + args[i].len() > max {
            args[i].truncate(max - total);
            args.truncate(i + 1);
            return true;
        }
        total += args[i].len();
    }
    false
}

/// Builds the finding record (without `ioc` and `rule`, which the decision adds).
pub fn build(
    r: &Recorder<'_>,
    c: &Container,
    tid: i32,
    facts: ProcFacts,
    file: FileFacts,
    category: Category,
    action: Action,
) -> Finding {
    // Read now if not yet, after the answer: parents do not change with the exec, and the
    // chain costs up to eight /proc walks that an allowed exec should not wait for.
    let mut facts = facts;
    let (mut ancestors, left_container) =
        facts.ancestors.take().unwrap_or_else(|| facts.walk(r.max_arg_bytes));
    for a in &mut ancestors {
        if let Some(args) = a.args.as_mut() {
            a.args_redacted = r.redact.redact_text(args);
        }
    }
    let ProcFacts { status, args, cwd, exe, parent, at, tty_nr, .. } = facts;
    let container_pid = status.as_ref().and_then(|s| s.ns_pid);
    let mut args_truncated = false;
    let mut args_redacted = false;
    let args = args.map(|(mut a, t)| {
        args_truncated = t | cap_args(&mut a, r.max_arg_bytes);
        args_redacted = r.redact.redact(&mut a);
        a
    });
    // The status Name is the comm of the program calling exec.
    let comm = status.as_ref().map(|s| s.name.clone());
    let (comm, comm_raw) = split_opt(comm);
    let (cwd, cwd_raw) = split_opt(cwd);
    let (args, args_raw) = match args {
        Some(a) => {
            let conv: Vec<(String, Option<String>)> = a.iter().map(|x| finding::text_and_raw(x)).collect();
            let lossy = conv.iter().any(|(_, r)| r.is_some());
            let raw = lossy.then(|| {
                a.iter()
                    .map(|x| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, x))
                    .collect()
            });
            (Some(conv.into_iter().map(|(t, _)| t).collect()), raw)
        }
        None => (None, None),
    };
    let (path, path_raw) = finding::text_and_raw(&file.path);
    let sha = file.sha256.map(driftgate_core::util::hex);
    Finding {
        schema: finding::SCHEMA.into(),
        id: crate::sink::new_finding_id(),
        time: driftgate_core::util::rfc3339(at),
        category,
        severity: category.severity(),
        action,
        mode: r.mode,
        node: r.node.to_owned(),
        cluster: r.cluster.map(str::to_owned),
        container: c.container_ref(),
        process: ProcessRef {
            pid: status.as_ref().map_or(tid, |s| s.tgid),
            ppid: status.as_ref().map(|s| s.ppid),
            uid: status.as_ref().map(|s| s.uid),
            comm,
            args,
            exe: exe.map(|e| String::from_utf8_lossy(&e).into_owned()),
            cwd,
            tid,
            container_pid,
            // In the host's PID namespace (a hostPID container) the init is not PID 1, and its
            // parent is outside like an exec session's: not told apart, so not said.
            session: status
                .as_ref()
                .filter(|s| s.ns_depth > 1)
                .and_then(|_| finding::session_of(container_pid, &ancestors, left_container))
                .map(str::to_owned),
            tty: tty_nr.and_then(finding::tty_name),
            parent: parent.map(|p| finding::ParentRef {
                pid: p.pid,
                comm: p.status.map(|st| String::from_utf8_lossy(&st.name).into_owned()),
                exe: p.exe.map(|e| String::from_utf8_lossy(&e).into_owned()),
            }),
            args_raw,
            comm_raw,
            cwd_raw,
            args_truncated,
            args_redacted,
            ancestors,
        },
        file: FileRef {
            path,
            sha256: sha.clone(),
            size: file.size,
            layer: file.layer.into(),
            mount: file.mount,
            interpreter: file.interpreter,
            path_raw,
            image_paths: file.image_paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect(),
            deleted: file.deleted,
            // Set by stage 5 from what the file grants (`answer.rs` reads it).
            ..Default::default()
        },
        mitre: category.mitre().iter().map(|s| s.to_string()).collect(),
        virustotal: sha.as_deref().map(finding::virustotal_url),
        count: 1,
        first_seen: None,
        last_seen: None,
        ioc: None,
        rule: None,
        reason: None,
        evidence: None,
        response: None,
        network: None,
        url: None,
    }
}

/// The parents of a process in PID and mount namespaces `ns`, starting with `parent` (read
/// already), nearest first: while they are in both (the container: a `hostPID` container's
/// parents outside it are in the host's mount namespace), up to the PID namespace's init, at
/// most [`finding::MAX_ANCESTORS`]. Also whether the walk ended because the next parent is
/// outside the container (the top of an exec session was reached).
fn ancestors(
    ns: (u64, u64),
    parent: &ParentFacts,
    max_arg_bytes: usize,
) -> (Vec<finding::AncestorRef>, bool) {
    let mut out = Vec::new();
    let mut p = parent.pid;
    let mut known = Some((parent.status.clone(), parent.exe.clone()));
    let ns_of = |p: i32| proc::ns_id(p, "pid").zip(proc::ns_id(p, "mnt"));
    if parent.outer {
        return (out, true);
    }
    let inside = |p: i32| ns_of(p) == Some(ns);
    while p > 0 && out.len() < finding::MAX_ANCESTORS && inside(p) {
        let (status, exe) = known.take().unwrap_or_else(|| (proc::read_status(p), proc::read_exe(p)));
        let Some(st) = status else { break };
        let mut args_truncated = false;
        let args = proc::read_cmdline(p).map(|(mut a, t)| {
            args_truncated = t | cap_args(&mut a, max_arg_bytes);
            a.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect()
        });
        out.push(finding::AncestorRef {
            pid: p,
            container_pid: st.ns_pid,
            comm: Some(String::from_utf8_lossy(&st.name).into_owned()),
            exe: exe.map(|e| String::from_utf8_lossy(&e).into_owned()),
            args,
            args_truncated,
            args_redacted: false,
        });
        if st.ns_pid == Some(1) {
            return (out, false);
        }
        p = st.ppid;
    }
    // Outside means seen in other namespaces: a parent that is gone by now (the walk of an
    // allowed exec comes after the answer) leaves the session unknown, not `exec`.
    let outside = |p: i32| ns_of(p).is_some_and(|n| n != ns);
    let left = p > 0 && out.len() < finding::MAX_ANCESTORS && outside(p);
    (out, left)
}

/// A container mount as findings describe it.
pub fn mount_ref(m: &ContainerMount) -> finding::MountRef {
    mount_ref_of(&m.mountpoint, &m.fstype, &m.source, &m.root)
}

/// A finding's mount from a mount table's fields (`root`: `/` for a whole filesystem).
pub fn mount_ref_of(mountpoint: &[u8], fstype: &str, source: &[u8], root: &[u8]) -> finding::MountRef {
    finding::MountRef {
        mountpoint: String::from_utf8_lossy(mountpoint).into_owned(),
        fstype: fstype.to_owned(),
        source: String::from_utf8_lossy(source).into_owned(),
        root: (root != b"/").then(|| String::from_utf8_lossy(root).into_owned()),
    }
}

fn split_opt(v: Option<Vec<u8>>) -> (Option<String>, Option<String>) {
    match v {
        Some(b) => {
            let (t, r) = finding::text_and_raw(&b);
            (Some(t), r)
        }
        None => (None, None),
    }
}

impl crate::sink::Metadata for Container {
    fn pending_version(&self) -> Option<u64> {
        (!self.meta.load().complete).then(|| self.meta_version.load(std::sync::atomic::Ordering::Acquire))
    }

    fn container_ref(&self) -> driftgate_core::finding::ContainerRef {
        Container::container_ref(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_cut_to_the_byte_cap() {
        let mut a: Vec<Vec<u8>> = vec![b"prog".to_vec(), b"0123456789".to_vec(), b"tail".to_vec()];
        assert!(!cap_args(&mut a.clone(), 100));
        assert!(cap_args(&mut a, 8));
        assert_eq!(a, vec![b"prog".to_vec(), b"0123".to_vec()]);
        let mut b: Vec<Vec<u8>> = vec![b"exact".to_vec()];
        assert!(!cap_args(&mut b, 5));
    }

    #[test]
    fn a_finding_is_dated_when_its_facts_were_read_and_its_secrets_are_replaced() {
        let c = Container::for_test(crate::container::Identity {
            id: "abc".into(),
            runtime: "docker",
            runtime_namespace: None,
            storage: None,
        });
        let r = Recorder {
            node: "node-1",
            cluster: None,
            mode: Mode::Enforce,
            max_arg_bytes: 1024,
            redact: std::sync::Arc::new(driftgate_core::redact::Redactor::defaults()),
        };
        // Read before the answer; built later, on whichever thread: dated by the read.
        let read = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let args = vec![b"/tmp/tool".to_vec(), b"--password=hunter2".to_vec()];
        let file = FileFacts::plain(b"/tmp/tool".to_vec(), Some([3; 32]), 10, "upper", None);
        let f = build(
            &r,
            &c,
            42,
            ProcFacts::given(args, read),
            file,
            Category::AddedBinaryExecuted,
            driftgate_core::engine::Action::Blocked,
        );
        assert_eq!(f.time, "2023-11-14T22:13:20Z");
        assert_eq!(f.process.args.as_deref().unwrap()[0], "/tmp/tool");
        assert!(!f.process.args.as_deref().unwrap()[1].contains("hunter2"), "{:?}", f.process.args);
        assert_eq!(f.process.pid, 42, "the thread, when its status could not be read");
    }
}
