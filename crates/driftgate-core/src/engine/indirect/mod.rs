//! Programs that run other files: the dynamic loader (`ld.so /tmp/tool`) and interpreters
//! (`sh /tmp/x.sh`, `python3 /tmp/x.py`). The kernel raises an exec event only for the image's
//! loader or interpreter; the files it will run are named by its arguments and environment.
//! This module says which image files are loaders or interpreters, and ([`plan`]) which files
//! each exec will run, by each program's own rules ([`shell`] for the shells). Pure: names,
//! argument lists and environment values in, the lookups to make out.
//!
//! Out of reach by design: code given on the command line (`sh -c '…'`, `python3 -c`, `perl
//! -e`), read from stdin or a pipe, sourced by a running script (`. file`), or produced by the
//! interpreter itself (`eval`, a module imported by name, a script that downloads code). With
//! `[libraries]`, what an interpreter opens as code is decided at the open instead.

mod kinds;
mod plan;
pub mod python;
pub mod shell;

pub use kinds::*;
pub use plan::{multicall_applet, plan, starts_interpreter, Code, ExecContext, Plan};

#[cfg(test)]
mod tests;
