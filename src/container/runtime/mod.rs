//! The container runtimes driftgate knows, one module each, registered in [`RUNTIMES`]: how
//! a runtime's rootfs mounts look ([`Runtime::identify`]), where its own state describes a
//! container ([`Runtime::metadata`]), where it records its layers' diffIDs
//! ([`Runtime::diff_ids`]) and which of a container's lower layers are not image content.
//!
//! | runtime | rootfs mountpoint | id and metadata from |
//! | --- | --- | --- |
//! | containerd | `<state>/io.containerd.runtime.v2.task/<ns>/<id>/rootfs` | bundle `config.json` annotations (CRI); the containerd API for the image of plain `ctr`/nerdctl containers |
//! | Docker | `<data_root>/overlay2/<layer>/merged` | `image/overlay2/layerdb/mounts/<id>/mount-id` maps the layer to the container; `containers/<id>/config.v2.json` |
//! | Podman, CRI-O | `<root>/overlay/<layer>/merged` | `overlay-containers/containers.json` maps the layer to the container; `overlay-images/images.json`; the OCI spec's annotations tell CRI-O from Podman |
//! | overlay | a mountpoint matching `discovery.overlay_globs` | none (the mountpoint is its id) |
//!
//! Adding a runtime: a module here with a type that implements [`Runtime`], and one line in
//! [`RUNTIMES`] (its place in the list is its priority when two could claim a mount).

mod containerd;
mod docker;
mod overlay;
mod storage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use driftgate_core::config::Config;

use super::diffids::DiffIdResolver;
use super::meta::Metadata;
use super::{Container, Identity};

/// One container runtime.
pub trait Runtime: Sync {
    /// The name findings, `status` and policy rules (`runtimes = [...]`) use.
    fn name(&self) -> &'static str;

    /// Whether `mountpoint` (an overlay's) is the rootfs of one of this runtime's containers,
    /// under `cfg` (a runtime that `cfg` disables claims nothing).
    fn identify(&self, mountpoint: &Path, cfg: &Config) -> Option<Identity>;

    /// Everything the runtime can tell about `c` now. Never fails: what cannot be read is
    /// `None`, and `complete` says whether a later retry could learn more.
    fn metadata(&self, _api: &Api, _cfg: &Config, _c: &Container) -> Metadata {
        Metadata { complete: true, ..Default::default() }
    }

    /// The diffIDs of `c`'s lower layers `dirs` (top first), where the runtime records them.
    fn diff_ids(
        &self,
        _resolver: &mut DiffIdResolver,
        _cfg: &Config,
        _c: &Container,
        dirs: &[PathBuf],
    ) -> Vec<Option<String>> {
        vec![None; dirs.len()]
    }

    /// Whether lower layer `dir` holds image content (not what the runtime writes itself).
    fn is_image_layer(&self, _dir: &Path) -> bool {
        true
    }
}

/// Every runtime, in the order they are asked about a mount.
pub static RUNTIMES: &[&dyn Runtime] =
    &[&containerd::Containerd, &docker::Docker, &storage::PODMAN, &storage::CRIO, &overlay::Overlay];

/// The runtime called `name`.
pub fn named(name: &str) -> Option<&'static dyn Runtime> {
    RUNTIMES.iter().copied().find(|r| r.name() == name)
}

/// The first runtime that claims `mountpoint`.
pub fn identify(mountpoint: &Path, cfg: &Config) -> Option<Identity> {
    RUNTIMES.iter().find_map(|r| r.identify(mountpoint, cfg))
}

const API_DEADLINE: Duration = Duration::from_secs(2);

/// What runtimes' metadata lookups share: a runtime for API calls (containerd's).
pub struct Api {
    rt: Option<tokio::runtime::Runtime>,
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

    /// Everything `c`'s runtime can tell about it now.
    pub fn resolve(&self, cfg: &Config, c: &Container) -> Metadata {
        match named(c.identity.runtime) {
            Some(r) => r.metadata(self, cfg, c),
            None => Metadata { complete: true, ..Default::default() },
        }
    }
}

/// `parsed`, with a warning (once per file) when the file did not parse.
fn parse_or_warn<T>(path: &Path, parsed: Option<T>) -> Option<T> {
    if parsed.is_none() {
        super::state_warning(path, "not what its runtime writes (truncated, wrong types?)");
    }
    parsed
}

/// `<base>/<one component>/merged` → the component.
fn single_layer_dir(mountpoint: &Path, base: &Path) -> Option<String> {
    let rest = mountpoint.strip_prefix(base).ok()?;
    let parts: Vec<_> = rest.components().collect();
    match parts.as_slice() {
        [layer, last] if last.as_os_str() == "merged" => {
            Some(layer.as_os_str().to_string_lossy().into_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_each_runtime_once_and_the_readme_documents_each() {
        let names: Vec<&str> = RUNTIMES.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["containerd", "docker", "podman", "cri-o", "overlay"]);
        let readme = include_str!("../../../README.md");
        for n in &names {
            assert!(named(n).is_some_and(|r| r.name() == *n));
            assert!(readme.contains(&format!("`{n}`")), "the README does not name runtime {n}");
        }
    }
}
