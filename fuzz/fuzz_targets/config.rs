//! The configuration file (TOML), as an operator or a config-management tool writes it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = driftgate_core::config::Config::from_toml(&text, Some(std::path::Path::new("fuzz.toml")));
    let _ = driftgate_core::util::parse_duration(&text);
});
