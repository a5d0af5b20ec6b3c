//! Responses of containerd's API (protobuf over gRPC) for Containers/Get and Images/Get.
#![no_main]
use driftgate::container::containerd_api::pb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pb::bytes_fields(data);
    if let Some(c) = pb::first_bytes(data, 1) {
        let _ = pb::decode_container(c);
        let _ = pb::first_bytes(c, 3).and_then(|d| pb::first_bytes(d, 2));
    }
    let _ = pb::decode_container(data);
});
