//! Black-box tests of the reference server's key-set JWTs (`--jwks-url`, `--oidc-issuer`,
//! `--jwks-refresh-secs`) against a local identity provider, over real sockets.
#![cfg(feature = "jwks")]

use super::common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::jwks::{Provider, TestKey};
use common::{get_head, next_text, raw_http, refused, until_close, ws_connect, Server, STEP};
use jsonwebtoken::Algorithm;
use serde_json::json;

const KEY: &str = "Jwks-S3CR3T-capability-key-1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(key: &TestKey, kid: &str, iss: &str, scope: &str) -> String {
    key.sign(
        kid,
        &json!({"sub": "idp-user", "iss": iss, "aud": "agent-server", "scope": scope,
                "iat": now(), "exp": now() + 600}),
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

#[tokio::test]
async fn jwks_url_verifies_provider_tokens_and_a_dropped_key_closes_its_socket_with_4001() {
    let rsa = TestKey::new("rsa-a.pem", Algorithm::RS256);
    let ed = TestKey::new("ed25519.pem", Algorithm::EdDSA);
    let provider = Provider::start(vec![rsa.jwk("r1"), ed.jwk("e1")]).await;
    let url = provider.url();
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--session-api-key",
        KEY,
        "--jwks-url",
        &url,
        "--jwks-refresh-secs",
        "1",
        "--jwt-issuer",
        "https://idp.test",
        "--jwt-audience",
        "agent-server",
    ])
    .await;
    let addr = server.addr;
    let rs = token(&rsa, "r1", "https://idp.test", "tools");
    let eddsa = token(&ed, "e1", "https://idp.test", "tools");
    for t in [&rs, &eddsa] {
        let reply = get(addr, "/api/whoami", t).await;
        assert_eq!(reply.status, 200, "{}", reply.body_text());
        assert!(
            reply.body_text().contains("idp-user"),
            "{}",
            reply.body_text()
        );
    }
    // Capability keys still work beside the key set; unknown kids and other issuers are 401.
    assert_eq!(get(addr, "/api/whoami", KEY).await.status, 200);
    assert_eq!(
        get(
            addr,
            "/api/whoami",
            &token(&rsa, "nope", "https://idp.test", "")
        )
        .await
        .status,
        401
    );
    assert_eq!(
        get(
            addr,
            "/api/whoami",
            &token(&rsa, "r1", "https://evil.test", "")
        )
        .await
        .status,
        401
    );

    let mut rs_socket = ws_connect(
        addr,
        "/sockets/events",
        &[("Authorization", &format!("Bearer {rs}"))],
    )
    .await
    .expect("upgrade");
    let mut ed_socket = ws_connect(
        addr,
        "/sockets/events",
        &[("Authorization", &format!("Bearer {eddsa}"))],
    )
    .await
    .expect("upgrade");
    assert!(next_text(&mut rs_socket).await.contains("idp-user"));
    assert!(next_text(&mut ed_socket).await.contains("idp-user"));

    // The provider drops r1; the next background refresh (1 s) closes its socket with 4001.
    provider.set(|p| p.keys = vec![ed.jwk("e1")]);
    let (_, code, reason) = tokio::time::timeout(STEP, until_close(&mut rs_socket))
        .await
        .expect("closed within the refresh interval plus margin");
    assert_eq!(code, 4001, "{reason}");
    assert_eq!(get(addr, "/api/whoami", &rs).await.status, 401);
    assert_eq!(get(addr, "/api/whoami", &eddsa).await.status, 200);
    use futures_util::SinkExt as _;
    ed_socket
        .send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .expect("send");
    assert_eq!(next_text(&mut ed_socket).await, "ping");

    let log = server.stop().await;
    for secret in [rs.as_str(), eddsa.as_str(), KEY] {
        assert!(!log.contains(secret), "a credential reached the log");
    }
}

#[tokio::test]
async fn oidc_issuer_discovers_the_set_and_requires_its_issuer() {
    let ec = TestKey::new("ec-p256.pem", Algorithm::ES256);
    let provider = Provider::start(vec![ec.jwk("ec1")]).await;
    let issuer = provider.issuer();
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--oidc-issuer",
        &issuer,
        "--jwt-audience",
        "agent-server",
        "--require-scope",
        "tools",
    ])
    .await;
    let addr = server.addr;
    assert_eq!(
        get(addr, "/api/whoami", &token(&ec, "ec1", &issuer, "tools"))
            .await
            .status,
        200
    );
    // iss must be the discovered issuer.
    assert_eq!(
        get(
            addr,
            "/api/whoami",
            &token(&ec, "ec1", "https://idp.test", "tools")
        )
        .await
        .status,
        401
    );
    // --require-scope applies to key-set JWTs.
    let reply = get(addr, "/api/whoami", &token(&ec, "ec1", &issuer, "other")).await;
    assert_eq!(reply.status, 403);
    assert!(reply
        .header("www-authenticate")
        .expect("challenge")
        .contains("insufficient_scope"));
    assert_eq!(
        provider
            .discovery_hits
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Rotation: a new kid is fetched on first sight.
    let ec2 = TestKey::new("rsa-b.pem", Algorithm::PS256);
    provider.set(|p| p.keys = vec![ec.jwk("ec1"), ec2.jwk("ps1")]);
    assert_eq!(
        get(addr, "/api/whoami", &token(&ec2, "ps1", &issuer, "tools"))
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_key_set_or_a_bad_command_line_refuses_to_start() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let url = format!("http://user:hunter2@{closed}/keys");
    let (code, text) = refused(&["--listen", "127.0.0.1:0", "--jwks-url", &url]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot fetch the key set"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let (code, text) = refused(&[
        "--jwks-url",
        "http://127.0.0.1:1/k",
        "--oidc-issuer",
        "http://127.0.0.1:1",
    ])
    .await;
    assert_eq!(code, Some(2), "{text}");
    let (code, text) = refused(&["--session-api-key", KEY, "--jwks-refresh-secs", "5"]).await;
    assert_eq!(code, Some(2), "{text}");
    let (code, text) = refused(&[
        "--jwks-url",
        "http://127.0.0.1:1/k",
        "--jwks-refresh-secs",
        "0",
    ])
    .await;
    assert_eq!(code, Some(2), "{text}");

    // --help lists the key-set options and exits 0.
    let (code, text) = refused(&["--help"]).await;
    assert_eq!(code, Some(0));
    for flag in ["--jwks-url", "--oidc-issuer", "--jwks-refresh-secs"] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}
