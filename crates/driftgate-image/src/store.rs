//! Where manifests live: on-node manifests under `<state_dir>/index/` (one file per layer
//! directory, written atomically, so they survive restarts), and imported bundles in
//! `[index] import_dirs`, keyed by diffID.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use driftgate_core::index::manifest::{read_bundle, Manifest};

/// On-node manifests.
#[derive(Debug, Clone)]
pub struct NodeStore {
    pub dir: PathBuf,
}

impl NodeStore {
    pub fn new(state_dir: &Path) -> NodeStore {
        NodeStore { dir: state_dir.join("index") }
    }

    /// The file holding the manifest of one layer directory.
    pub fn file_for(&self, layer_dir: &Path) -> PathBuf {
        let h = driftgate_core::util::hex(Sha256::digest(layer_dir.as_os_str().as_bytes()));
        self.dir.join(format!("layer-{}.json", &h[..32]))
    }

    /// The stored manifest of `layer_dir`, if there is one for this very directory (same path,
    /// device and inode: a directory deleted and re-created is another layer).
    pub fn load(&self, layer_dir: &Path, dir_id: (u64, u64)) -> Result<Option<Manifest>, String> {
        let f = self.file_for(layer_dir);
        if !f.exists() {
            return Ok(None);
        }
        let mut v = read_bundle(&f)?;
        let m = v.pop().ok_or_else(|| format!("{}: empty", f.display()))?;
        Ok((m.layer_dir.as_deref() == Some(layer_dir) && m.layer_dir_id == Some(dir_id)).then_some(m))
    }

    /// Writes a manifest atomically (temporary file, `fsync`, rename), readable by root only.
    pub fn save(&self, m: &Manifest) -> std::io::Result<PathBuf> {
        let layer_dir =
            m.layer_dir.as_deref().ok_or_else(|| std::io::Error::other("manifest has no layer_dir"))?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let f = self.file_for(layer_dir);
        let tmp = f.with_extension("json.tmp");
        let mut w =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        w.write_all(m.to_json_line().as_bytes())?;
        w.write_all(b"\n")?;
        w.sync_all()?;
        std::fs::rename(&tmp, &f)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(f)
    }

    /// Deletes stored manifests of layer directories that are gone (or were re-created as
    /// another directory), and unreadable ones. Returns how many were deleted.
    pub fn prune(&self) -> usize {
        let mut n = 0;
        for (file, m) in self.list() {
            let live = m.ok().is_some_and(|m| {
                m.layer_dir
                    .as_deref()
                    .and_then(|d| nix::sys::stat::stat(d).ok())
                    .is_some_and(|st| m.layer_dir_id == Some((st.st_dev, st.st_ino)))
            });
            if !live && std::fs::remove_file(&file).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Every stored manifest, with the file it is in (errors per file).
    pub fn list(&self) -> Vec<(PathBuf, Result<Manifest, String>)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return out };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let m = read_bundle(&p)
                    .and_then(|mut v| v.pop().ok_or_else(|| format!("{}: empty", p.display())));
                out.push((p, m));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Manifests imported from bundles, by diffID.
#[derive(Debug, Default, Clone)]
pub struct Imported {
    pub by_diff_id: HashMap<String, (Arc<Manifest>, PathBuf)>,
    pub files: usize,
}

/// The bundle files of an import directory: regular `*.json`/`*.jsonl` files, sorted.
fn bundle_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    v.sort();
    Ok(v)
}

/// Loads every bundle of `dirs`. A bad file is reported (file and line) and skipped; the
/// others still load. Every imported manifest must name its diffID.
pub fn load_imports(dirs: &[PathBuf]) -> (Imported, Vec<String>) {
    let mut out = Imported::default();
    let mut errors = Vec::new();
    for dir in dirs {
        let files = match bundle_files(dir) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for f in files {
            match read_bundle(&f) {
                Ok(ms) => {
                    out.files += 1;
                    for (i, m) in ms.into_iter().enumerate() {
                        match m.diff_id.clone() {
                            Some(d) => {
                                out.by_diff_id.insert(d, (Arc::new(m), f.clone()));
                            }
                            None => errors.push(format!("{}: manifest {}: no diff_id", f.display(), i + 1)),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_manifests_persist_per_directory_and_imports_report_bad_lines() {
        let t = tempfile::tempdir().unwrap();
        let store = NodeStore::new(t.path());
        let mut m = Manifest::new("node");
        m.layer_dir = Some("/var/lib/x/diff".into());
        m.layer_dir_id = Some((1, 2));
        m.insert(
            b"/bin/a".to_vec(),
            driftgate_core::index::manifest::Entry {
                sha256: [7; 32],
                size: 1,
                mode: 0o755,
                mtime: 0,
                node: None,
            },
        );
        store.save(&m).unwrap();
        let back = store.load(Path::new("/var/lib/x/diff"), (1, 2)).unwrap().unwrap();
        assert_eq!(back.files, m.files);
        // Same path, another directory (re-created): not this layer's manifest.
        assert!(store.load(Path::new("/var/lib/x/diff"), (1, 3)).unwrap().is_none());
        assert!(store.load(Path::new("/var/lib/y/diff"), (1, 2)).unwrap().is_none());
        assert_eq!(store.list().len(), 1);
        // The layer directory does not exist: pruned. A live one is kept.
        assert_eq!(store.prune(), 1);
        assert!(store.list().is_empty());
        let live = t.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let st = nix::sys::stat::stat(&live).unwrap();
        m.layer_dir = Some(live.clone());
        m.layer_dir_id = Some((st.st_dev, st.st_ino));
        store.save(&m).unwrap();
        assert_eq!(store.prune(), 0);
        assert_eq!(store.list().len(), 1);
        m.layer_dir = Some("/var/lib/x/diff".into());
        m.layer_dir_id = Some((1, 2));

        let imp = t.path().join("imports");
        std::fs::create_dir(&imp).unwrap();
        m.diff_id = Some(format!("sha256:{}", "cd".repeat(32)));
        std::fs::write(imp.join("good.jsonl"), format!("# built by CI\n{}\n", m.to_json_line())).unwrap();
        std::fs::write(imp.join("bad.jsonl"), format!("{}\n{{not json\n", m.to_json_line())).unwrap();
        std::fs::write(imp.join("ignored.txt"), "whatever").unwrap();
        let (got, errors) = load_imports(&[imp.clone(), t.path().join("missing")]);
        assert_eq!(got.by_diff_id.len(), 1);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("bad.jsonl: line 2"), "{errors:?}");
        assert!(errors[1].contains("missing") && errors[1].contains("cannot read"), "{errors:?}");
    }
}
