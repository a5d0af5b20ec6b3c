//! containerd: `<state>/io.containerd.runtime.v2.task/<ns>/<id>/rootfs`; the bundle's OCI spec
//! annotations (CRI) and the containerd API describe the container; the image's config in
//! containerd's content store lists its diffIDs.

use std::path::{Path, PathBuf};

use driftgate_core::config::Config;

use super::common::{parse_or_warn, Api, Runtime, API_DEADLINE};
use crate::container::containerd_api;
use crate::container::diffids::DiffIdResolver;
use crate::container::identity::Identity;
use crate::container::meta::{self, Metadata};
use crate::container::state_file::read_state;

pub struct Containerd;

impl Runtime for Containerd {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn identify(&self, mountpoint: &Path, cfg: &Config) -> Option<Identity> {
        if !cfg.containerd.enabled {
            return None;
        }
        let rest =
            mountpoint.strip_prefix(cfg.containerd.state.join("io.containerd.runtime.v2.task")).ok()?;
        let parts: Vec<_> = rest.components().collect();
        match parts.as_slice() {
            [ns, id, last] if last.as_os_str() == "rootfs" => Some(Identity {
                id: id.as_os_str().to_string_lossy().into_owned(),
                runtime: self.name(),
                runtime_namespace: Some(ns.as_os_str().to_string_lossy().into_owned()),
                storage: None,
            }),
            _ => None,
        }
    }

    fn metadata(&self, api: &Api, cfg: &Config, c: &Identity) -> Metadata {
        let ns = c.runtime_namespace.clone().unwrap_or_default();
        let id = &c.id;
        let mut m = Metadata { runtime: Some(self.name()), ..Default::default() };
        let spec =
            cfg.containerd.state.join("io.containerd.runtime.v2.task").join(&ns).join(id).join("config.json");
        if let Some(a) = read_state(&spec).and_then(|b| parse_or_warn(&spec, meta::parse_oci_annotations(&b)))
        {
            meta::apply_kubernetes(&mut m, &a);
            m.labels.extend(a.into_iter().filter(|(k, _)| !k.starts_with("io.kubernetes.cri.")));
        }
        let Some(rt) = &api.rt else { return m };
        match containerd_api::get_container(rt, &cfg.containerd.address, &ns, id, API_DEADLINE) {
            Ok(got) => {
                if m.image.is_none() && !got.image.is_empty() {
                    m.image = Some(got.image.clone());
                }
                if m.name.is_none() {
                    m.name = got.labels.get("nerdctl/name").cloned();
                }
                m.labels.extend(got.labels);
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

    fn diff_ids(
        &self,
        resolver: &mut DiffIdResolver,
        cfg: &Config,
        _c: &Identity,
        image_digest: Option<&str>,
        dirs: &[PathBuf],
    ) -> Vec<Option<String>> {
        match image_digest.and_then(|d| resolver.containerd_image(&cfg.containerd.root, d)) {
            // One snapshot per layer, top first.
            Some(ids) if ids.len() == dirs.len() => ids.into_iter().rev().map(Some).collect(),
            _ => vec![None; dirs.len()],
        }
    }
}
