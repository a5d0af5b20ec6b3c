//! What every subcommand shares: `--config`, logging, and the error type whose kind is the
//! exit status (sysexits.h), mapped in one place ([`CliError::exit_code`]).

use std::path::PathBuf;

use crate::exit;

/// A failed command. The message is printed once, by `main`, as `driftgate: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Input data was malformed (an image, a manifest bundle).
    #[error("{0}")]
    Data(String),
    /// Something named on the command line does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
    /// Needs root or a capability.
    #[error("{0}")]
    NoPerm(String),
    /// A configuration (the file, or a candidate) is invalid.
    #[error("{0}")]
    Config(String),
    /// Anything else (the daemon could not run, a check found problems).
    #[error("{0}")]
    Failure(String),
    /// Already reported line by line: only the exit status is left to give.
    #[error("")]
    Reported(i32),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Data(_) => exit::DATA,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Io(_) => exit::IO,
            CliError::NoPerm(_) => exit::NOPERM,
            CliError::Config(_) => exit::CONFIG,
            CliError::Failure(_) => exit::FAILURE,
            CliError::Reported(code) => *code,
        }
    }

    /// Prints the error (unless already reported) and gives the exit status.
    pub fn report(&self) -> i32 {
        if !matches!(self, CliError::Reported(_)) {
            eprintln!("driftgate: {self}");
        }
        self.exit_code()
    }
}

/// An I/O error on a named file: a missing file is "not found", anything else an I/O failure.
pub fn io_error(what: impl std::fmt::Display, e: &std::io::Error) -> CliError {
    match e.kind() {
        std::io::ErrorKind::NotFound => CliError::NotFound(format!("{what}: {e}")),
        std::io::ErrorKind::PermissionDenied => CliError::NoPerm(format!("{what}: {e}")),
        _ => CliError::Io(format!("{what}: {e}")),
    }
}

/// `--config` as every subcommand takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file [default: /etc/driftgate/driftgate.toml if it exists, else built-in defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration, or what is wrong with it (file, line and key).
    pub fn load(&self) -> Result<driftgate_core::config::Config, CliError> {
        load_config(self.config.as_deref())
    }
}

/// Loads a configuration (`None`: the default file or built-in defaults).
pub fn load_config(path: Option<&std::path::Path>) -> Result<driftgate_core::config::Config, CliError> {
    driftgate_core::config::Config::load(path)
        .map_err(|e| CliError::Config(format!("configuration error: {e}")))
}

/// Sets up logging: journald when running under systemd (or when asked), stderr otherwise.
///
/// Log lines go through a bounded queue to a thread of their own that does the writing: a
/// journald that stops reading (or a stderr pipe nobody drains) can only make that thread
/// wait, never a thread that decides execs. When the queue is full, lines are dropped and
/// counted ([`crate::sink::log_lines_dropped`]). Keep the returned guard alive: dropping it
/// flushes what is queued.
pub fn init_logging(verbose: bool) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if verbose { "debug" } else { "info" }));
    let builder = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16_384)
        .thread_name("driftgate-log");
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let journal = under_systemd.then(crate::sink::journald::LogLines::open).flatten();
    if let Some(lines) = journal {
        let (writer, guard) = builder.finish(OneLine { inner: lines, keep_esc: false });
        crate::sink::set_log_drop_counter(writer.error_counter());
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .without_time()
            .with_target(false)
            .with_ansi(false);
        let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
        return guard;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = builder.finish(OneLine { inner: std::io::stderr(), keep_esc: ansi });
    crate::sink::set_log_drop_counter(writer.error_counter());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(writer).with_target(false).with_ansi(ansi))
        .try_init();
    guard
}

/// Each log line stays one line: a field that carries a name a container chose (a path with a
/// newline, a terminal escape) is written with its control characters escaped. The logging
/// thread writes each event whole, in one call. `keep_esc`: the colours of a terminal.
struct OneLine<W> {
    inner: W,
    keep_esc: bool,
}

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, eol) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (buf, false),
        };
        let escape = |b: u8| (b < 0x20 && b != b'\t' && !(self.keep_esc && b == 0x1b)) || b == 0x7f;
        if !body.iter().any(|&b| escape(b)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b if escape(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                b => out.push(b),
            }
        }
        if eol {
            out.push(b'\n');
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_line_with_a_hostile_name_stays_one_line() {
        let mut w = OneLine { inner: Vec::new(), keep_esc: false };
        w.write_all(b"WARN mountpoint=/tmp/a\nFORGED=1\r\x1b[2J ok\n").unwrap();
        assert_eq!(w.inner, b"WARN mountpoint=/tmp/a\\nFORGED=1\\r\\x1b[2J ok\n");
        let mut t = OneLine { inner: Vec::new(), keep_esc: true };
        t.write_all(b"\x1b[31mERROR\x1b[0m a\tb\n").unwrap();
        assert_eq!(t.inner, b"\x1b[31mERROR\x1b[0m a\tb\n", "a terminal keeps its colours");
    }
}
