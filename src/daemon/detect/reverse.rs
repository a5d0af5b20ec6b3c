//! `REVERSE_SHELL`: a shell or interpreter started with its standard input or output on a
//! TCP connection to another machine. Asked only of the execs that start one (the pending
//! call is read for them anyway): two readlinks of `/proc/<tid>/fd/{0,1}` (and `2` when one
//! is a socket), and the process's own TCP table only when one of them is a socket. A shell on a pseudo-terminal
//! whose parent in the container holds such a connection is one too, behind a relay
//! (Python's `pty.spawn`, `socat exec:sh,pty tcp:...`): the parent's fds are then looked at.

use driftgate_core::finding::NetworkRef;
use driftgate_core::net::{is_remote, ESTABLISHED};
use driftgate_sys::proc;

/// What thread `tid`'s standard streams are open on: its input and output (two readlinks),
/// and its error only when one of them is a socket (to say which fds the connection is on).
pub fn stdio_links(tid: i32) -> [Option<Vec<u8>>; 3] {
    let (stdin, stdout) = (proc::fd_link(tid, 0), proc::fd_link(tid, 1));
    let socket = |l: &Option<Vec<u8>>| l.as_deref().is_some_and(|l| l.starts_with(b"socket:["));
    let stderr = if socket(&stdin) || socket(&stdout) { proc::fd_link(tid, 2) } else { None };
    [stdin, stdout, stderr]
}

/// Whether standard input (`links` from [`stdio_links`]) is a pseudo-terminal.
pub fn on_terminal(links: &[Option<Vec<u8>>; 3]) -> bool {
    links[0].as_ref().is_some_and(|l| l.starts_with(b"/dev/pts/"))
}

/// The remote TCP connection thread `tid`'s standard streams (`links`) are on, if any: its
/// TCP tables are read only when one of them is a socket.
pub fn remote_stdio(tid: i32, links: &[Option<Vec<u8>>; 3]) -> Option<NetworkRef> {
    let sockets: Vec<(u8, u64)> = (0..3u8)
        .filter_map(|fd| Some((fd, proc::parse_socket_link(links[usize::from(fd)].as_deref()?)?)))
        .collect();
    if sockets.is_empty() {
        return None;
    }
    let table = proc::tcp_connections(tid);
    let c = table.iter().find(|c| {
        sockets.iter().any(|(_, ino)| *ino == c.inode) && c.state == ESTABLISHED && is_remote(&c.remote)
    })?;
    let fds = sockets.iter().filter(|(_, ino)| *ino == c.inode).map(|(fd, _)| *fd).collect();
    Some(network(c, fds, None))
}

/// A finding's view of connection `c`.
fn network(c: &driftgate_core::net::TcpEntry, fds: Vec<u8>, relay_pid: Option<i32>) -> NetworkRef {
    NetworkRef {
        protocol: "tcp".into(),
        local_address: c.local.ip().to_string(),
        local_port: c.local.port(),
        remote_address: c.remote.ip().to_string(),
        remote_port: c.remote.port(),
        fds,
        relay_pid,
    }
}

/// How many of a relay's fds are looked at.
const MAX_RELAY_FDS: usize = 256;

/// The remote TCP connection that `parent` holds on any of its first fds, for a shell on a
/// pseudo-terminal: a relayed shell. The parent's TCP tables are read once, and only when it
/// has a socket.
pub fn relayed_stdio(parent: i32) -> Option<NetworkRef> {
    let sockets: Vec<u64> = proc::socket_fds(parent, MAX_RELAY_FDS).into_iter().map(|(_, ino)| ino).collect();
    if sockets.is_empty() {
        return None;
    }
    proc::tcp_connections(parent)
        .into_iter()
        .find(|c| sockets.contains(&c.inode) && c.state == ESTABLISHED && is_remote(&c.remote))
        .map(|c| network(&c, Vec::new(), Some(parent)))
}
