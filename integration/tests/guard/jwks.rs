//! Asymmetric JWTs against a JWK Set served by a local axum provider (no network): every
//! algorithm, unknown and confused keys, rotation, single flight and cooldown, outage and
//! staleness, size caps, discovery, `jku`/`x5u` never followed, and a key dropped from the set
//! closing its sockets with `4001`. Tokens are signed by jsonwebtoken with OpenSSL-made keys
//! (`integration/tests/fixtures/jwks/`), an implementation independent of the crate.
#![cfg(feature = "jwks")]

use super::common;
use common::jwks::{fixture, Provider, TestKey};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message as AxumMessage;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{
    ByShape, Claims, Guard, Identity, Jwks, JwksErrorKind, Jwt, JwtAlgorithm, Keys, Verifier,
};
use common::{get_head, next_text, raw_http, spawn, until_close, ws_connect};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

const CAPABILITY_KEY: &str = "a-long-random-capability-key-1";

fn rsa_a() -> TestKey {
    TestKey::new("rsa-a.pem", Algorithm::RS256)
}

/// A clock the test moves; the verifier and the key set both read it.
#[derive(Clone)]
struct Clock(Arc<AtomicU64>);

impl Clock {
    fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        Self(Arc::new(AtomicU64::new(now)))
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    fn reader(&self) -> impl Fn() -> SystemTime + Send + Sync + 'static {
        let at = Arc::clone(&self.0);
        move || UNIX_EPOCH + Duration::from_secs(at.load(Ordering::SeqCst))
    }
}

fn claims(clock: &Clock, sub: &str) -> Value {
    json!({
        "sub": sub,
        "iss": "https://idp.test",
        "aud": "agent-server",
        "iat": clock.now(),
        "exp": clock.now() + 600,
    })
}

/// What the guard answers: the principal for a JWT, or the capability key's id.
fn principal_verifier(jwt: Jwt<Claims>) -> impl Verifier<Principal = String> {
    let jwt = jwt.map_principal(|c: Claims| c.sub.unwrap_or_default());
    let keys = Keys::new([CAPABILITY_KEY])
        .expect("keys")
        .map_principal(|_| "capability".to_owned());
    ByShape::new(jwt, keys)
}

async fn socket(ws: GuardedUpgrade<String>) -> Response {
    ws.on_upgrade(|mut socket| async move {
        let hello = format!("hello {}", socket.principal());
        if socket.send(AxumMessage::text(hello)).await.is_err() {
            return;
        }
        while let Some(message) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    })
}

fn app(jwt: Jwt<Claims>) -> Router {
    let guard = Guard::builder()
        .with_verifier(principal_verifier(jwt))
        .build()
        .expect("guard");
    Router::new()
        .route(
            "/api",
            get(|id: Identity<String>| async move { id.principal().clone() }),
        )
        .route("/ws", any(socket))
        .route_layer(guard.layer())
}

struct Setup {
    clock: Clock,
    provider: Provider,
    jwks: Jwks,
    addr: SocketAddr,
}

async fn setup_with(
    keys: Vec<Value>,
    configure: impl FnOnce(axum_keyguard::JwksBuilder) -> axum_keyguard::JwksBuilder,
) -> Setup {
    let clock = Clock::new();
    let provider = Provider::start(keys).await;
    let builder = Jwks::builder(&provider.url())
        .expect("url")
        .with_clock(clock.reader());
    let jwks = configure(builder).build().await.expect("jwks");
    let jwt = Jwt::builder(jwks.clone())
        .with_issuer("https://idp.test")
        .with_audience("agent-server")
        .with_clock(clock.reader())
        .build()
        .expect("jwt");
    let addr = spawn(app(jwt)).await;
    Setup {
        clock,
        provider,
        jwks,
        addr,
    }
}

async fn setup(keys: Vec<Value>) -> Setup {
    setup_with(keys, |b| b).await
}

async fn get_api(addr: SocketAddr, credential: &str) -> common::Reply {
    let bearer = format!("Bearer {credential}");
    raw_http(
        addr,
        &get_head(addr, "/api", &[("Authorization", bearer.as_bytes())]),
    )
    .await
}

async fn status(addr: SocketAddr, credential: &str) -> u16 {
    get_api(addr, credential).await.status
}

#[tokio::test]
async fn every_algorithm_is_accepted_with_its_own_kid_on_rest_and_websocket() {
    let keys = [
        ("rsa-a", TestKey::new("rsa-a.pem", Algorithm::RS256)),
        ("rsa-pss", TestKey::new("rsa-b.pem", Algorithm::PS256)),
        ("ec", TestKey::new("ec-p256.pem", Algorithm::ES256)),
        ("ed", TestKey::new("ed25519.pem", Algorithm::EdDSA)),
    ];
    let s = setup(keys.iter().map(|(kid, k)| k.jwk(kid)).collect()).await;
    for (kid, key) in &keys {
        let token = key.sign(kid, &claims(&s.clock, &format!("user-{kid}")));
        let reply = get_api(s.addr, &token).await;
        assert_eq!(reply.status, 200, "{kid}: {}", reply.body_text());
        assert_eq!(reply.body_text(), format!("user-{kid}"));

        let bearer = format!("Bearer {token}");
        let mut ws = ws_connect(s.addr, "/ws", &[("Authorization", &bearer)])
            .await
            .expect("upgrade");
        assert_eq!(next_text(&mut ws).await, format!("hello user-{kid}"));
    }
    // Every key was known from the first fetch: no refetch.
    assert_eq!(s.provider.hits(), 1);
    // Capability keys on the same guard are unaffected.
    assert_eq!(status(s.addr, CAPABILITY_KEY).await, 200);
}

#[tokio::test]
async fn unknown_keys_and_algorithm_confusion_are_401() {
    let rsa = rsa_a();
    let ec = TestKey::new("ec-p256.pem", Algorithm::ES256);
    let s = setup(vec![rsa.jwk("rsa-a"), ec.jwk("ec")]).await;
    let c = claims(&s.clock, "mallory");

    // A kid the set lacks.
    assert_eq!(status(s.addr, &rsa.sign("nobody", &c)).await, 401);
    // Signed by a key that is not the published one under that kid.
    let other = TestKey::new("rsa-b.pem", Algorithm::RS256);
    assert_eq!(status(s.addr, &other.sign("rsa-a", &c)).await, 401);

    // HS256 with the RSA public key (its JWK members, its PEM) as the HMAC secret.
    let jwk = rsa.jwk("rsa-a");
    for secret in [
        fixture("rsa-a.pub.pem"),
        jwk["n"].as_str().expect("n").as_bytes().to_vec(),
        jwk.to_string().into_bytes(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-a".into());
        let token =
            jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&secret)).expect("sign");
        assert_eq!(status(s.addr, &token).await, 401, "HS256 confusion");
    }

    // alg: none, with and without a signature.
    let payload = b64url(c.to_string().as_bytes());
    for header in [
        r#"{"alg":"none","kid":"rsa-a"}"#,
        r#"{"alg":"None","kid":"rsa-a"}"#,
    ] {
        let unsigned = format!("{}.{payload}.", b64url(header.as_bytes()));
        assert_eq!(status(s.addr, &unsigned).await, 401, "{header}");
        let signed = format!("{}.{payload}.AAAA", b64url(header.as_bytes()));
        assert_eq!(status(s.addr, &signed).await, 401, "{header}");
    }

    // A header alg contradicting the JWK: PS256 against the RS256 JWK (alg: RS256), ES256
    // against the RSA key, RS256 against the EC key.
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some("rsa-a".into());
    assert_eq!(status(s.addr, &rsa.sign_with(header, &c)).await, 401);
    assert_eq!(status(s.addr, &ec.sign("rsa-a", &c)).await, 401);
    assert_eq!(status(s.addr, &rsa.sign("ec", &c)).await, 401);

    // Every refusal above is the same generic 401.
    let reply = get_api(s.addr, &rsa.sign("nobody", &c)).await;
    assert!(reply
        .header("www-authenticate")
        .expect("challenge")
        .contains("invalid_token"));
}

#[tokio::test]
async fn rotation_to_a_new_kid_is_accepted_on_first_sight_with_one_fetch() {
    let old = rsa_a();
    let new = TestKey::new("ec-p256.pem", Algorithm::ES256);
    let s = setup(vec![old.jwk("2026-11")]).await;
    assert_eq!(s.provider.hits(), 1);
    s.provider
        .set(|p| p.keys = vec![old.jwk("2026-11"), new.jwk("2026-12")]);

    let token = new.sign("2026-12", &claims(&s.clock, "bob"));
    let reply = get_api(s.addr, &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body_text());
    assert_eq!(s.provider.hits(), 2, "one fetch for the new kid");
    // Known now: no more fetches.
    for _ in 0..5 {
        assert_eq!(status(s.addr, &token).await, 200);
    }
    assert_eq!(s.provider.hits(), 2);
}

#[tokio::test]
async fn random_unknown_kids_cost_at_most_one_fetch_per_cooldown() {
    let key = rsa_a();
    let s = setup(vec![key.jwk("k1")]).await;
    let c = claims(&s.clock, "mallory");
    for i in 0..100 {
        let token = key.sign(&format!("random-{i}"), &c);
        assert_eq!(status(s.addr, &token).await, 401);
    }
    // The start-up fetch and at most one for the unknown kids (the clock did not move).
    assert!(s.provider.hits() <= 2, "{} fetches", s.provider.hits());
    // After the cooldown, one more is allowed.
    s.clock
        .advance(axum_keyguard::DEFAULT_JWKS_COOLDOWN.as_secs());
    for i in 0..20 {
        let token = key.sign(&format!("later-{i}"), &c);
        assert_eq!(status(s.addr, &token).await, 401);
    }
    assert!(s.provider.hits() <= 3, "{} fetches", s.provider.hits());
    assert_eq!(status(s.addr, &key.sign("k1", &c)).await, 200);
}

#[tokio::test]
async fn fifty_concurrent_first_requests_with_a_new_kid_make_one_fetch() {
    let old = rsa_a();
    let new = TestKey::new("ed25519.pem", Algorithm::EdDSA);
    let s = setup(vec![old.jwk("old")]).await;
    // The provider is slow, so every request arrives while the fetch is in flight.
    s.provider.set(|p| {
        p.keys = vec![old.jwk("old"), new.jwk("new")];
        p.delay = Duration::from_millis(300);
    });
    let token = new.sign("new", &claims(&s.clock, "carol"));
    let requests = (0..50).map(|_| {
        let token = token.clone();
        let addr = s.addr;
        tokio::spawn(async move { status(addr, &token).await })
    });
    for request in requests {
        assert_eq!(request.await.expect("task"), 200);
    }
    assert_eq!(s.provider.hits(), 2, "start-up fetch plus one");
}

#[tokio::test]
async fn a_failing_provider_keeps_the_last_good_set_until_the_staleness_limit_then_503() {
    let key = rsa_a();
    let s = setup_with(vec![key.jwk("k1")], |b| {
        b.with_refresh(Duration::from_secs(600))
            .with_max_staleness(Duration::from_secs(600))
    })
    .await;
    let token = key.sign("k1", &claims(&s.clock, "dave"));
    assert_eq!(status(s.addr, &token).await, 200);

    s.provider
        .set(|p| p.status = StatusCode::INTERNAL_SERVER_ERROR);
    assert!(s.jwks.refresh().await.is_err());
    assert!(s.jwks.health().failing);
    // Within the staleness limit: known kids still verify, from cache and afresh.
    s.clock.advance(300);
    assert_eq!(status(s.addr, &token).await, 200);
    let fresh = key.sign("k1", &claims(&s.clock, "dave"));
    assert_eq!(status(s.addr, &fresh).await, 200);
    // An unknown kid while the provider fails is an outage, not a bad token.
    s.clock
        .advance(axum_keyguard::DEFAULT_JWKS_COOLDOWN.as_secs());
    assert_eq!(
        status(s.addr, &key.sign("k2", &claims(&s.clock, "x"))).await,
        503
    );

    // Past it: 503 with Retry-After, never 401 or 500.
    s.clock.advance(301);
    assert!(s.jwks.health().stale);
    let reply = get_api(s.addr, &token).await;
    assert_eq!(reply.status, 503, "{}", reply.body_text());
    assert!(reply.header("retry-after").is_some());
    // Capability keys do not depend on the provider.
    assert_eq!(status(s.addr, CAPABILITY_KEY).await, 200);

    // The provider recovers: the next fetch makes the set fresh again.
    s.provider.set(|p| p.status = StatusCode::OK);
    s.jwks.refresh().await.expect("refresh");
    assert_eq!(status(s.addr, &fresh).await, 200);
}

#[tokio::test]
async fn a_key_removed_from_the_set_closes_its_sockets_with_4001() {
    let a = rsa_a();
    let b = TestKey::new("ec-p256.pem", Algorithm::ES256);
    let s = setup(vec![a.jwk("a"), b.jwk("b")]).await;
    let token_a = a.sign("a", &claims(&s.clock, "alice"));
    let token_b = b.sign("b", &claims(&s.clock, "bob"));
    let mut socket_a = ws_connect(
        s.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {token_a}"))],
    )
    .await
    .expect("upgrade a");
    let mut socket_b = ws_connect(
        s.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {token_b}"))],
    )
    .await
    .expect("upgrade b");
    assert_eq!(next_text(&mut socket_a).await, "hello alice");
    assert_eq!(next_text(&mut socket_b).await, "hello bob");

    s.provider.set(|p| p.keys = vec![b.jwk("b")]);
    s.jwks.refresh().await.expect("refresh");

    let (_, code, reason) = until_close(&mut socket_a).await;
    assert_eq!(code, 4001, "{reason}");
    assert!(!reason.contains(&token_a));
    // The other key's socket stays open and echoes.
    use futures_util::SinkExt as _;
    socket_b
        .send(tokio_tungstenite::tungstenite::Message::text("still here"))
        .await
        .expect("send");
    assert_eq!(next_text(&mut socket_b).await, "still here");
    // And the removed key's tokens are refused on REST.
    assert_eq!(status(s.addr, &token_a).await, 401);
    assert_eq!(status(s.addr, &token_b).await, 200);
}

#[tokio::test]
async fn a_kid_republished_with_other_key_material_revokes_the_old_tokens() {
    let a = rsa_a();
    let replacement = TestKey::new("rsa-b.pem", Algorithm::RS256);
    let s = setup(vec![a.jwk("k")]).await;
    let old = a.sign("k", &claims(&s.clock, "alice"));
    let mut socket = ws_connect(
        s.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {old}"))],
    )
    .await
    .expect("upgrade");
    assert_eq!(next_text(&mut socket).await, "hello alice");
    s.provider.set(|p| p.keys = vec![replacement.jwk("k")]);
    s.jwks.refresh().await.expect("refresh");
    let (_, code, _) = until_close(&mut socket).await;
    assert_eq!(code, 4001);
    assert_eq!(status(s.addr, &old).await, 401);
    let new = replacement.sign("k", &claims(&s.clock, "alice"));
    assert_eq!(status(s.addr, &new).await, 200);
}

#[tokio::test]
async fn jku_and_x5u_are_never_followed() {
    let key = rsa_a();
    // A second provider, publishing the attacker's key; it must see no request.
    let attacker = TestKey::new("rsa-b.pem", Algorithm::RS256);
    let rogue = Provider::start(vec![attacker.jwk("evil")]).await;
    let s = setup(vec![key.jwk("k1")]).await;
    let c = claims(&s.clock, "mallory");
    for member in ["jku", "x5u"] {
        for kid in ["k1", "evil"] {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.into());
            if member == "jku" {
                header.jku = Some(rogue.url());
            } else {
                header.x5u = Some(rogue.url());
            }
            let signer = if kid == "evil" { &attacker } else { &key };
            assert_eq!(
                status(s.addr, &signer.sign_with(header, &c)).await,
                401,
                "{member} {kid}"
            );
        }
    }
    // An embedded jwk is refused too.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("evil".into());
    header.jwk = serde_json::from_value(attacker.jwk("evil")).ok();
    assert_eq!(status(s.addr, &attacker.sign_with(header, &c)).await, 401);
    assert_eq!(rogue.hits(), 0, "the jku/x5u server saw a request");
}

#[tokio::test]
async fn unusable_published_keys_are_left_out() {
    let rsa = rsa_a();
    let weak = TestKey::new("rsa-1024.pem", Algorithm::RS256);
    let ec = TestKey::new("ec-p256.pem", Algorithm::ES256);
    let mut enc = rsa.jwk("enc");
    enc["use"] = "enc".into();
    let mut ops = ec.jwk("ops");
    ops["key_ops"] = json!(["encrypt"]);
    let mut private = ec.jwk("private");
    private["d"] = "AAAA".into();
    let oct = json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"});
    let mut wrong_alg = ec.jwk("wrong-alg");
    wrong_alg["alg"] = "RS256".into();
    // A point off the curve (its y changed in the last bit), and RSA keys with an exponent of 1
    // and an even one.
    let mut off_curve = ec.jwk("off-curve");
    let mut y = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        off_curve["y"].as_str().expect("y"),
    )
    .expect("b64");
    y[31] ^= 1;
    off_curve["y"] = b64url(&y).into();
    let mut e1 = rsa.jwk("e1");
    e1["e"] = "AQ".into();
    let mut even = rsa.jwk("even-e");
    even["e"] = "AQAA".into();
    // 2^35 + 1: odd, but above ring's limit of 2^33 − 1.
    let mut big_e = rsa.jwk("big-e");
    big_e["e"] = b64url(&[0x08, 0, 0, 0, 0x01]).into();
    let keys = vec![
        rsa.jwk("good"),
        weak.jwk("weak"),
        enc,
        ops,
        private,
        oct,
        wrong_alg,
        json!({"kty": "EC", "kid": "broken", "crv": "P-256", "x": "not base64!", "y": ""}),
        rsa.jwk("twice"),
        ec.jwk("twice"),
        off_curve,
        e1,
        even,
        big_e,
    ];
    let s = setup(keys).await;
    assert_eq!(s.jwks.kids(), [Some("good".to_owned())]);
    let c = claims(&s.clock, "x");
    assert_eq!(status(s.addr, &rsa.sign("good", &c)).await, 200);
    assert_eq!(status(s.addr, &weak.sign("weak", &c)).await, 401);
    assert_eq!(status(s.addr, &rsa.sign("enc", &c)).await, 401);
    assert_eq!(status(s.addr, &ec.sign("ops", &c)).await, 401);
    assert_eq!(status(s.addr, &ec.sign("private", &c)).await, 401);
    assert_eq!(status(s.addr, &ec.sign("wrong-alg", &c)).await, 401);
    assert_eq!(status(s.addr, &rsa.sign("twice", &c)).await, 401);
    assert_eq!(status(s.addr, &ec.sign("off-curve", &c)).await, 401);
    assert_eq!(status(s.addr, &rsa.sign("e1", &c)).await, 401);
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("oct".into());
    let token = jsonwebtoken::encode(
        &hs,
        &c,
        &EncodingKey::from_secret(b"secret-secret-secret-secret"),
    )
    .expect("sign");
    assert_eq!(status(s.addr, &token).await, 401);
}

#[tokio::test]
async fn the_same_strict_claim_checks_apply() {
    let key = rsa_a();
    let s = setup(vec![key.jwk("k1")]).await;
    let now = s.clock.now();
    let base = claims(&s.clock, "x");
    let with = |change: Value| {
        let mut c = base.clone();
        for (k, v) in change.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        key.sign("k1", &c)
    };
    assert_eq!(status(s.addr, &with(json!({}))).await, 200);
    for (what, change) in [
        ("expired", json!({"exp": now - 31})),
        ("exp as string", json!({"exp": (now + 600).to_string()})),
        ("no exp", json!({"exp": null})),
        ("not yet valid", json!({"nbf": now + 120})),
        ("other issuer", json!({"iss": "https://evil.test"})),
        ("no issuer", json!({"iss": null})),
        ("other audience", json!({"aud": "other"})),
        ("issuer array", json!({"iss": ["https://idp.test"]})),
    ] {
        assert_eq!(status(s.addr, &with(change)).await, 401, "{what}");
    }
    // An audience array that contains ours is accepted, as for HMAC tokens.
    assert_eq!(
        status(s.addr, &with(json!({"aud": ["x", "agent-server"]}))).await,
        200
    );
}

#[tokio::test]
async fn discovery_finds_the_jwks_uri_and_requires_the_exact_issuer() {
    let key = rsa_a();
    let provider = Provider::start(vec![key.jwk("k1")]).await;
    let jwks = Jwks::discover(&provider.issuer())
        .expect("issuer")
        .build()
        .await
        .expect("discovery");
    assert_eq!(jwks.kids(), [Some("k1".to_owned())]);
    assert_eq!(provider.discovery_hits.load(Ordering::SeqCst), 1);

    // The document names another issuer: refused at build.
    provider.set(|p| p.issuer = Some("http://127.0.0.1:1/other".into()));
    let err = Jwks::discover(&provider.issuer())
        .expect("issuer")
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), JwksErrorKind::Issuer);

    // Discovery ran once per build, never per request or refresh.
    let hits = provider.discovery_hits.load(Ordering::SeqCst);
    jwks.refresh().await.expect("refresh");
    assert_eq!(provider.discovery_hits.load(Ordering::SeqCst), hits);
}

#[tokio::test]
async fn oversized_or_malformed_sets_fail_the_fetch_and_keep_the_last_good_one() {
    let key = rsa_a();
    let s = setup_with(vec![key.jwk("k1")], |b| b.with_max_bytes(16 * 1024)).await;
    let token = key.sign("k1", &claims(&s.clock, "x"));
    for body in [
        "x".repeat(64 * 1024),
        "[]".to_owned(),
        r#"{"keys": 7}"#.to_owned(),
        "not json".to_owned(),
    ] {
        s.provider.set(|p| p.body = Some(body.clone()));
        let err = s.jwks.refresh().await;
        assert!(err.is_err(), "{}", &body[..body.len().min(20)]);
        assert_eq!(status(s.addr, &token).await, 200);
        assert_eq!(s.jwks.kids(), [Some("k1".to_owned())]);
    }
}

#[tokio::test]
async fn a_first_fetch_that_fails_or_an_unfetchable_url_refuses_to_build() {
    // Nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let err = Jwks::builder(&format!("http://{closed}/keys"))
        .expect("url")
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), JwksErrorKind::Transport);
    // Plain HTTP to a host that is not loopback, and https without a TLS fetcher.
    for url in [
        "http://idp.example.com/keys",
        "https://idp.example.com/keys",
    ] {
        let err = Jwks::builder(url).expect("url").build().await.unwrap_err();
        assert_eq!(err.kind(), JwksErrorKind::Url, "{url}");
    }
    // A URL with userinfo never shows it.
    let err = Jwks::builder(&format!("http://user:hunter2@{closed}/keys"))
        .expect("url")
        .build()
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"));
    // HMAC algorithms cannot be asked of a key set.
    let err = Jwks::builder("http://127.0.0.1:1/keys")
        .expect("url")
        .with_algorithms([JwtAlgorithm::Hs256])
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), JwksErrorKind::Config);
}

#[tokio::test]
async fn the_background_refresh_honours_a_short_cache_control_within_bounds() {
    let key = rsa_a();
    let s = setup_with(vec![key.jwk("k1")], |b| {
        b.with_refresh(Duration::from_secs(3600))
            .with_cooldown(Duration::from_millis(200))
    })
    .await;
    // The first fetch had no Cache-Control: the next refresh is an hour away.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.provider.hits(), 1);
    // A provider asking for max-age=0 is refreshed no more often than the cooldown: a forced
    // fetch picks the header up, then the loop follows it.
    s.provider
        .set(|p| p.cache_control = Some("max-age=0".into()));
    s.jwks.refresh().await.expect("refresh");
    let before = s.provider.hits();
    // Generous: on a loaded machine the loop may run late, never early.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after = s.provider.hits();
    assert!(after > before, "no background refresh in 3 s");
    assert!(
        after - before <= 16,
        "{} refreshes in 3 s at a 200 ms floor",
        after - before
    );
}

#[tokio::test]
async fn a_stale_set_makes_open_sockets_unavailable_and_they_close_1011_after_the_grace() {
    let key = rsa_a();
    let clock = Clock::new();
    let provider = Provider::start(vec![key.jwk("k1")]).await;
    let jwks = Jwks::builder(&provider.url())
        .expect("url")
        .with_clock(clock.reader())
        .with_refresh(Duration::from_secs(60))
        .with_max_staleness(Duration::from_secs(60))
        .build()
        .await
        .expect("jwks");
    let jwt = Jwt::builder(jwks.clone())
        .with_issuer("https://idp.test")
        .with_audience("agent-server")
        .with_clock(clock.reader())
        .build()
        .expect("jwt");
    let guard = Guard::builder()
        .with_verifier(principal_verifier(jwt))
        .with_unavailable_grace(Duration::from_millis(300))
        .build()
        .expect("guard");
    let addr = spawn(
        Router::new()
            .route("/ws", any(socket))
            .route_layer(guard.layer()),
    )
    .await;
    let token = key.sign("k1", &claims(&clock, "erin"));
    let mut ws = ws_connect(
        addr,
        "/ws",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("upgrade");
    assert_eq!(next_text(&mut ws).await, "hello erin");
    provider.set(|p| p.status = StatusCode::BAD_GATEWAY);
    clock.advance(61);
    assert!(jwks.refresh().await.is_err());
    let (_, code, _) = until_close(&mut ws).await;
    assert_eq!(code, 1011);
}

#[tokio::test]
async fn a_limited_peer_reaches_neither_the_verifier_nor_the_provider() {
    use axum_keyguard::FailureLimit;
    let key = rsa_a();
    let clock = Clock::new();
    let provider = Provider::start(vec![key.jwk("k1")]).await;
    let jwks = Jwks::builder(&provider.url())
        .expect("url")
        .with_clock(clock.reader())
        .build()
        .await
        .expect("jwks");
    let jwt = Jwt::builder(jwks)
        .with_issuer("https://idp.test")
        .with_audience("agent-server")
        .with_clock(clock.reader())
        .build()
        .expect("jwt");
    let guard = Guard::builder()
        .with_verifier(principal_verifier(jwt))
        .with_failure_limit(FailureLimit::new(2, Duration::from_secs(3600)))
        .build()
        .expect("guard");
    let addr = common::spawn_with_connect_info(
        Router::new()
            .route(
                "/api",
                get(|id: Identity<String>| async move { id.principal().clone() }),
            )
            .route_layer(guard.layer()),
    )
    .await;
    let c = claims(&clock, "mallory");
    let attacker: std::net::IpAddr = "127.0.0.3".parse().expect("ip");
    let send = |token: String, from: std::net::IpAddr| async move {
        let bearer = format!("Bearer {token}");
        common::raw_http_from(
            from,
            addr,
            &get_head(addr, "/api", &[("Authorization", bearer.as_bytes())]),
        )
        .await
    };
    // Two refused tokens with unknown kids (the first one costs the cooldown's one fetch).
    for i in 0..2 {
        assert_eq!(
            send(key.sign(&format!("x{i}"), &c), attacker).await.status,
            401
        );
    }
    let hits = provider.hits();
    // Past the budget: 429 with Retry-After before any verification, even after the cooldown
    // (so an unknown kid would otherwise fetch), and for a valid token too.
    clock.advance(axum_keyguard::DEFAULT_JWKS_COOLDOWN.as_secs() + 1);
    let reply = send(key.sign("new-kid", &c), attacker).await;
    assert_eq!(reply.status, 429);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(send(key.sign("k1", &c), attacker).await.status, 429);
    assert_eq!(
        provider.hits(),
        hits,
        "a limited request reached the provider"
    );
    // Another address is unaffected.
    let other: std::net::IpAddr = "127.0.0.4".parse().expect("ip");
    assert_eq!(send(key.sign("k1", &c), other).await.status, 200);
}

/// Serves the fixture set, except on the fetches it is told to panic on.
struct Panicking {
    calls: Arc<AtomicU64>,
    panic_on: u64,
}

impl axum_keyguard::JwksFetch for Panicking {
    fn fetch(&self, _uri: &axum::http::Uri, _max_bytes: usize) -> axum_keyguard::FetchFuture {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let panic_on = self.panic_on;
        Box::pin(async move {
            assert_ne!(call, panic_on, "the fetcher panics on purpose");
            Ok(axum::http::Response::new(bytes::Bytes::from(fixture(
                "public.jwks.json",
            ))))
        })
    }
}

#[tokio::test]
async fn a_fetcher_that_panics_fails_that_fetch_and_the_next_one_runs() {
    let calls = Arc::new(AtomicU64::new(0));
    let jwks = Jwks::builder("http://127.0.0.1:1/keys")
        .expect("url")
        .with_fetch(Panicking {
            calls: Arc::clone(&calls),
            panic_on: 2,
        })
        .build()
        .await
        .expect("the first fetch serves the set");
    assert_eq!(jwks.kids().len(), 3);
    // The second fetch panics in its task: the waiter learns it failed instead of waiting
    // forever (the bound is generous: the fetch itself returns at once).
    let second = tokio::time::timeout(Duration::from_secs(30), jwks.refresh())
        .await
        .expect("a panicked fetch must not leave its waiters hanging");
    assert!(second.is_err());
    assert!(jwks.health().failing);
    // The fetch is not stuck "in flight": the next one runs and succeeds.
    tokio::time::timeout(Duration::from_secs(30), jwks.refresh())
        .await
        .expect("the next fetch runs")
        .expect("and serves the set");
    assert!(!jwks.health().failing);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(jwks.kids().len(), 3);
}

#[test]
fn a_fetch_task_dropped_before_it_ran_leaves_nothing_in_flight() {
    let calls = Arc::new(AtomicU64::new(0));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let jwks = first
        .block_on(
            Jwks::builder("http://127.0.0.1:1/keys")
                .expect("url")
                .with_fetch(Panicking {
                    calls: Arc::clone(&calls),
                    panic_on: u64::MAX,
                })
                .build(),
        )
        .expect("built");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Inside the first runtime, start a refresh (it spawns the fetch task) and give up on it at
    // once; then the runtime goes away with the task never run.
    first.block_on(async {
        let refresh = jwks.refresh();
        futures_util::pin_mut!(refresh);
        let waker = std::task::Waker::noop();
        let _ =
            std::future::Future::poll(refresh.as_mut(), &mut std::task::Context::from_waker(waker));
    });
    drop(first);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the task never ran");
    // A later runtime can fetch again (the bound is generous: the fetch answers at once).
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    second.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), jwks.refresh())
            .await
            .expect("not stuck in flight")
            .expect("fetched");
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
