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

mod common;
mod containerd;
mod docker;
mod overlay;
mod storage;

use std::path::Path;

use driftgate_core::config::Config;

pub use common::{Api, Runtime};

use crate::container::identity::Identity;
use crate::container::meta::Metadata;

/// Every runtime, in the order they are asked about a mount.
pub static RUNTIMES: &[&dyn Runtime] =
    &[&containerd::Containerd, &docker::Docker, &storage::PODMAN, &storage::CRIO, &overlay::Overlay];

/// The runtime called `name`.
pub fn named(name: &str) -> Option<&'static dyn Runtime> {
    RUNTIMES.iter().copied().find(|r| r.name() == name)
}

impl Api {
    /// Everything `c`'s runtime can tell about it now.
    pub fn resolve(&self, cfg: &Config, c: &Identity) -> Metadata {
        match named(c.runtime) {
            Some(r) => r.metadata(self, cfg, c),
            None => Metadata { complete: true, ..Default::default() },
        }
    }
}

/// The first runtime that claims `mountpoint`.
pub fn identify(mountpoint: &Path, cfg: &Config) -> Option<Identity> {
    RUNTIMES.iter().find_map(|r| r.identify(mountpoint, cfg))
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
