//! Small shared helpers: hex, time and text escaping. Every other module takes them from here.

use std::time::{Duration, SystemTime};

/// Lower-case hex of any bytes (a SHA-256, a layer key).
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

/// 64 hex digits (any case) to a SHA-256.
pub fn parse_sha256(s: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// RFC 3339 UTC time, as every record carries it.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Parses a plain number of seconds, or a duration with units (`30d`, `12h`, `90m`, `45s`,
/// `1h 30m`, `2w`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(s).map_err(|e| DurationError { text: s.to_owned(), source: e })
}

/// Text that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a duration (like 30d, 12h, 90m, 45s): {source}")]
pub struct DurationError {
    pub text: String,
    pub source: humantime::DurationError,
}

/// Renders bytes for a one-line human message: control characters and invalid UTF-8 are
/// escaped, so a name cannot break the line or fake another.
pub fn printable(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_sha256() {
        let h = [0xabu8; 32];
        assert_eq!(hex(h).len(), 64);
        assert_eq!(parse_sha256(hex(h).as_bytes()), Some(h));
        assert_eq!(parse_sha256(hex(h).to_uppercase().as_bytes()), Some(h));
        assert_eq!(parse_sha256(b"abc"), None);
        assert_eq!(parse_sha256(&[b'g'; 64]), None);
    }

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(14 * 86400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn printable_escapes_controls_and_bad_utf8() {
        assert_eq!(printable(b"/tmp/a\nb\x1b[31m\xff\\"), "/tmp/a\\nb\\u{1b}[31m\\xff\\\\");
        assert_eq!(printable("/bin/ünï".as_bytes()), "/bin/ünï");
    }
}
