//! `RedisStore` figures on loopback, against a `redis-server` this bench starts on a free port.
//!
//! ```text
//! cargo bench --workspace --features redis --bench redis_load -- [--requests N] [--sockets N] [--leases N] [--rounds R] [--settle-ms MS]
//! ```
//!
//! - Per request: N sequential `oneshot` requests (sandbox key in a header) through the bare
//!   router, the guard over a `MemoryStore`, and the guard over a `RedisStore` (one `HMGET` per
//!   request: there is no cache); mean per request, rounds alternating the order.
//! - Fan-out: N sockets of one sandbox spread over two replicas, each a child process (this
//!   binary, re-run) with its own `RedisStore`; the parent pauses the sandbox through a third
//!   store and times each client's Close 4001 from the moment it sends the pause.
//! - Re-read after a gap: N keys with open leases in one store; `CLIENT KILL TYPE pubsub` drops
//!   its subscription; the store's own figures (keys, round trips, time) once it is live again.
#![allow(clippy::print_stdout, missing_docs)]

mod support;

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::Message as AxumMessage;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{
    Authenticated, CredentialDigest, Guard, MemoryStore, RedisStore, SessionKeys, SessionStore,
};
use futures_util::StreamExt;
use tower::ServiceExt as _;

const KEY: &str = "load-test-sandbox-key-0123456789abcdefghijk";

use support::{time_closes, Socket};

struct Redis {
    child: std::process::Child,
    url: String,
}

impl Redis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("keyguard-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--maxclients", "20000"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Some(Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }

    fn cli(&self, args: &[&str]) {
        let port = self.url.rsplit(':').next().unwrap_or_default();
        let _ = Command::new("redis-cli")
            .args(["-p", port])
            .args(args)
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn store(url: &str) -> RedisStore<String> {
    RedisStore::builder(url)
        .with_prefix("bench:")
        .connect()
        .await
        .expect("connect")
}

fn rest_router<S: SessionStore<Record = String>>(store: Option<S>) -> Router {
    let router = Router::new().route("/api", get(|| async { "ok" }));
    match store {
        None => router,
        Some(store) => {
            let guard = Guard::builder()
                .with_verifier(SessionKeys::new(store))
                .build()
                .expect("guard");
            Router::new()
                .route(
                    "/api",
                    get(|Authenticated(_who): Authenticated<String>| async { "ok" }),
                )
                .route_layer(guard.layer())
        }
    }
}

async fn per_request(router: &Router, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let request = http::Request::get("/api")
            .header("host", "localhost")
            .header("x-session-api-key", KEY)
            .body(Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), 200);
    }
    started.elapsed() / u32::try_from(n).expect("n")
}

async fn leased(ws: GuardedUpgrade<String>) -> Response {
    ws.on_upgrade(|mut socket| async move {
        if socket.send(AxumMessage::text("hello")).await.is_err() {
            return;
        }
        while let Some(message) = socket.recv().await {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    })
}

/// Child: one replica on its own `RedisStore`; prints its address and serves until killed.
async fn replica_child(url: &str) {
    let store = store(url).await;
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store))
        .build()
        .expect("guard");
    let app = Router::new()
        .route("/sockets/events", any(leased))
        .route_layer(guard.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    // Ends with the parent: its standard input closes.
    let parent_gone = async {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    };
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served.expect("serve"),
        () = parent_gone => {}
    }
}

fn spawn_replica(url: &str) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead as _;
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--replica-child", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("replica process");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("address line");
    (child, line.trim().parse().expect("address"))
}

async fn open(addr: SocketAddr, n: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let connects = chunk.iter().map(|_| async {
            let url = format!("ws://{addr}/sockets/events?session_api_key={KEY}");
            let (mut socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            let _ = socket.next().await; // hello
            socket
        });
        sockets.extend(futures_util::future::join_all(connects).await);
    }
    sockets
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if args.first().map(String::as_str) == Some("--replica-child") {
        runtime.block_on(replica_child(&args[1]));
        return;
    }
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let requests = value("--requests", 20_000);
    let sockets = value("--sockets", 10_000);
    let leases = value("--leases", 10_000);
    let rounds = value("--rounds", 3);
    let settle = Duration::from_millis(value("--settle-ms", 0) as u64);
    let Some(redis) = Redis::start() else {
        println!("SKIPPED: redis-server is not on PATH");
        return;
    };
    println!("requests: {requests}, sockets: {sockets}, leases: {leases}, rounds: {rounds}");
    // The fan-out's pause is sent from a runtime of its own: on the clients' runtime it would
    // wait behind the 10,000 clients reading their Close frames, which the pause itself set off.
    let admin_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pauser = admin_runtime.block_on(store(&redis.url));
    runtime.block_on(async {
        let admin = store(&redis.url).await;
        let digest = CredentialDigest::of(KEY.as_bytes());
        admin.insert(digest, &"sandbox:1".to_owned()).await.expect("insert");

        // Per request.
        let memory = MemoryStore::new();
        memory.insert(digest, "sandbox:1".to_owned());
        let routers = [
            ("bare router", rest_router::<MemoryStore<String>>(None)),
            ("guard, MemoryStore", rest_router(Some(memory))),
            ("guard, RedisStore (loopback)", rest_router(Some(admin.clone()))),
        ];
        for (_, router) in &routers {
            per_request(router, requests / 10).await; // warm-up
        }
        for round in 1..=rounds {
            let mut line = format!("round {round}: per request:");
            let mut order: Vec<usize> = (0..routers.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            let mut results = vec![Duration::ZERO; routers.len()];
            for i in order {
                results[i] = per_request(&routers[i].1, requests).await;
            }
            for (i, (name, _)) in routers.iter().enumerate() {
                line.push_str(&format!(" {name} {:?};", results[i]));
            }
            println!("{line}");
        }

        // Fan-out over two replicas.
        let replicas = [spawn_replica(&redis.url), spawn_replica(&redis.url)];
        let mut maxima = Vec::new();
        for round in 1..=rounds {
            if round > 1 && settle > Duration::ZERO {
                // The replicas finish closing the last round's sockets before this one opens.
                tokio::time::sleep(settle).await;
            }
            admin.set_active(&digest, true).await.expect("resume");
            let mut open_sockets = open(replicas[0].1, sockets / 2).await;
            open_sockets.extend(open(replicas[1].1, sockets - sockets / 2).await);
            let write = std::sync::Mutex::new(Duration::ZERO);
            let latencies = time_closes(open_sockets, async {
                let started = Instant::now();
                let pauser = pauser.clone();
                admin_runtime
                    .spawn(async move { pauser.set_active(&digest, false).await })
                    .await
                    .expect("pause task")
                    .expect("pause");
                *write.lock().expect("lock") = started.elapsed();
            })
            .await;
            println!("round {round}: the pause itself (script round trip) took {:?}", write.lock().expect("lock"));
            let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
            let max = latencies[latencies.len() - 1];
            maxima.push(max);
            println!(
                "round {round}: pause -> 4001 for {sockets} sockets over 2 replicas: p50 {:?}, p99 {:?}, max {max:?}",
                pct(0.5),
                pct(0.99)
            );
        }
        println!(
            "fan-out max over {rounds} rounds: {:?}",
            maxima.iter().max().expect("rounds")
        );
        for (mut child, _) in replicas {
            let _ = child.kill();
            let _ = child.wait();
        }

        // Re-read after a gap.
        let reader = store(&redis.url).await;
        let keys: Vec<CredentialDigest> = (0..leases)
            .map(|i| CredentialDigest::of(format!("lease-key-{i}").as_bytes()))
            .collect();
        for key in &keys {
            admin.insert(*key, &"sandbox:n".to_owned()).await.expect("insert");
        }
        let mut held = Vec::with_capacity(leases);
        for key in &keys {
            held.push(reader.lookup(key).await.expect("lookup").expect("known"));
        }
        assert_eq!(reader.watched_keys(), leases);
        for round in 1..=rounds {
            let before = reader.last_reread();
            redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            let started = Instant::now();
            while reader.last_reread() == before || !reader.health().is_live() {
                assert!(started.elapsed() < Duration::from_secs(30), "not live again");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let figures = reader.last_reread().expect("re-read");
            println!(
                "round {round}: re-read after a gap: {} keys in {} round trips, {:?} (subscription drop to live: {:?})",
                figures.keys(),
                figures.round_trips(),
                figures.took(),
                started.elapsed()
            );
        }
        drop(held);
    });
}
