//! The daemon's root-only unix socket (`daemon.socket`): `driftgate status` and `driftgate
//! reload` ask on it.
//!
//! The protocol is deliberately trivial: connect, write the request (nothing for the status,
//! `reload` for a reload), shut the writing side down, read one JSON document; the daemon
//! closes. The socket lives in a 0700 directory and is itself 0600, so only root can use it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::{Sources, Status};

/// Binds the socket (replacing a stale one) and serves status documents on a thread until
/// `stop` is set (the thread holds references that must go before shutdown completes).
pub fn serve(
    path: &Path,
    sources: Arc<Sources>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let path = path.to_path_buf();
    std::thread::Builder::new().name("driftgate-status".into()).spawn(move || {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::from(200u16)), Ok(n) if n > 0) {
                continue;
            }
            let Ok((mut conn, _)) = listener.accept() else { continue };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
            let doc = match read_request(&mut conn) {
                Request::Reload => {
                    let r = sources.reloader.reload();
                    serde_json::to_vec(&ReloadReply { ok: r.is_ok(), error: r.err() }).unwrap_or_default()
                }
                Request::Status => serde_json::to_vec(&sources.snapshot()).unwrap_or_default(),
                Request::Unknown(what) => serde_json::to_vec(&ReloadReply {
                    ok: false,
                    error: Some(format!("unknown request {what:?}")),
                })
                .unwrap_or_default(),
            };
            let _ = conn.write_all(&doc);
        }
        let _ = std::fs::remove_file(&path);
    })
}

/// What a client asks on the socket: it writes the request (nothing for the status) and
/// shuts its side down; the daemon answers with one JSON document and closes.
enum Request {
    Status,
    Reload,
    Unknown(String),
}

/// Reads a request, at most 64 bytes and 2 s: a client that never shuts its side down gets
/// the status (what the protocol was before requests).
fn read_request(conn: &mut std::os::unix::net::UnixStream) -> Request {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let _ = Read::by_ref(conn).take(64).read_to_end(&mut buf);
    match String::from_utf8_lossy(&buf).trim() {
        "" | "status" => Request::Status,
        "reload" => Request::Reload,
        other => Request::Unknown(other.to_owned()),
    }
}

/// The answer to a reload request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadReply {
    pub ok: bool,
    pub error: Option<String>,
}

fn ask(path: &Path, request: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads the status from a running daemon.
pub fn query(path: &Path) -> std::io::Result<Status> {
    serde_json::from_slice(&ask(path, "")?).map_err(std::io::Error::other)
}

/// Asks a running daemon to reload its configuration, and waits for the outcome.
pub fn request_reload(path: &Path) -> std::io::Result<ReloadReply> {
    serde_json::from_slice(&ask(path, "reload")?).map_err(std::io::Error::other)
}
