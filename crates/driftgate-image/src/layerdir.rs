//! Indexing an unpacked layer directory on the node (an overlay lower directory).
//!
//! The walk never follows a symlink (each directory is opened with `O_NOFOLLOW|O_DIRECTORY`
//! from its parent's fd), opens nothing for reading before `fstat` says it is a regular file,
//! and holds one directory fd per level. Whiteouts (character device 0:0) and opaque
//! directories (`trusted.overlay.opaque=y`, or `user.` for user-namespace overlays) are
//! recorded as overlayfs reads them.
//!
//! With the previous manifest of the same directory, files whose inode version (inode, size,
//! mtime, ctime) is unchanged keep their hash, so re-checking a layer costs a walk, not a
//! re-hash, and any file that changed is hashed again.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{fstatat, FileStat};
use sha2::{Digest, Sha256};

use driftgate_core::index::manifest::{Entry, Manifest, NodeVersion};
use driftgate_core::index::paths::could_execute;
use driftgate_sys::fs as sfs;

/// Deeper trees than this are refused (a layer is a filesystem image, not a fork bomb).
const MAX_DEPTH: usize = 512;

#[derive(Debug, Default, Clone)]
pub struct WalkStats {
    pub entries: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    pub reused: u64,
    /// Entries that could not be read (or changed while being read): left out of the
    /// manifest, so their files stay "unknown" and are decided by hashing at exec time.
    pub skipped: u64,
    pub first_skipped: Option<String>,
}

/// Indexes the layer directory `dir`. `previous` (a manifest of the same directory) lends the
/// hashes of unchanged files. `on_bytes` is told of every chunk hashed (progress, pacing).
pub fn index_layer_dir(
    dir: &Path,
    previous: Option<&Manifest>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(Manifest, WalkStats), LayerError> {
    let err = |what: &'static str, e: &dyn std::fmt::Display| LayerError::new(dir, what, b"", e);
    // The layer directory itself is the runtime's path (possibly through a symlink, as
    // containers/storage names layers); below it nothing is followed.
    let root = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| err("open", &e))?;
    let st = sfs::fstat_fd(root.as_fd()).map_err(|e| err("fstat", &e))?;
    let mut m = Manifest::new("node");
    m.layer_dir = Some(dir.to_path_buf());
    m.layer_dir_id = Some((st.st_dev, st.st_ino));
    let mut w = Walker { m, previous, stats: WalkStats::default(), on_bytes, dir };
    if sfs::is_opaque_dir(root.as_fd()) {
        w.m.opaque.insert(b"/".to_vec());
    }
    w.walk(root, &mut Vec::new(), 0)?;
    Ok((w.m, w.stats))
}

/// A layer directory, or an entry of it, that could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {what}{}: {detail}", dir.display(), if path.is_empty() { String::new() } else { format!(" {}", show(path)) })]
pub struct LayerError {
    pub dir: PathBuf,
    /// The step that failed (`open`, `readdir`, `hash`...).
    pub what: &'static str,
    /// The entry, relative to the layer (empty: the layer directory itself).
    pub path: Vec<u8>,
    pub detail: String,
}

impl LayerError {
    fn new(dir: &Path, what: &'static str, path: &[u8], detail: &dyn std::fmt::Display) -> Self {
        LayerError { dir: dir.to_path_buf(), what, path: path.to_vec(), detail: detail.to_string() }
    }
}

struct Walker<'a> {
    m: Manifest,
    previous: Option<&'a Manifest>,
    stats: WalkStats,
    on_bytes: &'a mut dyn FnMut(u64),
    dir: &'a Path,
}

impl Walker<'_> {
    fn walk(&mut self, fd: std::os::fd::OwnedFd, path: &mut Vec<u8>, depth: usize) -> Result<(), LayerError> {
        if depth > MAX_DEPTH {
            return Err(LayerError::new(
                self.dir,
                "walk",
                path,
                &format!("deeper than {MAX_DEPTH} directories"),
            ));
        }
        let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| LayerError::new(self.dir, "opendir", path, &e))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in d.iter() {
            let ent = ent.map_err(|e| LayerError::new(self.dir, "readdir", path, &e))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        // Sorted, so a manifest is the same whatever order the filesystem lists entries in.
        names.sort();
        let dfd = d.as_fd();
        for name in names {
            self.stats.entries += 1;
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&name);
            let res = self.entry(dfd, &name, path, depth);
            path.truncate(len);
            // One unreadable file or directory does not void the layer's other entries.
            if let Err(e) = res {
                self.stats.skipped += 1;
                self.stats.first_skipped.get_or_insert(e.to_string());
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &[u8],
        path: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), LayerError> {
        let fail = |what: &'static str, e: &dyn std::fmt::Display| LayerError::new(self.dir, what, path, e);
        let st =
            match fstatat(dfd, std::ffi::OsStr::from_bytes(name), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed while walking: the layer is being deleted; nothing to index.
                Err(nix::errno::Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(fail("stat", &e)),
            };
        if sfs::is_dir(&st) {
            let child = sfs::open_component_dir(dfd, name).map_err(|e| fail("open", &e))?;
            if sfs::is_opaque_dir(child.as_fd()) {
                self.m.opaque.insert(path.clone());
            }
            return self.walk(child, path, depth + 1);
        }
        if sfs::is_whiteout(&st) {
            self.m.whiteouts.insert(path.clone());
            return Ok(());
        }
        if !sfs::is_regular(&st) {
            return Ok(());
        }
        let id = driftgate_sys::fs::file_id(&st);
        let mode = st.st_mode & 0o7777;
        // An unchanged file keeps its hash.
        if let Some(prev) = self.previous.and_then(|p| p.files.get(path.as_slice())) {
            if prev.node.is_some() && prev.describes(&id) {
                self.stats.reused += 1;
                self.m.insert(path.clone(), Entry { mode, ..prev.clone() });
                return Ok(());
            }
        }
        let opath = sfs::open_component(dfd, name).map_err(|e| fail("open", &e))?;
        let st2 = sfs::fstat_fd(opath.as_fd()).map_err(|e| fail("fstat", &e))?;
        if !sfs::is_regular(&st2) || st2.st_ino != st.st_ino {
            return Err(fail("open", &"changed while being indexed"));
        }
        let fd = sfs::reopen_readonly(opath.as_fd()).map_err(|e| fail("open", &e))?;
        if mode & 0o111 == 0 {
            let mut head = [0u8; 4];
            let n = nix::sys::uio::pread(fd.as_fd(), &mut head, 0).map_err(|e| fail("read", &e))?;
            if !could_execute(mode, &head[..n]) {
                return Ok(());
            }
        }
        let mut h = Sha256::new();
        let on_bytes = &mut *self.on_bytes;
        let n = sfs::read_all_at(fd.as_fd(), |b| {
            h.update(b);
            on_bytes(b.len() as u64);
        })
        .map_err(|e| fail("read", &e))?;
        let after = sfs::fstat_fd(fd.as_fd())
            .map(|s| driftgate_sys::fs::file_id(&s))
            .map_err(|e| fail("fstat", &e))?;
        if after != id || n != id.size {
            return Err(fail("hash", &"changed while being hashed"));
        }
        self.stats.hashed_files += 1;
        self.stats.hashed_bytes += n;
        self.m.layer_bytes += n;
        self.m.insert(path.clone(), node_entry(&st, h.finalize().into()));
        Ok(())
    }
}

fn node_entry(st: &FileStat, sha256: [u8; 32]) -> Entry {
    let id = driftgate_sys::fs::file_id(st);
    Entry {
        sha256,
        size: id.size,
        mode: st.st_mode & 0o7777,
        mtime: st.st_mtime,
        node: Some(NodeVersion { ino: id.ino, mtime_ns: id.mtime_ns, ctime_ns: id.ctime_ns }),
    }
}

fn show(p: &[u8]) -> String {
    driftgate_core::index::manifest::BytePath(if p.is_empty() { b"/".to_vec() } else { p.to_vec() })
        .to_string()
}

/// What changed between two manifests of the same layer: paths added, removed or with other
/// content. Empty when the layer is as it was.
pub fn changes(old: &Manifest, new: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in &new.files {
        match old.files.get(p) {
            None => out.push(format!("added {}", show(p))),
            Some(o) if o.sha256 != e.sha256 || o.node != e.node => out.push(format!("changed {}", show(p))),
            Some(_) => {}
        }
    }
    out.extend(
        old.files.keys().filter(|p| !new.files.contains_key(*p)).map(|p| format!("removed {}", show(p))),
    );
    if old.whiteouts != new.whiteouts || old.opaque != new.opaque {
        out.push("whiteouts or opaque directories changed".into());
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_layer_directory_is_indexed_and_rechecked_without_rehashing() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("bin/tool"), b"\x7fELF tool").unwrap();
        std::fs::set_permissions(d.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // ELF magic without an exec bit, a script without one, and plain data.
        std::fs::write(d.join("bin/elf-noexec"), b"\x7fELF").unwrap();
        std::fs::write(d.join("etc/script"), b"#!/bin/sh\n").unwrap();
        std::fs::write(d.join("etc/data"), b"plain").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.join("bin/link")).unwrap();
        let (m, s) = index_layer_dir(d, None, &mut |_| {}).unwrap();
        let mut paths: Vec<_> = m.files.keys().map(|p| String::from_utf8(p.clone()).unwrap()).collect();
        paths.sort();
        assert_eq!(paths, ["/bin/elf-noexec", "/bin/tool", "/etc/script"]);
        let tool = &m.files[&b"/bin/tool".to_vec()];
        assert_eq!(tool.sha256, <[u8; 32]>::from(Sha256::digest(b"\x7fELF tool")));
        assert_eq!(tool.mode, 0o755);
        assert_eq!(s.hashed_files, 3);

        // Unchanged: re-checking reuses every hash.
        let (again, s) = index_layer_dir(d, Some(&m), &mut |_| {}).unwrap();
        assert_eq!(s.hashed_files, 0);
        assert_eq!(s.reused, 3);
        assert!(changes(&m, &again).is_empty());

        // Changed behind our back: detected, and only that file is hashed again.
        std::fs::write(d.join("bin/tool"), b"\x7fELF evil").unwrap();
        let (changed, s) = index_layer_dir(d, Some(&m), &mut |_| {}).unwrap();
        assert_eq!(s.hashed_files, 1);
        assert_eq!(changes(&m, &changed), ["changed /bin/tool"]);
    }
}
