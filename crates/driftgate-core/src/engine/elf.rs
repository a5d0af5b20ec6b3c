//! What an ELF header says about a file, from its first bytes: enough to tell a dynamic
//! loader (a shared object with no interpreter of its own) from a program, and to learn which
//! loader a program asks for. Pure: bytes in, facts out; anything malformed is "not ELF".

/// `e_type` values.
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;

/// The facts about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFacts {
    pub e_type: u16,
    /// Whether the program headers (as far as `head` holds them) have a `PT_INTERP`.
    /// `None` when they lie beyond `head`: not known.
    pub has_interp: Option<bool>,
    /// The interpreter path, when it lies within `head`.
    pub interp: Option<Vec<u8>>,
}

/// Whether a file starting with `head` (at least its first 18 bytes) is a shared object the
/// dynamic loader would map: ELF, `e_type` `ET_DYN`. Position-independent programs are `ET_DYN`
/// too, and count: musl's loader maps them as libraries. `ET_EXEC`, relocatable objects and
/// anything else are not loaded by `dlopen` or `LD_PRELOAD`.
pub fn is_shared_object(head: &[u8]) -> bool {
    if head.len() < 18 || &head[..4] != b"\x7fELF" {
        return false;
    }
    let b = [head[16], head[17]];
    let e_type = if head[5] == 2 { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) };
    e_type == ET_DYN
}

/// Parses the ELF header and program headers found in `head` (the first bytes of a file;
/// 4 KiB holds them for ordinary files). `None` when `head` is not an ELF file.
pub fn parse(head: &[u8]) -> Option<ElfFacts> {
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match head[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = head.get(o..o + 2)?.try_into().ok()?;
        Some(if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = head.get(o..o + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(o..o + 8)?.try_into().ok()?;
        Some(if le { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    };
    let e_type = u16_at(16)?;
    let (phoff, phentsize, phnum) = if class64 {
        (u64_at(32)?, u16_at(54)? as u64, u16_at(56)? as u64)
    } else {
        (u32_at(28)? as u64, u16_at(42)? as u64, u16_at(44)? as u64)
    };
    let min_ent = if class64 { 56 } else { 32 };
    if phnum == 0 {
        return Some(ElfFacts { e_type, has_interp: Some(false), interp: None });
    }
    if phentsize < min_ent {
        return None;
    }
    let end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    if end > head.len() as u64 {
        return Some(ElfFacts { e_type, has_interp: None, interp: None });
    }
    for i in 0..phnum {
        let o = (phoff + i * phentsize) as usize;
        if u32_at(o)? != PT_INTERP {
            continue;
        }
        let (off, size) = if class64 {
            (u64_at(o + 8)?, u64_at(o + 32)?)
        } else {
            (u32_at(o + 4)? as u64, u32_at(o + 16)? as u64)
        };
        let interp = off.checked_add(size).filter(|e| *e <= head.len() as u64 && size > 0).map(|_| {
            head[off as usize..(off + size) as usize].split(|&b| b == 0).next().unwrap_or(&[]).to_vec()
        });
        return Some(ElfFacts { e_type, has_interp: Some(true), interp });
    }
    Some(ElfFacts { e_type, has_interp: Some(false), interp: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF header with `phdrs` program headers.
    pub(crate) fn elf64(e_type: u16, phdrs: &[(u32, &[u8])]) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        let data_start = 64 + 56 * phdrs.len();
        let mut data = Vec::new();
        for (p_type, content) in phdrs {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&p_type.to_le_bytes());
            let off = (data_start + data.len()) as u64;
            ph[8..16].copy_from_slice(&off.to_le_bytes());
            ph[32..40].copy_from_slice(&(content.len() as u64).to_le_bytes());
            h.extend_from_slice(&ph);
            data.extend_from_slice(content);
        }
        h.extend_from_slice(&data);
        h
    }

    #[test]
    fn programs_loaders_and_garbage() {
        let prog = elf64(ET_DYN, &[(6, b""), (3, b"/lib64/ld-linux-x86-64.so.2\0")]);
        let f = parse(&prog).unwrap();
        assert_eq!(f.e_type, ET_DYN);
        assert_eq!(f.has_interp, Some(true));
        assert_eq!(f.interp.as_deref(), Some(&b"/lib64/ld-linux-x86-64.so.2"[..]));
        let loader = elf64(ET_DYN, &[(1, b""), (2, b"")]);
        assert_eq!(parse(&loader).unwrap().has_interp, Some(false));
        let static_exec = elf64(ET_EXEC, &[(1, b"")]);
        assert_eq!(
            parse(&static_exec).unwrap(),
            ElfFacts { e_type: ET_EXEC, has_interp: Some(false), interp: None }
        );
        assert!(parse(b"#!/bin/sh\n").is_none());
        assert!(parse(&prog[..40]).is_none(), "truncated header");
        let mut beyond = prog.clone();
        beyond[32..40].copy_from_slice(&100_000u64.to_le_bytes());
        assert_eq!(parse(&beyond).unwrap().has_interp, None, "program headers out of reach: unknown");
        let mut bad = prog.clone();
        bad[54..56].copy_from_slice(&8u16.to_le_bytes());
        assert!(parse(&bad).is_none(), "phentsize too small");
        let mut huge = prog;
        huge[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(parse(&huge).unwrap().has_interp, None);
    }

    #[test]
    fn shared_objects_are_et_dyn_elf_files() {
        let lib = elf64(ET_DYN, &[(1, b"")]);
        assert!(is_shared_object(&lib));
        assert!(is_shared_object(&lib[..18]), "the type is all it needs");
        assert!(!is_shared_object(&elf64(ET_EXEC, &[(1, b"")])));
        assert!(!is_shared_object(&elf64(1, &[])), "a relocatable object is not loaded");
        assert!(!is_shared_object(&lib[..17]));
        assert!(!is_shared_object(b"#!/bin/sh\nexit 0\n"));
        assert!(!is_shared_object(b""));
        let mut be = lib.clone();
        be[5] = 2;
        be[16..18].copy_from_slice(&ET_DYN.to_be_bytes());
        assert!(is_shared_object(&be), "big-endian");
        let host = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap_or_default();
        if !host.is_empty() {
            assert!(is_shared_object(&host[..64]));
        }
    }

    #[test]
    fn the_test_machines_busybox_is_classified() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else { return };
        let f = parse(&bytes[..4096.min(bytes.len())]).expect("busybox is ELF");
        assert_eq!(f.has_interp, Some(false), "busybox-static has no interpreter");
    }
}
