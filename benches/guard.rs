//! Per-request cost of the guard against a bare router and against the raw primitives, in one run.
//!
//! `cargo bench --bench guard`. Router cases send one request through `Router::oneshot`
//! in-process; compare medians as ratios to the bare router handling the same request.

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use std::time::Duration;

use axum_keyguard::{
    Authenticated, Claims, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, KeyId, Keys,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use tower::ServiceExt;

const KEY: &str = "bench-key-0123456789abcdefghijklmnopqrstuv"; // 43 bytes, like a base64url 32-byte key

fn guard() -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .build()
        .expect("guard")
}

/// One optional request header: name and value.
type Header = Option<(&'static str, String)>;

fn request(header: Header, uri: &str) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).expect("request")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let bare: Router = Router::new().route("/api", get(|| async { "ok" }));
    let guarded: Router = Router::new()
        .route(
            "/api",
            get(|Authenticated(_key): Authenticated<KeyId>| async { "ok" }),
        )
        .route_layer(guard().layer());

    let mut group = c.benchmark_group("layer");
    let cases: [(&str, &Router, Header, &str); 7] = [
        ("bare router", &bare, None, "/api"),
        // The same request as the valid case, so only the guard's own work differs.
        (
            "bare router, same header",
            &bare,
            Some(("x-session-api-key", KEY.to_owned())),
            "/api",
        ),
        (
            "guard, header, valid",
            &guarded,
            Some(("x-session-api-key", KEY.to_owned())),
            "/api",
        ),
        (
            "guard, bearer, valid",
            &guarded,
            Some(("authorization", format!("Bearer {KEY}"))),
            "/api",
        ),
        (
            "guard, header, invalid",
            &guarded,
            Some((
                "x-session-api-key",
                "wrong-key-0123456789abcdefghijklmnopqrstu".to_owned(),
            )),
            "/api",
        ),
        ("guard, missing", &guarded, None, "/api"),
        (
            "guard, query on REST ignored",
            &guarded,
            None,
            "/api?session_api_key=x",
        ),
    ];
    for (name, app, header, uri) in cases {
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

const JWT_SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";

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

    // The peer: jsonwebtoken's own decode with the same checks, `Validation` built once.
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["bench"]);
    validation.set_audience(&["svc"]);
    validation.leeway = 30;

    let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
    let bare: Router = Router::new().route("/api", get(|| async { "ok" }));
    let guarded: Router = Router::new()
        .route(
            "/api",
            get(|Authenticated(_claims): Authenticated<Claims>| async { "ok" }),
        )
        .route_layer(guard.layer());
    let (parts, ()) = Request::get("/api")
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
    group.bench_function("Guard::resolve, valid", |b| {
        b.to_async(&runtime)
            .iter(|| async { guard.resolve(&parts).await.expect("valid") });
    });
    let cases: [(&str, &Router, Header); 3] = [
        (
            "bare router, same header",
            &bare,
            Some(("authorization", bearer.clone())),
        ),
        (
            "guard, bearer, valid",
            &guarded,
            Some(("authorization", bearer.clone())),
        ),
        (
            "guard, bearer, bad signature",
            &guarded,
            Some(("authorization", format!("Bearer {forged}"))),
        ),
    ];
    for (name, app, header) in cases {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let app = app.clone();
                let request = request(header.clone(), "/api");
                async move { app.oneshot(request).await.expect("infallible") }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_jwt);
criterion_main!(benches);
