//! Image-layer manifests: per layer, every regular file that could be executed (any exec bit,
//! or ELF or `#!` magic) with its path, SHA-256, size and mode, plus the layer's whiteouts and
//! opaque directories, so that a container's view can be computed as the union overlayfs shows.
//!
//! On disk a manifest is one JSON object (`driftgate.manifest.v1`); a bundle (what
//! `driftgate index build` writes, and what `[index] import_dirs` holds) is one manifest per line.
//! Paths are absolute inside the image (`/usr/bin/env`); a path that is not UTF-8 is written as
//! `{"raw": "<base64>"}` so no byte is lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::paths::{is_normal_path, parse_digest};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::FileId;

pub const SCHEMA: &str = "driftgate.manifest.v1";

/// A path inside an image, as exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BytePath(pub Vec<u8>);

impl Serialize for BytePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => {
                let mut m = BTreeMap::new();
                m.insert("raw", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &self.0));
                m.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for BytePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Raw { raw: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(BytePath(t.into_bytes())),
            Repr::Raw { raw } => base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw)
                .map(BytePath)
                .map_err(|e| serde::de::Error::custom(format!("path: bad base64: {e}"))),
        }
    }
}

impl std::fmt::Display for BytePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Control characters and invalid UTF-8 escaped, so a hostile name cannot forge output.
        f.write_str(&crate::util::printable(&self.0))
    }
}

/// One executable file of a layer, as written in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub path: BytePath,
    pub sha256: String,
    pub size: u64,
    /// Permission bits (`0o7777` part of `st_mode`).
    pub mode: u32,
    /// Modification time, seconds since the epoch (what a tar header keeps).
    pub mtime: i64,
    /// On-node manifests only: the inode version the hash was taken from. A file whose inode,
    /// size or times differ is not the one that was indexed, and its entry is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i128>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<i128>,
}

/// A layer manifest as written on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDoc {
    pub schema: String,
    /// `sha256:<hex>` of the uncompressed layer tar, when known (always for offline builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// On-node manifests: the layer directory that was walked, and its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_dir_dev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_dir_ino: Option<u64>,
    /// Where it was built from: `node`, or the image source of `index build`.
    pub source: String,
    pub created: String,
    /// Bytes of layer content read to build it (uncompressed).
    pub layer_bytes: u64,
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub whiteouts: Vec<BytePath>,
    #[serde(default)]
    pub opaque: Vec<BytePath>,
}

/// The inode version an on-node entry was hashed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeVersion {
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// One executable file of a layer, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: [u8; 32],
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub node: Option<NodeVersion>,
}

impl Entry {
    /// Whether the file version `id` (a `stat` of the layer file, or of the overlay file that
    /// shows it) is the one this entry describes. On-node entries compare the inode version
    /// (ctime is set by the kernel on every change, so equal ctime means unchanged content);
    /// imported entries compare size and modification time, as a layer unpacker sets them.
    pub fn describes(&self, id: &FileId) -> bool {
        match self.node {
            Some(n) => {
                n.ino == id.ino
                    && self.size == id.size
                    && n.mtime_ns == id.mtime_ns
                    && n.ctime_ns == id.ctime_ns
            }
            None => self.size == id.size && id.mtime_ns.div_euclid(1_000_000_000) == self.mtime as i128,
        }
    }
}

/// A layer manifest in memory, with a reverse index by hash.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub diff_id: Option<String>,
    pub layer_dir: Option<PathBuf>,
    pub layer_dir_id: Option<(u64, u64)>,
    pub source: String,
    pub created: String,
    pub layer_bytes: u64,
    pub files: HashMap<Vec<u8>, Entry>,
    pub whiteouts: HashSet<Vec<u8>>,
    pub opaque: HashSet<Vec<u8>>,
    by_hash: HashMap<[u8; 32], Vec<Vec<u8>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("schema is `{0}`, expected `{SCHEMA}`")]
    Schema(String),
    #[error("file {path}: sha256 `{value}` is not 64 hex digits")]
    Hash { path: String, value: String },
    #[error("path {0:?} is not absolute and normal (no `.`, `..` or empty components)")]
    Path(String),
    #[error("diff_id `{0}` is not `sha256:` and 64 hex digits")]
    DiffId(String),
}

impl Manifest {
    pub fn new(source: impl Into<String>) -> Manifest {
        Manifest { source: source.into(), created: crate::util::now_rfc3339(), ..Default::default() }
    }

    pub fn insert(&mut self, path: Vec<u8>, e: Entry) {
        if let Some(old) = self.files.insert(path.clone(), e.clone()) {
            if let Some(v) = self.by_hash.get_mut(&old.sha256) {
                v.retain(|p| *p != path);
            }
        }
        self.by_hash.entry(e.sha256).or_default().push(path);
    }

    pub fn remove(&mut self, path: &[u8]) {
        if let Some(old) = self.files.remove(path) {
            if let Some(v) = self.by_hash.get_mut(&old.sha256) {
                v.retain(|p| p != path);
            }
        }
    }

    /// The manifest hash of the file at `path`, if the entry describes the file version `id`.
    pub fn hash_for(&self, path: &[u8], id: &FileId) -> Option<[u8; 32]> {
        self.files.get(path).filter(|e| e.describes(id)).map(|e| e.sha256)
    }

    /// Paths in this layer whose content has this hash.
    pub fn paths_with(&self, sha: &[u8; 32]) -> &[Vec<u8>] {
        self.by_hash.get(sha).map_or(&[], Vec::as_slice)
    }

    /// The layer's name for people: its diffID, or its directory.
    pub fn label(&self) -> String {
        match (&self.diff_id, &self.layer_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "(unnamed layer)".into(),
        }
    }

    pub fn from_doc(doc: ManifestDoc) -> Result<Manifest, ManifestError> {
        if doc.schema != SCHEMA {
            return Err(ManifestError::Schema(doc.schema));
        }
        if let Some(d) = &doc.diff_id {
            if parse_digest(d).is_none() {
                return Err(ManifestError::DiffId(d.clone()));
            }
        }
        let mut m = Manifest {
            diff_id: doc.diff_id,
            layer_dir: doc.layer_dir,
            layer_dir_id: doc.layer_dir_dev.zip(doc.layer_dir_ino),
            source: doc.source,
            created: doc.created,
            layer_bytes: doc.layer_bytes,
            ..Default::default()
        };
        let check = |p: &BytePath| {
            if is_normal_path(&p.0) {
                Ok(())
            } else {
                Err(ManifestError::Path(p.to_string()))
            }
        };
        for f in doc.files {
            check(&f.path)?;
            let sha = crate::util::parse_sha256(f.sha256.as_bytes())
                .ok_or_else(|| ManifestError::Hash { path: f.path.to_string(), value: f.sha256.clone() })?;
            let node = match (f.ino, f.mtime_ns, f.ctime_ns) {
                (Some(ino), Some(mtime_ns), Some(ctime_ns)) => Some(NodeVersion { ino, mtime_ns, ctime_ns }),
                _ => None,
            };
            m.insert(f.path.0, Entry { sha256: sha, size: f.size, mode: f.mode, mtime: f.mtime, node });
        }
        for w in &doc.whiteouts {
            check(w)?;
        }
        for o in &doc.opaque {
            check(o)?;
        }
        m.whiteouts = doc.whiteouts.into_iter().map(|p| p.0).collect();
        m.opaque = doc.opaque.into_iter().map(|p| p.0).collect();
        Ok(m)
    }

    pub fn to_doc(&self) -> ManifestDoc {
        let mut files: Vec<FileRecord> = self
            .files
            .iter()
            .map(|(p, e)| FileRecord {
                path: BytePath(p.clone()),
                sha256: crate::util::hex(e.sha256),
                size: e.size,
                mode: e.mode,
                mtime: e.mtime,
                ino: e.node.map(|n| n.ino),
                mtime_ns: e.node.map(|n| n.mtime_ns),
                ctime_ns: e.node.map(|n| n.ctime_ns),
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let sorted = |s: &HashSet<Vec<u8>>| {
            let mut v: Vec<BytePath> = s.iter().cloned().map(BytePath).collect();
            v.sort();
            v
        };
        ManifestDoc {
            schema: SCHEMA.into(),
            diff_id: self.diff_id.clone(),
            layer_dir: self.layer_dir.clone(),
            layer_dir_dev: self.layer_dir_id.map(|x| x.0),
            layer_dir_ino: self.layer_dir_id.map(|x| x.1),
            source: self.source.clone(),
            created: self.created.clone(),
            layer_bytes: self.layer_bytes,
            files,
            whiteouts: sorted(&self.whiteouts),
            opaque: sorted(&self.opaque),
        }
    }

    /// Parses one manifest (one line of a bundle).
    pub fn parse(line: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_doc(serde_json::from_str(line)?)
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.to_doc()).expect("manifest serializes")
    }
}

/// The longest line (one layer's manifest) a bundle may have.
pub const MAX_BUNDLE_LINE: u64 = 128 << 20;

/// Reads a manifest bundle: one manifest per line, blank lines and `#` comments skipped. Errors
/// name the file and line.
pub fn read_bundle(path: &Path) -> Result<Vec<Manifest>, String> {
    use std::io::{BufRead, Read};
    let cannot = |e: std::io::Error| format!("{}: cannot read: {e}", path.display());
    let mut r = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    // Read a line at a time (a bundle of many layers is large; only its manifests are kept),
    // and no line longer than a manifest can sensibly be.
    for n in 1.. {
        buf.clear();
        let got = r.by_ref().take(MAX_BUNDLE_LINE + 1).read_until(b'\n', &mut buf).map_err(cannot)?;
        if got == 0 {
            break;
        }
        if buf.len() as u64 > MAX_BUNDLE_LINE {
            return Err(format!("{}: line {n}: longer than {} MiB", path.display(), MAX_BUNDLE_LINE >> 20));
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|e| format!("{}: line {n}: not UTF-8 ({e})", path.display()))?
            .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let m = Manifest::parse(line).map_err(|e| format!("{}: line {n}: {e}", path.display()))?;
        out.push(m);
    }
    if out.is_empty() {
        return Err(format!("{}: no manifest in it", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::paths::*;
    use crate::index::union::union;

    fn entry(b: u8) -> Entry {
        Entry { sha256: [b; 32], size: 10, mode: 0o755, mtime: 1, node: None }
    }

    fn layer(files: &[(&str, u8)], whiteouts: &[&str], opaque: &[&str]) -> Manifest {
        let mut m = Manifest::new("test");
        for (p, b) in files {
            m.insert(p.as_bytes().to_vec(), entry(*b));
        }
        m.whiteouts = whiteouts.iter().map(|p| p.as_bytes().to_vec()).collect();
        m.opaque = opaque.iter().map(|p| p.as_bytes().to_vec()).collect();
        m
    }

    fn view(layers: &[&Manifest]) -> Vec<(String, usize, u8)> {
        union(layers).into_iter().map(|(p, (i, e))| (String::from_utf8(p).unwrap(), i, e.sha256[0])).collect()
    }

    #[test]
    fn union_honours_whiteouts_opaque_dirs_and_shadowing() {
        let base = layer(
            &[
                ("/bin/sh", 1),
                ("/bin/ls", 2),
                ("/opt/app/run", 3),
                ("/opt/app/lib/x", 4),
                ("/srv/tool", 5),
                ("/a/b", 9),
            ],
            &[],
            &[],
        );
        // The middle layer replaces /bin/sh, deletes /bin/ls, makes /opt/app opaque (adding a
        // new file there), whites out the whole /srv directory and puts a file where the
        // directory /a was.
        let mid =
            layer(&[("/bin/sh", 6), ("/opt/app/new", 7), ("/a", 8)], &["/bin/ls", "/srv"], &["/opt/app"]);
        // The top layer brings /bin/ls back.
        let top = layer(&[("/bin/ls", 10)], &[], &[]);
        assert_eq!(
            view(&[&top, &mid, &base]),
            vec![
                ("/a".into(), 1, 8),
                ("/bin/ls".into(), 0, 10),
                ("/bin/sh".into(), 1, 6),
                ("/opt/app/new".into(), 1, 7),
            ]
        );
        // Without the top layer, /bin/ls stays deleted.
        assert!(!view(&[&mid, &base]).iter().any(|(p, _, _)| p == "/bin/ls"));
        // A layer's own whiteouts and opaque markers do not hide its own files.
        let own = layer(&[("/x/y", 1)], &["/x/y"], &["/x"]);
        assert_eq!(view(&[&own]).len(), 1);
        // An opaque root hides every lower layer.
        let root_opaque = layer(&[("/only", 1)], &[], &["/"]);
        assert_eq!(view(&[&root_opaque, &base]), vec![("/only".into(), 0, 1)]);
    }

    #[test]
    fn tar_names_whiteouts_and_exec_detection() {
        assert_eq!(normalize_tar_path(b"./usr/bin/x").unwrap(), b"/usr/bin/x");
        assert_eq!(normalize_tar_path(b"usr//bin/x/").unwrap(), b"/usr/bin/x");
        assert!(normalize_tar_path(b"../etc/passwd").is_none());
        assert!(normalize_tar_path(b"usr/../../x").is_none());
        assert!(normalize_tar_path(b"./").is_none());
        assert!(matches!(tar_meaning(b"/etc/.wh.passwd"), TarMeaning::Whiteout(p) if p == b"/etc/passwd"));
        assert!(matches!(tar_meaning(b"/.wh.srv"), TarMeaning::Whiteout(p) if p == b"/srv"));
        assert!(matches!(tar_meaning(b"/opt/.wh..wh..opq"), TarMeaning::Opaque(p) if p == b"/opt"));
        assert!(matches!(tar_meaning(b"/.wh..wh..opq"), TarMeaning::Opaque(p) if p == b"/"));
        assert!(matches!(tar_meaning(b"/etc/passwd"), TarMeaning::Plain));
        // Found by fuzzing (an empty path used to panic); no slash: a name at the root.
        assert!(matches!(tar_meaning(b""), TarMeaning::Plain));
        assert!(matches!(tar_meaning(b".wh.x"), TarMeaning::Whiteout(p) if p == b"/x"));
        assert!(could_execute(0o700, b""));
        assert!(could_execute(0o001, b""));
        assert!(could_execute(0o644, b"\x7fELF\x02"));
        assert!(could_execute(0o600, b"#!/bin/sh"));
        assert!(!could_execute(0o644, b"hello"));
    }

    #[test]
    fn manifests_round_trip_with_hostile_names_and_reject_bad_ones() {
        let mut m = layer(&[("/bin/sh", 1)], &["/etc/x"], &["/var"]);
        m.diff_id = Some(format!("sha256:{}", "ab".repeat(32)));
        m.insert(
            b"/bin/\xffodd\nname".to_vec(),
            Entry { node: Some(NodeVersion { ino: 5, mtime_ns: 7, ctime_ns: 9 }), ..entry(2) },
        );
        let line = m.to_json_line();
        assert!(!line.contains('\n'));
        let back = Manifest::parse(&line).unwrap();
        assert_eq!(back.files, m.files);
        assert_eq!(back.whiteouts, m.whiteouts);
        assert_eq!(back.opaque, m.opaque);
        assert_eq!(back.paths_with(&[2; 32]), &[b"/bin/\xffodd\nname".to_vec()]);
        for (bad, want) in [
            (line.replace("/bin/sh", "/bin/../sh"), "not absolute and normal"),
            (line.replace("driftgate.manifest.v1", "other"), "schema"),
            (line.replace(&"01".repeat(32), "zz"), "is not 64 hex"),
            (line.replace("sha256:", "md5:"), "diff_id"),
            (line.replace("\"files\"", "\"filez\""), "unknown field"),
        ] {
            let e = Manifest::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn entries_describe_only_the_file_version_they_were_taken_from() {
        let id = FileId { dev: 1, ino: 5, size: 10, mtime_ns: 1_500_000_000, ctime_ns: 9 };
        let node =
            Entry { node: Some(NodeVersion { ino: 5, mtime_ns: 1_500_000_000, ctime_ns: 9 }), ..entry(1) };
        assert!(node.describes(&id));
        assert!(!node.describes(&FileId { ctime_ns: 10, ..id }));
        assert!(!node.describes(&FileId { ino: 6, ..id }));
        // Imported entries: size and whole seconds of mtime, as tar keeps them.
        assert!(entry(1).describes(&id));
        assert!(!entry(1).describes(&FileId { size: 11, ..id }));
        assert!(!entry(1).describes(&FileId { mtime_ns: 2_000_000_000, ..id }));
    }
}
