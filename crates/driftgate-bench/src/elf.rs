//! The smallest static executable there is: one ELF header, one program header, and the
//! three instructions of `exit(0)`. The benchmark writes it into its scratch image so that it
//! needs no toolchain or package on the node, and so that what is measured is the cost of an
//! exec rather than of a program.

const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = 0x3e;
/// mov eax, 60 (exit); mov edi, STATUS; syscall
#[cfg(target_arch = "x86_64")]
const CODE: [u8; 12] = [0xb8, 0x3c, 0, 0, 0, 0xbf, 0, 0, 0, 0, 0x0f, 0x05];
/// Where in [`CODE`] the exit status byte is.
#[cfg(target_arch = "x86_64")]
const STATUS_AT: usize = 6;

#[cfg(target_arch = "aarch64")]
const MACHINE: u16 = 0xb7;
/// mov x8, #93 (exit); mov x0, #STATUS; svc #0
#[cfg(target_arch = "aarch64")]
const CODE: [u8; 12] = [0xa8, 0x0b, 0x80, 0xd2, 0x00, 0x00, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4];
/// The exit status is bits 5..21 of `mov x0`: the low 3 bits of the status land in the top of
/// byte 4; statuses are kept to multiples of 8 there (see [`exit_with`]).
#[cfg(target_arch = "aarch64")]
const STATUS_AT: usize = 4;

/// Builds the executable, padded with zeros to `size` bytes (at least its natural size).
pub fn exit0(size: usize) -> Vec<u8> {
    exit_with(0, size)
}

/// Offset of the byte that holds the exit status in [`exit_with`]'s output: two programs that
/// differ only there differ in one byte (the check-then-exec race test flips it).
pub const fn status_offset() -> usize {
    EHDR + PHDR + STATUS_AT
}

/// The executable that exits with `status`, padded as in [`exit0`]. On aarch64 the status is
/// encoded from bit 5 of the byte at [`status_offset`], so only its low 3 bits are kept.
pub fn exit_with(status: u8, size: usize) -> Vec<u8> {
    let code_off = EHDR + PHDR;
    let total = (code_off + CODE.len()).max(size);
    let mut b = Vec::with_capacity(total);
    // ELF header
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&MACHINE.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    b.extend_from_slice(&(BASE + code_off as u64).to_le_bytes()); // e_entry
    b.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    b.extend_from_slice(&(EHDR as u16).to_le_bytes());
    b.extend_from_slice(&(PHDR as u16).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    b.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // Program header: one PT_LOAD, R+X, the whole file.
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&5u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&BASE.to_le_bytes());
    b.extend_from_slice(&BASE.to_le_bytes());
    b.extend_from_slice(&((code_off + CODE.len()) as u64).to_le_bytes()); // p_filesz
    b.extend_from_slice(&((code_off + CODE.len()) as u64).to_le_bytes()); // p_memsz
    b.extend_from_slice(&0x1000u64.to_le_bytes());
    debug_assert_eq!(b.len(), code_off);
    let mut code = CODE;
    if cfg!(target_arch = "x86_64") {
        code[STATUS_AT] = status;
    } else {
        code[STATUS_AT] |= (status & 7) << 5;
    }
    b.extend_from_slice(&code);
    b.resize(total, 0);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_tiny_executable_runs_and_exits_zero() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1 << 20] {
            let p = dir.path().join(format!("exit0-{size}"));
            std::fs::write(&p, exit0(size)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, exit0(size).len());
            let st = std::process::Command::new(&p).status().unwrap();
            assert!(st.success(), "{st:?}");
        }
        let p = dir.path().join("exit5");
        let (a, b) = (exit0(0), exit_with(5, 0));
        assert_eq!(a.len(), b.len());
        let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(differ, vec![status_offset()], "one byte apart");
        std::fs::write(&p, b).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(std::process::Command::new(&p).status().unwrap().code(), Some(5));
    }
}
