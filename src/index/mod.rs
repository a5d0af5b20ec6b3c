//! What the daemon knows about content: known-bad hashes (IoCs). (The image-layer manifest
//! index will live here too.)

pub mod ioc;
