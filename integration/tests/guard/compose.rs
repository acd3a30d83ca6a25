//! The guard's layer composed with tower-http's layers and `from_fn` middleware, in both orders
//! where order matters, over real loopback sockets.

use super::common;

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
use common::{get_head, raw_http, spawn};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const KEY: &str = "compose-S3CR3T-key-0001";

fn guard() -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .build()
        .expect("guard")
}

/// A body long enough for compression to be worth it.
async fn report(Authenticated(key): Authenticated<KeyId>) -> String {
    format!("{key} ").repeat(200)
}

async fn get_with(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> common::Reply {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    raw_http(addr, &get_head(addr, "/api", &headers)).await
}

#[tokio::test]
async fn the_layer_wraps_compression_in_a_service_builder_in_both_orders() {
    // The guard outside compression: the inner body is tower-http's compressed body.
    let outside = Router::new().route("/api", get(report)).route_layer(
        ServiceBuilder::new()
            .layer(guard().layer())
            .layer(CompressionLayer::new()),
    );
    // The guard inside compression: rejections are compressed like anything else.
    let inside = Router::new().route("/api", get(report)).route_layer(
        ServiceBuilder::new()
            .layer(CompressionLayer::new())
            .layer(guard().layer()),
    );
    for app in [outside, inside] {
        let addr = spawn(app).await;
        let ok = get_with(
            addr,
            &[("X-Session-API-Key", KEY), ("Accept-Encoding", "gzip")],
        )
        .await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("content-encoding").as_deref(), Some("gzip"));
        assert!(
            ok.body.len() < 200 * 13,
            "compressed: {} bytes",
            ok.body.len()
        );
        let refused = get_with(addr, &[("X-Session-API-Key", "wrong-key-0000000000")]).await;
        assert_eq!(refused.status, 401);
        assert_eq!(refused.body_text(), "unauthorized");
        let missing = get_with(addr, &[]).await;
        assert_eq!(missing.status, 401);
        assert_eq!(
            missing.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"axum-keyguard\"")
        );
    }
}

#[tokio::test]
async fn the_layer_composes_with_trace_and_timeout() {
    let app = Router::new().route("/api", get(report)).route_layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(TimeoutLayer::with_status_code(
                http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(10),
            ))
            .layer(guard().layer()),
    );
    let addr = spawn(app).await;
    assert_eq!(
        get_with(addr, &[("X-Session-API-Key", KEY)]).await.status,
        200
    );
    assert_eq!(get_with(addr, &[]).await.status, 401);
    // And the guard outermost.
    let app = Router::new().route("/api", get(report)).route_layer(
        ServiceBuilder::new()
            .layer(guard().layer())
            .layer(TraceLayer::new_for_http())
            .layer(TimeoutLayer::with_status_code(
                http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(10),
            )),
    );
    let addr = spawn(app).await;
    assert_eq!(
        get_with(addr, &[("X-Session-API-Key", KEY)]).await.status,
        200
    );
    assert_eq!(get_with(addr, &[]).await.status, 401);
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::exact(http::HeaderValue::from_static(
            "https://app.example.com",
        )))
        .allow_headers([http::HeaderName::from_static("x-session-api-key")])
        .allow_methods([http::Method::GET])
}

async fn preflight(addr: std::net::SocketAddr) -> common::Reply {
    let mut head = format!("OPTIONS /api HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    head.push_str("Origin: https://app.example.com\r\n");
    head.push_str("Access-Control-Request-Method: GET\r\n");
    head.push_str("Access-Control-Request-Headers: x-session-api-key\r\n");
    raw_http(addr, head.as_bytes()).await
}

#[tokio::test]
async fn cors_outside_the_guard_answers_preflights_without_a_credential() {
    // CORS outside: the preflight never reaches the guard; the real request still needs the key.
    let app = Router::new()
        .route("/api", get(report))
        .route_layer(guard().layer())
        .layer(cors());
    let addr = spawn(app).await;
    let reply = preflight(addr).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let with_origin = |key: Option<&'static str>| {
        let mut headers = vec![("Origin", "https://app.example.com")];
        headers.extend(key.map(|k| ("X-Session-API-Key", k)));
        headers
    };
    let ok = get_with(addr, &with_origin(Some(KEY))).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let refused = get_with(addr, &with_origin(None)).await;
    assert_eq!(refused.status, 401);
    // The browser can read the refusal: CORS headers are on it too.
    assert_eq!(
        refused.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );

    // CORS inside the guard: the guard sees the preflight first, and it carries no credential.
    let app = Router::new()
        .route("/api", get(report))
        .route_layer(ServiceBuilder::new().layer(guard().layer()).layer(cors()));
    let addr = spawn(app).await;
    assert_eq!(preflight(addr).await.status, 401);
}

async fn tag(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("x-tagged", http::HeaderValue::from_static("yes"));
    response
}

/// Counts the requests that reach it.
async fn count(
    axum::extract::State(hits): axum::extract::State<
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    >,
    request: Request,
    next: Next,
) -> Response {
    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    next.run(request).await
}

#[tokio::test]
async fn from_fn_middleware_runs_around_or_inside_the_guard() {
    // `from_fn` outside the guard sees every request and every refusal.
    let app = Router::new()
        .route("/api", get(report))
        .route_layer(guard().layer())
        .layer(middleware::from_fn(tag));
    let addr = spawn(app).await;
    let refused = get_with(addr, &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-tagged").as_deref(), Some("yes"));
    // Inside the guard, it runs only for authenticated requests.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = Router::new().route("/api", get(report)).route_layer(
        ServiceBuilder::new()
            .layer(guard().layer())
            .layer(middleware::from_fn_with_state(hits.clone(), count)),
    );
    let addr = spawn(app).await;
    assert_eq!(get_with(addr, &[]).await.status, 401);
    assert_eq!(
        get_with(addr, &[("X-Session-API-Key", "wrong-key-0000000000")])
            .await
            .status,
        401
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never reached on refusal"
    );
    assert_eq!(
        get_with(addr, &[("X-Session-API-Key", KEY)]).await.status,
        200
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_layer_wraps_a_bare_tower_service_with_its_own_body() {
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};
    // Not axum's body: the layer answers with the inner service's body type, or the rejection's.
    let inner = tower::service_fn(|request: http::Request<()>| async move {
        let _ = request;
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
            bytes::Bytes::from_static(b"inner"),
        )))
    });
    let service = guard().layer().layer(inner);
    let request = |key: Option<&str>| {
        let mut builder = http::Request::get("/api").header("host", "localhost");
        if let Some(key) = key {
            builder = builder.header("x-session-api-key", key);
        }
        builder.body(()).expect("request")
    };
    // Behind the layer a bare service has no extractor, but the layer still decides.
    let ok = service
        .clone()
        .oneshot(request(Some(KEY)))
        .await
        .expect("infallible");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        &ok.into_body().collect().await.expect("body").to_bytes()[..],
        b"inner"
    );
    let refused = service.oneshot(request(None)).await.expect("infallible");
    assert_eq!(refused.status(), 401);
    assert_eq!(
        &refused
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()[..],
        b"unauthorized"
    );
}
