//! `REVERSE_SHELL`: a shell or interpreter started with its standard input or output on a
//! TCP connection to another machine. Asked only of the execs that start one (the pending
//! call is read for them anyway): three readlinks of `/proc/<tid>/fd/{0,1,2}`, and the
//! process's own TCP table only when one of them is a socket. A shell on a pseudo-terminal
//! whose parent in the container holds such a connection is one too, behind a relay
//! (Python's `pty.spawn`, `socat exec:sh,pty tcp:...`): the parent's fds are then looked at.

use driftgate_core::finding::NetworkRef;
use driftgate_core::net::{is_remote, ESTABLISHED};
use driftgate_sys::proc;

/// The remote TCP connection thread `tid`'s standard streams are on, if any.
pub fn remote_stdio(tid: i32) -> Option<NetworkRef> {
    let mut found: Option<(u64, driftgate_core::net::TcpEntry)> = None;
    let mut fds = Vec::new();
    for fd in 0..3u8 {
        let Some(ino) = proc::socket_inode(tid, i32::from(fd)) else { continue };
        let conn = match found {
            Some((seen, c)) if seen == ino => Some(c),
            _ => proc::tcp_connection(tid, ino),
        };
        let Some(c) = conn.filter(|c| c.state == ESTABLISHED && is_remote(&c.remote)) else { continue };
        found.get_or_insert((ino, c));
        fds.push(fd);
    }
    let (_, c) = found?;
    Some(network(&c, fds, None))
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

/// The remote TCP connection that `parent` holds on any of its first fds, when the standard
/// input of thread `tid` (a shell about to start) is a pseudo-terminal: a relayed shell. The
/// parent's TCP tables are read once, and only when it has a socket.
pub fn relayed_stdio(tid: i32, parent: i32) -> Option<NetworkRef> {
    if !proc::fd_link(tid, 0)?.starts_with(b"/dev/pts/") {
        return None;
    }
    let sockets: Vec<u64> = proc::socket_fds(parent, MAX_RELAY_FDS).into_iter().map(|(_, ino)| ino).collect();
    if sockets.is_empty() {
        return None;
    }
    proc::tcp_connections(parent)
        .into_iter()
        .find(|c| sockets.contains(&c.inode) && c.state == ESTABLISHED && is_remote(&c.remote))
        .map(|c| network(&c, Vec::new(), Some(parent)))
}
