//! What the daemon knows about content: known-bad hashes (IoCs) and, per image layer, which
//! executable files it shipped with their hashes (manifests), built on the node or offline.

pub mod build;
pub mod ioc;
pub mod layerdir;
pub mod manifest;
pub mod paths;
pub mod store;
pub mod union;
