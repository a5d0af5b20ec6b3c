//! Offline manifests: `driftgate index build SOURCE`, where SOURCE is an OCI image layout
//! directory, an OCI archive (a tar of such a layout) or a `docker save` tarball. Each layer
//! (gzip, zstd or plain tar) is read once, its diffID (SHA-256 of the uncompressed tar) is
//! computed while reading and must equal the one the image config names, and a manifest keyed
//! by that diffID is produced.
//!
//! Archives are never unpacked: the tarball is scanned once for its members' offsets and blobs
//! are read in place, so a hostile archive's symlinks and `..` names lead nowhere. Blobs of a
//! layout directory are opened beneath it without following symlinks.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use driftgate_core::index::manifest::{Entry, Manifest};
use driftgate_core::index::paths::{
    could_execute, normalize_tar_path, parse_digest, tar_meaning, TarMeaning,
};

/// Where the blobs of an image come from.
enum Store {
    Dir {
        root: std::os::fd::OwnedFd,
        path: PathBuf,
    },
    /// Member name -> (offset of its data, size) in the tarball.
    Archive {
        path: PathBuf,
        members: BTreeMap<String, (u64, u64)>,
    },
}

/// Image metadata larger than this is refused (manifests and configs are kilobytes).
const MAX_JSON: u64 = 16 << 20;

/// Why an image could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The source itself could not be opened (missing, not readable).
    #[error("{}: {source}", path.display())]
    Open { path: std::path::PathBuf, source: std::io::Error },
    /// The source is not a well-formed image (the message names the member or file).
    #[error("{0}")]
    Malformed(String),
}

impl From<String> for BuildError {
    fn from(m: String) -> Self {
        BuildError::Malformed(m)
    }
}

impl Store {
    fn open(source: &Path) -> Result<Store, BuildError> {
        let open = |e: std::io::Error| BuildError::Open { path: source.to_path_buf(), source: e };
        let md = std::fs::metadata(source).map_err(open)?;
        if md.is_dir() {
            let root = driftgate_sys::fs::open_dir_path(source)
                .map_err(|e| open(std::io::Error::from_raw_os_error(e.errno as i32)))?;
            return Ok(Store::Dir { root, path: source.to_path_buf() });
        }
        let f = File::open(source).map_err(open)?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        let mut members = BTreeMap::new();
        // Seeks past member data: listing a multi-gigabyte archive reads only its headers.
        let entries =
            ar.entries_with_seek().map_err(|e| format!("{}: not a tar archive: {e}", source.display()))?;
        for ent in entries {
            let ent = ent.map_err(|e| format!("{}: reading archive: {e}", source.display()))?;
            if ent.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let Some(name) = normalize_tar_path(&ent.path_bytes()) else { continue };
            let name = String::from_utf8_lossy(&name[1..]).into_owned();
            members.insert(name, (ent.raw_file_position(), ent.size()));
        }
        if members.is_empty() {
            return Err(format!("{}: not a tar archive with files in it", source.display()).into());
        }
        Ok(Store::Archive { path: source.to_path_buf(), members })
    }

    fn describe(&self) -> String {
        match self {
            Store::Dir { path, .. } | Store::Archive { path, .. } => path.display().to_string(),
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Store::Dir { root, .. } => driftgate_sys::fs::open_beneath(root.as_fd(), name.as_bytes()).is_ok(),
            Store::Archive { members, .. } => members.contains_key(name),
        }
    }

    /// A member as a reader, and its size.
    fn reader(&self, name: &str) -> Result<(Box<dyn Read>, u64), String> {
        let e = |x: &dyn std::fmt::Display| format!("{}: {name}: {x}", self.describe());
        match self {
            Store::Dir { root, .. } => {
                let o = driftgate_sys::fs::open_beneath(root.as_fd(), name.as_bytes()).map_err(|x| e(&x))?;
                let st = driftgate_sys::fs::fstat_fd(o.as_fd()).map_err(|x| e(&x))?;
                if !driftgate_sys::fs::is_regular(&st) {
                    return Err(e(&"not a regular file"));
                }
                let fd = driftgate_sys::fs::reopen_readonly(o.as_fd()).map_err(|x| e(&x))?;
                Ok((Box::new(File::from(fd)), st.st_size as u64))
            }
            Store::Archive { path, members } => {
                let &(off, size) = members.get(name).ok_or_else(|| e(&"not in the archive"))?;
                let mut f = File::open(path).map_err(|x| e(&x))?;
                f.seek(SeekFrom::Start(off)).map_err(|x| e(&x))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, String> {
        let (r, size) = self.reader(name)?;
        if size > MAX_JSON {
            return Err(format!("{}: {name}: {size} bytes is too large for image metadata", self.describe()));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(MAX_JSON).read_to_end(&mut buf).map_err(|e| format!("{}: {name}: {e}", self.describe()))?;
        serde_json::from_slice(&buf).map_err(|e| format!("{}: {name}: {e}", self.describe()))
    }
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// One image found in the source: its name for people, and its layers (member name, diffID),
/// bottom first.
pub struct ImagePlan {
    pub name: String,
    pub layers: Vec<(String, String)>,
}

/// The result of a build.
pub struct Built {
    pub images: Vec<ImagePlan>,
    pub manifests: Vec<Manifest>,
    /// Uncompressed layer bytes read.
    pub layer_bytes: u64,
    pub files: usize,
    pub seconds: f64,
}

fn blob_name(digest: &str) -> Result<String, String> {
    let d = parse_digest(digest).ok_or_else(|| format!("digest `{digest}` is not sha256:<64 hex>"))?;
    Ok(format!("blobs/sha256/{}", &d["sha256:".len()..]))
}

fn plan(store: &Store) -> Result<Vec<ImagePlan>, String> {
    let src = store.describe();
    if store.has("manifest.json") {
        // `docker save`: manifest.json lists each image's config and layer members.
        let entries: Vec<DockerSaveEntry> = store.json("manifest.json")?;
        let mut out = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            let cfg: ImageConfig = store.json(&e.config)?;
            let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
            if diff_ids.len() != e.layers.len() {
                return Err(format!(
                    "{src}: manifest.json[{i}]: {} layers but the config names {} diff_ids",
                    e.layers.len(),
                    diff_ids.len()
                ));
            }
            let name = e.repo_tags.and_then(|t| t.first().cloned()).unwrap_or_else(|| e.config.clone());
            out.push(ImagePlan { name, layers: e.layers.into_iter().zip(diff_ids).collect() });
        }
        return Ok(out);
    }
    if !store.has("index.json") {
        return Err(format!(
            "{src}: neither an OCI image layout (index.json) nor a docker save archive (manifest.json)"
        ));
    }
    let mut out = Vec::new();
    let mut queue: Vec<(Descriptor, u32)> =
        store.json::<OciIndex>("index.json")?.manifests.into_iter().map(|d| (d, 0)).collect();
    let mut seen = HashSet::new();
    while let Some((d, depth)) = queue.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let name = blob_name(&d.digest).map_err(|e| format!("{src}: {e}"))?;
        if d.media_type.contains("image.index") || d.media_type.contains("manifest.list") {
            if depth > 4 {
                return Err(format!("{src}: image indexes nested too deep"));
            }
            let idx: OciIndex = store.json(&name)?;
            queue.extend(idx.manifests.into_iter().map(|m| (m, depth + 1)));
            continue;
        }
        let m: OciManifest = store.json(&name)?;
        let cfg: ImageConfig =
            store.json(&blob_name(&m.config.digest).map_err(|e| format!("{src}: {e}"))?)?;
        // Attestations and other artifacts have no rootfs: not images to index.
        let Some(rootfs) = cfg.rootfs else { continue };
        if rootfs.diff_ids.len() != m.layers.len() {
            return Err(format!(
                "{src}: {name}: {} layers but the config names {} diff_ids",
                m.layers.len(),
                rootfs.diff_ids.len()
            ));
        }
        let layers = m
            .layers
            .iter()
            .map(|l| blob_name(&l.digest))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{src}: {name}: {e}"))?;
        let label = d
            .annotations
            .get("org.opencontainers.image.ref.name")
            .or_else(|| d.annotations.get("io.containerd.image.name"))
            .cloned()
            .unwrap_or_else(|| d.digest.clone());
        out.push(ImagePlan { name: label, layers: layers.into_iter().zip(rootfs.diff_ids).collect() });
    }
    if out.is_empty() {
        return Err(format!("{src}: no image in it"));
    }
    Ok(out)
}

/// Counts bytes and hashes them on their way through (the diffID of a layer).
struct Tee<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Counts compressed bytes read, for the progress bar.
struct Counted<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Decompresses by magic: gzip, zstd, or a plain tar.
fn decompressed<'a>(mut r: BufReader<Box<dyn Read + 'a>>) -> std::io::Result<Box<dyn Read + 'a>> {
    use std::io::BufRead;
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Indexes one layer tar stream into a manifest; returns it with the stream's diffID.
pub fn index_layer_tar(input: Box<dyn Read + '_>, source: &str) -> Result<(Manifest, String), BuildError> {
    let r =
        decompressed(BufReader::with_capacity(256 << 10, input)).map_err(|e| format!("decompress: {e}"))?;
    let mut tee = Tee { inner: r, hash: Sha256::new(), bytes: 0 };
    let mut m = Manifest::new(source);
    {
        let mut ar = tar::Archive::new(&mut tee);
        let entries = ar.entries().map_err(|e| format!("not a tar stream: {e}"))?;
        for ent in entries {
            let mut ent = ent.map_err(|e| format!("reading layer: {e}"))?;
            let raw = ent.path_bytes().into_owned();
            let Some(path) = normalize_tar_path(&raw) else { continue };
            match tar_meaning(&path) {
                TarMeaning::Whiteout(p) => {
                    m.whiteouts.insert(p);
                    continue;
                }
                TarMeaning::Opaque(p) => {
                    m.opaque.insert(p);
                    continue;
                }
                TarMeaning::Plain => {}
            }
            let h = ent.header();
            let mode = h.mode().map(|m| m & 0o7777);
            let mtime = h.mtime().unwrap_or(0) as i64;
            match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = ent.size();
                    let mode = mode.map_err(|e| format!("{}: mode: {e}", String::from_utf8_lossy(&raw)))?;
                    let err = |e: std::io::Error| format!("{}: {e}", String::from_utf8_lossy(&raw));
                    // The first bytes decide whether it could be executed (ELF or `#!` magic).
                    let mut head = Vec::with_capacity(4);
                    (&mut ent).take(4).read_to_end(&mut head).map_err(err)?;
                    if could_execute(mode, &head) {
                        let mut hasher = Sha256::new();
                        hasher.update(&head);
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            match ent.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => hasher.update(&buf[..n]),
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                Err(e) => return Err(err(e).into()),
                            }
                        }
                        let e = Entry { sha256: hasher.finalize().into(), size, mode, mtime, node: None };
                        m.insert(path, e);
                    } else {
                        // Read only to move on (and for the diffID). A later entry of the same
                        // name replaces an earlier one.
                        std::io::copy(&mut ent, &mut std::io::sink()).map_err(err)?;
                        m.remove(&path);
                    }
                }
                tar::EntryType::Link => {
                    // A hard link to an earlier member: the same file under another name.
                    let target = ent.link_name_bytes().and_then(|t| normalize_tar_path(&t));
                    if let Some(e) = target.and_then(|t| m.files.get(&t).cloned()) {
                        m.insert(path, e);
                    }
                }
                _ => {
                    m.remove(&path);
                }
            }
        }
    }
    // The end-of-archive padding is part of the diffID too.
    std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| format!("reading layer: {e}"))?;
    m.layer_bytes = tee.bytes;
    let diff_id = format!("sha256:{}", driftgate_core::util::hex(tee.hash.finalize()));
    Ok((m, diff_id))
}

/// Builds the manifests of every image in `source`. Layers shared between images are read once.
pub fn build(source: &Path, progress: bool) -> Result<Built, BuildError> {
    let started = std::time::Instant::now();
    let store = Store::open(source)?;
    let images = plan(&store)?;
    let mut todo: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    for img in &images {
        for (member, diff_id) in &img.layers {
            let d = parse_digest(diff_id).ok_or_else(|| {
                format!("{}: {}: diff_id `{diff_id}` is not sha256:<64 hex>", store.describe(), img.name)
            })?;
            if seen.insert(d.clone()) {
                todo.push((member.clone(), d));
            }
        }
    }
    let total: u64 = todo.iter().map(|(m, _)| store.reader(m).map(|r| r.1).unwrap_or(0)).sum();
    let bar = if progress { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let mut out = Vec::new();
    let (mut bytes, mut files) = (0u64, 0usize);
    // Recorded in each manifest as where it was built from.
    let label = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf()).display().to_string();
    for (i, (member, want)) in todo.iter().enumerate() {
        bar.set_message(format!("layer {}/{}", i + 1, todo.len()));
        let (r, _) = store.reader(member)?;
        let counted: Box<dyn Read> = Box::new(Counted { inner: r, bar: bar.clone() });
        let (mut m, got) =
            index_layer_tar(counted, &label).map_err(|e| format!("{}: {member}: {e}", store.describe()))?;
        if &got != want {
            return Err(format!(
                "{}: {member}: content has diffID {got}, but the image config says {want}",
                store.describe()
            )
            .into());
        }
        m.diff_id = Some(got);
        bytes += m.layer_bytes;
        files += m.files.len();
        out.push(m);
    }
    bar.finish_and_clear();
    Ok(Built { images, manifests: out, layer_bytes: bytes, files, seconds: started.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_tar(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "usr/bin/hard", "bin/tool").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn layer_tars_are_indexed_in_any_compression_with_their_diff_id() {
        let tar = layer_tar(&[
            ("bin/tool", b"\x7fELF....", 0o755),
            ("./etc/data", b"data", 0o644),
            ("etc/script", b"#!/bin/sh\n", 0o644),
            ("etc/.wh.gone", b"", 0o644),
            ("var/.wh..wh..opq", b"", 0o644),
        ]);
        let want_diff = format!("sha256:{}", driftgate_core::util::hex(Sha256::digest(&tar)));
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for blob in [tar.clone(), gz, zst] {
            let (m, diff) = index_layer_tar(Box::new(std::io::Cursor::new(blob)), "t").unwrap();
            assert_eq!(diff, want_diff);
            assert_eq!(m.layer_bytes, tar.len() as u64);
            let mut paths: Vec<_> = m.files.keys().map(|p| String::from_utf8(p.clone()).unwrap()).collect();
            paths.sort();
            assert_eq!(paths, ["/bin/tool", "/etc/script", "/usr/bin/hard"]);
            let tool = &m.files[&b"/bin/tool".to_vec()];
            assert_eq!(tool.sha256, <[u8; 32]>::from(Sha256::digest(b"\x7fELF....")));
            assert_eq!((tool.size, tool.mode, tool.mtime), (8, 0o755, 1_700_000_000));
            assert_eq!(m.files[&b"/usr/bin/hard".to_vec()], *tool);
            assert!(m.whiteouts.contains(b"/etc/gone".as_slice()));
            assert!(m.opaque.contains(b"/var".as_slice()));
        }
    }

    #[test]
    fn truncated_or_foreign_sources_are_clear_errors() {
        let tar = layer_tar(&[("bin/tool", b"\x7fELF....", 0o755)]);
        let cut = tar[..700].to_vec();
        assert!(index_layer_tar(Box::new(std::io::Cursor::new(cut)), "t").is_err());
        let t = tempfile::tempdir().unwrap();
        let e = build(t.path(), false).err().unwrap().to_string();
        assert!(e.contains("neither an OCI image layout"), "{e}");
        let missing = build(&t.path().join("missing.tar"), false).err().unwrap();
        assert!(
            matches!(&missing, BuildError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        let f = t.path().join("x.tar");
        std::fs::write(&f, b"not a tar at all, not a tar at all").unwrap();
        let e = build(&f, false).err().unwrap();
        assert!(matches!(e, BuildError::Malformed(_)) && e.to_string().contains("x.tar"), "{e}");
    }
}
