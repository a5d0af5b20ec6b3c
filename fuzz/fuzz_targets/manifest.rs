//! Layer manifests (one JSON document per line of a bundle), and the tar member names and
//! paths they are built from.
#![no_main]
use driftgate_core::index::manifest as m;
use driftgate_core::index::paths as p;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(parsed) = m::Manifest::parse(line) {
            // What parses must write back and parse again the same.
            let again = m::Manifest::parse(&parsed.to_json_line()).expect("a written manifest parses");
            assert_eq!(again.to_json_line(), parsed.to_json_line());
        }
    }
    let _ = p::parse_digest(&text);
    if let Some(n) = p::normalize_tar_path(data) {
        assert!(p::is_normal_path(&n), "{n:?}");
    }
    let _ = p::tar_meaning(data);
    let _ = p::could_execute(0o755, data);
    // The whole input as a bundle file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bundle.jsonl");
    std::fs::write(&p, data).unwrap();
    let _ = m::read_bundle(&p);
});
