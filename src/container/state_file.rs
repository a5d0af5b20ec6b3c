//! Reading the runtimes' own state files (their JSON, OCI specs, content blobs): bounded in
//! size, and a file that cannot be used warned about once, never fatal.

/// The most bytes read from one runtime state file (`config.v2.json`, `containers.json`,
/// `layers.json`, `images.json`, an OCI spec, a containerd content blob). These files are
/// written by the runtimes, but a corrupt or runaway one must not take the daemon's memory.
pub const STATE_FILE_MAX: u64 = 64 << 20;

/// Reads a runtime state file, at most [`STATE_FILE_MAX`] bytes. A missing file is `None`
/// quietly (containers come and go); any other failure is `None` with one warning per file.
pub fn read_state(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            state_warning(path, &format!("cannot open: {e}"));
            return None;
        }
    };
    let mut buf = Vec::new();
    match f.take(STATE_FILE_MAX + 1).read_to_end(&mut buf) {
        Ok(n) if n as u64 > STATE_FILE_MAX => {
            state_warning(path, &format!("larger than {} MiB; not read", STATE_FILE_MAX >> 20));
            None
        }
        Ok(_) => Some(buf),
        Err(e) => {
            state_warning(path, &format!("cannot read: {e}"));
            None
        }
    }
}

/// Whether `bytes` is a JSON array (of anything).
pub fn is_json_array(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(bytes).is_ok()
}

/// Warns about a runtime state file that could not be used (unreadable, too large, not what
/// its runtime writes), once per file and problem: metadata is looked up again and again.
pub fn state_warning(path: &std::path::Path, problem: &str) {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<(std::path::PathBuf, String)>>> =
        std::sync::Mutex::new(None);
    let Ok(mut g) = WARNED.lock() else { return };
    let set = g.get_or_insert_with(Default::default);
    if set.len() >= 4096 {
        set.clear();
    }
    if set.insert((path.to_path_buf(), problem.to_owned())) {
        tracing::warn!(file = %path.display(), problem, "runtime state file not used; the container is still watched");
    }
}
