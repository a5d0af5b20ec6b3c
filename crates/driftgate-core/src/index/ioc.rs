//! The IoC set: known-bad SHA-256 hashes, and URLs and domains ([`super::netioc`]), read from
//! plain lists and CSV exports.
//!
//! Formats (detected per file): a plain list, one indicator per line (a SHA-256 in hex in any
//! case, a URL, a domain or an IP address), an optional name after whitespace, `#` comments,
//! blank lines, and hosts-file lines (`0.0.0.0 evil.example`, as domain blocklists ship); or a
//! CSV with a header naming a `sha256_hash` or `sha256` column (MalwareBazaar's export), else
//! a `url` column (URLhaus's), else a `domain` or `host` column; its `signature`, `threat` or
//! `name` column, when present, names the entry. Invalid lines are counted and the first few
//! reported with file and line; a source with no valid line is an error for that source only.
//!
//! Stored as one sorted array of 32-byte hashes plus a parallel array of name/source ids into
//! small string tables: 1M entries take about 40 MB and a lookup is a binary search.

use super::netioc::{self, NetEntry, NetIocs};
use crate::util::parse_sha256;
use std::path::{Path, PathBuf};

/// Where a matching hash came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IocMatch {
    pub name: Option<String>,
    pub source: String,
}

/// An immutable set; reloads build a new one and swap it in.
#[derive(Debug, Default)]
pub struct IocSet {
    hashes: Vec<[u8; 32]>,
    /// `prefix[b]..prefix[b + 1]` is the range of `hashes` whose first `PREFIX_BITS` bits are
    /// `b`. SHA-256 values are uniform, so a lookup searches a handful of entries instead of
    /// the whole array (one or two cache misses instead of twenty).
    prefix: Vec<u32>,
    /// Per hash: (name id + 1, or 0 for none; source id).
    meta: Vec<(u32, u32)>,
    names: Vec<String>,
    sources: Vec<String>,
    /// URLs and domains.
    network: NetIocs,
}

/// A problem with one line of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// The result of reading one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    pub source: String,
    pub valid: usize,
    pub invalid: usize,
    /// The first few invalid lines.
    pub examples: Vec<BadLine>,
}

#[derive(Debug, thiserror::Error)]
pub enum IocError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: no valid SHA-256, URL or domain line ({invalid} invalid{})", first.as_ref().map(|b| format!("; line {}: {}", b.line, b.reason)).unwrap_or_default())]
    Empty { path: String, invalid: usize, first: Option<BadLine> },
}

const MAX_EXAMPLES: usize = 5;
const PREFIX_BITS: u32 = 18;

fn bucket(h: &[u8; 32]) -> usize {
    (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) >> (32 - PREFIX_BITS)) as usize
}

/// One parsed entry: hash and optional name.
type Entry = ([u8; 32], Option<String>);

/// What a CSV header says: which column holds the indicator, of which kind, and which names it.
#[derive(Clone, Copy)]
struct CsvColumns {
    indicator: usize,
    hashes: bool,
    name: Option<usize>,
}

/// Parses one source's bytes. Returns the hashes, the URLs and domains, and the report.
pub fn parse_source(source: &str, data: &[u8]) -> (Vec<Entry>, Vec<NetEntry>, SourceReport) {
    let mut report = SourceReport { source: source.to_owned(), valid: 0, invalid: 0, examples: Vec::new() };
    let mut out = Vec::new();
    let mut net = Vec::new();
    let bad = |report: &mut SourceReport, line: usize, reason: String| {
        report.invalid += 1;
        if report.examples.len() < MAX_EXAMPLES {
            report.examples.push(BadLine { line, reason });
        }
    };
    let lines = data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // CSV when the first non-comment, non-blank line is a header with a sha256 column.
    let mut csv: Option<CsvColumns> = None;
    for (i, raw) in lines.enumerate() {
        let n = i + 1;
        let line = trim_ws(raw);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if report.valid == 0 && report.invalid == 0 && csv.is_none() && line.contains(&b',') {
            let cols = csv_fields(line);
            let lower: Vec<String> =
                cols.iter().map(|c| String::from_utf8_lossy(trim(c)).to_ascii_lowercase()).collect();
            let col = |names: &[&str]| lower.iter().position(|c| names.contains(&c.as_str()));
            let found = match col(&["sha256_hash", "sha256"]) {
                Some(h) => Some((h, true)),
                None => col(&["url"]).or_else(|| col(&["domain", "host", "hostname"])).map(|c| (c, false)),
            };
            if let Some((indicator, hashes)) = found {
                let name = col(&["signature", "threat", "name"]);
                csv = Some(CsvColumns { indicator, hashes, name });
                continue;
            }
        }
        match csv {
            Some(CsvColumns { indicator: h, hashes, name: name_col }) => {
                let cols = csv_fields(line);
                let name = name_col
                    .and_then(|c| cols.get(c))
                    .map(|v| String::from_utf8_lossy(trim(v)).into_owned())
                    .filter(|v| !v.is_empty() && v != "n/a");
                let value = cols.get(h).map(|c| trim(c));
                if hashes {
                    match value.and_then(parse_sha256) {
                        Some(hash) => {
                            out.push((hash, name));
                            report.valid += 1;
                        }
                        None => bad(&mut report, n, format!("column {} is not a SHA-256", h + 1)),
                    }
                } else {
                    match value.and_then(netioc::parse_indicator) {
                        Some(i) => {
                            net.push((i, name));
                            report.valid += 1;
                        }
                        None => bad(&mut report, n, format!("column {} is not a URL or domain", h + 1)),
                    }
                }
            }
            None => {
                let (first, rest) = match line.iter().position(|b| b.is_ascii_whitespace()) {
                    Some(p) => (&line[..p], trim_ws(&line[p..])),
                    None => (line, &b""[..]),
                };
                let name_of = |rest: &[u8]| {
                    (!rest.is_empty() && !rest.starts_with(b"#"))
                        .then(|| String::from_utf8_lossy(&rest[..rest.len().min(256)]).into_owned())
                };
                if let Some(hash) = parse_sha256(first) {
                    out.push((hash, name_of(rest)));
                    report.valid += 1;
                    continue;
                }
                // A hosts file: the address it is sent to, then the domain.
                let (first, rest) = match (first, rest.iter().position(|b| b.is_ascii_whitespace())) {
                    (b"0.0.0.0" | b"127.0.0.1" | b"::" | b"::1", p) if !rest.is_empty() => {
                        let p = p.unwrap_or(rest.len());
                        (&rest[..p], trim_ws(&rest[p..]))
                    }
                    _ => (first, rest),
                };
                match netioc::parse_indicator(first) {
                    Some(i) => {
                        net.push((i, name_of(rest)));
                        report.valid += 1;
                    }
                    None => {
                        let shown =
                            String::from_utf8_lossy(&first[..first.len().min(40)]).escape_debug().to_string();
                        bad(&mut report, n, format!("not a SHA-256, URL or domain: {shown:?}"))
                    }
                }
            }
        }
    }
    (out, net, report)
}

fn trim_ws(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(s, |i| i + 1);
    &v[s..e.max(s)]
}

/// A CSV value: whitespace and enclosing quotes removed.
fn trim(v: &[u8]) -> &[u8] {
    let t = trim_ws(v);
    t.strip_prefix(b"\"").and_then(|x| x.strip_suffix(b"\"")).unwrap_or(t)
}

/// Splits a CSV line on commas outside double quotes.
fn csv_fields(line: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&line[start..]);
    out
}

/// Files a configured path stands for: itself, or the regular files in a directory (sorted).
pub fn expand(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        v.sort();
        Ok(v)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

impl IocSet {
    /// Builds a set of hashes from `(source, entries)`; duplicates keep their first source and
    /// name.
    pub fn build(sources: Vec<(String, Vec<Entry>)>) -> IocSet {
        Self::build_all(sources.into_iter().map(|(s, e)| (s, e, Vec::new())).collect())
    }

    /// Builds a set from `(source, hashes, URLs and domains)`.
    pub fn build_all(sources: Vec<(String, Vec<Entry>, Vec<NetEntry>)>) -> IocSet {
        let mut network = NetIocs::default();
        let mut names: Vec<String> = Vec::new();
        let mut name_ids: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        let mut all: Vec<([u8; 32], u32, u32)> =
            Vec::with_capacity(sources.iter().map(|(_, e, _)| e.len()).sum());
        let mut source_names = Vec::with_capacity(sources.len());
        let mut name_id = |name: Option<String>| match name {
            Some(n) => *name_ids.entry(n.clone()).or_insert_with(|| {
                names.push(n);
                names.len() as u32
            }),
            None => 0,
        };
        for (si, (source, entries, net)) in sources.into_iter().enumerate() {
            source_names.push(source);
            for (hash, name) in entries {
                all.push((hash, name_id(name), si as u32));
            }
            for (i, name) in net {
                network.insert(i, (name_id(name), si as u32));
            }
        }
        // Stable sort keeps the first occurrence first; dedup keeps it.
        all.sort_by_key(|e| e.0);
        all.dedup_by(|b, a| a.0 == b.0);
        let mut prefix = vec![0u32; (1 << PREFIX_BITS) + 1];
        for e in &all {
            prefix[bucket(&e.0) + 1] += 1;
        }
        for i in 1..prefix.len() {
            prefix[i] += prefix[i - 1];
        }
        IocSet {
            prefix,
            hashes: all.iter().map(|e| e.0).collect(),
            meta: all.iter().map(|e| (e.1, e.2)).collect(),
            names,
            sources: source_names,
            network,
        }
    }

    /// Reads every configured path. A source that fails is reported and skipped.
    pub fn load(paths: &[PathBuf]) -> (IocSet, Vec<SourceReport>, Vec<IocError>) {
        let mut sources = Vec::new();
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            let files = match expand(p) {
                Ok(f) => f,
                Err(source) => {
                    errors.push(IocError::Io { path: p.display().to_string(), source });
                    continue;
                }
            };
            for f in files {
                let name = f.display().to_string();
                let data = match std::fs::read(&f) {
                    Ok(d) => d,
                    Err(source) => {
                        errors.push(IocError::Io { path: name, source });
                        continue;
                    }
                };
                let (entries, net, report) = parse_source(&name, &data);
                if report.valid == 0 {
                    errors.push(IocError::Empty {
                        path: name,
                        invalid: report.invalid,
                        first: report.examples.first().cloned(),
                    });
                    reports.push(report);
                    continue;
                }
                reports.push(report);
                sources.push((name, entries, net));
            }
        }
        (IocSet::build_all(sources), reports, errors)
    }

    /// Hashes, URLs and domains.
    pub fn len(&self) -> usize {
        self.hashes.len() + self.network.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether URLs or domains are listed: every exec's arguments are then looked at.
    pub fn has_network(&self) -> bool {
        !self.network.is_empty()
    }

    /// The first argument that contains a listed URL or a host on a listed domain, and where
    /// the indicator came from.
    pub fn match_args(&self, args: &[Vec<u8>]) -> Option<(netioc::NetMatch, IocMatch)> {
        let m = self.network.match_args(args)?;
        let ioc = self.meta_of(m.meta);
        Some((m, ioc))
    }

    /// Whether `hash` is known-bad, and where from.
    fn find(&self, hash: &[u8; 32]) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let b = bucket(hash);
        let (lo, hi) = (self.prefix[b] as usize, self.prefix[b + 1] as usize);
        self.hashes[lo..hi].binary_search(hash).ok().map(|i| lo + i)
    }

    pub fn lookup(&self, hash: &[u8; 32]) -> Option<IocMatch> {
        let i = self.find(hash)?;
        Some(self.meta_of(self.meta[i]))
    }

    fn meta_of(&self, (nid, sid): (u32, u32)) -> IocMatch {
        IocMatch {
            name: (nid > 0).then(|| self.names[nid as usize - 1].clone()),
            source: self.sources[sid as usize].clone(),
        }
    }

    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.find(hash).is_some()
    }

    /// Approximate heap size.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * 32
            + self.prefix.capacity() * 4
            + self.meta.capacity() * 8
            + self.names.iter().map(|n| n.capacity() + 24).sum::<usize>()
            + self.sources.iter().map(|n| n.capacity() + 24).sum::<usize>()
            + self.network.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const B: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    #[test]
    fn plain_lists_with_names_comments_any_case_and_crlf() {
        let data = format!("# feed\r\n\r\n{A} eicar-like test\r\n{B}\r\n  {A}   duplicate  \r\n");
        let (e, _, r) = parse_source("f", data.as_bytes());
        assert_eq!((r.valid, r.invalid), (3, 0));
        assert_eq!(e[0].1.as_deref(), Some("eicar-like test"));
        let set = IocSet::build(vec![("f".into(), e)]);
        assert_eq!(set.len(), 2, "duplicates collapse");
        let m = set.lookup(&parse_sha256(A.as_bytes()).unwrap()).unwrap();
        assert_eq!(m, IocMatch { name: Some("eicar-like test".into()), source: "f".into() });
        assert!(set.contains(&parse_sha256(B.to_lowercase().as_bytes()).unwrap()));
        assert!(!set.contains(&[0u8; 32]));
    }

    #[test]
    fn the_prefix_index_finds_every_entry_and_nothing_else() {
        let entries: Vec<Entry> = (0u32..5000)
            .map(|i| {
                use sha2::Digest;
                (sha2::Sha256::digest(i.to_le_bytes()).into(), None)
            })
            .collect();
        let set = IocSet::build(vec![("s".into(), entries.clone())]);
        assert_eq!(set.len(), 5000);
        for (h, _) in &entries {
            assert!(set.contains(h));
        }
        let mut edge = [0u8; 32];
        assert!(!set.contains(&edge));
        edge = [0xff; 32];
        assert!(!set.contains(&edge));
        assert!(!IocSet::default().contains(&edge), "an empty set has no prefix table");
    }

    #[test]
    fn invalid_lines_are_counted_with_line_numbers_and_mixed_files_keep_the_valid_ones() {
        let huge = "f".repeat(100_000);
        let data = format!("{A}\nnot-a-hash\n{}\n{huge}\n{B}\n", &A[..63]);
        let (e, _, r) = parse_source("mixed", data.as_bytes());
        assert_eq!((r.valid, r.invalid), (2, 3));
        assert_eq!(e.len(), 2);
        assert_eq!(r.examples.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(r.examples[2].reason.len() < 200, "a huge line is not echoed whole");
    }

    #[test]
    fn malwarebazaar_csv_export() {
        let data = format!(
            "################################################################\n\
             # MalwareBazaar full data dump (CSV)                           #\n\
             ################################################################\n\
             \"first_seen_utc\",\"sha256_hash\",\"md5_hash\",\"sha1_hash\",\"reporter\",\"file_name\",\"file_type_guess\",\"mime_type\",\"signature\"\n\
             \"2026-11-01 10:00:00\",\"{A}\",\"x\",\"y\",\"r\",\"evil.elf\",\"elf\",\"application/x-executable\",\"Mirai\"\n\
             \"2026-11-01 10:01:00\",\"{B}\",\"x\",\"y\",\"r\",\"a, b.elf\",\"elf\",\"application/x-executable\",\"n/a\"\n\
             \"2026-11-01 10:02:00\",\"zzz\",\"x\",\"y\",\"r\",\"c\",\"elf\",\"x\",\"X\"\n"
        );
        let (e, _, r) = parse_source("bazaar.csv", data.as_bytes());
        assert_eq!((r.valid, r.invalid), (2, 1));
        assert_eq!(e[0].1.as_deref(), Some("Mirai"));
        assert_eq!(e[1].1, None, "n/a is no name; a quoted comma does not shift columns");
        assert_eq!(r.examples[0].line, 7);
        let (e, _, _) = parse_source("s.csv", format!("sha256,comment\n{A},x\n").as_bytes());
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn a_source_without_valid_lines_is_an_error_for_that_source_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.txt"), format!("{A}\n")).unwrap();
        std::fs::write(dir.path().join("bad.txt"), "nothing\nuseful\n").unwrap();
        let (set, reports, errors) = IocSet::load(&[dir.path().to_path_buf(), dir.path().join("missing")]);
        assert_eq!(set.len(), 1);
        assert_eq!(reports.len(), 2);
        assert_eq!(errors.len(), 2);
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("bad.txt: no valid SHA-256, URL or domain line (2 invalid; line 1:")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("missing")), "{msgs:?}");
    }

    #[test]
    fn urls_domains_hosts_files_and_urlhaus_csv_are_network_indicators() {
        use super::netioc::Indicator;
        let data = format!(
            "{A} hash\nhttp://198.51.100.9/bins/x86 mirai loader\nevil.example\n0.0.0.0 ads.example # blocked\n\
             127.0.0.1 localhost\nnot a thing\n"
        );
        let (e, net, r) = parse_source("mixed.txt", data.as_bytes());
        assert_eq!((e.len(), net.len(), r.valid, r.invalid), (1, 3, 4, 2), "{r:?}");
        assert_eq!(
            net[0],
            (Indicator::Url("http://198.51.100.9/bins/x86".into()), Some("mirai loader".into()))
        );
        assert_eq!(net[2].0, Indicator::Domain("ads.example".into()));
        let csv = "id,dateadded,url,url_status,last_online,threat,tags\n\
                   \"1\",\"2026-11-30\",\"http://203.0.113.7:8080/i\",\"online\",\"\",\"malware_download\",\"elf\"\n\
                   \"2\",\"2026-11-30\",\"nonsense\",\"online\",\"\",\"x\",\"\"\n";
        let (e2, net2, r2) = parse_source("urlhaus.csv", csv.as_bytes());
        assert_eq!((e2.len(), net2.len(), r2.invalid), (0, 1, 1));
        assert_eq!(r2.examples[0].reason, "column 3 is not a URL or domain");
        let set = IocSet::build_all(vec![("mixed.txt".into(), e, net), ("urlhaus.csv".into(), e2, net2)]);
        assert_eq!(set.len(), 5);
        assert!(set.has_network());
        let args: Vec<Vec<u8>> =
            ["curl", "http://203.0.113.7:8080/i"].iter().map(|a| a.as_bytes().to_vec()).collect();
        let (m, ioc) = set.match_args(&args).unwrap();
        assert_eq!(
            (m.arg, ioc.source.as_str(), ioc.name.as_deref()),
            (1, "urlhaus.csv", Some("malware_download"))
        );
        assert!(!IocSet::build(vec![("h".into(), Vec::new())]).has_network());
    }
}
