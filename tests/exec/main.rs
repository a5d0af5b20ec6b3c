//! Suites on hand-made overlay containers with a real daemon: every exec path, findings and responses, libraries, confinement, the daemon's life and operations.
//!
//! One test binary with a module per suite, so the harness is built once.

#[path = "../common/mod.rs"]
mod common;

mod confinement;
mod coverage;
mod detections;
mod indirect;
mod libraries;
mod lifecycle;
mod operations;
mod privileged;
mod response;
