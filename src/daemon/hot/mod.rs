//! The hot path: one place where a held exec becomes a verdict and an answer.
//!
//! Fast path (main thread): `fstat` the event fd; a file on an unknown superblock, or one whose
//! inode is proven to be a lower-layer (image) inode, is allowed at once. The proof is cached
//! per file version, so a repeated image exec costs one `fstat` and a hash-set lookup.
//!
//! Slow path: a file in the container's writable layer. Its content is hashed through the
//! event fd under a read lease (no writer can change it meanwhile), compared with the image's
//! file at the same path, and decided by [`driftgate_core::engine::judge`]. Hashing runs on worker
//! threads, with separate workers for large files, so a big file never holds up other execs.
//!
//! Every allowed exec of a container file is first pinned (`pin.rs`): leased, re-checked
//! and held, so that no writer can change the bytes between the answer and the kernel's own
//! write denial.
//!
//! With `[libraries]`, opens come too: `open.rs` switches off those of harmless files inode by
//! inode and hands shared objects that are not the image's to stage 2 as library jobs.
//!
//! One event's way, in order, each stage a type in and a type out: `events.rs` reads a
//! `PendingExec` from the fanotify group; `fast.rs` (stage 1) answers image files at once and
//! makes a [`Job`] of the rest; `identify.rs` (stage 2) finds what the file is, an [`Outcome`];
//! `finish.rs` chains the rest: `decide.rs` (stage 3, `Rules::decide` through
//! [`driftgate_core::engine::judge`]) gives a `Decided`, `answer.rs` (stage 4) answers the
//! kernel and gives a `ToRecord`, `record.rs` (stage 5) builds the finding and hands it to
//! [`crate::sink`] (spool, journald, exports).

mod answer;
pub(crate) mod budget;
pub mod cache;
mod code_open;
mod decide;
pub(crate) mod events;
pub(crate) mod facts;
mod fast;
mod finish;
mod identify;
pub(crate) mod latency;
mod open;
pub(crate) mod pin;
pub(crate) mod queue;
pub(crate) mod reader_pool;
mod record;
mod respond;

mod state;

pub use fast::{candidate_paths, identity_candidates, FastPath};
pub use reader_pool::hash_stable;
pub use record::KernelReport;
pub use state::*;
