//! One credential matrix, run against every surface: the layer and the extractor alone, on REST
//! (in-process and over a loopback socket) and on WebSocket upgrades (a raw client and
//! tokio-tungstenite). Every surface must give the same status, challenge and body, and the
//! handler must run exactly for the accepted cases.

use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::FromRef;
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Extension, Router};
use axum_keyguard::ws::GuardedUpgrade;
use axum_keyguard::{Authenticated, Guard, Identity, KeyId, Keys, WithGuard};
use common::{get_head, raw_http, spawn, ws_connect, Reply, UPGRADE_HEADERS};
use http_body_util::BodyExt;
use tower::ServiceExt;

const KEY: &str = "test-key-123-abcdefgh";
const OTHER_KEY: &str = "second-key_@#$.-abcdefgh";

fn guard() -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(Keys::new([KEY, OTHER_KEY]).expect("keys"))
        .build()
        .expect("guard")
}

fn subject(key: &str) -> String {
    KeyId::of(&axum_keyguard::CredentialDigest::of(key.as_bytes())).to_string()
}

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

impl Hits {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn rest(
    Extension(hits): Extension<Hits>,
    Authenticated(key): Authenticated<KeyId>,
) -> String {
    hits.0.fetch_add(1, Ordering::SeqCst);
    key.to_string()
}

/// `Authenticated` comes before `WebSocketUpgrade`, so that without the layer the credential is
/// checked before the upgrade headers are.
async fn socket(
    Extension(hits): Extension<Hits>,
    Authenticated(key): Authenticated<KeyId>,
    ws: WebSocketUpgrade,
) -> Response {
    hits.0.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(move |mut socket| async move {
        let _ = socket.send(key.to_string().into()).await;
        // Keep the socket until the client goes.
        while let Some(Ok(_)) = socket.recv().await {}
    })
}

/// The guard as a layer, in a router without state.
fn layer_app(hits: &Hits) -> Router {
    Router::new()
        .route("/rest", get(rest))
        .route("/ws", any(socket))
        .route_layer(guard().layer())
        .layer(Extension(hits.clone()))
}

#[derive(Clone, FromRef)]
struct AppState {
    guard: Guard<KeyId>,
}

async fn rest_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(Authenticated(key)): WithGuard<Authenticated<KeyId>>,
) -> String {
    rest(Extension(hits), Authenticated(key)).await
}

async fn socket_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(Authenticated(key)): WithGuard<Authenticated<KeyId>>,
    ws: WebSocketUpgrade,
) -> Response {
    socket(Extension(hits), Authenticated(key), ws).await
}

/// No layer: `WithGuard` resolves with the guard in the state.
fn extractor_app(hits: &Hits) -> Router {
    Router::new()
        .route("/rest", get(rest_alone))
        .route("/ws", any(socket_alone))
        .layer(Extension(hits.clone()))
        .with_state(AppState { guard: guard() })
}

async fn rest_verified(Extension(hits): Extension<Hits>, verified: Identity<KeyId>) -> String {
    rest(Extension(hits), Authenticated(verified.into_principal())).await
}

async fn guarded_socket(Extension(hits): Extension<Hits>, ws: GuardedUpgrade<KeyId>) -> Response {
    hits.0.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(|socket| async move {
        let _ = socket.send(socket.principal().to_string().into()).await;
        let mut socket = socket;
        while socket.recv().await.is_some() {}
    })
}

/// The layer in front of `Identity` and `GuardedUpgrade`.
fn guarded_upgrade_app(hits: &Hits) -> Router {
    Router::new()
        .route("/rest", get(rest_verified))
        .route("/ws", any(guarded_socket))
        .route_layer(guard().layer())
        .layer(Extension(hits.clone()))
}

async fn rest_verified_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(verified): WithGuard<Identity<KeyId>>,
) -> String {
    rest_verified(Extension(hits), verified).await
}

async fn guarded_socket_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(ws): WithGuard<GuardedUpgrade<KeyId>>,
) -> Response {
    guarded_socket(Extension(hits), ws).await
}

/// `Identity` and `GuardedUpgrade` without a layer, through `WithGuard`.
fn guarded_upgrade_alone_app(hits: &Hits) -> Router {
    Router::new()
        .route("/rest", get(rest_verified_alone))
        .route("/ws", any(guarded_socket_alone))
        .layer(Extension(hits.clone()))
        .with_state(AppState { guard: guard() })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Accepted, authenticated as this key.
    Ok(&'static str),
    /// 401 with a bare challenge.
    Missing,
    /// 400 invalid_request.
    BadRequest,
    /// 401 invalid_token.
    Invalid,
}

impl Expect {
    fn outcome(self) -> Option<(u16, Option<String>, String)> {
        let challenge = |error: Option<&str>| match error {
            None => Some("Bearer realm=\"axum-keyguard\"".to_owned()),
            Some(e) => Some(format!("Bearer realm=\"axum-keyguard\", error=\"{e}\"")),
        };
        match self {
            Self::Ok(_) => None,
            Self::Missing => Some((401, challenge(None), "unauthorized".into())),
            Self::BadRequest => Some((
                400,
                challenge(Some("invalid_request")),
                "bad request".into(),
            )),
            Self::Invalid => Some((401, challenge(Some("invalid_token")), "unauthorized".into())),
        }
    }
}

struct Case {
    name: &'static str,
    query: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    rest: Expect,
    ws: Expect,
}

fn case(
    name: &'static str,
    query: &'static str,
    headers: &[(&'static str, &[u8])],
    rest: Expect,
    ws: Expect,
) -> Case {
    Case {
        name,
        query,
        headers: headers.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
        rest,
        ws,
    }
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let long = vec![b'a'; 4097];
    let mut cases = vec![
        case("no credential", "", &[], Missing, Missing),
        case(
            "header",
            "",
            &[("X-Session-API-Key", KEY.as_bytes())],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "header, lower-case name",
            "",
            &[("x-session-api-key", KEY.as_bytes())],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "header, upper-case name",
            "",
            &[("X-SESSION-API-KEY", KEY.as_bytes())],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "header, key with symbols",
            "",
            &[("X-Session-API-Key", OTHER_KEY.as_bytes())],
            Ok(OTHER_KEY),
            Ok(OTHER_KEY),
        ),
        case(
            "bearer",
            "",
            &[("Authorization", b"Bearer test-key-123-abcdefgh")],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "bearer, scheme lower-case, extra spaces",
            "",
            &[("Authorization", b"bearer   test-key-123-abcdefgh  ")],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "query",
            "?session_api_key=test-key-123-abcdefgh",
            &[],
            Missing,
            Ok(KEY),
        ),
        case(
            "query, percent-encoded symbols",
            "?session_api_key=second-key_%40%23%24.-abcdefgh",
            &[],
            Missing,
            Ok(OTHER_KEY),
        ),
        case(
            "header wrong",
            "",
            &[("X-Session-API-Key", b"wrong-key")],
            Invalid,
            Invalid,
        ),
        case(
            "header, value case changed",
            "",
            &[("X-Session-API-Key", b"Test-Key-123-abcdefgh")],
            Invalid,
            Invalid,
        ),
        case(
            "header, key plus suffix",
            "",
            &[("X-Session-API-Key", b"test-key-123-abcdefgh4")],
            Invalid,
            Invalid,
        ),
        case(
            "bearer wrong",
            "",
            &[("Authorization", b"Bearer wrong-key")],
            Invalid,
            Invalid,
        ),
        case(
            "query wrong",
            "?session_api_key=wrong-key",
            &[],
            Missing,
            Invalid,
        ),
        case(
            "query, raw plus is a space",
            "?session_api_key=a+b",
            &[],
            Missing,
            Invalid,
        ),
        case(
            "bearer, colon",
            "",
            &[("Authorization", b"Bearer:test-key-123-abcdefgh")],
            BadRequest,
            BadRequest,
        ),
        case(
            "bearer, no token",
            "",
            &[("Authorization", b"Bearer")],
            BadRequest,
            BadRequest,
        ),
        case(
            "bearer, extra word",
            "",
            &[("Authorization", b"Bearer test-key-123-abcdefgh extra")],
            BadRequest,
            BadRequest,
        ),
        case(
            "bearer, quoted",
            "",
            &[("Authorization", b"Bearer \"test-key-123-abcdefgh\"")],
            BadRequest,
            BadRequest,
        ),
        case(
            "bearer, tab",
            "",
            &[("Authorization", b"Bearer\ttest-key-123-abcdefgh")],
            BadRequest,
            BadRequest,
        ),
        case(
            "basic scheme only",
            "",
            &[("Authorization", b"Basic dXNlcjpwYXNz")],
            Missing,
            Missing,
        ),
        case(
            "basic scheme plus header",
            "",
            &[
                ("Authorization", b"Basic dXNlcjpwYXNz"),
                ("X-Session-API-Key", KEY.as_bytes()),
            ],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "two header lines",
            "",
            &[
                ("X-Session-API-Key", KEY.as_bytes()),
                ("X-Session-API-Key", KEY.as_bytes()),
            ],
            BadRequest,
            BadRequest,
        ),
        case(
            "two authorization lines",
            "",
            &[
                ("Authorization", b"Bearer test-key-123-abcdefgh"),
                ("Authorization", b"Bearer test-key-123-abcdefgh"),
            ],
            BadRequest,
            BadRequest,
        ),
        case(
            "query twice",
            "?session_api_key=test-key-123-abcdefgh&session_api_key=x",
            &[],
            Missing,
            BadRequest,
        ),
        case(
            "header and bearer differ",
            "",
            &[
                ("X-Session-API-Key", KEY.as_bytes()),
                ("Authorization", b"Bearer second-key"),
            ],
            BadRequest,
            BadRequest,
        ),
        case(
            "header and bearer equal",
            "",
            &[
                ("X-Session-API-Key", KEY.as_bytes()),
                ("Authorization", b"Bearer test-key-123-abcdefgh"),
            ],
            Ok(KEY),
            Ok(KEY),
        ),
        case(
            "query and header differ",
            "?session_api_key=wrong-key",
            &[("X-Session-API-Key", KEY.as_bytes())],
            Ok(KEY),
            BadRequest,
        ),
        case(
            "query and header equal",
            "?session_api_key=test-key-123-abcdefgh",
            &[("X-Session-API-Key", KEY.as_bytes())],
            Ok(KEY),
            Ok(KEY),
        ),
        case("query empty", "?session_api_key=", &[], Missing, BadRequest),
        case(
            "query empty plus valid header",
            "?session_api_key=",
            &[("X-Session-API-Key", KEY.as_bytes())],
            Ok(KEY),
            BadRequest,
        ),
        case(
            "query not UTF-8",
            "?session_api_key=%FF",
            &[],
            Missing,
            BadRequest,
        ),
        case(
            "query NUL byte",
            "?session_api_key=%00",
            &[],
            Missing,
            Invalid,
        ),
        case(
            "header not UTF-8",
            "",
            &[("X-Session-API-Key", b"\xff\xfe")],
            BadRequest,
            BadRequest,
        ),
        case(
            "bearer not ASCII",
            "",
            &[("Authorization", b"Bearer caf\xc3\xa9")],
            BadRequest,
            BadRequest,
        ),
    ];
    cases.push(Case {
        name: "header over the cap",
        query: "",
        headers: vec![("X-Session-API-Key", long.clone())],
        rest: BadRequest,
        ws: BadRequest,
    });
    let mut bearer_long = b"Bearer ".to_vec();
    bearer_long.extend_from_slice(&long);
    cases.push(Case {
        name: "bearer over the cap",
        query: "",
        headers: vec![("Authorization", bearer_long)],
        rest: BadRequest,
        ws: BadRequest,
    });
    cases
}

fn header_refs(case: &Case) -> Vec<(&str, &[u8])> {
    case.headers
        .iter()
        .map(|(n, v)| (*n, v.as_slice()))
        .collect()
}

/// REST in-process: the response of `app.oneshot(request)`.
async fn rest_oneshot(app: &Router, case: &Case) -> Reply {
    let mut request =
        http::Request::get(format!("/rest{}", case.query)).header("host", "localhost");
    for (name, value) in &case.headers {
        request = request.header(*name, http::HeaderValue::from_bytes(value).expect("value"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn check(
    surface: &str,
    case: &Case,
    expect: Expect,
    reply: &Reply,
    hits_before: usize,
    hits_after: usize,
) {
    let what = format!("{surface} / {}", case.name);
    match expect {
        Expect::Ok(key) => {
            assert!(
                reply.status == 200 || reply.status == 101,
                "{what}: expected success, got {:?}",
                reply.outcome()
            );
            if reply.status == 200 {
                assert_eq!(reply.body_text(), subject(key), "{what}");
            }
            assert_eq!(
                hits_after,
                hits_before + 1,
                "{what}: handler should run once"
            );
        }
        _ => {
            assert_eq!(Some(reply.outcome()), expect.outcome(), "{what}");
            assert_eq!(
                reply.header("content-type").as_deref(),
                Some("text/plain; charset=utf-8"),
                "{what}"
            );
            assert_eq!(hits_after, hits_before, "{what}: handler must not run");
        }
    }
}

#[tokio::test]
async fn every_surface_answers_the_credential_matrix_identically() {
    let hits: [Hits; 4] = Default::default();
    let apps = [
        ("layer", layer_app(&hits[0]), &hits[0]),
        ("extractor", extractor_app(&hits[1]), &hits[1]),
        ("guarded upgrade", guarded_upgrade_app(&hits[2]), &hits[2]),
        (
            "guarded upgrade alone",
            guarded_upgrade_alone_app(&hits[3]),
            &hits[3],
        ),
    ];
    let mut addrs = Vec::new();
    for (_, app, _) in &apps {
        addrs.push(spawn(app.clone()).await);
    }
    for case in cases() {
        for ((surface, app, hits), addr) in apps.iter().zip(&addrs) {
            let headers = header_refs(&case);

            let before = hits.get();
            let reply = rest_oneshot(app, &case).await;
            check(
                &format!("{surface} REST oneshot"),
                &case,
                case.rest,
                &reply,
                before,
                hits.get(),
            );

            let before = hits.get();
            let head = get_head(*addr, &format!("/rest{}", case.query), &headers);
            let reply = raw_http(*addr, &head).await;
            check(
                &format!("{surface} REST socket"),
                &case,
                case.rest,
                &reply,
                before,
                hits.get(),
            );

            let before = hits.get();
            let mut ws_headers = headers.clone();
            ws_headers.extend_from_slice(&UPGRADE_HEADERS);
            let head = get_head(*addr, &format!("/ws{}", case.query), &ws_headers);
            let reply = raw_http(*addr, &head).await;
            check(
                &format!("{surface} WS raw"),
                &case,
                case.ws,
                &reply,
                before,
                hits.get(),
            );

            // tokio-tungstenite only sends headers that are visible ASCII.
            let Some(text_headers) = case
                .headers
                .iter()
                .map(|(n, v)| {
                    let v = std::str::from_utf8(v).ok()?;
                    v.bytes()
                        .all(|b| (b' '..=b'~').contains(&b))
                        .then_some((*n, v))
                })
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let before = hits.get();
            match ws_connect(*addr, &format!("/ws{}", case.query), &text_headers).await {
                Ok(mut socket) => {
                    let Expect::Ok(key) = case.ws else {
                        panic!(
                            "{surface} WS client / {}: expected a refusal, got 101",
                            case.name
                        );
                    };
                    assert_eq!(common::next_text(&mut socket).await, subject(key));
                    assert_eq!(hits.get(), before + 1);
                }
                Err(reply) => check(
                    &format!("{surface} WS client"),
                    &case,
                    case.ws,
                    &reply,
                    before,
                    hits.get(),
                ),
            }
        }
    }
}
