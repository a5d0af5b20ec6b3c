//! The environment of a pending exec, read the way its arguments are ([`crate::proc`]): the
//! `envp` array and strings, copied out of the process with `process_vm_readv` while the exec
//! is held. Only the variables asked for are kept, and a hostile environment (huge, or with
//! a string where reading fails) is an error, never a partial answer.

use nix::unistd::Pid;

use crate::remote::{read_remote, read_remote_cstr};

/// How many entries are looked at; an environment with more is an error.
pub const MAX_ENV_ENTRIES: usize = 4096;
/// The longest value kept; a longer value of a variable asked for is an error.
pub const MAX_ENV_VALUE: usize = 4096;

/// Every value of the variables `names` in the environment at `envp` of thread `tid`'s pending
/// exec, in the order they appear (a variable set twice gives two values). `Err` says why it
/// could not be read whole.
pub fn exec_env(tid: i32, envp: u64, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let pid = Pid::from_raw(tid);
    if envp == 0 {
        return Ok(Vec::new()); // a null envp is an empty environment
    }
    let ptrs = pointers(pid, envp)?;
    // The strings lie together above the pointer array on a new process's stack: one read of
    // the span they are in serves all but strays (each read on its own).
    let start = ptrs.iter().copied().min().unwrap_or(0);
    let mut window = vec![0u8; WINDOW];
    let got = if ptrs.is_empty() { 0 } else { read_remote(pid, start, &mut window).unwrap_or(0) };
    let window = &window[..got];
    let longest = names.iter().map(|n| n.len()).max().unwrap_or(0) + 1;
    let mut out = Vec::new();
    for (idx, &p) in ptrs.iter().enumerate() {
        let local = p
            .checked_sub(start)
            .and_then(|off| window.get(off as usize..))
            .and_then(|rest| rest.iter().position(|&b| b == 0).map(|z| &rest[..z]));
        let head: Vec<u8> = match local {
            Some(s) => s[..s.len().min(longest)].to_vec(),
            None => read_remote_cstr(pid, p, longest)
                .ok_or_else(|| format!("its environment's entry {} could not be read", idx + 1))?,
        };
        let Some(name) = names
            .iter()
            .find(|n| head.len() > n.len() && head.starts_with(n.as_bytes()) && head[n.len()] == b'=')
        else {
            continue;
        };
        let budget = name.len() + 1 + MAX_ENV_VALUE + 1;
        let full = match local {
            Some(s) => s[..s.len().min(budget)].to_vec(),
            None => read_remote_cstr(pid, p, budget)
                .ok_or_else(|| format!("its environment's {name} could not be read"))?,
        };
        if full.len() >= budget {
            return Err(format!("its environment's {name} is longer than {MAX_ENV_VALUE} bytes"));
        }
        out.push((name.to_string(), full[name.len() + 1..].to_vec()));
    }
    Ok(out)
}

/// How much of the strings' span is read at once.
const WINDOW: usize = 64 * 1024;

/// The `envp` array's pointers, up to its terminating null.
fn pointers(pid: Pid, envp: u64) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8 * 64];
    loop {
        let base = envp.checked_add((out.len() * 8) as u64).ok_or("its environment pointer overflows")?;
        let n = read_remote(pid, base, &mut buf).ok_or("its environment could not be read")?;
        if n < 8 {
            return Err("its environment could not be read".into());
        }
        for chunk in buf[..n - n % 8].chunks_exact(8) {
            let p = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            if p == 0 {
                return Ok(out);
            }
            if out.len() >= MAX_ENV_ENTRIES {
                return Err(format!("its environment has more than {MAX_ENV_ENTRIES} entries"));
            }
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_asked_for_are_read_from_an_environment_array() {
        let strings: Vec<std::ffi::CString> =
            ["HOME=/root", "PATH=/bin:/usr/bin", "HOMEX=no", "BASH_ENV=/a", "BASH_ENV=/b"]
                .iter()
                .map(|s| std::ffi::CString::new(*s).unwrap())
                .collect();
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let me = nix::unistd::gettid().as_raw();
        let got = exec_env(me, ptrs.as_ptr() as u64, &["HOME", "BASH_ENV", "ENV"]).unwrap();
        let want: Vec<(String, Vec<u8>)> = vec![
            ("HOME".into(), b"/root".to_vec()),
            ("BASH_ENV".into(), b"/a".to_vec()),
            ("BASH_ENV".into(), b"/b".to_vec()),
        ];
        assert_eq!(got, want);
        assert_eq!(exec_env(me, 0, &["HOME"]).unwrap(), vec![]);
        // A long value of a variable asked for is an error; of another, it is skipped.
        let long = std::ffi::CString::new(format!("ENV={}", "x".repeat(MAX_ENV_VALUE + 10))).unwrap();
        let ptrs: [*const libc::c_char; 2] = [long.as_ptr(), std::ptr::null()];
        assert!(exec_env(me, ptrs.as_ptr() as u64, &["ENV"]).is_err());
        assert_eq!(exec_env(me, ptrs.as_ptr() as u64, &["HOME"]).unwrap(), vec![]);
        // An entry that cannot be read (an unmapped address) is an error.
        let ptrs: [*const libc::c_char; 2] = [8 as *const libc::c_char, std::ptr::null()];
        assert!(exec_env(me, ptrs.as_ptr() as u64, &["HOME"]).is_err());
    }
}
