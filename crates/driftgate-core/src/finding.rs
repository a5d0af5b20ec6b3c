//! The finding record: a stable, versioned schema (`driftgate.finding.v1`), written as one JSON
//! object per line to the spool and carried in every journal entry.
//!
//! Strings that come from a container (paths, arguments, process names) may hold any bytes.
//! They are stored as UTF-8 with invalid bytes replaced, and whenever a replacement happened the
//! exact bytes are kept beside them, base64-encoded (`path_raw`, `args_raw`, ...), so nothing is
//! lost and nothing can be forged: JSON escaping covers newlines and control characters.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::model::{Action, Category, Mode, Severity};

pub const SCHEMA: &str = "driftgate.finding.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub schema: String,
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub category: Category,
    pub severity: Severity,
    pub action: Action,
    pub mode: Mode,
    pub node: String,
    /// The cluster the node is in: the `cluster` setting, or the kubelet's kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub container: ContainerRef,
    pub process: ProcessRef,
    pub file: FileRef,
    pub mitre: Vec<String>,
    pub virustotal: Option<String>,
    /// How many execs this record stands for. 1 for a single finding; more for an aggregate
    /// of identical findings (same container, path, hash, category and action) in one window,
    /// whose first occurrence was recorded on its own.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// For aggregates: first and last exec in the window (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// For `*_MALICIOUS_*` categories: the IoC entry that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioc: Option<IocRef>,
    /// The policy rule that decided (its name or 1-based index), or `global` for the mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why the file was decided as it was when that is not the usual way: decided without its
    /// hash (too big, too slow, open for writing, the daemon over its budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The copy of the file's bytes kept in the evidence store (`[evidence]`), or why there is
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRef>,
    /// What was done to the container after the decision (a rule's `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseRef>,
    /// For `REVERSE_SHELL`: the connection the shell's standard input or output is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRef>,
    /// For `MALICIOUS_URL_OBSERVED`: the URL (or host) in the arguments and the listed
    /// indicator it matched (`ioc` names the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlRef>,
}

/// A URL or host found in a command line that an IoC list names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UrlRef {
    /// As found: a URL (scheme and host lowercased) or a bare host.
    pub found: String,
    /// Its host.
    pub host: String,
    /// The listed URL or domain it matched.
    pub indicator: String,
    /// Which argument it is in (`process.args[N]`).
    pub argument: usize,
}

/// A TCP connection, as the process's own network namespace lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkRef {
    pub protocol: String,
    pub local_address: String,
    pub local_port: u16,
    pub remote_address: String,
    pub remote_port: u16,
    /// The standard streams on it (0, 1, 2); empty when the shell's terminal is relayed.
    pub fds: Vec<u8>,
    /// The process that holds the connection and relays the shell's terminal to it (Python's
    /// `pty.spawn`, `socat ... pty`): the shell's parent, when the shell's own streams are a
    /// pseudo-terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_pid: Option<i32>,
}

/// The evidence copy of a finding's file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// The SHA-256 of the bytes kept (`<state_dir>/evidence/sha256/<hex>`).
    pub sha256: Option<String>,
    pub stored: bool,
    /// Why nothing is stored (too big, changed before it was copied, store full), or
    /// `already stored` when an earlier finding's copy is the one kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A response taken on the container after a decision.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponseRef {
    /// `freeze`.
    pub action: String,
    /// The cgroup acted on (its path under the cgroup mount).
    pub cgroup: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IocRef {
    pub name: Option<String>,
    pub source: String,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerRef {
    pub id: String,
    pub runtime: String,
    pub rootfs: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    #[serde(default)]
    pub pod_uid: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The runtime's own namespace (containerd namespace such as `default` or `k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Host pid (thread group id) of the process doing the exec.
    pub pid: i32,
    pub ppid: Option<i32>,
    pub uid: Option<u32>,
    /// The name of the program that is calling exec (the new program has not started yet).
    pub comm: Option<String>,
    /// Arguments of the pending exec (for an open, the opening process's command line).
    pub args: Option<Vec<String>>,
    /// The program the process runs (`/proc/<pid>/exe`): for an exec, the one calling exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    pub cwd: Option<String>,
    /// Host thread id that called exec.
    #[serde(default)]
    pub tid: i32,
    /// The pid as the container sees it (innermost PID namespace).
    #[serde(default)]
    pub container_pid: Option<i32>,
    #[serde(default)]
    pub parent: Option<ParentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_raw: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd_raw: Option<String>,
    /// The arguments were cut (`findings.max_arg_bytes`, or the read's own bounds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    /// A secret in the arguments was replaced (`findings.redact`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_redacted: bool,
    /// The chain of parents, nearest first, up to the container's init (at most
    /// [`MAX_ANCESTORS`]); it stops where a parent is outside the container's PID namespace
    /// (the runtime that started it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<AncestorRef>,
    /// `init` when the process descends from the container's init, `exec` when from a
    /// session entered later (`kubectl exec`, `docker exec`, `nsenter`): its topmost parent in
    /// the container is not the init, and that parent's parent is outside the container.
    /// Absent when the chain could not be followed to either end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Its controlling terminal (`pts/0`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
}

/// The session a process runs in, from its pid in the container, its parents (nearest first,
/// as [`ProcessRef::ancestors`]) and whether the walk up them ended because the next parent
/// is outside the container (rather than at the length limit or an unreadable parent).
pub fn session_of(
    container_pid: Option<i32>,
    ancestors: &[AncestorRef],
    left_container: bool,
) -> Option<&'static str> {
    if container_pid == Some(1) || ancestors.last().is_some_and(|a| a.container_pid == Some(1)) {
        return Some("init");
    }
    left_container.then_some("exec")
}

/// The name of a terminal from its device number (`tty_nr` of `/proc/<pid>/stat`): `pts/N`,
/// `ttyN`, `ttySN`, `console`, else `major:minor`. `None` for 0 (no terminal).
pub fn tty_name(tty_nr: u32) -> Option<String> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some(match (major, minor) {
        (136..=143, m) => format!("pts/{}", (major - 136) * 256 + m),
        (4, m) if m < 64 => format!("tty{m}"),
        (4, m) => format!("ttyS{}", m - 64),
        (5, 0) => "tty".into(),
        (5, 1) => "console".into(),
        (ma, mi) => format!("{ma}:{mi}"),
    })
}

/// How many parents `process.ancestors` lists at most.
pub const MAX_ANCESTORS: usize = 8;

/// One parent of the process a finding is about.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AncestorRef {
    /// Host pid.
    pub pid: i32,
    /// The pid as the container sees it (1: the container's init).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_pid: Option<i32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    /// A secret in the arguments was replaced (`findings.redact`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_redacted: bool,
}

/// The parent of the process doing the exec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ParentRef {
    pub pid: i32,
    pub comm: Option<String>,
    pub exe: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FileRef {
    /// Path inside the container.
    pub path: String,
    pub sha256: Option<String>,
    pub size: u64,
    /// Where the executed file lives: `upper` (the container's writable layer), `lower` (an
    /// image layer: a known-bad image file), `mount` (another mount of the container: a volume,
    /// a tmpfs, `/dev/shm`), `memfd` (no file: fileless execution) or `unknown` (what an
    /// interpreter or loader would run could not be established: `reason` says why).
    pub layer: String,
    /// For `layer = "mount"`: which mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountRef>,
    /// For a script, or a program run through the dynamic loader: the image program that was
    /// executed and was given this file to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<InterpreterRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_raw: Option<String>,
    /// For an added file whose content the image has: the paths where the image has it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_paths: Vec<String>,
    /// The file had been deleted (its last name removed) when it was decided; `path` is the
    /// name it had.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The file is set-user-ID: the process runs as the file's owner.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setuid: bool,
    /// The file is set-group-ID: the process runs with the file's group.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setgid: bool,
    /// The file's capabilities (`security.capability`), by name (`cap_net_raw`): what the
    /// process is permitted when it runs it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// A mount of a container, as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MountRef {
    pub mountpoint: String,
    pub fstype: String,
    /// The mount source (`tmpfs`, `shm`, `/dev/vda1`).
    pub source: String,
    /// The directory of that filesystem mounted there: a volume's host-side directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

/// The image program (an interpreter or the dynamic loader) that ran a file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterpreterRef {
    /// `interpreter` (a script language or shell) or `loader` (the dynamic loader).
    pub kind: String,
    /// The executed program's path in the container.
    pub path: String,
    /// What the file is to that program, when it is not the file it was given to run: a
    /// startup file (`BASH_ENV`, `ENV`, `login profile`, `~/.bashrc`), `--rcfile`, `module`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A byte string as UTF-8, plus its exact bytes in base64 when the conversion was lossy.
pub fn text_and_raw(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// Decodes a `*_raw` field back to bytes.
pub fn decode_raw(raw: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(raw).ok()
}

/// RFC 3339 in UTC, as findings and status write times.
pub fn virustotal_url(sha256: &str) -> String {
    format!("https://www.virustotal.com/gui/file/{sha256}")
}

impl Finding {
    /// A minimal audited ADDED finding, for tests.
    #[doc(hidden)]
    pub fn example(id: &str) -> Finding {
        Finding {
            schema: SCHEMA.into(),
            id: id.into(),
            time: "2026-01-01T00:00:00Z".into(),
            category: Category::AddedBinaryExecuted,
            severity: Severity::Low,
            action: Action::Audited,
            mode: Mode::Audit,
            node: "n".into(),
            cluster: None,
            container: ContainerRef::default(),
            process: ProcessRef::default(),
            file: FileRef::default(),
            mitre: vec![],
            virustotal: None,
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

    /// The exact bytes of the file path.
    pub fn path_bytes(&self) -> Vec<u8> {
        self.file
            .path_raw
            .as_deref()
            .and_then(decode_raw)
            .unwrap_or_else(|| self.file.path.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_named_and_sessions_told_apart() {
        assert_eq!(tty_name(0), None);
        assert_eq!(tty_name(136 << 8).as_deref(), Some("pts/0"));
        assert_eq!(tty_name((136 << 8) | 5).as_deref(), Some("pts/5"));
        assert_eq!(tty_name((137 << 8) | 2).as_deref(), Some("pts/258"));
        // Minors over 255 are split: bits 20..31 hold the high part.
        assert_eq!(tty_name((136 << 8) | (1 << 20)).as_deref(), Some("pts/256"));
        assert_eq!(tty_name(4 << 8 | 1).as_deref(), Some("tty1"));
        assert_eq!(tty_name(4 << 8 | 64).as_deref(), Some("ttyS0"));
        assert_eq!(tty_name(5 << 8 | 1).as_deref(), Some("console"));
        let a = |cpid: i32| AncestorRef { container_pid: Some(cpid), ..Default::default() };
        assert_eq!(session_of(Some(1), &[], false), Some("init"), "the init itself");
        assert_eq!(session_of(Some(9), &[a(5), a(1)], false), Some("init"));
        assert_eq!(
            session_of(Some(9), &[a(5), a(7)], true),
            Some("exec"),
            "its top parent's parent is outside"
        );
        assert_eq!(session_of(Some(9), &[], true), Some("exec"), "its own parent is outside");
        assert_eq!(session_of(Some(9), &[a(5)], false), None, "cut short: not known");
    }

    #[test]
    fn non_utf8_bytes_are_kept_exactly() {
        let bytes = b"/tmp/\xff\nevil";
        let (text, raw) = text_and_raw(bytes);
        assert_eq!(text, "/tmp/\u{fffd}\nevil");
        assert_eq!(decode_raw(&raw.unwrap()).unwrap(), bytes);
        assert_eq!(text_and_raw(b"/bin/ok"), ("/bin/ok".to_owned(), None));
    }

    #[test]
    fn a_hostile_path_cannot_forge_a_second_record() {
        let (path, path_raw) = text_and_raw(b"/tmp/x\n{\"schema\":\"driftgate.finding.v1\"}");
        let mut f = Finding::example("1");
        f.file = FileRef { path, path_raw, ..Default::default() };
        let line = serde_json::to_string(&f).unwrap();
        assert!(!line.contains('\n'));
        let back: Finding = serde_json::from_str(&line).unwrap();
        assert_eq!(back, f);
    }
}
