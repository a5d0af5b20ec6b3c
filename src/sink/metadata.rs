//! What the sink needs of a finding's container.

use std::sync::Arc;

/// What the sink needs of a finding's container (the daemon's container record): the finding
/// waits, for a bounded time, for the container's metadata before it is written.
pub trait Metadata: Send + Sync {
    /// `None` once the metadata is complete; else the number of lookups finished so far.
    fn pending_version(&self) -> Option<u64>;
    /// The container as a finding describes it, from the metadata known now.
    fn container_ref(&self) -> driftgate_core::finding::ContainerRef;
}

pub type ContainerHandle = Arc<dyn Metadata>;
