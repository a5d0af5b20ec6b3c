//! `driftgate bench ioc --entries N`: load time, memory and lookup time of an IoC set of N
//! generated hashes (a plain list written to a temporary file, then read as the daemon reads it).

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use driftgate_core::index::ioc::IocSet;

#[derive(Debug, Clone, Serialize)]
pub struct IocReport {
    pub entries: usize,
    pub file_bytes: u64,
    pub load_ms: f64,
    pub heap_mib: f64,
    pub rss_growth_mib: f64,
    pub lookup_hit_ns: f64,
    pub lookup_miss_ns: f64,
}

/// A cheap, deterministic 256-bit value per index (splitmix64, four times).
fn hash_for(i: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x1234_5678);
    for chunk in out.chunks_exact_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

fn rss_kib() -> u64 {
    driftgate_sys::proc::rss_kib("self").unwrap_or(0)
}

/// Writes a plain IoC list of `entries` generated hashes, every tenth one named.
pub fn write_feed(path: &std::path::Path, entries: usize) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..entries as u64 {
        w.write_all(driftgate_core::util::hex(hash_for(i)).as_bytes())?;
        if i % 10 == 0 {
            writeln!(w, " Family.{}", i % 1000)?;
        } else {
            writeln!(w)?;
        }
    }
    w.flush()
}

pub fn run(entries: usize) -> std::io::Result<IocReport> {
    let dir = tempfile::Builder::new().prefix("driftgate-bench-ioc-").tempdir()?;
    let path = dir.path().join("feed.txt");
    write_feed(&path, entries)?;
    let file_bytes = std::fs::metadata(&path)?.len();
    let rss0 = rss_kib();
    let t = Instant::now();
    let (set, _, errors) = IocSet::load(std::slice::from_ref(&path));
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(e) = errors.into_iter().next() {
        return Err(std::io::Error::other(e.to_string()));
    }
    let rss1 = rss_kib();
    let n = 1_000_000usize;
    let probes: Vec<[u8; 32]> = (0..n as u64).map(|i| hash_for(i % entries.max(1) as u64)).collect();
    let t = Instant::now();
    let mut hits = 0usize;
    for p in &probes {
        hits += usize::from(set.contains(std::hint::black_box(p)));
    }
    let lookup_hit_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let misses: Vec<[u8; 32]> = (0..n as u64).map(|i| hash_for(i + entries as u64 + 1)).collect();
    let t = Instant::now();
    for p in &misses {
        hits += usize::from(set.contains(std::hint::black_box(p)));
    }
    let lookup_miss_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    assert!(hits >= n.min(entries), "every present hash is found");
    Ok(IocReport {
        entries: set.len(),
        file_bytes,
        load_ms,
        heap_mib: set.heap_bytes() as f64 / (1 << 20) as f64,
        rss_growth_mib: rss1.saturating_sub(rss0) as f64 / 1024.0,
        lookup_hit_ns,
        lookup_miss_ns,
    })
}
