//! What every fuzz target shares: the guards under test, request building, a synchronous poll,
//! and the contract every rejection must keep (status set, canonical texts, no credential bytes).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::response::IntoResponse;
use axum_keyguard::{AuthRejection, AuthRejectionKind, Guard, Identity, KeyId, Keys, Source};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

/// The one capability key the key guards accept (long enough for any minimum key length).
pub const KEY: &str = "fuzz-key-0123456789abcdefghijklmnopqrstu";

/// The realm of the default challenges.
pub const REALM: &str = "axum-keyguard";

/// Polls a future once; the verifiers under test (keys, HMAC JWT) decide synchronously.
pub fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a synchronous verifier left the resolution pending"),
    }
}

/// Replaces the placeholders `$KEY` (the valid key), `$B64KEY` (its unpadded base64url) and
/// `$PCTKEY` (every byte percent-encoded) so that seeds and mutations reach the success path.
pub fn expand(input: &[u8]) -> Vec<u8> {
    let b64 = URL_SAFE_NO_PAD.encode(KEY);
    let pct: String = KEY.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if let Some(r) = rest.strip_prefix(b"$B64KEY") {
            out.extend_from_slice(b64.as_bytes());
            i = input.len() - r.len();
        } else if let Some(r) = rest.strip_prefix(b"$PCTKEY") {
            out.extend_from_slice(pct.as_bytes());
            i = input.len() - r.len();
        } else if let Some(r) = rest.strip_prefix(b"$KEY") {
            out.extend_from_slice(KEY.as_bytes());
            i = input.len() - r.len();
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// A capability-key guard over `sources` (default options otherwise), built once per set.
pub fn key_guard(sources: Vec<Source>) -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("valid key"))
        .with_sources(sources)
        .build()
        .expect("valid guard")
}

/// A request head: method, target, version and header lines (lines whose name or value
/// `http` refuses are dropped, as a server would have refused them).
pub fn head(
    method: Method,
    uri: Uri,
    version: Version,
    headers: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) else {
            continue;
        };
        parts.headers.append(name, value);
    }
    parts
}

/// A complete RFC 6455 opening handshake for `uri`, plus `extra` header lines.
pub fn handshake(uri: Uri, extra: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Parts {
    let base = [
        ("host", "example.com"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ]
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()));
    head(
        Method::GET,
        uri,
        Version::HTTP_11,
        base.into_iter().chain(extra),
    )
}

/// A plain REST `GET` for `uri`, plus `extra` header lines.
pub fn rest(uri: Uri, extra: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Parts {
    let host = [(b"host".to_vec(), b"example.com".to_vec())];
    head(
        Method::GET,
        uri,
        Version::HTTP_11,
        host.into_iter().chain(extra),
    )
}

/// Resolves `parts` and checks the outcome against the contract: success, or a rejection that
/// keeps [`check_rejection`]. `secrets` are the credential bytes the request carried.
pub fn resolve<P>(
    guard: &Guard<P>,
    parts: &Parts,
    secrets: &[&[u8]],
) -> Result<Identity<P>, AuthRejectionKind>
where
    P: Clone + Send + Sync + 'static,
{
    let first = now(guard.resolve(parts));
    // The same request resolves the same way (no state leaks from one request to the next).
    let again = now(guard.resolve(parts));
    assert_eq!(
        first
            .as_ref()
            .map(Identity::source)
            .map_err(AuthRejection::kind),
        again
            .as_ref()
            .map(Identity::source)
            .map_err(AuthRejection::kind),
        "resolution is not deterministic"
    );
    match first {
        Ok(verified) => Ok(verified),
        Err(rejection) => {
            check_rejection(&rejection, secrets);
            Err(rejection.kind())
        }
    }
}

use AuthRejectionKind as K;

/// The kinds a request-time rejection by a correctly built key or JWT guard may have.
pub const KINDS: [AuthRejectionKind; 9] = [
    K::MissingCredential,
    K::MalformedCredential,
    K::DuplicateCredential,
    K::ConflictingCredentials,
    K::CredentialTooLong,
    K::InvalidCredential,
    K::InsufficientScope,
    K::OriginNotAllowed,
    K::InvalidHost,
];

/// What the contract says a rejection of `kind` renders as: body, challenge, close code and
/// close reason (DESIGN §3.2, §3.3).
fn expected(kind: AuthRejectionKind) -> (&'static str, Option<String>, u16, &'static str) {
    match kind {
        K::MissingCredential => (
            "unauthorized",
            Some(format!("Bearer realm=\"{REALM}\"")),
            4001,
            "authentication failed",
        ),
        K::MalformedCredential
        | K::DuplicateCredential
        | K::ConflictingCredentials
        | K::CredentialTooLong => (
            "bad request",
            Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_request\""
            )),
            4001,
            "authentication failed",
        ),
        K::InvalidCredential => (
            "unauthorized",
            Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")),
            4001,
            "authentication failed",
        ),
        K::InsufficientScope => (
            "forbidden",
            Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\""
            )),
            4003,
            "forbidden",
        ),
        K::OriginNotAllowed => ("forbidden", None, 4003, "forbidden"),
        K::InvalidHost => ("bad request", None, 4001, "authentication failed"),
        other => panic!("undocumented outcome for these verifiers: {other:?}"),
    }
}

/// Every text a rejection of `kind` may show: `Debug`, `Display`, close reason, header names
/// and values, body.
fn canonical_texts(kind: AuthRejectionKind) -> Vec<String> {
    let (body, challenge, _, reason) = expected(kind);
    let status = kind.status().as_u16();
    let mut texts = vec![
        format!("AuthRejection {{ kind: {kind:?}, status: {status} }}"),
        format!("request not authenticated: {}", kind.as_str()),
        reason.to_owned(),
        "content-type".to_owned(),
        "text/plain; charset=utf-8".to_owned(),
        "cache-control".to_owned(),
        "no-store".to_owned(),
        body.to_owned(),
    ];
    if let Some(challenge) = challenge {
        texts.push("www-authenticate".to_owned());
        texts.push(challenge);
    }
    texts
}

/// The canonical texts of every kind: a "secret" inside one of them proves nothing.
fn vocabulary() -> &'static [String] {
    static VOCABULARY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VOCABULARY.get_or_init(|| KINDS.into_iter().flat_map(canonical_texts).collect())
}

/// The contract of a request-time rejection by a correctly built guard:
/// - the status is 400, 401 or 403 (never 500, never 503 with these verifiers), and matches the
///   kind's row of the status table;
/// - `Debug`, `Display`, the body, the headers and the close code and reason are the canonical
///   texts of the kind: they depend on nothing but the kind, so no input byte can reach them;
/// - none of `secrets` appears in any of them.
pub fn check_rejection(rejection: &AuthRejection, secrets: &[&[u8]]) {
    let kind = rejection.kind();
    let status = rejection.status().as_u16();
    assert_eq!(status, kind.status().as_u16());
    assert!(
        matches!(status, 400 | 401 | 403),
        "status {status} for {kind:?}"
    );
    let (body, challenge, code, reason) = expected(kind);
    let canonical = canonical_texts(kind);

    let mut texts = vec![
        format!("{rejection:?}"),
        rejection.to_string(),
        rejection.close_reason().to_owned(),
    ];
    assert_eq!(rejection.close_code(), code);
    assert_eq!(rejection.close_reason(), reason);
    let response = rejection.clone().into_response();
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.extensions().get::<AuthRejectionKind>(),
        Some(&kind)
    );
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        challenge.as_ref().map(String::as_bytes)
    );
    for (name, value) in response.headers() {
        texts.push(name.as_str().to_owned());
        texts.push(value.to_str().expect("ASCII header").to_owned());
    }
    let bytes = now(axum::body::to_bytes(response.into_body(), 1024)).expect("static body");
    assert_eq!(&bytes[..], body.as_bytes());
    texts.push(String::from_utf8(bytes.to_vec()).expect("UTF-8 body"));
    for text in &texts {
        assert!(canonical.contains(text), "not a canonical text: {text:?}");
    }

    for secret in secrets {
        let Ok(secret) = std::str::from_utf8(secret) else {
            continue; // the texts are ASCII
        };
        if secret.is_empty() || vocabulary().iter().any(|v| v.contains(secret)) {
            continue;
        }
        for text in &texts {
            assert!(
                !text.contains(secret),
                "credential bytes in rejection text {text:?}"
            );
        }
    }
}

/// Splits on `\n`; empty input is no line at all.
pub fn lines(input: &[u8]) -> Vec<&[u8]> {
    if input.is_empty() {
        return Vec::new();
    }
    input.split(|&b| b == b'\n').collect()
}

/// The members of a top-level JSON object in document order, duplicates kept; `None` when the
/// text is not one JSON object.
pub fn object_members(bytes: &[u8]) -> Option<Vec<(String, serde_json::Value)>> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, serde_json::Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                members.push(entry);
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let members = (&mut de).deserialize_map(Members).ok()?;
    de.end().ok()?;
    Some(members)
}

/// Canonical unpadded base64url, decoded independently of the `base64` crate: `None` for a bad
/// character, a length of 1 mod 4, or non-zero trailing bits.
pub fn decode_canonical(text: &[u8]) -> Option<Vec<u8>> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    };
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        acc = (acc << 6) | u32::from(sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}
