//! Secrets in command lines, replaced before a finding reaches any sink (`[findings] redact`).
//!
//! A pattern is a glob (`*`, `?`), case-insensitive:
//! - a flag (`--password`, `--*token*`, `-k`): the value given with it is replaced, attached
//!   (`--password=hunter2`) or as the next argument (`--password hunter2`); `--flag=*` says
//!   the attached form only;
//! - a variable name (`AWS_SECRET_ACCESS_KEY`, `*TOKEN*`): the value of `NAME=value`, as a whole
//!   argument (`env TOKEN=x cmd`) or as a word inside one (`sh -c "TOKEN=x curl ..."`).
//!
//! With any pattern set, the password of a URL (`https://user:pass@host`) is replaced too.
//! The value becomes [`REDACTED`]; the finding says that it was (`args_redacted`).

use globset::{GlobBuilder, GlobMatcher};

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The default `[findings] redact`: common secret flags and variable names.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "--*password*",
    "--*passwd*",
    "--*token*",
    "--*secret*",
    "--*api-key*",
    "--*apikey*",
    "--*access-key*",
    "*PASSWORD*",
    "*PASSWD*",
    "*TOKEN*",
    "*SECRET*",
    "*API_KEY*",
    "*APIKEY*",
    "*ACCESS_KEY*",
    "*PRIVATE_KEY*",
    "*CREDENTIAL*",
];

/// A bad pattern: its index and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{index}]: {message}")]
pub struct PatternError {
    pub index: usize,
    pub message: String,
}

#[derive(Debug, Clone)]
struct Flag {
    name: GlobMatcher,
    /// `--flag=*`: only the attached form.
    attached_only: bool,
}

/// The compiled patterns.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<String>,
    flags: Vec<Flag>,
    names: Vec<GlobMatcher>,
}

impl Redactor {
    pub fn new(patterns: &[String]) -> Result<Redactor, PatternError> {
        let mut r = Redactor { patterns: patterns.to_vec(), ..Default::default() };
        for (index, p) in patterns.iter().enumerate() {
            let bad = |message: String| PatternError { index, message };
            let (name, attached_only) = match p.strip_suffix("=*") {
                Some(n) => (n, true),
                None => (p.as_str(), false),
            };
            if name.is_empty() || name.contains('=') || name.chars().any(char::is_whitespace) {
                return Err(bad(format!("{p:?} is not a flag or a variable name")));
            }
            let glob = GlobBuilder::new(name)
                .case_insensitive(true)
                .literal_separator(false)
                .build()
                .map_err(|e| bad(e.to_string()))?
                .compile_matcher();
            if name.starts_with('-') {
                r.flags.push(Flag { name: glob, attached_only });
            } else if attached_only {
                return Err(bad(format!(
                    "{p:?}: `=*` is for flags; a variable name is matched as NAME=value"
                )));
            } else {
                r.names.push(glob);
            }
        }
        Ok(r)
    }

    pub fn defaults() -> Redactor {
        let p: Vec<String> = DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect();
        Redactor::new(&p).expect("the default patterns are valid")
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    fn is_empty(&self) -> bool {
        self.flags.is_empty() && self.names.is_empty()
    }

    /// Replaces the secrets in `args` (`args[0]` is the program); whether any was.
    pub fn redact(&self, args: &mut [Vec<u8>]) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut any = false;
        let mut next_is_value = false;
        for a in args.iter_mut() {
            if next_is_value {
                next_is_value = false;
                *a = REDACTED.as_bytes().to_vec();
                any = true;
                continue;
            }
            let text = String::from_utf8_lossy(a).into_owned();
            if text.starts_with('-') {
                if let Some((flag, _)) = text.split_once('=') {
                    if self.flags.iter().any(|f| f.name.is_match(flag)) {
                        *a = format!("{flag}={REDACTED}").into_bytes();
                        any = true;
                        continue;
                    }
                } else if self.flags.iter().any(|f| !f.attached_only && f.name.is_match(&text)) {
                    next_is_value = true;
                    continue;
                }
            }
            if let Some(out) = self.redact_words(&text) {
                *a = out.into_bytes();
                any = true;
            }
        }
        any
    }

    /// Replaces the secrets in the arguments of a finding as text; whether any was.
    pub fn redact_text(&self, args: &mut [String]) -> bool {
        let mut bytes: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        if !self.redact(&mut bytes) {
            return false;
        }
        for (a, b) in args.iter_mut().zip(bytes) {
            *a = String::from_utf8_lossy(&b).into_owned();
        }
        true
    }

    /// Inside one argument (a command string): `NAME=value` words whose name matches, the
    /// words after a secret flag and `--flag=value`, and URL passwords.
    fn redact_words(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut rest = text;
        let mut after_flag = false;
        while !rest.is_empty() {
            // A word: up to whitespace, `;`, `&`, `|` or a quote.
            let end = rest.find(|c: char| c.is_whitespace() || ";&|'\"`".contains(c)).unwrap_or(rest.len());
            let (word, tail) = rest.split_at(end);
            let flag_value = word.split_once('=').filter(|(f, _)| f.starts_with('-') && self.flag(f, true));
            let redacted = if word.is_empty() {
                None
            } else if after_flag {
                after_flag = false;
                Some(REDACTED.to_string())
            } else if let Some((f, _)) = flag_value {
                Some(format!("{f}={REDACTED}"))
            } else if word.starts_with('-') && !word.contains('=') && self.flag(word, false) {
                after_flag = true;
                None
            } else {
                self.redact_word(word)
            };
            match redacted {
                Some(w) => {
                    out.push_str(&w);
                    changed = true;
                }
                None => out.push_str(word),
            }
            let sep_len = tail.chars().next().map_or(0, char::len_utf8);
            out.push_str(&tail[..sep_len]);
            rest = &tail[sep_len..];
        }
        changed.then_some(out)
    }

    /// Whether `name` is a secret flag: with its value attached, or (`attached` false) given
    /// as the next word.
    fn flag(&self, name: &str, attached: bool) -> bool {
        self.flags.iter().any(|f| (attached || !f.attached_only) && f.name.is_match(name))
    }

    fn redact_word(&self, word: &str) -> Option<String> {
        // `export NAME=value`, `NAME=value`, `--env=NAME=value` (a flag handled above aside).
        if let Some((name, value)) = word.split_once('=') {
            let bare = name.trim_start_matches('-');
            let bare = bare.rsplit('=').next().unwrap_or(bare);
            if !value.is_empty() && !bare.is_empty() && self.names.iter().any(|g| g.is_match(bare)) {
                return Some(format!("{name}={REDACTED}"));
            }
            // `-e NAME=value` style values of other flags: `--env=TOKEN=x`.
            if let Some((inner, v)) = value.split_once('=') {
                if !v.is_empty() && self.names.iter().any(|g| g.is_match(inner)) {
                    return Some(format!("{name}={inner}={REDACTED}"));
                }
            }
        }
        // scheme://user:password@host
        let at = word.find("://")?;
        let auth_start = at + 3;
        let auth_end =
            auth_start + word[auth_start..].find(['/', '?', '#']).unwrap_or(word.len() - auth_start);
        let auth = &word[auth_start..auth_end];
        let (userinfo, _) = auth.rsplit_once('@')?;
        let (user, pass) = userinfo.split_once(':')?;
        if pass.is_empty() {
            return None;
        }
        Some(format!("{}{user}:{REDACTED}@{}", &word[..auth_start], &word[auth_start + userinfo.len() + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &Redactor, cmd: &[&str]) -> (Vec<String>, bool) {
        let mut a: Vec<Vec<u8>> = cmd.iter().map(|s| s.as_bytes().to_vec()).collect();
        let any = r.redact(&mut a);
        (a.into_iter().map(|b| String::from_utf8(b).unwrap()).collect(), any)
    }

    #[test]
    fn secret_flags_variables_and_url_passwords_are_replaced() {
        let r = Redactor::defaults();
        let cases: &[(&[&str], &[&str])] = &[
            (&["mysql", "--password=hunter2", "db"], &["mysql", "--password=[REDACTED]", "db"]),
            (&["app", "--db-password", "hunter2", "-v"], &["app", "--db-password", "[REDACTED]", "-v"]),
            (&["gh", "--Token", "ghp_x"], &["gh", "--Token", "[REDACTED]"]),
            (
                &["env", "AWS_SECRET_ACCESS_KEY=abc", "GITHUB_TOKEN=t", "HOME=/root", "cmd"],
                &["env", "AWS_SECRET_ACCESS_KEY=[REDACTED]", "GITHUB_TOKEN=[REDACTED]", "HOME=/root", "cmd"],
            ),
            (
                &["sh", "-c", "export API_TOKEN=abc; curl -u x https://u:pw@h/p"],
                &["sh", "-c", "export API_TOKEN=[REDACTED]; curl -u x https://u:[REDACTED]@h/p"],
            ),
            (
                &["sh", "-c", "app --token  tok1 --password=pw2; x"],
                &["sh", "-c", "app --token  [REDACTED] --password=[REDACTED]; x"],
            ),
            (
                &["docker", "run", "--env=DB_PASSWORD=s3cret", "img"],
                &["docker", "run", "--env=DB_PASSWORD=[REDACTED]", "img"],
            ),
            (&["curl", "https://example.com/a?b=c"], &["curl", "https://example.com/a?b=c"]),
            (&["ls", "-la", "/tmp"], &["ls", "-la", "/tmp"]),
        ];
        for (cmd, want) in cases {
            let (got, any) = run(&r, cmd);
            assert_eq!(got, *want, "{cmd:?}");
            assert_eq!(any, cmd != want, "{cmd:?}");
        }
    }

    #[test]
    fn patterns_are_checked_and_an_empty_list_redacts_nothing() {
        let r = Redactor::new(&["--pin=*".to_string(), "SESSION".to_string()]).unwrap();
        assert_eq!(
            run(&r, &["a", "--pin=1234", "--pin", "5678"]).0,
            ["a", "--pin=[REDACTED]", "--pin", "5678"]
        );
        assert_eq!(run(&r, &["a", "session=x"]).0, ["a", "session=[REDACTED]"], "case-insensitive");
        let off = Redactor::new(&[]).unwrap();
        assert_eq!(
            run(&off, &["a", "--password=x", "https://u:p@h"]),
            (vec!["a".into(), "--password=x".into(), "https://u:p@h".into()], false)
        );
        assert!(Redactor::new(&["".into()]).is_err());
        assert!(Redactor::new(&["a b".into()]).is_err());
        assert!(Redactor::new(&["TOKEN=*".into()]).is_err());
        assert_eq!(Redactor::new(&["ok".into(), "[".into()]).unwrap_err().index, 1);
    }
}
