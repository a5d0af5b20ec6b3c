//! IoC feeds: plain lists of SHA-256 hashes and CSV exports, from outside sources.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftgate_core::index::ioc::parse_source("feed.txt", data);
    let _ = driftgate_core::index::ioc::parse_source("feed.csv", data);
    let _ = driftgate_core::util::parse_sha256(data);
});
