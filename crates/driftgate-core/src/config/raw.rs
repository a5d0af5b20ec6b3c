//! The configuration file as written: serde structs, unknown keys rejected, values kept with
//! their spans so that a validation error can name the line.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::engine::Mode;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) mode: Option<Mode>,
    pub(super) node_name: Option<String>,
    pub(super) cluster: Option<String>,
    pub(super) state_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) spool: RawSpool,
    #[serde(default)]
    pub(super) discovery: RawDiscovery,
    #[serde(default)]
    pub(super) journald: RawJournald,
    #[serde(default)]
    pub(super) hashing: RawHashing,
    #[serde(default)]
    pub(super) findings: RawFindings,
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) ioc: RawIoc,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) index: RawIndex,
    #[serde(default)]
    pub(super) mounts: RawMounts,
    #[serde(default)]
    pub(super) fileless: RawFileless,
    #[serde(default)]
    pub(super) scripts: RawScripts,
    #[serde(default)]
    pub(super) loader: RawLoader,
    #[serde(default)]
    pub(super) libraries: RawLibraries,
    #[serde(default)]
    pub(super) kernel: RawKernel,
    #[serde(default)]
    pub(super) evidence: RawEvidence,
    #[serde(default)]
    pub(super) export: RawExport,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvidence {
    pub(super) enabled: Option<bool>,
    pub(super) dir: Option<PathBuf>,
    pub(super) max_file_bytes: Option<Spanned<u64>>,
    pub(super) max_total_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
    pub(super) ocsf_file: Option<PathBuf>,
    pub(super) webhook: Option<Spanned<String>>,
    pub(super) webhook_format: Option<WebhookFormat>,
    pub(super) webhook_queue: Option<Spanned<u64>>,
    pub(super) webhook_timeout_secs: Option<Spanned<u64>>,
    /// `https://`: the CA bundle (PEM) to verify the server with, instead of the system's.
    pub(super) webhook_ca_file: Option<Spanned<PathBuf>>,
    /// `https://`: a client certificate chain and its key (PEM), for mutual TLS.
    pub(super) webhook_client_cert: Option<Spanned<PathBuf>>,
    pub(super) webhook_client_key: Option<Spanned<PathBuf>>,
    /// Extra request headers (`Authorization = "Bearer ..."`).
    #[serde(default)]
    pub(super) webhook_headers: std::collections::BTreeMap<String, String>,
    pub(super) otlp: Option<Spanned<RawOtlp>>,
}

/// `[export.otlp]`: findings as OpenTelemetry log records.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtlp {
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) protocol: Option<OtlpProtocol>,
    pub(super) ca_file: Option<Spanned<PathBuf>>,
    pub(super) client_cert: Option<Spanned<PathBuf>>,
    pub(super) client_key: Option<Spanned<PathBuf>>,
    pub(super) queue: Option<Spanned<u64>>,
    pub(super) timeout_secs: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScripts {
    pub(super) enabled: Option<bool>,
    pub(super) interpreters: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoader {
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLibraries {
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKernel {
    pub(super) enabled: Option<KernelLayer>,
    pub(super) persist: Option<bool>,
    pub(super) pin_dir: Option<PathBuf>,
}

/// `[kernel] enabled`: the BPF LSM layer that verifies at the moment of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelLayer {
    /// Where the kernel has BPF LSM (and lets the daemon load a program); said in `status`
    /// where it does not.
    #[default]
    Auto,
    /// Required: the daemon does not start (exit status 78) where the layer cannot be loaded.
    On,
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFileless {
    pub(super) memfd_noexec: Option<MemfdNoexec>,
    pub(super) audit: Option<bool>,
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
pub(super) struct RawMounts {
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) rules: Vec<Spanned<crate::policy::RawRule>>,
    pub(super) image_copies: Option<crate::policy::ImageCopies>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIndex {
    pub(super) enabled: Option<bool>,
    pub(super) threads: Option<Spanned<usize>>,
    #[serde(default)]
    pub(super) import_dirs: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIoc {
    #[serde(default)]
    pub(super) paths: Vec<PathBuf>,
    pub(super) block: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) socket: Option<PathBuf>,
    pub(super) watch_config: Option<bool>,
    pub(super) stall_timeout_secs: Option<Spanned<u64>>,
    pub(super) writer_hold_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFindings {
    pub(super) aggregate_window_secs: Option<u64>,
    pub(super) max_arg_bytes: Option<Spanned<u64>>,
    pub(super) redact: Option<Spanned<Vec<String>>>,
    pub(super) container_burst: Option<Spanned<u64>>,
    pub(super) container_per_sec: Option<Spanned<f64>>,
    pub(super) max_open_windows: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpool {
    pub(super) dir: Option<PathBuf>,
    pub(super) segment_bytes: Option<u64>,
    pub(super) max_bytes: Option<u64>,
    pub(super) max_age: Option<Spanned<DurationValue>>,
}

/// A duration written as seconds (`86400`) or with a unit (`"30d"`, `"12h"`, `"90m"`, `"45s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Secs(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    #[serde(default)]
    pub(super) overlay_globs: Vec<Spanned<String>>,
    pub(super) rescan_interval_secs: Option<Spanned<u64>>,
    pub(super) mount_watch: Option<MountWatchKind>,
    #[serde(default)]
    pub(super) containerd: RawContainerd,
    #[serde(default)]
    pub(super) docker: RawDocker,
    #[serde(default)]
    pub(super) podman: RawStorage,
    #[serde(default)]
    pub(super) crio: RawStorage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDocker {
    pub(super) enabled: Option<bool>,
    pub(super) data_root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) enabled: Option<bool>,
    pub(super) root: Option<PathBuf>,
    pub(super) runroot: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainerd {
    pub(super) enabled: Option<bool>,
    pub(super) root: Option<PathBuf>,
    pub(super) state: Option<PathBuf>,
    pub(super) address: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJournald {
    pub(super) enabled: Option<bool>,
    pub(super) socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHashing {
    pub(super) workers: Option<Spanned<usize>>,
    pub(super) large_file_bytes: Option<u64>,
    pub(super) cache_entries: Option<Spanned<usize>>,
    pub(super) max_file_bytes: Option<Spanned<u64>>,
    pub(super) max_secs: Option<Spanned<f64>>,
    pub(super) max_pending: Option<Spanned<usize>>,
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

/// How OTLP is spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (a Collector's port 4317).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, `POST /v1/logs`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The `driftgate.finding.v1` record.
    #[default]
    Driftgate,
    /// Falco's alert shape, for a Falcosidekick.
    Falco,
    /// An OCSF Detection Finding.
    Ocsf,
}
