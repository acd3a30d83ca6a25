//! Black-box tests of the reference server's authorization: the per-sandbox routes (a sandbox key
//! reaches only its own sandbox, capability keys every one, JWTs what their `scope` names) and
//! `--require-scope`, over real sockets.

use super::common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::{get_head, hmac_jws, next_json, next_text, raw_http, refused, ws_connect, Server};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "Authz-S3CR3T-key-0001";
const ADMIN: &str = "Authz-S3CR3T-admin-key";
const SECRET: &str = "authz-S3CR3T-jwt-secret-of-at-least-32-bytes";

fn secret_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-server-authz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, SECRET).expect("secret file");
    path
}

fn jwt(scope: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut claims = serde_json::json!({"sub": "jwt-user", "iat": now, "exp": now + 600});
    if let Some(scope) = scope {
        claims["scope"] = scope.into();
    }
    hmac_jws(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &claims.to_string(),
        "HS256",
        SECRET.as_bytes(),
    )
}

async fn get(addr: SocketAddr, target: &str, credential: &str) -> common::Reply {
    let bearer = format!("Bearer {credential}");
    raw_http(
        addr,
        &get_head(addr, target, &[("Authorization", bearer.as_bytes())]),
    )
    .await
}

async fn create_sandbox(addr: SocketAddr) -> (String, String) {
    let head = format!(
        "POST /admin/sandboxes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: 0\r\nX-Admin-Key: {ADMIN}\r\n"
    );
    let created = raw_http(addr, head.as_bytes()).await;
    assert_eq!(created.status, 201, "{}", created.body_text());
    let body: serde_json::Value = serde_json::from_slice(&created.body).expect("json");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["session_api_key"].as_str().expect("key").to_owned(),
    )
}

fn forbidden_challenge(scopes: &str) -> Option<String> {
    Some(format!(
        r#"Bearer realm="axum-keyguard", error="insufficient_scope", scope="{scopes}""#
    ))
}

fn assert_forbidden(reply: &common::Reply, scopes: &str, secrets: &[&str]) {
    assert_eq!(reply.status, 403, "{}", reply.body_text());
    assert_eq!(
        reply.header("www-authenticate"),
        forbidden_challenge(scopes)
    );
    assert_eq!(reply.body_text(), "forbidden");
    let seen = format!("{:?}{}", reply.headers, reply.body_text());
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret} in {seen}");
    }
}

fn subject(reply: &common::Reply) -> String {
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    body["subject"].as_str().expect("subject").to_owned()
}

#[tokio::test]
async fn a_sandbox_key_reaches_only_its_own_sandbox_and_jwts_what_their_scope_names() {
    let secret = secret_file("sandboxes");
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--admin-key",
        ADMIN,
        "--jwt-secret-file",
        secret.to_str().expect("utf-8"),
    ])
    .await;
    let addr = server.addr;
    let (a, a_key) = create_sandbox(addr).await;
    let (b, _) = create_sandbox(addr).await;
    let whoami = |id: &str| format!("/api/sandboxes/{id}/whoami");

    // A sandbox's key: its own sandbox only.
    let own = get(addr, &whoami(&a), &a_key).await;
    assert_eq!((own.status, subject(&own)), (200, format!("sandbox:{a}")));
    let other = get(addr, &whoami(&b), &a_key).await;
    assert_forbidden(&other, &format!("sandbox:{b} sandboxes:*"), &[&a_key, &a]);

    // A capability key: every sandbox.
    for id in [&a, &b] {
        assert_eq!(get(addr, &whoami(id), KEY).await.status, 200);
    }

    // JWTs: `sandbox:{id}` for one, `sandboxes:*` for all, nothing without a scope.
    let one = jwt(Some(&format!("sandbox:{a} other")));
    assert_eq!(subject(&get(addr, &whoami(&a), &one).await), "jwt-user");
    assert_forbidden(
        &get(addr, &whoami(&b), &one).await,
        &format!("sandbox:{b} sandboxes:*"),
        &[&one, "other"],
    );
    let all = jwt(Some("sandboxes:*"));
    for id in [&a, &b] {
        assert_eq!(get(addr, &whoami(id), &all).await.status, 200);
    }
    let none = jwt(None);
    assert_forbidden(
        &get(addr, &whoami(&a), &none).await,
        &format!("sandbox:{a} sandboxes:*"),
        &[&none],
    );

    // The WebSocket: hello then echo on its own sandbox; 403 before the upgrade on another.
    let target = |id: &str| format!("/sockets/sandboxes/{id}/events?session_api_key={a_key}");
    let mut socket = ws_connect(addr, &target(&a), &[]).await.expect("101");
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["subject"], format!("sandbox:{a}"));
    socket.send(Message::text("ping")).await.expect("send");
    assert_eq!(next_text(&mut socket).await, "ping");
    let refused = ws_connect(addr, &target(&b), &[])
        .await
        .expect_err("no 101");
    assert_forbidden(&refused, &format!("sandbox:{b} sandboxes:*"), &[&a_key]);
    let bearer = format!("Bearer {all}");
    let mut socket = ws_connect(
        addr,
        &format!("/sockets/sandboxes/{b}/events"),
        &[("Authorization", &bearer)],
    )
    .await
    .expect("101 for sandboxes:*");
    assert_eq!(next_json(&mut socket).await["subject"], "jwt-user");

    // Pausing the sandbox still closes its socket with 4001 (authentication, not authorization).
    let mut own_socket = ws_connect(addr, &target(&a), &[]).await.expect("101");
    next_json(&mut own_socket).await;
    let head = format!(
        "POST /admin/sandboxes/{a}/pause HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: 0\r\nX-Admin-Key: {ADMIN}\r\n"
    );
    assert_eq!(raw_http(addr, head.as_bytes()).await.status, 204);
    let (_, code, _) = common::until_close(&mut own_socket).await;
    assert_eq!(code, 4001);
    let stderr = server.stop().await;
    for secret in [a_key.as_str(), KEY, one.as_str(), all.as_str()] {
        assert!(!stderr.contains(secret), "a credential reached the logs");
    }
}

#[tokio::test]
async fn require_scope_holds_jwts_on_whoami_and_events_and_lets_keys_through() {
    let secret = secret_file("require-scope");
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--jwt-secret-file",
        secret.to_str().expect("utf-8"),
        "--require-scope",
        "tools:read",
        "--require-scope",
        "tools:write",
    ])
    .await;
    let addr = server.addr;
    let both = jwt(Some("tools:write tools:read"));
    let one = jwt(Some("tools:read"));
    assert_eq!(subject(&get(addr, "/api/whoami", &both).await), "jwt-user");
    assert_forbidden(
        &get(addr, "/api/whoami", &one).await,
        "tools:read tools:write",
        &[&one],
    );
    assert_eq!(get(addr, "/api/whoami", KEY).await.status, 200);

    let bearer = |token: &str| format!("Bearer {token}");
    let refused = ws_connect(addr, "/sockets/events", &[("Authorization", &bearer(&one))])
        .await
        .expect_err("no 101");
    assert_forbidden(&refused, "tools:read tools:write", &[&one]);
    let mut socket = ws_connect(
        addr,
        "/sockets/events",
        &[("Authorization", &bearer(&both))],
    )
    .await
    .expect("101");
    assert_eq!(next_json(&mut socket).await["subject"], "jwt-user");
    let mut socket = ws_connect(addr, &format!("/sockets/events?session_api_key={KEY}"), &[])
        .await
        .expect("101 for a key");
    assert_eq!(next_json(&mut socket).await["type"], "hello");
}

#[tokio::test]
async fn require_scope_refuses_a_scope_that_is_not_a_scope_token() {
    let (code, text) = refused(&["--session-api-key", KEY, "--require-scope", "two words"]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--require-scope"), "{text}");
    assert!(!text.contains(KEY));
}

#[tokio::test]
async fn help_lists_require_scope() {
    let output = tokio::process::Command::new(common::example_binary("agent_server"))
        .arg("--help")
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("--require-scope SCOPE"));
}
