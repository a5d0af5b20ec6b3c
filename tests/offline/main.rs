//! Suites that need no container: the architecture rules, the CLI on files, the layer index and IoC loaders, the benchmark harness, the packages (dpkg, the Helm chart).
//!
//! One test binary with a module per suite, so the harness is built once.

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod bench;
mod cli;
mod index;
mod ioc;
mod package;
