//! Black-box tests of `examples/agent_server.rs`: its command line, routes and output, driven like
//! a user would drive it (real process, real sockets, `RUST_LOG=trace`).

use super::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use common::{
    get_head, hmac_jws, next_text, raw_http, refused, until_close, ws_connect, Server, STEP,
};
use futures_util::SinkExt;

use tokio::process::{Child, Command};

const KEY: &str = "Agent-S3CR3T-key-0001";
const FILE_KEY: &str = "Agent-S3CR3T-file-key-0002";

async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> common::Reply {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    raw_http(addr, &get_head(addr, target, &headers)).await
}

fn key_subject(key: &str) -> String {
    axum_keyguard::KeyId::of(&axum_keyguard::CredentialDigest::of(key.as_bytes())).to_string()
}

#[tokio::test]
async fn serves_rest_and_websocket_routes_without_printing_credentials() {
    let dir = std::env::temp_dir().join(format!("agent-server-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("keys");
    std::fs::write(&key_file, format!("\n  {FILE_KEY}  \n")).expect("key file");
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--key-file",
        key_file.to_str().expect("utf-8 path"),
    ])
    .await;
    let addr = server.addr;
    assert_ne!(
        addr.port(),
        0,
        "prints the real port: {}",
        server.stdout_first_line
    );

    let health = get(addr, "/health", &[]).await;
    assert_eq!((health.status, health.body_text().as_str()), (200, "ok"));

    let missing = get(addr, "/api/whoami", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"axum-keyguard\"")
    );
    let bearer = format!("Bearer {KEY}");
    for (headers, source, key) in [
        (vec![("X-Session-API-Key", KEY)], "header", KEY),
        (vec![("Authorization", bearer.as_str())], "bearer", KEY),
        (vec![("x-session-api-key", FILE_KEY)], "header", FILE_KEY),
    ] {
        let reply = get(addr, "/api/whoami", &headers).await;
        assert_eq!(reply.status, 200, "{headers:?}");
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"subject": key_subject(key), "source": source})
        );
    }
    let query = get(addr, &format!("/api/whoami?session_api_key={KEY}"), &[]).await;
    assert_eq!(query.status, 401, "query credentials are for upgrades only");
    let wrong = get(
        addr,
        "/api/whoami",
        &[("X-Session-API-Key", "Agent-S3CR3T-wrong")],
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.header("www-authenticate").as_deref()),
        (
            401,
            Some("Bearer realm=\"axum-keyguard\", error=\"invalid_token\"")
        )
    );
    let malformed = get(
        addr,
        "/api/whoami",
        &[("Authorization", "Bearer:Agent-S3CR3T")],
    )
    .await;
    assert_eq!(malformed.status, 400);
    let conflict = get(
        addr,
        "/api/whoami",
        &[
            ("X-Session-API-Key", KEY),
            ("Authorization", "Bearer Agent-S3CR3T-other"),
        ],
    )
    .await;
    assert_eq!(conflict.status, 400);

    // WebSocket: hello with the subject and source, then echo.
    let query_target = format!("/sockets/events?session_api_key={KEY}");
    for (target, headers, source) in [
        (query_target.as_str(), vec![], "query"),
        (
            "/sockets/events",
            vec![("X-Session-API-Key", KEY)],
            "header",
        ),
        (
            "/sockets/events",
            vec![("Authorization", bearer.as_str())],
            "bearer",
        ),
    ] {
        let mut socket = ws_connect(addr, target, &headers).await.expect("101");
        let hello = common::next_json(&mut socket).await;
        assert_eq!(
            hello,
            serde_json::json!({"type": "hello", "subject": key_subject(KEY), "source": source})
        );
        socket.send("echo me".into()).await.expect("send");
        assert_eq!(next_text(&mut socket).await, "echo me");
        socket.close(None).await.expect("close");
    }
    let refused_ws = ws_connect(
        addr,
        "/sockets/events?session_api_key=Agent-S3CR3T-bad",
        &[],
    )
    .await;
    assert_eq!(refused_ws.expect_err("401").status, 401);
    let none = ws_connect(addr, "/sockets/events", &[]).await;
    assert_eq!(none.expect_err("401").status, 401);
    let own_origin = format!("http://{addr}");
    assert!(ws_connect(addr, &query_target, &[("Origin", &own_origin)])
        .await
        .is_ok());
    let cross = ws_connect(addr, &query_target, &[("Origin", "http://evil.example")]).await;
    assert_eq!(cross.expect_err("403").status, 403);

    let stderr = server.stop().await;
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "RUST_LOG=trace took effect:\n{stderr}"
    );
    assert!(
        !stderr.contains("S3CR3T"),
        "a credential reached the server's output:\n{stderr}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn allow_origin_switches_to_an_allow_list() {
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--allow-origin",
        "https://app.example.com",
    ])
    .await;
    let addr = server.addr;
    let key = ("X-Session-API-Key", KEY);
    assert!(ws_connect(
        addr,
        "/sockets/events",
        &[key, ("Origin", "https://app.example.com")]
    )
    .await
    .is_ok());
    let own = format!("http://{addr}");
    for origin in [own.as_str(), "https://app.example.com.evil.com", "null"] {
        let reply = ws_connect(addr, "/sockets/events", &[key, ("Origin", origin)]).await;
        assert_eq!(reply.expect_err("403").status, 403, "{origin}");
    }
    server.stop().await;
}

#[tokio::test]
async fn insecure_mode_runs_only_on_loopback() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "--insecure-no-auth"]).await;
    let whoami = get(server.addr, "/api/whoami", &[]).await;
    assert_eq!(whoami.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&whoami.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"subject": "anonymous", "source": "none"})
    );
    let mut socket = ws_connect(server.addr, "/sockets/events", &[])
        .await
        .expect("101");
    assert!(next_text(&mut socket).await.contains("anonymous"));
    server.stop().await;

    let (code, text) = refused(&["--listen", "0.0.0.0:0", "--insecure-no-auth"]).await;
    assert_eq!(code, Some(2));
    assert!(
        text.contains("refusing to listen on non-loopback address"),
        "{text}"
    );
}

#[tokio::test]
async fn refuses_to_start_with_unsafe_or_unusable_configuration() {
    let (code, text) = refused(&["--listen", "127.0.0.1:0"]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("no keys"), "{text}");

    let empty = std::env::temp_dir().join(format!("agent-server-empty-{}", std::process::id()));
    std::fs::write(&empty, " \n\n").expect("write");
    let (code, text) = refused(&["--key-file", empty.to_str().expect("utf-8")]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("must not be empty"), "{text}");
    std::fs::remove_file(&empty).expect("cleanup");

    let (code, text) = refused(&["--key-file", "/nonexistent/agent-keys"]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("cannot read key file"), "{text}");

    let (code, text) = refused(&["--session-api-key", ""]).await;
    assert_eq!(code, Some(2), "{text}");

    let (code, text) = refused(&[
        "--session-api-key",
        KEY,
        "--allow-origin",
        "https://x.example/path",
    ])
    .await;
    assert_eq!(code, Some(2), "{text}");

    let (code, text) = refused(&["--insecure-no-auth", "--session-api-key", KEY]).await;
    assert_eq!(code, Some(2));
    assert!(!text.contains("S3CR3T"), "{text}");

    // A key passed to a misspelt option is not echoed back.
    let (code, text) = refused(&["--sesion-api-key", KEY]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("usage"), "{text}");
    assert!(!text.contains("S3CR3T"), "{text}");
}

const JWT_SECRET: &str = "agent-S3CR3T-jwt-secret-of-at-least-32-bytes";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An HS256 token for the JWT-enabled server below, with `changes` applied to good claims.
fn agent_jwt(changes: serde_json::Value) -> String {
    let now = unix_now();
    let mut claims = serde_json::json!({
        "sub": "alice", "iss": "agent-issuer", "aud": "agents", "iat": now, "exp": now + 600
    });
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    hmac_jws(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &claims.to_string(),
        "HS256",
        JWT_SECRET.as_bytes(),
    )
}

#[tokio::test]
async fn accepts_jwts_beside_capability_keys() {
    let dir = std::env::temp_dir().join(format!("agent-server-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret_file = dir.join("jwt-secret");
    std::fs::write(&secret_file, format!("  {JWT_SECRET}\n")).expect("secret file");
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--jwt-secret-file",
        secret_file.to_str().expect("utf-8"),
        "--jwt-issuer",
        "agent-issuer",
        "--jwt-audience",
        "agents",
        "--jwt-leeway-secs",
        "5",
    ])
    .await;
    let addr = server.addr;
    let token = agent_jwt(serde_json::json!({}));
    let bearer = format!("Bearer {token}");
    let reply = get(addr, "/api/whoami", &[("Authorization", &bearer)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body_text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"subject": "alice", "source": "bearer"})
    );
    let key_reply = get(addr, "/api/whoami", &[("X-Session-API-Key", KEY)]).await;
    let body: serde_json::Value = serde_json::from_slice(&key_reply.body).expect("json");
    assert_eq!(
        body["subject"],
        key_subject(KEY),
        "capability keys still work"
    );

    let mut socket = ws_connect(
        addr,
        &format!("/sockets/events?session_api_key={token}"),
        &[],
    )
    .await
    .expect("101");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(
        hello,
        serde_json::json!({"type": "hello", "subject": "alice", "source": "query"})
    );

    let now = unix_now();
    let invalid = Some("Bearer realm=\"axum-keyguard\", error=\"invalid_token\"".to_owned());
    for (name, bad) in [
        ("expired", agent_jwt(serde_json::json!({"exp": now - 60}))),
        (
            "wrong audience",
            agent_jwt(serde_json::json!({"aud": "others"})),
        ),
        (
            "wrong issuer",
            agent_jwt(serde_json::json!({"iss": "someone-else"})),
        ),
        ("no subject", agent_jwt(serde_json::json!({"sub": null}))),
        (
            "not yet valid",
            agent_jwt(serde_json::json!({"nbf": now + 600})),
        ),
        (
            "other secret",
            hmac_jws(
                r#"{"alg":"HS256"}"#,
                &format!(
                    r#"{{"sub":"alice","iss":"agent-issuer","aud":"agents","exp":{}}}"#,
                    now + 600
                ),
                "HS256",
                b"another-secret-that-is-32-bytes-long",
            ),
        ),
        (
            "alg none",
            format!(
                "{}.",
                token.rsplit_once('.').expect("dot").0.replacen(
                    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
                    "eyJhbGciOiJub25lIn0",
                    1
                )
            ),
        ),
    ] {
        let bearer = format!("Bearer {bad}");
        let reply = get(addr, "/api/whoami", &[("Authorization", &bearer)]).await;
        assert_eq!(
            (reply.status, reply.header("www-authenticate")),
            (401, invalid.clone()),
            "{name}"
        );
        let ws = ws_connect(addr, "/sockets/events", &[("Authorization", &bearer)]).await;
        assert_eq!(ws.expect_err("401").status, 401, "{name}");
    }

    let stderr = server.stop().await;
    let signature = token.rsplit_once('.').expect("dot").1;
    assert!(
        !stderr.contains(signature),
        "a JWT reached the server's output"
    );
    assert!(
        !stderr.contains("S3CR3T"),
        "a secret reached the server's output"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn refuses_unsafe_jwt_configuration() {
    let dir = std::env::temp_dir().join(format!("agent-server-jwt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let short = dir.join("short");
    std::fs::write(&short, "only-31-bytes-of-secret-here!!!\n").expect("write");
    let good = dir.join("good");
    std::fs::write(&good, JWT_SECRET).expect("write");
    let short = short.to_str().expect("utf-8");
    let good = good.to_str().expect("utf-8");

    let (code, text) = refused(&["--jwt-secret-file", short]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("at least 32 bytes"), "{text}");
    let (code, text) = refused(&["--jwt-secret-file", good, "--jwt-leeway-secs", "301"]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("at most 300 seconds"), "{text}");
    let (code, _) = refused(&["--jwt-secret-file", good, "--jwt-leeway-secs", "soon"]).await;
    assert_eq!(code, Some(2));
    let (code, text) = refused(&["--session-api-key", KEY, "--jwt-issuer", "x"]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("need --jwt-secret-file"), "{text}");
    let (code, text) = refused(&["--jwt-secret-file", "/nonexistent/jwt-secret"]).await;
    assert_eq!(code, Some(2));
    assert!(!text.contains("S3CR3T"), "{text}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// POSTs to an admin route.
async fn admin(addr: SocketAddr, path: &str, key: &str) -> common::Reply {
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\nX-Admin-Key: {key}\r\n");
    raw_http(addr, head.as_bytes()).await
}

const ADMIN: &str = "Admin-S3CR3T-key";

async fn create_sandbox(addr: SocketAddr) -> (String, String) {
    let created = admin(addr, "/admin/sandboxes", ADMIN).await;
    assert_eq!(created.status, 201, "{}", created.body_text());
    let body: serde_json::Value = serde_json::from_slice(&created.body).expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    let key = body["session_api_key"].as_str().expect("key").to_owned();
    assert!(key.len() >= 43, "a 256-bit key");
    (id, key)
}

#[tokio::test]
async fn sandboxes_pause_and_resume_with_their_sockets() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "--admin-key", ADMIN]).await;
    let addr = server.addr;
    assert_eq!(admin(addr, "/admin/sandboxes", "wrong").await.status, 401);
    assert_eq!(admin(addr, "/admin/sandboxes", "").await.status, 400);
    let (id, key) = create_sandbox(addr).await;
    let (other_id, other_key) = create_sandbox(addr).await;
    assert_ne!(id, other_id);

    let whoami = get(addr, "/api/whoami", &[("X-Session-API-Key", &key)]).await;
    let body: serde_json::Value = serde_json::from_slice(&whoami.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"subject": format!("sandbox:{id}"), "source": "header"})
    );

    let mut socket = ws_connect(addr, &format!("/sockets/events?session_api_key={key}"), &[])
        .await
        .expect("101");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(hello["subject"], format!("sandbox:{id}"));
    let mut other = ws_connect(
        addr,
        "/sockets/events",
        &[("X-Session-API-Key", &other_key)],
    )
    .await
    .expect("101");
    next_text(&mut other).await;

    let paused_at = std::time::Instant::now();
    assert_eq!(
        admin(addr, &format!("/admin/sandboxes/{id}/pause"), ADMIN)
            .await
            .status,
        204
    );
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
    assert!(
        paused_at.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        paused_at.elapsed()
    );
    assert_eq!(
        get(addr, "/api/whoami", &[("X-Session-API-Key", &key)])
            .await
            .status,
        401
    );
    let refused = ws_connect(addr, "/sockets/events", &[("X-Session-API-Key", &key)]).await;
    assert_eq!(refused.expect_err("401").status, 401);
    other.send("still open".into()).await.expect("send");
    assert_eq!(
        next_text(&mut other).await,
        "still open",
        "other sandboxes are untouched"
    );

    assert_eq!(
        admin(addr, &format!("/admin/sandboxes/{id}/resume"), ADMIN)
            .await
            .status,
        204
    );
    assert_eq!(
        get(addr, "/api/whoami", &[("X-Session-API-Key", &key)])
            .await
            .status,
        200
    );
    assert_eq!(
        admin(addr, "/admin/sandboxes/no-such-id/pause", ADMIN)
            .await
            .status,
        404
    );
    assert_eq!(
        admin(addr, &format!("/admin/sandboxes/{id}/pause"), "wrong")
            .await
            .status,
        401
    );

    let stderr = server.stop().await;
    assert!(
        !stderr.contains(&key) && !stderr.contains("S3CR3T"),
        "a key reached the output"
    );
}

#[tokio::test]
async fn websocket_modes_are_selected_on_the_command_line() {
    let token = format!("base64url.bearer.authorization.k8s.io.{}", base64_url(KEY));
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--first-message-auth",
        "--auth-timeout-ms",
        "200",
    ])
    .await;
    let addr = server.addr;
    // Subprotocol: agent.v1 is echoed, the token entry never.
    let url = format!("ws://{addr}/sockets/events");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("{token}, agent.v1").parse().expect("value"),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("101");
    assert_eq!(response.headers()["sec-websocket-protocol"], "agent.v1");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(hello["source"], "subprotocol");
    // First message.
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    socket
        .send(format!(r#"{{"type":"auth","session_api_key":"{KEY}"}}"#).into())
        .await
        .expect("send");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(hello["source"], "message");
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    socket
        .send(r#"{"type":"auth","session_api_key":"Agent-S3CR3T-wrong"}"#.into())
        .await
        .expect("send");
    assert_eq!(until_close(&mut socket).await.1, 4001);
    let mut silent = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    let (_, code, reason) = until_close(&mut silent).await;
    assert_eq!((code, reason.as_str()), (4001, "authentication timeout"));
    let stderr = server.stop().await;
    assert!(stderr.contains("TRACE"), "RUST_LOG=trace took effect");
    assert!(
        !stderr.contains("S3CR3T"),
        "an auth frame or subprotocol token reached the logs:\n{stderr}"
    );

    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--accept-then-close",
    ])
    .await;
    let mut socket = ws_connect(
        server.addr,
        "/sockets/events?session_api_key=Agent-S3CR3T-bad",
        &[],
    )
    .await
    .expect("101");
    let (texts, code, reason) = until_close(&mut socket).await;
    assert!(texts.is_empty());
    assert_eq!((code, reason.as_str()), (4001, "authentication failed"));
    let stderr = server.stop().await;
    assert!(!stderr.contains("S3CR3T"), "{stderr}");

    let (code, text) = refused(&["--session-api-key", KEY, "--auth-timeout-ms", "100"]).await;
    assert_eq!(code, Some(2));
    assert!(text.contains("needs --first-message-auth"), "{text}");
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Headless Chromium driven through chromedriver (WebDriver over HTTP).
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts `$CHROMEDRIVER` (default `chromedriver`) and a session of `$CHROMIUM` (default
    /// `/usr/bin/chromium`), headless with the flags this workplace needs.
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let driver_bin =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {driver_bin}: {e} (install Debian's chromium-driver)")
            });
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(started.elapsed() < STEP, "chromedriver did not start");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("keyguard-chromium-{}-{port}", std::process::id()));
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let reply = common::json_request(addr, "POST", "/session", &capabilities.to_string()).await;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {body}"))
            .to_owned();
        Self {
            driver,
            addr,
            session,
            profile,
        }
    }

    /// Opens `url` and waits until the page's `#result` says something other than `connecting…`.
    async fn result(&self, url: &str) -> serde_json::Value {
        let path = format!("/session/{}/url", self.session);
        // Through a blank page: a URL that differs only in its fragment would not reload.
        for target in ["about:blank", url] {
            let body = serde_json::json!({"url": target}).to_string();
            let reply = common::json_request(self.addr, "POST", &path, &body).await;
            assert_eq!(reply.status, 200, "navigate: {}", reply.body_text());
        }
        let script = serde_json::json!({
            "script": "return document.getElementById('result').textContent",
            "args": [],
        })
        .to_string();
        let path = format!("/session/{}/execute/sync", self.session);
        let started = std::time::Instant::now();
        loop {
            let reply = common::json_request(self.addr, "POST", &path, &script).await;
            let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
            let text = body["value"].as_str().unwrap_or_default();
            if let Ok(result) = serde_json::from_str::<serde_json::Value>(text) {
                return result;
            }
            assert!(started.elapsed() < STEP, "the page still says {text:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        let path = format!("/session/{}", self.session);
        common::json_request(self.addr, "DELETE", &path, "").await;
        let _ = self.driver.start_kill();
        let _ = self.driver.wait().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver; .ci/run installs them and runs this"]
async fn a_real_browser_sees_hello_close_codes_and_cross_origin_refusal() {
    let browser = Browser::start().await;
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--first-message-auth",
    ])
    .await;
    let base = format!("http://{}", server.addr);
    for via in ["query", "subprotocol", "message"] {
        let result = browser.result(&format!("{base}/?via={via}#{KEY}")).await;
        assert_eq!(result["hello"]["source"], via, "{via}: {result}");
        assert_eq!(
            result["hello"]["subject"],
            key_subject(KEY),
            "{via}: {result}"
        );
    }
    let bad_message = browser
        .result(&format!("{base}/?via=message#Agent-S3CR3T-wrong"))
        .await;
    assert_eq!(
        bad_message,
        serde_json::json!({"close": {"code": 4001, "reason": "authentication failed"}})
    );

    // The same page served from another origin (another port) is refused by the origin policy.
    let other = Server::start(&["--listen", "127.0.0.1:0", "--insecure-no-auth"]).await;
    let cross = browser
        .result(&format!(
            "http://{}/?via=query&server={}#{KEY}",
            other.addr, server.addr
        ))
        .await;
    assert_eq!(
        cross,
        serde_json::json!({"error": "the connection failed"}),
        "cross-origin page"
    );
    other.stop().await;
    server.stop().await;

    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--accept-then-close",
    ])
    .await;
    let bad_key = browser
        .result(&format!(
            "http://{}/?via=query#Agent-S3CR3T-wrong",
            server.addr
        ))
        .await;
    assert_eq!(
        bad_key,
        serde_json::json!({"close": {"code": 4001, "reason": "authentication failed"}})
    );
    server.stop().await;
    browser.stop().await;
}

#[tokio::test]
async fn a_full_session_in_every_source_leaves_no_credential_in_the_logs() {
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--first-message-auth",
        "--admin-key",
        ADMIN,
    ])
    .await;
    let addr = server.addr;
    let (_, sandbox_key) = create_sandbox(addr).await;
    let bearer = format!("Bearer {KEY}");
    // REST: header, bearer, a sandbox key, a wrong key, and a query credential (ignored on REST).
    for headers in [
        vec![("X-Session-API-Key", KEY)],
        vec![("Authorization", bearer.as_str())],
        vec![("X-Session-API-Key", sandbox_key.as_str())],
        vec![("X-Session-API-Key", "Agent-S3CR3T-wrong-key")],
    ] {
        get(addr, "/api/whoami", &headers).await;
    }
    get(addr, &format!("/api/whoami?session_api_key={KEY}"), &[]).await;
    // WebSocket: query, header, bearer, subprotocol, first message; right and wrong.
    let token = format!(
        "base64url.bearer.authorization.k8s.io.{}, agent.v1",
        base64_url(KEY)
    );
    let query = format!("/sockets/events?session_api_key={KEY}");
    let sessions: [(&str, Vec<(&str, &str)>); 4] = [
        (&query, vec![]),
        ("/sockets/events", vec![("X-Session-API-Key", KEY)]),
        ("/sockets/events", vec![("Authorization", &bearer)]),
        ("/sockets/events", vec![("Sec-WebSocket-Protocol", &token)]),
    ];
    for (target, headers) in sessions {
        let mut socket = ws_connect(addr, target, &headers).await.expect("101");
        next_text(&mut socket).await;
        socket.send("frame".into()).await.expect("send");
        assert_eq!(next_text(&mut socket).await, "frame");
        socket.close(None).await.expect("close");
    }
    let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
    socket
        .send(format!(r#"{{"type":"auth","session_api_key":"{KEY}"}}"#).into())
        .await
        .expect("send");
    next_text(&mut socket).await;
    socket
        .send(format!(r#"{{"type":"auth","session_api_key":"{KEY}"}}"#).into())
        .await
        .expect("send");
    socket.close(None).await.expect("close");
    let wrong = ws_connect(
        addr,
        "/sockets/events?session_api_key=Agent-S3CR3T-wrong-key",
        &[],
    )
    .await;
    assert_eq!(wrong.expect_err("401").status, 401);

    let log = server.stop().await;
    assert!(
        log.contains("DEBUG") && log.contains("TRACE"),
        "logging at every level"
    );
    assert!(
        log.contains("uri=/sockets/events?session_api_key=[REDACTED]"),
        "the redacted URI is logged:\n{log}"
    );
    assert!(log.contains("uri=/api/whoami"), "REST requests are logged");
    for secret in [KEY, sandbox_key.as_str(), "S3CR3T", &base64_url(KEY)] {
        assert!(
            !log.contains(secret),
            "a credential reached the log:\n{log}"
        );
    }
}

/// Writes `text` to a fresh file for one test and returns its path.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("agent-server-{name}-{}", std::process::id()));
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test]
async fn sigterm_and_sigint_close_guarded_sockets_with_1001_and_exit_0() {
    for signal in ["TERM", "INT"] {
        let server = Server::start(&[
            "--listen",
            "127.0.0.1:0",
            "--session-api-key",
            KEY,
            "--first-message-auth",
        ])
        .await;
        let addr = server.addr;
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let mut socket = ws_connect(addr, "/sockets/events", &[("X-Session-API-Key", KEY)])
                .await
                .expect("101");
            assert!(next_text(&mut socket).await.contains("hello"));
            sockets.push(socket);
        }
        // One socket that has not authenticated yet; its hello never comes.
        sockets.push(ws_connect(addr, "/sockets/events", &[]).await.expect("101"));
        // A REST exchange right before the signal still completes.
        assert_eq!(get(addr, "/health", &[]).await.status, 200);
        let readers: Vec<_> = sockets
            .into_iter()
            .map(|mut socket| tokio::spawn(async move { until_close(&mut socket).await }))
            .collect();
        let (code, log) = server.signal_and_wait(signal).await;
        for reader in readers {
            let (_, close, reason) = reader.await.expect("reader");
            assert_eq!(
                (close, reason.as_str()),
                (1001, "server shutting down"),
                "{signal}"
            );
        }
        assert_eq!(code, Some(0), "SIG{signal}: exits 0\n{log}");
        assert!(!log.contains("S3CR3T"), "{log}");
    }
}

#[tokio::test]
async fn no_auth_mode_keeps_the_origin_policy() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "--insecure-no-auth"]).await;
    let addr = server.addr;
    for origin in ["https://evil.example", "null", "file://127.0.0.1"] {
        let refused = ws_connect(addr, "/sockets/events", &[("Origin", origin)]).await;
        assert_eq!(refused.expect_err("403").status, 403, "{origin}");
    }
    let own = format!("http://{addr}");
    let mut socket = ws_connect(addr, "/sockets/events", &[("Origin", &own)])
        .await
        .expect("101");
    assert!(next_text(&mut socket).await.contains("anonymous"));
    server.stop().await;

    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--allow-origin",
        "https://app.example.com",
    ])
    .await;
    let addr = server.addr;
    assert!(ws_connect(
        addr,
        "/sockets/events",
        &[("Origin", "https://app.example.com")]
    )
    .await
    .is_ok());
    let refused = ws_connect(
        addr,
        "/sockets/events",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.expect_err("403").status, 403);
    server.stop().await;
}

/// Opens a raw WebSocket to `/sockets/events` and writes `frame` after the handshake.
async fn raw_socket_with(addr: SocketAddr, frame: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = get_head(addr, "/sockets/events", &common::UPGRADE_HEADERS);
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await.expect("write");
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the 101");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(buf.starts_with(b"HTTP/1.1 101"));
    let _ = stream.write_all(frame).await;
    stream
}

/// The head of a masked text frame, not final, announcing `len` payload bytes.
fn unfinished_text_frame(len: u64, payload: usize) -> Vec<u8> {
    let mut frame = vec![0x01, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[7, 7, 7, 7]);
    frame.extend(std::iter::repeat_n(0x20, payload));
    frame
}

#[tokio::test]
async fn first_message_auth_bounds_what_unauthenticated_sockets_make_the_server_hold() {
    use tokio::io::AsyncReadExt;
    let server = Server::start_with_log(
        &[
            "--listen",
            "127.0.0.1:0",
            "--session-api-key",
            KEY,
            "--first-message-auth",
        ],
        Some("info"),
    )
    .await;
    let addr = server.addr;
    // Both ecosystems' auth frames.
    for field in ["session_api_key", "token"] {
        let mut socket = ws_connect(addr, "/sockets/events", &[]).await.expect("101");
        socket
            .send(format!(r#"{{"type":"auth","{field}":"{KEY}"}}"#).into())
            .await
            .expect("send");
        assert!(next_text(&mut socket)
            .await
            .contains(r#""source":"message""#));
    }
    let baseline = server.rss_kib();
    // 100 sockets that each hold as much as they may (7 KiB of an unfinished 15 MB fragment).
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(raw_socket_with(addr, &unfinished_text_frame(15_000_000, 7 * 1024)).await);
    }
    // Give the server time to read what was sent (a generous bound; RSS can only grow then).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let holding = server.rss_kib();
    // 100 more that send 1 MiB of it: each is closed with 4001 once it passes the cap.
    let mut refused = Vec::new();
    for _ in 0..100 {
        refused.push(tokio::spawn(async move {
            let mut stream =
                raw_socket_with(addr, &unfinished_text_frame(15_000_000, 1 << 20)).await;
            let mut reply = [0u8; 64];
            let n = tokio::time::timeout(STEP, stream.read(&mut reply))
                .await
                .expect("a Close in time")
                .expect("read");
            (n >= 4)
                .then(|| (reply[0], u16::from_be_bytes([reply[2], reply[3]])))
                .expect("a close frame")
        }));
    }
    for task in refused {
        assert_eq!(task.await.expect("task"), (0x88, 4001));
    }
    let after = server.rss_kib();
    eprintln!(
        "first-message RSS: baseline {baseline} KiB, 100 sockets holding 7 KiB each {holding} KiB, \
         after 100 sockets sent 1 MiB each {after} KiB"
    );
    // Before the cap, four such sockets took the server from 4.5 MB to 122 MB. 100 sockets at
    // the cap hold 700 KiB of payload; allow 32 MiB for buffers and allocator slack.
    assert!(
        holding.saturating_sub(baseline) < 32 * 1024,
        "{baseline} -> {holding} KiB"
    );
    assert!(
        after.saturating_sub(baseline) < 32 * 1024,
        "{baseline} -> {after} KiB"
    );
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn key_files_skip_comments_and_short_or_jwt_shaped_keys_are_refused() {
    let comment = "# production keys, rotate monthly";
    let file = temp_file("comment-keys", &format!("{comment}\n{FILE_KEY}\n"));
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        file.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(
        get(
            server.addr,
            "/api/whoami",
            &[("X-Session-API-Key", comment)]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        get(
            server.addr,
            "/api/whoami",
            &[("X-Session-API-Key", FILE_KEY)]
        )
        .await
        .status,
        200
    );
    server.stop().await;

    let short = temp_file("short-keys", "# keys\nS3CR3T-x\n");
    let (code, text) = refused(&["--key-file", short.to_str().expect("utf-8")]).await;
    assert_eq!(code, Some(2));
    assert!(
        text.contains("line 2") && text.contains("at least 16 bytes"),
        "{text}"
    );
    assert!(!text.contains("S3CR3T"), "{text}");
    let (code, text) = refused(&["--session-api-key", "S3CR3T-x"]).await;
    assert_eq!(code, Some(2));
    assert!(
        text.contains("at least 16 bytes") && !text.contains("S3CR3T"),
        "{text}"
    );

    let secret = temp_file("jwt-shaped-secret", JWT_SECRET);
    let (code, text) = refused(&[
        "--session-api-key",
        "eyJS3CR3T.eyJwYXlsb2Fk.c2lnbmF0dXJl",
        "--jwt-secret-file",
        secret.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(code, Some(2));
    assert!(text.contains("shape of a JWT"), "{text}");
    assert!(!text.contains("S3CR3T"), "{text}");
    for path in [file, short, secret] {
        std::fs::remove_file(path).expect("cleanup");
    }
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_and_redacts_near_misses() {
    let server =
        Server::start_with_log(&["--listen", "127.0.0.1:0", "--session-api-key", KEY], None).await;
    let addr = server.addr;
    let names = [
        "Session_Api_Key",
        "session_api_key[]",
        "session-api-key",
        "SESSION_API_KEY",
        "X-Session-API-Key",
        "access_token",
    ];
    for name in names {
        get(
            addr,
            &format!("/api/whoami?{name}=Agent-S3CR3T-near-miss"),
            &[],
        )
        .await;
    }
    get(addr, "/api/whoami", &[("X-Session-API-Key", KEY)]).await;
    let log = server.stop().await;
    assert!(
        !log.contains("S3CR3T"),
        "a credential reached the log:\n{log}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("finished processing request"))
        .collect();
    assert_eq!(lines.len(), names.len() + 1, "one line per request:\n{log}");
    for name in names {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("uri=/api/whoami?{name}=[REDACTED]"))),
            "{name}:\n{log}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("status=200")), "{log}");
}

#[tokio::test]
async fn requests_without_host_get_400_and_foreign_schemes_are_cross_site() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "--session-api-key", KEY]).await;
    let addr = server.addr;
    let no_host =
        format!("GET /api/whoami HTTP/1.1\r\nConnection: close\r\nX-Session-API-Key: {KEY}\r\n");
    let reply = raw_http(addr, no_host.as_bytes()).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("www-authenticate"), None);
    for scheme in ["ftp", "chrome-extension", "file"] {
        let origin = format!("{scheme}://{addr}");
        let refused = ws_connect(
            addr,
            "/sockets/events",
            &[("Origin", &origin), ("X-Session-API-Key", KEY)],
        )
        .await;
        assert_eq!(refused.expect_err("403").status, 403, "{scheme}");
    }
    server.stop().await;
}

#[tokio::test]
async fn jwt_lifetimes_are_capped() {
    let secret = temp_file("jwt-lifetime-secret", JWT_SECRET);
    let secret = secret.to_str().expect("utf-8").to_owned();
    let now = unix_now();
    let forever = agent_jwt(serde_json::json!({"iss": null, "aud": null, "exp": 1u64 << 62}));
    let two_days = agent_jwt(serde_json::json!({"iss": null, "aud": null, "exp": now + 172_800}));
    let hour = agent_jwt(serde_json::json!({"iss": null, "aud": null, "exp": now + 3600}));
    let bearer = |t: &str| format!("Bearer {t}");
    let server = Server::start(&["--listen", "127.0.0.1:0", "--jwt-secret-file", &secret]).await;
    let status = |addr, token: &str| {
        let header = bearer(token);
        async move {
            get(addr, "/api/whoami", &[("Authorization", &header)])
                .await
                .status
        }
    };
    assert_eq!(status(server.addr, &forever).await, 401, "exp = 2^62");
    assert_eq!(
        status(server.addr, &two_days).await,
        401,
        "over the default day"
    );
    assert_eq!(status(server.addr, &hour).await, 200);
    server.stop().await;
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret-file",
        &secret,
        "--jwt-max-lifetime-secs",
        "259200",
    ])
    .await;
    assert_eq!(status(server.addr, &two_days).await, 200);
    assert_eq!(status(server.addr, &forever).await, 401);
    server.stop().await;
    std::fs::remove_file(&secret).expect("cleanup");
}

#[tokio::test]
async fn half_sent_request_heads_are_timed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--header-read-timeout-ms",
        "300",
    ])
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "GET /api/whoami HTTP/1.1\r\nHost: {}\r\nX-Sess",
                server.addr
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    // The server gives up after 300 ms; STEP (10 s) is only the test's own bound.
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(STEP, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the server never closed the half-sent request"
    );
    // Complete requests on fresh connections are unaffected.
    assert_eq!(get(server.addr, "/health", &[]).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn help_prints_the_usage_and_exits_0() {
    let output = Command::new(common::example_binary("agent_server"))
        .arg("--help")
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--jwt-max-lifetime-secs",
        "--header-read-timeout-ms",
        "--insecure-no-auth",
        "--failure-limit",
        "--failure-window-secs",
        "--trusted-proxy",
    ] {
        assert!(usage.contains(flag), "{usage}");
    }
}

const LOOPBACK_TWO: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn get_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> common::Reply {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    common::raw_http_from(from, addr, &get_head(addr, target, &headers)).await
}

fn assert_limited(reply: &common::Reply) {
    assert_eq!(reply.status, 429, "{reply:?}");
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    // --failure-window-secs 3600 with --failure-limit 2: one attempt back every 1800 s.
    assert!((1..=1800).contains(&retry), "Retry-After {retry}");
    assert_eq!(reply.header("www-authenticate"), None);
    assert!(!reply.body_text().contains("S3CR3T"));
}

#[tokio::test]
async fn failure_limit_answers_429_after_n_refused_keys_from_one_address() {
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--admin-key",
        "Admin-S3CR3T-key",
        "--failure-limit",
        "2",
        "--failure-window-secs",
        "3600",
    ])
    .await;
    let addr = server.addr;
    let one = std::net::IpAddr::from([127, 0, 0, 1]);
    let wrong = [("X-Session-API-Key", "Agent-S3CR3T-wrong")];
    let valid = [("X-Session-API-Key", KEY)];
    for _ in 0..5 {
        assert_eq!(
            get_from(one, addr, "/api/whoami", &[]).await.status,
            401,
            "not counted"
        );
    }
    assert_eq!(get_from(one, addr, "/api/whoami", &wrong).await.status, 401);
    assert_eq!(get_from(one, addr, "/api/whoami", &wrong).await.status, 401);
    assert_limited(&get_from(one, addr, "/api/whoami", &wrong).await);
    assert_limited(&get_from(one, addr, "/api/whoami", &valid).await);
    let ws = common::ws_connect_from(one, addr, "/sockets/events", &valid).await;
    assert_limited(&ws.expect_err("429"));
    // The admin routes have their own budget.
    let admin = get_from(
        one,
        addr,
        "/admin/sandboxes/x",
        &[("X-Admin-Key", "Admin-S3CR3T-bad")],
    )
    .await;
    assert_eq!(admin.status, 401);
    // Open routes are not guarded, and another address is another peer.
    assert_eq!(get_from(one, addr, "/health", &[]).await.status, 200);
    assert_eq!(
        get_from(LOOPBACK_TWO, addr, "/api/whoami", &valid)
            .await
            .status,
        200
    );
    let mut socket = common::ws_connect_from(LOOPBACK_TWO, addr, "/sockets/events", &valid)
        .await
        .expect("101 for the other address");
    let hello = common::next_json(&mut socket).await;
    assert_eq!(hello["subject"], key_subject(KEY));
    socket.close(None).await.expect("close");

    let stderr = server.stop().await;
    assert!(!stderr.contains("S3CR3T"), "{stderr}");
}

#[tokio::test]
async fn trusted_proxy_makes_the_forwarded_client_the_peer() {
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--failure-limit",
        "2",
        "--failure-window-secs",
        "3600",
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .await;
    let addr = server.addr;
    let one = std::net::IpAddr::from([127, 0, 0, 1]);
    let via = |client: &'static str, key: &'static str| {
        [("X-Forwarded-For", client), ("X-Session-API-Key", key)]
    };
    for _ in 0..2 {
        let reply = get_from(
            one,
            addr,
            "/api/whoami",
            &via("198.51.100.1", "Agent-S3CR3T-x"),
        )
        .await;
        assert_eq!(reply.status, 401);
    }
    assert_limited(&get_from(one, addr, "/api/whoami", &via("198.51.100.1", KEY)).await);
    // The proxy's other clients are not.
    assert_eq!(
        get_from(one, addr, "/api/whoami", &via("198.51.100.2", KEY))
            .await
            .status,
        200
    );
    // A peer that is not a trusted proxy cannot pick its own address.
    for client in ["203.0.113.1", "203.0.113.2"] {
        let reply = get_from(
            LOOPBACK_TWO,
            addr,
            "/api/whoami",
            &via(client, "Agent-S3CR3T-x"),
        )
        .await;
        assert_eq!(reply.status, 401);
    }
    assert_limited(&get_from(LOOPBACK_TWO, addr, "/api/whoami", &via("203.0.113.3", KEY)).await);
    server.stop().await;
}

#[tokio::test]
async fn failure_limit_options_are_checked_at_start_up() {
    for (args, expected) in [
        (
            &["--session-api-key", KEY, "--failure-limit", "0"][..],
            "--failure-limit",
        ),
        (
            &["--session-api-key", KEY, "--failure-limit", "x"][..],
            "--failure-limit",
        ),
        (
            &[
                "--session-api-key",
                KEY,
                "--failure-limit",
                "3",
                "--failure-window-secs",
                "0",
            ][..],
            "--failure-window-secs",
        ),
        (
            &["--session-api-key", KEY, "--failure-window-secs", "9"][..],
            "need --failure-limit",
        ),
        (
            &["--session-api-key", KEY, "--trusted-proxy", "10.0.0.0/8"][..],
            "need --failure-limit",
        ),
        (
            &[
                "--session-api-key",
                KEY,
                "--failure-limit",
                "3",
                "--trusted-proxy",
                "10.0.0.0/40",
            ][..],
            "trusted proxy",
        ),
        (
            &["--insecure-no-auth", "--failure-limit", "3"][..],
            "needs authentication",
        ),
    ] {
        let (code, text) = refused(args).await;
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}
