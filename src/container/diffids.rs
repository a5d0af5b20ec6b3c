//! Which image layer (diffID) a lower directory holds, read from what each runtime records:
//! Docker's layerdb (`image/overlay2/layerdb/sha256/<chain>/{cache-id,diff}`), containers/storage's
//! `overlay-layers/layers.json` (`id` -> `diff-digest`), and for containerd the image config in
//! its content store (`rootfs.diff_ids`, matched to the container's lower directories by
//! position, which is how containerd stacks snapshots: one per layer, top first).
//!
//! Parsers are pure functions over the runtimes' bytes; anything unexpected gives `None`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use driftgate_core::index::paths::parse_digest;

/// containers/storage `layers.json`: id -> diffID.
pub fn parse_storage_layers(bytes: &[u8]) -> HashMap<String, String> {
    #[derive(Deserialize)]
    struct L {
        id: String,
        #[serde(rename = "diff-digest")]
        diff_digest: Option<String>,
    }
    serde_json::from_slice::<Vec<L>>(bytes)
        .map(|v| {
            v.into_iter().filter_map(|l| Some((l.id, parse_digest(l.diff_digest.as_deref()?)?))).collect()
        })
        .unwrap_or_default()
}

/// The `rootfs.diff_ids` of an image config blob.
pub fn parse_config_diff_ids(bytes: &[u8]) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct C {
        rootfs: R,
    }
    #[derive(Deserialize)]
    struct R {
        diff_ids: Vec<String>,
    }
    let c: C = serde_json::from_slice(bytes).ok()?;
    c.rootfs.diff_ids.iter().map(|d| parse_digest(d)).collect()
}

/// What an image manifest or index blob points to: the config digest (manifest), or the
/// manifest digest for this machine's platform (index).
pub enum BlobRef {
    Config(String),
    Manifest(String),
}

pub fn parse_manifest_or_index(bytes: &[u8], arch: &str) -> Option<BlobRef> {
    #[derive(Deserialize)]
    struct Desc {
        digest: String,
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    struct Platform {
        architecture: String,
        os: String,
    }
    #[derive(Deserialize)]
    struct Doc {
        config: Option<Desc>,
        manifests: Option<Vec<Desc>>,
    }
    let d: Doc = serde_json::from_slice(bytes).ok()?;
    if let Some(c) = d.config {
        return Some(BlobRef::Config(c.digest));
    }
    let ms = d.manifests?;
    ms.iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .or_else(|| if ms.len() == 1 { ms.first() } else { None })
        .map(|m| BlobRef::Manifest(m.digest.clone()))
}

/// The OCI name of this machine's architecture.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Reads the runtimes' records, with caches refreshed on a miss.
#[derive(Default)]
pub struct DiffIdResolver {
    docker: HashMap<PathBuf, HashMap<String, String>>,
    storage: HashMap<PathBuf, HashMap<String, String>>,
    /// (content root, image digest) -> diffIDs: content blobs never change under a digest.
    containerd: HashMap<(PathBuf, String), Vec<String>>,
}

impl DiffIdResolver {
    /// Docker: `<data_root>/overlay2/<cache-id>/diff`.
    pub fn docker(&mut self, data_root: &Path, layer_dir: &Path) -> Option<String> {
        let cache_id = layer_dir.strip_prefix(data_root.join("overlay2")).ok()?;
        let mut comps = cache_id.components();
        let id = comps.next()?.as_os_str().to_str()?.to_owned();
        if comps.next()?.as_os_str() != "diff" || comps.next().is_some() {
            return None;
        }
        if let Some(d) = self.docker.get(data_root).and_then(|m| m.get(&id)) {
            return Some(d.clone());
        }
        let map = read_docker_layerdb(&data_root.join("image/overlay2/layerdb/sha256"));
        let found = map.get(&id).cloned();
        self.docker.insert(data_root.to_path_buf(), map);
        found
    }

    /// containers/storage: `<root>/overlay/<id>/diff`.
    pub fn storage(&mut self, root: &Path, layer_dir: &Path) -> Option<String> {
        let rel = layer_dir.strip_prefix(root.join("overlay")).ok()?;
        let mut comps = rel.components();
        let id = comps.next()?.as_os_str().to_str()?.to_owned();
        if comps.next()?.as_os_str() != "diff" || comps.next().is_some() {
            return None;
        }
        if let Some(d) = self.storage.get(root).and_then(|m| m.get(&id)) {
            return Some(d.clone());
        }
        let path = root.join("overlay-layers/layers.json");
        let bytes = super::state_file::read_state(&path).unwrap_or_default();
        let map = parse_storage_layers(&bytes);
        if map.is_empty() && !bytes.is_empty() && !super::state_file::is_json_array(&bytes) {
            super::state_file::state_warning(&path, "not a containers/storage layer list");
        }
        let found = map.get(&id).cloned();
        self.storage.insert(root.to_path_buf(), map);
        found
    }

    /// containerd: the diffIDs of the image `digest` (manifest or index), bottom first.
    pub fn containerd_image(&mut self, root: &Path, digest: &str) -> Option<Vec<String>> {
        let key = (root.to_path_buf(), digest.to_owned());
        if let Some(ids) = self.containerd.get(&key) {
            return Some(ids.clone());
        }
        let ids = read_containerd_image(root, digest)?;
        self.containerd.insert(key, ids.clone());
        Some(ids)
    }
}

fn read_containerd_image(root: &Path, digest: &str) -> Option<Vec<String>> {
    let blob = |d: &str| -> Option<Vec<u8>> {
        let d = parse_digest(d)?;
        let p = root.join("io.containerd.content.v1.content/blobs/sha256").join(&d["sha256:".len()..]);
        super::state_file::read_state(&p)
    };
    let mut doc = blob(digest)?;
    for _ in 0..3 {
        match parse_manifest_or_index(&doc, oci_arch())? {
            BlobRef::Config(c) => return parse_config_diff_ids(&blob(&c)?),
            BlobRef::Manifest(m) => doc = blob(&m)?,
        }
    }
    None
}

fn read_docker_layerdb(dir: &Path) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return map };
    for e in rd.flatten() {
        let p = e.path();
        let read = |n: &str| {
            super::state_file::read_state(&p.join(n))
                .map(|b| String::from_utf8_lossy(b.trim_ascii()).into_owned())
        };
        if let (Some(cache), Some(diff)) = (read("cache-id"), read("diff")) {
            if let Some(d) = parse_digest(&diff) {
                map.insert(cache, d);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn runtime_records_name_the_layers() {
        let j = format!(
            r#"[{{"id":"aaa","diff-digest":"{}","compressed-diff-digest":"x"}},{{"id":"bbb"}},{{"id":"ccc","diff-digest":"md5:1"}}]"#,
            d('1')
        );
        let m = parse_storage_layers(j.as_bytes());
        assert_eq!(m.len(), 1);
        assert_eq!(m["aaa"], d('1'));
        assert!(parse_storage_layers(b"{not json").is_empty());

        let cfg = format!(
            r#"{{"architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            d('a'),
            d('b')
        );
        assert_eq!(parse_config_diff_ids(cfg.as_bytes()).unwrap(), vec![d('a'), d('b')]);
        assert!(parse_config_diff_ids(br#"{"rootfs":{"diff_ids":["nope"]}}"#).is_none());

        let idx = format!(
            r#"{{"manifests":[{{"digest":"{}","platform":{{"os":"linux","architecture":"arm64"}}}},{{"digest":"{}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d('c'),
            d('e')
        );
        assert!(
            matches!(parse_manifest_or_index(idx.as_bytes(), "amd64"), Some(BlobRef::Manifest(m)) if m == d('e'))
        );
        assert!(parse_manifest_or_index(idx.as_bytes(), "s390x").is_none());
        let man = format!(r#"{{"config":{{"digest":"{}"}},"layers":[]}}"#, d('f'));
        assert!(
            matches!(parse_manifest_or_index(man.as_bytes(), "amd64"), Some(BlobRef::Config(c)) if c == d('f'))
        );
    }

    #[test]
    fn docker_and_storage_layer_dirs_resolve_through_the_records() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let chain = root.join("image/overlay2/layerdb/sha256/chain1");
        std::fs::create_dir_all(&chain).unwrap();
        std::fs::write(chain.join("cache-id"), "cacheabc").unwrap();
        std::fs::write(chain.join("diff"), format!("{}\n", d('7'))).unwrap();
        let mut r = DiffIdResolver::default();
        assert_eq!(r.docker(root, &root.join("overlay2/cacheabc/diff")), Some(d('7')));
        assert_eq!(r.docker(root, &root.join("overlay2/cacheabc-init/diff")), None);
        assert_eq!(r.docker(root, &root.join("overlay2/cacheabc/merged")), None);

        std::fs::create_dir_all(root.join("overlay-layers")).unwrap();
        std::fs::write(
            root.join("overlay-layers/layers.json"),
            format!(r#"[{{"id":"L1","diff-digest":"{}"}}]"#, d('9')),
        )
        .unwrap();
        assert_eq!(r.storage(root, &root.join("overlay/L1/diff")), Some(d('9')));
        assert_eq!(r.storage(root, &root.join("overlay/L2/diff")), None);
    }
}
