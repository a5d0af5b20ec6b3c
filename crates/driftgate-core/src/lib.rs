//! driftgate's core: what does not touch the kernel's hot path. The decision ([`engine::judge`],
//! pure), the [`policy`], the [`finding`] schema, the [`config`]uration, the image [`index`]
//! and IoC set, and small shared helpers ([`util`]). System calls come from `driftgate-sys`.

// The OCSF mapping (`export`) is one large `json!` literal.
#![recursion_limit = "256"]

pub mod aggregate;
pub mod config;
pub mod engine;
pub mod export;
pub mod finding;
pub mod index;
pub mod model;
pub mod net;
pub mod policy;
pub mod privilege;
pub mod ratelimit;
pub mod redact;
pub mod util;
