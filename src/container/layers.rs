//! Looking up a container path in its overlay layers, from the host side.
//!
//! The container writes its upper directory (and a hostile image can shape its lower ones), so
//! every lookup is confined: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, or one component at a time with `O_NOFOLLOW`.
//! Nothing is ever opened for reading unless `fstat` said it is a regular file.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use driftgate_sys::fs::{
    fstat_fd, is_opaque_dir, is_regular, is_whiteout, open_beneath, open_component, open_component_dir,
    open_dir_path, FileId,
};
use driftgate_sys::SysError;

/// Open handles on a container's layer directories. Holding `O_PATH` fds on the layer
/// directories (on the host filesystem) does not pin the overlay mount, so it never gets in
/// the way of the runtime unmounting the rootfs.
#[derive(Debug)]
pub struct Layers {
    pub upper_path: Option<PathBuf>,
    pub lower_paths: Vec<PathBuf>,
    upper: Option<OwnedFd>,
    lower: Vec<OwnedFd>,
}

/// containers/storage (Podman, CRI-O) gives a container with a user-namespace mapping
/// (`--uidmap`, `--userns=auto`) its layers through idmapped mounts of their parent directories,
/// `<home>/<id>/mapped/<n>`, and unmounts those once the overlay holds them: the overlay's
/// options then name paths that no longer exist. The directory is the same one, seen unmapped:
/// `<home>/<id>/mapped/<n>/l/<link>` is `<home>/l/<link>` (the short links, which it mounts
/// through `<home>`), and otherwise the `index`-th entry of the layer's `lower` file (which
/// lists its lower layers in the order the options do) when its last name is the rest of the
/// path. `None` for anything else.
pub fn unmapped_storage_layer(path: &Path, index: usize) -> Option<PathBuf> {
    use std::ffi::OsStr;
    use std::path::Component;
    let comps: Vec<Component<'_>> = path.components().collect();
    let at = comps.iter().rposition(|c| c.as_os_str() == OsStr::new("mapped"))?;
    // <home> / <id> / mapped / <n> / <rest...>
    if at < 2 || comps.len() < at + 3 {
        return None;
    }
    let n = comps[at + 1].as_os_str().to_str()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if comps[at + 2..].iter().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let layer_dir: PathBuf = comps[..at].iter().collect();
    let home = layer_dir.parent()?;
    let rest: PathBuf = comps[at + 2..].iter().collect();
    if rest.starts_with("l") && rest.components().count() == 2 {
        return Some(home.join(rest));
    }
    let lower = std::fs::read_to_string(layer_dir.join("lower")).ok()?;
    let entry = lower.trim_end_matches('\n').split(':').nth(index)?;
    let entry = Path::new(entry);
    // It was mounted through the entry's parent directory: the rest is the entry's last name.
    (rest.components().count() == 1
        && entry.file_name() == Some(rest.as_os_str())
        && entry.components().all(|c| matches!(c, Component::Normal(_) | Component::RootDir)))
    .then(|| if entry.is_absolute() { entry.to_path_buf() } else { home.join(entry) })
}

/// A regular file found in a layer.
#[derive(Debug)]
pub struct LayerFile {
    pub fd: OwnedFd,
    pub stat: FileStat,
    /// Index into the lower layers (top first); `None` for the upper layer.
    pub lower_index: Option<usize>,
}

/// The union of the lower layers at one path, as overlayfs would show it.
#[derive(Debug)]
pub enum ImageLookup {
    Absent,
    File(LayerFile),
    /// A directory, device, symlink...: present but not an executable regular file.
    NotRegular,
    /// Could not be searched (I/O error, permission): nothing is proven.
    Failed(SysError),
}

impl Layers {
    pub fn open(upper: Option<&Path>, lower: &[PathBuf]) -> Result<Layers, SysError> {
        let upper_fd = upper.map(open_dir_path).transpose()?;
        let mut lower_paths = Vec::with_capacity(lower.len());
        let mut lower_fds = Vec::with_capacity(lower.len());
        for (i, p) in lower.iter().enumerate() {
            let (path, fd) = match open_dir_path(p) {
                Ok(fd) => (p.clone(), fd),
                Err(e) if e.errno == nix::errno::Errno::ENOENT => {
                    // A layer of an idmapped mount that is gone: the same directory, unmapped.
                    let Some(real) = unmapped_storage_layer(p, i) else { return Err(e) };
                    let fd = open_dir_path(&real)?;
                    (real, fd)
                }
                Err(e) => return Err(e),
            };
            lower_paths.push(path);
            lower_fds.push(fd);
        }
        Ok(Layers {
            upper_path: upper.map(Path::to_path_buf),
            lower_paths,
            upper: upper_fd,
            lower: lower_fds,
        })
    }

    /// The index (top first) of the lower layer holding, at `rel`, the very inode version
    /// that is being executed. For a file that was never copied up, overlayfs reports the lower
    /// inode's number, size and times; a copy-up gets a new ctime. This is the fast proof that
    /// the bytes are the image's, without reading them.
    pub fn lower_identical(&self, rel: &[u8], exec: &FileId) -> Option<usize> {
        self.lower.iter().position(|root| {
            open_beneath(root.as_fd(), rel)
                .and_then(|fd| fstat_fd(fd.as_fd()))
                .map(|st| is_regular(&st) && driftgate_sys::fs::file_id(&st).same_version_as(exec))
                .unwrap_or(false)
        })
    }

    /// The lower layer's file at `rel` that is version `exec`, opened for reading (on the
    /// host's filesystem, never through the container's overlay).
    pub fn open_lower_readable(&self, rel: &[u8], exec: &FileId) -> Option<OwnedFd> {
        let layer = self.lower_identical(rel, exec)?;
        let fd = open_beneath(self.lower[layer].as_fd(), rel).ok()?;
        driftgate_sys::fs::reopen_readonly(fd.as_fd()).ok()
    }

    /// The upper layer's regular file at `rel`, if there is one.
    pub fn upper_file(&self, rel: &[u8]) -> Option<LayerFile> {
        let root = self.upper.as_ref()?;
        let fd = open_beneath(root.as_fd(), rel).ok()?;
        let stat = fstat_fd(fd.as_fd()).ok()?;
        is_regular(&stat).then_some(LayerFile { fd, stat, lower_index: None })
    }

    /// Whether the upper file at `rel` is the file being executed: same size and times, and
    /// the same inode number unless it is a copy-up (which keeps the lower inode's number).
    pub fn upper_matches(&self, rel: &[u8], exec: &FileId) -> bool {
        self.upper_file(rel).is_some_and(|f| {
            let id = driftgate_sys::fs::file_id(&f.stat);
            id.size == exec.size && id.mtime_ns == exec.mtime_ns && id.ctime_ns == exec.ctime_ns
        })
    }

    /// Looks `rel` up in the union of the lower layers, honouring whiteouts (character device
    /// 0:0), opaque directories (`trusted.overlay.opaque=y`) and non-directories that hide the
    /// layers below them, as overlayfs does.
    pub fn image_lookup(&self, rel: &[u8]) -> ImageLookup {
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() || comps.iter().any(|c| *c == b"." || *c == b"..") {
            return ImageLookup::Absent;
        }
        // Directories to search at the current depth: (layer index, fd). Start at the roots.
        let mut dirs: Vec<(usize, OwnedFd)> = Vec::with_capacity(self.lower.len());
        for (i, root) in self.lower.iter().enumerate() {
            match root.try_clone() {
                Ok(fd) => dirs.push((i, fd)),
                Err(e) => {
                    let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                    return ImageLookup::Failed(SysError::new("dup", errno));
                }
            }
        }
        for (depth, name) in comps.iter().enumerate() {
            let last = depth + 1 == comps.len();
            let mut next: Vec<(usize, OwnedFd)> = Vec::new();
            for (layer, dir) in &dirs {
                if !last {
                    // A directory on the way: open it as one, or learn that something else
                    // (file, whiteout, symlink) is here, which hides this name below.
                    match open_component_dir(dir.as_fd(), name) {
                        Ok(fd) => {
                            let opaque = is_opaque_dir(fd.as_fd());
                            next.push((*layer, fd));
                            if opaque {
                                break;
                            }
                        }
                        Err(e) if e.errno == nix::errno::Errno::ENOENT => continue,
                        Err(e)
                            if matches!(e.errno, nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) =>
                        {
                            break
                        }
                        Err(e) => return ImageLookup::Failed(e),
                    }
                    continue;
                }
                let fd = match open_component(dir.as_fd(), name) {
                    Ok(fd) => fd,
                    Err(e) if e.errno == nix::errno::Errno::ENOENT => continue,
                    Err(e) => return ImageLookup::Failed(e),
                };
                let st = match fstat_fd(fd.as_fd()) {
                    Ok(st) => st,
                    Err(e) => return ImageLookup::Failed(e),
                };
                // The first layer that has the name decides it.
                if is_whiteout(&st) {
                    return ImageLookup::Absent;
                }
                if is_regular(&st) {
                    return ImageLookup::File(LayerFile { fd, stat: st, lower_index: Some(*layer) });
                }
                return ImageLookup::NotRegular;
            }
            if next.is_empty() {
                return ImageLookup::Absent;
            }
            dirs = next;
        }
        ImageLookup::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn mkfile(p: &Path, content: &[u8]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Whiteouts are character devices 0:0 and opaque markers are trusted.* xattrs: both need
    /// root. Returns false (and says so) when they cannot be made.
    fn whiteout(p: &Path) -> bool {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(p, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).is_ok()
    }

    fn opaque(p: &Path) -> bool {
        std::fs::create_dir_all(p).unwrap();
        rustix::fs::setxattr(p, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).is_ok()
    }

    fn found(l: &Layers, p: &[u8]) -> Option<usize> {
        match l.image_lookup(p) {
            ImageLookup::File(f) => Some(f.lower_index.unwrap()),
            ImageLookup::Absent => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn union_lookup_honours_layer_order_whiteouts_opaque_dirs_and_hiding_files() {
        let d = tempfile::tempdir().unwrap();
        let (top, mid, bottom) = (d.path().join("top"), d.path().join("mid"), d.path().join("bottom"));
        for l in [&top, &mid, &bottom] {
            std::fs::create_dir_all(l).unwrap();
        }
        mkfile(&bottom.join("bin/a"), b"bottom a");
        mkfile(&mid.join("bin/a"), b"mid a");
        mkfile(&bottom.join("bin/b"), b"bottom b");
        mkfile(&bottom.join("opt/x/tool"), b"tool");
        mkfile(&mid.join("opt/x"), b"a file hiding the directory below");
        mkfile(&bottom.join("srv/d/old"), b"old");
        mkfile(&top.join("srv/d/new"), b"new");
        let l = Layers::open(None, &[top.clone(), mid.clone(), bottom.clone()]).unwrap();
        assert_eq!(found(&l, b"/bin/a"), Some(1), "the highest layer wins");
        assert_eq!(found(&l, b"/bin/b"), Some(2), "directories merge");
        assert_eq!(found(&l, b"/opt/x/tool"), None, "a file in a higher layer hides a directory");
        assert_eq!(found(&l, b"/srv/d/old"), Some(2));
        assert_eq!(found(&l, b"/nope"), None);
        assert_eq!(found(&l, b"/bin/../bin/a"), None, "dot-dot is never walked");
        assert!(matches!(l.image_lookup(b"/bin"), ImageLookup::NotRegular));

        if !whiteout(&top.join("bin/b")) || !opaque(&top.join("srv/d")) {
            eprintln!("SKIPPED (needs root): whiteout and opaque-directory cases");
            return;
        }
        let l = Layers::open(None, &[top, mid, bottom]).unwrap();
        assert_eq!(found(&l, b"/bin/b"), None, "a whiteout deletes the name");
        assert_eq!(found(&l, b"/bin/a"), Some(1));
        assert_eq!(found(&l, b"/srv/d/new"), Some(0));
        assert_eq!(found(&l, b"/srv/d/old"), None, "an opaque directory hides the layers below");
    }

    #[test]
    fn layers_of_an_unmounted_idmapped_mount_are_found_unmapped() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("overlay");
        let id = home.join("c0ffee");
        for dir in ["l", "aaa/diff/bin", "bbb/diff", "c0ffee/diff"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        std::os::unix::fs::symlink("../aaa/diff", home.join("l/AAAA")).unwrap();
        std::fs::write(id.join("lower"), "l/AAAA:bbb/diff\n").unwrap();
        // The short link, mounted through <home>.
        let mapped = id.join("mapped/0/l/AAAA");
        assert_eq!(unmapped_storage_layer(&mapped, 0), Some(home.join("l/AAAA")));
        // A layer by its own directory: the `lower` file's entry at the same position.
        assert_eq!(unmapped_storage_layer(&id.join("mapped/1/diff"), 1), Some(home.join("bbb/diff")));
        assert_eq!(unmapped_storage_layer(&id.join("mapped/1/diff"), 5), None);
        assert_eq!(unmapped_storage_layer(&id.join("mapped/1/other"), 1), None, "not the entry's name");
        let l = Layers::open(Some(&id.join("diff")), &[mapped, id.join("mapped/1/diff")]).unwrap();
        assert_eq!(l.lower_paths, vec![home.join("l/AAAA"), home.join("bbb/diff")]);
        assert!(matches!(l.image_lookup(b"/bin"), ImageLookup::NotRegular));
        // Anything else stays an error.
        for p in ["/a/mapped/x/l/AAAA", "/mapped/0/l/A", "/a/b/mapped/0", "/a/b/mapped/0/l/../../etc"] {
            assert_eq!(unmapped_storage_layer(Path::new(p), 0), None, "{p}");
        }
        assert!(Layers::open(None, &[id.join("mapped/7/nothing")]).is_err());
    }

    #[test]
    fn symlinks_in_a_layer_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let layer = d.path().join("l");
        mkfile(&d.path().join("outside/secret"), b"host file");
        std::fs::create_dir_all(layer.join("bin")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), layer.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../outside/secret", layer.join("bin/link")).unwrap();
        let l = Layers::open(Some(&layer), std::slice::from_ref(&layer)).unwrap();
        assert_eq!(found(&l, b"/escape/secret"), None);
        assert!(matches!(l.image_lookup(b"/bin/link"), ImageLookup::NotRegular));
        assert!(l.upper_file(b"/escape/secret").is_none());
        assert!(l.upper_file(b"/bin/link").is_none());
        let st = nix::sys::stat::stat(&d.path().join("outside/secret")).unwrap();
        assert!(l.lower_identical(b"/escape/secret", &driftgate_sys::fs::file_id(&st)).is_none());
    }
}
