//! What is known about a container beyond its rootfs: who and where, for findings.
//!
//! Gathered off the hot path (a metadata thread, with timeouts) when the container is
//! discovered, and refreshed while incomplete. Readers are pure functions over the bytes of
//! the runtimes' own files, so version drift and missing fields give `None`, never an error
//! that stops discovery.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Metadata of one container. `None` is "not known".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The runtime's container id, when the mountpoint did not say it (Docker, Podman and
    /// CRI-O name rootfs mounts by storage layer, not by container).
    pub id: Option<String>,
    /// The runtime, when the mountpoint alone cannot tell (Podman and CRI-O share a layout).
    pub runtime: Option<&'static str>,
    pub name: Option<String>,
    /// The image reference as the user wrote it.
    pub image: Option<String>,
    /// The image's content digest (`sha256:...`), where the runtime records it.
    pub image_digest: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Everything the runtime can tell was read.
    pub complete: bool,
}

impl Metadata {
    /// Combines a new lookup with what was known: a lookup that found less (the container
    /// was already removed, a file was not written yet) never erases what an earlier one found.
    pub fn merged_with(self, old: &Metadata) -> Metadata {
        if self.id.is_none() && old.id.is_some() {
            return Metadata { complete: old.complete || self.complete, ..old.clone() };
        }
        Metadata {
            id: self.id.or_else(|| old.id.clone()),
            runtime: self.runtime.or(old.runtime),
            name: self.name.or_else(|| old.name.clone()),
            image: self.image.or_else(|| old.image.clone()),
            image_digest: self.image_digest.or_else(|| old.image_digest.clone()),
            pod_namespace: self.pod_namespace.or_else(|| old.pod_namespace.clone()),
            pod_name: self.pod_name.or_else(|| old.pod_name.clone()),
            pod_uid: self.pod_uid.or_else(|| old.pod_uid.clone()),
            labels: if self.labels.is_empty() { old.labels.clone() } else { self.labels },
            complete: self.complete || old.complete,
        }
    }
}

/// The subset of an OCI runtime spec (`config.json`) that carries metadata.
#[derive(Debug, Default, Deserialize)]
pub struct OciSpec {
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

pub fn parse_oci_annotations(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    serde_json::from_slice::<OciSpec>(bytes).ok().map(|s| s.annotations)
}

/// Kubernetes metadata from CRI annotations (containerd's CRI plugin and CRI-O) or Docker's
/// `io.kubernetes.*` labels (cri-dockerd). Fills what it finds.
pub fn apply_kubernetes(m: &mut Metadata, kv: &BTreeMap<String, String>) {
    let get = |keys: &[&str]| keys.iter().find_map(|k| kv.get(*k).filter(|v| !v.is_empty()).cloned());
    if let Some(v) = get(&["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"]) {
        m.pod_namespace = Some(v);
    }
    if let Some(v) = get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]) {
        m.pod_name = Some(v);
    }
    if let Some(v) = get(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]) {
        m.pod_uid = Some(v);
    }
    if let Some(v) = get(&["io.kubernetes.cri.container-name", "io.kubernetes.container.name"]) {
        m.name = Some(v);
    }
    if let Some(v) = get(&["io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"]) {
        m.image = Some(v);
    }
    if let Some(v) = get(&["io.kubernetes.cri-o.ImageRef"]).filter(|v| v.contains(':')) {
        m.image_digest.get_or_insert(v);
    }
}

/// Is this the spec of a CRI-O container? Both CRI-O and Podman write `io.container.manager`
/// (`cri-o` / `libpod`), and Podman also writes some `io.kubernetes.cri-o.*` annotations, so
/// the manager decides; older CRI-O without it is recognised by annotations only it writes.
pub fn is_crio(annotations: &BTreeMap<String, String>) -> bool {
    match annotations.get("io.container.manager").map(String::as_str) {
        Some(manager) => manager == "cri-o",
        None => [
            "io.kubernetes.cri-o.SandboxID",
            "io.kubernetes.cri-o.ContainerType",
            "io.kubernetes.cri-o.ImageName",
        ]
        .iter()
        .any(|k| annotations.contains_key(*k)),
    }
}

// ---- Docker ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct DockerConfigV2 {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Config", default)]
    config: Option<DockerConfigInner>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigInner {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Docker's `containers/<id>/config.v2.json`.
pub fn parse_docker_config_v2(bytes: &[u8]) -> Option<Metadata> {
    let c: DockerConfigV2 = serde_json::from_slice(bytes).ok()?;
    let inner = c.config.unwrap_or_default();
    let mut m = Metadata {
        id: (!c.id.is_empty()).then_some(c.id),
        runtime: Some("docker"),
        name: Some(c.name.trim_start_matches('/').to_owned()).filter(|n| !n.is_empty()),
        image: Some(inner.image).filter(|i| !i.is_empty()),
        image_digest: Some(c.image).filter(|i| i.starts_with("sha256:")),
        labels: inner.labels.unwrap_or_default(),
        ..Default::default()
    };
    let labels = m.labels.clone();
    apply_kubernetes(&mut m, &labels);
    m.complete = m.id.is_some() && m.image.is_some();
    Some(m)
}

// ---- containers/storage (Podman, CRI-O) -----------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct StorageContainer {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub layer: String,
    /// A JSON document in a string: `{"image-name": ..., "name": ...}` for Podman.
    #[serde(default)]
    pub metadata: String,
}

#[derive(Debug, Deserialize)]
struct StorageImage {
    id: String,
    #[serde(default)]
    digest: String,
}

#[derive(Debug, Default, Deserialize)]
struct PodmanMeta {
    #[serde(rename = "image-name", default)]
    image_name: String,
    #[serde(default)]
    name: String,
}

/// `overlay-containers/containers.json`.
pub fn parse_storage_containers(bytes: &[u8]) -> Vec<StorageContainer> {
    serde_json::from_slice(bytes).unwrap_or_default()
}

/// `overlay-images/images.json`: the digest of image `id`.
pub fn storage_image_digest(images_json: &[u8], id: &str) -> Option<String> {
    let v: Vec<StorageImage> = serde_json::from_slice(images_json).ok()?;
    v.into_iter().find(|i| i.id == id).map(|i| i.digest).filter(|d| !d.is_empty())
}

/// Metadata of a containers/storage container, refined by its OCI spec's annotations.
/// `runtime` is the configured section the storage root belongs to (`podman` or `cri-o`);
/// the spec's annotations decide when they are there (the sections can share a root).
pub fn storage_metadata(
    c: &StorageContainer,
    annotations: Option<&BTreeMap<String, String>>,
    runtime: &'static str,
) -> Metadata {
    let pm: PodmanMeta = serde_json::from_str(&c.metadata).unwrap_or_default();
    let mut m = Metadata {
        id: Some(c.id.clone()),
        runtime: Some(runtime),
        name: Some(pm.name).filter(|n| !n.is_empty()).or_else(|| c.names.first().cloned()),
        image: Some(pm.image_name).filter(|n| !n.is_empty()),
        ..Default::default()
    };
    if let Some(a) = annotations {
        m.runtime = Some(if is_crio(a) { "cri-o" } else { "podman" });
        if m.runtime == Some("cri-o") {
            if let Some(l) = a.get("io.kubernetes.cri-o.Labels").and_then(|l| serde_json::from_str(l).ok()) {
                m.labels = l;
            }
        }
        apply_kubernetes(&mut m, a);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_poorer_lookup_never_erases_metadata() {
        let good = Metadata {
            id: Some("c".into()),
            name: Some("web".into()),
            image: Some("i".into()),
            ..Default::default()
        };
        let gone = Metadata::default();
        assert_eq!(gone.merged_with(&good), good);
        let richer = Metadata {
            id: Some("c".into()),
            pod_name: Some("p".into()),
            complete: true,
            ..Default::default()
        };
        let m = richer.merged_with(&good);
        assert_eq!((m.name.as_deref(), m.pod_name.as_deref(), m.complete), (Some("web"), Some("p"), true));
    }

    #[test]
    fn cri_annotations_fill_kubernetes_fields() {
        let spec = br#"{"ociVersion":"1.0.2","annotations":{
            "io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"web",
            "io.kubernetes.cri.sandbox-name":"web-7d4b9",
            "io.kubernetes.cri.sandbox-namespace":"payments",
            "io.kubernetes.cri.sandbox-uid":"8c1e",
            "io.kubernetes.cri.image-name":"registry.example/web:1.2"}}"#;
        let a = parse_oci_annotations(spec).unwrap();
        let mut m = Metadata::default();
        apply_kubernetes(&mut m, &a);
        assert_eq!(m.name.as_deref(), Some("web"));
        assert_eq!(m.pod_name.as_deref(), Some("web-7d4b9"));
        assert_eq!(m.pod_namespace.as_deref(), Some("payments"));
        assert_eq!(m.pod_uid.as_deref(), Some("8c1e"));
        assert_eq!(m.image.as_deref(), Some("registry.example/web:1.2"));
        assert!(!is_crio(&a));
        let podman: BTreeMap<String, String> = [
            ("io.container.manager", "libpod"),
            ("io.kubernetes.cri-o.TTY", "false"),
            ("io.kubernetes.cri-o.Created", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(!is_crio(&podman), "Podman writes some cri-o annotations too");
        let old_crio: BTreeMap<String, String> = [("io.kubernetes.cri-o.SandboxID", "s")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert!(is_crio(&old_crio));
        assert!(parse_oci_annotations(b"{not json").is_none());
        assert_eq!(parse_oci_annotations(b"{}").unwrap().len(), 0);
    }

    #[test]
    fn docker_config_v2_with_kubernetes_labels() {
        let j = br#"{"ID":"4f0c","Name":"/k8s_web_pod","Image":"sha256:abcd",
            "Config":{"Image":"nginx:1.25","Labels":{"io.kubernetes.pod.name":"pod","io.kubernetes.pod.namespace":"ns",
            "io.kubernetes.pod.uid":"u1","io.kubernetes.container.name":"web","team":"a"}},"State":{}}"#;
        let m = parse_docker_config_v2(j).unwrap();
        assert_eq!(m.id.as_deref(), Some("4f0c"));
        assert_eq!(m.runtime, Some("docker"));
        assert_eq!(m.name.as_deref(), Some("web"), "the Kubernetes container name wins");
        assert_eq!(m.image.as_deref(), Some("nginx:1.25"));
        assert_eq!(m.image_digest.as_deref(), Some("sha256:abcd"));
        assert_eq!(
            (m.pod_namespace.as_deref(), m.pod_name.as_deref(), m.pod_uid.as_deref()),
            (Some("ns"), Some("pod"), Some("u1"))
        );
        assert_eq!(m.labels.get("team").map(String::as_str), Some("a"));
        assert!(m.complete);
        let plain = parse_docker_config_v2(
            br#"{"ID":"1","Name":"/quirky","Image":"sha256:1","Config":{"Image":"busybox"}}"#,
        )
        .unwrap();
        assert_eq!(plain.name.as_deref(), Some("quirky"));
        assert!(parse_docker_config_v2(b"not json").is_none());
    }

    #[test]
    fn podman_and_crio_storage_records() {
        let cj = br#"[{"id":"c1","names":["web"],"image":"i1","layer":"L1",
            "metadata":"{\"image-name\":\"localhost/web:latest\",\"image-id\":\"i1\",\"name\":\"web\"}"},
            {"id":"c2","names":["k8s_x"],"image":"i2","layer":"L2","metadata":""}]"#;
        let v = parse_storage_containers(cj);
        assert_eq!(v.len(), 2);
        let m = storage_metadata(&v[0], None, "podman");
        assert_eq!(m.runtime, Some("podman"));
        assert_eq!(
            (m.id.as_deref(), m.name.as_deref(), m.image.as_deref()),
            (Some("c1"), Some("web"), Some("localhost/web:latest"))
        );
        let ann: BTreeMap<String, String> = [
            ("io.kubernetes.cri-o.ImageName", "quay.io/x:1"),
            ("io.kubernetes.cri-o.ImageRef", "quay.io/x@sha256:ff"),
            ("io.kubernetes.cri-o.Labels", r#"{"app":"x"}"#),
            ("io.kubernetes.pod.name", "x-1"),
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.pod.uid", "u"),
            ("io.kubernetes.container.name", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let m = storage_metadata(&v[1], Some(&ann), "podman");
        assert_eq!(m.runtime, Some("cri-o"));
        assert_eq!(m.image.as_deref(), Some("quay.io/x:1"));
        assert_eq!(m.image_digest.as_deref(), Some("quay.io/x@sha256:ff"));
        assert_eq!(m.name.as_deref(), Some("x"));
        assert_eq!(m.labels.get("app").map(String::as_str), Some("x"));
        let images = br#"[{"id":"i1","digest":"sha256:99","names":["localhost/web:latest"]}]"#;
        assert_eq!(storage_image_digest(images, "i1").as_deref(), Some("sha256:99"));
        assert_eq!(storage_image_digest(images, "nope"), None);
        assert!(parse_storage_containers(b"garbage").is_empty());
    }
}
