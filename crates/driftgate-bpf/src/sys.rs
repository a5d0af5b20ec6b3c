//! The `bpf(2)` calls the daemon makes itself: map elements (one call each, from any thread)
//! and a program's run statistics. Written by hand: aya 0.14's typed maps need `&mut` access
//! and its program info has no run statistics.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{Error, RunStats};

pub(crate) const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;

/// `union bpf_attr` for the map element commands.
#[repr(C)]
pub(crate) struct MapElem {
    pub(crate) map_fd: u32,
    pub(crate) pad: u32,
    pub(crate) key: u64,
    /// `value`, or `next_key` for BPF_MAP_GET_NEXT_KEY.
    pub(crate) value: u64,
    pub(crate) flags: u64,
}

pub(crate) fn bpf(cmd: libc::c_int, attr: &MapElem) -> Result<(), nix::errno::Errno> {
    // SAFETY: bpf(2) with a map command reads `size_of::<MapElem>()` bytes of `attr`, a valid
    // repr(C) prefix of `union bpf_attr` for these commands; the key and value pointers in it
    // point at live buffers of the sizes the map was created with (the callers' typed values).
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *const MapElem, std::mem::size_of::<MapElem>() as u32)
    };
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

pub(crate) fn update<K, V>(fd: BorrowedFd<'_>, key: &K, value: &V) -> Result<(), Error> {
    let attr = MapElem {
        map_fd: fd.as_raw_fd() as u32,
        pad: 0,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &attr).map_err(|errno| Error::Sys { call: "bpf(BPF_MAP_UPDATE_ELEM)", errno })
}

pub(crate) fn lookup<K, V: Default>(fd: BorrowedFd<'_>, key: &K) -> Result<V, Error> {
    let mut v = V::default();
    let attr = MapElem {
        map_fd: fd.as_raw_fd() as u32,
        pad: 0,
        key: key as *const K as u64,
        value: &mut v as *mut V as u64,
        flags: 0,
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &attr)
        .map_err(|errno| Error::Sys { call: "bpf(BPF_MAP_LOOKUP_ELEM)", errno })?;
    Ok(v)
}

pub(crate) fn remove<K>(fd: BorrowedFd<'_>, key: &K) {
    let attr =
        MapElem { map_fd: fd.as_raw_fd() as u32, pad: 0, key: key as *const K as u64, value: 0, flags: 0 };
    let _ = bpf(BPF_MAP_DELETE_ELEM, &attr);
}

pub(crate) fn get_next_key<K>(fd: BorrowedFd<'_>, key: Option<&K>, next: &mut K) -> bool {
    let attr = MapElem {
        map_fd: fd.as_raw_fd() as u32,
        pad: 0,
        key: key.map_or(0, |k| k as *const K as u64),
        value: next as *mut K as u64,
        flags: 0,
    };
    bpf(BPF_MAP_GET_NEXT_KEY, &attr).is_ok()
}

const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;

/// The run statistics of the program with id `id`.
pub(crate) fn prog_run_stats(id: u32) -> Option<RunStats> {
    use std::os::fd::FromRawFd;
    // `union bpf_attr` for BPF_PROG_GET_FD_BY_ID: prog_id, next_id, open_flags.
    let get = [id, 0u32, 0u32, 0u32];
    // SAFETY: bpf(2) reads `size_of_val(&get)` bytes of a live array laid out as the command's
    // prefix of `union bpf_attr`; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, get.as_ptr(), std::mem::size_of_val(&get) as u32)
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new fd returned by the kernel, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `bpf_prog_info` is plain old data (integers and arrays): all zeros is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: bpf(2) reads the attribute (a live repr(C) prefix of `union bpf_attr` for this
    // command) and writes at most `info_len` bytes into `info`, which is that large.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            std::mem::size_of::<InfoAttr>() as u32,
        )
    };
    if r < 0 {
        return None;
    }
    let name: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    Some(RunStats {
        name: String::from_utf8_lossy(&name).into_owned(),
        runs: info.run_cnt,
        run_ns: info.run_time_ns,
    })
}
