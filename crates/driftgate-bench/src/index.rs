//! `driftgate bench index`: layer-indexing throughput. A generated layer (executables with ELF
//! magic and data files, in directories) is written as a plain, a gzip and a zstd OCI layout and
//! indexed offline (`index build`), and indexed on the node from its unpacked directory, first
//! from scratch and then as a re-check of an unchanged layer.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize)]
pub struct IndexRun {
    pub name: String,
    /// Uncompressed layer bytes (offline) or bytes hashed (node).
    pub mb: f64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub files: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub layer_mb: f64,
    pub executables: usize,
    pub data_files: usize,
    pub runs: Vec<IndexRun>,
}

fn hex(b: &[u8]) -> String {
    driftgate_core::util::hex(Sha256::digest(b))
}

/// Fills `buf` with cheap pseudo-random bytes (xorshift), so compression has real work.
fn fill(buf: &mut [u8], mut x: u64) {
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Writes the layer's files into `rootfs` and returns the layer tar.
fn generate(rootfs: &Path, mb: usize, files: usize) -> std::io::Result<(Vec<u8>, usize, usize)> {
    let per = (mb << 20) / files.max(1);
    let mut t = tar::Builder::new(Vec::with_capacity((mb << 20) + files * 1024));
    let (mut exes, mut data) = (0, 0);
    let mut buf = vec![0u8; per];
    for i in 0..files {
        let dir = format!("usr/lib/pkg{}", i % 64);
        std::fs::create_dir_all(rootfs.join(&dir))?;
        fill(&mut buf, i as u64 + 1);
        // Half the files are executables (ELF magic, mode 0755), half are data.
        let exe = i % 2 == 0;
        let mode = if exe {
            buf[..4].copy_from_slice(b"\x7fELF");
            exes += 1;
            0o755
        } else {
            buf[..4].copy_from_slice(b"data");
            data += 1;
            0o644
        };
        let name = format!("{dir}/file{i}");
        std::fs::write(rootfs.join(&name), &buf)?;
        std::fs::set_permissions(rootfs.join(&name), std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        let mut h = tar::Header::new_ustar();
        h.set_size(buf.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        t.append_data(&mut h, &name, &buf[..])?;
    }
    Ok((t.into_inner()?, exes, data))
}

/// Writes an OCI layout holding one image with `blob` (of media type `media`) as its only
/// layer; the config names the SHA-256 of `tar` as its diffID (the uncompressed layer, or other
/// bytes to make a mismatch). `ref_name` annotates the image. Used by the tests too.
pub fn write_oci_layout(
    dir: &Path,
    tar: &[u8],
    blob: &[u8],
    media: &str,
    ref_name: Option<&str>,
) -> std::io::Result<()> {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        hex(tar)
    );
    let annotations = ref_name.map_or(String::new(), |r| {
        format!(r#","annotations":{{"org.opencontainers.image.ref.name":{r:?}}}"#)
    });
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"{media}","digest":"sha256:{}","size":{}}}]}}"#,
        hex(config.as_bytes()),
        config.len(),
        hex(blob),
        blob.len()
    );
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{}{annotations}}}]}}"#,
        hex(manifest.as_bytes()),
        manifest.len()
    );
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for b in [config.as_bytes(), manifest.as_bytes(), blob] {
        std::fs::write(blobs.join(hex(b)), b)?;
    }
    std::fs::write(dir.join("index.json"), index)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
}

pub fn run(mb: usize, files: usize, mut progress: impl FnMut(&str)) -> Result<IndexReport, String> {
    let e = |x: std::io::Error| x.to_string();
    let dir = tempfile::Builder::new().prefix("driftgate-bench-index-").tempdir().map_err(e)?;
    let rootfs = dir.path().join("rootfs");
    progress("generating the layer");
    let (tar, exes, data) = generate(&rootfs, mb, files).map_err(e)?;
    let gz = {
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        g.write_all(&tar).map_err(e)?;
        g.finish().map_err(e)?
    };
    let zst = zstd::encode_all(&tar[..], 3).map_err(e)?;
    let mut runs = Vec::new();
    for (name, blob, media) in [
        ("offline-plain", &tar, "application/vnd.oci.image.layer.v1.tar"),
        ("offline-gzip", &gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("offline-zstd", &zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let d = dir.path().join(name);
        write_oci_layout(&d, &tar, blob, media, None).map_err(e)?;
        progress(name);
        let b = driftgate_image::build::build(&d, false).map_err(|e| e.to_string())?;
        let mb = b.layer_bytes as f64 / 1e6;
        runs.push(IndexRun {
            name: name.into(),
            mb,
            seconds: b.seconds,
            mb_per_s: mb / b.seconds,
            files: b.files,
        });
        std::fs::remove_dir_all(&d).map_err(e)?;
    }
    progress("node");
    let start = Instant::now();
    let (m, s) =
        driftgate_image::layerdir::index_layer_dir(&rootfs, None, &mut |_| {}).map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let mb_hashed = s.hashed_bytes as f64 / 1e6;
    runs.push(IndexRun {
        name: "node".into(),
        mb: mb_hashed,
        seconds: secs,
        mb_per_s: mb_hashed / secs,
        files: m.files.len(),
    });
    progress("node-recheck");
    let start = Instant::now();
    let (m2, s2) = driftgate_image::layerdir::index_layer_dir(&rootfs, Some(&m), &mut |_| {})
        .map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    if s2.hashed_files != 0 {
        return Err(format!("re-check hashed {} files of an unchanged layer", s2.hashed_files));
    }
    // The walk covers the whole layer; the figure is layer data checked per second.
    runs.push(IndexRun {
        name: "node-recheck".into(),
        mb: mb_hashed,
        seconds: secs,
        mb_per_s: mb_hashed / secs,
        files: m2.files.len(),
    });
    Ok(IndexReport { layer_mb: tar.len() as f64 / 1e6, executables: exes, data_files: data, runs })
}

pub fn render(r: &IndexReport) -> String {
    let mut s = format!(
        "layer: {:.1} MB uncompressed, {} executables, {} data files\n{:<14} {:>10} {:>9} {:>10} {:>7}\n",
        r.layer_mb, r.executables, r.data_files, "run", "MB", "seconds", "MB/s", "files"
    );
    for x in &r.runs {
        s.push_str(&format!(
            "{:<14} {:>10.1} {:>9.3} {:>10.1} {:>7}\n",
            x.name, x.mb, x.seconds, x.mb_per_s, x.files
        ));
    }
    s.push_str("offline: MB of uncompressed layer data read (all files); node: MB of executables hashed.\n");
    s
}
