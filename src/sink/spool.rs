//! The durable local spool of findings: a directory of append-only segment files holding one
//! JSON finding per line (`findings-<seq>.jsonl`).
//!
//! A finding counts as recorded only after the segment is `fdatasync`ed. A write that fails
//! half-way (disk full) is cut back to the last whole line, and a torn line left by a crash is
//! trimmed at start-up, so readers only ever see whole records. One writer at a time holds an
//! exclusive `flock` on `<dir>/.lock`. A writer that starts while the previous one is still
//! exiting (a restart right after `SIGKILL`) waits, bounded, for that lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use driftgate_core::finding::Finding;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spool {path} is in use by another driftgate process (waited {waited_ms} ms for its lock)")]
    Locked { path: PathBuf, waited_ms: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

const PREFIX: &str = "findings-";
const SUFFIX: &str = ".jsonl";

/// Segment files in order.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for ent in rd {
        let ent = ent.map_err(io(dir))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_prefix(PREFIX).and_then(|s| s.strip_suffix(SUFFIX)) {
            if let Ok(seq) = seq.parse::<u64>() {
                out.push((seq, ent.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens `<dir>/.lock` and takes it, waiting up to `wait` for another writer.
fn take_lock(dir: &Path, wait: std::time::Duration) -> Result<nix::fcntl::Flock<File>, SpoolError> {
    let lock_path = dir.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    lock_waiting(lock, wait).map_err(|waited| SpoolError::Locked {
        path: dir.to_path_buf(),
        waited_ms: waited.as_millis() as u64,
    })
}

/// Takes the exclusive lock, polling until `wait` has passed. A polled non-blocking lock rather
/// than a blocking one with an alarm: nothing here may block without a bound.
fn lock_waiting(
    mut file: File,
    wait: std::time::Duration,
) -> Result<nix::fcntl::Flock<File>, std::time::Duration> {
    use nix::fcntl::{Flock, FlockArg};
    let start = std::time::Instant::now();
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => {
                if start.elapsed() >= std::time::Duration::from_millis(20) {
                    tracing::info!(
                        waited_ms = start.elapsed().as_millis() as u64,
                        "spool lock released by the previous writer"
                    );
                }
                return Ok(l);
            }
            Err((f, _)) => file = f,
        }
        if start.elapsed() >= wait {
            return Err(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// (bytes, segments) the spool holds.
pub fn usage(dir: &Path) -> (u64, u64) {
    segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, p)| fs::metadata(p).ok())
        .fold((0, 0), |(b, n), m| (b + m.len(), n + 1))
}

pub struct SpoolWriter {
    dir: PathBuf,
    lock: nix::fcntl::Flock<File>,
    /// Times the directory was found removed and made again (taken by the caller).
    recreated: u64,
    file: File,
    seq: u64,
    len: u64,
    segment_bytes: u64,
}

/// How long a new writer waits for the lock of one that is still exiting.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl SpoolWriter {
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<SpoolWriter, SpoolError> {
        Self::open_waiting(dir, segment_bytes, LOCK_WAIT)
    }

    /// Opens the spool, waiting up to `wait` for another writer's lock to be released.
    pub fn open_waiting(
        dir: &Path,
        segment_bytes: u64,
        wait: std::time::Duration,
    ) -> Result<SpoolWriter, SpoolError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        let lock = take_lock(dir, wait)?;
        let segs = segments(dir)?;
        let (seq, path) = match segs.last() {
            Some((seq, path)) => (*seq, path.clone()),
            None => (1, segment_path(dir, 1)),
        };
        let mut w = SpoolWriter {
            dir: dir.to_path_buf(),
            lock,
            recreated: 0,
            file: open_segment(&path)?,
            seq,
            len: 0,
            segment_bytes,
        };
        w.len = trim_torn_tail(&mut w.file).map_err(io(&path))?;
        if w.len >= w.segment_bytes {
            w.rotate()?;
        }
        Ok(w)
    }

    /// Times the spool directory was found removed and made again since the last call.
    pub fn take_recreated(&mut self) -> u64 {
        std::mem::take(&mut self.recreated)
    }

    /// A segment whose directory was removed (by hand, by a cleanup job) takes writes that no
    /// reader will ever see: before appending, check the segment is still linked, and if not,
    /// make the directory, its lock and a segment again.
    fn ensure_linked(&mut self) -> Result<(), SpoolError> {
        use std::os::unix::fs::MetadataExt;
        let linked = self.file.metadata().map(|m| m.nlink() > 0).unwrap_or(false);
        if linked {
            return Ok(());
        }
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io(&self.dir))?;
        self.lock = take_lock(&self.dir, std::time::Duration::ZERO)?;
        let next = segments(&self.dir)?.last().map_or(self.seq + 1, |(seq, _)| seq + 1).max(self.seq + 1);
        self.seq = next;
        let path = segment_path(&self.dir, self.seq);
        self.file = open_segment(&path)?;
        self.len = 0;
        self.recreated += 1;
        tracing::warn!(dir = %self.dir.display(), "the spool directory was removed; made it again");
        Ok(())
    }

    /// Appends findings and makes them durable. On error nothing partial stays in the file.
    pub fn append(&mut self, findings: &[Finding]) -> Result<(), SpoolError> {
        self.ensure_linked()?;
        let mut buf = Vec::with_capacity(findings.len() * 1024);
        for f in findings {
            serde_json::to_writer(&mut buf, f).expect("findings serialize");
            buf.push(b'\n');
        }
        let path = segment_path(&self.dir, self.seq);
        let res = self.file.write_all(&buf).and_then(|_| self.file.sync_data());
        if let Err(e) = res {
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(io(&path)(e));
        }
        self.len += buf.len() as u64;
        if self.len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.seq += 1;
        let path = segment_path(&self.dir, self.seq);
        self.file = open_segment(&path)?;
        self.len = 0;
        // Make the new name durable too.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies a (reloaded) segment size, starting a new segment if the current one is past it.
    pub fn set_segment_bytes(&mut self, bytes: u64) -> Result<(), SpoolError> {
        self.segment_bytes = bytes.max(4096);
        if self.len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Deletes the oldest segments while the spool is larger than `max_bytes`, and segments
    /// last written longer than `max_age` ago. The segment being written is never deleted.
    /// Returns the deleted files.
    pub fn enforce_retention(
        &mut self,
        max_bytes: Option<u64>,
        max_age: Option<std::time::Duration>,
    ) -> Vec<PathBuf> {
        let Ok(segs) = segments(&self.dir) else { return Vec::new() };
        let mut sized: Vec<(PathBuf, u64, std::time::SystemTime)> = segs
            .into_iter()
            .filter(|(seq, _)| *seq != self.seq)
            .filter_map(|(_, p)| {
                let m = fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect();
        let mut total: u64 = sized.iter().map(|(_, l, _)| l).sum::<u64>() + self.len;
        let mut deleted = Vec::new();
        let now = std::time::SystemTime::now();
        sized.reverse(); // pop() takes the oldest
        while let Some((p, len, mtime)) = sized.pop() {
            let too_big = max_bytes.is_some_and(|m| total > m);
            let too_old = max_age.is_some_and(|a| now.duration_since(mtime).is_ok_and(|age| age > a));
            if !too_big && !too_old {
                break;
            }
            if fs::remove_file(&p).is_ok() {
                total -= len;
                deleted.push(p);
            }
        }
        deleted
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:016}{SUFFIX}"))
}

fn open_segment(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path))
}

/// Cuts a partial last line (left by a crash mid-write) and returns the new length.
fn trim_torn_tail(f: &mut File) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut pos = len;
    let mut buf = [0u8; 4096];
    loop {
        let start = pos.saturating_sub(buf.len() as u64);
        let n = (pos - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                f.set_len(keep)?;
            }
            f.seek(SeekFrom::End(0))?;
            return Ok(keep);
        }
        if start == 0 {
            f.set_len(0)?;
            return Ok(0);
        }
        pos = start;
    }
}

/// A line of the spool that could not be read as a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub file: PathBuf,
    pub line: usize,
    pub error: String,
}

/// Reads every finding in the spool, oldest first. Unreadable lines are returned separately,
/// with file and line number, never silently dropped.
pub fn read_all(dir: &Path) -> Result<(Vec<Finding>, Vec<BadLine>), SpoolError> {
    let mut findings = Vec::new();
    let mut bad = Vec::new();
    for (_, path) in segments(dir)? {
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // rotated away
            Err(e) => return Err(io(&path)(e)),
        };
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for (i, line) in data[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Finding>(line) {
                Ok(f) => findings.push(f),
                Err(e) => bad.push(BadLine { file: path.clone(), line: i + 1, error: e.to_string() }),
            }
        }
    }
    Ok((findings, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftgate_core::finding::Finding;

    fn finding(id: &str) -> Finding {
        Finding::example(id)
    }

    #[test]
    fn findings_survive_reopen_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        {
            let mut w = SpoolWriter::open(&spool, 4096).unwrap();
            for i in 0..20 {
                w.append(&[finding(&i.to_string())]).unwrap();
            }
        }
        let mut w = SpoolWriter::open(&spool, 4096).unwrap();
        w.append(&[finding("last")]).unwrap();
        let (all, bad) = read_all(&spool).unwrap();
        assert!(bad.is_empty());
        assert_eq!(all.len(), 21);
        assert_eq!(all[0].id, "0");
        assert_eq!(all[20].id, "last");
        assert!(segments(&spool).unwrap().len() > 1, "rotated");
    }

    #[test]
    fn a_torn_tail_is_trimmed_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path();
        {
            let mut w = SpoolWriter::open(spool, 1 << 20).unwrap();
            w.append(&[finding("a")]).unwrap();
        }
        let seg = segments(spool).unwrap()[0].1.clone();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"not json\n{\"schema\":\"driftgate.finding.v1\",\"id\":\"torn").unwrap();
        drop(f);
        let (all, bad) = read_all(spool).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
        let mut w = SpoolWriter::open(spool, 1 << 20).unwrap();
        w.append(&[finding("b")]).unwrap();
        let (all, _) = read_all(spool).unwrap();
        assert_eq!(all.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn retention_deletes_the_oldest_segments_but_never_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::open(dir.path(), 4096).unwrap();
        for i in 0..60 {
            w.append(&[finding(&i.to_string())]).unwrap();
        }
        let before = segments(dir.path()).unwrap().len();
        assert!(before > 3, "{before}");
        let deleted = w.enforce_retention(Some(8192), None);
        assert!(!deleted.is_empty());
        let (bytes, n) = usage(dir.path());
        assert!(bytes <= 8192 + 4096, "{bytes}");
        assert!(n >= 1);
        let (left, _) = read_all(dir.path()).unwrap();
        assert_eq!(left.last().unwrap().id, "59", "the newest findings stay");
        // Age: everything but the current segment is older than zero seconds.
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.enforce_retention(None, Some(std::time::Duration::from_millis(1)));
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_removed_spool_directory_is_made_again_and_nothing_is_written_into_the_void() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("spool");
        let mut w = SpoolWriter::open(&dir, 1 << 20).unwrap();
        w.append(&[finding("1")]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        w.append(&[finding("2")]).unwrap();
        assert_eq!(w.take_recreated(), 1);
        let (got, bad) = read_all(&dir).unwrap();
        assert!(bad.is_empty());
        assert_eq!(got.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), vec!["2"]);
        // And the new directory is locked again.
        assert!(matches!(
            SpoolWriter::open_waiting(&dir, 1 << 20, std::time::Duration::ZERO),
            Err(SpoolError::Locked { .. })
        ));
    }

    #[test]
    fn a_second_writer_is_refused_after_a_bounded_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _w = SpoolWriter::open(dir.path(), 1 << 20).unwrap();
        let t = std::time::Instant::now();
        let wait = std::time::Duration::from_millis(150);
        let r = SpoolWriter::open_waiting(dir.path(), 1 << 20, wait);
        assert!(matches!(r, Err(SpoolError::Locked { .. })));
        assert!(t.elapsed() >= wait && t.elapsed() < wait * 10, "{:?}", t.elapsed());
    }

    #[test]
    fn a_writer_that_starts_while_the_previous_one_exits_gets_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let w = SpoolWriter::open(dir.path(), 1 << 20).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(w);
        });
        let t = std::time::Instant::now();
        let mut w2 = SpoolWriter::open(dir.path(), 1 << 20).expect("waits for the lock");
        assert!(t.elapsed() >= std::time::Duration::from_millis(150), "{:?}", t.elapsed());
        w2.append(&[]).unwrap();
        release.join().unwrap();
    }
}
