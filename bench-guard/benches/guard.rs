//! Per-request cost of the guard against a bare router and the peers a user would pick instead,
//! side by side in one run.
//!
//! `cargo bench --manifest-path bench-guard/Cargo.toml`. Every router case sends one request through `Router::oneshot`
//! in-process; compare medians as ratios to the bare router (see BENCHMARKS.md).
#![allow(missing_docs)]

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request as AxumRequest};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_keyguard::{
    Authenticated, Claims, FailureLimit, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, KeyId, Keys,
    Require, Source, WithGuard,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use axum_keyguard_bench_guard::{
    bare, jsonwebtoken_from_fn, sha256_from_fn, Passthrough, EXPECTED, JWT_SECRET, KEY, NAMES,
    WRONG,
};

/// One optional request header: name and value.
type Header = Option<(&'static str, String)>;

fn request(header: Header, uri: &str) -> Request<Body> {
    let mut builder = Request::get(uri).header("host", "localhost");
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).expect("request")
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    session_api_key: Option<String>,
}

/// The same, reading `?session_api_key=` through `Query<T>`.
async fn sha256_query_from_fn(
    Query(query): Query<KeyQuery>,
    request: AxumRequest,
    next: Next,
) -> Response {
    match query.session_api_key {
        Some(k) if bool::from(Sha256::digest(k.as_bytes()).as_slice().ct_eq(&*EXPECTED)) => {
            next.run(request).await
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The status a case must get: its name says when it is refused.
fn expected_status(name: &str) -> StatusCode {
    let refused = ["invalid", "missing", "unknown", "bad signature"];
    if name.contains("forbidden") {
        StatusCode::FORBIDDEN
    } else if refused.iter().any(|word| name.contains(word)) {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    }
}

fn run(c: &mut Criterion, group_name: &str, cases: Vec<(&str, Router, Header, &str)>) {
    // Timers on: store lookups run under a timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group(group_name);
    for (name, app, header, uri) in cases {
        // Measure the path the name promises, not an error path that happens to be fast.
        let status = runtime
            .block_on(app.clone().oneshot(request(header.clone(), uri)))
            .expect("infallible")
            .status();
        assert_eq!(status, expected_status(name), "{group_name}/{name}");
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let app = app.clone();
                let request = request(header.clone(), uri);
                async move { app.oneshot(request).await.expect("infallible") }
            });
        });
    }
    group.finish();
}

fn bench_keys(c: &mut Criterion) {
    let keys = || Keys::new([KEY]).expect("keys");
    let guard = Guard::builder()
        .with_verifier(keys())
        .build()
        .expect("guard");
    let guard_rest_query = Guard::builder()
        .with_verifier(keys())
        .with_sources([
            Source::query("session_api_key").on_rest(true),
            Source::bearer(),
        ])
        .build()
        .expect("guard");
    let handler = get(|Authenticated(_key): Authenticated<KeyId>| async { "ok" });
    let guarded = Router::new()
        .route("/api", handler.clone())
        .route_layer(guard.layer());
    // The other surface: the extractor alone, with the guard in the router state (no layer).
    let extractor_alone: Router = Router::new()
        .route(
            "/api",
            get(|WithGuard(Authenticated(_key)): WithGuard<Authenticated<KeyId>>| async { "ok" }),
        )
        .with_state(guard.clone());
    let guarded_query = Router::new()
        .route("/api", handler)
        .route_layer(guard_rest_query.layer());
    #[allow(deprecated)] // the peer users still reach for: compares with `==`
    let tower_http_bearer =
        bare().route_layer(tower_http::validate_request::ValidateRequestHeaderLayer::bearer(KEY));
    let empty_from_fn = bare().route_layer(middleware::from_fn(
        |request: AxumRequest, next: Next| async move { next.run(request).await },
    ));
    let from_fn_sha256 = bare().route_layer(middleware::from_fn(sha256_from_fn));
    let from_fn_query = bare().route_layer(middleware::from_fn(sha256_query_from_fn));

    let (parts, ()) = Request::get("/api")
        .header("host", "localhost")
        .header("x-session-api-key", KEY)
        .body(())
        .expect("request")
        .into_parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut resolve_group = c.benchmark_group("key");
    resolve_group.bench_function("Guard::resolve alone, header, valid", |b| {
        b.to_async(&runtime)
            .iter(|| async { guard.resolve(&parts).await.expect("valid") });
    });
    resolve_group.finish();

    let header = |value: &str| Some(("x-session-api-key", value.to_owned()));
    let bearer = |value: &str| Some(("authorization", format!("Bearer {value}")));
    let query = format!("/api?session_api_key={KEY}");
    let query = Box::leak(query.into_boxed_str());
    run(
        c,
        "key",
        vec![
            ("bare router", bare(), None, "/api"),
            ("bare router, same header", bare(), header(KEY), "/api"),
            ("bare router, bearer header", bare(), bearer(KEY), "/api"),
            ("bare router, query", bare(), None, query),
            (
                "floor: pass-through layer",
                bare().route_layer(tower::layer::layer_fn(Passthrough)),
                header(KEY),
                "/api",
            ),
            ("peer: empty from_fn", empty_from_fn, header(KEY), "/api"),
            (
                "peer: tower-http bearer, valid",
                tower_http_bearer,
                bearer(KEY),
                "/api",
            ),
            (
                "peer: from_fn sha256+subtle, valid",
                from_fn_sha256.clone(),
                header(KEY),
                "/api",
            ),
            (
                "peer: from_fn sha256+subtle, invalid",
                from_fn_sha256,
                header(WRONG),
                "/api",
            ),
            (
                "peer: from_fn Query<T> sha256+subtle, valid",
                from_fn_query,
                None,
                query,
            ),
            ("guard, header, valid", guarded.clone(), header(KEY), "/api"),
            (
                "guard, header, valid, handler without extractor",
                bare().route_layer(guard.layer()),
                header(KEY),
                "/api",
            ),
            (
                "guard, header, invalid",
                guarded.clone(),
                header(WRONG),
                "/api",
            ),
            ("guard, bearer, valid", guarded.clone(), bearer(KEY), "/api"),
            (
                "extractor alone, header, valid",
                extractor_alone.clone(),
                header(KEY),
                "/api",
            ),
            (
                "extractor alone, header, invalid",
                extractor_alone,
                header(WRONG),
                "/api",
            ),
            ("guard, missing", guarded, None, "/api"),
            ("guard, query on REST, valid", guarded_query, None, query),
        ],
    );
}

fn bench_jwt(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, JWT_SECRET).expect("key")])
        .expect("keyring");
    let jwt = Jwt::builder(keyring)
        .with_issuer("bench")
        .with_audience("svc")
        .build()
        .expect("jwt");
    let mut claims = Claims::default();
    claims.sub = Some("user-123".to_owned());
    let token = jwt.mint(&claims, Duration::from_secs(3600)).expect("mint");
    let bearer = format!("Bearer {token}");
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });

    // jsonwebtoken's own decode with the same checks, for the raw figure (the router peer,
    // `jsonwebtoken_from_fn`, builds its own once).
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["bench"]);
    validation.set_audience(&["svc"]);
    validation.leeway = 30;

    // First sight of a token: the cache off, so every request verifies in full.
    let uncached = Jwt::builder(jwt.keyring().expect("keyring").clone())
        .with_issuer("bench")
        .with_audience("svc")
        .with_token_cache(0)
        .build()
        .expect("jwt");
    let route = |guard: &Guard<Claims>| -> Router {
        Router::new()
            .route(
                "/api",
                get(|Authenticated(_claims): Authenticated<Claims>| async { "ok" }),
            )
            .route_layer(guard.layer())
    };
    let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
    let guarded = route(&guard);
    let first_sight = route(
        &Guard::builder()
            .with_verifier(uncached)
            .build()
            .expect("guard"),
    );
    let from_fn_decode = jsonwebtoken_from_fn();
    let (parts, ()) = Request::get("/api")
        .header("host", "localhost")
        .header("authorization", bearer.clone())
        .body(())
        .expect("request")
        .into_parts();

    let mut group = c.benchmark_group("jwt");
    group.bench_function("raw jsonwebtoken::decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Claims>(&token, &key, &validation).expect("valid");
        });
    });
    group.bench_function("Guard::resolve, valid, repeat (cached)", |b| {
        b.to_async(&runtime)
            .iter(|| async { guard.resolve(&parts).await.expect("valid") });
    });
    group.finish();
    let auth = |value: &str| Some(("authorization", format!("Bearer {value}")));
    run(
        c,
        "jwt",
        vec![
            ("bare router, same header", bare(), auth(&token), "/api"),
            (
                "peer: from_fn jsonwebtoken::decode, valid",
                from_fn_decode,
                auth(&token),
                "/api",
            ),
            (
                "guard, bearer, valid, first sight",
                first_sight,
                auth(&token),
                "/api",
            ),
            (
                "guard, bearer, valid, repeat (cached)",
                guarded.clone(),
                auth(&token),
                "/api",
            ),
            (
                "guard, bearer, bad signature",
                guarded,
                auth(&forged),
                "/api",
            ),
        ],
    );
}

/// KeyRecord keys in an in-memory store of 1 and of 1,000,000 keys: the cost should not depend on
/// the size.
fn bench_store(c: &mut Criterion) {
    let store_with = axum_keyguard_bench_guard::store_router;
    let header = |value: &str| Some(("x-session-api-key", value.to_owned()));
    let million = store_with(1_000_000);
    run(
        c,
        "store",
        vec![
            (
                "bare router, same header",
                bare(),
                header("session-key-0000000"),
                "/api",
            ),
            (
                "guard, 1 key, valid",
                store_with(1),
                header("session-key-0000000"),
                "/api",
            ),
            (
                "guard, 1,000,000 keys, valid",
                million.clone(),
                header("session-key-0500000"),
                "/api",
            ),
            (
                "guard, 1,000,000 keys, unknown",
                million,
                header("session-key-9999999"),
                "/api",
            ),
        ],
    );
}

/// The cost of a requirement on the valid path: the same cached JWT (with a `scope` claim) on the
/// same route, with no requirement, with `guard.layer().require(..)`, with a `RequireLayer`, and
/// with a scope bound to a path parameter.
fn bench_authz(c: &mut Criterion) {
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, JWT_SECRET).expect("key")])
        .expect("keyring");
    let jwt = Jwt::builder(keyring).build().expect("jwt");
    let mut claims = Claims::default();
    claims.sub = Some("user-123".to_owned());
    claims.scope = Some("profile tools:read sandbox:7 email".to_owned());
    let token = jwt.mint(&claims, Duration::from_secs(3600)).expect("mint");
    let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
    let handler = || get(|Authenticated(_claims): Authenticated<Claims>| async { "ok" });
    let scope = Require::<Claims>::scope("tools:read").expect("scope");
    let missing = Require::<Claims>::scope("tools:write").expect("scope");
    let bound = Require::<Claims>::scope("sandbox:{id}").expect("scope");
    let plain = Router::new()
        .route("/api/sandboxes/{id}", handler())
        .route_layer(guard.layer());
    let required = Router::new()
        .route("/api/sandboxes/{id}", handler())
        .route_layer(guard.layer().require(scope.clone()));
    let layered = Router::new()
        .route("/api/sandboxes/{id}", handler())
        .route_layer(scope.layer())
        .route_layer(guard.layer());
    let path_bound = Router::new()
        .route("/api/sandboxes/{id}", handler())
        .route_layer(guard.layer().require(bound));
    let refused = Router::new()
        .route("/api/sandboxes/{id}", handler())
        .route_layer(guard.layer().require(missing));
    let auth = Some(("authorization", format!("Bearer {token}")));
    let uri = "/api/sandboxes/7";
    run(
        c,
        "authz",
        vec![
            ("guard, jwt, no requirement", plain, auth.clone(), uri),
            (
                "guard.layer().require(scope), valid",
                required,
                auth.clone(),
                uri,
            ),
            (
                "RequireLayer(scope) behind guard, valid",
                layered,
                auth.clone(),
                uri,
            ),
            (
                "require(sandbox:{id}), valid",
                path_bound,
                auth.clone(),
                uri,
            ),
            ("require(scope), forbidden", refused, auth, uri),
        ],
    );
}

/// The failure limiter's cost on the valid path: the same guard with and without it, every
/// request carrying its peer address (`ConnectInfo`) as a server with connect info gives it.
fn bench_limiter(c: &mut Criterion) {
    let peer: std::net::SocketAddr = "192.0.2.1:50000".parse().expect("peer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let build = |limit: Option<FailureLimit>| {
        let builder = Guard::builder().with_verifier(Keys::new([KEY]).expect("keys"));
        match limit {
            Some(limit) => builder.with_failure_limit(limit),
            None => builder,
        }
        .build()
        .expect("guard")
    };
    let limit = || FailureLimit::new(1_000_000, Duration::from_secs(3600));
    let plain = build(None);
    let limited = build(Some(limit()));
    // A busy table: 50,000 other peers with failures, and this peer with a few of its own (far
    // from its limit), so the lookup finds an entry and reads the clock.
    let busy = build(Some(limit()));
    let with = |key: &str, addr: std::net::SocketAddr| {
        let (mut parts, ()) = Request::get("/api")
            .header("host", "localhost")
            .header("x-session-api-key", key)
            .body(())
            .expect("request")
            .into_parts();
        parts.extensions.insert(axum::extract::ConnectInfo(addr));
        parts
    };
    runtime.block_on(async {
        for i in 0..50_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            let addr = std::net::SocketAddr::from(([10, b, c, d], 1));
            assert!(busy.resolve(&with(WRONG, addr)).await.is_err());
        }
        for _ in 0..3 {
            assert!(busy.resolve(&with(WRONG, peer)).await.is_err());
        }
    });
    let parts = with(KEY, peer);
    let mut group = c.benchmark_group("limiter");
    for (name, guard) in [
        ("Guard::resolve alone, valid, no limiter", &plain),
        ("Guard::resolve alone, valid, limiter, clean peer", &limited),
        (
            "Guard::resolve alone, valid, limiter, peer with failures among 50,000",
            &busy,
        ),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async { guard.resolve(&parts).await.expect("valid") });
        });
    }
    let handler = get(|Authenticated(_key): Authenticated<KeyId>| async { "ok" });
    let router = |guard: &Guard<KeyId>| {
        Router::new()
            .route("/api", handler.clone())
            .route_layer(guard.layer())
    };
    let request = || {
        let mut request = request(Some(("x-session-api-key", KEY.to_owned())), "/api");
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    };
    for (name, app) in [
        ("bare router, same header", bare()),
        ("guard, header, valid, no limiter", router(&plain)),
        (
            "guard, header, valid, limiter, clean peer",
            router(&limited),
        ),
        (
            "guard, header, valid, limiter, peer with failures among 50,000",
            router(&busy),
        ),
    ] {
        let status = runtime
            .block_on(app.clone().oneshot(request()))
            .expect("infallible")
            .status();
        assert_eq!(status, StatusCode::OK, "limiter/{name}");
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let app = app.clone();
                let request = request();
                async move { app.oneshot(request).await.expect("infallible") }
            });
        });
    }
    group.finish();
}

/// Key-set JWTs (RS256, ES256, EdDSA) from a `Jwks` (served by an in-process fetcher: no
/// network in the measurement), first sight (cache off) and repeat (cached), beside raw
/// jsonwebtoken with its `DecodingKey` and `Validation` built once.
fn bench_jwks(c: &mut Criterion) {
    use axum_keyguard::{FetchFuture, Jwks, JwksFetch};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};

    struct Fixed(String);
    impl JwksFetch for Fixed {
        fn fetch(&self, _uri: &http::Uri, _max_bytes: usize) -> FetchFuture {
            let body = bytes::Bytes::from(self.0.clone());
            Box::pin(async move { Ok(http::Response::new(body)) })
        }
    }
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/../integration/tests/fixtures/jwks/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({"sub": "user-123", "iss": "bench", "aud": "svc",
        "iat": now, "exp": now + 3600});
    for (name, alg, private, public) in [
        ("RS256", Algorithm::RS256, "rsa-a.pem", "rsa-a.pub.pem"),
        ("ES256", Algorithm::ES256, "ec-p256.pem", "ec-p256.pub.pem"),
        ("EdDSA", Algorithm::EdDSA, "ed25519.pem", "ed25519.pub.pem"),
    ] {
        let (encoding, decoding) = match alg {
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(&fixture(private)),
                DecodingKey::from_rsa_pem(&fixture(public)),
            ),
            Algorithm::ES256 => (
                EncodingKey::from_ec_pem(&fixture(private)),
                DecodingKey::from_ec_pem(&fixture(public)),
            ),
            _ => (
                EncodingKey::from_ed_pem(&fixture(private)),
                DecodingKey::from_ed_pem(&fixture(public)),
            ),
        };
        let (encoding, decoding) = (encoding.expect("key"), decoding.expect("key"));
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg).expect("jwk"),
        )
        .expect("json");
        jwk["kid"] = "k1".into();
        let set = serde_json::json!({ "keys": [jwk] }).to_string();
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("sign");
        let mut validation = Validation::new(alg);
        validation.set_issuer(&["bench"]);
        validation.set_audience(&["svc"]);
        validation.leeway = 30;

        let jwks = runtime
            .block_on(
                Jwks::builder("http://127.0.0.1/keys")
                    .expect("url")
                    .with_fetch(Fixed(set))
                    .build(),
            )
            .expect("jwks");
        let verifier = |cache: usize| {
            Jwt::builder(jwks.clone())
                .with_issuer("bench")
                .with_audience("svc")
                .with_token_cache(cache)
                .build()
                .expect("jwt")
        };
        let route = |jwt: Jwt<Claims>| -> Router {
            let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
            Router::new()
                .route(
                    "/api",
                    get(|Authenticated(_claims): Authenticated<Claims>| async { "ok" }),
                )
                .route_layer(guard.layer())
        };
        let group_name = format!("jwks {name}");
        let mut group = c.benchmark_group(&group_name);
        group.bench_function(
            "raw jsonwebtoken::decode (key and Validation built once)",
            |b| {
                b.iter(|| {
                    jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).expect("valid");
                });
            },
        );
        group.finish();
        let auth = Some(("authorization", format!("Bearer {token}")));
        run(
            c,
            &group_name,
            vec![
                ("bare router, same header", bare(), auth.clone(), "/api"),
                (
                    "guard, bearer, valid, first sight",
                    route(verifier(0)),
                    auth.clone(),
                    "/api",
                ),
                (
                    "guard, bearer, valid, repeat (cached)",
                    route(verifier(10_000)),
                    auth,
                    "/api",
                ),
            ],
        );
    }
}

/// The hot-path table (issue 15): the same cases `counts.sh` counts in instructions, in one
/// group, so the wall-clock ratios and the instruction counts describe the same requests.
fn bench_floor(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("floor");
    for index in 0..NAMES.len() {
        let case = axum_keyguard_bench_guard::case(index);
        // Measure the path the name promises: its status is checked first.
        runtime.block_on(case.run());
        group.bench_function(case.name, |b| {
            b.to_async(&runtime).iter(|| {
                let app = case.router.clone();
                let request = case.request();
                async move { app.oneshot(request).await.expect("infallible") }
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_floor,
    bench_keys,
    bench_jwt,
    bench_jwks,
    bench_store,
    bench_limiter,
    bench_authz
);
criterion_main!(benches);
