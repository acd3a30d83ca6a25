//! The one rejection type, rendered as an HTTP response before an upgrade or as a close frame after.

use std::fmt;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

/// Why a request was not authenticated.
///
/// Every surface (layer, extractor, WebSocket helpers) produces this one type, so a request is
/// rejected the same way wherever it is checked. As a response it follows the status table
/// (`400`/`401`/`403`/`429`/`503`/`500` with RFC 6750 `WWW-Authenticate`); the body is short and the same
/// for every invalid credential, and the [`AuthRejectionKind`] is attached to the response
/// extensions for middleware and tests. It never carries the credential.
#[derive(Clone)]
pub struct AuthRejection {
    kind: AuthRejectionKind,
    challenge: Option<HeaderValue>,
    /// Seconds before a limited peer may try again (`RateLimited` only).
    retry_after: u64,
    /// The application's body, when its guard has one ([`GuardBuilder::with_rejection_body`]).
    ///
    /// [`GuardBuilder::with_rejection_body`]: crate::GuardBuilder::with_rejection_body
    render: Option<RejectionRenderer>,
}

/// The body of a rejection as the application renders it (see
/// [`GuardBuilder::with_rejection_body`](crate::GuardBuilder::with_rejection_body)): a content
/// type and the bytes. The status, the `WWW-Authenticate` challenge, `Retry-After` and
/// `Cache-Control: no-store` stay the guard's.
#[derive(Debug, Clone)]
pub struct RejectionBody {
    content_type: HeaderValue,
    bytes: Bytes,
}

impl RejectionBody {
    /// A body of `content_type`.
    pub fn new(content_type: HeaderValue, bytes: impl Into<Bytes>) -> Self {
        Self {
            content_type,
            bytes: bytes.into(),
        }
    }

    /// `value` as `application/json`.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::new(
            HeaderValue::from_static("application/json"),
            value.to_string(),
        )
    }

    /// `value` as `application/problem+json` (RFC 9457).
    pub fn problem_json(value: &serde_json::Value) -> Self {
        Self::new(
            HeaderValue::from_static("application/problem+json"),
            value.to_string(),
        )
    }
}

/// The application's rejection body, shared by every rejection of one guard.
#[derive(Clone)]
pub(crate) struct RejectionRenderer(Arc<dyn Fn(&AuthRejection) -> RejectionBody + Send + Sync>);

impl RejectionRenderer {
    pub(crate) fn new(
        render: impl Fn(&AuthRejection) -> RejectionBody + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(render))
    }
}

impl fmt::Debug for RejectionRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RejectionRenderer(..)")
    }
}

/// The kind of an [`AuthRejection`]. Each kind maps to one row of the status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthRejectionKind {
    /// No credential in any source: `401`, bare `Bearer realm` challenge.
    MissingCredential,
    /// A credential that does not follow its source's syntax, is empty or is not UTF-8: `400`.
    MalformedCredential,
    /// The same source twice (two header lines, a repeated query parameter): `400`.
    DuplicateCredential,
    /// Several sources with different values: `400` (RFC 6750 §2).
    ConflictingCredentials,
    /// A value longer than the configured cap, rejected before hashing: `400`.
    CredentialTooLong,
    /// Wrong, unknown, revoked, expired or inactive: `401` `invalid_token`.
    InvalidCredential,
    /// Authenticated but not allowed here: `403` `insufficient_scope`.
    InsufficientScope,
    /// The request's `Origin` is not allowed: `403`, no challenge.
    OriginNotAllowed,
    /// The verifier's backing store failed or was too slow: `503` with `Retry-After`.
    Unavailable,
    /// The server is misconfigured (found at request time): `500`.
    Misconfigured,
    /// An HTTP/1.1 request without a `Host` header, or with several: `400`, no challenge. Checked
    /// before the origin and any credential.
    InvalidHost,
    /// The peer presented too many refused credentials (see
    /// [`FailureLimit`](crate::FailureLimit)): `429` with `Retry-After`, no challenge. Decided
    /// before any credential is read.
    RateLimited,
}

impl AuthRejectionKind {
    /// The HTTP status of this kind.
    ///
    /// ```
    /// use axum_keyguard::AuthRejectionKind;
    /// use http::StatusCode;
    ///
    /// assert_eq!(AuthRejectionKind::MissingCredential.status(), StatusCode::UNAUTHORIZED);
    /// assert_eq!(AuthRejectionKind::DuplicateCredential.status(), StatusCode::BAD_REQUEST);
    /// ```
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingCredential | Self::InvalidCredential => StatusCode::UNAUTHORIZED,
            Self::MalformedCredential
            | Self::DuplicateCredential
            | Self::ConflictingCredentials
            | Self::CredentialTooLong
            | Self::InvalidHost => StatusCode::BAD_REQUEST,
            Self::InsufficientScope | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6750 `error` code of the challenge, if this kind has one.
    fn error_code(self) -> Option<&'static str> {
        match self.status() {
            StatusCode::BAD_REQUEST => Some("invalid_request"),
            StatusCode::UNAUTHORIZED if self == Self::InvalidCredential => Some("invalid_token"),
            StatusCode::FORBIDDEN if self == Self::InsufficientScope => Some("insufficient_scope"),
            _ => None,
        }
    }

    /// Whether the response carries a `WWW-Authenticate` challenge.
    fn has_challenge(self) -> bool {
        self != Self::InvalidHost
            && (matches!(
                self.status(),
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED
            ) || self == Self::InsufficientScope)
    }

    /// The generic body: one per status, so no body tells one invalid credential from another.
    fn body(self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::BAD_REQUEST => "bad request",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::TOO_MANY_REQUESTS => "too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "service unavailable",
            _ => "internal server error",
        }
    }

    /// A short name for logs (`missing_credential`, `invalid_credential`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredential => "missing_credential",
            Self::MalformedCredential => "malformed_credential",
            Self::DuplicateCredential => "duplicate_credential",
            Self::ConflictingCredentials => "conflicting_credentials",
            Self::CredentialTooLong => "credential_too_long",
            Self::InvalidCredential => "invalid_credential",
            Self::InsufficientScope => "insufficient_scope",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::Unavailable => "unavailable",
            Self::Misconfigured => "misconfigured",
            Self::InvalidHost => "invalid_host",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Whether this is a credential that was presented and refused (a `400` or `401` other than
    /// a missing credential or a bad `Host`): what a [`FailureLimit`](crate::FailureLimit) counts.
    pub(crate) fn is_refused_credential(self) -> bool {
        matches!(
            self,
            Self::MalformedCredential
                | Self::DuplicateCredential
                | Self::ConflictingCredentials
                | Self::CredentialTooLong
                | Self::InvalidCredential
        )
    }
}

/// The `WWW-Authenticate` values of one realm, built once when the guard is built.
#[derive(Debug)]
pub(crate) struct Challenges {
    bare: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
    insufficient_scope: HeaderValue,
    /// The application's body for every rejection, if it has one.
    pub(crate) render: Option<RejectionRenderer>,
}

impl Challenges {
    /// `realm` must already be validated as a quoted-string body without `"` or `\`.
    pub(crate) fn new(realm: &str) -> Result<Self, http::header::InvalidHeaderValue> {
        let make = |error: Option<&str>| match error {
            None => HeaderValue::try_from(format!("Bearer realm=\"{realm}\"")),
            Some(e) => HeaderValue::try_from(format!("Bearer realm=\"{realm}\", error=\"{e}\"")),
        };
        Ok(Self {
            bare: make(None)?,
            invalid_request: make(Some("invalid_request"))?,
            invalid_token: make(Some("invalid_token"))?,
            insufficient_scope: make(Some("insufficient_scope"))?,
            render: None,
        })
    }

    fn for_kind(&self, kind: AuthRejectionKind) -> Option<&HeaderValue> {
        if !kind.has_challenge() {
            return None;
        }
        Some(match kind.error_code() {
            None => &self.bare,
            Some("invalid_request") => &self.invalid_request,
            Some("invalid_token") => &self.invalid_token,
            Some(_) => &self.insufficient_scope,
        })
    }
}

/// Every close the crate sends: the codes (RFC 6455 §7.4 and the private-use range) and the
/// reasons that go with them. Reasons are short, fixed and never hold a secret.
pub(crate) mod close {
    /// The handler finished.
    pub(crate) const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol (an unmasked frame, a bad opcode, a fragment out of place).
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    /// A message or frame over the route's `max_message_size` / `max_frame_size`.
    pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server cannot check the credential (key store unavailable past its grace period).
    pub(crate) const INTERNAL_ERROR: u16 = 1011;
    /// The credential is missing, invalid, expired or revoked.
    pub(crate) const UNAUTHORIZED: u16 = 4001;
    /// The credential is valid but not allowed on this socket.
    pub(crate) const FORBIDDEN: u16 = 4003;
    /// The peer presented too many refused credentials (RFC 6455 §7.4.1 "Try Again Later").
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;

    pub(crate) const SHUTTING_DOWN: &str = "server shutting down";
    pub(crate) const REVOKED: &str = "credential revoked";
    pub(crate) const EXPIRED: &str = "credential expired";
    pub(crate) const UNAVAILABLE: &str = "authentication unavailable";
    pub(crate) const AUTH_TIMEOUT: &str = "authentication timeout";
    pub(crate) const AUTH_TOO_LARGE: &str = "auth message too large";
    pub(crate) const FAILED: &str = "authentication failed";
    pub(crate) const FORBIDDEN_REASON: &str = "forbidden";
    pub(crate) const INTERNAL: &str = "internal error";
    pub(crate) const RATE_LIMITED: &str = "too many failed attempts";

    /// The most bytes a close reason may have (RFC 6455 §5.5: a 125-byte control payload less
    /// the code).
    pub(crate) const MAX_REASON_LEN: usize = 123;

    /// Cuts `reason` to at most [`MAX_REASON_LEN`] bytes on a UTF-8 character boundary.
    pub(crate) fn truncate_reason(reason: &str) -> &str {
        if reason.len() <= MAX_REASON_LEN {
            return reason;
        }
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        &reason[..end]
    }
}

impl AuthRejection {
    pub(crate) fn new(kind: AuthRejectionKind, challenges: &Challenges) -> Self {
        Self {
            kind,
            challenge: challenges.for_kind(kind).cloned(),
            retry_after: 0,
            render: challenges.render.clone(),
        }
    }

    /// A [`RateLimited`](AuthRejectionKind::RateLimited) rejection: try again in `secs` seconds.
    pub(crate) fn rate_limited(secs: u64, challenges: &Challenges) -> Self {
        Self {
            kind: AuthRejectionKind::RateLimited,
            challenge: None,
            retry_after: secs.max(1),
            render: challenges.render.clone(),
        }
    }

    /// The RFC 6750 `error` code of the `WWW-Authenticate` challenge (`invalid_request`,
    /// `invalid_token`, `insufficient_scope`), if this rejection has one: for a JSON body that
    /// says what the challenge says.
    #[must_use]
    pub fn error_code(&self) -> Option<&'static str> {
        if self.challenge.is_some() {
            self.kind.error_code()
        } else {
            None
        }
    }

    /// What kind of rejection this is.
    #[must_use]
    pub fn kind(&self) -> AuthRejectionKind {
        self.kind
    }

    /// The HTTP status this rejection renders as.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// How long the client is told to wait (`Retry-After`): the peer's remaining penalty for
    /// [`RateLimited`](AuthRejectionKind::RateLimited), 5 s for
    /// [`Unavailable`](AuthRejectionKind::Unavailable), `None` for every other kind.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum_keyguard::{AuthRejectionKind, Guard, Keys};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"]).unwrap()).build().unwrap();
    /// let (parts, ()) = http::Request::get("/").header("host", "localhost").body(()).unwrap().into_parts();
    /// let missing = guard.resolve(&parts).await.unwrap_err();
    /// assert_eq!(missing.kind(), AuthRejectionKind::MissingCredential);
    /// assert_eq!(missing.retry_after(), None);
    /// # }
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self.kind {
            AuthRejectionKind::RateLimited => {
                Some(std::time::Duration::from_secs(self.retry_after))
            }
            AuthRejectionKind::Unavailable => {
                Some(std::time::Duration::from_secs(RETRY_AFTER_UNAVAILABLE))
            }
            _ => None,
        }
    }

    /// The WebSocket close code for this rejection once a socket is open: `4001` for a missing or
    /// invalid credential, `4003` when forbidden, `1013` (try again later) for a limited peer,
    /// `1011` when the server cannot decide.
    ///
    /// ```
    /// use axum_keyguard::ws::close_code;
    ///
    /// assert_eq!(close_code::UNAUTHORIZED, 4001);
    /// ```
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self.kind.status() {
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => close::UNAUTHORIZED,
            StatusCode::FORBIDDEN => close::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS => close::TRY_AGAIN_LATER,
            _ => close::INTERNAL_ERROR,
        }
    }

    /// The close reason that goes with [`close_code`](Self::close_code): short, generic, never a
    /// secret, always within the 123 bytes a close frame allows.
    #[must_use]
    pub fn close_reason(&self) -> &'static str {
        match self.kind.status() {
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => close::FAILED,
            StatusCode::FORBIDDEN => close::FORBIDDEN_REASON,
            StatusCode::TOO_MANY_REQUESTS => close::RATE_LIMITED,
            StatusCode::SERVICE_UNAVAILABLE => close::UNAVAILABLE,
            _ => close::INTERNAL,
        }
    }
}

impl fmt::Debug for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRejection")
            .field("kind", &self.kind)
            .field("status", &self.kind.status().as_u16())
            .finish()
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not authenticated: {}", self.kind.as_str())
    }
}

impl std::error::Error for AuthRejection {}

/// Seconds a client is told to wait after a `503`.
const RETRY_AFTER_UNAVAILABLE: u64 = 5;
const RETRY_AFTER_SECS: HeaderValue = HeaderValue::from_static("5");

impl AuthRejection {
    /// The response with any body type: the layer answers with the inner service's body type.
    pub(crate) fn into_response_with<B>(self, body: impl FnOnce(Bytes) -> B) -> http::Response<B> {
        let (content_type, bytes) = match &self.render {
            Some(RejectionRenderer(render)) => {
                let rendered = render(&self);
                (rendered.content_type, rendered.bytes)
            }
            None => (
                HeaderValue::from_static("text/plain; charset=utf-8"),
                Bytes::from_static(self.kind.body().as_bytes()),
            ),
        };
        // Built directly (one header map sized once) rather than through `(status, body)`: this
        // is every refused request's path.
        let mut response = http::Response::new(body(bytes));
        *response.status_mut() = self.kind.status();
        let headers = response.headers_mut();
        headers.reserve(4);
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.challenge {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        match self.kind {
            AuthRejectionKind::Unavailable => {
                headers.insert(RETRY_AFTER, RETRY_AFTER_SECS);
            }
            AuthRejectionKind::RateLimited => {
                headers.insert(RETRY_AFTER, HeaderValue::from(self.retry_after));
            }
            _ => {}
        }
        response.extensions_mut().insert(self.kind);
        response
    }

    /// Adds the RFC 6750 §3 `scope` attribute to an `insufficient_scope` challenge: the scopes
    /// the route needs (space-separated scope-tokens, checked by the caller), never the
    /// principal's.
    pub(crate) fn with_scope(mut self, scopes: &str) -> Self {
        if self.kind != AuthRejectionKind::InsufficientScope || scopes.is_empty() {
            return self;
        }
        if let Some(challenge) = &self.challenge {
            let mut value = challenge.as_bytes().to_vec();
            value.extend_from_slice(b", scope=\"");
            value.extend_from_slice(scopes.as_bytes());
            value.push(b'"');
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                self.challenge = Some(value);
            }
        }
        self
    }

    /// A rejection whose kind has no challenge (a misconfiguration found at request time).
    pub(crate) fn misconfigured() -> Self {
        Self {
            kind: AuthRejectionKind::Misconfigured,
            challenge: None,
            retry_after: 0,
            render: None,
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        self.into_response_with(axum::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuthRejectionKind as K;

    fn render(kind: AuthRejectionKind) -> (u16, Option<String>, Option<String>) {
        let challenges = Challenges::new("test").expect("realm");
        let response = AuthRejection::new(kind, &challenges).into_response();
        assert_eq!(
            response.extensions().get::<AuthRejectionKind>(),
            Some(&kind)
        );
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().expect("ascii").to_owned())
        };
        (
            response.status().as_u16(),
            header(WWW_AUTHENTICATE),
            header(RETRY_AFTER),
        )
    }

    #[test]
    fn every_row_of_the_status_table_renders_as_specified() {
        let bare = Some("Bearer realm=\"test\"".to_owned());
        let req = Some("Bearer realm=\"test\", error=\"invalid_request\"".to_owned());
        let tok = Some("Bearer realm=\"test\", error=\"invalid_token\"".to_owned());
        let scope = Some("Bearer realm=\"test\", error=\"insufficient_scope\"".to_owned());
        let table = [
            (K::MissingCredential, 401, bare, None),
            (K::MalformedCredential, 400, req.clone(), None),
            (K::DuplicateCredential, 400, req.clone(), None),
            (K::ConflictingCredentials, 400, req.clone(), None),
            (K::CredentialTooLong, 400, req, None),
            (K::InvalidCredential, 401, tok, None),
            (K::InsufficientScope, 403, scope, None),
            (K::OriginNotAllowed, 403, None, None),
            (K::Unavailable, 503, None, Some("5".to_owned())),
            (K::Misconfigured, 500, None, None),
            (K::InvalidHost, 400, None, None),
        ];
        for (kind, status, challenge, retry) in table {
            assert_eq!(render(kind), (status, challenge, retry), "{kind:?}");
        }
        let limited = AuthRejection::rate_limited(42, &Challenges::new("r").expect("realm"));
        assert_eq!(
            limited.retry_after(),
            Some(std::time::Duration::from_secs(42))
        );
        let response = limited.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"42"[..])
        );
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn insufficient_scope_names_the_required_scopes() {
        let c = Challenges::new("test").expect("realm");
        let response = AuthRejection::new(K::InsufficientScope, &c)
            .with_scope("tools:read sandbox:7")
            .into_response();
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"test\", error=\"insufficient_scope\", scope=\"tools:read sandbox:7\""
        );
        // Only an insufficient-scope challenge takes the attribute.
        let response = AuthRejection::new(K::InvalidCredential, &c)
            .with_scope("x")
            .into_response();
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"test\", error=\"invalid_token\""
        );
    }

    #[test]
    fn short_reasons_are_kept_and_long_ones_cut_on_a_char_boundary() {
        assert_eq!(close::truncate_reason("bye"), "bye");
        let exact = "a".repeat(123);
        assert_eq!(close::truncate_reason(&exact), exact);
        let over = format!("{}€", "a".repeat(121)); // 124 bytes, € starts at 121
        assert_eq!(close::truncate_reason(&over), "a".repeat(121));
        let long = "é".repeat(100); // 200 bytes
        assert_eq!(close::truncate_reason(&long), "é".repeat(61));
    }

    #[test]
    fn close_codes_and_reasons_follow_the_status() {
        let c = Challenges::new("r").expect("realm");
        let code = |k| AuthRejection::new(k, &c).close_code();
        assert_eq!(code(K::InvalidCredential), 4001);
        assert_eq!(code(K::MissingCredential), 4001);
        assert_eq!(code(K::MalformedCredential), 4001);
        assert_eq!(code(K::InsufficientScope), 4003);
        assert_eq!(code(K::Unavailable), 1011);
        assert_eq!(
            AuthRejection::rate_limited(1, &Challenges::new("r").expect("realm")).close_code(),
            1013
        );
        for kind in [K::InvalidCredential, K::Unavailable, K::Misconfigured] {
            assert!(AuthRejection::new(kind, &c).close_reason().len() <= 123);
        }
    }
}
