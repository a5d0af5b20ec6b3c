//! A process's open files as `/proc` shows them: what an fd is open on, its sockets, and the
//! TCP connections of its network namespace.

use super::dir::proc_dir;

/// The inode of the socket open at fd `fd` of `pid` (its link reads `socket:[N]`), or `None`
/// when that fd is not a socket (a pipe, a terminal, a file) or cannot be read.
pub fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    parse_socket_link(&fd_link(pid, fd)?)
}

/// What fd `fd` of `pid` is open on (`/dev/pts/0`, `pipe:[N]`, a path).
pub fn fd_link(pid: i32, fd: i32) -> Option<Vec<u8>> {
    let dir = proc_dir()?;
    let link = nix::fcntl::readlinkat(dir, format!("{pid}/fd/{fd}").as_str()).ok()?;
    Some(link.into_encoded_bytes())
}

/// The socket inode of an fd link (`socket:[N]`).
pub fn parse_socket_link(link: &[u8]) -> Option<u64> {
    std::str::from_utf8(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?).ok()?.parse().ok()
}

/// The sockets among the first `max` fds of `pid`: (fd, socket inode).
pub fn socket_fds(pid: i32, max: usize) -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten()
        .take(max)
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            Some((fd, socket_inode(pid, fd)?))
        })
        .collect()
}

/// Every TCP connection `pid`'s network namespace lists (`tcp` and `tcp6`).
pub fn tcp_connections(pid: i32) -> Vec<driftgate_core::net::TcpEntry> {
    [("tcp", false), ("tcp6", true)]
        .into_iter()
        .filter_map(|(name, v6)| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).ok()?;
            Some(driftgate_core::net::parse_proc_net_tcp(&text, v6))
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connected_socket_is_found_by_its_fd_in_the_process_table() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let me = std::process::id() as i32;
        let ino = socket_inode(me, c.as_raw_fd()).expect("a socket");
        let t = tcp_connections(me).into_iter().find(|e| e.inode == ino).expect("listed");
        assert_eq!((t.local, t.remote), (c.local_addr().unwrap(), l.local_addr().unwrap()));
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(socket_inode(me, f.as_raw_fd()), None, "a file is no socket");
    }
}
