//! containers/storage, Podman's and CRI-O's: `<root>/overlay/<layer>/merged`;
//! `overlay-containers/containers.json` maps the layer to the container, its OCI spec's
//! annotations describe it (and tell CRI-O's from Podman's), `overlay-images/images.json` has
//! the image's digest and `overlay-layers/layers.json` the layers' diffIDs.

use std::path::{Path, PathBuf};

use driftgate_core::config::{Config, StorageConfig};

use super::common::{parse_or_warn, single_layer_dir, Api, Runtime};
use crate::container::diffids::DiffIdResolver;
use crate::container::identity::Identity;
use crate::container::meta::{self, Metadata};
use crate::container::state_file::{is_json_array, read_state, state_warning};

/// A runtime on containers/storage, with its own `[discovery.*]` section.
pub struct Storage {
    name: &'static str,
    section: fn(&Config) -> &StorageConfig,
}

pub static PODMAN: Storage = Storage { name: "podman", section: |c| &c.podman };
pub static CRIO: Storage = Storage { name: "cri-o", section: |c| &c.crio };

impl Runtime for Storage {
    fn name(&self) -> &'static str {
        self.name
    }

    fn identify(&self, mountpoint: &Path, cfg: &Config) -> Option<Identity> {
        let s = (self.section)(cfg);
        if !s.enabled {
            return None;
        }
        let layer = single_layer_dir(mountpoint, &s.root.join("overlay"))?;
        Some(Identity {
            id: layer,
            runtime: self.name,
            runtime_namespace: None,
            storage: Some((s.root.clone(), s.runroot.clone())),
        })
    }

    fn metadata(&self, _api: &Api, _cfg: &Config, c: &Identity) -> Metadata {
        match &c.storage {
            Some((root, runroot)) => metadata(root, runroot, &c.id, self.name),
            None => Metadata { complete: true, ..Default::default() },
        }
    }

    fn diff_ids(
        &self,
        resolver: &mut DiffIdResolver,
        _cfg: &Config,
        c: &Identity,
        _image_digest: Option<&str>,
        dirs: &[PathBuf],
    ) -> Vec<Option<String>> {
        match &c.storage {
            Some((root, _)) => dirs.iter().map(|d| resolver.storage(root, d)).collect(),
            None => vec![None; dirs.len()],
        }
    }
}

/// The container whose rootfs is layer `layer`.
pub fn metadata(root: &Path, runroot: &Path, layer: &str, runtime: &'static str) -> Metadata {
    let path = root.join("overlay-containers/containers.json");
    let containers = read_state(&path).unwrap_or_default();
    let records = meta::parse_storage_containers(&containers);
    if records.is_empty() && !containers.is_empty() && !is_json_array(&containers) {
        state_warning(&path, "not a containers/storage container list");
    }
    let Some(c) = records.into_iter().find(|c| c.layer == layer) else {
        return Metadata::default();
    };
    let annotations = [root, runroot].iter().find_map(|base| {
        let p = base.join("overlay-containers").join(&c.id).join("userdata/config.json");
        read_state(&p).and_then(|b| parse_or_warn(&p, meta::parse_oci_annotations(&b)))
    });
    let mut m = meta::storage_metadata(&c, annotations.as_ref(), runtime);
    if m.image_digest.is_none() && !c.image.is_empty() {
        let images = read_state(&root.join("overlay-images/images.json")).unwrap_or_default();
        m.image_digest = meta::storage_image_digest(&images, &c.image);
    }
    m.complete = m.image.is_some() && annotations.is_some();
    m
}
