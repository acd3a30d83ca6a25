//! Keeping credentials out of logs: redacted URIs for trace spans, and the header names to mark
//! sensitive.

use std::fmt;

use http::{HeaderName, Uri};

use crate::guard::Guard;
use std::borrow::Cow;

use crate::source::{form_decoded_eq, SourceKind};

/// What stands in the place of a redacted credential.
pub const REDACTED: &str = "[REDACTED]";

/// A request URI with the guard's credential query parameters replaced by [`REDACTED`]; formats
/// lazily, so building a span costs nothing when the span is disabled.
///
/// Near misses are redacted too: a parameter whose name equals a credential parameter's (or a
/// credential header's, or RFC 6750's `access_token` when the Bearer source is on) once case,
/// punctuation and percent-encoding are set aside — `Session_Api_Key`, `session-api-key`,
/// `session_api_key[]`, `X-Session-API-Key`.
///
/// ```
/// use axum_keyguard::{Guard, Keys};
///
/// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"])?).build()?;
/// let uri: http::Uri = "/sockets/events?session_api_key=k1&tail=10".parse()?;
/// assert_eq!(
///     guard.redacted_uri(&uri).to_string(),
///     "/sockets/events?session_api_key=[REDACTED]&tail=10"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedactedUri<'a> {
    uri: &'a Uri,
    names: Vec<&'a str>,
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = self.uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = self.uri.authority() {
            // User info may hold a password: keep only host and port.
            let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
            f.write_str(host_port)?;
        }
        f.write_str(self.uri.path())?;
        if let Some(query) = self.uri.query() {
            write!(f, "?{}", redact_query(query, &self.names, REDACTED))?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<P> Guard<P> {
    /// `uri` with this guard's credential query parameters redacted, for logs and trace spans.
    ///
    /// ```
    /// use axum::{body::Body, http::Request, routing::get, Router};
    /// use axum_keyguard::{Guard, Keys};
    /// use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
    /// use tower_http::trace::TraceLayer;
    ///
    /// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"])?).build()?;
    /// let span_guard = guard.clone();
    /// let app: Router = Router::new()
    ///     .route("/api", get(|| async { "ok" }))
    ///     .route_layer(guard.layer())
    ///     .layer(TraceLayer::new_for_http().make_span_with(move |request: &Request<Body>| {
    ///         tracing::debug_span!(
    ///             "request",
    ///             method = %request.method(),
    ///             uri = %span_guard.redacted_uri(request.uri()),
    ///         )
    ///     }))
    ///     .layer(SetSensitiveRequestHeadersLayer::new(guard.sensitive_headers()));
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn redacted_uri<'a>(&'a self, uri: &'a Uri) -> RedactedUri<'a> {
        let mut names: Vec<&str> = Vec::new();
        for source in self.sources() {
            match source.kind() {
                SourceKind::Query => names.extend(source.query_name()),
                // A header credential pasted into a URL, under the header's name.
                SourceKind::Header => names.extend(source.header_name().map(HeaderName::as_str)),
                // RFC 6750 §2.3 names the query form of a bearer token `access_token`.
                SourceKind::Bearer => names.extend(["access_token", "authorization"]),
                _ => {}
            }
        }
        RedactedUri { uri, names }
    }

    /// The headers this guard reads credentials from (`Authorization`, custom headers, and
    /// `Sec-WebSocket-Protocol` when the subprotocol source is on): give them to
    /// `tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer` in front of any trace
    /// layer, so they print as `Sensitive`.
    ///
    /// ```
    /// use axum_keyguard::{Guard, Keys, Source};
    ///
    /// let guard = Guard::builder()
    ///     .with_verifier(Keys::new(["a-long-random-key-1"])?)
    ///     .add_source(Source::subprotocol())
    ///     .build()?;
    /// let names: Vec<_> = guard.sensitive_headers().iter().map(|h| h.as_str().to_owned()).collect();
    /// assert_eq!(names, ["x-session-api-key", "authorization", "sec-websocket-protocol"]);
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    #[must_use]
    pub fn sensitive_headers(&self) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = Vec::new();
        for name in self.sources().iter().filter_map(|s| s.header_name()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// `query` with the values of the parameters named `names` replaced by `marker` (names compared
/// after form decoding, as the guard reads them). Borrowed when nothing is replaced.
pub(crate) fn redact_query<'a>(query: &'a str, names: &[&str], marker: &str) -> Cow<'a, str> {
    let is_secret = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        names.iter().any(|name| {
            form_decoded_eq(key, name)
                || (loose_name(key).eq(loose_name(name)) && loose_name(name).next().is_some())
        })
    };
    if !query.split('&').any(is_secret) {
        return Cow::Borrowed(query);
    }
    let redacted: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            if is_secret(pair) {
                let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                Cow::Owned(format!("{key}={marker}"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    Cow::Owned(redacted.join("&"))
}

/// A parameter name as redaction compares it, so that near misses are redacted too: percent-
/// decoded, ASCII letters and digits only, lower-cased (`Session_Api_Key`, `session-api-key`,
/// `session_api_key[]` and `sessionApiKey` all read `sessionapikey`).
fn loose_name(raw: &str) -> impl Iterator<Item = u8> + '_ {
    percent_encoding::percent_decode(raw.as_bytes())
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::redact_query;
    use crate::{Guard, Keys, Source};
    use std::borrow::Cow;

    #[test]
    fn redaction_replaces_exactly_the_credential_parameters() {
        let r = |q: &str| redact_query(q, &["session_api_key", "token"], "[REDACTED]").into_owned();
        assert_eq!(r("a=1&b=2"), "a=1&b=2");
        assert!(matches!(redact_query("a=1", &["k"], "x"), Cow::Borrowed(_)));
        assert_eq!(
            r("session_api_key=s3cr3t&a=1"),
            "session_api_key=[REDACTED]&a=1"
        );
        assert_eq!(
            r("a=1&token=x&token=y"),
            "a=1&token=[REDACTED]&token=[REDACTED]"
        );
        assert_eq!(
            r("session%5Fapi%5Fkey=s3cr3t"),
            "session%5Fapi%5Fkey=[REDACTED]"
        );
        assert_eq!(r("session_api_key"), "session_api_key=[REDACTED]");
        assert_eq!(r("session_api_keys=visible"), "session_api_keys=visible");
    }

    #[test]
    fn redacted_uris_keep_everything_but_the_secret() {
        let guard = Guard::builder()
            .with_verifier(Keys::new(["a-long-random-key-1"]).expect("keys"))
            .with_sources([Source::query("token"), Source::bearer()])
            .build()
            .expect("guard");
        let show = |uri: &str| guard.redacted_uri(&uri.parse().expect("uri")).to_string();
        assert_eq!(show("/a/b"), "/a/b");
        assert_eq!(show("/a?token=S3CR3T"), "/a?token=[REDACTED]");
        assert_eq!(show("/a?session_api_key=other"), "/a?session_api_key=other");
        assert_eq!(
            show("http://user:pw@host:8000/a?x=1&token=S3CR3T"),
            "http://host:8000/a?x=1&token=[REDACTED]"
        );
        assert_eq!(guard.sensitive_headers(), [http::header::AUTHORIZATION]);
        assert_eq!(show("/a?access_token=S3CR3T"), "/a?access_token=[REDACTED]");
    }

    #[test]
    fn near_miss_names_are_redacted_too() {
        let guard = Guard::builder()
            .with_verifier(Keys::new(["a-long-random-key-1"]).expect("keys"))
            .build()
            .expect("guard");
        let show = |uri: &str| guard.redacted_uri(&uri.parse().expect("uri")).to_string();
        for name in [
            "session_api_key",
            "Session_Api_Key",
            "SESSION_API_KEY",
            "session_api_key[]",
            "session-api-key",
            "sessionApiKey",
            "session%5Fapi%5Fkey",
            "session_api_key%5B%5D",
            "X-Session-API-Key",
            "x_session_api_key",
            "access_token",
        ] {
            let shown = show(&format!("/ws?{name}=S3CR3T&tail=10"));
            assert_eq!(shown, format!("/ws?{name}=[REDACTED]&tail=10"));
        }
        assert_eq!(show("/ws?session=S3CR3T"), "/ws?session=S3CR3T");
        assert_eq!(show("/ws?api_key=x&key=y"), "/ws?api_key=x&key=y");
        assert_eq!(show("/ws?=x&&"), "/ws?=x&&");
    }
}
