//! Property tests (proptest) for the credential grammars, through the public API only: round trips
//! (a value encoded the way each source carries it resolves to exactly that value) and "never 2xx
//! without the right credential" across every source. The fuzz targets in `fuzz/` check the same
//! grammars against independent parsers; these run in the normal suite.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum_keyguard::{
    AuthRejectionKind, Claims, Credential, Grant, Guard, Identity, Jwt, JwtAlgorithm, JwtKey,
    JwtKeyring, Keys, Source, SourceKind, Verdict, Verifier,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::request::Parts;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

/// The Kubernetes subprotocol prefix the guard reads by default.
const DEFAULT_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

const KEY: &str = "grammar-props-key-0123456789";

/// Hands back the presented credential as the principal, so a test sees what the guard parsed.
struct Echo;

impl Verifier for Echo {
    type Principal = String;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<String> {
        Verdict::ready(Ok(Grant::new(credential.expose().to_owned())))
    }
}

/// Polls once: keys, the echo and HMAC JWTs decide synchronously.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a synchronous verifier left the resolution pending"),
    }
}

fn resolve<P: Clone + Send + Sync + 'static>(
    guard: &Guard<P>,
    parts: &Parts,
) -> Result<Identity<P>, AuthRejectionKind> {
    now(guard.resolve(parts)).map_err(|rejection| rejection.kind())
}

/// A complete WebSocket handshake for `target`, plus `headers`.
fn handshake(target: &str, headers: &[(&str, &[u8])]) -> Parts {
    let mut builder = http::Request::get(target)
        .header("host", "example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

/// A plain REST `GET` for `target`, plus `headers`.
fn rest(target: &str, headers: &[(&str, &[u8])]) -> Parts {
    let mut builder = http::Request::get(target).header("host", "example.com");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn echo_guard(sources: impl IntoIterator<Item = Source>) -> Guard<String> {
    Guard::builder()
        .with_verifier(Echo)
        .with_sources(sources)
        .build()
        .expect("guard")
}

fn key_guard() -> Guard<axum_keyguard::KeyId> {
    Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .add_source(Source::subprotocol())
        .build()
        .expect("guard")
}

/// `application/x-www-form-urlencoded`: everything but ASCII alphanumerics percent-encoded, and
/// spaces as `+` when `plus`.
fn form_encode(value: &str, plus: bool) -> String {
    let encoded = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
    if plus {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

/// Where a test puts a credential.
#[derive(Debug, Clone, Copy)]
enum Place {
    Query,
    Header,
    Bearer,
    Subprotocol,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Query),
        Just(Place::Header),
        Just(Place::Bearer),
        Just(Place::Subprotocol),
    ]
}

/// An upgrade (or, with `upgrade` false, a REST request) carrying `value` in `place`, encoded as
/// that source expects.
fn carrying(place: Place, value: &str, upgrade: bool) -> Parts {
    let header;
    let (target, headers): (String, Vec<(&str, &[u8])>) = match place {
        Place::Query => (
            format!("/ws?session_api_key={}", form_encode(value, true)),
            vec![],
        ),
        Place::Header => ("/ws".into(), vec![("x-session-api-key", value.as_bytes())]),
        Place::Bearer => {
            header = format!("Bearer {value}");
            ("/ws".into(), vec![("authorization", header.as_bytes())])
        }
        Place::Subprotocol => {
            header = format!(
                "{DEFAULT_SUBPROTOCOL_PREFIX}{}, agent.v1",
                URL_SAFE_NO_PAD.encode(value)
            );
            (
                "/ws".into(),
                vec![("sec-websocket-protocol", header.as_bytes())],
            )
        }
    };
    if upgrade {
        handshake(&target, &headers)
    } else {
        rest(&target, &headers)
    }
}

fn kind_of(place: Place) -> SourceKind {
    match place {
        Place::Query => SourceKind::Query,
        Place::Header => SourceKind::Header,
        Place::Bearer => SourceKind::Bearer,
        Place::Subprotocol => SourceKind::Subprotocol,
    }
}

/// RFC 9110 token68.
const TOKEN68: &str = "[A-Za-z0-9._~+/-]{1,64}={0,2}";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bearer_tokens_round_trip_whatever_the_scheme_case_and_spacing(
        token in TOKEN68,
        upper in proptest::collection::vec(any::<bool>(), 6),
        spaces in 1usize..4,
        trailing in "[ \t]{0,3}",
    ) {
        let scheme: String = "bearer"
            .chars()
            .zip(&upper)
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let value = format!("{scheme}{}{token}{trailing}", " ".repeat(spaces));
        let guard = echo_guard([Source::bearer()]);
        let parts = rest("/api", &[("authorization", value.as_bytes())]);
        let verified = resolve(&guard, &parts).expect("a grammatical Bearer value");
        prop_assert_eq!(verified.principal(), &token);
        prop_assert_eq!(verified.source(), SourceKind::Bearer);
    }

    #[test]
    fn bearer_values_outside_token68_are_400(
        head in TOKEN68,
        bad in prop::sample::select(vec![' ', '"', ',', ';', ':', '@', '\\', '(', '<', '{', '\t']),
        tail in "[A-Za-z0-9]{1,8}",
    ) {
        let head = head.trim_end_matches('=');
        let value = format!("Bearer {head}{bad}{tail}");
        let guard = echo_guard([Source::bearer()]);
        let parts = rest("/api", &[("authorization", value.as_bytes())]);
        prop_assert_eq!(
            resolve(&guard, &parts).map(|v| v.into_principal()),
            Err(AuthRejectionKind::MalformedCredential)
        );
    }

    #[test]
    fn query_values_round_trip_through_form_encoding(
        value in "\\PC{1,32}",
        plus in any::<bool>(),
        before in "([a-z]{1,4}=[a-z0-9]{0,4}&){0,2}",
    ) {
        let guard = echo_guard([Source::query("session_api_key")]);
        let target = format!("/ws?{before}session_api_key={}", form_encode(&value, plus));
        let verified = resolve(&guard, &handshake(&target, &[])).expect("an encoded value");
        prop_assert_eq!(verified.principal(), &value);
        // The same name, percent-encoded, is the same parameter.
        let target = format!("/ws?{}={}", form_encode("session_api_key", false).replace('_', "%5F"), form_encode(&value, plus));
        let verified = resolve(&guard, &handshake(&target, &[])).expect("an encoded name");
        prop_assert_eq!(verified.principal(), &value);
        // Its redacted form never shows it.
        let uri: http::Uri = format!("/ws?{before}session_api_key={}", form_encode(&value, plus))
            .parse()
            .expect("uri");
        let shown = guard.redacted_uri(&uri).to_string();
        prop_assert!(shown.ends_with("session_api_key=[REDACTED]"), "{}", shown);
    }

    #[test]
    fn subprotocol_tokens_round_trip_through_base64url(
        value in "\\PC{1,32}",
        others in proptest::collection::vec("[a-z][a-z0-9.]{0,10}", 1..3),
        first in any::<bool>(),
    ) {
        let token = format!("{DEFAULT_SUBPROTOCOL_PREFIX}{}", URL_SAFE_NO_PAD.encode(&value));
        let mut entries = others.clone();
        if first {
            entries.insert(0, token);
        } else {
            entries.push(token);
        }
        let line = entries.join(", ");
        let guard = echo_guard([Source::subprotocol()]);
        let parts = handshake("/ws", &[("sec-websocket-protocol", line.as_bytes())]);
        let verified = resolve(&guard, &parts).expect("a token entry beside a protocol");
        prop_assert_eq!(verified.principal(), &value);
        // Never on REST.
        let parts = rest("/ws", &[("sec-websocket-protocol", line.as_bytes())]);
        prop_assert_eq!(
            resolve(&guard, &parts).map(|v| v.into_principal()),
            Err(AuthRejectionKind::MissingCredential)
        );
    }

    #[test]
    fn named_header_values_are_trimmed_and_otherwise_verbatim(
        value in "[!-~]([ -~]{0,30}[!-~])?",
        left in "[ \t]{0,3}",
        right in "[ \t]{0,3}",
    ) {
        let guard = echo_guard([Source::header("X-Session-API-Key").expect("name")]);
        let sent = format!("{left}{value}{right}");
        let parts = rest("/api", &[("x-session-api-key", sent.as_bytes())]);
        let verified = resolve(&guard, &parts).expect("a non-empty value");
        prop_assert_eq!(verified.principal(), &value);
        // Two lines are a 400, even when equal.
        let parts = rest("/api", &[("x-session-api-key", sent.as_bytes()), ("X-Session-Api-Key", sent.as_bytes())]);
        prop_assert_eq!(
            resolve(&guard, &parts).map(|v| v.into_principal()),
            Err(AuthRejectionKind::DuplicateCredential)
        );
    }

    #[test]
    fn no_source_authenticates_without_the_key(
        value in "[!-~]{1,48}",
        place in place(),
        upgrade in any::<bool>(),
    ) {
        prop_assume!(value != KEY);
        let parts = carrying(place, &value, upgrade);
        let result = resolve(&key_guard(), &parts);
        prop_assert!(result.is_err(), "{:?} authenticated", place);
        let status = result.err().map(|k| k.status().as_u16());
        prop_assert!(matches!(status, Some(400 | 401)), "{:?}", status);
    }

    #[test]
    fn near_misses_of_the_key_never_authenticate(
        index in 0usize..KEY.len(),
        change in prop::sample::select(vec!["flip-case", "replace", "drop", "insert", "append", "prepend"]),
        byte in b'!'..=b'~',
        place in place(),
    ) {
        let mut bytes = KEY.as_bytes().to_vec();
        match change {
            "flip-case" => bytes[index] = if bytes[index].is_ascii_lowercase() { bytes[index].to_ascii_uppercase() } else { bytes[index].to_ascii_lowercase() },
            "replace" => bytes[index] = byte,
            "drop" => { bytes.remove(index); }
            "insert" => bytes.insert(index, byte),
            "append" => bytes.push(byte),
            _ => bytes.insert(0, byte),
        }
        let value = String::from_utf8(bytes).expect("ASCII");
        prop_assume!(value != KEY);
        let result = resolve(&key_guard(), &carrying(place, &value, true));
        prop_assert!(result.is_err(), "near miss {:?} in {:?} authenticated", value, place);
    }

    #[test]
    fn the_key_authenticates_from_each_source_and_upgrade_only_sources_only_on_upgrades(
        place in place(),
    ) {
        let guard = key_guard();
        let verified = resolve(&guard, &carrying(place, KEY, true)).expect("the key");
        prop_assert_eq!(verified.source(), kind_of(place));
        let on_rest = resolve(&guard, &carrying(place, KEY, false));
        match place {
            Place::Query | Place::Subprotocol => {
                prop_assert_eq!(on_rest.map(|v| v.source()), Err(AuthRejectionKind::MissingCredential));
            }
            Place::Header | Place::Bearer => prop_assert!(on_rest.is_ok()),
        }
    }
}

fn jwt(secret: &[u8]) -> Jwt<Claims> {
    let keyring =
        JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, secret).expect("key")]).expect("keyring");
    Jwt::builder(keyring)
        .with_token_cache(0)
        .build()
        .expect("verifier")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_jwt_with_any_byte_changed_or_another_secret_never_authenticates(
        sub in "[a-z0-9-]{1,16}",
        position in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let secret = b"grammar-props-hmac-secret-0123456789";
        let verifier = jwt(secret);
        let mut claims = Claims::default();
        claims.sub = Some(sub.clone());
        let token = verifier.mint(&claims, Duration::from_secs(300)).expect("mint");
        let guard = Guard::builder().with_verifier(verifier).build().expect("guard");
        let bearer = |token: &[u8]| {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(token);
            value
        };
        let verified = resolve(&guard, &rest("/api", &[("authorization", &bearer(token.as_bytes()))]))
            .expect("the minted token");
        prop_assert_eq!(verified.principal().sub.as_deref(), Some(sub.as_str()));

        let mut changed = token.clone().into_bytes();
        let i = position.index(changed.len());
        changed[i] ^= xor;
        if http::HeaderValue::from_bytes(&bearer(&changed)).is_ok() {
            let result = resolve(&guard, &rest("/api", &[("authorization", &bearer(&changed))]));
            prop_assert!(result.is_err(), "byte {} changed and still accepted", i);
        }

        let forged = jwt(b"another-hmac-secret-of-32-bytes-or-more")
            .mint(&claims, Duration::from_secs(300))
            .expect("mint");
        let result = resolve(&guard, &rest("/api", &[("authorization", &bearer(forged.as_bytes()))]));
        prop_assert_eq!(result.map(|v| v.into_principal()), Err(AuthRejectionKind::InvalidCredential));
    }
}
