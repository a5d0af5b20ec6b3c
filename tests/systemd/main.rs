//! Suites under systemd: the journal, and the shipped unit and .deb under systemd as PID 1 (systemd-nspawn --boot).
//!
//! One test binary with a module per suite, so the harness is built once.

#[path = "../common/mod.rs"]
mod common;

mod real_systemd;
mod systemd;
