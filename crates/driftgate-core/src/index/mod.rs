//! What the daemon knows about content: known-bad hashes (IoCs) and, per image layer, which
//! executable files it shipped with their hashes (manifests). Reading images and layer
//! directories into manifests, and storing them, is I/O: `driftgate-image` does it.

pub mod ioc;
pub mod manifest;
pub mod netioc;
pub mod paths;
pub mod union;
