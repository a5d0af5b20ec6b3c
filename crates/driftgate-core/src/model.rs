//! The vocabulary of a decision: modes, the facts gathered about an exec, verdicts, finding
//! categories and rule actions. Plain types only; [`crate::engine`] decides with them.

use serde::{Deserialize, Serialize};

/// What happens to drift: recorded only, or recorded and denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Audit,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

/// The attributes that identify one version of one file: an inode, and the change time that
/// the kernel (not the user) sets on every modification (`driftgate_sys::fs::file_id` reads
/// them from a `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileId {
    /// The same file version, seen through a different device (overlayfs reports its own
    /// `st_dev` but the real inode's number and times for files that were not copied up).
    pub fn same_version_as(&self, other: &FileId) -> bool {
        self.ino == other.ino
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }
}

/// A mode name that is neither `audit` nor `enforce`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?} (expected \"audit\" or \"enforce\")")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        match s {
            "audit" => Ok(Mode::Audit),
            "enforce" => Ok(Mode::Enforce),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// Ordered from the least to the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// syslog priority used for the journal entry.
    pub fn syslog_priority(self) -> u8 {
        match self {
            Severity::Low => 5,
            Severity::Medium => 4,
            Severity::High => 3,
            Severity::Critical => 2,
        }
    }
}

/// Kinds of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    /// The executed file is at a path the image does not have (or on a mount: a volume,
    /// a tmpfs, `/dev/shm`), or is a program run through the dynamic loader.
    AddedBinaryExecuted,
    /// The executed file is at an image path, but its content is not the image's.
    ModifiedBinaryExecuted,
    /// An added binary whose SHA-256 is a known IoC.
    AddedMaliciousBinaryExecuted,
    /// A modified image binary whose SHA-256 is a known IoC.
    ModifiedMaliciousBinaryExecuted,
    /// An image binary (the image's own bytes) whose SHA-256 is a known IoC.
    BuiltinMaliciousBinaryExecuted,
    /// An image interpreter (`sh`, `python3`, ...) was given a script the image does not have.
    AddedScriptExecuted,
    /// An image interpreter was given a script at an image path whose content is not the image's.
    ModifiedScriptExecuted,
    /// An interpreter was given a script whose SHA-256 is a known IoC.
    MaliciousScriptExecuted,
    /// A process in a container runs a program that has no file: a memfd (`memfd_create` +
    /// `fexecve`). Recorded after the fact.
    FilelessExecution,
    /// Fileless execution of a program whose SHA-256 is a known IoC.
    FilelessMaliciousExecution,
    /// A shared object (ELF `ET_DYN`) the image does not have was opened: `LD_PRELOAD`,
    /// `dlopen`, an extension module dropped in the writable layer, a volume or a tmpfs.
    AddedLibraryLoaded,
    /// A shared object at an image path whose content is not the image's was opened.
    ModifiedLibraryLoaded,
    /// An added shared object whose SHA-256 is a known IoC was opened.
    AddedMaliciousLibraryLoaded,
    /// A modified image library whose SHA-256 is a known IoC was opened.
    ModifiedMaliciousLibraryLoaded,
    /// An image library (the image's own bytes) whose SHA-256 is a known IoC was opened.
    BuiltinMaliciousLibraryLoaded,
    /// A protection driftgate set in a container was undone from inside it: `vm.memfd_noexec`
    /// lowered in the container's PID namespace (driftgate sets it again). The file is the
    /// setting's (`/proc/sys/vm/memfd_noexec`).
    ProtectionTampered,
    /// A shell or interpreter was started with its standard input or output on a TCP
    /// connection to another machine (`nc -e /bin/sh`, `bash -i >& /dev/tcp/...`). Recorded
    /// beside whatever else the exec is; refused only where a rule says `detections =
    /// "enforce"`.
    ReverseShell,
    /// A shell started by a process of the image that is not a shell, the container's init or
    /// an exec session: a web server or a language runtime running a command line, the way a
    /// remote code execution does. The parent program is in `process.parent`.
    UnexpectedChildShell,
    /// An exec's arguments hold a URL (or a host) that an IoC list names: a download from, or
    /// a connection to, known-bad infrastructure (`curl http://.../x.sh`, `wget evil.example/b`).
    MaliciousUrlObserved,
    /// An image program that runs set-user-ID, set-group-ID or with file capabilities raised
    /// the privilege of the process that ran it (`su`, `sudo`, a capability-carrying tool run
    /// by a user that lacks it). Drift that would do so is reported as drift, at HIGH.
    PrivilegedProgramExecuted,
}

impl Category {
    pub const ALL: [Category; 20] = [
        Category::AddedBinaryExecuted,
        Category::ModifiedBinaryExecuted,
        Category::AddedMaliciousBinaryExecuted,
        Category::ModifiedMaliciousBinaryExecuted,
        Category::BuiltinMaliciousBinaryExecuted,
        Category::AddedScriptExecuted,
        Category::ModifiedScriptExecuted,
        Category::MaliciousScriptExecuted,
        Category::FilelessExecution,
        Category::FilelessMaliciousExecution,
        Category::AddedLibraryLoaded,
        Category::ModifiedLibraryLoaded,
        Category::AddedMaliciousLibraryLoaded,
        Category::ModifiedMaliciousLibraryLoaded,
        Category::BuiltinMaliciousLibraryLoaded,
        Category::ProtectionTampered,
        Category::ReverseShell,
        Category::UnexpectedChildShell,
        Category::MaliciousUrlObserved,
        Category::PrivilegedProgramExecuted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::AddedBinaryExecuted => "ADDED_BINARY_EXECUTED",
            Category::ModifiedBinaryExecuted => "MODIFIED_BINARY_EXECUTED",
            Category::AddedMaliciousBinaryExecuted => "ADDED_MALICIOUS_BINARY_EXECUTED",
            Category::ModifiedMaliciousBinaryExecuted => "MODIFIED_MALICIOUS_BINARY_EXECUTED",
            Category::BuiltinMaliciousBinaryExecuted => "BUILTIN_MALICIOUS_BINARY_EXECUTED",
            Category::AddedScriptExecuted => "ADDED_SCRIPT_EXECUTED",
            Category::ModifiedScriptExecuted => "MODIFIED_SCRIPT_EXECUTED",
            Category::MaliciousScriptExecuted => "MALICIOUS_SCRIPT_EXECUTED",
            Category::FilelessExecution => "FILELESS_EXECUTION",
            Category::FilelessMaliciousExecution => "FILELESS_MALICIOUS_EXECUTION",
            Category::AddedLibraryLoaded => "ADDED_LIBRARY_LOADED",
            Category::ModifiedLibraryLoaded => "MODIFIED_LIBRARY_LOADED",
            Category::AddedMaliciousLibraryLoaded => "ADDED_MALICIOUS_LIBRARY_LOADED",
            Category::ModifiedMaliciousLibraryLoaded => "MODIFIED_MALICIOUS_LIBRARY_LOADED",
            Category::BuiltinMaliciousLibraryLoaded => "BUILTIN_MALICIOUS_LIBRARY_LOADED",
            Category::ProtectionTampered => "PROTECTION_TAMPERED",
            Category::ReverseShell => "REVERSE_SHELL",
            Category::UnexpectedChildShell => "UNEXPECTED_CHILD_SHELL",
            Category::MaliciousUrlObserved => "MALICIOUS_URL_OBSERVED",
            Category::PrivilegedProgramExecuted => "PRIVILEGED_PROGRAM_EXECUTED",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Category::AddedBinaryExecuted | Category::AddedScriptExecuted => Severity::Low,
            Category::ModifiedBinaryExecuted | Category::ModifiedScriptExecuted => Severity::Medium,
            Category::UnexpectedChildShell | Category::PrivilegedProgramExecuted => Severity::Medium,
            // Code loaded into a program that is allowed to run: a stronger sign than a new
            // program, since it is how an intruder hides in a legitimate process.
            Category::AddedLibraryLoaded => Severity::Medium,
            Category::FilelessExecution
            | Category::ModifiedLibraryLoaded
            | Category::ProtectionTampered
            | Category::ReverseShell
            | Category::MaliciousUrlObserved => Severity::High,
            Category::AddedMaliciousBinaryExecuted
            | Category::ModifiedMaliciousBinaryExecuted
            | Category::BuiltinMaliciousBinaryExecuted
            | Category::MaliciousScriptExecuted
            | Category::FilelessMaliciousExecution
            | Category::AddedMaliciousLibraryLoaded
            | Category::ModifiedMaliciousLibraryLoaded
            | Category::BuiltinMaliciousLibraryLoaded => Severity::Critical,
        }
    }

    /// MITRE ATT&CK techniques: T1105 Ingress Tool Transfer, T1106 Native API,
    /// T1036 Masquerading (a binary replaced under an image path), T1059 Command and Scripting
    /// Interpreter, T1620 Reflective Code Loading, T1574.006 Dynamic Linker Hijacking
    /// (`LD_PRELOAD`), T1129 Shared Modules (`dlopen`).
    pub fn mitre(self) -> &'static [&'static str] {
        match self {
            Category::AddedBinaryExecuted | Category::AddedMaliciousBinaryExecuted => &["T1105", "T1106"],
            Category::ModifiedBinaryExecuted | Category::ModifiedMaliciousBinaryExecuted => {
                &["T1105", "T1106", "T1036"]
            }
            // A known-bad binary shipped in the image: a compromised image or dependency.
            Category::BuiltinMaliciousBinaryExecuted => &["T1195", "T1204.003"],
            Category::AddedScriptExecuted | Category::MaliciousScriptExecuted => &["T1059", "T1105"],
            Category::ModifiedScriptExecuted => &["T1059", "T1105", "T1036"],
            Category::FilelessExecution | Category::FilelessMaliciousExecution => &["T1620", "T1106"],
            Category::AddedLibraryLoaded | Category::AddedMaliciousLibraryLoaded => {
                &["T1574.006", "T1129", "T1105"]
            }
            Category::ModifiedLibraryLoaded | Category::ModifiedMaliciousLibraryLoaded => {
                &["T1574.006", "T1129", "T1036"]
            }
            Category::BuiltinMaliciousLibraryLoaded => &["T1195", "T1129"],
            // Impair Defenses: Disable or Modify Tools.
            Category::ProtectionTampered => &["T1562.001"],
            // A shell whose input and output are a network peer: Command and Scripting
            // Interpreter, driven from another machine.
            Category::ReverseShell => &["T1059"],
            // A service's shell: Command and Scripting Interpreter: Unix Shell.
            Category::UnexpectedChildShell => &["T1059", "T1059.004"],
            // Known-bad infrastructure named on a command line: Ingress Tool Transfer.
            Category::MaliciousUrlObserved => &["T1105"],
            // Abuse Elevation Control Mechanism: Setuid and Setgid.
            Category::PrivilegedProgramExecuted => &["T1548.001"],
        }
    }

    /// A fixed journal `MESSAGE_ID` per category, so `journalctl MESSAGE_ID=...` finds them.
    pub fn message_id(self) -> &'static str {
        match self {
            Category::AddedBinaryExecuted => "6c1f4a3e0b9d4c8e9a2f7d5b3e1c0a91",
            Category::ModifiedBinaryExecuted => "0d7e2b9c4a1f4e6b8c3d5a7f9e1b2c42",
            Category::AddedMaliciousBinaryExecuted => "b4e8d2a61c5f4f0e9d7a3c1b8e6f2a53",
            Category::ModifiedMaliciousBinaryExecuted => "7a3f9c1e5b2d4e8a8f6c0d4b2a9e7c64",
            Category::BuiltinMaliciousBinaryExecuted => "e91c7b3d2f8a4c6e9b5d1a7f3c2e8b75",
            Category::AddedScriptExecuted => "3b8e1f6a9c2d4e7f8a0b5c1d6e2f9a86",
            Category::ModifiedScriptExecuted => "a47c2e9b1d5f4a3e8c6b0d2f7e1a5c97",
            Category::MaliciousScriptExecuted => "5e2a9d7c3b1f4e6a9d8c2b0e4f7a1ca8",
            Category::FilelessExecution => "c93f1a7e5d2b4c8e9f6a3d1b7c0e2fb9",
            Category::FilelessMaliciousExecution => "2d6b8f1c4e9a4b7d8e3c5a0f6b2d9ec0",
            Category::AddedLibraryLoaded => "8f3a1c6e2b9d4f7a8e5c0b3d6a1f9e21",
            Category::ModifiedLibraryLoaded => "41c9e7b2a5d84f3e9b6c1a0d7e2f5b32",
            Category::AddedMaliciousLibraryLoaded => "d6a2f8c1e4b94a7d8c3e5f0b1a6d9c43",
            Category::ModifiedMaliciousLibraryLoaded => "9b5e3a7c1d2f4e8a9c6b0d5f3e7a1b54",
            Category::BuiltinMaliciousLibraryLoaded => "2f7c9e1a6b3d4c5e8a1f0b9d2c6e7a65",
            Category::ProtectionTampered => "5a8d2c7e1f3b4a9c8e6d0b2f4a7c1e76",
            Category::ReverseShell => "e3b7a1c9d5f24e8a9b6c0d2f7a4e1c87",
            Category::UnexpectedChildShell => "71d4c8a2e6f94b3d8a5c1e7f0b9d2a98",
            Category::MaliciousUrlObserved => "0c6e9a3f7b1d4e2a8c5f9b0d3e7a1f09",
            Category::PrivilegedProgramExecuted => "b82d5f1a9c3e4a7b8d6e2f0c1a9b3d10",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether this is about a shared object opened (loaded), not an exec.
    pub fn is_library(self) -> bool {
        matches!(
            self,
            Category::AddedLibraryLoaded
                | Category::ModifiedLibraryLoaded
                | Category::AddedMaliciousLibraryLoaded
                | Category::ModifiedMaliciousLibraryLoaded
                | Category::BuiltinMaliciousLibraryLoaded
        )
    }

    /// Whether this is about a script run by an interpreter.
    pub fn is_script(self) -> bool {
        matches!(
            self,
            Category::AddedScriptExecuted
                | Category::ModifiedScriptExecuted
                | Category::MaliciousScriptExecuted
        )
    }
}

/// What was done with the exec that produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Blocked,
    Audited,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Blocked => "blocked",
            Action::Audited => "audited",
        }
    }
}

/// What the image has at the path of an upper-layer file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageAtPath {
    /// No image layer has this path (or a whiteout hides it).
    Absent,
    /// The image has a regular file here with the same content (a copy-up by chmod, touch...).
    SameContent,
    /// The image has a file here with other content.
    DifferentContent,
    /// The image has something here, but the contents could not be compared (read error, or
    /// the executed file could not be hashed safely).
    PresentUncompared,
    /// The layers could not be searched (I/O error, hostile layout): the path is not proven to
    /// be in the image.
    LookupFailed,
}

/// Facts about one exec, gathered by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The file is not on a superblock we know as a container rootfs.
    NotAContainer,
    /// Not a regular file (the kernel only executes regular files; nothing to decide).
    NotRegular,
    /// The executed inode is a lower-layer (image) inode, proven by identity.
    ImageFile,
    /// The executed file lives in the container's writable layer.
    UpperFile(ImageAtPath),
    /// The executed file is on another mount of the container (a volume, a tmpfs, `/dev/shm`):
    /// never image content.
    MountFile,
    /// What an image loader or interpreter would run could not be established: its argument
    /// list, environment, working directory or root could not be read, or a path it names
    /// could not be followed. Decided as drift (added), so that a hole in what the daemon can
    /// read is never an allowed exec.
    Unverifiable,
}

/// What is being run: a program (executed by the kernel, or run through the dynamic loader),
/// a script handed to an interpreter of the image, or a shared object opened (to be loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executed {
    #[default]
    Binary,
    Script,
    Library,
}

/// The answer to give the kernel, and the finding to record, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub finding: Option<(Category, Action)>,
}

impl Verdict {
    pub const ALLOW: Verdict = Verdict { allow: true, finding: None };
}

/// What a rule does with the execs it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Audit,
    Enforce,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Audit => "audit",
            RuleAction::Enforce => "enforce",
        }
    }
}

impl From<Mode> for RuleAction {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Audit => RuleAction::Audit,
            Mode::Enforce => RuleAction::Enforce,
        }
    }
}

/// What to do with an added file whose content the image has at another path
/// (`cp /bin/sh /tmp/x`): report it (as `ADDED_BINARY_EXECUTED` with `file.image_paths`), or
/// allow it, since the bytes are the image's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageCopies {
    #[default]
    Report,
    Allow,
}
