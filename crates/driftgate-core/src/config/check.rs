//! Validation of raw values, each error naming the file, the line and the key.

use std::ops::Range;
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use toml::Spanned;

use super::error::ConfigError;
use super::raw::{DurationValue, RawPolicy};

/// The text being validated and the name to show for it.
pub(super) struct Check<'a> {
    pub text: &'a str,
    pub shown: String,
}

impl Check<'_> {
    pub fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.shown.clone(),
            line: line_of(self.text, span.start),
            key: key.to_owned(),
            message,
        }
    }

    /// The value of `key` when `ok` holds for it (else an error saying `rule`), or `default`
    /// when it is not set.
    pub fn value<T: Copy>(
        &self,
        v: &Option<Spanned<T>>,
        key: &str,
        default: T,
        ok: impl Fn(T) -> bool,
        rule: &str,
    ) -> Result<T, ConfigError> {
        match v {
            Some(x) if !ok(*x.get_ref()) => Err(self.invalid(x.span(), key, rule.to_owned())),
            Some(x) => Ok(*x.get_ref()),
            None => Ok(default),
        }
    }

    /// `discovery.overlay_globs`: absolute path globs; `*` does not cross `/`.
    pub fn overlay_globs(&self, globs: &[Spanned<String>]) -> Result<(Vec<String>, GlobSet), ConfigError> {
        let mut set = GlobSetBuilder::new();
        let mut strings = Vec::new();
        for (i, g) in globs.iter().enumerate() {
            let key = format!("discovery.overlay_globs[{i}]");
            if !g.get_ref().starts_with('/') {
                return Err(self.invalid(g.span(), &key, "must be an absolute path glob".into()));
            }
            let glob = globset::GlobBuilder::new(g.get_ref())
                .literal_separator(true)
                .build()
                .map_err(|e| self.invalid(g.span(), &key, e.to_string()))?;
            set.add(glob);
            strings.push(g.get_ref().clone());
        }
        let set = set.build().map_err(|e| ConfigError::Parse {
            path: self.shown.clone(),
            message: format!("discovery.overlay_globs: {e}"),
        })?;
        Ok((strings, set))
    }

    /// `spool.max_age`: seconds or a duration with units.
    pub fn max_age(&self, v: &Option<Spanned<DurationValue>>) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        Ok(Some(match v.get_ref() {
            DurationValue::Secs(n) => Duration::from_secs(*n),
            DurationValue::Text(t) => crate::util::parse_duration(t)
                .map_err(|e| self.invalid(v.span(), "spool.max_age", e.to_string()))?,
        }))
    }

    /// `metrics.listen`: host:port, or an absolute unix socket path.
    pub fn metrics_listen(&self, v: &Option<Spanned<String>>) -> Result<Option<String>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let l = v.get_ref();
        if !(l.starts_with('/') || l.parse::<std::net::SocketAddr>().is_ok()) {
            let m = format!("{l:?} is neither host:port (like 127.0.0.1:9464) nor an absolute socket path");
            return Err(self.invalid(v.span(), "metrics.listen", m));
        }
        Ok(Some(l.clone()))
    }

    /// `[policy]`: each rule compiled, an error naming `policy.rules[i].field`.
    pub fn policy(&self, raw: &RawPolicy) -> Result<crate::policy::Policy, ConfigError> {
        let mut policy = crate::policy::Policy {
            image_copies: raw.image_copies.unwrap_or_default(),
            ..Default::default()
        };
        for (i, r) in raw.rules.iter().enumerate() {
            let rule = crate::policy::Rule::compile(i, r.get_ref())
                .map_err(|e| self.invalid(r.span(), &format!("policy.rules[{i}].{}", e.field), e.message))?;
            policy.rules.push(rule);
        }
        Ok(policy)
    }

    /// `[export] webhook*`: an `http://` or `https://host[:port][/path]` URL (TLS verified
    /// against the system's roots or `webhook_ca_file`, with an optional client certificate),
    /// a queue of at least 1, a timeout of 1 to 60 s.
    pub fn webhook(&self, raw: &super::raw::RawExport) -> Result<Option<Webhook>, ConfigError> {
        let Some(url) = &raw.webhook else { return Ok(None) };
        let files = [&raw.webhook_ca_file, &raw.webhook_client_cert, &raw.webhook_client_key];
        let t = self.target(url, "export.webhook", "webhook_", files)?;
        let (authority, path, tls) = (t.authority, t.path, t.tls);
        let headers = self.headers(url, "export.webhook_headers", &raw.webhook_headers, |k| k.to_owned())?;
        Ok(Some(Webhook {
            url: url.get_ref().clone(),
            authority,
            path: if path.is_empty() { "/".into() } else { path },
            tls,
            format: raw.webhook_format.unwrap_or_default(),
            queue: self.value(
                &raw.webhook_queue,
                "export.webhook_queue",
                4096,
                |v| v >= 1,
                "must be at least 1",
            )? as usize,
            timeout: std::time::Duration::from_secs(self.value(
                &raw.webhook_timeout_secs,
                "export.webhook_timeout_secs",
                5,
                |v| (1..=60).contains(&v),
                "must be between 1 and 60",
            )?),
            headers,
        }))
    }

    /// An `http://` or `https://host[:port][/path]` endpoint (`key`), with the TLS files
    /// (`<prefix>ca_file`, `<prefix>client_cert`, `<prefix>client_key`) an `https://` one may
    /// name.
    pub(super) fn target(
        &self,
        url: &Spanned<String>,
        key: &str,
        prefix: &str,
        files: [&Option<Spanned<std::path::PathBuf>>; 3],
    ) -> Result<Target, ConfigError> {
        let bad = |m: &str| self.invalid(url.span(), key, m.to_owned());
        let (rest, https) = match url.get_ref().strip_prefix("https://") {
            Some(r) => (r, true),
            None => (
                url.get_ref()
                    .strip_prefix("http://")
                    .ok_or_else(|| bad("must be an http:// or https:// URL"))?,
                false,
            ),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace()) {
            return Err(bad("needs a host (and optional port), without user info"));
        }
        // host, [v6 address] and an optional port; without one, the scheme's.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) =
                    v6.split_once(']').ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
                (h, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(bad("the port must be a number"));
        }
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("the path must not contain spaces or control characters"));
        }
        let host = host.to_owned();
        let authority = if port.is_some() {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let file = |v: &Option<Spanned<std::path::PathBuf>>| v.as_ref().map(|p| p.get_ref().clone());
        let (ca_file, client_cert, client_key) = (file(files[0]), file(files[1]), file(files[2]));
        if !https && (ca_file.is_some() || client_cert.is_some() || client_key.is_some()) {
            return Err(bad(&format!("{prefix}ca_file and {prefix}client_cert/key are for an https:// URL")));
        }
        if client_cert.is_some() != client_key.is_some() {
            return Err(bad(&format!("{prefix}client_cert and {prefix}client_key go together")));
        }
        let tls = https.then_some(WebhookTls { server_name: host, ca_file, client_cert, client_key });
        Ok(Target { authority, path: path.to_owned(), tls })
    }

    /// `[export.otlp]`: an endpoint (`http://collector:4317`; `https://` with TLS), the
    /// protocol, TLS files, queue, timeout and headers.
    pub fn otlp(&self, raw: &Option<Spanned<super::raw::RawOtlp>>) -> Result<Option<Otlp>, ConfigError> {
        let Some(table) = raw else { return Ok(None) };
        let raw = table.get_ref();
        let Some(url) = &raw.endpoint else {
            return Err(self.invalid(
                table.span(),
                "export.otlp.endpoint",
                "[export.otlp] needs an endpoint (http://collector:4317)".into(),
            ));
        };
        let files = [&raw.ca_file, &raw.client_cert, &raw.client_key];
        let t = self.target(url, "export.otlp.endpoint", "", files)?;
        let protocol = raw.protocol.unwrap_or_default();
        // OTLP/HTTP: the logs path is appended to an endpoint that has none.
        let path = match protocol {
            super::raw::OtlpProtocol::HttpProtobuf if t.path.is_empty() || t.path == "/" => {
                "/v1/logs".to_owned()
            }
            _ => t.path,
        };
        let headers = self.headers(url, "export.otlp.headers", &raw.headers, str::to_ascii_lowercase)?;
        Ok(Some(Otlp {
            endpoint: url.get_ref().clone(),
            protocol,
            authority: t.authority,
            path,
            tls: t.tls,
            queue: self.value(&raw.queue, "export.otlp.queue", 4096, |v| v >= 1, "must be at least 1")?
                as usize,
            timeout: std::time::Duration::from_secs(self.value(
                &raw.timeout_secs,
                "export.otlp.timeout_secs",
                5,
                |v| (1..=60).contains(&v),
                "must be between 1 and 60",
            )?),
            headers,
        }))
    }

    /// Extra request headers (`key` is their table): names of letters, digits, `-` and `_`
    /// (passed through `name`); values without control characters, where `${NAME}` stands for
    /// the daemon's environment variable NAME (see [`expand_headers`]; only its form is checked
    /// here, so that a command that reads the file for its paths needs no secrets). An error
    /// names the header.
    fn headers(
        &self,
        url: &Spanned<String>,
        key: &str,
        headers: &std::collections::BTreeMap<String, String>,
        name: impl Fn(&str) -> String,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::with_capacity(headers.len());
        for (k, v) in headers {
            let ok_name =
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            expand_env(v, |_| Some(String::new()))
                .map_err(|why| self.invalid(url.span(), &format!("{key}.{k}"), why))?;
            if !ok_name || v.chars().any(|c| c.is_control()) {
                return Err(self.invalid(url.span(), &format!("{key}.{k}"), "not a valid header".into()));
            }
            out.push((name(k), v.clone()));
        }
        Ok(out)
    }

    /// `findings.redact`, an error naming the entry.
    pub fn redact(&self, v: &Option<Spanned<Vec<String>>>) -> Result<crate::redact::Redactor, ConfigError> {
        let Some(v) = v else { return Ok(crate::redact::Redactor::defaults()) };
        crate::redact::Redactor::new(v.get_ref())
            .map_err(|e| self.invalid(v.span(), &format!("findings.redact[{}]", e.index), e.message))
    }

    /// `scripts.interpreters`, an error naming the entry.
    pub fn interpreters(
        &self,
        v: &Option<Spanned<Vec<String>>>,
    ) -> Result<crate::engine::indirect::Interpreters, ConfigError> {
        let Some(v) = v else { return Ok(crate::engine::indirect::Interpreters::defaults()) };
        crate::engine::indirect::Interpreters::new(v.get_ref()).map_err(|e| {
            let idx = e.index.map(|i| format!("[{i}]")).unwrap_or_default();
            self.invalid(v.span(), &format!("scripts.interpreters{idx}"), e.message)
        })
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// An endpoint: where to connect, the request path (empty when the URL has none), its TLS.
pub(super) struct Target {
    pub(super) authority: String,
    pub(super) path: String,
    pub(super) tls: Option<WebhookTls>,
}

/// `[export.otlp]`: findings as OpenTelemetry log records, to a Collector's `otlp` receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// As configured, for status and logs.
    pub endpoint: String,
    pub protocol: super::raw::OtlpProtocol,
    /// `host:port`, and for OTLP/HTTP the path logs are posted to.
    pub authority: String,
    pub path: String,
    pub tls: Option<WebhookTls>,
    pub queue: usize,
    pub timeout: std::time::Duration,
    /// Extra headers (gRPC metadata), names in lower case.
    pub headers: Vec<(String, String)>,
}

/// TLS for an `https://` webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTls {
    /// The name the server's certificate must be for (the URL's host).
    pub server_name: String,
    /// CA certificates (PEM) to verify the server with; without, the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate chain and its private key (PEM).
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

/// `[export] webhook`: each finding POSTed as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `host:port` to connect to, and the request's `Host` and path.
    pub url: String,
    pub authority: String,
    pub path: String,
    /// `https://`: how the server is verified and the client known.
    pub tls: Option<WebhookTls>,
    pub format: super::raw::WebhookFormat,
    /// Findings waiting to be sent at most; beyond, they are dropped (and counted).
    pub queue: usize,
    pub timeout: std::time::Duration,
    pub headers: Vec<(String, String)>,
}

/// The headers with each `${NAME}` replaced by the environment variable NAME (a token from a
/// Kubernetes Secret or a systemd `EnvironmentFile=` that should not sit in the configuration
/// file), as the daemon sends them. `key` is their table (`export.otlp.headers`); an error
/// names the header and the variable that is not set, or a value that is then not valid.
pub fn expand_headers(key: &str, headers: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let value =
                expand_env(v, |n| std::env::var(n).ok()).map_err(|why| format!("`{key}.{k}`: {why}"))?;
            if value.chars().any(|c| c.is_control()) {
                return Err(format!("`{key}.{k}`: its value from the environment is not a valid header"));
            }
            Ok((k.clone(), value))
        })
        .collect()
}

/// `${NAME}` in `v` replaced by `env(NAME)`; any other `$` is kept. An unset variable, or a
/// `${` without a valid name and `}`, is an error that says which.
pub(super) fn expand_env(v: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or_else(|| format!("`${{` without a closing `}}` in {v:?}"))?;
        let var = &after[..end];
        let valid = var.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!("`${{{var}}}` is not an environment variable's name"));
        }
        out.push_str(&env(var).ok_or_else(|| format!("the environment variable {var} is not set"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
