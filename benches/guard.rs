//! Per-request cost of the guard layer against a bare router, in one run.
//!
//! `cargo bench --bench guard`. Every case sends one request through `Router::oneshot` in-process;
//! compare the medians as ratios to `bare router` (see BENCHMARKS.md).

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
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

criterion_group!(benches, bench);
criterion_main!(benches);
