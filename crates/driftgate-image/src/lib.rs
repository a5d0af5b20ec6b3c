//! driftgate's image and layer I/O, kept out of the pure core (`driftgate-core`, which holds
//! the manifests' types and what they mean):
//!
//! - [`build`]: an image (OCI layout, `docker save` archive, or a directory) read offline into
//!   layer manifests (`driftgate index build`);
//! - [`layerdir`]: a layer directory on the node walked into a manifest, and brought up to
//!   date with what changed;
//! - [`store`]: manifests on disk, the node's own and the imported ones.

pub mod build;
pub mod layerdir;
pub mod store;
