//! IoC feeds: plain lists of SHA-256 hashes, URLs and domains and CSV exports, from outside
//! sources; and the command lines URLs are looked for in.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftgate_core::index::ioc::parse_source("feed.txt", data);
    let _ = driftgate_core::index::ioc::parse_source("feed.csv", data);
    let _ = driftgate_core::util::parse_sha256(data);
    let _ = driftgate_core::index::netioc::urls_in(data);
    let _ = driftgate_core::index::netioc::bare_host(data);
    let _ = driftgate_core::index::netioc::parse_indicator(data);
});
