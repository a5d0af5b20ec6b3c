//! Docker (overlay2): `<data_root>/overlay2/<layer>/merged`; `layerdb/mounts` maps the layer
//! to the container and `containers/<id>/config.v2.json` describes it. Docker's `<id>-init`
//! layer (hosts, resolv.conf, `.dockerenv` placeholders) is a lower layer of the container's
//! overlay but not image content: files from it are never drift, and it has no manifest.

use std::path::{Path, PathBuf};

use driftgate_core::config::Config;

use super::common::{parse_or_warn, single_layer_dir, Api, Runtime};
use crate::container::diffids::DiffIdResolver;
use crate::container::identity::Identity;
use crate::container::meta::{self, Metadata};
use crate::container::state_file::read_state;

pub struct Docker;

impl Runtime for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn identify(&self, mountpoint: &Path, cfg: &Config) -> Option<Identity> {
        if !cfg.docker.enabled {
            return None;
        }
        let layer = single_layer_dir(mountpoint, &cfg.docker.data_root.join("overlay2"))?;
        (!layer.ends_with("-init")).then_some(Identity {
            id: layer,
            runtime: self.name(),
            runtime_namespace: None,
            storage: None,
        })
    }

    fn metadata(&self, _api: &Api, cfg: &Config, c: &Identity) -> Metadata {
        metadata(&cfg.docker.data_root, &c.id)
    }

    fn diff_ids(
        &self,
        resolver: &mut DiffIdResolver,
        cfg: &Config,
        _c: &Identity,
        _image_digest: Option<&str>,
        dirs: &[PathBuf],
    ) -> Vec<Option<String>> {
        dirs.iter().map(|d| resolver.docker(&cfg.docker.data_root, d)).collect()
    }

    fn is_image_layer(&self, dir: &Path) -> bool {
        !(dir.ends_with("diff")
            && dir.parent().and_then(Path::file_name).is_some_and(|n| n.to_string_lossy().ends_with("-init")))
    }
}

/// The container whose rootfs is layer `layer`.
pub fn metadata(data_root: &Path, layer: &str) -> Metadata {
    let mounts = data_root.join("image/overlay2/layerdb/mounts");
    let cid = std::fs::read_dir(&mounts).ok().and_then(|rd| {
        rd.flatten().find_map(|e| {
            let m = read_state(&e.path().join("mount-id"))?;
            (m.trim_ascii() == layer.as_bytes()).then(|| e.file_name().to_string_lossy().into_owned())
        })
    });
    let Some(cid) = cid else {
        return Metadata { runtime: Some("docker"), ..Default::default() };
    };
    let cfg = data_root.join("containers").join(&cid).join("config.v2.json");
    read_state(&cfg)
        .and_then(|b| parse_or_warn(&cfg, meta::parse_docker_config_v2(&b)))
        .unwrap_or_else(|| Metadata { id: Some(cid), runtime: Some("docker"), ..Default::default() })
}
