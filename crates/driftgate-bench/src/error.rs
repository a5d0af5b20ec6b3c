//! The benchmark's error type.

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Setup(String),
    #[error("bench: interrupted")]
    Interrupted,
    #[error("bench: unknown configuration {name:?} (known: {known})")]
    UnknownConfig { name: String, known: String },
}

pub(crate) fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}
