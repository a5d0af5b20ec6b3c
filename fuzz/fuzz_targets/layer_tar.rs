//! One image layer: a tar stream, plain, gzip or zstd, as found in an image archive.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftgate_image::build::index_layer_tar(Box::new(std::io::Cursor::new(data.to_vec())), "fuzz");
});
