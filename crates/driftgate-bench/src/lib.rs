//! Exec-latency benchmarking: a feature for operators (`driftgate bench exec`) and the
//! project's own measurements (`cargo bench --bench exec_latency`).

pub mod elf;
mod error;
pub mod exec;
mod fixture;
pub mod index;
pub mod inside;
pub mod ioc;
pub mod kernelcost;
pub mod listener;
mod load;
mod measure;
pub mod open;
pub mod stats;
