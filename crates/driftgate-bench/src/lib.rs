//! Exec-latency benchmarking: a feature for operators (`driftgate bench exec`) and the
//! project's own measurements (`cargo bench --bench exec_latency`).

pub mod elf;
pub mod exec;
pub mod index;
pub mod inside;
pub mod ioc;
pub mod stats;
