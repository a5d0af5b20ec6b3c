//! TCP connections as `/proc/<pid>/net/tcp` and `tcp6` list them (the process's own network
//! namespace), and whether a peer is remote: what a reverse-shell check needs to name the
//! other end of a shell's standard input or output.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One line of `/proc/<pid>/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state (`01` established, `0A` listening, ...).
    pub state: u8,
    pub inode: u64,
}

/// `TCP_ESTABLISHED` in the kernel's numbering.
pub const ESTABLISHED: u8 = 0x01;

/// Parses the text of `/proc/<pid>/net/tcp` (`v6` false) or `tcp6` (`v6` true). Lines that do
/// not parse (the header) are skipped.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<TcpEntry> {
    text.lines().filter_map(|l| entry(l, v6)).collect()
}

fn entry(line: &str, v6: bool) -> Option<TcpEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    Some(TcpEntry {
        local: addr(f[1], v6)?,
        remote: addr(f[2], v6)?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        inode: f[9].parse().ok()?,
    })
}

/// `0100007F:0277`: the address as the kernel printed its network-order words, each as a
/// host-order integer; the port as a number.
fn addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
    };
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether `peer` is another machine's: not loopback (also as an IPv4-mapped IPv6 address),
/// not unspecified (a listening socket has no peer).
pub fn is_remote(peer: &SocketAddr) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    !(ip.is_loopback() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_tcp_and_tcp6_parse_and_loopback_is_not_remote() {
        let le = cfg!(target_endian = "little");
        // 127.0.0.1:631 listening; 10.0.2.15:40000 -> 203.0.113.7:4444 established.
        let (lo, here, there) =
            if le { ("0100007F", "0F02000A", "077100CB") } else { ("7F000001", "0A00020F", "CB007107") };
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20000 1 0 100 0 0 10 0\n\
             1: {here}:9C40 {there}:115C 01 00000000:00000000 00:00000000 00000000     0        0 31337 1 0 20 4 30 10 -1\n"
        );
        let e = parse_proc_net_tcp(&text, false);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].local, "127.0.0.1:631".parse().unwrap());
        assert_eq!((e[0].state, e[0].inode), (0x0A, 20000));
        assert!(!is_remote(&e[0].remote), "a listening socket has no peer");
        assert_eq!(e[1].remote, "203.0.113.7:4444".parse().unwrap());
        assert_eq!(e[1].local, "10.0.2.15:40000".parse().unwrap());
        assert!(is_remote(&e[1].remote) && e[1].state == ESTABLISHED);
        // ::1 and an IPv4-mapped loopback are local; a global IPv6 address is not.
        let v6 = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert!(!is_remote(&v6("[::1]:22")) && !is_remote(&v6("[::ffff:127.0.0.1]:22")));
        assert!(is_remote(&v6("[2001:db8::1]:22")) && is_remote(&v6("[::ffff:192.0.2.1]:22")));
        assert!(parse_proc_net_tcp("garbage\n0: zz:0 00:0 01 a b c d e f\n", false).is_empty());
    }

    #[test]
    fn this_processs_own_connection_is_found_in_its_table() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let text = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
        let e = parse_proc_net_tcp(&text, false);
        let mine = e.iter().find(|e| e.local == c.local_addr().unwrap()).expect("the connection is listed");
        assert_eq!(mine.remote, l.local_addr().unwrap());
        assert!(!is_remote(&mine.remote));
    }
}
