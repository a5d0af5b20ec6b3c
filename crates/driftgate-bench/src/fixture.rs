//! Scratch overlay "containers" the benchmark execs in.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{setup, BenchError};

/// Scratch containers: overlays whose lower layer holds the binary. Unmounted and removed on
/// drop.
pub(crate) struct Containers {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) merged: Vec<PathBuf>,
}

impl Containers {
    pub(crate) fn new(binary: &[u8], count: usize) -> Result<Containers, BenchError> {
        Self::with_image(binary, count, &|_| Ok(()))
    }

    /// Like [`Containers::new`], with `image` adding files to each lower layer (the image)
    /// before it is mounted.
    pub(crate) fn with_image(
        binary: &[u8],
        count: usize,
        image: &dyn Fn(&Path) -> Result<(), BenchError>,
    ) -> Result<Containers, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("driftgate-bench-")
            .tempdir_in(std::env::temp_dir())
            .map_err(setup("temporary directory"))?;
        let mut c = Containers { dir, merged: Vec::new() };
        for i in 0..count {
            let r = c.dir.path().join(format!("c{i}"));
            for d in ["lower/bin", "lower/tmp", "upper", "work", "merged"] {
                std::fs::create_dir_all(r.join(d)).map_err(setup("mkdir"))?;
            }
            std::fs::set_permissions(r.join("lower/tmp"), std::fs::Permissions::from_mode(0o1777))
                .map_err(setup("chmod"))?;
            write_exec(&r.join("lower/bin/true"), binary)?;
            // What the inside workloads run: a shell with a script, a dynamic program.
            for (img, host) in super::inside::image_files() {
                let dst = r.join("lower").join(img);
                std::fs::create_dir_all(dst.parent().expect("a file")).map_err(setup("mkdir"))?;
                std::fs::copy(&host, &dst).map_err(setup("copy image file"))?;
            }
            std::fs::create_dir_all(r.join("lower/opt")).map_err(setup("mkdir"))?;
            std::fs::write(r.join("lower/opt/script.sh"), b"exit 0\n").map_err(setup("write script"))?;
            image(&r.join("lower"))?;
            c.merged.push(mount_overlay(&r.join("lower"), &r)?);
        }
        Ok(c)
    }

    /// Another container whose image is the real root file system `image` alone (as its only
    /// lower layer, read only): its rootfs.
    pub(crate) fn add_image_container(&mut self, image: &Path) -> Result<PathBuf, BenchError> {
        if !image.join("usr/bin").is_dir() {
            return Err(BenchError::Setup(format!("--image {}: not a root file system", image.display())));
        }
        let r = self.dir.path().join(format!("c{}", self.merged.len()));
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(r.join(d)).map_err(setup("mkdir"))?;
        }
        let merged = mount_overlay(image, &r)?;
        self.merged.push(merged.clone());
        Ok(merged)
    }

    pub(crate) fn image_binary(&self, i: usize) -> PathBuf {
        self.merged[i].join("bin/true")
    }

    /// The glob that matches every scratch container's rootfs.
    pub(crate) fn glob(&self) -> String {
        format!("{}/c*/merged", self.dir.path().display())
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for m in &self.merged {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mounts an overlay of `lower` with `dir`'s `upper` and `work` at `dir/merged`.
fn mount_overlay(lower: &Path, dir: &Path) -> Result<PathBuf, BenchError> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let merged = dir.join("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(setup("mount overlay"))?;
    Ok(merged)
}

pub(crate) fn write_exec(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, bytes).map_err(setup("write binary"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))
}

/// Writes `binary` padded with zeros (written, not sparse) to `size` bytes.
pub(crate) fn write_padded(path: &Path, binary: &[u8], size: usize) -> Result<(), BenchError> {
    let mut f = std::fs::File::create(path).map_err(setup("create"))?;
    f.write_all(binary).map_err(setup("write"))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size.saturating_sub(binary.len());
    while left > 0 {
        let n = left.min(zeros.len());
        f.write_all(&zeros[..n]).map_err(setup("write"))?;
        left -= n;
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))
}

pub(crate) fn write_sparse(path: &Path, binary: &[u8], size: u64) -> Result<(), BenchError> {
    let f = std::fs::File::create(path).map_err(setup("create"))?;
    (&f).write_all(binary).map_err(setup("write"))?;
    f.set_len(size).map_err(setup("truncate"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(setup("chmod"))
}
