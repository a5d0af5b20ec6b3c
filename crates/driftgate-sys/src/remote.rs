//! Reading another process's memory (`process_vm_readv`): the argument and environment
//! arrays of a pending exec, and the strings they point to, bounded.

use std::io::IoSliceMut;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

/// Bounds on what is copied out of a process: a hostile process can pass huge argument lists.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_BYTES: usize = 4096;
pub const MAX_TOTAL_ARG_BYTES: usize = 64 * 1024;

/// Arguments as read, and whether the read stopped at one of its bounds.
pub type Args = (Vec<Vec<u8>>, bool);

/// The `argv` array at `argv` in process `pid`, bounded by [`MAX_ARGS`], [`MAX_ARG_BYTES`]
/// and [`MAX_TOTAL_ARG_BYTES`]: the strings, and whether a bound cut the list.
pub(crate) fn read_argv(pid: Pid, argv: u64) -> Option<Args> {
    let mut args = Vec::new();
    let mut total = 0usize;
    let mut ptrs = [0u8; 8 * 32];
    let mut idx = 0usize;
    let mut truncated = false;
    'outer: loop {
        if args.len() >= MAX_ARGS {
            // More arguments follow unless the next pointer is the terminating null.
            truncated = true;
            break;
        }
        let base = argv.checked_add((idx * 8) as u64)?;
        let n = read_remote(pid, base, &mut ptrs)?;
        if n < 8 {
            return None;
        }
        for chunk in ptrs[..n - n % 8].chunks_exact(8) {
            let p = u64::from_ne_bytes(chunk.try_into().ok()?);
            idx += 1;
            if p == 0 {
                break 'outer;
            }
            if args.len() >= MAX_ARGS {
                truncated = true;
                break 'outer;
            }
            let budget = MAX_ARG_BYTES.min(MAX_TOTAL_ARG_BYTES.saturating_sub(total));
            if budget == 0 {
                truncated = true;
                break 'outer;
            }
            let s = read_remote_cstr(pid, p, budget)?;
            // A string as long as the budget was cut (or ended exactly there: rare, and saying
            // "truncated" then is harmless).
            truncated |= s.len() >= budget;
            total += s.len();
            args.push(s);
        }
    }
    Some((args, truncated))
}

/// Copies up to `buf.len()` bytes from `addr` in process `pid`, stopping at the first
/// unmapped page. Returns how many bytes were copied.
pub(crate) fn read_remote(pid: Pid, addr: u64, buf: &mut [u8]) -> Option<usize> {
    const PAGE: u64 = 4096;
    let mut done = 0usize;
    while done < buf.len() {
        let a = addr + done as u64;
        let to_page_end = (PAGE - (a % PAGE)) as usize;
        let want = to_page_end.min(buf.len() - done);
        let remote = [RemoteIoVec { base: a as usize, len: want }];
        let mut local = [IoSliceMut::new(&mut buf[done..done + want])];
        match process_vm_readv(pid, &mut local, &remote) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    (done > 0).then_some(done)
}

/// The NUL-terminated string at `addr` in process `pid`, at most `max` bytes of it.
pub(crate) fn read_remote_cstr(pid: Pid, addr: u64, max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while out.len() < max {
        let want = buf.len().min(max - out.len());
        let n = read_remote(pid, addr + out.len() as u64, &mut buf[..want])?;
        if let Some(z) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..z]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_arguments_can_be_read_through_process_vm_readv() {
        // Build an argv array in our own memory and read it back through the remote path.
        let a = c"first";
        let b = c"second arg";
        let argv: [*const libc::c_char; 3] = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        let pid = Pid::this();
        let mut ptrs = [0u8; 24];
        let n = read_remote(pid, argv.as_ptr() as u64, &mut ptrs).unwrap();
        assert_eq!(n, 24);
        let p0 = u64::from_ne_bytes(ptrs[..8].try_into().unwrap());
        assert_eq!(read_remote_cstr(pid, p0, 100).unwrap(), b"first");
        assert_eq!(read_remote_cstr(pid, p0, 3).unwrap(), b"fir");
    }
}
