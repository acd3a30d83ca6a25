//! Black-box tests of the reference server's sandbox store: `DELETE /admin/sandboxes/{id}` on the
//! in-memory store, and (with `--features redis`) two `agent_server` processes sharing one
//! `redis-server`, every admin route used on the replica that did not create the sandbox.

use super::common;
#[cfg(feature = "redis")]
use super::redis_support;

use std::net::SocketAddr;

use common::{get_head, next_json, raw_http, refused, until_close, ws_connect, Server};

const ADMIN: &str = "Admin-S3CR3T-key";

async fn admin(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\nX-Admin-Key: {ADMIN}\r\n"
    );
    raw_http(addr, head.as_bytes()).await.status
}

async fn create(addr: SocketAddr) -> (String, String) {
    let head = format!(
        "POST /admin/sandboxes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\nX-Admin-Key: {ADMIN}\r\n"
    );
    let reply = raw_http(addr, head.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body_text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["session_api_key"].as_str().expect("key").to_owned(),
    )
}

async fn whoami(addr: SocketAddr, key: &str) -> common::Reply {
    let head = get_head(
        addr,
        "/api/whoami",
        &[("X-Session-API-Key", key.as_bytes())],
    );
    raw_http(addr, &head).await
}

async fn open(addr: SocketAddr, key: &str, id: &str) -> common::Socket {
    let mut socket = ws_connect(addr, "/sockets/events", &[("X-Session-API-Key", key)])
        .await
        .expect("101");
    assert_eq!(
        next_json(&mut socket).await["subject"],
        format!("sandbox:{id}")
    );
    socket
}

#[tokio::test]
async fn delete_refuses_the_key_for_good_and_closes_its_sockets_on_the_memory_store() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "--admin-key", ADMIN]).await;
    let addr = server.addr;
    let (id, key) = create(addr).await;
    let mut socket = open(addr, &key, &id).await;
    assert_eq!(
        admin(addr, "DELETE", &format!("/admin/sandboxes/{id}")).await,
        204
    );
    let (_, code, _) = until_close(&mut socket).await;
    assert_eq!(code, 4001);
    assert_eq!(whoami(addr, &key).await.status, 401);
    assert_eq!(
        admin(addr, "POST", &format!("/admin/sandboxes/{id}/resume")).await,
        404
    );
    assert_eq!(
        admin(addr, "DELETE", &format!("/admin/sandboxes/{id}")).await,
        404
    );
    assert_eq!(
        admin(addr, "DELETE", "/admin/sandboxes/no-such-id").await,
        404
    );
    let stderr = server.stop().await;
    assert!(!stderr.contains(&key) && !stderr.contains("S3CR3T"));
}

#[tokio::test]
async fn store_options_are_checked_before_starting() {
    let (code, text) = refused(&["--admin-key", ADMIN, "--redis-prefix", "p:"]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--redis-prefix needs --redis-url"), "{text}");
    let (code, text) = refused(&["--admin-key", ADMIN, "--store-grace-ms", "soon"]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--store-grace-ms"), "{text}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_replicas_share_sandboxes_and_every_admin_route_works_on_the_other() {
    use futures_util::SinkExt;
    use std::time::{Duration, Instant};

    const PASSWORD: &str = "Redis-S3CR3T-password";
    let Some(redis) = redis_support::RedisServer::start_with_password(Some(PASSWORD)).await else {
        return;
    };
    let url = redis.url();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-key",
        ADMIN,
        "--redis-url",
        &url,
        "--redis-prefix",
        "agents:",
        "--store-grace-ms",
        "30000",
    ];
    let (a, b) = (Server::start(&args).await, Server::start(&args).await);
    let (addr_a, addr_b) = (a.addr, b.addr);

    let (id, key) = create(addr_a).await;
    let (other_id, other_key) = create(addr_b).await;
    let reply = whoami(addr_b, &key).await;
    assert_eq!(reply.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["subject"], format!("sandbox:{id}"));
    let mut on_a = open(addr_a, &key, &id).await;
    let mut on_b = open(addr_b, &key, &id).await;
    let mut other = open(addr_a, &other_key, &other_id).await;

    // Pause on the replica that did not create it: sockets close on both.
    let paused_at = Instant::now();
    assert_eq!(
        admin(addr_b, "POST", &format!("/admin/sandboxes/{id}/pause")).await,
        204
    );
    for socket in [&mut on_a, &mut on_b] {
        let (_, code, reason) = until_close(socket).await;
        assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
    }
    // DESIGN §4: within 1 s of the pause.
    assert!(
        paused_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        paused_at.elapsed()
    );
    assert_eq!(whoami(addr_a, &key).await.status, 401);
    other.send("still here".into()).await.expect("send");
    assert_eq!(common::next_text(&mut other).await, "still here");

    // Resume on the creator, used on the other.
    assert_eq!(
        admin(addr_a, "POST", &format!("/admin/sandboxes/{id}/resume")).await,
        204
    );
    assert_eq!(whoami(addr_b, &key).await.status, 200);
    let mut again = open(addr_a, &key, &id).await;

    // Delete on the other replica: refused for good, sockets 4001, then 404 everywhere.
    assert_eq!(
        admin(addr_b, "DELETE", &format!("/admin/sandboxes/{id}")).await,
        204
    );
    let (_, code, _) = until_close(&mut again).await;
    assert_eq!(code, 4001);
    assert_eq!(whoami(addr_a, &key).await.status, 401);
    assert_eq!(whoami(addr_b, &key).await.status, 401);
    assert_eq!(
        admin(addr_a, "POST", &format!("/admin/sandboxes/{id}/resume")).await,
        404
    );
    assert_eq!(
        admin(addr_a, "DELETE", &format!("/admin/sandboxes/{id}")).await,
        404
    );
    assert_eq!(
        admin(addr_b, "POST", "/admin/sandboxes/no-such-id/pause").await,
        404
    );

    // Only digests in Redis; no key and no password in either replica's output.
    let keys = redis.cli(&["--scan"]);
    assert!(
        !keys.contains(&key) && keys.contains("agents:rec:"),
        "{keys}"
    );
    for stderr in [a.stop().await, b.stop().await] {
        assert!(!stderr.contains(&key) && !stderr.contains(&other_key));
        assert!(!stderr.contains("S3CR3T"), "a secret reached the output");
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn refuses_to_start_with_an_unreachable_redis_or_a_wrong_password_without_printing_it() {
    const PASSWORD: &str = "Right-S3CR3T";
    let Some(redis) = redis_support::RedisServer::start_with_password(Some(PASSWORD)).await else {
        return;
    };
    let wrong = format!("redis://:Wrong-S3CR3T@127.0.0.1:{}", redis.port);
    let (code, text) = refused(&["--admin-key", ADMIN, "--redis-url", &wrong]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("S3CR3T"), "{text}");

    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let nowhere = format!("redis://:Any-S3CR3T@{unused}");
    let (code, text) = refused(&["--admin-key", ADMIN, "--redis-url", &nowhere]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("S3CR3T"), "{text}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_frozen_redis_gives_503_and_sockets_close_1011_after_the_store_grace() {
    use std::time::{Duration, Instant};

    let Some(redis) = redis_support::RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-key",
        ADMIN,
        "--session-api-key",
        "Capability-S3CR3T-key",
        "--redis-url",
        &url,
        "--store-grace-ms",
        "1000",
    ])
    .await;
    let addr = server.addr;
    let (id, key) = create(addr).await;
    let mut socket = open(addr, &key, &id).await;

    redis.stop();
    let started = Instant::now();
    let reply = whoami(addr, &key).await;
    assert_eq!(reply.status, 503, "never 401 while Redis cannot answer");
    assert!(reply.header("retry-after").is_some());
    // The default store timeout is 2 s; 8 s is the loaded-machine bound.
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(
        whoami(addr, "Capability-S3CR3T-key").await.status,
        200,
        "capability keys do not need Redis"
    );
    // The probe notices within its 3 s timeout, then the 1 s grace runs out: 1011.
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!(
        (code, reason.as_str()),
        (1011, "authentication unavailable")
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    redis.cont();
    let stderr = server.stop().await;
    assert!(stderr.contains("redis store in a gap"), "the gap is logged");
    assert!(!stderr.contains(&key) && !stderr.contains("S3CR3T"));
}
