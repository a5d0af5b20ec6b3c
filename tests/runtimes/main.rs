//! Suites with real container runtimes (containerd, Docker, Podman) and a real Debian image.
//!
//! One test binary with a module per suite, so the harness is built once.

#[path = "../common/mod.rs"]
mod common;

mod real_image;
mod runtime_coverage;
mod runtimes;
mod sessions;
