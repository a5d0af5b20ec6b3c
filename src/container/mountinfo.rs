//! `/proc/self/mountinfo` and overlayfs mount options, parsed from bytes.
//!
//! Written by hand because the `procfs` crate does not decode the kernel's octal escapes
//! (`\040` for a space) and knows nothing of overlayfs' own escaping of `:` in layer lists.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountEntry {
    pub mount_id: u64,
    pub dev: u64,
    /// The directory of the filesystem that is mounted here (`/` for a whole filesystem, a
    /// subdirectory for a bind mount of one).
    pub root: Vec<u8>,
    pub mountpoint: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_options: Vec<u8>,
    pub fstype: String,
    /// The mount source (`overlay`, `tmpfs`, `/dev/vda1`), as the kernel shows it.
    pub source: Vec<u8>,
    pub super_options: Vec<u8>,
}

impl MountEntry {
    /// Whether the kernel refuses exec on this mount (`noexec`).
    pub fn noexec(&self) -> bool {
        self.mount_options.split(|&b| b == b',').any(|o| o == b"noexec")
    }
}

/// Parses the whole file. Malformed lines are skipped: the kernel writes this file, and one
/// odd line must not hide the others.
pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let mount_id = std::str::from_utf8(fields[0]).ok()?.parse().ok()?;
    let (maj, min) = {
        let s = std::str::from_utf8(fields[2]).ok()?;
        let (a, b) = s.split_once(':')?;
        (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)
    };
    Some(MountEntry {
        mount_id,
        dev: libc::makedev(maj, min),
        root: unescape_octal(fields[3]),
        mountpoint: PathBuf::from(OsString::from_vec(unescape_octal(fields[4]))),
        mount_options: fields[5].to_vec(),
        fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
        source: unescape_octal(fields[sep + 2]),
        super_options: fields[sep + 3].to_vec(),
    })
}

/// Decodes `\NNN` octal escapes as the kernel's `mangle()` writes them.
pub fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (s[i + 1] - b'0') as u32 * 64 + (s[i + 2] - b'0') as u32 * 8 + (s[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The layer directories of an overlay mount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverlayLayers {
    /// Lower directories, top first.
    pub lower: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
}

/// Parses overlay super options: `lowerdir=a:b` (top first; `\:` is a literal colon, `::`
/// separates data-only layers), repeated `lowerdir+=`, and `upperdir=`. Data-only layers hold
/// file data for metacopy redirects; their files are never visible by path, so they are not
/// layers a path can be found in.
pub fn overlay_layers(super_options: &[u8]) -> Option<OverlayLayers> {
    let mut layers = OverlayLayers::default();
    for opt in split_unescaped(super_options, b',') {
        let opt = unescape_octal(&opt);
        if let Some(v) = opt.strip_prefix(b"lowerdir=") {
            let mut parts = split_unescaped(v, b':').into_iter();
            for p in parts.by_ref() {
                if p.is_empty() {
                    // `::` starts the data-only layers.
                    break;
                }
                layers.lower.push(PathBuf::from(OsString::from_vec(p)));
            }
        } else if let Some(v) = opt.strip_prefix(b"lowerdir+=") {
            layers.lower.push(PathBuf::from(OsString::from_vec(v.to_vec())));
        } else if let Some(v) = opt.strip_prefix(b"upperdir=") {
            layers.upper = Some(PathBuf::from(OsString::from_vec(v.to_vec())));
        }
    }
    (!layers.lower.is_empty()).then_some(layers)
}

/// Splits on `sep`, treating `\sep` as a literal and dropping that backslash.
fn split_unescaped(s: &[u8], sep: u8) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() && s[i + 1] == sep {
            out.last_mut().unwrap().push(sep);
            i += 2;
        } else if s[i] == sep {
            out.push(Vec::new());
            i += 1;
        } else {
            out.last_mut().unwrap().push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = b"1234 28 0:355 / /run/containerd/io.containerd.runtime.v2.task/default/web\\0401/rootfs rw,relatime shared:1 - overlay overlay rw,lowerdir=/var/lib/containerd/s/3/fs:/var/lib/containerd/s/2/fs,upperdir=/var/lib/containerd/s/4/fs,workdir=/var/lib/containerd/s/4/work\n";

    #[test]
    fn parses_an_overlay_line_with_escapes() {
        let e = &parse(LINE)[0];
        assert_eq!(e.mount_id, 1234);
        assert_eq!(e.dev, libc::makedev(0, 355));
        assert_eq!(e.fstype, "overlay");
        assert_eq!(
            e.mountpoint,
            PathBuf::from("/run/containerd/io.containerd.runtime.v2.task/default/web 1/rootfs")
        );
        let l = overlay_layers(&e.super_options).unwrap();
        assert_eq!(
            l.lower,
            vec![PathBuf::from("/var/lib/containerd/s/3/fs"), PathBuf::from("/var/lib/containerd/s/2/fs")]
        );
        assert_eq!(l.upper, Some(PathBuf::from("/var/lib/containerd/s/4/fs")));
    }

    #[test]
    fn optional_fields_and_bad_lines() {
        let text = b"garbage\n22 1 8:1 / / rw - ext4 /dev/vda rw\n23 22 0:5 / /a rw shared:2 master:3 - tmpfs tmpfs rw\n";
        let v = parse(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].mountpoint, PathBuf::from("/a"));
        assert_eq!(v[1].fstype, "tmpfs");
        assert!(!v[1].noexec());
        let bind = parse(b"40 30 8:1 /srv/vol\\040x /data rw,nosuid,nodev,noexec - ext4 /dev/vda1 rw\n");
        assert_eq!(bind[0].root, b"/srv/vol x");
        assert_eq!(bind[0].source, b"/dev/vda1");
        assert!(bind[0].noexec());
    }

    #[test]
    fn overlay_escapes_data_only_layers_and_lowerdir_plus() {
        let l = overlay_layers(b"rw,lowerdir=/a\\:b:/c::/data,upperdir=/u\\054x,workdir=/w").unwrap();
        assert_eq!(l.lower, vec![PathBuf::from("/a:b"), PathBuf::from("/c")]);
        assert_eq!(l.upper, Some(PathBuf::from("/u,x")));
        let l = overlay_layers(b"rw,lowerdir+=/l1,lowerdir+=/l2,datadir+=/d,upperdir=/u").unwrap();
        assert_eq!(l.lower, vec![PathBuf::from("/l1"), PathBuf::from("/l2")]);
        assert!(overlay_layers(b"rw,upperdir=/u").is_none());
    }

    #[test]
    fn octal_unescape_leaves_other_backslashes() {
        assert_eq!(unescape_octal(b"a\\040b\\134c\\x"), b"a b\\c\\x");
        assert_eq!(unescape_octal(b"end\\04"), b"end\\04");
    }
}
