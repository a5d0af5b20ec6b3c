//! A PID namespace's init process, as the kernel layer names a namespace: inode numbers of
//! namespaces are reused as soon as one is freed, the start time of its init is not.

use crate::proc::{all_pids, ns_id, read_status};

/// The process (as this process numbers it) that is PID 1 of the PID namespace process `pid`
/// is in: up `pid`'s parents while they are in that namespace, else a search of `/proc` (a
/// process that entered the namespace with `setns`, such as `docker exec`'s, has its parent
/// outside it).
pub fn init_of(pid: i32) -> Option<i32> {
    let ns = ns_id(pid, "pid")?;
    let mut cur = pid;
    for _ in 0..4096 {
        let st = read_status(cur)?;
        if st.ns_pid == Some(1) {
            return (ns_id(cur, "pid") == Some(ns)).then_some(cur);
        }
        if st.ppid <= 0 || ns_id(st.ppid, "pid") != Some(ns) {
            break;
        }
        cur = st.ppid;
    }
    all_pids()
        .into_iter()
        .find(|p| ns_id(*p, "pid") == Some(ns) && read_status(*p).is_some_and(|s| s.ns_pid == Some(1)))
}

/// When process `pid` started: clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&text)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command (field 2) is in parentheses and may hold
/// anything, `)` and spaces included: the fields are counted after its last `)`.
pub fn parse_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the command come field 3 (state) onwards: field 22 is the 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Nanoseconds per clock tick (`USER_HZ`, what `/proc/<pid>/stat` counts in).
pub fn tick_ns() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(10_000_000, |t| 1_000_000_000 / t as u64)
}

/// The first child of process `pid`, once it has one (tests: the processes `unshare` starts).
#[cfg(test)]
pub(crate) fn first_child(pid: i32) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next().and_then(|k| k.parse::<i32>().ok()) {
            return k;
        }
        assert!(std::time::Instant::now() < deadline, "process {pid} started no child");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_counted_after_the_last_parenthesis() {
        let line = b"4242 (a) b) c (d) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_ticks(line), Some(987654));
        assert_eq!(parse_start_ticks(b"1 (x) S 0"), None);
        assert_eq!(parse_start_ticks(b"no parenthesis"), None);
    }

    #[test]
    fn the_init_of_a_new_pid_namespace_is_found() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (a new PID namespace)");
            return;
        }
        // `unshare -pf` forks the namespace's init, which runs sleep.
        let mut child = std::process::Command::new("unshare")
            .args(["-pf", "--kill-child", "sh", "-c", "sleep 30 & wait"])
            .spawn()
            .expect("unshare");
        let unshare = child.id() as i32;
        let sh = first_child(unshare);
        let sleep = first_child(sh);
        assert_eq!(init_of(sleep), Some(sh), "sleep's init is the shell");
        assert!(start_ticks(sh).is_some());
        assert!(start_ticks(sh).unwrap() >= start_ticks(unshare).unwrap());
        assert!(tick_ns() > 0);
        let _ = child.kill();
        let _ = child.wait();
    }
}
