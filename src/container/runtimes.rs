//! Resolving a discovered container's metadata from its runtime's own state.
//!
//! | runtime | rootfs mountpoint | id and metadata from |
//! | --- | --- | --- |
//! | containerd | `<state>/io.containerd.runtime.v2.task/<ns>/<id>/rootfs` | bundle `config.json` annotations (CRI); the containerd API for the image of plain `ctr`/nerdctl containers |
//! | Docker | `<data_root>/overlay2/<layer>/merged` | `image/overlay2/layerdb/mounts/<id>/mount-id` maps the layer to the container; `containers/<id>/config.v2.json` |
//! | Podman, CRI-O | `<root>/overlay/<layer>/merged` | `overlay-containers/containers.json` maps the layer to the container; `overlay-images/images.json`; the OCI spec's annotations tell CRI-O from Podman |
//!
//! Docker's `<id>-init` layer (hosts, resolv.conf, `.dockerenv` placeholders) is a lower layer
//! of the container's overlay but not image content: files from it are never drift.

use std::path::Path;
use std::time::Duration;

use super::meta::{self, Metadata};
use super::{containerd_api, Container};
use driftgate_core::config::Config;

const API_DEADLINE: Duration = Duration::from_secs(2);

pub struct Resolver {
    rt: Option<tokio::runtime::Runtime>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
        Self { rt }
    }

    /// Everything the runtime can tell about `c` now. Never fails: what cannot be read is
    /// `None`, and `complete` says whether a later retry could learn more.
    pub fn resolve(&self, cfg: &Config, c: &Container) -> Metadata {
        match c.identity.runtime {
            "containerd" => self.containerd(cfg, c),
            "docker" => docker(&cfg.docker.data_root, &c.identity.id),
            rt @ ("podman" | "cri-o") => match &c.identity.storage {
                Some((root, runroot)) => storage(root, runroot, &c.identity.id, rt),
                None => Metadata { complete: true, ..Default::default() },
            },
            _ => Metadata { complete: true, ..Default::default() },
        }
    }

    fn containerd(&self, cfg: &Config, c: &Container) -> Metadata {
        let ns = c.identity.runtime_namespace.clone().unwrap_or_default();
        let id = &c.identity.id;
        let mut m = Metadata { runtime: Some("containerd"), ..Default::default() };
        let spec =
            cfg.containerd.state.join("io.containerd.runtime.v2.task").join(&ns).join(id).join("config.json");
        if let Some(a) =
            super::read_state(&spec).and_then(|b| parse_or_warn(&spec, meta::parse_oci_annotations(&b)))
        {
            meta::apply_kubernetes(&mut m, &a);
            m.labels.extend(a.into_iter().filter(|(k, _)| !k.starts_with("io.kubernetes.cri.")));
        }
        let Some(rt) = &self.rt else { return m };
        match containerd_api::get_container(rt, &cfg.containerd.address, &ns, id, API_DEADLINE) {
            Ok(api) => {
                if m.image.is_none() && !api.image.is_empty() {
                    m.image = Some(api.image.clone());
                }
                if m.name.is_none() {
                    m.name = api.labels.get("nerdctl/name").cloned();
                }
                m.labels.extend(api.labels);
                if let Some(image) = m.image.clone() {
                    if let Ok(d) = containerd_api::get_image_digest(
                        rt,
                        &cfg.containerd.address,
                        &ns,
                        &image,
                        API_DEADLINE,
                    ) {
                        m.image_digest = d;
                    }
                }
                m.name.get_or_insert_with(|| id.clone());
                m.complete = true;
            }
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "containerd API lookup failed");
                // Kubernetes containers are fully described by their annotations.
                m.complete = m.image.is_some() && m.pod_name.is_some();
            }
        }
        m
    }
}

/// Docker: the container whose rootfs is layer `layer`.
pub fn docker(data_root: &Path, layer: &str) -> Metadata {
    let mounts = data_root.join("image/overlay2/layerdb/mounts");
    let cid = std::fs::read_dir(&mounts).ok().and_then(|rd| {
        rd.flatten().find_map(|e| {
            let m = super::read_state(&e.path().join("mount-id"))?;
            (m.trim_ascii() == layer.as_bytes()).then(|| e.file_name().to_string_lossy().into_owned())
        })
    });
    let Some(cid) = cid else {
        return Metadata { runtime: Some("docker"), ..Default::default() };
    };
    let cfg = data_root.join("containers").join(&cid).join("config.v2.json");
    super::read_state(&cfg)
        .and_then(|b| parse_or_warn(&cfg, meta::parse_docker_config_v2(&b)))
        .unwrap_or_else(|| Metadata { id: Some(cid), runtime: Some("docker"), ..Default::default() })
}

/// containers/storage (Podman, CRI-O): the container whose rootfs is layer `layer`.
pub fn storage(root: &Path, runroot: &Path, layer: &str, runtime: &'static str) -> Metadata {
    let path = root.join("overlay-containers/containers.json");
    let containers = super::read_state(&path).unwrap_or_default();
    let records = meta::parse_storage_containers(&containers);
    if records.is_empty() && !containers.is_empty() && !super::is_json_array(&containers) {
        super::state_warning(&path, "not a containers/storage container list");
    }
    let Some(c) = records.into_iter().find(|c| c.layer == layer) else {
        return Metadata::default();
    };
    let annotations = [root, runroot].iter().find_map(|base| {
        let p = base.join("overlay-containers").join(&c.id).join("userdata/config.json");
        super::read_state(&p).and_then(|b| parse_or_warn(&p, meta::parse_oci_annotations(&b)))
    });
    let mut m = meta::storage_metadata(&c, annotations.as_ref(), runtime);
    if m.image_digest.is_none() && !c.image.is_empty() {
        let images = super::read_state(&root.join("overlay-images/images.json")).unwrap_or_default();
        m.image_digest = meta::storage_image_digest(&images, &c.image);
    }
    m.complete = m.image.is_some() && annotations.is_some();
    m
}

/// `parsed`, with a warning (once per file) when the file did not parse.
fn parse_or_warn<T>(path: &Path, parsed: Option<T>) -> Option<T> {
    if parsed.is_none() {
        super::state_warning(path, "not what its runtime writes (truncated, wrong types?)");
    }
    parsed
}
