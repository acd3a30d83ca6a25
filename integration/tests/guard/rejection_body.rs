//! The application's rejection body (`GuardBuilder::with_rejection_body`) over real sockets: the
//! body and content type are the application's on every surface (layer, `WithGuard` extractor,
//! `GuardedUpgrade`), while the status, the challenge and `Retry-After` stay the guard's and no
//! body can hold the credential.

use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{
    Authenticated, FailureLimit, Guard, GuardBuilder, KeyId, Keys, RejectionBody, WithGuard,
};
use common::{get_head, raw_http, spawn, spawn_with_connect_info, ws_connect, UPGRADE_HEADERS};

const KEY: &str = "rejection-body-key-0001";
const WRONG: &str = "rejection-body-key-9999-wrong";

/// A problem+json body naming the kind, and a counter of every rejection rendered.
fn problem_guard(count: &Arc<AtomicUsize>) -> GuardBuilder<KeyId> {
    let count = Arc::clone(count);
    Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .with_rejection_body(move |rejection| {
            count.fetch_add(1, Ordering::SeqCst);
            RejectionBody::problem_json(&serde_json::json!({
                "type": "about:blank",
                "title": rejection.kind().as_str(),
                "status": rejection.status().as_u16(),
                "error": rejection.error_code(),
            }))
        })
}

async fn upgrade(ws: GuardedUpgrade<KeyId>) -> Response {
    ws.on_upgrade(|_socket| async {})
}

#[derive(Clone, FromRef)]
struct State {
    guard: Guard<KeyId>,
}

/// A request's target and headers, and the status, title and challenge error it must get.
type Case<'a> = (
    &'a str,
    Vec<(&'a str, &'a [u8])>,
    u16,
    &'a str,
    Option<&'a str>,
);

fn json(reply: &common::Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).expect("a JSON body")
}

#[tokio::test]
async fn every_surface_renders_the_applications_body_and_keeps_status_and_challenge() {
    let count = Arc::new(AtomicUsize::new(0));
    let guard = problem_guard(&count).build().expect("guard");
    let layered = Router::new()
        .route(
            "/api",
            get(|Authenticated(key): Authenticated<KeyId>| async move { key.to_string() }),
        )
        .route("/ws", any(upgrade))
        .route_layer(guard.layer());
    let extractor = Router::new()
        .route(
            "/api",
            get(
                |WithGuard(Authenticated(key)): WithGuard<Authenticated<KeyId>>| async move {
                    key.to_string()
                },
            ),
        )
        .route(
            "/ws",
            any(|WithGuard(ws): WithGuard<GuardedUpgrade<KeyId>>| upgrade(ws)),
        )
        .with_state(State {
            guard: guard.clone(),
        });
    let mut rendered = 0;
    for app in [layered, extractor] {
        let addr = spawn(app).await;
        let upgrade_with = |key: &'static [u8]| {
            let mut headers = UPGRADE_HEADERS.to_vec();
            headers.push(("X-Session-API-Key", key));
            headers
        };
        let cases: [Case<'_>; 5] = [
            ("/api", vec![], 401, "missing_credential", None),
            (
                "/api",
                vec![("X-Session-API-Key", WRONG.as_bytes())],
                401,
                "invalid_credential",
                Some("invalid_token"),
            ),
            (
                "/api",
                vec![("Authorization", b"Bearer a b")],
                400,
                "malformed_credential",
                Some("invalid_request"),
            ),
            (
                "/ws",
                upgrade_with(WRONG.as_bytes()),
                401,
                "invalid_credential",
                Some("invalid_token"),
            ),
            (
                "/ws",
                UPGRADE_HEADERS.to_vec(),
                401,
                "missing_credential",
                None,
            ),
        ];
        for (target, headers, status, title, error) in cases {
            let reply = raw_http(addr, &get_head(addr, target, &headers)).await;
            assert_eq!(reply.status, status, "{target} {title}");
            assert_eq!(
                reply.header("content-type").as_deref(),
                Some("application/problem+json")
            );
            assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
            // The guard's challenge, untouched by the hook.
            let challenge = match error {
                None => "Bearer realm=\"axum-keyguard\"".to_owned(),
                Some(e) => format!("Bearer realm=\"axum-keyguard\", error=\"{e}\""),
            };
            assert_eq!(reply.header("www-authenticate"), Some(challenge));
            let body = json(&reply);
            assert_eq!(body["title"], title);
            assert_eq!(body["status"], status);
            assert_eq!(
                body["error"],
                error.map_or(serde_json::Value::Null, Into::into)
            );
            let text = reply.body_text();
            assert!(!text.contains(WRONG) && !text.contains(KEY), "{text}");
            rendered += 1;
        }
        // The valid key is not a rejection: the hook is not called.
        let ok = raw_http(
            addr,
            &get_head(addr, "/api", &[("X-Session-API-Key", KEY.as_bytes())]),
        )
        .await;
        assert_eq!(ok.status, 200);
        // A real client sees the same refusal before any 101.
        let refused = ws_connect(addr, "/ws", &[("X-Session-API-Key", WRONG)])
            .await
            .expect_err("no 101");
        assert_eq!(refused.status, 401);
        assert_eq!(json(&refused)["title"], "invalid_credential");
        rendered += 1;
    }
    // The hook saw every rejection, once each (metrics and logging live there).
    assert_eq!(count.load(Ordering::SeqCst), rendered);
}

#[tokio::test]
async fn a_limited_peer_gets_the_applications_body_with_429_and_retry_after() {
    let count = Arc::new(AtomicUsize::new(0));
    let guard = problem_guard(&count)
        .with_failure_limit(FailureLimit::new(1, Duration::from_secs(60)))
        .build()
        .expect("guard");
    let addr = spawn_with_connect_info(
        Router::new()
            .route("/api", get(|| async { "ok" }))
            .route_layer(guard.layer()),
    )
    .await;
    let wrong = get_head(addr, "/api", &[("X-Session-API-Key", WRONG.as_bytes())]);
    assert_eq!(raw_http(addr, &wrong).await.status, 401);
    let limited = raw_http(addr, &wrong).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.header("www-authenticate"), None);
    assert_eq!(json(&limited)["title"], "rate_limited");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}
