//! Plain overlay mounts an operator names (`discovery.overlay_globs`): containers of a runtime
//! driftgate does not know, or made by hand. The mountpoint is the id; nothing else is known.

use std::path::Path;

use driftgate_core::config::Config;

use super::common::Runtime;
use crate::container::identity::Identity;

pub struct Overlay;

impl Runtime for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn identify(&self, mountpoint: &Path, cfg: &Config) -> Option<Identity> {
        cfg.overlay_globset.is_match(mountpoint).then(|| Identity {
            id: mountpoint.to_string_lossy().into_owned(),
            runtime: self.name(),
            runtime_namespace: None,
            storage: None,
        })
    }
}
