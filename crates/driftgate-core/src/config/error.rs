//! Configuration errors: each names the file, and where known the line and the key.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: line {line}: `{key}`: {message}")]
    Invalid { path: String, line: usize, key: String, message: String },
}
