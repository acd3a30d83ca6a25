//! WebSocket behaviour over real loopback sockets with a real client: authentication before the
//! upgrade, origin policies, odd handshakes.

use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::{Extension, Router};
use axum_keyguard::{AuthRejectionKind, Guard, Identity, KeyId, Keys, OriginPolicy};
use common::{get_head, next_text, raw_http, spawn, ws_connect, UPGRADE_HEADERS};
use futures_util::SinkExt;
use tower::ServiceExt;

const KEY: &str = "ws-test-key-0123456789";

#[derive(Clone, Default)]
struct Counters {
    handler: Arc<AtomicUsize>,
    upgraded: Arc<AtomicUsize>,
}

async fn events(
    Extension(counters): Extension<Counters>,
    verified: Identity<KeyId>,
    ws: WebSocketUpgrade,
) -> Response {
    counters.handler.fetch_add(1, Ordering::SeqCst);
    let hello = format!(
        r#"{{"type":"hello","subject":"{}","source":"{}"}}"#,
        verified.principal(),
        verified.source()
    );
    ws.on_upgrade(move |mut socket| async move {
        counters.upgraded.fetch_add(1, Ordering::SeqCst);
        if socket.send(Message::text(hello)).await.is_err() {
            return;
        }
        while let Some(Ok(Message::Text(text))) = socket.recv().await {
            if socket.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
    })
}

fn app(guard: Guard<KeyId>, counters: &Counters) -> Router {
    Router::new()
        .route("/ws", any(events))
        .route_layer(guard.layer())
        .layer(Extension(counters.clone()))
}

fn keys() -> Keys {
    Keys::new([KEY]).expect("keys")
}

fn default_guard() -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(keys())
        .build()
        .expect("guard")
}

fn subject() -> String {
    KeyId::of(&axum_keyguard::CredentialDigest::of(KEY.as_bytes())).to_string()
}

#[tokio::test]
async fn accepted_socket_gets_hello_then_echo_for_each_source() {
    let counters = Counters::default();
    let addr = spawn(app(default_guard(), &counters)).await;
    let bearer = format!("Bearer {KEY}");
    let query = format!("/ws?session_api_key={KEY}");
    let attempts = [
        ("query", query.as_str(), vec![]),
        ("header", "/ws", vec![("X-Session-API-Key", KEY)]),
        ("bearer", "/ws", vec![("Authorization", bearer.as_str())]),
    ];
    for (source, target, headers) in attempts {
        let mut socket = ws_connect(addr, target, &headers).await.expect("101");
        let hello = common::next_json(&mut socket).await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["subject"], subject());
        assert_eq!(hello["source"], source);
        for text in ["ping", "second frame", "{\"type\":\"auth\"}"] {
            socket.send(text.into()).await.expect("send");
            assert_eq!(next_text(&mut socket).await, text);
        }
        socket.close(None).await.expect("close");
    }
}

#[tokio::test]
async fn rejected_handshakes_never_run_the_handler_or_on_upgrade() {
    let counters = Counters::default();
    let addr = spawn(app(default_guard(), &counters)).await;
    let rejected = [
        ("/ws", vec![], 401),
        ("/ws?session_api_key=nope", vec![], 401),
        ("/ws", vec![("Authorization", "Bearer")], 400),
        (
            "/ws",
            vec![("X-Session-API-Key", KEY), ("X-Session-API-Key", KEY)],
            400,
        ),
        ("/ws", vec![("Origin", "http://evil.example")], 403),
    ];
    for (target, headers, status) in rejected {
        let reply = ws_connect(addr, target, &headers)
            .await
            .expect_err("refused");
        assert_eq!(reply.status, status, "{target} {headers:?}");
    }
    assert_eq!(counters.handler.load(Ordering::SeqCst), 0);
    assert_eq!(counters.upgraded.load(Ordering::SeqCst), 0);

    let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)])
        .await
        .expect("101");
    next_text(&mut socket).await;
    assert_eq!(counters.handler.load(Ordering::SeqCst), 1);
    assert_eq!(counters.upgraded.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn same_origin_policy_compares_origin_with_host() {
    let counters = Counters::default();
    let addr = spawn(app(default_guard(), &counters)).await;
    let own = format!("http://{addr}");
    let own_upper = format!("HTTP://{addr}");
    let other_port = format!("http://127.0.0.1:{}", addr.port().wrapping_add(1));
    let key = ("X-Session-API-Key", KEY);
    assert!(
        ws_connect(addr, "/ws", &[key]).await.is_ok(),
        "no Origin: CLI client"
    );
    assert!(ws_connect(addr, "/ws", &[key, ("Origin", &own)])
        .await
        .is_ok());
    assert!(ws_connect(addr, "/ws", &[key, ("Origin", &own_upper)])
        .await
        .is_ok());
    for origin in [
        "http://evil.example",
        "null",
        other_port.as_str(),
        &format!("http://localhost:{}", addr.port()),
        &format!("http://{addr}/"),
    ] {
        let reply = ws_connect(addr, "/ws", &[key, ("Origin", origin)])
            .await
            .expect_err("403");
        assert_eq!(reply.status, 403, "{origin}");
        assert_eq!(reply.header("www-authenticate"), None);
        assert_eq!(reply.body_text(), "forbidden");
    }
    let two = ws_connect(addr, "/ws", &[key, ("Origin", &own), ("Origin", &own)]).await;
    assert_eq!(two.expect_err("403").status, 403, "two Origin headers");
}

#[tokio::test]
async fn origin_is_checked_before_any_credential_work() {
    let counters = Counters::default();
    let addr = spawn(app(default_guard(), &counters)).await;
    let evil = ("Origin", "https://evil.example");
    for headers in [
        vec![evil],
        vec![evil, ("Authorization", "Bearer:broken")],
        vec![evil, ("X-Session-API-Key", "wrong")],
    ] {
        let reply = ws_connect(addr, "/ws", &headers).await.expect_err("403");
        assert_eq!(reply.status, 403, "{headers:?}");
    }
}

#[tokio::test]
async fn allow_list_accepts_only_exact_origins() {
    let counters = Counters::default();
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_origin_policy(
            OriginPolicy::allow_list(["https://app.example.com", "http://localhost:3000"])
                .expect("policy"),
        )
        .build()
        .expect("guard");
    let addr = spawn(app(guard, &counters)).await;
    let key = ("X-Session-API-Key", KEY);
    for origin in [
        "https://app.example.com",
        "https://APP.example.com:443",
        "http://localhost:3000",
    ] {
        assert!(
            ws_connect(addr, "/ws", &[key, ("Origin", origin)])
                .await
                .is_ok(),
            "{origin}"
        );
    }
    for origin in [
        "https://app.example.com.evil.com",
        "https://evilapp.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com/path",
        "http://localhost:3001",
        &format!("http://{addr}"),
    ] {
        let reply = ws_connect(addr, "/ws", &[key, ("Origin", origin)])
            .await
            .expect_err("403");
        assert_eq!(reply.status, 403, "{origin}");
    }
}

#[tokio::test]
async fn reject_any_policy_refuses_browser_handshakes() {
    let counters = Counters::default();
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_origin_policy(OriginPolicy::reject_any())
        .build()
        .expect("guard");
    let addr = spawn(app(guard, &counters)).await;
    let key = ("X-Session-API-Key", KEY);
    assert!(ws_connect(addr, "/ws", &[key]).await.is_ok());
    let own = format!("http://{addr}");
    let reply = ws_connect(addr, "/ws", &[key, ("Origin", &own)])
        .await
        .expect_err("403");
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn require_origin_refuses_handshakes_without_one() {
    let counters = Counters::default();
    let guard = Guard::builder()
        .with_verifier(keys())
        .require_origin(true)
        .build()
        .expect("guard");
    let addr = spawn(app(guard, &counters)).await;
    let key = ("X-Session-API-Key", KEY);
    assert_eq!(
        ws_connect(addr, "/ws", &[key])
            .await
            .expect_err("403")
            .status,
        403
    );
    let own = format!("http://{addr}");
    assert!(ws_connect(addr, "/ws", &[key, ("Origin", &own)])
        .await
        .is_ok());
}

#[tokio::test]
async fn first_source_wins_reproduces_openhands_precedence() {
    let counters = Counters::default();
    let guard = Guard::builder()
        .with_verifier(keys())
        .first_source_wins(true)
        .build()
        .expect("guard");
    let addr = spawn(app(guard, &counters)).await;
    let good_query = format!("/ws?session_api_key={KEY}");
    // Query valid, header wrong: the query is read first and the header is never looked at.
    let mut socket = ws_connect(addr, &good_query, &[("X-Session-API-Key", "wrong")])
        .await
        .expect("101");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(hello["source"], "query");
    // Query wrong, header valid: the wrong first credential fails.
    let reply = ws_connect(
        addr,
        "/ws?session_api_key=wrong",
        &[("X-Session-API-Key", KEY)],
    )
    .await
    .expect_err("401");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"axum-keyguard\", error=\"invalid_token\"")
    );
    // Query empty, header valid: the empty first credential is malformed.
    let reply = ws_connect(addr, "/ws?session_api_key=", &[("X-Session-API-Key", KEY)])
        .await
        .expect_err("400");
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn post_upgrade_is_checked_and_then_refused_by_axum() {
    let counters = Counters::default();
    let addr = spawn(app(default_guard(), &counters)).await;
    let post = |key: &'static [u8]| {
        let mut head = get_head(
            addr,
            "/ws",
            &[&UPGRADE_HEADERS[..], &[("X-Session-API-Key", key)]].concat(),
        );
        head.splice(0..3, *b"POST");
        head
    };
    assert_eq!(raw_http(addr, &post(b"wrong")).await.status, 401);
    assert_eq!(raw_http(addr, &post(KEY.as_bytes())).await.status, 405);
}

#[tokio::test]
async fn handshake_without_key_header_is_checked_then_refused_by_axum() {
    let counters = Counters::default();
    let addr = spawn(app(default_guard(), &counters)).await;
    let head = |key: &'static [u8]| {
        get_head(
            addr,
            "/ws",
            &[&UPGRADE_HEADERS[..3], &[("X-Session-API-Key", key)]].concat(),
        )
    };
    assert_eq!(raw_http(addr, &head(b"wrong")).await.status, 401);
    assert_eq!(raw_http(addr, &head(KEY.as_bytes())).await.status, 400);
}

#[tokio::test]
async fn http2_extended_connect_is_authenticated_as_an_upgrade() {
    let reached = Arc::new(AtomicUsize::new(0));
    let hits = reached.clone();
    let app = Router::new()
        .route(
            "/ws",
            any(move |_: Identity<KeyId>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "reached"
            }),
        )
        .route_layer(default_guard().layer());
    let connect = |target: String, origin: Option<&str>| {
        let mut request = http::Request::builder()
            .header("host", "localhost")
            .method(http::Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri(format!("http://127.0.0.1:9{target}"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.body(Body::empty()).expect("request")
    };
    let status = |r: http::Response<Body>| r.status().as_u16();
    let none = app
        .clone()
        .oneshot(connect("/ws".into(), None))
        .await
        .expect("ok");
    assert_eq!(status(none), 401);
    let query = format!("/ws?session_api_key={KEY}");
    // The query source is honoured because CONNECT on HTTP/2 is an upgrade.
    let ok = app
        .clone()
        .oneshot(connect(query.clone(), None))
        .await
        .expect("ok");
    assert_eq!(status(ok), 200);
    let evil = app
        .clone()
        .oneshot(connect(query, Some("https://evil.example")))
        .await
        .expect("ok");
    assert_eq!(
        evil.extensions().get::<AuthRejectionKind>(),
        Some(&AuthRejectionKind::OriginNotAllowed)
    );
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}
