//! Origin policy: the defence against cross-site WebSocket hijacking.
//!
//! Browsers attach `Origin` to every WebSocket handshake, and handshakes get no CORS protection, so
//! a page on another site could open a socket with the user's cookies or a token it found. The
//! guard checks `Origin` first, before any credential work.

use std::fmt;

use crate::head::Head;
use http::header::{HOST, ORIGIN};

use crate::error::{ConfigError, ConfigErrorKind};

/// Which `Origin` values a guard accepts.
///
/// A request without `Origin` (a command-line client, another server) is allowed by every policy
/// unless the guard requires an origin. `Origin: null`, a malformed value or two `Origin` headers
/// are refused by every policy except [`any`](Self::any).
#[derive(Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    SameOrigin,
    AllowList(Box<[Origin]>),
    RejectAny,
    Any,
}

impl OriginPolicy {
    /// The default: the origin's `host[:port]` must equal the request's `Host` (default ports
    /// ignored, case-insensitive).
    #[must_use]
    pub fn same_origin() -> Self {
        Self {
            kind: Kind::SameOrigin,
        }
    }

    /// Only these origins, compared exactly after normalisation (lower-case scheme and host,
    /// default port dropped). An entry with a path, query, user info or wildcard is a
    /// [`ConfigError`], and so is an empty list.
    ///
    /// ```
    /// use axum_keyguard::OriginPolicy;
    ///
    /// let policy = OriginPolicy::allow_list(["https://app.example.com", "http://localhost:3000"])?;
    /// assert!(OriginPolicy::allow_list(["https://app.example.com/"]).is_err());
    /// assert!(OriginPolicy::allow_list(Vec::<String>::new()).is_err());
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn allow_list<I, S>(origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for origin in origins {
            let origin = origin.as_ref();
            let parsed = OriginRef::parse(origin).ok_or_else(|| {
                ConfigError::new(
                    ConfigErrorKind::InvalidOrigin,
                    format!("allowed origin {origin:?} is not of the form scheme://host[:port]"),
                )
            })?;
            list.push(parsed.to_owned());
        }
        if list.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidOrigin,
                "the origin allow-list is empty",
            ));
        }
        Ok(Self {
            kind: Kind::AllowList(list.into_boxed_slice()),
        })
    }

    /// Refuses every request that carries `Origin` (servers meant only for non-browser clients,
    /// such as an agent server driven only by its own command-line client).
    #[must_use]
    pub fn reject_any() -> Self {
        Self {
            kind: Kind::RejectAny,
        }
    }

    /// Does not check `Origin` at all. Only for servers whose credentials a browser can never
    /// hold or send by itself; the guard still checks every credential.
    #[must_use]
    pub fn any() -> Self {
        Self { kind: Kind::Any }
    }

    /// Whether `head` passes this policy. `require` refuses requests without `Origin`.
    pub(crate) fn allows(&self, head: Head<'_>, require: bool) -> bool {
        let mut origins = head.headers.get_all(ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return !require;
        };
        if matches!(self.kind, Kind::Any) {
            return true;
        }
        if origins.next().is_some() {
            return false;
        }
        let Some(origin) = std::str::from_utf8(origin.as_bytes())
            .ok()
            .and_then(OriginRef::parse)
        else {
            return false;
        };
        match &self.kind {
            // Only web origins can be the server's own: `http`/`https` (and `ws`/`wss`).
            Kind::SameOrigin => {
                default_port(origin.scheme).is_some()
                    && request_host(head).is_some_and(|host| origin.same_host(host))
            }
            Kind::AllowList(list) => list.iter().any(|allowed| origin.matches(allowed)),
            Kind::RejectAny => false,
            Kind::Any => true,
        }
    }
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::same_origin()
    }
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::SameOrigin => f.write_str("SameOrigin"),
            Kind::AllowList(list) => f.debug_tuple("AllowList").field(list).finish(),
            Kind::RejectAny => f.write_str("RejectAny"),
            Kind::Any => f.write_str("Any"),
        }
    }
}

/// The request's own authority: `Host` (HTTP/1.1) or the URI authority (HTTP/2).
fn request_host(head: Head<'_>) -> Option<&str> {
    let mut hosts = head.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok(),
        (Some(_), Some(_)) => None,
        (None, _) => head.uri.authority().map(|a| a.as_str()),
    }
}

/// A normalised origin kept by an allow-list.
#[derive(Clone, PartialEq, Eq)]
struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: Option<u16>,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// A parsed `scheme://host[:port]`, borrowed; the port is `None` when it is the scheme's default.
#[derive(Debug, Clone, Copy)]
struct OriginRef<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> OriginRef<'a> {
    fn parse(value: &'a str) -> Option<Self> {
        let (scheme, authority) = value.split_once("://")?;
        let mut chars = scheme.chars();
        if !chars.next()?.is_ascii_alphabetic()
            || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.filter(|&p| Some(p) != default_port(scheme));
        Some(Self { scheme, host, port })
    }

    fn to_owned(self) -> Origin {
        Origin {
            scheme: self.scheme.to_ascii_lowercase().into_boxed_str(),
            host: self.host.to_ascii_lowercase().into_boxed_str(),
            port: self.port,
        }
    }

    fn matches(&self, allowed: &Origin) -> bool {
        self.scheme.eq_ignore_ascii_case(&allowed.scheme)
            && self.host.eq_ignore_ascii_case(&allowed.host)
            && self.port == allowed.port
    }

    fn same_host(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_host_port(host_header) else {
            return false;
        };
        let port = port.filter(|&p| Some(p) != default_port(self.scheme));
        self.host.eq_ignore_ascii_case(host) && self.port == port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

/// Splits `host[:port]` (IPv6 in brackets). `None` for anything else: a path, user info, an empty
/// host or port, a port that is not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        if !host[1..end]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::request::Parts;
    use http::Request;

    fn parts(origins: &[&str], host: Option<&str>) -> Parts {
        let mut builder = Request::get("/ws");
        for origin in origins {
            builder = builder.header(ORIGIN, *origin);
        }
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let p = OriginPolicy::same_origin();
        let ok = |o: &str, h: &str| p.allows(Head::from(&parts(&[o], Some(h))), false);
        assert!(ok("http://localhost:8000", "localhost:8000"));
        assert!(ok("http://LOCALHOST:8000", "localhost:8000"));
        assert!(ok("https://example.com", "example.com"));
        assert!(ok("https://example.com:443", "example.com"));
        assert!(ok("https://example.com", "example.com:443"));
        assert!(ok("http://[::1]:8000", "[::1]:8000"));
        assert!(!ok("http://localhost:9000", "localhost:8000"));
        assert!(!ok("http://evil.example", "localhost:8000"));
        assert!(!ok("null", "localhost:8000"));
        assert!(!ok("http://localhost:8000/", "localhost:8000"));
        assert!(!ok("http://user@localhost:8000", "localhost:8000"));
        assert!(!ok("localhost:8000", "localhost:8000"));
        // Only web schemes can be the server's own origin.
        assert!(ok("ws://localhost:8000", "localhost:8000"));
        assert!(ok("wss://example.com", "example.com"));
        for scheme in [
            "ftp",
            "file",
            "chrome-extension",
            "gopher",
            "x-custom",
            "javascript",
        ] {
            assert!(
                !ok(&format!("{scheme}://localhost:8000"), "localhost:8000"),
                "{scheme}"
            );
        }
    }

    #[test]
    fn missing_origin_is_allowed_unless_required() {
        for policy in [
            OriginPolicy::same_origin(),
            OriginPolicy::reject_any(),
            OriginPolicy::any(),
        ] {
            assert!(policy.allows(Head::from(&parts(&[], Some("h"))), false));
            assert!(!policy.allows(Head::from(&parts(&[], Some("h"))), true));
        }
    }

    #[test]
    fn two_origin_headers_are_refused() {
        let p = parts(&["http://h", "http://h"], Some("h"));
        assert!(!OriginPolicy::same_origin().allows(Head::from(&p), false));
    }

    #[test]
    fn allow_list_matches_exactly_after_normalisation() {
        let policy = OriginPolicy::allow_list(["https://App.Example.com:443"]).expect("valid");
        let ok = |o: &str| policy.allows(Head::from(&parts(&[o], Some("other"))), false);
        assert!(ok("https://app.example.com"));
        assert!(ok("HTTPS://APP.EXAMPLE.COM"));
        assert!(ok("https://app.example.com:443"));
        for bad in [
            "https://app.example.com.evil.com",
            "https://evilapp.example.com",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com/",
            "https://app.example.com/path",
            "null",
            "",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn reject_any_refuses_every_origin() {
        let p = parts(&["http://localhost:8000"], Some("localhost:8000"));
        assert!(!OriginPolicy::reject_any().allows(Head::from(&p), false));
        assert!(OriginPolicy::any().allows(Head::from(&p), false));
    }

    #[test]
    fn allow_list_refuses_malformed_entries() {
        for bad in [
            "*",
            "https://*.example.com",
            "example.com",
            "https://",
            "https://h:x",
        ] {
            assert!(OriginPolicy::allow_list([bad]).is_err(), "{bad:?}");
        }
    }
}
