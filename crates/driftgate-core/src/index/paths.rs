//! Paths inside image layers: digests, normal paths, tar member names and what they mean
//! to overlayfs (whiteouts, opaque markers), and what could be executed.

/// `sha256:<64 hex>` to its lower-case form, or `None`.
pub fn parse_digest(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:")?;
    crate::util::parse_sha256(hex.as_bytes()).map(|h| format!("sha256:{}", crate::util::hex(h)))
}

/// Whether `p` is `/a/b`: absolute, no empty, `.` or `..` components.
pub fn is_normal_path(p: &[u8]) -> bool {
    p.len() > 1
        && p[0] == b'/'
        && p[1..].split(|&b| b == b'/').all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// A tar entry name as an image path: `./usr/bin/x`, `usr/bin/x` and `/usr/bin/x` all give
/// `/usr/bin/x`. `None` for a name that climbs out (`..`) or names the root.
pub fn normalize_tar_path(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => {
                out.push(b'/');
                out.extend_from_slice(c);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// What a layer entry at `path` means for the union: a whiteout of another path, an opaque
/// marker for a directory, or a plain entry. Tar layers spell these `.wh.<name>` and
/// `.wh..wh..opq` (OCI image spec, "Whiteouts").
pub enum TarMeaning {
    Whiteout(Vec<u8>),
    Opaque(Vec<u8>),
    Plain,
}

/// What a normalized layer path (see [`normalize_tar_path`]) means to overlayfs. Total: a
/// path without a slash is taken as a name at the root.
pub fn tar_meaning(path: &[u8]) -> TarMeaning {
    let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    if base == b".wh..wh..opq" {
        return TarMeaning::Opaque(if dir.is_empty() { b"/".to_vec() } else { dir.to_vec() });
    }
    match base.strip_prefix(b".wh.") {
        Some(name) if !name.is_empty() => {
            let mut p = dir.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            TarMeaning::Whiteout(p)
        }
        _ => TarMeaning::Plain,
    }
}

/// Whether a regular file could be executed: any exec bit, or ELF or `#!` magic.
pub fn could_execute(mode: u32, head: &[u8]) -> bool {
    mode & 0o111 != 0 || head.starts_with(b"\x7fELF") || head.starts_with(b"#!")
}
