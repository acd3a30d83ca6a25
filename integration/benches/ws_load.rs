//! Loopback WebSocket load harness: memory a lease adds per open socket, and the time from a
//! pause to every socket of that sandbox seeing Close 4001.
//!
//! ```text
//! cargo bench --workspace --bench ws_load -- [--sockets N] [--rounds R] [--handshakes H] [--calibrate]
//! cargo bench --workspace --bench ws_load -- --fanout-process N
//! ```
//!
//! Memory: each mode runs in a fresh child process (this binary, re-run) that opens N sockets
//! against an in-process server and reports its resident set before and after. `plain` upgrades
//! with axum's `WebSocketUpgrade` behind the guard layer; `leased` upgrades with `GuardedUpgrade`
//! and a revocable store lease. Clients are identical, so the difference is the lease's cost.
//! Fan-out: N sockets of one sandbox, one pause, and the time until each client has its 4001.
//! `--fanout-process N` runs the fan-out with the server in a child process (N beyond about 9,000
//! sockets does not fit one process's descriptor limit): the child takes `pause` on its standard
//! input, the parent holds the clients and times their Close 4001 from the moment it sends it.
//! Handshake rate: H handshakes (16 clients at a time) against a server without authentication
//! and against the same server with the guard (capability key in the header), after a warm-up,
//! alternating which goes first from round to round. `--calibrate` measures the server without
//! authentication against a second copy of itself instead: the spread of that ratio is the
//! harness's own noise. A second figure runs both servers at the same moment for a second per
//! round (8 clients each) and compares the handshakes each completed: both share whatever the
//! machine is doing, so drift between rounds cancels out.
#![allow(clippy::print_stdout, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{CredentialDigest, Guard, Identity, Keys, MemoryStore, SessionKeys, Verifier};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "load-test-sandbox-key-0123456789abcdefghijk";

use support::{time_closes, Socket};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn plain(_: Identity<String>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        if socket.send(AxumMessage::text("hello")).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    })
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

async fn serve(leased_route: bool) -> (SocketAddr, MemoryStore<String>) {
    let store = MemoryStore::new();
    store.insert(
        CredentialDigest::of(KEY.as_bytes()),
        "sandbox:load".to_owned(),
    );
    let verifier = Keys::new(["unused-capability-key"])
        .expect("keys")
        .map_principal(|k| k.to_string())
        .or(SessionKeys::new(store.clone()));
    let guard = Guard::builder()
        .with_verifier(verifier)
        .build()
        .expect("guard");
    let route = if leased_route {
        any(leased)
    } else {
        any(plain)
    };
    let app = Router::new().route("/ws", route).route_layer(guard.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (addr, store)
}

/// A server without authentication (`guarded == false`) or with the guard on a capability key.
async fn handshake_server(guarded: bool) -> SocketAddr {
    async fn open_route(ws: WebSocketUpgrade) -> Response {
        ws.on_upgrade(|mut socket| async move {
            let _ = socket.send(AxumMessage::text("hello")).await;
            while let Some(Ok(_)) = socket.recv().await {}
        })
    }
    async fn guarded_route(ws: GuardedUpgrade<axum_keyguard::KeyId>) -> Response {
        ws.on_upgrade(|mut socket| async move {
            let _ = socket.send(AxumMessage::text("hello")).await;
            while socket.recv().await.is_some() {}
        })
    }
    let app = if guarded {
        let guard = Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("keys"))
            .build()
            .expect("guard");
        Router::new()
            .route("/ws", any(guarded_route))
            .route_layer(guard.layer())
    } else {
        Router::new().route("/ws", any(open_route))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

/// One handshake: connect with the key, read the hello, close.
async fn handshake(addr: SocketAddr) {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/ws"
        ))
        .expect("request");
    request
        .headers_mut()
        .insert("x-session-api-key", KEY.parse().expect("value"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    match socket.next().await {
        Some(Ok(Message::Text(_))) => {}
        other => panic!("expected hello, got {other:?}"),
    }
    let _ = socket.close(None).await;
}

/// Handshakes per second: `total` connections (each reads the hello, then closes), 16 at a time.
async fn handshake_rate(addr: SocketAddr, total: usize) -> f64 {
    let started = Instant::now();
    let per_client = total / 16;
    let clients = (0..16).map(|_| {
        tokio::spawn(async move {
            for _ in 0..per_client {
                handshake(addr).await;
            }
        })
    });
    for client in clients {
        client.await.expect("client");
    }
    (per_client * 16) as f64 / started.elapsed().as_secs_f64()
}

/// Both servers at once for `time`, 8 clients each: the handshakes each completes. Sharing the
/// machine at the same moment, both see the same background noise, so the ratio of the counts is
/// the ratio of their costs.
async fn handshake_race(a: SocketAddr, b: SocketAddr, time: Duration) -> (usize, usize) {
    let deadline = Instant::now() + time;
    let count = |addr: SocketAddr| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    let mut done = 0;
                    while Instant::now() < deadline {
                        handshake(addr).await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        async move {
            let mut total = 0;
            for client in clients {
                total += client.await.expect("client");
            }
            total
        }
    };
    let (a, b) = (count(a), count(b));
    (a.await, b.await)
}

async fn open(addr: SocketAddr, n: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let url = format!("ws://{addr}/ws?session_api_key={KEY}");
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        match socket.next().await {
            Some(Ok(Message::Text(_))) => {}
            other => panic!("expected hello, got {other:?}"),
        }
        sockets.push(socket);
    }
    sockets
}

/// Child process: open `n` sockets in `mode` and print RSS before and after (KiB).
async fn memory_child(mode: &str, n: usize) {
    let (addr, _store) = serve(mode == "leased").await;
    drop(open(addr, 20).await); // warm up the allocator and the runtime
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let sockets = open(addr, n).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib();
    println!("{before} {after}");
    drop(sockets);
}

fn memory(n: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("exe");
    let mut per_socket = [0.0, 0.0];
    for (i, mode) in ["plain", "leased"].into_iter().enumerate() {
        let output = std::process::Command::new(&exe)
            .args(["--memory-child", mode, &n.to_string()])
            .output()
            .expect("run child");
        let text = String::from_utf8_lossy(&output.stdout);
        let numbers: Vec<u64> = text
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [before, after] = numbers[..] else {
            panic!("child said {text:?}");
        };
        per_socket[i] = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    }
    (per_socket[0], per_socket[1])
}

/// Prints the median, 99th percentile and maximum of sorted latencies.
fn report(round: usize, what: &str, latencies: &[Duration]) {
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "round {round}: pause -> 4001 for {what}: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

async fn fanout(n: usize) -> Vec<Duration> {
    let (addr, store) = serve(true).await;
    let sockets = open(addr, n).await;
    time_closes(sockets, async {
        store.set_active(&CredentialDigest::of(KEY.as_bytes()), false);
    })
    .await
}

/// Child process: serve, print the address, pause the sandbox when told on standard input.
async fn fanout_server_child() {
    use tokio::io::AsyncBufReadExt;
    let (addr, store) = serve(true).await;
    println!("{addr}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "pause" {
            store.set_active(&CredentialDigest::of(KEY.as_bytes()), false);
        }
    }
}

/// Parent: `n` clients against a server in a child process; returns the sorted latencies from
/// sending `pause` to each client's Close 4001.
async fn fanout_process(n: usize) -> Vec<Duration> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--fanout-server-child")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server process");
    let stdout = child.stdout.take().expect("stdout");
    let addr: SocketAddr = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read")
        .expect("address line")
        .parse()
        .expect("address");
    let sockets = open(addr, n).await;
    let mut stdin = child.stdin.take().expect("stdin");
    // Borrowed, not moved: closing the child's stdin would end the server.
    let latencies = time_closes(sockets, async {
        stdin.write_all(b"pause\n").await.expect("pause");
        stdin.flush().await.expect("flush");
    })
    .await;
    let _ = child.kill().await;
    latencies
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if args.first().map(String::as_str) == Some("--fanout-server-child") {
        runtime.block_on(fanout_server_child());
        return;
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--fanout-process")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
    {
        let rounds = args
            .iter()
            .position(|a| a == "--rounds")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        for round in 1..=rounds {
            let latencies = runtime.block_on(fanout_process(n));
            report(
                round,
                &format!("{n} sockets (server in its own process)"),
                &latencies,
            );
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--memory-child") {
        // One thread: one malloc arena, so the two modes are measured alike.
        let n = args[2].parse().expect("n");
        let single = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        single.block_on(memory_child(&args[1], n));
        return;
    }
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let sockets = value("--sockets", 1000);
    let rounds = value("--rounds", 3);
    let handshakes = value("--handshakes", 4000);
    // `--calibrate`: the unauthenticated server against a second copy of itself, to show how far
    // apart two identical servers measure on this machine (the harness's own noise).
    let calibrate = args.iter().any(|a| a == "--calibrate");
    println!("sockets: {sockets}, rounds: {rounds}, handshakes: {handshakes}");
    let (open_server, guarded_server) = runtime.block_on(async {
        (
            handshake_server(false).await,
            handshake_server(!calibrate).await,
        )
    });
    let mut ratios = Vec::new();
    // Warm both servers up, then alternate which goes first, so drift in the machine's speed
    // falls on both sides alike.
    runtime.block_on(handshake_rate(open_server, handshakes / 4));
    runtime.block_on(handshake_rate(guarded_server, handshakes / 4));
    for round in 1..=rounds {
        let (without, with) = if round % 2 == 1 {
            let without = runtime.block_on(handshake_rate(open_server, handshakes));
            (
                without,
                runtime.block_on(handshake_rate(guarded_server, handshakes)),
            )
        } else {
            let with = runtime.block_on(handshake_rate(guarded_server, handshakes));
            (
                runtime.block_on(handshake_rate(open_server, handshakes)),
                with,
            )
        };
        ratios.push(with / without);
        println!(
            "round {round}: handshakes/s without the guard {without:.0}, with {with:.0}, ratio {:.3}",
            with / without
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "handshake ratio, median of {rounds}: {:.3} (spread {:.3}-{:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    let mut raced = Vec::new();
    for round in 1..=rounds {
        let (without, with) = runtime.block_on(handshake_race(
            open_server,
            guarded_server,
            Duration::from_secs(1),
        ));
        raced.push(with as f64 / without as f64);
        println!(
            "race {round}: in 1 s side by side, without the guard {without}, with {with}, ratio {:.3}",
            with as f64 / without as f64
        );
    }
    raced.sort_by(f64::total_cmp);
    println!(
        "handshake ratio side by side, median of {rounds}: {:.3} (spread {:.3}-{:.3})",
        raced[raced.len() / 2],
        raced[0],
        raced[raced.len() - 1]
    );
    if calibrate {
        return;
    }
    for round in 1..=rounds {
        let (plain, leased) = memory(sockets);
        println!(
            "round {round}: memory per socket: plain {plain:.0} B, leased {leased:.0} B, lease adds {:.0} B",
            leased - plain
        );
        let latencies = runtime.block_on(fanout(sockets));
        report(round, &format!("{sockets} sockets"), &latencies);
    }
}
