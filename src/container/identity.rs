//! What identified a mount as a container (a runtime's layout, or an operator's glob).

use std::path::PathBuf;

/// What identified a mount as a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub runtime: &'static str,
    /// containerd namespace, for containerd containers.
    pub runtime_namespace: Option<String>,
    /// For containers/storage containers (Podman, CRI-O): the storage root and runroot; `id`
    /// is then the storage layer until metadata names the container.
    pub storage: Option<(PathBuf, PathBuf)>,
}
