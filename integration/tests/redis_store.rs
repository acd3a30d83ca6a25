//! `RedisStore` with a real `redis-server` per test: two replicas (two routers, each with its own
//! store) over loopback with real WebSocket clients, a proxy that severs or black-holes one
//! replica, a frozen server, a server that restarts empty, expiry, and `redis-cli` as the control
//! plane.
//!
//! Timing: every store here probes every 100 ms and declares a gap after 600 ms of silence, and
//! lookups time out after 800 ms, so every wait is short; the bounds asserted are several times
//! larger (stated at each) because this runs on a loaded two-core machine, except the 1 s
//! revocation bound, which is the crate's contract.
#![cfg(feature = "redis")]

mod common;
mod redis_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::Message as AxumMessage;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{
    Authenticated, CredentialDigest, Guard, Keys, RedisHealth, RedisStore, SessionKeys, Verifier,
};
use common::{get_head, next_text, raw_http, spawn, until_close, ws_connect, Socket};
use futures_util::SinkExt;
use redis_support::{eventually, Mode, Proxy, RedisServer};

const CAPABILITY: &str = "capability-key-S3CR3T";
/// Long enough that no test except the grace test ever sees 1011.
const LONG_GRACE: Duration = Duration::from_secs(60);
/// Generous bound for a gap to be noticed or healed (probe timeout 600 ms, backoff ≤ 2 s).
const SETTLE: Duration = Duration::from_secs(10);

fn digest(key: &str) -> CredentialDigest {
    CredentialDigest::of(key.as_bytes())
}

async fn store(url: &str) -> RedisStore<String> {
    RedisStore::builder(url)
        .with_prefix("test:")
        .with_probe_interval(Duration::from_millis(100))
        .with_probe_timeout(Duration::from_millis(600))
        .with_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect")
}

async fn echo(ws: GuardedUpgrade<String>) -> Response {
    ws.on_upgrade(|mut socket| async move {
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

/// One replica: capability keys first, then the Redis store, as the reference server does.
async fn replica(store: &RedisStore<String>, grace: Duration) -> SocketAddr {
    let verifier = Keys::new([CAPABILITY])
        .expect("keys")
        .map_principal(|key| key.to_string())
        .or(SessionKeys::new(store.clone()).with_timeout(Duration::from_millis(800)));
    let guard = Guard::builder()
        .with_verifier(verifier)
        .with_unavailable_grace(grace)
        .with_close_timeout(Duration::from_millis(300))
        .build()
        .expect("guard");
    let app = Router::new()
        .route(
            "/api/whoami",
            get(|Authenticated(who): Authenticated<String>| async move { who }),
        )
        .route("/sockets/events", any(echo))
        .route_layer(guard.layer());
    spawn(app).await
}

async fn whoami(addr: SocketAddr, key: &str) -> common::Reply {
    let head = get_head(
        addr,
        "/api/whoami",
        &[("X-Session-API-Key", key.as_bytes())],
    );
    raw_http(addr, &head).await
}

async fn open(addr: SocketAddr, key: &str) -> Socket {
    let mut socket = ws_connect(addr, "/sockets/events", &[("X-Session-API-Key", key)])
        .await
        .expect("101");
    assert!(next_text(&mut socket).await.starts_with("hello "));
    socket
}

async fn still_open(socket: &mut Socket) {
    socket.send("ping".into()).await.expect("send");
    assert_eq!(next_text(socket).await, "ping");
}

async fn closes_with(socket: &mut Socket) -> (u16, String) {
    let (_, code, reason) = until_close(socket).await;
    (code, reason)
}

async fn wait_health(store: &RedisStore<String>, live: bool) {
    let what = if live { "live" } else { "in a gap" };
    eventually(SETTLE, what, || store.health().is_live() == live).await;
}

#[tokio::test]
async fn a_pause_on_one_replica_closes_sockets_on_both_with_4001_and_no_replica_caches() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (store(&redis.url()).await, store(&redis.url()).await);
    let (addr_a, addr_b) = (replica(&a, LONG_GRACE).await, replica(&b, LONG_GRACE).await);
    let key = "sandbox-key-S3CR3T-1";
    a.insert(digest(key), &"sandbox:1".to_owned())
        .await
        .expect("insert");
    let reply = whoami(addr_b, key).await;
    assert_eq!(
        (reply.status, reply.body_text().as_str()),
        (200, "sandbox:1")
    );
    let mut on_a = open(addr_a, key).await;
    let mut on_b = open(addr_b, key).await;

    let paused_at = Instant::now();
    assert!(b.set_active(&digest(key), false).await.expect("pause"));
    // No cache: right after the pause returned, the other replica already refuses the key.
    assert_eq!(whoami(addr_a, key).await.status, 401);
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(
            closes_with(socket).await,
            (4001, "credential revoked".to_owned())
        );
    }
    // The crate's contract (DESIGN §3.3): closed within 1 s of the revocation.
    assert!(
        paused_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        paused_at.elapsed()
    );

    assert!(a.set_active(&digest(key), true).await.expect("resume"));
    assert_eq!(whoami(addr_b, key).await.status, 200);
    let mut again = open(addr_b, key).await;
    assert!(a.revoke(&digest(key)).await.expect("delete"));
    assert_eq!(closes_with(&mut again).await.0, 4001);
    assert_eq!(whoami(addr_a, key).await.status, 401);
    assert!(!b.set_active(&digest(key), true).await.expect("resume"));
    assert!(!b.revoke(&digest(key)).await.expect("delete twice"));
    assert_eq!(whoami(addr_b, key).await.status, 401);
    assert_eq!(whoami(addr_b, "never-inserted").await.status, 401);
}

#[tokio::test]
async fn only_digests_reach_redis_and_debug_shows_no_password() {
    let Some(redis) = RedisServer::start_with_password(Some("P4SSW0RD-S3CR3T")).await else {
        return;
    };
    let store = store(&redis.url()).await;
    let key = "raw-sandbox-key-S3CR3T";
    store
        .insert(digest(key), &"sandbox:raw".to_owned())
        .await
        .expect("insert");
    let keys = redis.cli(&["--scan"]);
    let hex = digest(key).to_hex();
    assert!(keys.contains(&format!("test:rec:{hex}")), "{keys}");
    let dump = redis.cli(&["HGETALL", &format!("test:rec:{hex}")]);
    assert!(
        !keys.contains("S3CR3T") && !dump.contains("S3CR3T"),
        "{dump}"
    );
    let debug = format!("{store:?}");
    assert!(
        debug.contains("127.0.0.1") && !debug.contains("P4SSW0RD"),
        "{debug}"
    );
    assert!(!format!("{:?}", RedisStore::<String>::builder(redis.url())).contains("P4SSW0RD"));
}

#[tokio::test]
async fn connect_refuses_a_wrong_password_or_an_unreachable_server_without_showing_secrets() {
    let Some(redis) = RedisServer::start_with_password(Some("R1GHT-S3CR3T")).await else {
        return;
    };
    let wrong = format!("redis://user-S3CR3T:WR0NG-S3CR3T@127.0.0.1:{}", redis.port);
    let error = RedisStore::<String>::builder(&wrong)
        .with_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("wrong password");
    let text = format!("{error} {error:?}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("S3CR3T"), "{text}");

    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let started = Instant::now();
    let error = RedisStore::<String>::builder(format!("redis://:X-S3CR3T@{unused}"))
        .with_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect_err("nothing listens there");
    // Refused at once, or after the 500 ms timeout; 5 s is the loaded-machine bound.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!format!("{error} {error:?}").contains("S3CR3T"));
    let error = RedisStore::<String>::builder("not a url :S3CR3T@")
        .connect()
        .await
        .expect_err("bad url");
    assert!(!format!("{error} {error:?}").contains("S3CR3T"));
    let error = RedisStore::<String>::builder(redis.url())
        .with_probe_interval(Duration::ZERO)
        .connect()
        .await
        .expect_err("zero probe interval");
    assert!(error.to_string().contains("invalid configuration"));
}

#[tokio::test]
async fn many_sandboxes_with_many_sockets_one_revocation_touches_only_its_own() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (store(&redis.url()).await, store(&redis.url()).await);
    let addrs = [replica(&a, LONG_GRACE).await, replica(&b, LONG_GRACE).await];
    let keys: Vec<String> = (0..12).map(|n| format!("sandbox-key-{n}")).collect();
    for (n, key) in keys.iter().enumerate() {
        a.insert(digest(key), &format!("sandbox:{n}"))
            .await
            .expect("insert");
    }
    let mut sockets = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        for i in 0..6 {
            sockets.push((n, open(addrs[i % 2], key).await));
        }
    }
    assert_eq!(a.watched_keys() + b.watched_keys(), 24);
    assert!(b.revoke(&digest(&keys[5])).await.expect("revoke"));
    for (n, socket) in &mut sockets {
        if *n == 5 {
            assert_eq!(closes_with(socket).await.0, 4001);
        }
    }
    for (n, socket) in &mut sockets {
        if *n != 5 {
            still_open(socket).await;
        }
    }
    // The registry forgets a key once its sockets are gone.
    drop(sockets);
    eventually(SETTLE, "registries empty", || {
        a.watched_keys() + b.watched_keys() == 0
    })
    .await;
}

#[tokio::test]
async fn a_revocation_missed_while_severed_closes_right_after_the_gap() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let proxy = Proxy::start(redis.addr()).await;
    let (a, b) = (store(&proxy.url()).await, store(&redis.url()).await);
    let addr_a = replica(&a, LONG_GRACE).await;
    let (paused, kept) = ("sandbox-paused", "sandbox-kept");
    for key in [paused, kept] {
        b.insert(digest(key), &key.to_owned())
            .await
            .expect("insert");
    }
    let mut paused_socket = open(addr_a, paused).await;
    let mut kept_socket = open(addr_a, kept).await;

    proxy.set(Mode::Sever);
    wait_health(&a, false).await;
    let RedisHealth::Gap { since } = a.health() else {
        panic!("in a gap")
    };
    assert!(since <= SystemTime::now());
    // Published while replica A hears nothing.
    assert!(b.set_active(&digest(paused), false).await.expect("pause"));
    proxy.set(Mode::Forward);
    wait_health(&a, true).await;
    assert_eq!(
        closes_with(&mut paused_socket).await,
        (4001, "credential revoked".to_owned())
    );
    still_open(&mut kept_socket).await;
    let reread = a.last_reread().expect("re-read");
    assert_eq!((reread.keys(), reread.round_trips()), (2, 1));
    assert_eq!(whoami(addr_a, paused).await.status, 401);
    assert_eq!(whoami(addr_a, kept).await.status, 200);
}

#[tokio::test]
async fn a_silent_partition_is_caught_by_the_probe_and_healed_by_the_reread() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let proxy = Proxy::start(redis.addr()).await;
    let (a, b) = (store(&proxy.url()).await, store(&redis.url()).await);
    let addr_a = replica(&a, LONG_GRACE).await;
    let (paused, kept) = ("sandbox-paused", "sandbox-kept");
    for key in [paused, kept] {
        b.insert(digest(key), &key.to_owned())
            .await
            .expect("insert");
    }
    let mut paused_socket = open(addr_a, paused).await;
    let mut kept_socket = open(addr_a, kept).await;

    // The TCP connections stay up; nothing gets through. Only the probe can tell.
    proxy.set(Mode::BlackHole);
    wait_health(&a, false).await;
    assert!(b.set_active(&digest(paused), false).await.expect("pause"));
    // A lookup on the partitioned replica cannot answer: 503 with Retry-After, never 401.
    let started = Instant::now();
    let reply = whoami(addr_a, kept).await;
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").is_some());
    // The lookup timeout is 800 ms; 5 s is the loaded-machine bound.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        whoami(addr_a, CAPABILITY).await.status,
        200,
        "configuration keys still work"
    );
    proxy.set(Mode::Forward);
    wait_health(&a, true).await;
    assert_eq!(closes_with(&mut paused_socket).await.0, 4001);
    still_open(&mut kept_socket).await;
}

#[tokio::test]
async fn a_gap_longer_than_the_grace_closes_with_1011_and_a_short_one_closes_nothing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let proxy = Proxy::start(redis.addr()).await;
    let a = store(&proxy.url()).await;
    // Grace 3 s: a short gap (sever, noticed within ~0.7 s, healed at once) stays well inside it.
    let addr_a = replica(&a, Duration::from_secs(3)).await;
    let key = "sandbox-grace";
    a.insert(digest(key), &key.to_owned())
        .await
        .expect("insert");
    let mut socket = open(addr_a, key).await;

    proxy.set(Mode::Sever);
    wait_health(&a, false).await;
    proxy.set(Mode::Forward);
    wait_health(&a, true).await;
    still_open(&mut socket).await;

    proxy.set(Mode::Sever);
    let started = Instant::now();
    assert_eq!(
        closes_with(&mut socket).await,
        (1011, "authentication unavailable".to_owned())
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    proxy.set(Mode::Forward);
}

#[tokio::test]
async fn a_frozen_redis_gives_503_within_the_timeout_never_401() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = store(&redis.url()).await;
    let addr_a = replica(&a, LONG_GRACE).await;
    let key = "sandbox-frozen";
    a.insert(digest(key), &key.to_owned())
        .await
        .expect("insert");
    let mut socket = open(addr_a, key).await;

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let reply = whoami(addr_a, key).await;
        assert_eq!(reply.status, 503, "never 401 while the store cannot answer");
        assert!(reply.header("retry-after").is_some());
        // Lookup timeout 800 ms; 5 s is the loaded-machine bound.
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(whoami(addr_a, CAPABILITY).await.status, 200);
    wait_health(&a, false).await;
    redis.cont();
    wait_health(&a, true).await;
    // Errors were not cached: the key works again at once.
    assert_eq!(whoami(addr_a, key).await.status, 200);
    still_open(&mut socket).await;
}

#[tokio::test]
async fn redis_restarting_empty_means_401_and_open_sockets_close_4001() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let a = store(&redis.url()).await;
    let addr_a = replica(&a, LONG_GRACE).await;
    let key = "sandbox-restart";
    a.insert(digest(key), &key.to_owned())
        .await
        .expect("insert");
    let mut socket = open(addr_a, key).await;

    redis.restart_empty().await;
    assert_eq!(
        closes_with(&mut socket).await,
        (4001, "credential revoked".to_owned())
    );
    // The command connection reconnects on its own; until it has, lookups get 503.
    let started = Instant::now();
    loop {
        let status = whoami(addr_a, key).await.status;
        if status != 503 {
            assert_eq!(status, 401);
            break;
        }
        assert!(started.elapsed() < SETTLE, "still 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_expired_record_closes_its_sockets_and_redis_drops_it() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = store(&redis.url()).await;
    let addr_a = replica(&a, LONG_GRACE).await;
    let key = "sandbox-expiring";
    let expires_at = SystemTime::now() + Duration::from_millis(1500);
    a.insert_with_expiry(digest(key), &key.to_owned(), expires_at)
        .await
        .expect("insert");
    let ttl: i64 = redis
        .cli(&["PTTL", &format!("test:rec:{}", digest(key).to_hex())])
        .trim()
        .parse()
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= 1500, "{ttl}");
    let mut socket = open(addr_a, key).await;
    assert_eq!(
        closes_with(&mut socket).await,
        (4001, "credential expired".to_owned())
    );
    assert!(SystemTime::now() >= expires_at);
    assert_eq!(whoami(addr_a, key).await.status, 401);
    assert_eq!(
        redis
            .cli(&["EXISTS", &format!("test:rec:{}", digest(key).to_hex())])
            .trim(),
        "0"
    );
}

fn script(name: &str) -> String {
    format!(
        "{}/../src/verify/redis/lua/{name}.lua",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test]
async fn redis_cli_alone_pauses_resumes_and_revokes_on_every_replica() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (store(&redis.url()).await, store(&redis.url()).await);
    let (addr_a, addr_b) = (replica(&a, LONG_GRACE).await, replica(&b, LONG_GRACE).await);
    let key = "sandbox-cli";
    let hex = digest(key).to_hex();
    let record = format!("test:rec:{hex}");
    let cli = |name: &str, extra: &[&str]| {
        let script = script(name);
        let mut args = vec![
            "--eval",
            script.as_str(),
            record.as_str(),
            "test:version",
            ",",
            "test:events",
            hex.as_str(),
        ];
        args.extend_from_slice(extra);
        redis.cli(&args)
    };
    // Created by the control plane: the record is the JSON of the application's type.
    assert!(
        cli("insert", &["\"sandbox:cli\"", ""])
            .trim()
            .parse::<u64>()
            .expect("v")
            > 0
    );
    let reply = whoami(addr_a, key).await;
    assert_eq!(
        (reply.status, reply.body_text().as_str()),
        (200, "sandbox:cli")
    );
    let mut on_a = open(addr_a, key).await;
    let mut on_b = open(addr_b, key).await;
    cli("set_active", &["0"]);
    assert_eq!(closes_with(&mut on_a).await.0, 4001);
    assert_eq!(closes_with(&mut on_b).await.0, 4001);
    assert_eq!(whoami(addr_b, key).await.status, 401);
    cli("set_active", &["1"]);
    assert_eq!(whoami(addr_b, key).await.status, 200);
    let mut on_a = open(addr_a, key).await;
    cli("delete", &[]);
    assert_eq!(closes_with(&mut on_a).await.0, 4001);
    assert_eq!(whoami(addr_a, key).await.status, 401);
    assert_eq!(cli("delete", &[]).trim(), "0", "unknown now");
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_health_change_is_logged_and_no_log_shows_the_password() {
    const PASSWORD: &str = "Logged-S3CR3T";
    let Some(redis) = RedisServer::start_with_password(Some(PASSWORD)).await else {
        return;
    };
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // A current-thread test runtime: the store's task runs on this thread, under this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let proxy = Proxy::start(redis.addr()).await;
    let a = store(&proxy.url_with_password(PASSWORD)).await;
    let addr_a = replica(&a, LONG_GRACE).await;
    let key = "sandbox-logged";
    a.insert(digest(key), &key.to_owned())
        .await
        .expect("insert");
    let _socket = open(addr_a, key).await;
    proxy.set(Mode::BlackHole);
    wait_health(&a, false).await;
    assert_eq!(whoami(addr_a, key).await.status, 503);
    proxy.set(Mode::Sever);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Forward);
    wait_health(&a, true).await;
    let text = String::from_utf8_lossy(&logs.0.lock().expect("lock")).into_owned();
    assert!(text.contains("redis store in a gap"), "{text}");
    assert_eq!(text.matches("redis store live").count(), 2, "{text}");
    assert!(!text.contains("S3CR3T") && !text.contains(key), "{text}");
}
