//! Outbound credentials: what a proxy or service needs to authenticate to another server.
//!
//! The same placements the guard reads, from the sending side: a header, `Authorization:
//! Bearer`, a query parameter, a subprotocol entry, or a first-message auth frame. Headers are
//! marked sensitive, and query names and values are percent-encoded.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderName, HeaderValue, Request, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::source::{DEFAULT_HEADER, DEFAULT_QUERY_PARAM, DEFAULT_SUBPROTOCOL_PREFIX};

/// A secret this process presents to others. `Debug` is redacted and there is no `Display`.
///
/// ```
/// use axum_keyguard::client::Secret;
///
/// let secret = Secret::new("upstream-S3CR3T")?;
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert!(Secret::new("  ").is_err());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    value: Box<str>,
}

impl Secret {
    /// A secret given as a string, used verbatim. Empty or whitespace-only is a [`ConfigError`].
    pub fn new(value: impl Into<String>) -> Result<Self, ConfigError> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                "an outbound secret must not be empty",
            ));
        }
        Ok(Self {
            value: value.into_boxed_str(),
        })
    }

    /// A secret read from a file, trimmed. A missing or empty file is a [`ConfigError`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::KeyFile,
                format!("cannot read secret file {}", path.display()),
            )
            .with_source(e)
        })?;
        Self::new(text.trim()).map_err(|_| {
            ConfigError::new(
                ConfigErrorKind::EmptyKey,
                format!("secret file {} must not be empty", path.display()),
            )
        })
    }

    /// The secret value. Never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where an [`OutboundCredential`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// A named header.
    Header(HeaderName),
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// A query parameter.
    Query(String),
    /// A `Sec-WebSocket-Protocol` token entry (`prefix` + base64url of the secret) beside the
    /// application protocol.
    Subprotocol {
        /// The token entry's prefix.
        prefix: String,
        /// The application protocol offered beside it.
        protocol: String,
    },
    /// The first WebSocket frame: `{"type":"auth","<field>":"<secret>"}`.
    FirstMessage {
        /// The credential's field.
        field: String,
    },
}

/// A secret and where to put it on an outgoing request or WebSocket handshake.
///
/// ```
/// use axum_keyguard::client::{OutboundCredential, Secret};
///
/// let credential = OutboundCredential::query(Secret::new("a+b/c")?, "session_api_key");
/// let mut request = http::Request::get("ws://upstream/sockets/events?tail=10").body(())?;
/// credential.apply(&mut request)?;
/// assert_eq!(request.uri().query(), Some("tail=10&session_api_key=a%2Bb%2Fc"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct OutboundCredential {
    secret: Secret,
    placement: Placement,
}

impl OutboundCredential {
    /// In the header `name` (for example `X-Session-API-Key`).
    pub fn header(secret: Secret, name: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::try_from(name).map_err(|e| {
            ConfigError::new(ConfigErrorKind::InvalidName, "invalid header name").with_source(e)
        })?;
        Ok(Self {
            secret,
            placement: Placement::Header(name),
        })
    }

    /// In `X-Session-API-Key`.
    #[must_use]
    pub fn session_api_key(secret: Secret) -> Self {
        Self {
            secret,
            placement: Placement::Header(HeaderName::from_static(DEFAULT_HEADER)),
        }
    }

    /// In `Authorization: Bearer`.
    #[must_use]
    pub fn bearer(secret: Secret) -> Self {
        Self {
            secret,
            placement: Placement::Bearer,
        }
    }

    /// In the query parameter `name` (percent-encoded). Prefer a header where the server reads
    /// one: URLs end up in logs.
    #[must_use]
    pub fn query(secret: Secret, name: impl Into<String>) -> Self {
        Self {
            secret,
            placement: Placement::Query(name.into()),
        }
    }

    /// In a subprotocol token entry (the Kubernetes convention) beside `protocol`.
    #[must_use]
    pub fn subprotocol(secret: Secret, protocol: impl Into<String>) -> Self {
        Self {
            secret,
            placement: Placement::Subprotocol {
                prefix: DEFAULT_SUBPROTOCOL_PREFIX.to_owned(),
                protocol: protocol.into(),
            },
        }
    }

    /// In the first WebSocket frame, field `session_api_key` (see [`auth_frame`](Self::auth_frame)).
    /// Only for servers that accept first-message auth: a server that checks credentials during
    /// the handshake refuses the upgrade before the frame can be sent.
    #[must_use]
    pub fn first_message(secret: Secret) -> Self {
        Self {
            secret,
            placement: Placement::FirstMessage {
                field: DEFAULT_QUERY_PARAM.to_owned(),
            },
        }
    }

    /// Where the credential goes.
    #[must_use]
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Puts the credential on `request` (an HTTP request, or a WebSocket handshake such as
    /// tokio-tungstenite's client request). Headers are marked sensitive. Does nothing for
    /// [`Placement::FirstMessage`].
    pub fn apply<B>(&self, request: &mut Request<B>) -> Result<(), OutboundError> {
        let secret = self.secret.expose();
        match &self.placement {
            Placement::Header(name) => {
                request
                    .headers_mut()
                    .insert(name.clone(), sensitive(secret)?);
            }
            Placement::Bearer => {
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, sensitive(&format!("Bearer {secret}"))?);
            }
            Placement::Query(name) => {
                *request.uri_mut() = with_query(request.uri(), name, secret)?;
            }
            Placement::Subprotocol { prefix, protocol } => {
                let entry = format!("{prefix}{}, {protocol}", URL_SAFE_NO_PAD.encode(secret));
                request
                    .headers_mut()
                    .append(SEC_WEBSOCKET_PROTOCOL, sensitive(&entry)?);
            }
            Placement::FirstMessage { .. } => {}
        }
        Ok(())
    }

    /// The auth frame to send first, for [`Placement::FirstMessage`]; `None` otherwise.
    #[must_use]
    pub fn auth_frame(&self) -> Option<String> {
        match &self.placement {
            Placement::FirstMessage { field } => {
                let mut frame = serde_json::Map::new();
                frame.insert("type".into(), "auth".into());
                frame.insert(field.clone(), self.secret.expose().into());
                Some(serde_json::Value::Object(frame).to_string())
            }
            _ => None,
        }
    }
}

impl fmt::Debug for OutboundCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundCredential")
            .field("secret", &self.secret)
            .field("placement", &self.placement)
            .finish()
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, OutboundError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| OutboundError("the secret is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Everything but the RFC 3986 unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn with_query(uri: &Uri, name: &str, value: &str) -> Result<Uri, OutboundError> {
    let pair = format!(
        "{}={}",
        utf8_percent_encode(name, COMPONENT),
        utf8_percent_encode(value, COMPONENT)
    );
    let path_and_query = match uri.query() {
        Some(query) if !query.is_empty() => format!("{}?{query}&{pair}", uri.path()),
        _ => format!("{}?{pair}", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| OutboundError("cannot build the request URI"))?,
    );
    Uri::from_parts(parts).map_err(|_| OutboundError("cannot build the request URI"))
}

/// A credential could not be put on a request. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundError(&'static str);

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for OutboundError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Guard, Keys, Source, SourceKind};

    const SECRET: &str = "out-S3CR3T_value.1";

    fn secret() -> Secret {
        Secret::new(SECRET).expect("secret")
    }

    /// Whatever the client module writes, the guard reads back, from the same source.
    #[tokio::test]
    async fn every_placement_round_trips_through_the_guard() {
        let guard = Guard::builder()
            .with_verifier(Keys::new([SECRET]).expect("keys"))
            .add_source(Source::subprotocol())
            .build()
            .expect("guard");
        let cases = [
            (
                OutboundCredential::session_api_key(secret()),
                SourceKind::Header,
            ),
            (OutboundCredential::bearer(secret()), SourceKind::Bearer),
            (
                OutboundCredential::query(secret(), "session_api_key"),
                SourceKind::Query,
            ),
            (
                OutboundCredential::subprotocol(secret(), "agent.v1"),
                SourceKind::Subprotocol,
            ),
        ];
        for (credential, source) in cases {
            let mut request = Request::get("ws://upstream/sockets/events")
                .header("host", "localhost")
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", "13")
                .body(())
                .expect("request");
            credential.apply(&mut request).expect("apply");
            let (parts, ()) = request.into_parts();
            let verified = guard.resolve(&parts).await.expect("the guard accepts it");
            assert_eq!(verified.source(), source);
            assert!(!format!("{credential:?}").contains("S3CR3T"), "{source:?}");
            if source != SourceKind::Query {
                // Header values are marked sensitive; a query value is in the URI by nature
                // (log `Guard::redacted_uri` instead).
                assert!(
                    !format!("{:?}", parts.headers).contains("S3CR3T"),
                    "{source:?}"
                );
            }
        }
        let frame = OutboundCredential::first_message(secret())
            .auth_frame()
            .expect("frame");
        let value: serde_json::Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"type": "auth", "session_api_key": SECRET})
        );
        assert_eq!(OutboundCredential::bearer(secret()).auth_frame(), None);
    }

    #[test]
    fn query_values_are_percent_encoded_and_appended() {
        let credential =
            OutboundCredential::query(Secret::new("a b&c=d").expect("secret"), "token");
        let mut request = Request::get("http://h/p")
            .header("host", "localhost")
            .body(())
            .expect("request");
        credential.apply(&mut request).expect("apply");
        assert_eq!(request.uri().to_string(), "http://h/p?token=a%20b%26c%3Dd");
    }

    #[test]
    fn secrets_that_cannot_be_header_values_are_errors_not_panics() {
        let credential = OutboundCredential::bearer(Secret::new("bad\nsecret").expect("secret"));
        let mut request = Request::get("/")
            .header("host", "localhost")
            .body(())
            .expect("request");
        let err = credential.apply(&mut request).unwrap_err();
        assert!(!err.to_string().contains("bad"));
    }
}
