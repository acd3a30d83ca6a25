//! `examples/ws_proxy.rs` end to end with real sockets: client → proxy → upstream, both
//! directions, close codes carried across, and the handshake-auth mismatch that a proxy
//! authenticating after connecting runs into.

use super::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Message as AxumMessage;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{CredentialDigest, Guard, KeyId, Keys};
use common::{next_text, spawn, until_close, ws_connect, Server};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const CLIENT_KEY: &str = "proxy-client-S3CR3T-key";
const UPSTREAM_KEY: &str = "proxy-upstream-S3CR3T-key";
const ADMIN: &str = "proxy-admin-S3CR3T";

struct KeyFile(std::path::PathBuf);

impl KeyFile {
    fn new(name: &str, key: &str) -> Self {
        let path = std::env::temp_dir().join(format!("ws-proxy-{}-{name}", std::process::id()));
        std::fs::write(&path, format!("{key}\n")).expect("key file");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn proxy(upstream: std::net::SocketAddr, key_file: &KeyFile, mode: &str) -> Server {
    Server::example(
        "ws_proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{upstream}"),
            "--upstream-key-file",
            key_file.path(),
            "--session-api-key",
            CLIENT_KEY,
            "--upstream-auth",
            mode,
        ],
    )
    .await
}

/// Connects to the proxy as its client (query credential) and reads the upstream's hello.
async fn client_hello(proxy: std::net::SocketAddr) -> (common::Socket, serde_json::Value) {
    let target = format!("/sockets/events?session_api_key={CLIENT_KEY}");
    let mut socket = ws_connect(proxy, &target, &[])
        .await
        .expect("101 from the proxy");
    let hello = common::next_json(&mut socket).await;
    (socket, hello)
}

fn key_subject(key: &str) -> String {
    KeyId::of(&CredentialDigest::of(key.as_bytes())).to_string()
}

#[tokio::test]
async fn relays_the_reference_server_through_the_proxy() {
    let upstream =
        Server::start(&["--listen", "127.0.0.1:0", "--session-api-key", UPSTREAM_KEY]).await;
    let key_file = KeyFile::new("handshake", UPSTREAM_KEY);
    let proxy = proxy(upstream.addr, &key_file, "handshake").await;

    let (mut socket, hello) = client_hello(proxy.addr).await;
    assert_eq!(
        hello,
        serde_json::json!({"type": "hello", "subject": key_subject(UPSTREAM_KEY), "source": "header"}),
        "the upstream saw the proxy's own key, in the handshake"
    );
    for text in ["one", "two", "{\"type\":\"data\"}"] {
        socket.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(&mut socket).await, text);
    }
    socket.close(None).await.expect("close");

    // The proxy's own guard: a wrong client key never reaches the upstream.
    let refused = ws_connect(proxy.addr, "/sockets/events?session_api_key=wrong", &[]).await;
    assert_eq!(refused.expect_err("401").status, 401);

    let proxy_log = proxy.stop().await;
    let upstream_log = upstream.stop().await;
    for log in [&proxy_log, &upstream_log] {
        assert!(
            !log.contains("S3CR3T"),
            "a credential reached a log:\n{log}"
        );
    }
}

#[tokio::test]
async fn an_upstream_4001_reaches_the_client_as_4001() {
    let upstream = Server::start(&["--listen", "127.0.0.1:0", "--admin-key", ADMIN]).await;
    let head = format!("POST /admin/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\nX-Admin-Key: {ADMIN}\r\n");
    let created = common::raw_http(upstream.addr, head.as_bytes()).await;
    let body: serde_json::Value = serde_json::from_slice(&created.body).expect("json");
    let (id, key) = (
        body["id"].as_str().expect("id"),
        body["session_api_key"].as_str().expect("key"),
    );
    let key_file = KeyFile::new("sandbox", key);
    let proxy = proxy(upstream.addr, &key_file, "handshake").await;

    let mut socket = ws_connect(
        proxy.addr,
        "/sockets/events",
        &[("X-Session-API-Key", CLIENT_KEY)],
    )
    .await
    .expect("101");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(hello["subject"], format!("sandbox:{id}"));
    let pause = format!("POST /admin/sandboxes/{id}/pause HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\nX-Admin-Key: {ADMIN}\r\n");
    let paused_at = Instant::now();
    assert_eq!(
        common::raw_http(upstream.addr, pause.as_bytes())
            .await
            .status,
        204
    );
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
    assert!(
        paused_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        paused_at.elapsed()
    );
    proxy.stop().await;
    upstream.stop().await;
}

/// The proxy bug of Open WebUI's terminal proxy: it connects first and sends its credential in
/// the first frame, but the upstream checks credentials during the handshake.
#[tokio::test]
async fn a_proxy_that_authenticates_after_connecting_gets_a_clear_1011_and_the_helper_fixes_it() {
    let upstream =
        Server::start(&["--listen", "127.0.0.1:0", "--session-api-key", UPSTREAM_KEY]).await;
    let key_file = KeyFile::new("mismatch", UPSTREAM_KEY);
    let late = proxy(upstream.addr, &key_file, "first-message").await;
    let started = Instant::now();
    let mut socket = ws_connect(
        late.addr,
        &format!("/sockets/events?session_api_key={CLIENT_KEY}"),
        &[],
    )
    .await
    .expect("the proxy accepts its client");
    let (texts, code, reason) = until_close(&mut socket).await;
    assert!(texts.is_empty());
    assert_eq!(
        (code, reason.as_str()),
        (1011, "upstream refused the handshake: 401 Unauthorized")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "surfaced at once, not a hang"
    );
    late.stop().await;

    // The same proxy with the credential in the handshake (the outbound helper's default) works.
    let fixed = proxy(upstream.addr, &key_file, "handshake").await;
    let (_socket, hello) = client_hello(fixed.addr).await;
    assert_eq!(hello["source"], "header");
    fixed.stop().await;
    upstream.stop().await;

    // And first-message auth works against an upstream that expects it.
    let upstream = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        UPSTREAM_KEY,
        "--first-message-auth",
    ])
    .await;
    let late = proxy(upstream.addr, &key_file, "first-message").await;
    let (_socket, hello) = client_hello(late.addr).await;
    assert_eq!(hello["source"], "message");
    let logs = [late.stop().await, upstream.stop().await];
    assert!(
        logs.iter().all(|log| !log.contains("S3CR3T")),
        "a credential reached a log"
    );
}

#[tokio::test]
async fn binary_frames_and_the_clients_close_code_cross_the_proxy() {
    // An upstream that echoes binary frames and records how its client (the proxy) closed.
    let closes: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let seen = closes.clone();
    let guard = Guard::builder()
        .with_verifier(Keys::new([UPSTREAM_KEY]).expect("keys"))
        .build()
        .expect("guard");
    let upstream_app = Router::new()
        .route(
            "/sockets/events",
            any(move |ws: GuardedUpgrade<KeyId>| {
                let seen = seen.clone();
                async move {
                    let response: Response = ws.on_upgrade(move |mut socket| async move {
                        let _ = socket.send(AxumMessage::text("hello")).await;
                        while let Some(message) = socket.recv().await {
                            match message {
                                AxumMessage::Close(frame) => {
                                    let frame = frame.expect("a close frame with a code");
                                    seen.lock()
                                        .expect("lock")
                                        .push((frame.code, frame.reason.to_string()));
                                }
                                other => {
                                    let _ = socket.send(other).await;
                                }
                            }
                        }
                    });
                    response
                }
            }),
        )
        .route_layer(guard.layer());
    let upstream = spawn(upstream_app).await;
    let key_file = KeyFile::new("binary", UPSTREAM_KEY);
    let proxy = proxy(upstream, &key_file, "handshake").await;

    let mut socket = ws_connect(
        proxy.addr,
        "/sockets/events",
        &[("X-Session-API-Key", CLIENT_KEY)],
    )
    .await
    .expect("101");
    assert_eq!(next_text(&mut socket).await, "hello");
    let payload = vec![0u8, 1, 2, 255, 254];
    socket
        .send(Message::binary(payload.clone()))
        .await
        .expect("send");
    match tokio::time::timeout(common::STEP, socket.next())
        .await
        .expect("echo in time")
    {
        Some(Ok(Message::Binary(bytes))) => assert_eq!(bytes.as_ref(), payload.as_slice()),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4000),
            reason: "bye".into(),
        }))
        .await
        .expect("close");
    let started = Instant::now();
    while closes.lock().expect("lock").is_empty() {
        assert!(
            started.elapsed() < common::STEP,
            "the close never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        closes.lock().expect("lock").as_slice(),
        [(4000, "bye".to_owned())]
    );
    proxy.stop().await;
}
