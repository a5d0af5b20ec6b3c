//! Configuration: raw TOML (serde, unknown keys rejected) validated into [`Config`].
//!
//! Every error names the file, and where the TOML parser or a validator knows it, the line
//! and the key. Defaults are the ones documented in the README and in
//! `packaging/driftgate.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::engine::Mode;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/driftgate/driftgate.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/driftgate";
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The spool's size cap when `[spool] max_bytes` is not set (0 turns the cap off).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 512 << 20;
/// `daemon.writer_hold_ms`: long enough for an exec thread that was answered to reach the
/// kernel's own write denial even on a busy or CPU-throttled node (one default CFS period).
pub const DEFAULT_WRITER_HOLD_MS: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: line {line}: `{key}`: {message}")]
    Invalid { path: String, line: usize, key: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    node_name: Option<String>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    journald: RawJournald,
    #[serde(default)]
    hashing: RawHashing,
    #[serde(default)]
    findings: RawFindings,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    ioc: RawIoc,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    index: RawIndex,
    #[serde(default)]
    mounts: RawMounts,
    #[serde(default)]
    fileless: RawFileless,
    #[serde(default)]
    scripts: RawScripts,
    #[serde(default)]
    loader: RawLoader,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScripts {
    enabled: Option<bool>,
    interpreters: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoader {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileless {
    memfd_noexec: Option<MemfdNoexec>,
    audit: Option<bool>,
}

/// Where `vm.memfd_noexec = 2` is set (in each container's own PID namespace), which makes
/// `memfd_create(MFD_EXEC)` fail and every memfd non-executable: fileless execution refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemfdNoexec {
    /// In containers whose drift is blocked (the global mode, or a rule, says enforce).
    #[default]
    Enforce,
    /// In every watched container, also in audit mode.
    Always,
    /// Nowhere (a value set earlier is put back).
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMounts {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rules: Vec<Spanned<crate::policy::RawRule>>,
    image_copies: Option<crate::policy::ImageCopies>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    enabled: Option<bool>,
    threads: Option<Spanned<usize>>,
    #[serde(default)]
    import_dirs: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIoc {
    #[serde(default)]
    paths: Vec<PathBuf>,
    block: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<PathBuf>,
    stall_timeout_secs: Option<Spanned<u64>>,
    writer_hold_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFindings {
    aggregate_window_secs: Option<u64>,
    max_arg_bytes: Option<Spanned<u64>>,
    container_burst: Option<Spanned<u64>>,
    container_per_sec: Option<Spanned<f64>>,
    max_open_windows: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<PathBuf>,
    segment_bytes: Option<u64>,
    max_bytes: Option<u64>,
    max_age: Option<Spanned<DurationValue>>,
}

/// A duration written as seconds (`86400`) or with a unit (`"30d"`, `"12h"`, `"90m"`, `"45s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Secs(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    #[serde(default)]
    overlay_globs: Vec<Spanned<String>>,
    rescan_interval_secs: Option<Spanned<u64>>,
    mount_watch: Option<MountWatchKind>,
    #[serde(default)]
    containerd: RawContainerd,
    #[serde(default)]
    docker: RawDocker,
    #[serde(default)]
    podman: RawStorage,
    #[serde(default)]
    crio: RawStorage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    enabled: Option<bool>,
    data_root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    enabled: Option<bool>,
    root: Option<PathBuf>,
    runroot: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainerd {
    enabled: Option<bool>,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    address: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournald {
    enabled: Option<bool>,
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHashing {
    workers: Option<Spanned<usize>>,
    large_file_bytes: Option<u64>,
    cache_entries: Option<Spanned<usize>>,
    max_file_bytes: Option<Spanned<u64>>,
    max_secs: Option<Spanned<f64>>,
    max_pending: Option<Spanned<usize>>,
}

/// How mount-table changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountWatchKind {
    /// fanotify mount events when the kernel has them (6.14+), else mountinfo polling.
    #[default]
    Auto,
    Fanotify,
    Mountinfo,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    pub mode: Mode,
    pub node_name: String,
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
        let invalid = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
            path: shown.clone(),
            line: line_of(text, span.start),
            key: key.to_owned(),
            message,
        };

        // A value that must be at least 1, or the default.
        fn positive_of<T: Copy + PartialOrd + Default>(
            v: &Option<Spanned<T>>,
            default: T,
        ) -> Result<T, std::ops::Range<usize>> {
            match v {
                Some(x) if *x.get_ref() <= T::default() => Err(x.span()),
                Some(x) => Ok(*x.get_ref()),
                None => Ok(default),
            }
        }
        let positive = |v: &Option<Spanned<u64>>, key: &str, default: u64| {
            positive_of(v, default).map_err(|span| invalid(span, key, "must be at least 1".into()))
        };
        let mut globs = GlobSetBuilder::new();
        let mut glob_strings = Vec::new();
        for (i, g) in raw.discovery.overlay_globs.iter().enumerate() {
            let key = format!("discovery.overlay_globs[{i}]");
            if !g.get_ref().starts_with('/') {
                return Err(invalid(g.span(), &key, "must be an absolute path glob".into()));
            }
            let glob = globset::GlobBuilder::new(g.get_ref())
                .literal_separator(true)
                .build()
                .map_err(|e| invalid(g.span(), &key, e.to_string()))?;
            globs.add(glob);
            glob_strings.push(g.get_ref().clone());
        }
        let overlay_globset = globs.build().map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: format!("discovery.overlay_globs: {e}"),
        })?;

        let rescan = match &raw.discovery.rescan_interval_secs {
            Some(v) if *v.get_ref() == 0 => {
                return Err(invalid(v.span(), "discovery.rescan_interval_secs", "must be at least 1".into()))
            }
            Some(v) => Duration::from_secs(*v.get_ref()),
            None => Duration::from_secs(10),
        };
        let workers = match &raw.hashing.workers {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 64 => {
                return Err(invalid(v.span(), "hashing.workers", "must be between 1 and 64".into()))
            }
            Some(v) => *v.get_ref(),
            None => 2,
        };
        let cache_entries = match &raw.hashing.cache_entries {
            Some(v) if *v.get_ref() < 16 => {
                return Err(invalid(v.span(), "hashing.cache_entries", "must be at least 16".into()))
            }
            Some(v) => *v.get_ref(),
            None => 65536,
        };

        let stall = match &raw.daemon.stall_timeout_secs {
            Some(v) if *v.get_ref() < 5 => {
                return Err(invalid(v.span(), "daemon.stall_timeout_secs", "must be at least 5".into()))
            }
            Some(v) => Duration::from_secs(*v.get_ref()),
            None => Duration::from_secs(10),
        };
        let writer_hold = match &raw.daemon.writer_hold_ms {
            Some(v) if *v.get_ref() > 10_000 => {
                return Err(invalid(v.span(), "daemon.writer_hold_ms", "must be at most 10000".into()))
            }
            Some(v) => Duration::from_millis(*v.get_ref()),
            None => Duration::from_millis(DEFAULT_WRITER_HOLD_MS),
        };
        let spool_max_age = match &raw.spool.max_age {
            None => None,
            Some(v) => Some(match v.get_ref() {
                DurationValue::Secs(n) => Duration::from_secs(*n),
                DurationValue::Text(t) => {
                    crate::util::parse_duration(t).map_err(|m| invalid(v.span(), "spool.max_age", m))?
                }
            }),
        };
        let metrics_listen = match &raw.metrics.listen {
            None => None,
            Some(v) => {
                let l = v.get_ref();
                let ok = l.starts_with('/') || l.parse::<std::net::SocketAddr>().is_ok();
                if !ok {
                    return Err(invalid(
                        v.span(),
                        "metrics.listen",
                        format!(
                            "{l:?} is neither host:port (like 127.0.0.1:9464) nor an absolute socket path"
                        ),
                    ));
                }
                Some(l.clone())
            }
        };
        let mut policy = crate::policy::Policy {
            image_copies: raw.policy.image_copies.unwrap_or_default(),
            ..Default::default()
        };
        let index_threads = match &raw.index.threads {
            Some(v) if !(1..=64).contains(v.get_ref()) => {
                return Err(invalid(v.span(), "index.threads", "must be between 1 and 64".into()))
            }
            Some(v) => *v.get_ref(),
            None => 1,
        };
        for (i, r) in raw.policy.rules.iter().enumerate() {
            let rule = crate::policy::Rule::compile(i, r.get_ref()).map_err(|m| {
                let (field, msg) = match m.split_once(": ") {
                    Some((f, rest)) if !f.contains(' ') => {
                        (format!("policy.rules[{i}].{f}"), rest.to_owned())
                    }
                    _ => (format!("policy.rules[{i}]"), m.clone()),
                };
                invalid(r.span(), &field, msg)
            })?;
            policy.rules.push(rule);
        }
        let interpreters = match &raw.scripts.interpreters {
            None => crate::engine::indirect::Interpreters::defaults(),
            Some(v) => crate::engine::indirect::Interpreters::new(v.get_ref()).map_err(|m| {
                let (idx, msg) = match m.split_once(": ") {
                    Some((i, rest)) if i.starts_with('[') => (i.to_owned(), rest.to_owned()),
                    _ => (String::new(), m.clone()),
                };
                invalid(v.span(), &format!("scripts.interpreters{idx}"), msg)
            })?,
        };
        let state_dir = raw.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let spool_dir = raw.spool.dir.unwrap_or_else(|| state_dir.join("spool"));
        // In a DaemonSet pod the hostname is the pod's: the manifest passes the node name.
        let node_name = raw
            .node_name
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(hostname);
        Ok(Config {
            source: path.map(Path::to_path_buf),
            mode: raw.mode.unwrap_or_default(),
            node_name,
            state_dir,
            spool_dir,
            spool_segment_bytes: raw.spool.segment_bytes.unwrap_or(16 * 1024 * 1024).max(4096),
            // A container that floods findings must not fill the node's disk: 512 MiB unless set.
            spool_max_bytes: Some(raw.spool.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES)).filter(|b| *b > 0),
            spool_max_age,
            overlay_globs: glob_strings,
            overlay_globset,
            rescan_interval: rescan,
            mount_watch: raw.discovery.mount_watch.unwrap_or_default(),
            containerd: ContainerdConfig {
                enabled: raw.discovery.containerd.enabled.unwrap_or(true),
                root: raw.discovery.containerd.root.unwrap_or_else(|| "/var/lib/containerd".into()),
                state: raw.discovery.containerd.state.unwrap_or_else(|| "/run/containerd".into()),
                address: raw
                    .discovery
                    .containerd
                    .address
                    .unwrap_or_else(|| "/run/containerd/containerd.sock".into()),
            },
            docker: DockerConfig {
                enabled: raw.discovery.docker.enabled.unwrap_or(true),
                data_root: raw.discovery.docker.data_root.unwrap_or_else(|| "/var/lib/docker".into()),
            },
            podman: storage(raw.discovery.podman),
            crio: storage(raw.discovery.crio),
            journald_enabled: raw.journald.enabled.unwrap_or(true),
            journald_socket: raw.journald.socket.unwrap_or_else(|| DEFAULT_JOURNAL_SOCKET.into()),
            hash_workers: workers,
            large_file_bytes: raw.hashing.large_file_bytes.unwrap_or(8 * 1024 * 1024),
            hash_cache_entries: cache_entries,
            aggregate_window: Duration::from_secs(raw.findings.aggregate_window_secs.unwrap_or(10)),
            max_open_windows: positive(&raw.findings.max_open_windows, "findings.max_open_windows", 4096)?
                as usize,
            max_arg_bytes: positive(&raw.findings.max_arg_bytes, "findings.max_arg_bytes", 8192)? as usize,
            container_burst: positive(&raw.findings.container_burst, "findings.container_burst", 200)?
                .min(u32::MAX as u64) as u32,
            container_per_sec: match &raw.findings.container_per_sec {
                Some(v) if !(v.get_ref().is_finite() && *v.get_ref() > 0.0) => {
                    return Err(invalid(
                        v.span(),
                        "findings.container_per_sec",
                        "must be a positive number".into(),
                    ))
                }
                Some(v) => *v.get_ref(),
                None => 20.0,
            },
            max_hash_bytes: positive(&raw.hashing.max_file_bytes, "hashing.max_file_bytes", 512 << 20)?,
            max_hash_time: match &raw.hashing.max_secs {
                Some(v) if !(v.get_ref().is_finite() && (0.1..=60.0).contains(v.get_ref())) => {
                    return Err(invalid(v.span(), "hashing.max_secs", "must be between 0.1 and 60".into()))
                }
                Some(v) => Duration::from_secs_f64(*v.get_ref()),
                None => Duration::from_secs(5),
            },
            max_pending: match &raw.hashing.max_pending {
                Some(v) if *v.get_ref() < 16 => {
                    return Err(invalid(v.span(), "hashing.max_pending", "must be at least 16".into()))
                }
                Some(v) => Some(*v.get_ref()),
                None => None,
            },
            socket: raw.daemon.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            stall_timeout: stall,
            writer_hold,
            metrics_listen,
            ioc_paths: raw.ioc.paths,
            ioc_block: raw.ioc.block.unwrap_or(false),
            policy,
            index: IndexConfig {
                enabled: raw.index.enabled.unwrap_or(true),
                threads: index_threads,
                import_dirs: raw.index.import_dirs,
            },
            mounts_enabled: raw.mounts.enabled.unwrap_or(true),
            memfd_noexec: raw.fileless.memfd_noexec.unwrap_or_default(),
            fileless_audit: raw.fileless.audit.unwrap_or(true),
            scripts_enabled: raw.scripts.enabled.unwrap_or(true),
            interpreters,
            loader_enabled: raw.loader.enabled.unwrap_or(true),
        })
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
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".to_owned())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
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
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_audit_with_standard_paths() {
        let c = Config::defaults();
        assert_eq!(c.mode, Mode::Audit);
        assert_eq!(c.state_dir, Path::new("/var/lib/driftgate"));
        assert_eq!(c.spool_dir, Path::new("/var/lib/driftgate/spool"));
        assert!(c.containerd.enabled);
        assert_eq!(c.containerd.state, Path::new("/run/containerd"));
        assert!(c.overlay_globs.is_empty());
        assert_eq!(c.docker.data_root, Path::new("/var/lib/docker"));
        assert_eq!(c.podman.root, Path::new("/var/lib/containers/storage"));
        assert_eq!(c.crio.runroot, Path::new("/run/containers/storage"));
        assert!(c.docker.enabled && c.podman.enabled && c.crio.enabled);
    }

    #[test]
    fn runtime_sections_are_read_and_can_be_disabled() {
        let c = Config::from_toml(
            "[discovery.docker]\ndata_root = \"/d\"\nenabled = false\n[discovery.podman]\nroot = \"/p\"\n\
             [discovery.crio]\nroot = \"/c\"\nrunroot = \"/cr\"\n",
            None,
        )
        .unwrap();
        assert!(!c.docker.enabled);
        assert_eq!(c.docker.data_root, Path::new("/d"));
        assert_eq!(c.podman.root, Path::new("/p"));
        assert_eq!((c.crio.root.as_path(), c.crio.runroot.as_path()), (Path::new("/c"), Path::new("/cr")));
        let err = Config::from_toml("[discovery.docker]\ndataroot = \"/d\"\n", None).unwrap_err().to_string();
        assert!(err.contains("dataroot"), "{err}");
    }

    #[test]
    fn contract_keys_are_read() {
        let c = Config::from_toml(
            "mode = \"enforce\"\n[spool]\ndir = \"/x/spool\"\n[discovery]\noverlay_globs = [\"/tmp/t*/merged\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.spool_dir, Path::new("/x/spool"));
        assert!(c.overlay_globset.is_match("/tmp/t1/merged"));
        assert!(!c.overlay_globset.is_match("/tmp/t1/sub/merged"), "* must not cross /");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err =
            Config::from_toml("mode = \"audit\"\n\n[spool]\ndirr = \"/x\"\n", Some(Path::new("/etc/d.toml")))
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("/etc/d.toml: line 4:"), "{err}");
        assert!(err.contains("dirr"), "{err}");
    }

    #[test]
    fn bad_mode_value_is_an_error_with_its_line() {
        let err =
            Config::from_toml("\nmode = \"block\"\n", Some(Path::new("c.toml"))).unwrap_err().to_string();
        assert!(err.starts_with("c.toml: line 2:"), "{err}");
        assert!(err.contains("block"), "{err}");
    }

    #[test]
    fn bad_glob_names_its_index_and_line() {
        let err = Config::from_toml(
            "[discovery]\noverlay_globs = [\n  \"/ok/*\",\n  \"/bad/[\",\n]\n",
            Some(Path::new("c.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml: line 4: `discovery.overlay_globs[1]`"), "{err}");
        let err = Config::from_toml("[discovery]\noverlay_globs = [\"relative/*\"]\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported_with_line() {
        let err = Config::from_toml("mode = \"audit\"\n[spool\n", Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml: line 2:"), "{err}");
    }

    #[test]
    fn spool_retention_and_daemon_keys() {
        let c = Config::from_toml(
            "[spool]\nmax_bytes = 1048576\nmax_age = \"30d\"\n[daemon]\nsocket = \"/tmp/x.sock\"\nstall_timeout_secs = 30\n",
            None,
        )
        .unwrap();
        assert_eq!(c.spool_max_bytes, Some(1 << 20));
        assert_eq!(c.spool_max_age, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.socket, Path::new("/tmp/x.sock"));
        assert_eq!(c.stall_timeout, Duration::from_secs(30));
        assert_eq!(
            Config::from_toml("[spool]\nmax_age = 3600\n", None).unwrap().spool_max_age,
            Some(Duration::from_secs(3600))
        );
        let err = Config::from_toml("[spool]\nmax_age = \"3 fortnights\"\n", Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml: line 2: `spool.max_age`"), "{err}");
        assert_eq!(Config::defaults().spool_max_bytes, Some(DEFAULT_SPOOL_MAX_BYTES), "capped by default");
        assert_eq!(
            Config::from_toml("[spool]\nmax_bytes = 0\n", None).unwrap().spool_max_bytes,
            None,
            "0: no cap"
        );
        assert_eq!(crate::util::parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert!(crate::util::parse_duration("").is_err());
    }

    #[test]
    fn policy_rules_are_read_and_errors_name_the_rule_and_field() {
        let c = Config::from_toml(
            "mode = \"audit\"\n[[policy.rules]]\nname = \"pay\"\naction = \"enforce\"\nnamespaces = [\"payments-*\"]\n\
             [[policy.rules]]\naction = \"allow\"\npaths = [\"/var/cache/jit/*\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(c.policy.rules.len(), 2);
        assert_eq!(c.policy.rules[0].name, "pay");
        assert_eq!(c.policy.rules[1].name, "2");
        let err = Config::from_toml(
            "[[policy.rules]]\naction = \"audit\"\n\n[[policy.rules]]\naction = \"enforce\"\npaths = [\"/x/[\"]\n",
            Some(Path::new("c.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml: line 4: `policy.rules[1].paths[0]`"), "{err}");
        let err =
            Config::from_toml("[[policy.rules]]\nnamespaces = [\"x\"]\n", None).unwrap_err().to_string();
        assert!(err.contains("`policy.rules[0]`") && err.contains("action"), "{err}");
        let err = Config::from_toml("[[policy.rules]]\naction = \"block\"\n", None).unwrap_err().to_string();
        assert!(err.contains("block"), "{err}");
        let err = Config::from_toml("[[policy.rules]]\naction = \"audit\"\nnamespace = [\"x\"]\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("namespace"), "unknown key: {err}");
    }

    #[test]
    fn coverage_sections_are_read_and_bad_interpreters_name_the_entry() {
        let c = Config::defaults();
        assert!(c.scripts_enabled && c.loader_enabled && c.mounts_enabled && c.fileless_audit);
        assert_eq!(c.memfd_noexec, MemfdNoexec::Enforce);
        assert!(c.interpreters.names().contains(&"python*".to_owned()));
        let c = Config::from_toml(
            "[scripts]\nenabled = false\ninterpreters = [\"lua*\"]\n[loader]\nenabled = false\n\
             [mounts]\nenabled = false\n[fileless]\nmemfd_noexec = \"always\"\naudit = false\n",
            None,
        )
        .unwrap();
        assert!(!c.scripts_enabled && !c.loader_enabled && !c.mounts_enabled && !c.fileless_audit);
        assert_eq!(c.memfd_noexec, MemfdNoexec::Always);
        assert_eq!(c.interpreters.names(), ["lua*".to_owned()]);
        let err = Config::from_toml(
            "[scripts]\ninterpreters = [\"sh\", \"/usr/bin/perl\"]\n",
            Some(Path::new("c.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml: line 2: `scripts.interpreters[1]`"), "{err}");
        let err =
            Config::from_toml("[fileless]\nmemfd_noexec = \"sometimes\"\n", None).unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
    }

    #[test]
    fn limits_have_safe_defaults_and_bad_values_name_the_key() {
        let c = Config::defaults();
        assert_eq!(c.max_hash_bytes, 512 << 20);
        assert_eq!(c.max_hash_time, Duration::from_secs(5));
        assert_eq!(c.max_pending, None);
        assert_eq!(c.max_arg_bytes, 8192);
        assert_eq!((c.container_burst, c.container_per_sec), (200, 20.0));
        assert_eq!(c.stall_timeout, Duration::from_secs(10));
        let c = Config::from_toml(
            "[hashing]\nmax_file_bytes = 1000\nmax_secs = 0.5\nmax_pending = 64\n\
             [findings]\nmax_arg_bytes = 100\ncontainer_burst = 5\ncontainer_per_sec = 0.5\n",
            None,
        )
        .unwrap();
        assert_eq!(
            (c.max_hash_bytes, c.max_hash_time, c.max_pending),
            (1000, Duration::from_millis(500), Some(64))
        );
        assert_eq!((c.max_arg_bytes, c.container_burst, c.container_per_sec), (100, 5, 0.5));
        for (toml, key) in [
            ("[hashing]\nmax_secs = 0\n", "hashing.max_secs"),
            ("[hashing]\nmax_secs = 600\n", "hashing.max_secs"),
            ("[hashing]\nmax_pending = 2\n", "hashing.max_pending"),
            ("[hashing]\nmax_file_bytes = 0\n", "hashing.max_file_bytes"),
            ("[findings]\ncontainer_per_sec = -1.0\n", "findings.container_per_sec"),
            ("[findings]\nmax_arg_bytes = 0\n", "findings.max_arg_bytes"),
        ] {
            let err = Config::from_toml(toml, Some(Path::new("c.toml"))).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains("line 2"), "{toml}: {err}");
        }
    }

    #[test]
    fn zero_workers_is_rejected() {
        let err = Config::from_toml("[hashing]\nworkers = 0\n", None).unwrap_err().to_string();
        assert!(err.contains("hashing.workers"), "{err}");
    }
}
