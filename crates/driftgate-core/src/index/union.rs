//! A container's view of its image layers, as overlayfs computes it: upper layers hide
//! lower ones, whiteouts delete, opaque directories hide everything below.

use std::collections::{BTreeMap, HashSet};

use super::manifest::{Entry, Manifest};
use crate::model::FileId;

/// Every strict ancestor of `/a/b/c`: `/a/b`, `/a`, and `/`.
fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = p.len();
    std::iter::from_fn(move || {
        if end == 0 {
            return None;
        }
        let i = p[..end].iter().rposition(|&b| b == b'/')?;
        end = i;
        Some(if i == 0 { &b"/"[..] } else { &p[..i] })
    })
}

/// The executable files a container sees, given its layers' manifests top first: a file of a
/// layer is visible unless a higher layer has something at the same path, a whiteout of it or
/// of a directory above it, an opaque directory above it, or a file where one of its
/// directories would be. Returns path -> (layer index, entry).
pub fn union<'a>(layers: &[&'a Manifest]) -> BTreeMap<Vec<u8>, (usize, &'a Entry)> {
    let mut visible: BTreeMap<Vec<u8>, (usize, &'a Entry)> = BTreeMap::new();
    // What the layers above the current one hide.
    let mut taken: HashSet<&[u8]> = HashSet::new();
    let mut whiteouts: HashSet<&[u8]> = HashSet::new();
    let mut opaque: HashSet<&[u8]> = HashSet::new();
    for (i, m) in layers.iter().enumerate() {
        for (p, e) in &m.files {
            let hidden = taken.contains(p.as_slice())
                || whiteouts.contains(p.as_slice())
                || ancestors(p).any(|a| whiteouts.contains(a) || opaque.contains(a) || taken.contains(a));
            if !hidden {
                visible.insert(p.clone(), (i, e));
            }
        }
        taken.extend(m.files.keys().map(Vec::as_slice));
        whiteouts.extend(m.whiteouts.iter().map(Vec::as_slice));
        opaque.extend(m.opaque.iter().map(Vec::as_slice));
    }
    visible
}

/// The manifests a container's lower layers have, by lower index (top first).
#[derive(Debug, Default)]
pub struct ContainerIndex {
    pub layers: Vec<Option<LayerRef>>,
    /// Lower layers that are image layers (Docker's `-init` layer is not).
    pub image_layers: usize,
}

/// A manifest attached to one lower layer of a container.
#[derive(Debug, Clone)]
pub struct LayerRef {
    pub manifest: std::sync::Arc<Manifest>,
    /// The layer's diffID as the runtime records it, when it does.
    pub diff_id: Option<String>,
    /// Matched from `[index] import_dirs` by diffID (rather than built on this node).
    pub imported: bool,
}

impl ContainerIndex {
    /// The manifest hash of the file at `path` of lower layer `layer`, if that layer has a
    /// manifest and its entry describes the file version `id`.
    pub fn hash_for(&self, layer: usize, path: &[u8], id: &FileId) -> Option<[u8; 32]> {
        self.layers.get(layer)?.as_ref()?.manifest.hash_for(path, id)
    }

    /// Whether `other` attaches the same manifests to the same layers.
    pub fn same_as(&self, other: &ContainerIndex) -> bool {
        self.image_layers == other.image_layers
            && self.layers.len() == other.layers.len()
            && self.layers.iter().zip(&other.layers).all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(&a.manifest, &b.manifest),
                (None, None) => true,
                _ => false,
            })
    }

    /// How many of the container's layers have a manifest.
    pub fn known(&self) -> usize {
        self.layers.iter().flatten().count()
    }

    /// Candidate (path, lower index) pairs where the image has content with this hash; the
    /// caller confirms each is what the union shows.
    pub fn paths_with(&self, sha: &[u8; 32]) -> Vec<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(l) = l {
                out.extend(l.manifest.paths_with(sha).iter().map(|p| (p.clone(), i)));
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}
