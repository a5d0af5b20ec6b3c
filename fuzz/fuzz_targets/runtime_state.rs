//! Runtime state files: Docker's config.v2.json and layerdb, containers/storage's
//! containers.json, layers.json and images.json, OCI runtime specs, containerd content
//! (image index, manifest and config JSON).
#![no_main]
use driftgate::container::{diffids, meta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meta::parse_docker_config_v2(data);
    let _ = meta::parse_oci_annotations(data);
    for c in meta::parse_storage_containers(data) {
        let _ = meta::storage_metadata(&c, None, "podman");
    }
    let _ = meta::storage_image_digest(data, "x");
    let _ = diffids::parse_storage_layers(data);
    let _ = diffids::parse_config_diff_ids(data);
    let _ = diffids::parse_manifest_or_index(data, "amd64");
    let _ = driftgate::container::is_json_array(data);
});
