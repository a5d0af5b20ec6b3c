//! What every runtime module shares: the [`Runtime`] trait, the API client holder, and the
//! helpers for reading a runtime's layout and state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use driftgate_core::config::Config;

use crate::container::diffids::DiffIdResolver;
use crate::container::identity::Identity;
use crate::container::meta::Metadata;

/// One container runtime.
pub trait Runtime: Sync {
    /// The name findings, `status` and policy rules (`runtimes = [...]`) use.
    fn name(&self) -> &'static str;

    /// Whether `mountpoint` (an overlay's) is the rootfs of one of this runtime's containers,
    /// under `cfg` (a runtime that `cfg` disables claims nothing).
    fn identify(&self, mountpoint: &Path, cfg: &Config) -> Option<Identity>;

    /// Everything the runtime can tell about `c` now. Never fails: what cannot be read is
    /// `None`, and `complete` says whether a later retry could learn more.
    fn metadata(&self, _api: &Api, _cfg: &Config, _c: &Identity) -> Metadata {
        Metadata { complete: true, ..Default::default() }
    }

    /// The diffIDs of the lower layers `dirs` (top first) of container `c`, whose image has
    /// the digest `image_digest` when known, where the runtime records them.
    fn diff_ids(
        &self,
        _resolver: &mut DiffIdResolver,
        _cfg: &Config,
        _c: &Identity,
        _image_digest: Option<&str>,
        dirs: &[PathBuf],
    ) -> Vec<Option<String>> {
        vec![None; dirs.len()]
    }

    /// Whether lower layer `dir` holds image content (not what the runtime writes itself).
    fn is_image_layer(&self, _dir: &Path) -> bool {
        true
    }
}

pub(super) const API_DEADLINE: Duration = Duration::from_secs(2);

/// What runtimes' metadata lookups share: a runtime for API calls (containerd's).
pub struct Api {
    pub(super) rt: Option<tokio::runtime::Runtime>,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
        Self { rt }
    }
}

/// `parsed`, with a warning (once per file) when the file did not parse.
pub(super) fn parse_or_warn<T>(path: &Path, parsed: Option<T>) -> Option<T> {
    if parsed.is_none() {
        crate::container::state_file::state_warning(
            path,
            "not what its runtime writes (truncated, wrong types?)",
        );
    }
    parsed
}

/// `<base>/<one component>/merged` → the component.
pub(super) fn single_layer_dir(mountpoint: &Path, base: &Path) -> Option<String> {
    let rest = mountpoint.strip_prefix(base).ok()?;
    let parts: Vec<_> = rest.components().collect();
    match parts.as_slice() {
        [layer, last] if last.as_os_str() == "merged" => {
            Some(layer.as_os_str().to_string_lossy().into_owned())
        }
        _ => None,
    }
}
