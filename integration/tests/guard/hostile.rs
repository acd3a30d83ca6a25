//! Hostile input and shutdown, over real loopback sockets: requests that only look like
//! upgrades, draining on shutdown, anonymous guards and the origin policy, the first-message
//! grammar and its read cap, requests without `Host`.

use super::common;

use std::time::Duration;

use axum::extract::ws::Message as AxumMessage;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::ws::{FirstMessage, GuardedUpgrade, LeasedSocket, Shutdown};
use axum_keyguard::{Guard, GuardBuilder, Identity, KeyId, Keys, Source, Verifier as _};
use common::{get_head, raw_http, spawn, until_close, ws_connect, Socket, STEP, UPGRADE_HEADERS};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "hostile-S3CR3T-key-0001";

fn keys() -> Keys {
    Keys::new([KEY]).expect("keys")
}

fn base64_url(text: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    URL_SAFE_NO_PAD.encode(text)
}

async fn whoami(verified: Identity<String>) -> String {
    format!("{} {}", verified.principal(), verified.source())
}

/// Sends a hello naming the principal and source, then echoes text until the client leaves.
async fn hello_then_echo(mut socket: LeasedSocket<String>) {
    let hello = format!(
        "hello {} {}",
        socket.principal(),
        socket.verified().source()
    );
    if socket.send(AxumMessage::text(hello)).await.is_err() {
        return;
    }
    while let Some(message) = socket.recv().await {
        if let AxumMessage::Text(_) = message {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    }
}

async fn events(ws: GuardedUpgrade<String>) -> axum::response::Response {
    ws.protocols(["agent.v1"]).on_upgrade(hello_then_echo)
}

fn app(guard: &Guard<String>) -> Router {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/sockets/events", any(events))
        .route_layer(guard.layer())
}

fn key_guard() -> GuardBuilder<String> {
    Guard::builder()
        .with_verifier(keys().map_principal(|k| k.to_string()))
        .add_source(Source::subprotocol())
}

async fn hello(socket: &mut Socket) -> String {
    common::next_text(socket).await
}

#[tokio::test]
async fn a_request_that_only_says_upgrade_follows_the_rest_rules() {
    let guard = key_guard().build().expect("guard");
    let addr = spawn(app(&guard)).await;
    let query = format!("/api/whoami?session_api_key={KEY}");
    let token = format!(
        "base64url.bearer.authorization.k8s.io.{}, agent.v1",
        base64_url(KEY)
    );
    // `Upgrade: websocket` alone, or with any one piece of the handshake missing: REST, where the
    // query and subprotocol sources are not read, so no credential was presented.
    let partial: [&[(&str, &[u8])]; 4] = [
        &[("Upgrade", b"websocket")],
        &[("Upgrade", b"websocket"), ("Connection", b"Upgrade")],
        &[
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Version", b"13"),
        ],
        &[
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    ];
    for headers in partial {
        let reply = raw_http(addr, &get_head(addr, &query, headers)).await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(
            reply.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"axum-keyguard\""),
            "no credential was read: {headers:?}"
        );
        let mut with_token = headers.to_vec();
        with_token.push(("Sec-WebSocket-Protocol", token.as_bytes()));
        let reply = raw_http(addr, &get_head(addr, "/api/whoami", &with_token)).await;
        assert_eq!(reply.status, 401, "subprotocol {headers:?}");
        assert!(!reply.body_text().contains(KEY));
    }
    // The complete handshake is an upgrade: the query credential counts there.
    let reply = raw_http(
        addr,
        &get_head(
            addr,
            &format!("/sockets/events?session_api_key={KEY}"),
            &UPGRADE_HEADERS,
        ),
    )
    .await;
    assert_eq!(reply.status, 101);
    // A REST route does not become a socket route either way; a valid header credential on a
    // request that only says upgrade is an ordinary REST request.
    let reply = raw_http(
        addr,
        &get_head(
            addr,
            "/api/whoami",
            &[
                ("Upgrade", b"websocket"),
                ("X-Session-API-Key", KEY.as_bytes()),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body_text().ends_with(" header"),
        "{}",
        reply.body_text()
    );
}

#[tokio::test]
async fn guarded_upgrade_never_upgrades_what_the_guard_checked_as_rest() {
    let guard = key_guard().build().expect("guard");
    let addr = spawn(app(&guard)).await;
    // axum's own extractor would upgrade this (it looks for "upgrade" anywhere in Connection);
    // the guard reads it as REST, so the upgrade extractor refuses it.
    let head = get_head(
        addr,
        "/sockets/events",
        &[
            ("Connection", b"keep-alive-upgrade-x"),
            ("Upgrade", b"websocket"),
            ("Sec-WebSocket-Version", b"13"),
            ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ("X-Session-API-Key", KEY.as_bytes()),
        ],
    );
    let reply = raw_http(addr, &head).await;
    assert_eq!(reply.status, 400);
    let mut post = b"POST /sockets/events HTTP/1.1\r\n".to_vec();
    post.extend_from_slice(format!("Host: {addr}\r\nContent-Length: 0\r\n").as_bytes());
    for (name, value) in UPGRADE_HEADERS {
        post.extend_from_slice(format!("{name}: ").as_bytes());
        post.extend_from_slice(value);
        post.extend_from_slice(b"\r\n");
    }
    post.extend_from_slice(format!("X-Session-API-Key: {KEY}\r\n").as_bytes());
    assert_eq!(raw_http(addr, &post).await.status, 405);
}

#[tokio::test]
async fn shutdown_closes_every_guarded_socket_with_1001_and_drains() {
    let shutdown = Shutdown::new();
    let guard = key_guard()
        .with_first_message_auth(FirstMessage::new())
        .with_shutdown(&shutdown)
        // The clients below read the Close but do not answer it at once: bound the wait.
        .with_close_timeout(Duration::from_millis(500))
        .build()
        .expect("guard");
    let addr = spawn(app(&guard)).await;
    let header = [("X-Session-API-Key", KEY)];
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut socket = ws_connect(addr, "/sockets/events", &header)
            .await
            .expect("101");
        assert!(hello(&mut socket).await.starts_with("hello key:"));
        open.push(socket);
    }
    // One socket still in its first-message phase.
    let mut pending = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    // Wait until the server counts all four (the upgrade task starts right after the 101).
    tokio::time::timeout(STEP, async {
        while shutdown.open_sockets() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("four open sockets");
    shutdown.close_all();
    for socket in open.iter_mut().chain([&mut pending]) {
        let (_, code, reason) = until_close(socket).await;
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    tokio::time::timeout(STEP, shutdown.drained())
        .await
        .expect("every socket finished");
    assert_eq!(shutdown.open_sockets(), 0);
    // A socket opened after the shutdown began is closed with 1001 at once.
    let mut late = ws_connect(addr, "/sockets/events", &header)
        .await
        .expect("101");
    let (texts, code, _) = until_close(&mut late).await;
    assert_eq!(code, 1001);
    assert!(texts.is_empty(), "the handler never ran: {texts:?}");
}

#[tokio::test]
async fn an_anonymous_guard_still_refuses_cross_site_upgrades() {
    let anonymous = || Guard::builder().with_anonymous("anonymous".to_owned());
    let guard = anonymous().build().expect("guard");
    let addr = spawn(app(&guard)).await;
    for origin in ["https://evil.example", "null", "ftp://127.0.0.1"] {
        let rejected = ws_connect(addr, "/sockets/events", &[("Origin", origin)])
            .await
            .expect_err("403");
        assert_eq!(rejected.status, 403, "{origin}");
    }
    let same_site = format!("http://{addr}");
    let mut socket = ws_connect(addr, "/sockets/events", &[("Origin", &same_site)])
        .await
        .expect("101");
    assert_eq!(hello(&mut socket).await, "hello anonymous none");
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    assert_eq!(hello(&mut socket).await, "hello anonymous none");
    // An allow-list works the same way.
    let guard = anonymous()
        .with_origin_policy(
            axum_keyguard::OriginPolicy::allow_list(["https://app.example.com"]).expect("list"),
        )
        .build()
        .expect("guard");
    let addr = spawn(app(&guard)).await;
    let ok = ws_connect(
        addr,
        "/sockets/events",
        &[("Origin", "https://app.example.com")],
    )
    .await;
    assert!(ok.is_ok());
    let same_site = format!("http://{addr}");
    let refused = ws_connect(addr, "/sockets/events", &[("Origin", &same_site)]).await;
    assert_eq!(refused.expect_err("403").status, 403);
}

/// Opens a first-message socket and sends `frame` as its first text frame.
async fn first_frame(addr: std::net::SocketAddr, frame: &str) -> Socket {
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    socket
        .send(Message::text(frame.to_owned()))
        .await
        .expect("send");
    socket
}

#[tokio::test]
async fn first_message_speaks_both_ecosystems_and_refuses_ambiguity() {
    let guard = key_guard()
        .with_first_message_auth(FirstMessage::new())
        .build()
        .expect("guard");
    let addr = spawn(app(&guard)).await;
    for frame in [
        format!(r#"{{"type":"auth","session_api_key":"{KEY}"}}"#),
        format!(r#"{{"type":"auth","token":"{KEY}"}}"#),
        format!(r#"{{"type":"auth","token":"{KEY}","session_api_key":"{KEY}"}}"#),
    ] {
        let mut socket = first_frame(addr, &frame).await;
        assert!(hello(&mut socket).await.ends_with(" message"), "{frame}");
    }
    for frame in [
        format!(r#"{{"type":"auth","token":"{KEY}","session_api_key":"other-key-0000000000"}}"#),
        format!(r#"{{"type":"auth","session_api_key":"x","session_api_key":"{KEY}"}}"#),
        format!(r#"{{"type":"auth","session_api_key":"{KEY}","session_api_key":"{KEY}"}}"#),
        format!(r#"{{"type":"ping","type":"auth","token":"{KEY}"}}"#),
        format!(r#"{{"type":"auth","token":["{KEY}"]}}"#),
    ] {
        let mut socket = first_frame(addr, &frame).await;
        let (texts, code, reason) = until_close(&mut socket).await;
        assert_eq!(
            (code, reason.as_str()),
            (4001, "authentication failed"),
            "{frame}"
        );
        assert!(texts.is_empty());
        assert!(!reason.contains(KEY));
    }
}

#[tokio::test]
async fn first_message_closes_4001_at_once_past_its_read_cap() {
    let guard = key_guard()
        .with_first_message_auth(FirstMessage::new())
        .build()
        .expect("guard");
    let addr = spawn(app(&guard)).await;
    // An unfinished 15 MB text fragment: the header announces it, 64 KiB of it follow.
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    let mut frame = Frame::message(vec![b'a'; 64 * 1024], OpCode::Data(Data::Text), false);
    frame.header_mut().is_final = false;
    socket.send(Message::Frame(frame)).await.expect("send");
    let (texts, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "auth message too large"));
    assert!(texts.is_empty());
    // Many small fragments add up the same way.
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    let first = Frame::message(vec![b'{'; 1000], OpCode::Data(Data::Text), false);
    socket.send(Message::Frame(first)).await.expect("send");
    let mut refused = None;
    for _ in 0..20 {
        let more = Frame::message(vec![b' '; 1000], OpCode::Data(Data::Continue), false);
        if socket.send(Message::Frame(more)).await.is_err() {
            break;
        }
        if let Ok(Some(Ok(Message::Close(Some(close))))) =
            tokio::time::timeout(Duration::from_millis(1), socket.next()).await
        {
            refused = Some(u16::from(close.code));
            break;
        }
    }
    let code = match refused {
        Some(code) => code,
        None => until_close(&mut socket).await.1,
    };
    assert_eq!(code, 4001);
    // Within the cap, a credential of the guard's maximum length still fits.
    let long_key = "k".repeat(4096);
    let guard = Guard::builder()
        .with_verifier(
            Keys::new([long_key.as_str()])
                .expect("keys")
                .map_principal(|k: KeyId| k.to_string()),
        )
        .with_first_message_auth(FirstMessage::new())
        .build()
        .expect("guard");
    let addr = spawn(app(&guard)).await;
    let mut socket = first_frame(
        addr,
        &format!(r#"{{"type":"auth","session_api_key":"{long_key}"}}"#),
    )
    .await;
    assert!(hello(&mut socket).await.ends_with(" message"));
    // After authentication the cap is lifted: a 1 MiB message is echoed.
    let big = "b".repeat(1 << 20);
    socket.send(Message::text(big.clone())).await.expect("send");
    assert_eq!(common::next_text(&mut socket).await.len(), big.len());
}

#[test]
fn a_read_cap_too_small_for_the_credential_cap_is_a_config_error() {
    let err = key_guard()
        .with_first_message_auth(FirstMessage::new().with_max_len(4096))
        .build()
        .expect_err("too small");
    assert_eq!(err.kind(), axum_keyguard::ConfigErrorKind::OutOfRange);
    let err = key_guard()
        .with_first_message_auth(FirstMessage::new().with_fields(["type"]))
        .build()
        .expect_err("type is not a credential field");
    assert_eq!(err.kind(), axum_keyguard::ConfigErrorKind::InvalidName);
}

#[tokio::test]
async fn a_request_without_exactly_one_host_is_400_before_anything_else() {
    let guard = key_guard().build().expect("guard");
    let addr = spawn(app(&guard)).await;
    let cases: [&[u8]; 3] = [
        b"GET /api/whoami HTTP/1.1\r\nConnection: close\r\n",
        b"GET /api/whoami HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n",
        b"GET /sockets/events HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: https://evil.example\r\n",
    ];
    for head in cases {
        let mut with_key = head.to_vec();
        with_key.extend_from_slice(format!("X-Session-API-Key: {KEY}\r\n").as_bytes());
        let reply = raw_http(addr, &with_key).await;
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(head));
        assert_eq!(reply.header("www-authenticate"), None);
    }
    // HTTP/1.0 has no Host requirement.
    let reply = raw_http(
        addr,
        format!("GET /api/whoami HTTP/1.0\r\nX-Session-API-Key: {KEY}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
}

/// Completes a WebSocket handshake by hand and returns the stream, for raw frames.
async fn raw_socket(addr: std::net::SocketAddr) -> TcpStream {
    raw_socket_with(addr, "/sockets/events", &UPGRADE_HEADERS).await
}

/// [`raw_socket`] on `path`, with the key in its header.
async fn raw_socket_at(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut headers = UPGRADE_HEADERS.to_vec();
    headers.push(("X-Session-API-Key", KEY.as_bytes()));
    raw_socket_with(addr, path, &headers).await
}

async fn raw_socket_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &[u8])],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = get_head(addr, path, headers);
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await.expect("write");
    let mut buf = Vec::new();
    // Byte by byte, so that no frame after the head is read here.
    while !buf.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.expect("read");
        assert!(n > 0);
        buf.push(byte[0]);
    }
    assert!(buf.starts_with(b"HTTP/1.1 101"));
    stream
}

#[tokio::test]
async fn an_announced_huge_frame_is_refused_without_being_buffered() {
    let guard = key_guard()
        .with_first_message_auth(FirstMessage::new())
        .build()
        .expect("guard");
    let addr = spawn(app(&guard)).await;
    let mut stream = raw_socket(addr).await;
    // FIN=0, text, masked, 64-bit length 15,000,000, mask key, then 32 KiB of payload.
    let mut frame = vec![0x01, 0x80 | 127];
    frame.extend_from_slice(&15_000_000u64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat_n(0x55, 32 * 1024));
    let _ = stream.write_all(&frame).await;
    // The server's Close: unmasked, code 4001.
    let mut reply = [0u8; 64];
    let n = tokio::time::timeout(STEP, stream.read(&mut reply))
        .await
        .expect("close in time")
        .expect("read");
    assert!(n >= 4, "{:?}", &reply[..n]);
    assert_eq!(reply[0], 0x88, "a Close frame");
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 4001);
}

/// `GuardedUpgrade`'s `WebSocketUpgrade` settings, passed through to the protocol layer.
fn knobs_app(guard: &Guard<String>) -> Router {
    async fn small(ws: GuardedUpgrade<String>) -> axum::response::Response {
        ws.max_message_size(1024)
            .max_frame_size(1024)
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(1 << 20)
            .on_failed_upgrade(|_| {})
            .on_upgrade(hello_then_echo)
    }
    async fn unmasked(ws: GuardedUpgrade<String>) -> axum::response::Response {
        ws.accept_unmasked_frames(true).on_upgrade(hello_then_echo)
    }
    Router::new()
        .route("/sockets/events", any(events))
        .route("/sockets/small", any(small))
        .route("/sockets/unmasked", any(unmasked))
        .route_layer(guard.layer())
}

/// Reads one unmasked server frame with a short payload: (first byte, payload).
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tokio::time::timeout(STEP, stream.read_exact(&mut head))
        .await
        .expect("a frame or the end in time")
        .ok()?;
    assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
    let len = usize::from(head[1] & 0x7f);
    assert!(len < 126, "short frames only here");
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[0], payload))
}

/// A masked client text frame.
fn masked_text(text: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut frame = vec![0x81];
    match text.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn the_message_and_frame_size_limits_reach_the_socket() {
    let guard = key_guard().build().expect("guard");
    let addr = spawn(knobs_app(&guard)).await;
    let mut stream = raw_socket_at(addr, "/sockets/small").await;
    let (op, hello) = read_frame(&mut stream).await.expect("hello");
    assert_eq!(op, 0x81);
    assert!(hello.starts_with(b"hello "));
    // Under the limit: echoed.
    stream
        .write_all(&masked_text(&[b'a'; 100]))
        .await
        .expect("write");
    let (op, echo) = read_frame(&mut stream).await.expect("echo");
    assert_eq!((op, echo.len()), (0x81, 100));
    // Over it (2,000 bytes against 1,024): never reaches the handler; the protocol layer ends
    // the connection with Close 1009 (message too big), and nothing is echoed.
    stream
        .write_all(&masked_text(&[b'b'; 2000]))
        .await
        .expect("write");
    let (op, close) = read_frame(&mut stream).await.expect("a close frame");
    assert_eq!(op, 0x88, "a Close, not an echo");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
    // The default route keeps the defaults: the same 2,000 bytes are echoed there.
    let mut stream = raw_socket_at(addr, "/sockets/events").await;
    read_frame(&mut stream).await.expect("hello");
    stream
        .write_all(&masked_text(&[b'b'; 2000]))
        .await
        .expect("write");
    let mut head = [0u8; 4];
    tokio::time::timeout(STEP, stream.read_exact(&mut head))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(head[0], 0x81, "an echo");
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 2000);
}

#[tokio::test]
async fn unmasked_client_frames_are_refused_unless_the_route_accepts_them() {
    let guard = key_guard().build().expect("guard");
    let addr = spawn(knobs_app(&guard)).await;
    let unmasked = [0x81, 0x02, b'h', b'i'];
    // Default (RFC 6455 §5.1): the connection is failed, Close 1002, no echo.
    let mut stream = raw_socket_at(addr, "/sockets/events").await;
    read_frame(&mut stream).await.expect("hello");
    stream.write_all(&unmasked).await.expect("write");
    let (op, close) = read_frame(&mut stream).await.expect("a close frame");
    assert_eq!(op, 0x88);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002);
    // `accept_unmasked_frames(true)`: echoed.
    let mut stream = raw_socket_at(addr, "/sockets/unmasked").await;
    read_frame(&mut stream).await.expect("hello");
    stream.write_all(&unmasked).await.expect("write");
    assert_eq!(read_frame(&mut stream).await, Some((0x81, b"hi".to_vec())));
}
