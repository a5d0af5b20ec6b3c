//! An image archive handed to `driftgate index build`: `docker save` or an OCI archive (a tar
//! of index.json / manifest.json, blobs and layers).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image.tar");
    std::fs::write(&p, data).unwrap();
    let _ = driftgate_image::build::build(&p, false);
});
