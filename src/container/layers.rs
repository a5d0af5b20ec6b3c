//! Looking up a container path in its overlay layers, from the host side.
//!
//! The container writes its upper directory (and a hostile image can shape its lower ones), so
//! every lookup is confined: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, or one component at a time with `O_NOFOLLOW`.
//! Nothing is ever opened for reading unless `fstat` said it is a regular file.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use crate::sys::fs::{
    fstat_fd, is_dir, is_opaque_dir, is_regular, is_whiteout, open_beneath, open_component, open_dir_path,
    FileId,
};
use crate::sys::SysError;

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
        let lower_fds = lower.iter().map(|p| open_dir_path(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(Layers {
            upper_path: upper.map(Path::to_path_buf),
            lower_paths: lower.to_vec(),
            upper: upper_fd,
            lower: lower_fds,
        })
    }

    /// Whether some lower layer has, at `rel`, the very inode version that is being executed.
    /// For a file that was never copied up, overlayfs reports the lower inode's number, size
    /// and times; a copy-up gets a new ctime. This is the fast proof that the bytes are the
    /// image's, without reading them.
    pub fn lower_has_identical(&self, rel: &[u8], exec: &FileId) -> bool {
        self.lower.iter().any(|root| {
            open_beneath(root.as_fd(), rel)
                .and_then(|fd| fstat_fd(fd.as_fd()))
                .map(|st| is_regular(&st) && FileId::from_stat(&st).same_version_as(exec))
                .unwrap_or(false)
        })
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
            let id = FileId::from_stat(&f.stat);
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
                let fd = match open_component(dir.as_fd(), name) {
                    Ok(fd) => fd,
                    Err(e) if e.errno == nix::errno::Errno::ENOENT => continue,
                    Err(e) => return ImageLookup::Failed(e),
                };
                let st = match fstat_fd(fd.as_fd()) {
                    Ok(st) => st,
                    Err(e) => return ImageLookup::Failed(e),
                };
                if is_whiteout(&st) {
                    break; // hides this name in every layer below
                }
                if is_dir(&st) {
                    if last {
                        return if next.is_empty() { ImageLookup::NotRegular } else { break };
                    }
                    let opaque = is_opaque_dir(fd.as_fd());
                    next.push((*layer, fd));
                    if opaque {
                        break;
                    }
                    continue;
                }
                // A non-directory: it is the result if nothing above it was a directory;
                // either way it hides everything below.
                if !next.is_empty() {
                    break;
                }
                if !last {
                    return ImageLookup::Absent; // a file where a directory would have to be
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

    pub fn has_upper(&self) -> bool {
        self.upper.is_some()
    }
}
