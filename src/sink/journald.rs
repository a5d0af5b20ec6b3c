//! Structured journal entries over journald's native protocol.
//!
//! Written by hand (about a hundred lines) because findings need exact control that the
//! crates don't give: a chosen `PRIORITY` and `MESSAGE_ID` per entry, arbitrary bytes in field
//! values (a hostile file name), and a configurable socket path so tests can run their own
//! journald. Values containing a newline use the protocol's length-prefixed form, so a name
//! cannot inject a field; entries too large for a datagram go through a sealed memfd, as
//! journald requires.

use std::io::{IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// An entry under construction.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    buf: Vec<u8>,
}

impl Entry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field. Names must be `[A-Z0-9_]`, not starting with `_` (checked here, since a
    /// bad name would make journald drop the whole entry).
    pub fn field(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        debug_assert!(valid_name(name), "bad journal field name {name}");
        if !valid_name(name) {
            return self;
        }
        let value = value.as_ref();
        self.buf.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            self.buf.push(b'\n');
            self.buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.buf.push(b'=');
        }
        self.buf.extend_from_slice(value);
        self.buf.push(b'\n');
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('_')
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A way to journald's socket. Each entry is sent to the socket's path (the socket is not
/// connected), so a journald that restarts is reached again without reconnecting. Sends never
/// block: a journald that is not reading makes them fail with `WouldBlock` at once, and the
/// sink counts them (every finding is in the spool either way).
#[derive(Debug)]
pub struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    /// Fails when no journald listens at `path` now.
    pub fn connect(path: &Path) -> std::io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        let j = Journal { sock, path: path.to_path_buf() };
        // A probe: an empty datagram is ignored by journald.
        j.sock.send_to(&[], &j.path)?;
        Ok(j)
    }

    pub fn send(&self, entry: &Entry) -> std::io::Result<()> {
        match self.sock.send_to(entry.bytes(), &self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.send_memfd(entry)
            }
            Err(e) => Err(e),
        }
    }

    fn send_memfd(&self, entry: &Entry) -> std::io::Result<()> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create("driftgate-journal", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(entry.bytes())?;
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let seals =
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
        let fds = [file.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let addr = UnixAddr::new(&self.path).map_err(std::io::Error::from)?;
        let iov: [IoSlice<'_>; 0] = [];
        sendmsg(self.sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&addr))
            .map_err(std::io::Error::from)?;
        Ok(())
    }
}

/// The daemon's log lines as journal entries (the writer behind the logging thread, which
/// alone waits when journald does): the level that starts a formatted line becomes
/// `PRIORITY`, the rest `MESSAGE`.
#[derive(Debug)]
pub struct LogLines {
    sock: UnixDatagram,
    path: PathBuf,
}

impl LogLines {
    /// `None` when journald's socket cannot be used.
    pub fn open() -> Option<LogLines> {
        let path = PathBuf::from(driftgate_core::config::DEFAULT_JOURNAL_SOCKET);
        let sock = UnixDatagram::unbound().ok()?;
        sock.send_to(&[], &path).ok()?;
        Some(LogLines { sock, path })
    }
}

impl std::io::Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = text.trim_end_matches('\n').trim_start();
        let (priority, message) = match line.split_once(' ') {
            Some(("ERROR", rest)) => ("3", rest),
            Some(("WARN", rest)) => ("4", rest),
            Some(("INFO", rest)) => ("6", rest),
            Some(("DEBUG" | "TRACE", rest)) => ("7", rest),
            _ => ("6", line),
        };
        let mut e = Entry::new();
        e.field("MESSAGE", message.trim_start())
            .field("PRIORITY", priority)
            .field("SYSLOG_IDENTIFIER", "driftgate");
        // Blocking is fine here: only the logging thread waits.
        match self.sock.send_to(e.bytes(), &self.path) {
            Ok(_) => Ok(buf.len()),
            // Too big for a datagram: cut rather than lose the line.
            Err(err) if err.raw_os_error() == Some(libc::EMSGSIZE) => {
                let mut e = Entry::new();
                let cut: String = message.chars().take(16 * 1024).collect();
                e.field("MESSAGE", cut).field("PRIORITY", priority).field("SYSLOG_IDENTIFIER", "driftgate");
                self.sock.send_to(e.bytes(), &self.path).map(|_| buf.len())
            }
            Err(err) => Err(err),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_values_use_length_prefix() {
        let mut e = Entry::new();
        e.field("MESSAGE", "hello").field("FILE_PATH", b"/tmp/a\nFORGED=1");
        let mut want = b"MESSAGE=hello\nFILE_PATH\n".to_vec();
        want.extend_from_slice(&15u64.to_le_bytes());
        want.extend_from_slice(b"/tmp/a\nFORGED=1\n");
        assert_eq!(e.bytes(), &want[..]);
    }

    #[test]
    fn entries_reach_a_datagram_listener_even_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let j = Journal::connect(&path).unwrap();
        let mut e = Entry::new();
        e.field("MESSAGE", "small");
        j.send(&e).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        assert_eq!(server.recv(&mut buf).unwrap(), 0, "connect probes with an empty datagram");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MESSAGE=small\n");
        // Larger than the socket's send buffer: goes via memfd.
        let mut big = Entry::new();
        big.field("MESSAGE", vec![b'x'; 4 << 20]);
        j.send(&big).unwrap();
        // A listener that does not read: sends fail at once instead of waiting.
        let t = std::time::Instant::now();
        let refused = (0..10_000).map(|_| j.send(&e)).filter(|r| r.is_err()).count();
        assert!(refused > 0 && t.elapsed() < std::time::Duration::from_secs(5));
    }
}
