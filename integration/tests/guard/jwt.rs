//! The HMAC JWT verifier: every rejected shape, leeway boundaries on an injected clock, RFC
//! vectors, keyring rotation without restart, composition with keys; on REST and on a real
//! WebSocket handshake. Tokens are minted here with `hmac` + `base64`, independently of
//! jsonwebtoken, so the verifier is not only agreeing with itself.
#![cfg(feature = "jwt")]

use super::common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::{
    AuthRejectionKind, ByShape, Claims, ConfigError, ConfigErrorKind, Credential, Guard, Identity,
    Jwt, JwtAlgorithm, JwtKey, JwtKeyring, Keys, Verdict, Verifier,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{get_head, next_text, raw_http, spawn, ws_connect};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = 30;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn jws(header: &str, payload: &str, sign_alg: &str, secret: &[u8]) -> String {
    common::hmac_jws(header, payload, sign_alg, secret)
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT","kid":"a-long-random-key-1"}"#;

/// The standard claims with `changes` applied (`null` removes a claim).
fn claims(changes: Value) -> String {
    let mut claims =
        json!({"sub": "alice", "iss": "iss1", "aud": "svc", "exp": NOW + 600, "iat": NOW - 10});
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims.to_string()
}

fn good(changes: Value) -> String {
    jws(HEADER, &claims(changes), "HS256", SECRET)
}

fn with_header(header: &str) -> String {
    jws(header, &claims(json!({})), "HS256", SECRET)
}

struct Fixture {
    clock: Arc<AtomicU64>,
    jwt: Jwt<Claims>,
}

fn fixture() -> Fixture {
    let clock = Arc::new(AtomicU64::new(NOW));
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, SECRET)
        .expect("key")
        .with_kid("a-long-random-key-1")])
    .expect("keyring");
    let now = clock.clone();
    let jwt = Jwt::builder(keyring)
        .with_issuer("iss1")
        .with_audience("svc")
        .with_leeway(Duration::from_secs(LEEWAY))
        .with_clock(move || UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst)))
        .build()
        .expect("jwt");
    Fixture { clock, jwt }
}

fn app<V: Verifier<Principal = Claims>>(verifier: V) -> Router {
    async fn socket(verified: Identity<Claims>, ws: WebSocketUpgrade) -> Response {
        let sub = verified.principal().sub.clone().unwrap_or_default();
        ws.on_upgrade(move |mut socket| async move {
            let _ = socket.send(sub.into()).await;
            while let Some(Ok(_)) = socket.recv().await {}
        })
    }
    let guard = Guard::builder()
        .with_verifier(verifier)
        .build()
        .expect("guard");
    Router::new()
        .route(
            "/api",
            get(|v: Identity<Claims>| async move { v.principal().sub.clone().unwrap_or_default() }),
        )
        .route("/ws", any(socket))
        .route_layer(guard.layer())
}

fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Runs `token` on REST (loopback) and on a WebSocket handshake; returns whether each accepted it.
/// Rejections must be `401 invalid_token`.
async fn outcome(addr: std::net::SocketAddr, name: &str, token: &str) -> (bool, bool) {
    let bearer = format!("Bearer {token}");
    let (header, value) = if is_token68(token) {
        ("Authorization", bearer.as_str())
    } else {
        ("X-Session-API-Key", token)
    };
    let invalid = Some("Bearer realm=\"axum-keyguard\", error=\"invalid_token\"".to_owned());
    let rest = raw_http(addr, &get_head(addr, "/api", &[(header, value.as_bytes())])).await;
    let rest_ok = match rest.status {
        200 => {
            assert_eq!(rest.body_text(), "alice", "{name}");
            true
        }
        _ => {
            assert_eq!(
                (rest.status, rest.header("www-authenticate")),
                (401, invalid.clone()),
                "{name} (REST)"
            );
            false
        }
    };
    let ws_ok = match ws_connect(addr, "/ws", &[(header, value)]).await {
        Ok(mut socket) => {
            assert_eq!(next_text(&mut socket).await, "alice", "{name}");
            true
        }
        Err(reply) => {
            assert_eq!(
                (reply.status, reply.header("www-authenticate")),
                (401, invalid),
                "{name} (WS)"
            );
            false
        }
    };
    (rest_ok, ws_ok)
}

fn rejected_tokens() -> Vec<(&'static str, String)> {
    let valid = good(json!({}));
    let (signing_input, signature) = valid.rsplit_once('.').expect("three segments");
    let mut flipped = signature.as_bytes().to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let flipped = format!(
        "{signing_input}.{}",
        String::from_utf8(flipped).expect("ascii")
    );
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut cases = vec![
        ("middle signature character flipped", flipped),
        ("signature stripped", format!("{signing_input}.")),
        (
            "signed with another key",
            jws(HEADER, &claims(json!({})), "HS256", OTHER_SECRET),
        ),
        (
            "alg HS384 with the same secret",
            jws(
                r#"{"alg":"HS384","kid":"a-long-random-key-1"}"#,
                &claims(json!({})),
                "HS384",
                SECRET,
            ),
        ),
        (
            "alg HS512 with the same secret",
            jws(
                r#"{"alg":"HS512","kid":"a-long-random-key-1"}"#,
                &claims(json!({})),
                "HS512",
                SECRET,
            ),
        ),
        (
            "alg RS256 header",
            with_header(r#"{"alg":"RS256","kid":"a-long-random-key-1"}"#),
        ),
        (
            "alg ES256 header",
            with_header(r#"{"alg":"ES256","kid":"a-long-random-key-1"}"#),
        ),
        (
            "alg hs256 lower-case",
            with_header(r#"{"alg":"hs256","kid":"a-long-random-key-1"}"#),
        ),
        ("no alg", with_header(r#"{"kid":"a-long-random-key-1"}"#)),
        ("no exp", good(json!({"exp": null}))),
        ("exp as a string", good(json!({"exp": "9999999999"}))),
        ("exp negative", good(json!({"exp": -1}))),
        (
            "exp 1e300",
            jws(
                HEADER,
                &claims(json!({})).replace(&format!("\"exp\":{}", NOW + 600), "\"exp\":1e300"),
                "HS256",
                SECRET,
            ),
        ),
        (
            "exp a float",
            jws(
                HEADER,
                &claims(json!({})).replace(
                    &format!("\"exp\":{}", NOW + 600),
                    &format!("\"exp\":{}.5", NOW + 600),
                ),
                "HS256",
                SECRET,
            ),
        ),
        ("exp 2^64-1", good(json!({"exp": u64::MAX}))),
        ("exp 2^63", good(json!({"exp": 1u64 << 63}))),
        (
            "expired beyond the leeway",
            good(json!({"exp": NOW - LEEWAY - 1})),
        ),
        (
            "expired exactly at the leeway",
            good(json!({"exp": NOW - LEEWAY})),
        ),
        (
            "nbf beyond the leeway",
            good(json!({"nbf": NOW + LEEWAY + 5})),
        ),
        ("nbf a string", good(json!({"nbf": "x"}))),
        ("iat in the future", good(json!({"iat": NOW + LEEWAY + 5}))),
        ("aud missing", good(json!({"aud": null}))),
        ("aud a number", good(json!({"aud": 123}))),
        ("aud mixed array", good(json!({"aud": ["svc", 1]}))),
        ("aud empty array", good(json!({"aud": []}))),
        ("aud other", good(json!({"aud": "other"}))),
        ("iss missing", good(json!({"iss": null}))),
        ("iss a number", good(json!({"iss": 1}))),
        ("iss an array", good(json!({"iss": ["evil", "iss1"]}))),
        ("iss wrong", good(json!({"iss": "evil"}))),
        ("sub a number", good(json!({"sub": 5}))),
        (
            "crit header",
            with_header(r#"{"alg":"HS256","kid":"a-long-random-key-1","crit":["foo"]}"#),
        ),
        (
            "crit null",
            with_header(r#"{"alg":"HS256","kid":"a-long-random-key-1","crit":null}"#),
        ),
        (
            "jku header",
            with_header(
                r#"{"alg":"HS256","kid":"a-long-random-key-1","jku":"https://evil.example/jwks"}"#,
            ),
        ),
        (
            "x5u header",
            with_header(
                r#"{"alg":"HS256","kid":"a-long-random-key-1","x5u":"https://evil.example/cert"}"#,
            ),
        ),
        (
            "jwk header",
            with_header(
                r#"{"alg":"HS256","kid":"a-long-random-key-1","jwk":{"kty":"oct","k":"AAAA"}}"#,
            ),
        ),
        (
            "b64 header",
            with_header(r#"{"alg":"HS256","kid":"a-long-random-key-1","b64":false}"#),
        ),
        (
            "kid path traversal",
            with_header(r#"{"alg":"HS256","kid":"../../etc/passwd"}"#),
        ),
        (
            "kid SQL text",
            with_header(r#"{"alg":"HS256","kid":"' OR 1=1 --"}"#),
        ),
        ("kid unknown", with_header(r#"{"alg":"HS256","kid":"k9"}"#)),
        (
            "kid missing (no unnamed key)",
            with_header(r#"{"alg":"HS256"}"#),
        ),
        ("kid a number", with_header(r#"{"alg":"HS256","kid":5}"#)),
        (
            "duplicate alg",
            with_header(r#"{"alg":"HS256","alg":"HS256","kid":"a-long-random-key-1"}"#),
        ),
        (
            "duplicate exp",
            jws(
                HEADER,
                &claims(json!({})).replacen('{', &format!("{{\"exp\":{},", NOW + 600), 1),
                "HS256",
                SECRET,
            ),
        ),
        (
            "header an array",
            with_header(r#"["HS256","a-long-random-key-1"]"#),
        ),
        ("header null", with_header("null")),
        ("header a number", with_header("1")),
        ("payload an array", jws(HEADER, "[1]", "HS256", SECRET)),
        ("payload null", jws(HEADER, "null", "HS256", SECRET)),
        (
            "payload nested 200 deep",
            jws(HEADER, &deep, "HS256", SECRET),
        ),
        ("payload not JSON", jws(HEADER, "hello", "HS256", SECRET)),
        ("one segment", b64(HEADER.as_bytes())),
        ("two segments", signing_input.to_owned()),
        ("four segments", format!("{valid}.{signature}")),
        ("five segments", format!("{valid}.a.b")),
        (
            "empty header segment",
            format!(".{}", valid.split_once('.').expect("dot").1),
        ),
        ("padding", format!("{valid}=")),
        (
            "standard alphabet",
            valid.replace('-', "+").replace('_', "/")
                + if valid.contains(['-', '_']) { "" } else { "+" },
        ),
        ("embedded space", valid.replacen('.', " .", 1)),
        ("not a JWT at all", "not-a-jwt".to_owned()),
    ];
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","kid":"a-long-random-key-1"}}"#);
        let unsigned = format!(
            "{}.{}.",
            b64(header.as_bytes()),
            b64(claims(json!({})).as_bytes())
        );
        cases.push(("alg none, empty signature", unsigned));
        cases.push(("alg none, HS256 signature", with_header(&header)));
    }
    cases
}

#[tokio::test]
async fn every_rejected_shape_is_401_on_rest_and_websocket() {
    let f = fixture();
    let addr = spawn(app(f.jwt.clone())).await;
    let accepted = [
        ("valid", good(json!({}))),
        (
            "aud array containing ours",
            good(json!({"aud": ["other", "svc"]})),
        ),
        ("nbf within the leeway", good(json!({"nbf": NOW + LEEWAY}))),
        (
            "expired within the leeway",
            good(json!({"exp": NOW - LEEWAY + 1})),
        ),
        (
            "unknown claims ignored",
            good(json!({"http://example.com/is_root": true})),
        ),
        (
            "minted by the verifier",
            f.jwt
                .mint(&json!({"sub": "alice"}), Duration::from_secs(60))
                .expect("mint"),
        ),
    ];
    for (name, token) in &accepted {
        assert_eq!(outcome(addr, name, token).await, (true, true), "{name}");
    }
    let rejected = rejected_tokens();
    assert!(rejected.len() > 60);
    for (name, token) in &rejected {
        assert_eq!(
            outcome(addr, name, token).await,
            (false, false),
            "{name}: {token}"
        );
    }
}

#[tokio::test]
async fn leeway_boundaries_follow_the_injected_clock() {
    let f = fixture();
    let guard = Guard::builder()
        .with_verifier(f.jwt.clone())
        .build()
        .expect("guard");
    let accepts = |token: String| {
        let guard = guard.clone();
        async move {
            let (parts, ()) = http::Request::get("/")
                .header("host", "localhost")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .expect("request")
                .into_parts();
            guard.resolve(&parts).await.is_ok()
        }
    };
    let exp = NOW + 100;
    let token = good(json!({"exp": exp}));
    for (now, ok) in [
        (exp + LEEWAY - 1, true),
        (exp + LEEWAY, false),
        (exp + LEEWAY + 1, false),
        (exp, true),
    ] {
        f.clock.store(now, Ordering::SeqCst);
        assert_eq!(
            accepts(token.clone()).await,
            ok,
            "exp boundary at now={now}"
        );
    }
    let nbf = NOW + 1000;
    let token = good(json!({"nbf": nbf, "exp": nbf + 600, "iat": null}));
    for (now, ok) in [(nbf - LEEWAY - 1, false), (nbf - LEEWAY, true), (nbf, true)] {
        f.clock.store(now, Ordering::SeqCst);
        assert_eq!(
            accepts(token.clone()).await,
            ok,
            "nbf boundary at now={now}"
        );
    }

    // The lease ends at exp + leeway.
    f.clock.store(NOW, Ordering::SeqCst);
    let (parts, ()) = http::Request::get("/")
        .header("host", "localhost")
        .header("x-session-api-key", good(json!({"exp": NOW + 600})))
        .body(())
        .expect("request")
        .into_parts();
    let verified = guard.resolve(&parts).await.expect("valid");
    assert_eq!(
        verified.lease().expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(NOW + 600 + LEEWAY))
    );
    assert_eq!(verified.principal().exp, NOW + 600);
}

#[tokio::test]
async fn zero_leeway_rejects_a_token_at_its_exp_second() {
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, SECRET)
        .expect("key")
        .with_kid("a-long-random-key-1")])
    .expect("keyring");
    let jwt = Jwt::builder(keyring)
        .with_issuer("iss1")
        .with_audience("svc")
        .with_leeway(Duration::ZERO)
        .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
        .build()
        .expect("jwt");
    let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
    for (exp, ok) in [(NOW, false), (NOW + 1, true)] {
        let (parts, ()) = http::Request::get("/")
            .header("host", "localhost")
            .header("x-session-api-key", good(json!({"exp": exp})))
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(guard.resolve(&parts).await.is_ok(), ok, "exp={exp}");
    }
}

#[tokio::test]
async fn rfc7515_a1_token_verifies_at_its_time_and_is_expired_now() {
    const TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let key = URL_SAFE_NO_PAD
        .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
        .expect("jwk k");
    let guard_at = |now: u64| {
        let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, &key).expect("key")])
            .expect("keyring");
        let jwt = Jwt::builder(keyring)
            .with_issuer("joe")
            .with_clock(move || UNIX_EPOCH + Duration::from_secs(now))
            .build()
            .expect("jwt");
        Guard::builder().with_verifier(jwt).build().expect("guard")
    };
    let parts = || {
        http::Request::get("/")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(())
            .expect("request")
            .into_parts()
            .0
    };
    let verified = guard_at(1_300_819_370)
        .resolve(&parts())
        .await
        .expect("valid at its time");
    assert_eq!(verified.principal().exp, 1_300_819_380);
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let rejection = guard_at(now).resolve(&parts()).await.expect_err("expired");
    assert_eq!(rejection.kind(), AuthRejectionKind::InvalidCredential);
}

#[tokio::test]
async fn rfc7520_4_4_jws_has_a_valid_signature_but_is_not_a_jwt() {
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";
    let key = URL_SAFE_NO_PAD
        .decode("hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg")
        .expect("jwk k");
    let (input, signature) = TOKEN.rsplit_once('.').expect("segments");
    assert_eq!(
        common::hmac_sign("HS256", &key, input.as_bytes()),
        signature,
        "the vector's signature is genuine"
    );
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, &key)
        .expect("key")
        .with_kid("018c0ae5-4d9b-471b-bfd6-eef314bc7037")])
    .expect("keyring");
    let guard = Guard::builder()
        .with_verifier(Jwt::builder(keyring).build().expect("jwt"))
        .build()
        .expect("guard");
    let (parts, ()) = http::Request::get("/")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(())
        .expect("request")
        .into_parts();
    let rejection = guard
        .resolve(&parts)
        .await
        .expect_err("payload is not a JSON object");
    assert_eq!(rejection.kind(), AuthRejectionKind::InvalidCredential);
}

#[tokio::test]
async fn keyring_rotates_without_restart() {
    let f = fixture();
    let addr = spawn(app(f.jwt.clone())).await;
    let old_token = good(json!({}));
    assert_eq!(outcome(addr, "old key", &old_token).await, (true, true));

    let new_secret = b"a-brand-new-secret-of-32-bytes!!";
    f.jwt
        .keyring()
        .expect("keyring")
        .add(
            JwtKey::new(JwtAlgorithm::Hs256, new_secret)
                .expect("key")
                .with_kid("a-long-random-key-2"),
        )
        .expect("add");
    let minted = f
        .jwt
        .mint(&json!({"sub": "alice"}), Duration::from_secs(60))
        .expect("mint");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(minted.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], "a-long-random-key-2", "the newest key signs");
    let independent = jws(
        r#"{"alg":"HS256","kid":"a-long-random-key-2"}"#,
        &claims(json!({})),
        "HS256",
        new_secret,
    );
    for token in [&old_token, &minted, &independent] {
        assert_eq!(outcome(addr, "during rotation", token).await, (true, true));
    }
    assert!(f
        .jwt
        .keyring()
        .expect("keyring")
        .retire("a-long-random-key-1"));
    assert_eq!(
        outcome(addr, "retired key", &old_token).await,
        (false, false)
    );
    assert_eq!(outcome(addr, "current key", &minted).await, (true, true));
    assert!(
        !f.jwt
            .keyring()
            .expect("keyring")
            .retire("a-long-random-key-1"),
        "already gone"
    );
}

/// The HMAC is this crate's own (on `hmac` + `sha2`) since jsonwebtoken left the normal
/// dependencies: each algorithm must still agree with jsonwebtoken both ways.
#[tokio::test]
async fn every_hmac_algorithm_agrees_with_jsonwebtoken_both_ways() {
    let secret = [0x5au8; 64];
    for (alg, theirs) in [
        (JwtAlgorithm::Hs256, jsonwebtoken::Algorithm::HS256),
        (JwtAlgorithm::Hs384, jsonwebtoken::Algorithm::HS384),
        (JwtAlgorithm::Hs512, jsonwebtoken::Algorithm::HS512),
    ] {
        let kid = format!("k-{}", alg.as_str());
        let keyring =
            JwtKeyring::new([JwtKey::new(alg, secret).expect("key").with_kid(kid.clone())])
                .expect("keyring");
        let jwt = Jwt::builder(keyring)
            .with_issuer("iss1")
            .with_audience("svc")
            .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
            .build()
            .expect("verifier");
        // jsonwebtoken signs, we verify (on a real socket).
        let mut header = jsonwebtoken::Header::new(theirs);
        header.kid = Some(kid.clone());
        let theirs_token = jsonwebtoken::encode(
            &header,
            &json!({"sub": "alice", "iss": "iss1", "aud": "svc", "exp": NOW + 600}),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("jsonwebtoken signs");
        let guard = Guard::builder()
            .with_verifier(jwt.clone())
            .build()
            .expect("guard");
        let app =
            Router::new()
                .route(
                    "/me",
                    get(|v: Identity<Claims>| async move {
                        v.principal().sub.clone().unwrap_or_default()
                    }),
                )
                .layer(guard.layer());
        let addr = spawn(app).await;
        let bearer = format!("Bearer {theirs_token}");
        let reply = raw_http(
            addr,
            &get_head(addr, "/me", &[("authorization", bearer.as_bytes())]),
        )
        .await;
        assert_eq!(
            (reply.status, reply.body_text()),
            (200, "alice".to_owned()),
            "{alg:?}: jsonwebtoken's token"
        );
        let tampered = format!(
            "{}{}",
            &bearer[..bearer.len() - 2],
            if bearer.ends_with("AA") { "BA" } else { "AA" }
        );
        let reply = raw_http(
            addr,
            &get_head(addr, "/me", &[("authorization", tampered.as_bytes())]),
        )
        .await;
        assert_eq!(reply.status, 401, "{alg:?}: a changed signature");
        // We mint, jsonwebtoken verifies.
        let ours = jwt
            .mint(&json!({"sub": "bob"}), Duration::from_secs(60))
            .expect("mint");
        let mut validation = jsonwebtoken::Validation::new(theirs);
        validation.set_issuer(&["iss1"]);
        validation.set_audience(&["svc"]);
        validation.validate_exp = false; // minted on the test clock
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(
            &ours,
            &jsonwebtoken::DecodingKey::from_secret(&secret),
            &validation,
        )
        .expect("jsonwebtoken decodes what we mint");
        assert_eq!(data.header.alg, theirs);
        assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(data.claims["sub"], "bob");
    }
}

#[tokio::test]
async fn minted_tokens_decode_with_plain_jsonwebtoken_under_default_features() {
    let f = fixture();
    let token = f
        .jwt
        .mint(
            &json!({"sub": "alice", "user_id": "u-1", "provider_type": "github", "org_id": "o-9"}),
            Duration::from_secs(600),
        )
        .expect("mint");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["iss1"]);
    validation.set_audience(&["svc"]);
    validation.validate_exp = false; // minted on the test clock, not the wall clock
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET),
        &validation,
    )
    .expect("jsonwebtoken decodes what we mint");
    assert_eq!(data.header.kid.as_deref(), Some("a-long-random-key-1"));
    assert_eq!(data.claims["iat"], NOW);
    assert_eq!(data.claims["exp"], NOW + 600);
    // And our verifier reads the application's own claims back.
    #[derive(Clone, serde::Deserialize)]
    struct Scoped {
        user_id: String,
        provider_type: String,
        org_id: String,
    }
    let scoped = Jwt::builder(f.jwt.keyring().expect("keyring").clone())
        .claims::<Scoped>()
        .with_issuer("iss1")
        .with_audience("svc")
        .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
        .build()
        .expect("verifier");
    let guard = Guard::builder()
        .with_verifier(scoped)
        .build()
        .expect("guard");
    let (parts, ()) = http::Request::get("/")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request")
        .into_parts();
    let claims = guard.resolve(&parts).await.expect("valid").into_principal();
    assert_eq!(
        (
            claims.user_id.as_str(),
            claims.provider_type.as_str(),
            claims.org_id.as_str()
        ),
        ("u-1", "github", "o-9")
    );
}

#[test]
fn minting_refuses_bad_input() {
    let f = fixture();
    assert!(f.jwt.mint(&json!({"sub": "a"}), Duration::ZERO).is_err());
    assert!(f
        .jwt
        .mint(&json!(["not", "an", "object"]), Duration::from_secs(1))
        .is_err());
    let capped = Jwt::builder(f.jwt.keyring().expect("keyring").clone())
        .with_max_lifetime(Duration::from_secs(3600))
        .build()
        .expect("jwt");
    assert!(capped.mint(&json!({}), Duration::from_secs(7200)).is_err());
    assert!(capped.mint(&json!({}), Duration::from_secs(3600)).is_ok());
}

#[tokio::test]
async fn max_lifetime_and_typ_are_enforced_when_configured() {
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, SECRET)
        .expect("key")
        .with_kid("a-long-random-key-1")])
    .expect("keyring");
    let jwt = Jwt::builder(keyring)
        .with_issuer("iss1")
        .with_audience("svc")
        .with_max_lifetime(Duration::from_secs(3600))
        .with_typ("at+jwt")
        .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
        .build()
        .expect("jwt");
    let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
    let check = |token: String| {
        let guard = guard.clone();
        async move {
            let (parts, ()) = http::Request::get("/")
                .header("host", "localhost")
                .header("x-session-api-key", token)
                .body(())
                .expect("request")
                .into_parts();
            guard.resolve(&parts).await.is_ok()
        }
    };
    let typed = |typ: &str, changes: Value| {
        jws(
            &format!(r#"{{"alg":"HS256","kid":"a-long-random-key-1","typ":"{typ}"}}"#),
            &claims(changes),
            "HS256",
            SECRET,
        )
    };
    assert!(check(typed("at+jwt", json!({}))).await);
    assert!(check(typed("application/AT+JWT", json!({}))).await);
    assert!(!check(typed("JWT", json!({}))).await);
    assert!(!check(good(json!({}))).await, "typ JWT is not at+jwt");
    assert!(
        !check(typed("at+jwt", json!({"exp": NOW + 7200}))).await,
        "lives too long"
    );
    assert!(
        !check(typed(
            "at+jwt",
            json!({"iat": NOW - 5000, "exp": NOW + 600})
        ))
        .await,
        "exp - iat too long"
    );
    assert!(!check(typed("at+jwt", json!({"exp": 1u64 << 62}))).await);
}

#[test]
fn unsafe_jwt_configurations_are_build_errors() {
    let kind = |r: Result<JwtKey, axum_keyguard::ConfigError>| r.map(|_| ()).unwrap_err().kind();
    assert_eq!(
        kind(JwtKey::new(JwtAlgorithm::Hs256, [0u8; 31])),
        ConfigErrorKind::WeakSecret
    );
    assert_eq!(
        kind(JwtKey::new(JwtAlgorithm::Hs384, [0u8; 47])),
        ConfigErrorKind::WeakSecret
    );
    assert_eq!(
        kind(JwtKey::new(JwtAlgorithm::Hs512, [0u8; 63])),
        ConfigErrorKind::WeakSecret
    );
    assert_eq!(
        kind(JwtKey::new(JwtAlgorithm::Hs256, b"")),
        ConfigErrorKind::WeakSecret
    );
    assert!(JwtKey::new(JwtAlgorithm::Hs512, [0u8; 64]).is_ok());
    assert!(JwtKeyring::new([]).is_err());
    let k = || JwtKey::new(JwtAlgorithm::Hs256, SECRET).expect("key");
    let keyring_kind = |r: Result<JwtKeyring, ConfigError>| r.map(|_| ()).unwrap_err().kind();
    assert_eq!(
        keyring_kind(JwtKeyring::new([k().with_kid("a"), k().with_kid("a")])),
        ConfigErrorKind::DuplicateKeyId,
        "duplicate kid"
    );
    assert_eq!(
        keyring_kind(JwtKeyring::new([k(), k()])),
        ConfigErrorKind::DuplicateKeyId,
        "two unnamed keys"
    );
    let keyring = JwtKeyring::new([k()]).expect("keyring");
    let leeway = Jwt::builder(keyring.clone())
        .with_leeway(Duration::from_secs(301))
        .build();
    assert_eq!(
        leeway.map(|_| ()).unwrap_err().kind(),
        ConfigErrorKind::OutOfRange
    );
    assert!(Jwt::builder(keyring.clone())
        .with_leeway(Duration::from_secs(300))
        .build()
        .is_ok());
    assert!(Jwt::builder(keyring)
        .with_max_lifetime(Duration::ZERO)
        .build()
        .is_err());
}

/// Counts calls, like a remote store would see them.
struct CountingKeys {
    calls: Arc<AtomicUsize>,
    keys: Keys,
}

impl Verifier for CountingKeys {
    type Principal = Claims;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<Claims> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.keys
            .clone()
            .map_principal(|key| {
                let mut claims = Claims::default();
                claims.sub = Some(key.to_string());
                claims
            })
            .verify(credential)
    }
}

#[tokio::test]
async fn composition_routes_by_shape_and_never_sends_a_jwt_to_the_store() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let store = CountingKeys {
        calls: calls.clone(),
        keys: Keys::new(["opaque-session-key"]).expect("keys"),
    };
    let guard = Guard::builder()
        .with_verifier(ByShape::new(f.jwt.clone(), store))
        .build()
        .expect("guard");
    let resolve = |token: String| {
        let guard = guard.clone();
        async move {
            let (parts, ()) = http::Request::get("/")
                .header("host", "localhost")
                .header("x-session-api-key", token)
                .body(())
                .expect("request")
                .into_parts();
            guard
                .resolve(&parts)
                .await
                .map(|v| v.into_principal().sub.unwrap_or_default())
        }
    };
    assert_eq!(resolve(good(json!({}))).await.expect("jwt"), "alice");
    assert!(resolve(good(json!({"exp": NOW - 1000}))).await.is_err());
    assert!(
        resolve("a.b.c".to_owned()).await.is_err(),
        "JWT-shaped garbage"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no JWT-shaped credential reached the store"
    );
    let key_sub = resolve("opaque-session-key".to_owned()).await.expect("key");
    assert!(key_sub.starts_with("key:"));
    assert!(resolve("wrong-opaque-key".to_owned()).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn debug_of_jwt_types_never_shows_the_secret() {
    let secret = b"S3CR3T-hmac-secret-of-32-bytes!!";
    let key = JwtKey::new(JwtAlgorithm::Hs256, secret)
        .expect("key")
        .with_kid("a-long-random-key-1");
    let keyring = JwtKeyring::new([key.clone()]).expect("keyring");
    let builder = Jwt::builder(keyring.clone()).with_issuer("iss1");
    let shown = format!(
        "{key:?} {keyring:?} {builder:?} {:?}",
        builder_jwt(&keyring)
    );
    assert!(
        shown.contains("a-long-random-key-1"),
        "the kid is shown: {shown}"
    );
    assert!(!shown.contains("S3CR3T"), "{shown}");
    let as_bytes = format!("{:?}", secret.as_slice());
    assert!(!shown.contains(&as_bytes[1..20]), "{shown}");
}

fn builder_jwt(keyring: &JwtKeyring) -> Jwt<Claims> {
    Jwt::builder(keyring.clone()).build().expect("jwt")
}

/// Issue 3 lists "tokens longer than the source's cap" among the 401s; issue 2 and DESIGN §3.1
/// make every over-cap credential a 400 that is refused before it is hashed or parsed. One rule for
/// every credential: 400 `invalid_request`, on REST and on the handshake.
#[tokio::test]
async fn a_jwt_longer_than_the_cap_is_refused_with_400_before_it_is_parsed() {
    let f = fixture();
    let addr = spawn(app(f.jwt.clone())).await;
    let long = good(json!({"padding": "x".repeat(5000)}));
    assert!(long.len() > 4096 /* the default credential cap */);
    let bearer = format!("Bearer {long}");
    let rest = raw_http(
        addr,
        &get_head(addr, "/api", &[("Authorization", bearer.as_bytes())]),
    )
    .await;
    let challenge = Some("Bearer realm=\"axum-keyguard\", error=\"invalid_request\"".to_owned());
    assert_eq!(
        (rest.status, rest.header("www-authenticate")),
        (400, challenge.clone())
    );
    let ws = ws_connect(addr, "/ws", &[("Authorization", &bearer)])
        .await
        .expect_err("400");
    assert_eq!((ws.status, ws.header("www-authenticate")), (400, challenge));
}
