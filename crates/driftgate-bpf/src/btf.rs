//! Member offsets of a kernel struct, read from the kernel's BTF: its own
//! (`/sys/kernel/btf/vmlinux`) or a module's (`/sys/kernel/btf/<module>`, "split" BTF whose type
//! ids and strings continue the kernel's).
//!
//! The loader relocates the program against the kernel's own BTF only, and overlayfs is a
//! module on most distributions: `struct ovl_inode`'s layout is read here and handed to the
//! program through its configuration map. Written by hand: the BPF loader has no split-BTF
//! support, and only one struct's members are needed.

use std::path::Path;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// One BTF blob: its type section and string section.
struct Blob {
    types: Vec<u8>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse(data: &[u8]) -> Option<Blob> {
    if u16::from_le_bytes(data.get(0..2)?.try_into().ok()?) != MAGIC {
        return None;
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
    let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
    let types = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?.to_vec();
    let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?.to_vec();
    Some(Blob { types, strings })
}

/// The size of a type's record after its 12-byte header.
fn extra(kind: u32, vlen: usize) -> usize {
    match kind {
        1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
        3 => 12,              // ARRAY
        4 | 5 => 12 * vlen,   // STRUCT, UNION: members
        6 | 13 => 8 * vlen,   // ENUM, FUNC_PROTO
        15 | 19 => 12 * vlen, // DATASEC, ENUM64
        _ => 0,
    }
}

/// Finds `name` among the structs of `blob` and returns the byte offsets of `members`.
/// `string` resolves a name offset (split BTF: below the base's length, in the base).
fn find<'s>(
    blob: &Blob,
    string: &dyn Fn(u32) -> Option<&'s [u8]>,
    name: &str,
    members: &[&str],
) -> Option<Vec<u64>> {
    let t = &blob.types;
    let mut at = 0usize;
    while at + 12 <= t.len() {
        let (name_off, info) = (u32_at(t, at)?, u32_at(t, at + 4)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let body = at + 12;
        if kind == KIND_STRUCT && string(name_off) == Some(name.as_bytes()) {
            let mut out = Vec::with_capacity(members.len());
            for want in members {
                let off = (0..vlen).find_map(|i| {
                    let m = body + 12 * i;
                    (string(u32_at(t, m)?) == Some(want.as_bytes())).then(|| {
                        let raw = u32_at(t, m + 8)?;
                        let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                        Some(u64::from(bits) / 8)
                    })?
                })?;
                out.push(off);
            }
            return Some(out);
        }
        at = body + extra(kind, vlen);
    }
    None
}

fn cstr(strings: &[u8], off: usize) -> Option<&[u8]> {
    let s = strings.get(off..)?;
    Some(&s[..s.iter().position(|b| *b == 0)?])
}

/// The byte offsets of `members` in `struct name`, from the kernel's BTF or, failing that,
/// from module `module`'s. `None` when the struct or a member is not found.
pub fn member_offsets(btf_dir: &Path, module: &str, name: &str, members: &[&str]) -> Option<Vec<u64>> {
    let base = parse(&std::fs::read(btf_dir.join("vmlinux")).ok()?)?;
    let in_base = |off: u32| cstr(&base.strings, off as usize);
    if let Some(v) = find(&base, &in_base, name, members) {
        return Some(v);
    }
    let split = parse(&std::fs::read(btf_dir.join(module)).ok()?)?;
    let base_len = base.strings.len() as u32;
    let in_split = |off: u32| {
        if off < base_len {
            cstr(&base.strings, off as usize)
        } else {
            cstr(&split.strings, (off - base_len) as usize)
        }
    };
    find(&split, &in_split, name, members)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A struct type: (name offset, size, members as (name offset, bit offset)).
    type Struct<'a> = (u32, u32, &'a [(u32, u32)]);

    /// A BTF blob with one struct `name` whose members are at the given bit offsets.
    fn blob(strings: &[&str], types: &[Struct<'_>]) -> Vec<u8> {
        let mut s = vec![0u8];
        for x in strings {
            s.extend_from_slice(x.as_bytes());
            s.push(0);
        }
        let mut t = Vec::new();
        for (name_off, kind, members) in types {
            t.extend_from_slice(&name_off.to_le_bytes());
            t.extend_from_slice(&((kind << 24) | members.len() as u32).to_le_bytes());
            t.extend_from_slice(&8u32.to_le_bytes());
            for (mname, bits) in *members {
                t.extend_from_slice(&mname.to_le_bytes());
                t.extend_from_slice(&1u32.to_le_bytes());
                t.extend_from_slice(&bits.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(&t);
        out.extend_from_slice(&s);
        out
    }

    #[test]
    fn offsets_come_from_the_kernels_btf_or_a_modules_split_btf() {
        let dir = tempfile::tempdir().unwrap();
        // Base strings: "", "inode", "vfs_inode" (offsets 0, 1, 7).
        std::fs::write(dir.path().join("vmlinux"), blob(&["inode", "vfs_inode"], &[(1, KIND_STRUCT, &[])]))
            .unwrap();
        // Module strings continue after the base's 17 bytes: "ovl_inode" at 17, "__upperdentry" at 27.
        let module =
            blob(&["ovl_inode", "__upperdentry"], &[(17 + 1, KIND_STRUCT, &[(7, 256), (17 + 11, 5248)])]);
        std::fs::write(dir.path().join("overlay"), module).unwrap();
        assert_eq!(
            member_offsets(dir.path(), "overlay", "ovl_inode", &["vfs_inode", "__upperdentry"]),
            Some(vec![32, 656])
        );
        assert_eq!(member_offsets(dir.path(), "overlay", "ovl_inode", &["missing"]), None);
        assert_eq!(member_offsets(dir.path(), "nomodule", "ovl_inode", &["vfs_inode"]), None);
    }

    #[test]
    fn the_running_kernels_btf_is_read_where_there_is_one() {
        let dir = Path::new("/sys/kernel/btf");
        if !dir.join("vmlinux").exists() {
            return;
        }
        let v = member_offsets(dir, "none", "file", &["f_inode"]);
        assert!(v.as_ref().is_some_and(|v| v[0] > 0 && v[0] < 512), "struct file's f_inode: {v:?}");
    }
}
