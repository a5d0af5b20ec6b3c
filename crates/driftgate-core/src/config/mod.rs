//! Configuration: raw TOML (serde, unknown keys rejected) validated into [`Config`].
//!
//! Every error names the file, and where the TOML parser or a validator knows it, the line
//! and the key. Defaults are the ones documented in the README and in
//! `packaging/driftgate.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;

mod check;
mod error;
mod raw;

pub use check::{expand_headers, Otlp, Webhook, WebhookTls};
use check::{line_of, Check};
pub use error::ConfigError;
pub use raw::{KernelLayer, MemfdNoexec, MountWatchKind, OtlpProtocol, WebhookFormat};
use raw::{RawConfig, RawContainerd, RawStorage};

use crate::engine::Mode;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/driftgate/driftgate.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/driftgate";
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The spool's size cap when `[spool] max_bytes` is not set (0 turns the cap off).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 512 << 20;
/// `daemon.writer_hold_ms`: long enough for an exec thread that was answered to reach the
/// kernel's own write denial even on a busy or CPU-throttled node (one default CFS period).
pub const DEFAULT_WRITER_HOLD_MS: u64 = 100;

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    pub mode: Mode,
    pub node_name: String,
    /// The cluster findings name (`cluster`); unset: the kubelet's kubeconfig says, if any.
    pub cluster: Option<String>,
    pub state_dir: PathBuf,
    pub spool_dir: PathBuf,
    pub spool_segment_bytes: u64,
    /// Retention: the oldest segments are deleted beyond this size or age.
    pub spool_max_bytes: Option<u64>,
    pub spool_max_age: Option<Duration>,
    pub overlay_globs: Vec<String>,
    pub overlay_globset: GlobSet,
    pub rescan_interval: Duration,
    pub mount_watch: MountWatchKind,
    pub containerd: ContainerdConfig,
    pub docker: DockerConfig,
    /// Podman (rootful) containers/storage.
    pub podman: StorageConfig,
    /// CRI-O's containers/storage.
    pub crio: StorageConfig,
    pub journald_enabled: bool,
    pub journald_socket: PathBuf,
    pub hash_workers: usize,
    pub large_file_bytes: u64,
    pub hash_cache_entries: usize,
    /// Repeated identical findings within this window are recorded as one aggregate.
    pub aggregate_window: Duration,
    /// Open aggregation windows kept at most (the oldest is closed and recorded beyond).
    pub max_open_windows: usize,
    /// Argument bytes recorded per finding (the rest is cut, with `process.args_truncated`).
    pub max_arg_bytes: usize,
    /// Secrets replaced in findings' arguments before any sink (`findings.redact`).
    pub redact: crate::redact::Redactor,
    /// Full findings recorded per container: a burst, then this many per second; beyond,
    /// findings are counted (per container, in status and metrics), not recorded.
    pub container_burst: u32,
    pub container_per_sec: f64,
    /// A writable-layer file larger than this is decided without its hash (unverified drift).
    pub max_hash_bytes: u64,
    /// Hashing one file for an exec takes at most this long; then the exec is decided without.
    pub max_hash_time: Duration,
    /// Slow-path execs waiting at most (each holds a file descriptor); `None`: sized from the
    /// file-descriptor limit at start-up. Beyond, an exec is decided without its hash.
    pub max_pending: Option<usize>,
    /// The root-only status socket.
    pub socket: PathBuf,
    /// Reload when the configuration file changes (`daemon.watch_config`); unset: when it is a
    /// Kubernetes ConfigMap mount (a `..data` beside it), whose updates swap that link.
    pub watch_config: Option<bool>,
    /// With an exec held this long and no decision made meanwhile, the daemon exits (the
    /// kernel then allows what it held) rather than stall the node.
    pub stall_timeout: Duration,
    /// How long writers are kept out of an allowed file after its exec is answered
    /// (`daemon.writer_hold_ms`; zero: not at all).
    pub writer_hold: Duration,
    /// Prometheus metrics: `host:port` or an absolute unix socket path; off when `None`.
    pub metrics_listen: Option<String>,
    /// IoC sources: files or directories of plain lists or CSV exports.
    pub ioc_paths: Vec<PathBuf>,
    /// Block IoC matches even in audit mode.
    pub ioc_block: bool,
    /// Scoped rules; the global `mode` is the fallback.
    pub policy: crate::policy::Policy,
    pub index: IndexConfig,
    /// Mark every mount of each container (volumes, tmpfs, `/dev/shm`), not only its rootfs.
    pub mounts_enabled: bool,
    /// Where memfd execution is refused.
    pub memfd_noexec: MemfdNoexec,
    /// Record fileless execution after the fact (the kernel's process-event connector).
    pub fileless_audit: bool,
    /// Decide on the script an image interpreter is given (`sh /tmp/x.sh`).
    pub scripts_enabled: bool,
    /// Which executed files are interpreters (globs on their file name).
    pub interpreters: crate::engine::indirect::Interpreters,
    /// Decide on the program the image's dynamic loader is asked to run (`ld.so /tmp/x`).
    pub loader_enabled: bool,
    /// Decide on every shared object opened in a container (`FAN_OPEN_PERM`): a library that
    /// is not the image's is `ADDED_LIBRARY_LOADED` (denied in enforce mode). Read at start-up:
    /// the marks hold opens or they do not. Off by default (every open of an already-checked
    /// file still costs the kernel's fsnotify walk, about 65 ns: over the 1.05 target).
    pub libraries_enabled: bool,
    pub kernel: KernelConfig,
    pub evidence: EvidenceConfig,
    pub export: ExportConfig,
}

/// `[kernel]`: the BPF LSM layer. Read at start-up.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub enabled: KernelLayer,
    /// Pin the program and its maps in bpffs, so that what was decided keeps holding in
    /// enforced containers while the daemon is down or restarting.
    pub persist: bool,
    /// Where they are pinned (a directory on a bpffs).
    pub pin_dir: PathBuf,
}

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/driftgate";

/// `[evidence]`: copies of the files behind findings, kept for the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceConfig {
    pub enabled: bool,
    /// `<state_dir>/evidence` unless set.
    pub dir: PathBuf,
    /// Files larger than this are not copied (the finding says so).
    pub max_file_bytes: u64,
    /// The store's size cap: the oldest copies are evicted beyond it.
    pub max_total_bytes: u64,
}

/// `[export]`: findings sent off the node as they are recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportConfig {
    /// Every finding appended as one OCSF Detection Finding per line.
    pub ocsf_file: Option<PathBuf>,
    pub webhook: Option<Webhook>,
    /// `[export.otlp]`: each finding as an OpenTelemetry log record.
    pub otlp: Option<Otlp>,
}

/// `[index]`: image-layer manifests.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// Index the layers of running containers on this node, in the background.
    pub enabled: bool,
    /// Threads that hash layer files (each at most one core, at low priority).
    pub threads: usize,
    /// Directories of manifest bundles (`driftgate index build --out`), matched by diffID.
    pub import_dirs: Vec<PathBuf>,
}

/// The configuration as the daemon's threads see it: swapped whole on reload.
pub type SharedConfig = std::sync::Arc<arc_swap::ArcSwap<Config>>;

pub const DEFAULT_SOCKET: &str = "/run/driftgate/driftgate.sock";

#[derive(Debug, Clone)]
pub struct DockerConfig {
    pub enabled: bool,
    pub data_root: PathBuf,
}

/// A containers/storage location (Podman, CRI-O).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub enabled: bool,
    pub root: PathBuf,
    pub runroot: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    pub enabled: bool,
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
}

impl Config {
    /// Loads `path`, or the default config file if it exists, or the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_PATH))
            }
            None => Self::from_toml("", None),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, Some(path))
    }

    /// The embedded defaults.
    pub fn defaults() -> Config {
        Self::from_toml("", None).expect("embedded defaults are valid")
    }

    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let shown = path.map_or_else(|| "<embedded defaults>".to_owned(), |p| p.display().to_string());
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: describe_toml_error(text, &e),
        })?;
        let ck = Check { text, shown };
        let (overlay_globs, overlay_globset) = ck.overlay_globs(&raw.discovery.overlay_globs)?;
        let state_dir = raw.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let spool_dir = raw.spool.dir.unwrap_or_else(|| state_dir.join("spool"));
        let state_dir_for_evidence = state_dir.clone();
        // In a DaemonSet pod the hostname is the pod's: the manifest passes the node name.
        let node_name = raw
            .node_name
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(hostname);
        let (d, f, h) = (&raw.daemon, &raw.findings, &raw.hashing);
        let at_least_1 = |v: u64| v >= 1;
        Ok(Config {
            source: path.map(Path::to_path_buf),
            mode: raw.mode.unwrap_or_default(),
            node_name,
            cluster: raw
                .cluster
                .filter(|c| !c.is_empty())
                .or_else(|| std::env::var("CLUSTER_NAME").ok().filter(|n| !n.is_empty())),
            state_dir,
            spool_dir,
            spool_segment_bytes: raw.spool.segment_bytes.unwrap_or(16 * 1024 * 1024).max(4096),
            // A container that floods findings must not fill the node's disk: 512 MiB unless set.
            spool_max_bytes: Some(raw.spool.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES)).filter(|b| *b > 0),
            spool_max_age: ck.max_age(&raw.spool.max_age)?,
            overlay_globs,
            overlay_globset,
            rescan_interval: Duration::from_secs(ck.value(
                &raw.discovery.rescan_interval_secs,
                "discovery.rescan_interval_secs",
                10,
                at_least_1,
                "must be at least 1",
            )?),
            mount_watch: raw.discovery.mount_watch.unwrap_or_default(),
            containerd: containerd(raw.discovery.containerd),
            docker: DockerConfig {
                enabled: raw.discovery.docker.enabled.unwrap_or(true),
                data_root: raw.discovery.docker.data_root.unwrap_or_else(|| "/var/lib/docker".into()),
            },
            podman: storage(raw.discovery.podman),
            crio: storage(raw.discovery.crio),
            journald_enabled: raw.journald.enabled.unwrap_or(true),
            journald_socket: raw.journald.socket.unwrap_or_else(|| DEFAULT_JOURNAL_SOCKET.into()),
            hash_workers: ck.value(
                &h.workers,
                "hashing.workers",
                2,
                |v| (1..=64).contains(&v),
                "must be between 1 and 64",
            )?,
            large_file_bytes: h.large_file_bytes.unwrap_or(8 * 1024 * 1024),
            hash_cache_entries: ck.value(
                &h.cache_entries,
                "hashing.cache_entries",
                65536,
                |v| v >= 16,
                "must be at least 16",
            )?,
            aggregate_window: Duration::from_secs(f.aggregate_window_secs.unwrap_or(10)),
            max_open_windows: ck.value(
                &f.max_open_windows,
                "findings.max_open_windows",
                4096,
                at_least_1,
                "must be at least 1",
            )? as usize,
            max_arg_bytes: ck.value(
                &f.max_arg_bytes,
                "findings.max_arg_bytes",
                8192,
                at_least_1,
                "must be at least 1",
            )? as usize,
            redact: ck.redact(&f.redact)?,
            container_burst: ck
                .value(&f.container_burst, "findings.container_burst", 200, at_least_1, "must be at least 1")?
                .min(u32::MAX as u64) as u32,
            container_per_sec: ck.value(
                &f.container_per_sec,
                "findings.container_per_sec",
                20.0,
                |v| v.is_finite() && v > 0.0,
                "must be a positive number",
            )?,
            max_hash_bytes: ck.value(
                &h.max_file_bytes,
                "hashing.max_file_bytes",
                512 << 20,
                at_least_1,
                "must be at least 1",
            )?,
            max_hash_time: Duration::from_secs_f64(ck.value(
                &h.max_secs,
                "hashing.max_secs",
                5.0,
                |v| v.is_finite() && (0.1..=60.0).contains(&v),
                "must be between 0.1 and 60",
            )?),
            // Unset: sized from the open-file limit at start-up.
            max_pending: h
                .max_pending
                .is_some()
                .then(|| {
                    ck.value(&h.max_pending, "hashing.max_pending", 0, |v| v >= 16, "must be at least 16")
                })
                .transpose()?,
            watch_config: d.watch_config,
            socket: d.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into()),
            stall_timeout: Duration::from_secs(ck.value(
                &d.stall_timeout_secs,
                "daemon.stall_timeout_secs",
                10,
                |v| v >= 5,
                "must be at least 5",
            )?),
            writer_hold: Duration::from_millis(ck.value(
                &d.writer_hold_ms,
                "daemon.writer_hold_ms",
                DEFAULT_WRITER_HOLD_MS,
                |v| v <= 10_000,
                "must be at most 10000",
            )?),
            metrics_listen: ck.metrics_listen(&raw.metrics.listen)?,
            ioc_paths: raw.ioc.paths,
            ioc_block: raw.ioc.block.unwrap_or(false),
            policy: ck.policy(&raw.policy)?,
            index: IndexConfig {
                enabled: raw.index.enabled.unwrap_or(true),
                threads: ck.value(
                    &raw.index.threads,
                    "index.threads",
                    1,
                    |v| (1..=64).contains(&v),
                    "must be between 1 and 64",
                )?,
                import_dirs: raw.index.import_dirs,
            },
            mounts_enabled: raw.mounts.enabled.unwrap_or(true),
            memfd_noexec: raw.fileless.memfd_noexec.unwrap_or_default(),
            fileless_audit: raw.fileless.audit.unwrap_or(true),
            scripts_enabled: raw.scripts.enabled.unwrap_or(true),
            interpreters: ck.interpreters(&raw.scripts.interpreters)?,
            loader_enabled: raw.loader.enabled.unwrap_or(true),
            // Off by default: see `[libraries]` in the shipped configuration and the README.
            libraries_enabled: raw.libraries.enabled.unwrap_or(false),
            kernel: KernelConfig {
                enabled: raw.kernel.enabled.unwrap_or_default(),
                persist: raw.kernel.persist.unwrap_or(true),
                pin_dir: raw.kernel.pin_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR)),
            },
            evidence: EvidenceConfig {
                enabled: raw.evidence.enabled.unwrap_or(true),
                dir: raw.evidence.dir.clone().unwrap_or_else(|| state_dir_for_evidence.join("evidence")),
                max_file_bytes: ck.value(
                    &raw.evidence.max_file_bytes,
                    "evidence.max_file_bytes",
                    64 << 20,
                    at_least_1,
                    "must be at least 1",
                )?,
                max_total_bytes: ck.value(
                    &raw.evidence.max_total_bytes,
                    "evidence.max_total_bytes",
                    1 << 30,
                    at_least_1,
                    "must be at least 1",
                )?,
            },
            export: ExportConfig {
                ocsf_file: raw.export.ocsf_file.clone(),
                webhook: ck.webhook(&raw.export)?,
                otlp: ck.otlp(&raw.export.otlp)?,
            },
        })
    }
}

fn containerd(raw: RawContainerd) -> ContainerdConfig {
    ContainerdConfig {
        enabled: raw.enabled.unwrap_or(true),
        root: raw.root.unwrap_or_else(|| "/var/lib/containerd".into()),
        state: raw.state.unwrap_or_else(|| "/run/containerd".into()),
        address: raw.address.unwrap_or_else(|| "/run/containerd/containerd.sock".into()),
    }
}

fn storage(raw: RawStorage) -> StorageConfig {
    StorageConfig {
        enabled: raw.enabled.unwrap_or(true),
        root: raw.root.unwrap_or_else(|| "/var/lib/containers/storage".into()),
        runroot: raw.runroot.unwrap_or_else(|| "/run/containers/storage".into()),
    }
}

fn hostname() -> String {
    // The UTS namespace's host name, as gethostname(2) gives it.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim_end().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// toml's errors already carry "line N, column M" and the key; fold them to one readable
/// paragraph.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let src = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {msg} (in `{src}`)")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests;
