//! Responses of containerd's API (protobuf over gRPC) for Containers/Get and Images/Get,
//! decoded by the prost messages the client declares.
#![no_main]
use driftgate::container::containerd_api::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = pb::GetContainerResponse::decode(data) {
        // What decodes must encode and decode again the same.
        assert_eq!(pb::GetContainerResponse::decode(&r.encode_to_vec()[..]).ok(), Some(r));
    }
    if let Ok(r) = pb::GetImageResponse::decode(data) {
        assert_eq!(pb::GetImageResponse::decode(&r.encode_to_vec()[..]).ok(), Some(r));
    }
});
