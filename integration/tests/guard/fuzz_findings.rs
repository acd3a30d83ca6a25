//! Regression tests for what the fuzz targets in `fuzz/` found (their inputs are in the seed
//! corpora, `fuzz/corpus/<target>/seed-…`). Over real sockets where a client would normalise.

use super::common;

use std::time::Duration;

use axum::extract::ws::Message as AxumMessage;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::ws::{FirstMessage, GuardedUpgrade};
use axum_keyguard::{Authenticated, Guard, KeyId, Keys, Source};
use common::{next_text, raw_http, spawn, ws_connect};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "fuzz-regression-key-0123456789";

fn keys() -> Keys {
    Keys::new([KEY]).expect("keys")
}

/// fuzz/upgrade, `seed-http10`: RFC 6455 §4.1 requires HTTP/1.1 or later, so an HTTP/1.0 request
/// with every handshake header is REST, and a REST route does not read its query credential.
#[tokio::test]
async fn an_http_1_0_request_with_handshake_headers_is_rest_and_its_query_key_is_ignored() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .build()
        .expect("guard");
    let app: Router = Router::new()
        .route(
            "/api/whoami",
            get(|Authenticated(key): Authenticated<KeyId>| async move { key.to_string() }),
        )
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    let head = |version: &str| {
        format!(
            "GET /api/whoami?session_api_key={KEY} {version}\r\nHost: {addr}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
    };
    let reply = raw_http(addr, head("HTTP/1.0").as_bytes()).await;
    assert_eq!(reply.status, 401, "HTTP/1.0 is not a WebSocket handshake");
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"axum-keyguard\"")
    );
}

async fn echo(ws: GuardedUpgrade<KeyId>) -> Response {
    ws.on_upgrade(|mut socket| async move {
        let _ = socket.send(AxumMessage::text("ready")).await;
        while let Some(message) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    })
}

/// fuzz/first_message, `seed-escaped-type`: a later frame whose `type` is `"auth"` written with a
/// JSON escape is still an auth frame, and never reaches the handler.
#[tokio::test]
async fn a_later_auth_frame_with_an_escaped_type_never_reaches_the_handler() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_first_message_auth(FirstMessage::new().with_timeout(Duration::from_secs(5)))
        .with_close_timeout(Duration::from_millis(300))
        .build()
        .expect("guard");
    let app: Router = Router::new()
        .route("/ws", any(echo))
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    let mut socket = ws_connect(addr, "/ws", &[])
        .await
        .expect("101 without a credential");
    socket
        .send(Message::text(format!(
            r#"{{"type":"auth","token":"{KEY}"}}"#
        )))
        .await
        .expect("send");
    assert_eq!(next_text(&mut socket).await, "ready");
    for frame in [
        format!(r#"{{"type":"\u0061uth","token":"{KEY}"}}"#),
        format!(r#"{{"type":"auth","t\u006fken":"{KEY}"}}"#),
    ] {
        socket.send(Message::text(frame)).await.expect("send");
    }
    socket.send(Message::text("after")).await.expect("send");
    assert_eq!(
        next_text(&mut socket).await,
        "after",
        "an escaped auth frame was delivered to the handler"
    );
}

/// fuzz/query, `seed-non-ascii-name` and `seed-punctuation-name`: a query parameter the guard
/// reads is redacted whatever its name, also one without ASCII letters or digits.
#[test]
fn redaction_covers_every_name_the_guard_reads() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_sources([Source::query("é"), Source::query("_")])
        .build()
        .expect("guard");
    let uri: http::Uri = format!("/ws?%C3%A9={KEY}&_={KEY}&a=1")
        .parse()
        .expect("uri");
    let shown = guard.redacted_uri(&uri).to_string();
    assert_eq!(shown, "/ws?%C3%A9=[REDACTED]&_=[REDACTED]&a=1");
    assert!(!shown.contains(KEY));
}
