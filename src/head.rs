//! The request head the guard reads, and the one classification of a request as REST or as a
//! WebSocket opening handshake.

use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri, Version};

/// The parts of a request the guard reads, borrowed from [`Parts`] or from a whole [`Request`].
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) method: &'a Method,
    pub(crate) version: Version,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    /// The request's extensions: where the server leaves the peer address (`ConnectInfo`).
    pub(crate) extensions: &'a Extensions,
}

impl<'a> From<&'a Parts> for Head<'a> {
    fn from(parts: &'a Parts) -> Self {
        Self {
            method: &parts.method,
            version: parts.version,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
        }
    }
}

impl<'a, B> From<&'a Request<B>> for Head<'a> {
    fn from(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            version: request.version(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

/// Whether `head` is a WebSocket opening handshake; every other request follows the REST rules
/// (no query credential unless opted in, no subprotocol credential, no deferred modes).
///
/// HTTP/1.x: a complete RFC 6455 §4.1 handshake — `GET`, `Connection` with the `upgrade` token,
/// `Upgrade` with the `websocket` token, a non-empty `Sec-WebSocket-Key`, and
/// `Sec-WebSocket-Version: 13`. Tokens are compared case-insensitively in comma-separated lists
/// over every line of the header. A request that merely says `Upgrade: websocket` is REST.
///
/// HTTP/2: every `CONNECT`. Extended `CONNECT` (RFC 8441) is how HTTP/2 opens a WebSocket, and
/// reading its `:protocol` would need hyper's `http2` feature in every build; counting a plain
/// tunnel `CONNECT` as an upgrade only makes the check stricter (the origin policy applies).
pub(crate) fn is_upgrade(head: Head<'_>) -> bool {
    if head.version >= Version::HTTP_2 {
        return *head.method == Method::CONNECT;
    }
    let headers = head.headers;
    // RFC 6455 §4.1: "the HTTP version MUST be at least 1.1" (found by fuzz/upgrade).
    head.version == Version::HTTP_11
        && *head.method == Method::GET
        && has_token(headers, &CONNECTION, b"upgrade")
        && has_token(headers, &UPGRADE, b"websocket")
        && has_token(headers, &SEC_WEBSOCKET_VERSION, b"13")
        && headers
            .get_all(SEC_WEBSOCKET_KEY)
            .iter()
            .any(|key| !key.as_bytes().trim_ascii().is_empty())
}

/// Whether any line of header `name` lists `token` (case-insensitive, comma-separated).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> bool {
        let (parts, ()) = build(Request::builder().uri("/ws"))
            .body(())
            .expect("request")
            .into_parts();
        is_upgrade(Head::from(&parts))
    }

    fn handshake(builder: http::request::Builder) -> http::request::Builder {
        builder
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
    }

    #[test]
    fn a_complete_handshake_is_an_upgrade() {
        assert!(classify(handshake));
        assert!(classify(|b| b
            .header("connection", "keep-alive, UPGRADE")
            .header("upgrade", "h2c, WebSocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")));
        // Tokens split over several lines.
        assert!(classify(|b| b
            .header("connection", "keep-alive")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "x")
            .header("sec-websocket-version", "13")));
    }

    #[test]
    fn anything_less_than_a_complete_handshake_is_rest() {
        assert!(!classify(|b| b.header("upgrade", "websocket")));
        let without = |skip: &'static str| {
            move |b: http::request::Builder| {
                [
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("sec-websocket-version", "13"),
                ]
                .into_iter()
                .filter(|(name, _)| *name != skip)
                .fold(b, |b, (name, value)| b.header(name, value))
            }
        };
        for header in [
            "connection",
            "upgrade",
            "sec-websocket-key",
            "sec-websocket-version",
        ] {
            assert!(!classify(without(header)), "without {header}");
        }
        assert!(!classify(|b| handshake(b.method("POST"))));
        assert!(!classify(|b| b
            .header("connection", "upgradex")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "k")
            .header("sec-websocket-version", "13")));
        assert!(!classify(|b| b
            .header("connection", "upgrade")
            .header("upgrade", "websocket2")
            .header("sec-websocket-key", "k")
            .header("sec-websocket-version", "13")));
        assert!(!classify(|b| b
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", " ")
            .header("sec-websocket-version", "13")));
        assert!(!classify(|b| b
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "k")
            .header("sec-websocket-version", "8")));
    }

    #[test]
    fn http2_connect_is_an_upgrade_and_http2_get_is_not() {
        assert!(classify(|b| b.method("CONNECT").version(Version::HTTP_2)));
        assert!(!classify(|b| handshake(b.version(Version::HTTP_2))));
        assert!(!classify(|b| b.method("CONNECT").version(Version::HTTP_11)));
    }
}
