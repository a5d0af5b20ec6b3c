//! `REVERSE_SHELL`: a shell or interpreter started with its standard input or output on a
//! TCP connection to another machine. Asked only of the execs that start one (the pending
//! call is read for them anyway): three readlinks of `/proc/<tid>/fd/{0,1,2}`, and the
//! process's own TCP table only when one of them is a socket.

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
    Some(NetworkRef {
        protocol: "tcp".into(),
        local_address: c.local.ip().to_string(),
        local_port: c.local.port(),
        remote_address: c.remote.ip().to_string(),
        remote_port: c.remote.port(),
        fds,
    })
}
