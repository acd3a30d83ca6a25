//! Where credentials come from: query parameter, named header, `Authorization: Bearer`.

use std::borrow::Cow;
use std::fmt;

use crate::head::Head;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::rejection::AuthRejectionKind;

/// The default query parameter name, `session_api_key`.
pub(crate) const DEFAULT_QUERY_PARAM: &str = "session_api_key";

/// The default header name, `X-Session-API-Key` (header names are case-insensitive).
pub(crate) const DEFAULT_HEADER: &str = "x-session-api-key";

/// The default prefix of a subprotocol credential (the Kubernetes convention):
/// `base64url.bearer.authorization.k8s.io.<base64url token without padding>`.
pub(crate) const DEFAULT_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// Which kind of source a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    /// A query parameter.
    Query,
    /// A named header such as `X-Session-API-Key`.
    Header,
    /// `Authorization: Bearer`.
    Bearer,
    /// A `Sec-WebSocket-Protocol` token entry.
    Subprotocol,
    /// The first WebSocket message.
    Message,
    /// No credential: a guard [without authentication](crate::GuardBuilder::with_anonymous).
    Anonymous,
}

impl SourceKind {
    /// The lower-case name used in logs and by the reference server (`"query"`, `"header"`, …).
    ///
    /// ```
    /// assert_eq!(axum_keyguard::SourceKind::Bearer.as_str(), "bearer");
    /// ```
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Header => "header",
            Self::Bearer => "bearer",
            Self::Subprotocol => "subprotocol",
            Self::Message => "message",
            Self::Anonymous => "none",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One place a guard looks for a credential. A guard holds an ordered list of them.
///
/// ```
/// use axum_keyguard::Source;
///
/// let sources = [
///     Source::query("token"),
///     Source::header("X-Api-Key")?,
///     Source::bearer(),
/// ];
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    spec: Spec,
}

#[derive(Clone, PartialEq, Eq)]
enum Spec {
    Query { name: Box<str>, on_rest: bool },
    Header { name: HeaderName },
    Bearer,
    Subprotocol { prefix: Box<str> },
}

impl Source {
    /// A query parameter. Honoured only on WebSocket upgrade requests (browsers cannot set
    /// headers there) unless [`on_rest`](Self::on_rest) opts in.
    #[must_use]
    pub fn query(name: impl Into<String>) -> Self {
        Self {
            spec: Spec::Query {
                name: name.into().into_boxed_str(),
                on_rest: false,
            },
        }
    }

    /// Lets a query source be used on REST requests too. Such responses get
    /// `Cache-Control: no-store` and `Referrer-Policy: no-referrer` from the layer.
    /// No effect on other sources.
    #[must_use]
    pub fn on_rest(mut self, enabled: bool) -> Self {
        if let Spec::Query { on_rest, .. } = &mut self.spec {
            *on_rest = enabled;
        }
        self
    }

    /// A named header. The name is case-insensitive; `Authorization` is not allowed here (use
    /// [`bearer`](Self::bearer)).
    pub fn header(name: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::try_from(name).map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::InvalidName,
                "invalid credential header name",
            )
            .with_source(e)
        })?;
        if name == AUTHORIZATION {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidName,
                "use Source::bearer() for the Authorization header",
            ));
        }
        Ok(Self {
            spec: Spec::Header { name },
        })
    }

    /// `Authorization: Bearer <token68>` (RFC 6750 §2.1).
    #[must_use]
    pub fn bearer() -> Self {
        Self { spec: Spec::Bearer }
    }

    /// A `Sec-WebSocket-Protocol` entry `<prefix><base64url token>` (browsers can set
    /// subprotocols but no other header). Honoured only on upgrades. The client must offer a
    /// second, real protocol beside it; the token entry is removed from the request once verified
    /// and is never echoed. With the default prefix this is the Kubernetes convention.
    #[must_use]
    pub fn subprotocol() -> Self {
        Self::subprotocol_with_prefix(DEFAULT_SUBPROTOCOL_PREFIX)
    }

    /// A subprotocol source with another prefix.
    #[must_use]
    pub fn subprotocol_with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            spec: Spec::Subprotocol {
                prefix: prefix.into().into_boxed_str(),
            },
        }
    }

    /// What kind of source this is.
    #[must_use]
    pub fn kind(&self) -> SourceKind {
        match self.spec {
            Spec::Query { .. } => SourceKind::Query,
            Spec::Header { .. } => SourceKind::Header,
            Spec::Bearer => SourceKind::Bearer,
            Spec::Subprotocol { .. } => SourceKind::Subprotocol,
        }
    }

    /// The subprotocol prefix, if this is a subprotocol source.
    #[must_use]
    pub fn subprotocol_prefix(&self) -> Option<&str> {
        match &self.spec {
            Spec::Subprotocol { prefix } => Some(prefix),
            _ => None,
        }
    }

    /// The header this source reads, if it reads one (for `SetSensitiveRequestHeadersLayer`).
    #[must_use]
    pub fn header_name(&self) -> Option<&HeaderName> {
        match &self.spec {
            Spec::Header { name } => Some(name),
            Spec::Bearer => Some(&AUTHORIZATION),
            Spec::Subprotocol { .. } => Some(&SEC_WEBSOCKET_PROTOCOL),
            Spec::Query { .. } => None,
        }
    }

    /// The query parameter this source reads, if it is a query source.
    #[must_use]
    pub fn query_name(&self) -> Option<&str> {
        match &self.spec {
            Spec::Query { name, .. } => Some(name),
            _ => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match &self.spec {
            Spec::Query { name, .. } if name.is_empty() => Err(ConfigError::new(
                ConfigErrorKind::InvalidName,
                "query parameter name must not be empty",
            )),
            Spec::Subprotocol { prefix } if prefix.is_empty() || !prefix.bytes().all(is_tchar) => {
                Err(ConfigError::new(
                    ConfigErrorKind::InvalidName,
                    "a subprotocol prefix must be a non-empty token",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Finds this source's credential in `head`: `Ok(None)` when absent, an error kind when
    /// present but unusable (duplicate, empty, malformed, not UTF-8, longer than `max_len`).
    pub(crate) fn find<'a>(
        &self,
        head: Head<'a>,
        upgrade: bool,
        max_len: usize,
    ) -> Result<Option<Cow<'a, str>>, AuthRejectionKind> {
        match &self.spec {
            Spec::Query { name, on_rest } => {
                if !upgrade && !on_rest {
                    return Ok(None);
                }
                match head.uri.query() {
                    Some(query) => find_query(query, name, max_len),
                    None => Ok(None),
                }
            }
            Spec::Header { name } => match single_header(head.headers, name)? {
                None => Ok(None),
                Some(raw) => header_value(raw, max_len).map(Some),
            },
            Spec::Bearer => match single_header(head.headers, &AUTHORIZATION)? {
                None => Ok(None),
                Some(raw) => parse_bearer(raw, max_len).map(|t| t.map(Cow::Borrowed)),
            },
            Spec::Subprotocol { prefix } => {
                if !upgrade {
                    return Ok(None);
                }
                find_subprotocol(head.headers, prefix, max_len)
            }
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.spec {
            Spec::Query { name, on_rest } => f
                .debug_struct("Query")
                .field("name", name)
                .field("on_rest", on_rest)
                .finish(),
            Spec::Header { name } => f.debug_tuple("Header").field(name).finish(),
            Spec::Bearer => f.write_str("Bearer"),
            Spec::Subprotocol { prefix } => f.debug_tuple("Subprotocol").field(prefix).finish(),
        }
    }
}

/// The entries of every `Sec-WebSocket-Protocol` line, in the client's order.
pub(crate) fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty())
}

/// The credential in a subprotocol token entry: exactly one entry with `prefix`, beside at least
/// one other protocol, holding unpadded base64url of a UTF-8 value.
pub(crate) fn find_subprotocol<'a>(
    headers: &HeaderMap,
    prefix: &str,
    max_len: usize,
) -> Result<Option<Cow<'a, str>>, AuthRejectionKind> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    let mut token = None;
    let mut others = 0;
    for entry in offered_protocols(headers) {
        match entry.strip_prefix(prefix.as_bytes()) {
            Some(_) if token.is_some() => return Err(AuthRejectionKind::DuplicateCredential),
            Some(rest) => token = Some(rest),
            None => others += 1,
        }
    }
    // An empty token entry is no credential at all (the Kubernetes convention).
    let Some(encoded) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if others == 0 {
        return Err(AuthRejectionKind::MalformedCredential);
    }
    if encoded.len() > max_len.saturating_mul(4) / 3 + 4 {
        return Err(AuthRejectionKind::CredentialTooLong);
    }
    let decoded = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthRejectionKind::MalformedCredential)?;
    if decoded.is_empty() {
        return Err(AuthRejectionKind::MalformedCredential);
    }
    if decoded.len() > max_len {
        return Err(AuthRejectionKind::CredentialTooLong);
    }
    String::from_utf8(decoded)
        .map(|value| Some(Cow::Owned(value)))
        .map_err(|_| AuthRejectionKind::MalformedCredential)
}

/// Removes the token entry of a subprotocol source from the request, so the handler (and its
/// protocol negotiation) never sees it. Lines are merged into one.
pub(crate) fn strip_subprotocol_token(headers: &mut HeaderMap, prefix: &str) {
    let kept: Vec<&[u8]> = offered_protocols(headers)
        .filter(|entry| !entry.starts_with(prefix.as_bytes()))
        .collect();
    let joined = kept.join(&b", "[..]);
    headers.remove(SEC_WEBSOCKET_PROTOCOL);
    if !joined.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
}

/// Removes the verified credential from the request headers: always a subprotocol token entry
/// (when the credential came from one), and with `strip_headers` every credential header of
/// `sources` too (a named header; `Authorization` when it holds a Bearer credential, read by the
/// same parser as the source).
pub(crate) fn strip_credential(
    headers: &mut HeaderMap,
    sources: &[Source],
    verified: SourceKind,
    strip_headers: bool,
) {
    if verified == SourceKind::Subprotocol {
        for prefix in sources.iter().filter_map(Source::subprotocol_prefix) {
            strip_subprotocol_token(headers, prefix);
        }
    }
    if !strip_headers {
        return;
    }
    for source in sources {
        match &source.spec {
            Spec::Header { name } => {
                headers.remove(name);
            }
            Spec::Bearer => {
                let ours = headers
                    .get_all(AUTHORIZATION)
                    .iter()
                    .any(|v| !matches!(parse_bearer(v.as_bytes(), usize::MAX), Ok(None)));
                if ours {
                    headers.remove(AUTHORIZATION);
                }
            }
            Spec::Query { .. } | Spec::Subprotocol { .. } => {}
        }
    }
}

/// The single value of header `name`, or `DuplicateCredential` when there are several lines.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a [u8]>, AuthRejectionKind> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthRejectionKind::DuplicateCredential);
    }
    Ok(first.map(|v| v.as_bytes()))
}

pub(crate) fn header_value(raw: &[u8], max_len: usize) -> Result<Cow<'_, str>, AuthRejectionKind> {
    let value = raw.trim_ascii();
    if value.is_empty() {
        return Err(AuthRejectionKind::MalformedCredential);
    }
    if value.len() > max_len {
        return Err(AuthRejectionKind::CredentialTooLong);
    }
    std::str::from_utf8(value)
        .map(Cow::Borrowed)
        .map_err(|_| AuthRejectionKind::MalformedCredential)
}

/// Parses `Authorization` per RFC 6750 §2.1: `Bearer 1*SP token68`, scheme case-insensitive,
/// trailing whitespace ignored. Another scheme (`Basic …`) is `Ok(None)`: not a credential of ours.
pub(crate) fn parse_bearer(raw: &[u8], max_len: usize) -> Result<Option<&str>, AuthRejectionKind> {
    use AuthRejectionKind::{CredentialTooLong, MalformedCredential};
    let scheme_len = raw.iter().position(|&b| !is_tchar(b)).unwrap_or(raw.len());
    let (scheme, rest) = raw.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    // `Bearer`, `Bearer:tok`, `Bearer\ttok`, `Bearer"tok"`: the scheme must be followed by SP.
    let Some(rest) = rest.strip_prefix(b" ") else {
        return Err(MalformedCredential);
    };
    // 1*SP, then the token; trailing whitespace is ignored. A tab before the token stays in it
    // and fails the token68 check below.
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    let token = rest[spaces..].trim_ascii_end();
    if token.is_empty() {
        return Err(MalformedCredential);
    }
    if token.len() > max_len {
        return Err(CredentialTooLong);
    }
    if !is_token68(token) {
        return Err(MalformedCredential);
    }
    // token68 is ASCII, so this cannot fail.
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| MalformedCredential)
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    // Branch-free over the whole body, so the compiler can check 16 or 32 bytes at a time: a
    // bearer JWT is a few hundred bytes and this runs on every request.
    body_len > 0
        && token[..body_len]
            .iter()
            .fold(true, |ok, &b| ok & is_token68_char(b))
}

fn is_token68_char(b: u8) -> bool {
    let lower = b | 0x20;
    // `+`, then `-` `.` `/` and the digits (0x2D..=0x39), letters, `_`, `~`.
    (b == b'+')
        | (b.wrapping_sub(b'-') <= b'9' - b'-')
        | (lower.wrapping_sub(b'a') <= b'z' - b'a')
        | (b == b'_')
        | (b == b'~')
}

/// Finds parameter `name` in a raw query string (form-decoded: `+` is a space), without
/// allocating unless the value is percent-encoded.
pub(crate) fn find_query<'a>(
    query: &'a str,
    name: &str,
    max_len: usize,
) -> Result<Option<Cow<'a, str>>, AuthRejectionKind> {
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !form_decoded_eq(key, name) {
            continue;
        }
        if found.is_some() {
            return Err(AuthRejectionKind::DuplicateCredential);
        }
        found = Some(value);
    }
    let Some(raw) = found else {
        return Ok(None);
    };
    if raw.is_empty() {
        return Err(AuthRejectionKind::MalformedCredential);
    }
    // Each decoded byte takes at most three encoded ones: bound the work before decoding.
    if raw.len() > max_len.saturating_mul(3) {
        return Err(AuthRejectionKind::CredentialTooLong);
    }
    let decoded = form_decode(raw).ok_or(AuthRejectionKind::MalformedCredential)?;
    if decoded.len() > max_len {
        return Err(AuthRejectionKind::CredentialTooLong);
    }
    Ok(Some(decoded))
}

/// `application/x-www-form-urlencoded` decoding of one name or value; `None` if not UTF-8.
pub(crate) fn form_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(raw));
    }
    let spaced = raw.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// Whether a raw query parameter name reads `name` once form-decoded, as the guard reads it.
pub(crate) fn form_decoded_eq(key: &str, name: &str) -> bool {
    if key == name {
        return true;
    }
    key.bytes().any(|b| b == b'%' || b == b'+') && form_decode(key).is_some_and(|k| k == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuthRejectionKind as K;

    #[test]
    fn the_token68_alphabet_is_exactly_rfc_9110s() {
        for b in 0..=u8::MAX {
            let spec = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_token68_char(b), spec, "byte {b:#04x}");
        }
    }

    fn bearer(raw: &str) -> Result<Option<&str>, AuthRejectionKind> {
        parse_bearer(raw.as_bytes(), 64)
    }

    #[test]
    fn bearer_accepts_rfc6750_forms() {
        for (raw, token) in [
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("BEARER abc", "abc"),
            ("Bearer   abc", "abc"),
            ("Bearer abc  ", "abc"),
            ("Bearer abc\t", "abc"),
            ("Bearer a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
        ] {
            assert_eq!(bearer(raw), Ok(Some(token)), "{raw:?}");
        }
    }

    #[test]
    fn bearer_rejects_everything_else_with_400() {
        for raw in [
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearer:abc",
            "Bearer\tabc",
            "Bearer \tabc",
            "Bearer abc extra",
            "Bearer \"abc\"",
            "Bearer a,b",
            "Bearer ==",
            "Bearer a=b",
            "Bearer caf\u{e9}",
        ] {
            assert_eq!(bearer(raw), Err(K::MalformedCredential), "{raw:?}");
        }
        assert_eq!(
            parse_bearer(b"Bearer \xff\xfe", 64),
            Err(K::MalformedCredential)
        );
    }

    #[test]
    fn other_schemes_are_not_our_credential() {
        for raw in [
            "Basic dXNlcjpwYXNz",
            "Token abc",
            "Bearerx abc",
            "Digest x=y",
        ] {
            assert_eq!(bearer(raw), Ok(None), "{raw:?}");
        }
    }

    #[test]
    fn bearer_over_the_cap_is_too_long() {
        let raw = format!("Bearer {}", "a".repeat(65));
        assert_eq!(bearer(&raw), Err(K::CredentialTooLong));
        let raw = format!("Bearer {}", "a".repeat(64));
        assert!(bearer(&raw).is_ok());
    }

    #[test]
    fn query_parsing_decodes_and_detects_duplicates() {
        let q = |query: &str| find_query(query, "k", 8).map(|v| v.map(Cow::into_owned));
        assert_eq!(q("k=abc"), Ok(Some("abc".into())));
        assert_eq!(q("x=1&k=abc&y=2"), Ok(Some("abc".into())));
        assert_eq!(q("k=a%2Bb"), Ok(Some("a+b".into())));
        assert_eq!(q("k=a+b"), Ok(Some("a b".into())));
        assert_eq!(q("%6B=abc"), Ok(Some("abc".into())));
        assert_eq!(q("kk=abc"), Ok(None));
        assert_eq!(q(""), Ok(None));
        assert_eq!(q("k=a&k=b"), Err(K::DuplicateCredential));
        assert_eq!(q("k=a&k=a"), Err(K::DuplicateCredential));
        assert_eq!(q("k="), Err(K::MalformedCredential));
        assert_eq!(q("k"), Err(K::MalformedCredential));
        assert_eq!(q("k=%FF"), Err(K::MalformedCredential));
        assert_eq!(q("k=123456789"), Err(K::CredentialTooLong));
        assert_eq!(q("k=%41%41%41%41%41%41%41%41"), Ok(Some("AAAAAAAA".into())));
        assert_eq!(
            q(&format!("k={}", "%41".repeat(9))),
            Err(K::CredentialTooLong)
        );
        assert_eq!(
            q(&format!("k={}", "a".repeat(25))),
            Err(K::CredentialTooLong)
        );
    }

    #[test]
    fn unencoded_query_values_are_borrowed() {
        let found = find_query("k=abc", "k", 8).expect("ok").expect("some");
        assert!(matches!(found, Cow::Borrowed("abc")));
    }

    #[test]
    fn header_values_are_trimmed_checked_and_capped() {
        assert_eq!(header_value(b"  abc ", 8), Ok(Cow::Borrowed("abc")));
        assert_eq!(header_value(b"k@#$.", 8), Ok(Cow::Borrowed("k@#$.")));
        assert_eq!(header_value(b"   ", 8), Err(K::MalformedCredential));
        assert_eq!(header_value(b"\xff", 8), Err(K::MalformedCredential));
        assert_eq!(header_value(b"123456789", 8), Err(K::CredentialTooLong));
    }

    fn protocols(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(line).expect("value"),
            );
        }
        headers
    }

    const P: &str = DEFAULT_SUBPROTOCOL_PREFIX;

    #[test]
    fn subprotocol_tokens_follow_the_kubernetes_convention() {
        let find = |lines: &[&str]| {
            find_subprotocol(&protocols(lines), P, 64).map(|v| v.map(Cow::into_owned))
        };
        // "dG9rZW4" is base64url("token").
        assert_eq!(
            find(&[&format!("{P}dG9rZW4, v4.channel.k8s.io")]),
            Ok(Some("token".into()))
        );
        assert_eq!(
            find(&[&format!("{P}dG9rZW4"), "dummy, dummy2"]),
            Ok(Some("token".into()))
        );
        assert_eq!(find(&["agent.v1"]), Ok(None));
        assert_eq!(
            find(&[&format!("{P}, agent.v1")]),
            Ok(None),
            "empty token: absent"
        );
        assert_eq!(
            find(&[&format!("{P}dG9rZW4")]),
            Err(K::MalformedCredential),
            "no companion"
        );
        assert_eq!(
            find(&[&format!("{P}dG9rZW4, {P}dG9rZW4, agent.v1")]),
            Err(K::DuplicateCredential)
        );
        for bad in ["dG9rZW4=", "dG9r+W4", "dG9r/W4", "%%%"] {
            assert_eq!(
                find(&[&format!("{P}{bad}, agent.v1")]),
                Err(K::MalformedCredential),
                "{bad}"
            );
        }
        assert_eq!(
            find(&[&format!("{P}__8, agent.v1")]),
            Err(K::MalformedCredential),
            "not UTF-8"
        );
        let long = "QUFB".repeat(30);
        assert_eq!(
            find(&[&format!("{P}{long}, agent.v1")]),
            Err(K::CredentialTooLong)
        );
    }

    #[test]
    fn stripping_removes_only_the_token_entry() {
        let mut headers = protocols(&[&format!("{P}dG9rZW4"), "dummy, dummy2"]);
        strip_subprotocol_token(&mut headers, P);
        assert_eq!(headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().count(), 1);
        assert_eq!(headers[SEC_WEBSOCKET_PROTOCOL], "dummy, dummy2");
        let mut only = protocols(&[&format!("{P}dG9rZW4")]);
        strip_subprotocol_token(&mut only, P);
        assert!(only.get(SEC_WEBSOCKET_PROTOCOL).is_none());
    }

    #[test]
    fn authorization_cannot_be_a_named_header_source() {
        assert_eq!(
            Source::header("Authorization")
                .map(|_| ())
                .unwrap_err()
                .kind(),
            ConfigErrorKind::InvalidName
        );
        assert!(Source::header("bad header").is_err());
        assert!(Source::query("").validate().is_err());
    }
}
