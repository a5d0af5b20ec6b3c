//! Network peers for the reverse-shell tests.

use std::time::Duration;

/// The host's first global IPv4 address: a peer that is not loopback.
pub fn host_ip() -> std::net::Ipv4Addr {
    let o = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no global IPv4 address to listen on: {text}"))
}

/// Accepts one connection on `l` (within 60 s), sends `input` half a second later (a pty relay
/// may drop input that arrives before the shell reads it), and returns what comes back.
pub fn serve_once(l: std::net::TcpListener, input: &'static str) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let start = std::time::Instant::now();
        let mut conn = loop {
            match l.accept() {
                Ok((c, _)) => break c,
                Err(_) if start.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return format!("no connection: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        conn.write_all(input.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out
    })
}
