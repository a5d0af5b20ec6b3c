//! `/proc` itself: one directory fd, and whole files read under it.

/// An `O_PATH` directory fd of `/proc`, opened once: `*at` lookups under it skip resolving
/// `/proc` itself on hot-path reads.
pub fn proc_dir() -> Option<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    static DIR: std::sync::OnceLock<Option<std::os::fd::OwnedFd>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| crate::fs::open_path_dir(std::path::Path::new("/proc")).ok())
        .as_ref()
        .map(|f| f.as_fd())
}

/// A whole file under `/proc` (`rel`: `4242/status`), opened under [`proc_dir`] and read into
/// one buffer: no path walk from `/`, no `statx` to size it (a `/proc` file has no size). A
/// third cheaper than `std::fs::read` for `status` (about 10 µs instead of 15 here).
pub fn read_proc(rel: &str) -> Option<Vec<u8>> {
    use nix::fcntl::OFlag;
    let dir = proc_dir()?;
    let fd = nix::fcntl::openat(dir, rel, OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match nix::unistd::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    Some(buf)
}
