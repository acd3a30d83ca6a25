//! The failure limiter over real loopback sockets: what counts (refused credentials) and what
//! does not (missing credentials, 403, 503), the 429 before any verifier or store work, on REST,
//! handshakes and first-message auth frames, peers told apart by address (127.0.0.1 and
//! 127.0.0.2: Linux routes all of 127/8 to the loopback interface), trusted proxies, and the
//! window on tokio's paused clock.

use super::common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Message as AxumMessage;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Extension, Router};
use axum_keyguard::ws::{FirstMessage, GuardedUpgrade};
use axum_keyguard::{
    AuthRejectionKind, Authenticated, ConfigErrorKind, Credential, CredentialDigest, Denial,
    FailureLimit, Guard, GuardBuilder, KeyRecord, Keys, MemoryStore, SessionKeys, SessionStore,
    StoreError, Verdict, Verifier,
};
use common::{
    get_head, next_text, raw_http_from, spawn, spawn_with_connect_info, until_close,
    ws_connect_from, Reply,
};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "limiter-valid-key-0123456789";
const WRONG: &str = "limiter-WRONG-S3CR3T-0001";
/// A credential the test verifier accepts but forbids (`403`).
const FORBIDDEN: &str = "limiter-forbidden-key-0001";

const ONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A window long enough that no budget leaks back during a test, however slow the machine.
const LONG: Duration = Duration::from_secs(3600);

/// Counts every credential that reaches it, then asks `inner`; [`FORBIDDEN`] is a `403`.
struct Counting<V> {
    inner: V,
    calls: Arc<AtomicUsize>,
}

impl<V: Verifier<Principal = String>> Verifier for Counting<V> {
    type Principal = String;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if credential.expose() == FORBIDDEN {
            return Verdict::ready(Err(Denial::forbidden()));
        }
        self.inner.verify(credential)
    }
}

/// A session store that counts its lookups and fails while `down` is set.
#[derive(Clone)]
struct Store {
    inner: MemoryStore<String>,
    lookups: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Store {
    fn new() -> Self {
        let inner = MemoryStore::new();
        inner.insert(
            CredentialDigest::of(KEY.as_bytes()),
            "sandbox:one".to_owned(),
        );
        Self {
            inner,
            lookups: Arc::default(),
            down: Arc::default(),
        }
    }
}

impl SessionStore for Store {
    type Record = String;

    async fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> Result<Option<KeyRecord<String>>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::new("connection refused"));
        }
        self.inner.lookup(key).await
    }
}

/// The principal of [`KEY`].
fn subject() -> String {
    axum_keyguard::KeyId::of(&CredentialDigest::of(KEY.as_bytes())).to_string()
}

fn keys() -> impl Verifier<Principal = String> {
    Keys::new([KEY])
        .expect("keys")
        .map_principal(|k| k.to_string())
}

/// How many WebSocket handlers started.
#[derive(Clone, Default)]
struct Handlers(Arc<AtomicUsize>);

impl Handlers {
    fn started(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn events(Extension(handlers): Extension<Handlers>, ws: GuardedUpgrade<String>) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        handlers.0.fetch_add(1, Ordering::SeqCst);
        let hello = format!("hello {}", socket.principal());
        if socket.send(AxumMessage::text(hello)).await.is_err() {
            return;
        }
        while let Some(message) = socket.recv().await {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    })
}

fn app(guard: Guard<String>, handlers: &Handlers) -> Router {
    Router::new()
        .route(
            "/api",
            get(|Authenticated(who): Authenticated<String>| async move { who }),
        )
        .route("/ws", any(events))
        .route_layer(guard.layer())
        .layer(Extension(handlers.clone()))
}

/// A guard with `limit` over [`LONG`], a verifier that counts its calls, served with connect info.
async fn serve(
    builder: GuardBuilder<()>,
    limit: FailureLimit,
    verifier: impl Verifier<Principal = String>,
) -> (SocketAddr, Arc<AtomicUsize>, Handlers) {
    let calls = Arc::new(AtomicUsize::new(0));
    let guard = builder
        .with_verifier(Counting {
            inner: verifier,
            calls: calls.clone(),
        })
        .with_failure_limit(limit)
        .with_close_timeout(Duration::from_millis(500))
        .build()
        .expect("guard");
    let handlers = Handlers::default();
    let addr = spawn_with_connect_info(app(guard, &handlers)).await;
    (addr, calls, handlers)
}

async fn get_from(from: IpAddr, addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    raw_http_from(from, addr, &get_head(addr, "/api", &headers)).await
}

async fn with_key(from: IpAddr, addr: SocketAddr, key: &str) -> Reply {
    get_from(from, addr, &[("X-Session-API-Key", key)]).await
}

/// A `429` as the contract has it: `Retry-After` in whole seconds within `max`, no challenge, the
/// generic body, and no credential anywhere in it.
fn assert_limited(reply: &Reply, max: u64) {
    assert_eq!(reply.status, 429, "{reply:?}");
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=max).contains(&retry), "Retry-After {retry}");
    assert_eq!(reply.header("www-authenticate"), None);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(reply.body_text(), "too many requests");
    let text = format!("{reply:?}");
    assert!(!text.contains("S3CR3T") && !text.contains(KEY), "{text}");
}

#[tokio::test]
async fn the_n_plus_first_refused_credential_from_a_peer_gets_429_and_so_does_a_valid_one() {
    let (addr, calls, _) = serve(Guard::builder(), FailureLimit::new(3, LONG), keys()).await;
    // Three refusals: two wrong keys (401) and a malformed one (400) all count.
    assert_eq!(with_key(ONE, addr, WRONG).await.status, 401);
    let malformed = get_from(ONE, addr, &[("Authorization", "Bearer:S3CR3T")]).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(with_key(ONE, addr, WRONG).await.status, 401);
    let verified = calls.load(Ordering::SeqCst);
    assert_eq!(verified, 2, "the malformed one never reached the verifier");

    // The fourth: 429, whatever it carries. The budget earns one back every 3600 / 3 s.
    assert_limited(&with_key(ONE, addr, WRONG).await, 1200);
    assert_limited(&with_key(ONE, addr, KEY).await, 1200);
    assert_limited(&get_from(ONE, addr, &[]).await, 1200);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        verified,
        "a limited request reaches no verifier"
    );

    // Another client address is a peer of its own.
    let other = with_key(TWO, addr, KEY).await;
    assert_eq!((other.status, other.body_text()), (200, subject()));
    assert_eq!(with_key(TWO, addr, WRONG).await.status, 401);
    assert_eq!(with_key(TWO, addr, KEY).await.status, 200);
}

#[tokio::test]
async fn missing_credentials_forbidden_origins_and_store_outages_are_never_counted() {
    let store = Store::new();
    let (addr, _, _) = serve(
        Guard::builder(),
        FailureLimit::new(1, LONG),
        SessionKeys::new(store.clone()).with_timeout(Duration::from_secs(5)),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(get_from(ONE, addr, &[]).await.status, 401);
    }
    // A cross-site handshake is refused before its (wrong) credential is read.
    for _ in 0..5 {
        let cross = ws_connect_from(
            ONE,
            addr,
            "/ws",
            &[
                ("X-Session-API-Key", WRONG),
                ("Origin", "https://evil.example"),
            ],
        )
        .await;
        assert_eq!(cross.expect_err("403").status, 403);
    }
    store.down.store(true, Ordering::SeqCst);
    for key in [KEY, WRONG, KEY] {
        let reply = with_key(ONE, addr, key).await;
        assert_eq!(
            reply.status, 503,
            "the outage is the store's, not the peer's"
        );
        assert_eq!(reply.header("retry-after").as_deref(), Some("5"));
    }
    store.down.store(false, Ordering::SeqCst);
    // Nothing counted so far: the whole budget (one) is left.
    assert_eq!(with_key(ONE, addr, KEY).await.status, 200);
    assert_eq!(with_key(ONE, addr, WRONG).await.status, 401);
    assert_limited(&with_key(ONE, addr, KEY).await, 3600);
}

#[tokio::test]
async fn a_forbidden_credential_is_not_counted() {
    let (addr, _, _) = serve(Guard::builder(), FailureLimit::new(1, LONG), keys()).await;
    for _ in 0..5 {
        assert_eq!(with_key(ONE, addr, FORBIDDEN).await.status, 403);
    }
    assert_eq!(with_key(ONE, addr, WRONG).await.status, 401);
    assert_limited(&with_key(ONE, addr, FORBIDDEN).await, 3600);
}

#[tokio::test]
async fn a_limited_request_reaches_neither_the_verifier_nor_the_store() {
    let store = Store::new();
    let (addr, calls, handlers) = serve(
        Guard::builder(),
        FailureLimit::new(2, LONG),
        SessionKeys::new(store.clone()),
    )
    .await;
    assert_eq!(with_key(ONE, addr, WRONG).await.status, 401);
    assert_eq!(with_key(ONE, addr, WRONG).await.status, 401);
    assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for key in [KEY, WRONG, KEY] {
        assert_limited(&with_key(ONE, addr, key).await, 1800);
    }
    let ws = ws_connect_from(ONE, addr, "/ws", &[("X-Session-API-Key", KEY)]).await;
    assert_limited(&ws.expect_err("429"), 1800);
    assert_eq!(store.lookups.load(Ordering::SeqCst), 2, "no store lookup");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no verifier call");
    assert_eq!(handlers.started(), 0);
    // The other address still reaches both.
    assert_eq!(with_key(TWO, addr, KEY).await.status, 200);
    assert_eq!(store.lookups.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_upgrade_from_a_limited_peer_gets_429_no_101_and_no_handler() {
    for accept_then_close in [false, true] {
        let (addr, _, handlers) = serve(
            Guard::builder().accept_then_close(accept_then_close),
            FailureLimit::new(2, LONG),
            keys(),
        )
        .await;
        for _ in 0..2 {
            let refused = ws_connect_from(ONE, addr, "/ws", &[("X-Session-API-Key", WRONG)]).await;
            match refused {
                // Accept-then-close: 101, then 4001 (and the refusal counts).
                Ok(mut socket) => {
                    assert!(accept_then_close);
                    let (texts, code, _) = until_close(&mut socket).await;
                    assert_eq!((texts.len(), code), (0, 4001));
                }
                Err(reply) => {
                    assert!(!accept_then_close);
                    assert_eq!(reply.status, 401);
                }
            }
        }
        // Limited: a 429 to the handshake, even in accept-then-close mode (no 101 for it).
        let limited = ws_connect_from(ONE, addr, "/ws", &[("X-Session-API-Key", KEY)]).await;
        assert_limited(&limited.expect_err("429"), 1800);
        assert_eq!(
            handlers.started(),
            0,
            "accept_then_close={accept_then_close}"
        );

        let mut socket = ws_connect_from(TWO, addr, "/ws", &[("X-Session-API-Key", KEY)])
            .await
            .expect("the other address upgrades");
        assert_eq!(next_text(&mut socket).await, format!("hello {}", subject()));
        assert_eq!(handlers.started(), 1);
        socket.close(None).await.expect("close");
    }
}

#[tokio::test]
async fn refused_auth_frames_count_and_a_peer_limited_meanwhile_is_closed_with_1013() {
    let (addr, _, handlers) = serve(
        Guard::builder().with_first_message_auth(FirstMessage::new()),
        FailureLimit::new(2, LONG),
        keys(),
    )
    .await;
    // A socket that will authenticate late, opened while the peer still has its budget.
    let mut late = ws_connect_from(ONE, addr, "/ws", &[]).await.expect("101");

    let mut wrong = ws_connect_from(ONE, addr, "/ws", &[]).await.expect("101");
    let frame = format!(r#"{{"type":"auth","session_api_key":"{WRONG}"}}"#);
    wrong.send(Message::text(frame)).await.expect("send");
    assert_eq!(until_close(&mut wrong).await.1, 4001);
    let mut binary = ws_connect_from(ONE, addr, "/ws", &[]).await.expect("101");
    binary
        .send(Message::binary(KEY.as_bytes().to_vec()))
        .await
        .expect("send");
    assert_eq!(
        until_close(&mut binary).await.1,
        4001,
        "malformed: counts too"
    );

    // Two refused frames: a new handshake from the peer is refused before the upgrade...
    let refused = ws_connect_from(ONE, addr, "/ws", &[]).await;
    assert_limited(&refused.expect_err("429"), 1800);
    // ...and the socket that was already open is closed with 1013, its valid key unread.
    let frame = format!(r#"{{"type":"auth","session_api_key":"{KEY}"}}"#);
    late.send(Message::text(frame.clone())).await.expect("send");
    let (texts, code, reason) = until_close(&mut late).await;
    assert_eq!(
        (texts.len(), code, reason.as_str()),
        (0, 1013, "too many failed attempts")
    );
    assert_eq!(handlers.started(), 0);

    let mut other = ws_connect_from(TWO, addr, "/ws", &[]).await.expect("101");
    other.send(Message::text(frame)).await.expect("send");
    assert_eq!(next_text(&mut other).await, format!("hello {}", subject()));
    other.close(None).await.expect("close");
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    let limit = FailureLimit::new(1, LONG)
        .add_trusted_proxy("127.0.0.1")
        .expect("net");
    let (addr, _, _) = serve(Guard::builder(), limit, keys()).await;
    let via = |xff: &'static str, key: &'static str| {
        [("X-Forwarded-For", xff), ("X-Session-API-Key", key)]
    };
    // Through the trusted proxy (127.0.0.1), the client is the hop the proxy saw.
    assert_eq!(
        get_from(ONE, addr, &via("198.51.100.1", WRONG))
            .await
            .status,
        401
    );
    assert_limited(&get_from(ONE, addr, &via("198.51.100.1", KEY)).await, 3600);
    assert_eq!(
        get_from(ONE, addr, &via("198.51.100.2", KEY)).await.status,
        200
    );
    // Hops the client wrote itself (left of the proxy's) change nothing; trusted hops on the
    // right are skipped.
    assert_limited(
        &get_from(ONE, addr, &via("203.0.113.9, 198.51.100.1", KEY)).await,
        3600,
    );
    assert_limited(
        &get_from(ONE, addr, &via("198.51.100.1, 127.0.0.1", KEY)).await,
        3600,
    );
    // An untrusted peer's header is ignored: its failures are its own, whatever it claims.
    assert_eq!(
        get_from(TWO, addr, &via("203.0.113.1", WRONG)).await.status,
        401
    );
    assert_limited(&get_from(TWO, addr, &via("203.0.113.2", KEY)).await, 3600);
    assert_limited(
        &get_from(TWO, addr, &[("X-Session-API-Key", KEY)]).await,
        3600,
    );
}

/// Everything written to it, for the log assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn without_connect_info_a_guard_with_a_limit_fails_closed_with_500_and_one_error() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::ERROR)
        .with_ansi(false)
        .finish();
    // The test runtime has one thread: the server's tasks log to this subscriber too.
    let _default = tracing::subscriber::set_default(subscriber);
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_failure_limit(FailureLimit::new(1, LONG))
        .build()
        .expect("guard");
    let addr = spawn(app(guard, &Handlers::default())).await;
    for headers in [
        vec![("X-Session-API-Key", KEY)],
        vec![("X-Session-API-Key", WRONG)],
        vec![],
    ] {
        let reply = get_from(ONE, addr, &headers).await;
        assert_eq!(
            (reply.status, reply.body_text().as_str()),
            (500, "internal server error")
        );
    }
    let ws = ws_connect_from(ONE, addr, "/ws", &[("X-Session-API-Key", KEY)]).await;
    assert_eq!(ws.expect_err("500").status, 500);
    let text = String::from_utf8_lossy(&log.0.lock().expect("log")).into_owned();
    assert_eq!(
        text.matches("found no peer address").count(),
        1,
        "one error per guard:\n{text}"
    );
    assert!(!text.contains("S3CR3T") && !text.contains(KEY));
}

/// A request from `peer` with `key`, resolved by the guard directly (no socket: the clock is
/// paused).
async fn resolve(guard: &Guard<String>, peer: &str, key: &str) -> Result<(), AuthRejectionKind> {
    let (mut parts, ()) = http::Request::get("/api")
        .header("host", "localhost")
        .header("x-session-api-key", key)
        .body(())
        .expect("request")
        .into_parts();
    let peer: SocketAddr = peer.parse().expect("peer");
    parts.extensions.insert(ConnectInfo(peer));
    guard
        .resolve(&parts)
        .await
        .map(|_| ())
        .map_err(|rejection| rejection.kind())
}

#[tokio::test(start_paused = true)]
async fn the_budget_leaks_back_over_the_window() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_failure_limit(FailureLimit::new(2, Duration::from_secs(60)))
        .build()
        .expect("guard");
    let peer = "192.0.2.1:4000";
    let invalid = Err(AuthRejectionKind::InvalidCredential);
    let limited = Err(AuthRejectionKind::RateLimited);
    assert_eq!(resolve(&guard, peer, WRONG).await, invalid);
    assert_eq!(resolve(&guard, peer, WRONG).await, invalid);
    assert_eq!(resolve(&guard, peer, KEY).await, limited);
    // One failure leaks out every 30 s.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(resolve(&guard, peer, KEY).await, limited);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(resolve(&guard, peer, KEY).await, Ok(()));
    assert_eq!(resolve(&guard, peer, WRONG).await, invalid);
    assert_eq!(resolve(&guard, peer, KEY).await, limited);
    // A window after the last failure, the whole budget is back.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(resolve(&guard, peer, WRONG).await, invalid);
    assert_eq!(resolve(&guard, peer, WRONG).await, invalid);
    assert_eq!(resolve(&guard, peer, WRONG).await, limited);
    // IPv6 peers share their /64.
    assert_eq!(resolve(&guard, "[2001:db8:1:2::1]:1", WRONG).await, invalid);
    assert_eq!(
        resolve(&guard, "[2001:db8:1:2::ffff]:1", WRONG).await,
        invalid
    );
    assert_eq!(
        resolve(&guard, "[2001:db8:1:2::abcd]:1", KEY).await,
        limited
    );
    assert_eq!(resolve(&guard, "[2001:db8:1:3::1]:1", KEY).await, Ok(()));
}

#[tokio::test]
async fn a_valid_credential_resets_the_count_only_when_asked() {
    let build = |reset: bool| {
        Guard::builder()
            .with_verifier(keys())
            .with_failure_limit(FailureLimit::new(2, LONG).reset_on_success(reset))
            .build()
            .expect("guard")
    };
    let peer = "192.0.2.1:4000";
    let keeps = build(false);
    assert!(resolve(&keeps, peer, WRONG).await.is_err());
    assert_eq!(resolve(&keeps, peer, KEY).await, Ok(()));
    assert!(resolve(&keeps, peer, WRONG).await.is_err());
    assert_eq!(
        resolve(&keeps, peer, KEY).await,
        Err(AuthRejectionKind::RateLimited)
    );
    let resets = build(true);
    for _ in 0..5 {
        assert_eq!(
            resolve(&resets, peer, WRONG).await,
            Err(AuthRejectionKind::InvalidCredential)
        );
        assert_eq!(resolve(&resets, peer, KEY).await, Ok(()));
    }
}

#[test]
fn unsafe_or_meaningless_limits_are_configuration_errors() {
    let err = |builder: Result<Guard<String>, axum_keyguard::ConfigError>| {
        builder.expect_err("refused").kind()
    };
    let with = |limit: FailureLimit| {
        Guard::builder()
            .with_verifier(keys())
            .with_failure_limit(limit)
            .build()
    };
    assert_eq!(
        err(with(FailureLimit::new(0, LONG))),
        ConfigErrorKind::OutOfRange
    );
    assert_eq!(
        err(with(FailureLimit::new(1, Duration::ZERO))),
        ConfigErrorKind::OutOfRange
    );
    assert_eq!(
        err(with(FailureLimit::new(1, LONG).with_max_peers(0))),
        ConfigErrorKind::OutOfRange
    );
    let anonymous = Guard::builder()
        .with_anonymous("anonymous".to_owned())
        .with_failure_limit(FailureLimit::new(1, LONG))
        .build();
    assert_eq!(err(anonymous), ConfigErrorKind::NoVerifier);
    for bad in ["10.0.0.0/33", "localhost", "10.0.0.1/", "::1/129"] {
        let parsed = FailureLimit::new(1, LONG).add_trusted_proxy(bad);
        assert_eq!(
            parsed.expect_err(bad).kind(),
            ConfigErrorKind::InvalidAddress
        );
    }
    let debug = format!(
        "{:?}",
        with(
            FailureLimit::new(3, LONG)
                .add_trusted_proxy("10.0.0.0/8")
                .expect("net")
        )
        .expect("guard")
    );
    assert!(
        debug.contains("FailureLimit") && debug.contains("10.0.0.0/8"),
        "{debug}"
    );
}
