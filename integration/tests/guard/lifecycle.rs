//! The life of a credential after the handshake, over real sockets with a real client: session
//! stores, revocation and expiry closing open sockets with 4001, store failures, first-message
//! auth, accept-then-close, subprotocol credentials, and the close handshake.

use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message as AxumMessage;
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Extension, Router};
use axum_keyguard::ws::{FirstMessage, GuardedUpgrade};
use axum_keyguard::{
    Authenticated, CredentialDigest, Guard, GuardBuilder, KeyRecord, Keys, LeaseStatus,
    MemoryStore, Revoker, SessionKeys, SessionStore, Source, StoreError, Verifier,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{get_head, next_text, raw_http, spawn, until_close, ws_connect, UPGRADE_HEADERS};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The Kubernetes subprotocol prefix the guard reads by default.
const DEFAULT_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

const KEY: &str = "sandbox-key-0001-0123456789";
const OTHER: &str = "sandbox-key-0002";

fn digest(key: &str) -> CredentialDigest {
    CredentialDigest::of(key.as_bytes())
}

#[derive(Clone, Default)]
struct Counters {
    handlers_started: Arc<AtomicUsize>,
    handlers_done: Arc<AtomicUsize>,
    late_sends_delivered: Arc<AtomicUsize>,
}

/// Sends a hello with the principal, echoes, and after the socket closes tries one more send.
async fn echo(Extension(counters): Extension<Counters>, ws: GuardedUpgrade<String>) -> Response {
    ws.protocols(["agent.v1", "b", "a"])
        .on_upgrade(move |mut socket| async move {
            counters.handlers_started.fetch_add(1, Ordering::SeqCst);
            let hello = format!(
                "hello {} via {}",
                socket.principal(),
                socket.verified().source()
            );
            let protocol = socket.protocol().unwrap_or("-").to_owned();
            if socket.send(AxumMessage::text(hello)).await.is_err() {
                return;
            }
            let _ = socket
                .send(AxumMessage::text(format!("protocol {protocol}")))
                .await;
            while let Some(message) = socket.recv().await {
                if socket.send(message).await.is_err() {
                    break;
                }
            }
            if socket.send(AxumMessage::text("late")).await.is_ok() {
                counters.late_sends_delivered.fetch_add(1, Ordering::SeqCst);
            }
            counters.handlers_done.fetch_add(1, Ordering::SeqCst);
        })
}

fn app<V: Verifier<Principal = String>>(
    builder: GuardBuilder<()>,
    verifier: V,
    counters: &Counters,
) -> Router {
    let guard = builder
        .with_verifier(verifier)
        .with_close_timeout(Duration::from_millis(300))
        .build()
        .expect("guard");
    Router::new()
        .route("/ws", any(echo))
        .route(
            "/api",
            get(|Authenticated(who): Authenticated<String>| async move { who }),
        )
        .route_layer(guard.layer())
        .layer(Extension(counters.clone()))
}

fn store_app(store: &MemoryStore<String>, counters: &Counters) -> Router {
    app(Guard::builder(), SessionKeys::new(store.clone()), counters)
}

fn store() -> MemoryStore<String> {
    let store = MemoryStore::new();
    store.insert(digest(KEY), "sandbox:one".to_owned());
    store.insert(digest(OTHER), "sandbox:two".to_owned());
    store
}

async fn connect(addr: std::net::SocketAddr, key: &str) -> common::Socket {
    let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", key)])
        .await
        .expect("101");
    assert!(next_text(&mut socket).await.starts_with("hello "));
    assert!(next_text(&mut socket).await.starts_with("protocol "));
    socket
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < common::STEP,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn pausing_a_record_closes_its_open_sockets_with_4001_while_clients_send() {
    let store = store();
    let counters = Counters::default();
    let addr = spawn(store_app(&store, &counters)).await;
    let mut paused = connect(addr, KEY).await;
    let mut other = connect(addr, OTHER).await;

    // The client keeps sending while the record is paused.
    paused.send(Message::text("before")).await.expect("send");
    assert_eq!(next_text(&mut paused).await, "before");
    let (mut sink, mut stream) = paused.split();
    let writer = tokio::spawn(async move {
        for i in 0.. {
            if sink.send(Message::text(format!("tick {i}"))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let paused_at = Instant::now();
    assert!(store.set_active(&digest(KEY), false));
    let (code, reason) = loop {
        match tokio::time::timeout(common::STEP, stream.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Text(text))) => assert!(text.starts_with("tick "), "{text}"),
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            other => panic!("expected a Close frame, got {other:?}"),
        }
    };
    let latency = paused_at.elapsed();
    writer.abort();
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
    // The close is event-driven (no timer between the pause and the Close): the bound only catches
    // a close that waited for something else, and is far above scheduling delay on a busy machine.
    assert!(latency < Duration::from_secs(5), "closed after {latency:?}");
    // Nothing after the decision: the client saw no "late" frame, and the handler's late send failed.
    wait_for("the handler to finish", || {
        counters.handlers_done.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(counters.late_sends_delivered.load(Ordering::SeqCst), 0);

    // Other sandboxes are untouched; the paused key is refused at the handshake (401).
    other.send(Message::text("still here")).await.expect("send");
    assert_eq!(next_text(&mut other).await, "still here");
    let reconnect = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)]).await;
    let reply = reconnect.expect_err("401");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"axum-keyguard\", error=\"invalid_token\"")
    );
    let unknown = raw_http(
        addr,
        &get_head(addr, "/api", &[("X-Session-API-Key", b"never-issued")]),
    )
    .await;
    let paused_rest = raw_http(
        addr,
        &get_head(addr, "/api", &[("X-Session-API-Key", KEY.as_bytes())]),
    )
    .await;
    assert_eq!(
        paused_rest.outcome(),
        unknown.outcome(),
        "a paused key looks exactly like an unknown one"
    );

    // Resumed: the key works again for new connections.
    assert!(store.set_active(&digest(KEY), true));
    let mut resumed = connect(addr, KEY).await;
    resumed.send(Message::text("back")).await.expect("send");
    assert_eq!(next_text(&mut resumed).await, "back");
    // Revoking removes the key for good and closes its sockets.
    assert!(store.revoke(&digest(KEY)));
    let (_, code, reason) = until_close(&mut resumed).await;
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
}

/// Pauses the record right after the lookup read it as active: the handshake succeeds, and the
/// socket must still be closed.
struct PausesDuringHandshake(MemoryStore<String>);

impl SessionStore for PausesDuringHandshake {
    type Record = String;

    async fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        let session = self.0.lookup(key).await;
        self.0.set_active(key, false);
        session
    }
}

#[tokio::test]
async fn a_record_paused_during_the_handshake_still_gets_its_socket_closed() {
    let counters = Counters::default();
    let addr = spawn(app(
        Guard::builder(),
        SessionKeys::new(PausesDuringHandshake(store())),
        &counters,
    ))
    .await;
    let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)])
        .await
        .expect("101: the handshake saw it active");
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
}

/// A store whose every lookup fails, or stalls.
#[derive(Clone)]
struct Broken {
    stall: bool,
    calls: Arc<AtomicUsize>,
}

impl SessionStore for Broken {
    type Record = String;

    async fn lookup(
        &self,
        _key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.stall {
            std::future::pending::<()>().await;
        }
        Err(StoreError::new("connection refused"))
    }
}

#[tokio::test]
async fn store_errors_and_timeouts_are_503_on_rest_and_handshakes() {
    for stall in [false, true] {
        let counters = Counters::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let sessions = SessionKeys::new(Broken {
            stall,
            calls: calls.clone(),
        })
        .with_timeout(Duration::from_millis(100));
        let addr = spawn(app(Guard::builder(), sessions, &counters)).await;
        let started = Instant::now();
        let rest = raw_http(
            addr,
            &get_head(addr, "/api", &[("X-Session-API-Key", KEY.as_bytes())]),
        )
        .await;
        assert_eq!(rest.status, 503, "stall={stall}");
        assert_eq!(rest.header("retry-after").as_deref(), Some("5"));
        assert_eq!(rest.body_text(), "service unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered within the timeout"
        );
        let ws = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)]).await;
        assert_eq!(ws.expect_err("503").status, 503);
        // Failures are not cached: each request asks again.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

/// A store that is slow, counts its calls, and hands out a revocation signal the test controls.
#[derive(Clone)]
struct Controlled {
    calls: Arc<AtomicUsize>,
    revoker: Revoker,
}

impl SessionStore for Controlled {
    type Record = String;

    async fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok((*key == digest(KEY)).then(|| {
            KeyRecord::active("sandbox:one".to_owned()).with_revocation(self.revoker.subscribe())
        }))
    }
}

/// A store whose lookups wait at a gate the test opens, counting the calls that reach it.
#[derive(Clone)]
struct Gated {
    calls: Arc<AtomicUsize>,
    open: tokio::sync::watch::Receiver<bool>,
}

impl SessionStore for Gated {
    type Record = String;

    async fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        Ok((*key == digest(KEY)).then(|| KeyRecord::active("sandbox:one".to_owned())))
    }
}

#[tokio::test]
async fn concurrent_lookups_of_one_key_share_one_store_call() {
    // No timing in this test: the store's lookup is held at a gate until all 20 requests have
    // reached the guard. The runtime is single-threaded, so a request counted by the outer
    // middleware has already taken the guard's first poll, which joins (or starts) the lookup.
    let calls = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let (gate, open) = tokio::sync::watch::channel(false);
    let store = Gated {
        calls: calls.clone(),
        open,
    };
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store))
        .build()
        .expect("guard");
    let counted = arrived.clone();
    let app = Router::new()
        .route(
            "/api",
            get(|Authenticated(who): Authenticated<String>| async move { who }),
        )
        .route_layer(guard.layer())
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                counted.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ));
    let addr = spawn(app).await;
    let requests = (0..20).map(|_| {
        tokio::spawn(async move {
            raw_http(
                addr,
                &get_head(addr, "/api", &[("X-Session-API-Key", KEY.as_bytes())]),
            )
            .await
            .status
        })
    });
    let requests: Vec<_> = requests.collect();
    wait_for("20 requests at the guard", || {
        arrived.load(Ordering::SeqCst) == 20
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one lookup for 20 waiters");
    gate.send_replace(true);
    for request in requests {
        assert_eq!(request.await.expect("request task"), 200);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "20 concurrent requests, one store call"
    );
    raw_http(
        addr,
        &get_head(addr, "/api", &[("X-Session-API-Key", KEY.as_bytes())]),
    )
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "results are not cached afterwards"
    );
}

// Paused time: the grace and the sleeps around it are the runtime's clock, not the machine's, so
// a loaded machine cannot stretch the 100 ms outage past the 300 ms grace. The sockets are
// in-process loopback, whose bytes are readable before the runtime next idles and advances time.
#[tokio::test(start_paused = true)]
async fn an_unavailable_store_closes_open_sockets_with_1011_after_the_grace_period() {
    let counters = Counters::default();
    let revoker = Revoker::new();
    let store = Controlled {
        calls: Arc::default(),
        revoker: revoker.clone(),
    };
    let builder = Guard::builder().with_unavailable_grace(Duration::from_millis(300));
    let addr = spawn(app(builder, SessionKeys::new(store), &counters)).await;

    // Unavailable, then back within the grace: the socket stays open.
    let mut socket = connect(addr, KEY).await;
    revoker.set(LeaseStatus::Unavailable);
    tokio::time::sleep(Duration::from_millis(100)).await;
    revoker.set(LeaseStatus::Active);
    tokio::time::sleep(Duration::from_millis(400)).await;
    socket.send(Message::text("alive")).await.expect("send");
    assert_eq!(next_text(&mut socket).await, "alive");

    // Unavailable for longer than the grace: 1011.
    let started = tokio::time::Instant::now();
    revoker.set(LeaseStatus::Unavailable);
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!(
        (code, reason.as_str()),
        (1011, "authentication unavailable")
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited <= Duration::from_millis(600),
        "closed {waited:?} after the outage began: grace 300 ms, then at most the 300 ms close timeout"
    );
}

#[cfg(feature = "jwt")]
#[tokio::test]
async fn an_expiring_jwt_closes_its_socket_with_4001_at_expiry() {
    use axum_keyguard::{Claims, Jwt, JwtAlgorithm, JwtKey, JwtKeyring};
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [7u8; 32]).expect("key")])
        .expect("keyring");
    let jwt = Jwt::builder(keyring)
        .with_leeway(Duration::ZERO)
        .build()
        .expect("jwt");
    let mut claims = Claims::default();
    claims.sub = Some("alice".to_owned());
    // Expires at the next whole second, so within 1 s.
    let token = jwt.mint(&claims, Duration::from_secs(1)).expect("mint");
    let counters = Counters::default();
    let verifier = jwt.map_principal(|c: Claims| c.sub.unwrap_or_default());
    let addr = spawn(app(Guard::builder(), verifier, &counters)).await;
    let mut socket = ws_connect(
        addr,
        "/ws",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("101");
    assert_eq!(next_text(&mut socket).await, "hello alice via bearer");
    let connected = Instant::now();
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "credential expired"));
    // The token expires within 1 s of minting; the close waits on that instant, not on any later
    // event. The bound leaves a loaded machine seconds of slack and still catches a missed expiry
    // (the socket would then stay open until the test's own timeout).
    assert!(
        connected.elapsed() <= Duration::from_secs(5),
        "{:?}",
        connected.elapsed()
    );
    // Reconnecting with the expired token is refused at the handshake.
    let again = ws_connect(
        addr,
        "/ws",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(again.expect_err("401").status, 401);
}

fn keys() -> impl Verifier<Principal = String> {
    Keys::new([KEY])
        .expect("keys")
        .map_principal(|k| k.to_string())
}

#[tokio::test]
async fn first_message_auth_reads_the_auth_frame_and_hides_it_from_the_handler() {
    let counters = Counters::default();
    let builder = Guard::builder().with_first_message_auth(
        FirstMessage::new()
            .with_fields(["session_api_key", "token"])
            .with_timeout(Duration::from_millis(200)),
    );
    let addr = spawn(app(builder, keys(), &counters)).await;

    for field in ["session_api_key", "token"] {
        let mut socket = ws_connect(addr, "/ws", &[])
            .await
            .expect("101 without a credential");
        socket
            .send(Message::text(format!(
                r#"{{"type":"auth","{field}":"{KEY}"}}"#
            )))
            .await
            .expect("send");
        assert!(next_text(&mut socket).await.ends_with("via message"));
        next_text(&mut socket).await; // protocol
                                      // Later auth frames are dropped; frames with other keys pass.
        socket
            .send(Message::text(r#"{"type":"auth","session_api_key":"x"}"#))
            .await
            .expect("send");
        socket
            .send(Message::text(r#"{"type":"auth","role":"user"}"#))
            .await
            .expect("send");
        assert_eq!(
            next_text(&mut socket).await,
            r#"{"type":"auth","role":"user"}"#
        );
        socket
            .send(Message::text(r#"{"role":"user","content":"hi"}"#))
            .await
            .expect("send");
        assert_eq!(
            next_text(&mut socket).await,
            r#"{"role":"user","content":"hi"}"#
        );
    }

    let refused: [(&str, Message); 8] = [
        (
            "wrong key",
            Message::text(r#"{"type":"auth","session_api_key":"wrong"}"#),
        ),
        (
            "wrong type",
            Message::text(format!(r#"{{"type":"hello","session_api_key":"{KEY}"}}"#)),
        ),
        ("no credential field", Message::text(r#"{"type":"auth"}"#)),
        ("not JSON", Message::text("hello")),
        ("JSON array", Message::text(format!(r#"["auth","{KEY}"]"#))),
        ("JSON string", Message::text(format!(r#""{KEY}""#))),
        (
            "conflicting fields",
            Message::text(format!(
                r#"{{"type":"auth","session_api_key":"{KEY}","token":"other"}}"#
            )),
        ),
        (
            "binary frame",
            Message::binary(format!(r#"{{"type":"auth","session_api_key":"{KEY}"}}"#).into_bytes()),
        ),
    ];
    for (name, frame) in refused {
        let mut socket = ws_connect(addr, "/ws", &[]).await.expect("101");
        socket.send(frame).await.expect("send");
        let (texts, code, reason) = until_close(&mut socket).await;
        assert!(texts.is_empty(), "{name}: the handler never ran");
        assert_eq!(
            (code, reason.as_str()),
            (4001, "authentication failed"),
            "{name}"
        );
    }

    let mut silent = ws_connect(addr, "/ws", &[]).await.expect("101");
    let (texts, code, reason) = until_close(&mut silent).await;
    assert!(texts.is_empty());
    assert_eq!((code, reason.as_str()), (4001, "authentication timeout"));

    // A handshake that carries a bad credential is still refused before the upgrade.
    let bad = ws_connect(addr, "/ws", &[("X-Session-API-Key", "wrong")]).await;
    assert_eq!(bad.expect_err("401").status, 401);
    // A good handshake credential skips the auth frame.
    let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)])
        .await
        .expect("101");
    assert!(next_text(&mut socket).await.ends_with("via header"));
    assert_eq!(
        counters.handlers_started.load(Ordering::SeqCst),
        3,
        "only the three accepted sockets reached the handler"
    );
}

#[tokio::test]
async fn accept_then_close_shows_browsers_the_4001() {
    let counters = Counters::default();
    let addr = spawn(app(
        Guard::builder().accept_then_close(true),
        keys(),
        &counters,
    ))
    .await;
    for headers in [
        vec![("X-Session-API-Key", "wrong")],
        vec![],
        vec![("Authorization", "Bearer")],
    ] {
        let mut socket = ws_connect(addr, "/ws", &headers).await.expect("101");
        let (texts, code, reason) = until_close(&mut socket).await;
        assert!(texts.is_empty(), "{headers:?}");
        assert_eq!(
            (code, reason.as_str()),
            (4001, "authentication failed"),
            "{headers:?}"
        );
    }
    let origin = ws_connect(
        addr,
        "/ws",
        &[
            ("X-Session-API-Key", KEY),
            ("Origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(
        origin.expect_err("403").status,
        403,
        "origin refusals stay HTTP"
    );
    let rest = raw_http(
        addr,
        &get_head(addr, "/api", &[("X-Session-API-Key", b"wrong")]),
    )
    .await;
    assert_eq!(rest.status, 401, "REST is unaffected");
    connect(addr, KEY).await;
}

fn subprotocol_token(key: &str) -> String {
    format!(
        "{DEFAULT_SUBPROTOCOL_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(key)
    )
}

#[tokio::test]
async fn subprotocol_credentials_follow_the_kubernetes_convention() {
    let counters = Counters::default();
    let builder = Guard::builder().add_source(Source::subprotocol());
    let addr = spawn(app(builder, keys(), &counters)).await;
    let token = subprotocol_token(KEY);

    let offer = format!("{token}, agent.v1");
    let url = format!("ws://{addr}/ws");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offer.parse().expect("value"));
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("101");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "agent.v1",
        "the token entry is never echoed"
    );
    assert!(next_text(&mut socket).await.ends_with("via subprotocol"));
    assert_eq!(next_text(&mut socket).await, "protocol agent.v1");

    // The client's order decides: it offers b before a, the server lists a before b.
    let mut socket = ws_connect(
        addr,
        "/ws",
        &[("Sec-WebSocket-Protocol", &format!("{token}, b, a"))],
    )
    .await
    .expect("101");
    next_text(&mut socket).await;
    assert_eq!(next_text(&mut socket).await, "protocol b");

    for (name, offer) in [
        ("token alone", token.clone()),
        ("two tokens", format!("{token}, {token}, agent.v1")),
        ("padded", format!("{}=, agent.v1", subprotocol_token("ab"))),
        (
            "standard alphabet",
            format!("{DEFAULT_SUBPROTOCOL_PREFIX}a+b/, agent.v1"),
        ),
    ] {
        let mut head_headers = UPGRADE_HEADERS.to_vec();
        head_headers.push(("Sec-WebSocket-Protocol", offer.as_bytes()));
        let reply = raw_http(addr, &get_head(addr, "/ws", &head_headers)).await;
        assert_eq!(reply.status, 400, "{name}");
    }
    let wrong = ws_connect(
        addr,
        "/ws",
        &[(
            "Sec-WebSocket-Protocol",
            &format!("{}, agent.v1", subprotocol_token("wrong")),
        )],
    )
    .await;
    assert_eq!(wrong.expect_err("401").status, 401);
    // Not on REST.
    let rest = raw_http(
        addr,
        &get_head(
            addr,
            "/api",
            &[(
                "Sec-WebSocket-Protocol",
                format!("{token}, agent.v1").as_bytes(),
            )],
        ),
    )
    .await;
    assert_eq!(rest.status, 401);
}

#[tokio::test]
async fn a_client_that_never_answers_the_close_is_dropped_after_the_close_timeout() {
    let store = store();
    let counters = Counters::default();
    let addr = spawn(store_app(&store, &counters)).await;
    // A raw client: it completes the handshake, then never reads or answers a Close.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = get_head(
        addr,
        "/ws",
        &[
            &UPGRADE_HEADERS[..],
            &[("X-Session-API-Key", KEY.as_bytes())],
        ]
        .concat(),
    );
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("protocol ") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    let paused = Instant::now();
    store.set_active(&digest(KEY), false);
    let mut after = Vec::new();
    let closed = tokio::time::timeout(common::STEP, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => after.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server dropped the connection");
    let elapsed = paused.elapsed();
    assert!(
        // Not before the close timeout (300 ms); the upper bound is generous for a busy machine.
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    // The Close frame it sent: opcode 0x8, code 4001.
    let close = after
        .windows(4)
        .any(|w| w[0] == 0x88 && u16::from_be_bytes([w[2], w[3]]) == 4001);
    assert!(close, "a Close 4001 frame was sent: {after:?}");
    wait_for("the handler to be released", || {
        counters.handlers_done.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn the_handler_never_sees_the_subprotocol_token() {
    async fn seen(headers: http::HeaderMap, ws: GuardedUpgrade<String>) -> Response {
        let offered = headers
            .get_all("sec-websocket-protocol")
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
            .collect::<Vec<_>>()
            .join(" | ");
        ws.protocols(["agent.v1"])
            .on_upgrade(move |socket| async move {
                let _ = socket.send(AxumMessage::text(offered)).await;
            })
    }
    let guard = Guard::builder()
        .with_verifier(keys())
        .add_source(Source::subprotocol())
        .build()
        .expect("guard");
    let app = Router::new()
        .route("/ws", any(seen))
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    let offer = format!("{}, agent.v1", subprotocol_token(KEY));
    let mut socket = ws_connect(addr, "/ws", &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .expect("101");
    assert_eq!(
        next_text(&mut socket).await,
        "agent.v1",
        "only the application protocol is left"
    );
}

/// Dropped when the handler's future is dropped.
struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_handler_that_never_touches_its_socket_is_still_closed_and_released_on_revocation() {
    let store = store();
    let released = Arc::new(AtomicUsize::new(0));
    let (push, _) = tokio::sync::broadcast::channel::<&'static str>(4);
    let pushes = push.clone();
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store.clone()))
        .with_close_timeout(Duration::from_millis(300))
        .build()
        .expect("guard");
    let handler_released = released.clone();
    let app = Router::new()
        .route(
            "/ws",
            any(move |ws: GuardedUpgrade<String>| {
                let (released, mut pushes) = (handler_released.clone(), pushes.subscribe());
                async move {
                    ws.on_upgrade(move |socket| async move {
                        let _guard = OnDrop(released);
                        let _ = socket.send(AxumMessage::text("hello")).await;
                        // Push-only: waits on the application's own channel, never on `recv`.
                        while let Ok(text) = pushes.recv().await {
                            if socket.send(AxumMessage::text(text)).await.is_err() {
                                break;
                            }
                        }
                        std::future::pending::<()>().await;
                    })
                }
            }),
        )
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)])
        .await
        .expect("101");
    assert_eq!(next_text(&mut socket).await, "hello");
    push.send("pushed").expect("a subscriber");
    assert_eq!(next_text(&mut socket).await, "pushed");

    let revoked_at = Instant::now();
    assert!(store.revoke(&digest(KEY)));
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
    // Event-driven, as above: a generous bound that only catches a close waiting on something else.
    assert!(revoked_at.elapsed() < Duration::from_secs(5));
    // The handler never returns by itself: it is dropped after the close.
    wait_for("the handler to be dropped", || {
        released.load(Ordering::SeqCst) == 1
    })
    .await;
    // Pushes after the decision go nowhere: read to the end of the connection (the server
    // closes it after the handshake), so a late frame would be seen however late it came.
    let _ = push.send("late");
    let rest = tokio::time::timeout(common::STEP, async {
        let mut rest = Vec::new();
        while let Some(Ok(message)) = socket.next().await {
            rest.push(message);
        }
        rest
    })
    .await
    .expect("the server ends the connection");
    assert!(
        !rest
            .iter()
            .any(|message| matches!(message, Message::Text(_))),
        "no frame after the Close: {rest:?}"
    );
}

/// Panics on its first call at once, on its second after waiting, and answers from then on.
#[derive(Clone, Default)]
struct Panicky {
    calls: Arc<AtomicUsize>,
}

impl SessionStore for Panicky {
    type Record = String;

    async fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        match self.calls.fetch_add(1, Ordering::SeqCst) {
            0 => panic!("store bug, before any wait"),
            1 => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("store bug, after a wait")
            }
            _ => Ok((*key == digest(KEY)).then(|| KeyRecord::active("sandbox:one".to_owned()))),
        }
    }
}

#[tokio::test]
async fn a_panicking_store_is_503_and_does_not_block_its_key_afterwards() {
    let counters = Counters::default();
    let store = Panicky::default();
    let addr = spawn(app(
        Guard::builder(),
        SessionKeys::new(store.clone()),
        &counters,
    ))
    .await;
    let status = || async {
        raw_http(
            addr,
            &get_head(addr, "/api", &[("X-Session-API-Key", KEY.as_bytes())]),
        )
        .await
        .status
    };
    assert_eq!(status().await, 503, "panic on the first poll");
    assert_eq!(status().await, 503, "panic inside the lookup task");
    assert_eq!(
        status().await,
        200,
        "the key is not stuck behind a dead lookup"
    );
    assert_eq!(store.calls.load(Ordering::SeqCst), 3);
}

/// Answers at once (`lookup_now`), except that its first answer panics.
#[derive(Clone, Default)]
struct PanicsNow {
    calls: Arc<AtomicUsize>,
}

impl SessionStore for PanicsNow {
    type Record = String;

    async fn lookup(
        &self,
        _key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        unreachable!("this store always answers at once")
    }

    fn lookup_now(
        &self,
        key: &CredentialDigest,
    ) -> Option<Result<Option<KeyRecord<String>>, StoreError>> {
        assert_ne!(
            self.calls.fetch_add(1, Ordering::SeqCst),
            0,
            "store bug in the synchronous answer"
        );
        Some(Ok(
            (*key == digest(KEY)).then(|| KeyRecord::active("sandbox:one".to_owned()))
        ))
    }
}

#[tokio::test]
async fn a_store_that_answers_at_once_is_used_at_once_and_a_panic_there_is_503() {
    let counters = Counters::default();
    let store = PanicsNow::default();
    let addr = spawn(app(
        Guard::builder(),
        SessionKeys::new(store.clone()),
        &counters,
    ))
    .await;
    let status = |key: &'static str| async move {
        raw_http(
            addr,
            &get_head(addr, "/api", &[("X-Session-API-Key", key.as_bytes())]),
        )
        .await
        .status
    };
    assert_eq!(status(KEY).await, 503, "a panicking answer fails closed");
    assert_eq!(status(KEY).await, 200);
    assert_eq!(status("an-unknown-key-0123456789").await, 401);
    // `lookup` (which would panic with `unreachable!`) never ran.
    assert_eq!(store.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn sends_from_several_tasks_all_arrive_when_the_client_reads_late() {
    const TASKS: usize = 4;
    const FRAMES: usize = 50;
    const SIZE: usize = 64 * 1024;
    let guard = Guard::builder()
        .with_verifier(keys())
        .build()
        .expect("guard");
    let app = Router::new()
        .route(
            "/ws",
            any(|ws: GuardedUpgrade<String>| async move {
                ws.on_upgrade(|socket| async move {
                    let socket = Arc::new(socket);
                    let senders: Vec<_> = (0..TASKS)
                        .map(|task| {
                            let socket = socket.clone();
                            tokio::spawn(async move {
                                for frame in 0..FRAMES {
                                    let mut payload = vec![b'.'; SIZE];
                                    payload[..2].copy_from_slice(&[task as u8, frame as u8]);
                                    socket
                                        .send(AxumMessage::binary(payload))
                                        .await
                                        .expect("send");
                                }
                            })
                        })
                        .collect();
                    for sender in senders {
                        sender.await.expect("sender");
                    }
                    let _ = socket.send(AxumMessage::text("done")).await;
                })
            }),
        )
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)])
        .await
        .expect("101");
    // Let the server fill every buffer on the way before reading anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = [0usize; TASKS];
    let received = tokio::time::timeout(common::STEP * 3, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(payload))) => {
                    assert_eq!(payload.len(), SIZE);
                    let (task, frame) = (usize::from(payload[0]), usize::from(payload[1]));
                    assert_eq!(frame, next[task], "task {task}'s frames stay in order");
                    next[task] += 1;
                }
                Some(Ok(Message::Text(text))) => {
                    assert_eq!(text.as_str(), "done");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(received.is_ok(), "no sender stalled: got {next:?}");
    assert_eq!(next, [FRAMES; TASKS]);
}

#[tokio::test]
async fn a_handler_that_returns_or_closes_ends_the_socket_with_its_code() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_close_timeout(Duration::from_millis(300))
        .build()
        .expect("guard");
    let app = Router::new()
        .route(
            "/ws",
            any(|ws: GuardedUpgrade<String>| async move {
                ws.on_upgrade(|mut socket| async move {
                    match socket.recv().await {
                        Some(AxumMessage::Text(text)) if text.as_str() == "bye" => {
                            socket.close(4000, "bye now").await;
                        }
                        // "return", or anything else: the handler just returns.
                        _ => {}
                    }
                })
            }),
        )
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    for (say, code, reason) in [("bye", 4000, "bye now"), ("return", 1000, "")] {
        let mut socket = ws_connect(addr, "/ws", &[("X-Session-API-Key", KEY)])
            .await
            .expect("101");
        socket.send(Message::text(say)).await.expect("send");
        let (_, got_code, got_reason) = until_close(&mut socket).await;
        assert_eq!(
            (got_code, got_reason.as_str()),
            (code, reason),
            "after {say:?}"
        );
        // The client's reply completes the handshake; then the server lets the connection go.
        let end = tokio::time::timeout(common::STEP, async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
        assert!(end.is_ok(), "the connection ended after {say:?}");
    }
}

/// What the two halves of a split socket saw, in order.
#[derive(Clone, Default)]
struct Halves(Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Halves {
    fn push(&self, event: &'static str) {
        self.0.lock().expect("events").push(event);
    }

    fn seen(&self) -> Vec<&'static str> {
        self.0.lock().expect("events").clone()
    }
}

/// Splits the socket into a reader task and a writer task: the reader forwards every frame to
/// the writer, which echoes it; once the reader's stream ends, the writer tries one more send.
async fn split_echo(Extension(halves): Extension<Halves>, ws: GuardedUpgrade<String>) -> Response {
    ws.on_upgrade(move |socket| async move {
        let (mut writer, mut reader) = socket.split();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AxumMessage>(16);
        let reader_halves = halves.clone();
        let read = tokio::spawn(async move {
            // Waits here, in a task of its own, when the lease ends.
            while let Some(message) = reader.next().await {
                if tx.send(message).await.is_err() {
                    break;
                }
            }
            reader_halves.push("reader ended");
        });
        let write = tokio::spawn(async move {
            if writer.send(AxumMessage::text("hello split")).await.is_err() {
                return;
            }
            while let Some(message) = rx.recv().await {
                if writer.send(message).await.is_err() {
                    halves.push("writer refused");
                    return;
                }
            }
            match writer.send(AxumMessage::text("late")).await {
                Err(axum_keyguard::ws::SocketClosed) => halves.push("writer refused"),
                Ok(()) => halves.push("late send delivered"),
            }
        });
        let _ = tokio::join!(read, write);
    })
}

#[tokio::test]
async fn a_split_socket_is_closed_with_4001_and_both_halves_end_on_revocation() {
    let store = store();
    let halves = Halves::default();
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store.clone()))
        .with_close_timeout(Duration::from_millis(300))
        .build()
        .expect("guard");
    let addr = spawn(
        Router::new()
            .route("/split", any(split_echo))
            .route_layer(guard.layer())
            .layer(Extension(halves.clone())),
    )
    .await;
    let mut socket = ws_connect(addr, "/split", &[("X-Session-API-Key", KEY)])
        .await
        .expect("101");
    assert_eq!(next_text(&mut socket).await, "hello split");
    for text in ["one", "two"] {
        socket.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(&mut socket).await, text);
    }
    // Both halves wait in their own tasks (the reader on the stream, the writer on its channel)
    // when the key is revoked.
    assert!(store.revoke(&digest(KEY)));
    let (texts, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
    assert!(texts.is_empty(), "no frame after the revocation: {texts:?}");
    // Event-driven: both halves are woken by the lease's end, not by a timer (generous bound
    // for a loaded machine).
    wait_for("both halves to end", || halves.seen().len() == 2).await;
    assert_eq!(halves.seen(), ["reader ended", "writer refused"]);
}
