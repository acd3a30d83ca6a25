//! No credential value in logs or in `Debug` output.
//!
//! One test per binary: it installs the global log capture.

use super::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::{
    AuthRejectionKind, Credential, Grant, Guard, Identity, KeyId, Keys, Lease, OriginPolicy,
    Source, Verdict,
};
use common::{get_head, next_text, raw_http, spawn, ws_connect};
use futures_util::SinkExt;
use tower::ServiceExt;

const SECRET: &str = "S3CR3T-value-9f8e7d";
/// A wrong credential is as sensitive as a right one (it may be a typo of it).
const WRONG: &str = "S3CR3T-wrong-1a2b3c";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

async fn events(verified: Identity<KeyId>, ws: WebSocketUpgrade) -> Response {
    let subject = verified.principal().to_string();
    ws.on_upgrade(move |mut socket| async move {
        let _ = socket.send(subject.into()).await;
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    })
}

#[tokio::test]
async fn no_secret_reaches_logs_or_debug_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    // Everything at TRACE, except the test's own WebSocket client: tungstenite's client handshake
    // logs its whole request, credentials included. That is the client side, which this test does
    // not judge (a proxy that connects upstream with tungstenite must filter it the same way).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,tungstenite::handshake::client=off",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("install the capturing subscriber");

    let guard = Guard::builder()
        .with_verifier(Keys::new([SECRET]).expect("keys"))
        .with_sources([
            Source::query("session_api_key").on_rest(true),
            Source::header("X-Session-API-Key").expect("header"),
            Source::bearer(),
        ])
        .build()
        .expect("guard");
    let app = Router::new()
        .route(
            "/api",
            get(|v: Identity<KeyId>| async move { v.principal().to_string() }),
        )
        .route("/ws", any(events))
        .route_layer(guard.layer());
    let addr = spawn(app.clone()).await;

    let bearer_ok = format!("Bearer {SECRET}");
    let bearer_wrong = format!("Bearer {WRONG}");
    let malformed = format!("Bearer {SECRET} extra");
    let header_sets: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("X-Session-API-Key", SECRET.as_bytes())],
        vec![("X-Session-API-Key", WRONG.as_bytes())],
        vec![("Authorization", bearer_ok.as_bytes())],
        vec![("Authorization", bearer_wrong.as_bytes())],
        vec![("Authorization", malformed.as_bytes())],
        vec![
            ("X-Session-API-Key", SECRET.as_bytes()),
            ("Authorization", bearer_wrong.as_bytes()),
        ],
    ];
    let mut statuses = Vec::new();
    for headers in &header_sets {
        statuses.push(
            raw_http(addr, &get_head(addr, "/api", headers))
                .await
                .status,
        );
    }
    for target in [
        format!("/api?session_api_key={SECRET}"),
        format!("/api?session_api_key={WRONG}"),
    ] {
        statuses.push(raw_http(addr, &get_head(addr, &target, &[])).await.status);
    }
    assert_eq!(statuses, [200, 401, 200, 401, 400, 400, 200, 401]);

    // WebSocket: every source, right and wrong, with frames both ways.
    let ok_query = format!("/ws?session_api_key={SECRET}");
    let mut socket = ws_connect(addr, &ok_query, &[]).await.expect("101");
    next_text(&mut socket).await;
    socket.send("frame".into()).await.expect("send");
    assert_eq!(next_text(&mut socket).await, "frame");
    socket.close(None).await.expect("close");
    let mut socket = ws_connect(addr, "/ws", &[("Authorization", &bearer_ok)])
        .await
        .expect("101");
    next_text(&mut socket).await;
    let wrong_query = format!("/ws?session_api_key={WRONG}");
    assert_eq!(
        ws_connect(addr, &wrong_query, &[])
            .await
            .expect_err("401")
            .status,
        401
    );
    let reply = ws_connect(addr, "/ws", &[("X-Session-API-Key", WRONG)])
        .await
        .expect_err("401");
    assert!(!reply.body_text().contains("S3CR3T"));

    // In-process too, so responses and rejections can be inspected whole.
    let response = app
        .oneshot(
            http::Request::get("/api")
                .header("host", "localhost")
                .header("x-session-api-key", WRONG)
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("ok");
    let rendered = format!("{response:?}");
    assert!(!rendered.contains("S3CR3T"), "{rendered}");

    let logs = capture.text();
    assert!(
        logs.contains("axum_keyguard::rejection") && logs.contains("invalid_credential"),
        "the capture must see the guard's own events:\n{logs}"
    );
    assert!(
        logs.contains("source=\"header\""),
        "rejections name the source:\n{logs}"
    );
    assert!(
        !logs.contains("S3CR3T"),
        "a credential reached the logs:\n{logs}"
    );

    // Debug of every public type that holds, or held, a secret.
    let credential = Credential::new(SECRET);
    let keys = Keys::new([SECRET]).expect("keys");
    let guard = Guard::builder()
        .with_verifier(keys.clone())
        .with_origin_policy(OriginPolicy::allow_list(["https://app.example.com"]).expect("origins"))
        .build()
        .expect("guard");
    let (parts, ()) = http::Request::get("/")
        .header("host", "localhost")
        .header("x-session-api-key", SECRET)
        .body(())
        .expect("request")
        .into_parts();
    let resolve = guard.resolve(&parts);
    let resolve_debug = format!("{resolve:?}");
    let verified = resolve.await.expect("verified");
    let (wrong_parts, ()) = http::Request::get("/")
        .header("host", "localhost")
        .header("x-session-api-key", WRONG)
        .body(())
        .expect("request")
        .into_parts();
    let rejection = guard.resolve(&wrong_parts).await.expect_err("rejected");
    assert_eq!(rejection.kind(), AuthRejectionKind::InvalidCredential);
    let shown = [
        format!("{credential:?}"),
        format!("{:?}", credential.digest()),
        format!("{keys:?}"),
        format!("{guard:?}"),
        format!("{:?}", guard.layer()),
        format!("{:?}", Guard::builder().with_verifier(keys.clone())),
        resolve_debug,
        format!("{verified:?}"),
        format!("{rejection:?} {rejection}"),
        format!(
            "{:?}",
            Grant::new(credential.expose().to_owned()).with_lease(Lease::unbounded())
        ),
        format!(
            "{:?}",
            Verdict::<()>::ready(Err(axum_keyguard::Denial::invalid()))
        ),
    ];
    for text in &shown {
        assert!(!text.contains("S3CR3T"), "Debug shows a secret: {text}");
        let digest_hex: String = credential.digest().as_bytes()[4..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            !text.contains(&digest_hex),
            "Debug shows the digest: {text}"
        );
    }
}
