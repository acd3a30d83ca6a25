//! Authorization after authentication: every requirement kind, passing and failing, on every
//! surface (the guard layer's `require`, a `RequireLayer` inside and outside the guard layer,
//! `WithGuard` without a guard layer, `GuardedUpgrade` behind the layer and alone), over real
//! loopback sockets; the exact challenge; handlers and `on_upgrade` never run on `403`; an open
//! socket closed with `4003` when its record loses the right.

use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::FromRef;
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Extension, Router};
use axum_keyguard::ws::{FirstMessage, GuardedUpgrade};
use axum_keyguard::{
    Authenticated, CredentialDigest, Grants, Guard, HasRoles, HasScopes, MemoryStore, OwnsResource,
    Require, ScopedKey, ScopedKeys, SessionKeys, WithGuard,
};
use common::{get_head, next_text, raw_http, spawn, until_close, ws_connect, Reply};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// The principal: a record in the store.
#[derive(Clone, Debug)]
struct Agent {
    name: &'static str,
    scopes: &'static str,
    roles: &'static [&'static str],
    sandbox: Option<&'static str>,
    tenant: &'static str,
}

impl HasScopes for Agent {
    fn has_scope(&self, scope: &str) -> bool {
        axum_keyguard::scope_claim_contains(self.scopes, scope)
    }
}

impl HasRoles for Agent {
    fn has_role(&self, role: &str) -> bool {
        self.roles.contains(&role)
    }
}

impl OwnsResource for Agent {
    fn owns_resource(&self, param: &str, value: &str) -> bool {
        param == "id" && self.sandbox == Some(value)
    }
}

const ALICE: Agent = Agent {
    name: "alice",
    scopes: "read write",
    roles: &["admin"],
    sandbox: Some("7"),
    tenant: "acme",
};
const BOB: Agent = Agent {
    name: "bob",
    scopes: "write secret-scope-xyz",
    roles: &[],
    sandbox: None,
    tenant: "globex",
};
const CAROL: Agent = Agent {
    name: "carol",
    scopes: "sandbox:7",
    roles: &[],
    sandbox: None,
    tenant: "acme",
};
const DAVE: Agent = Agent {
    name: "dave",
    scopes: "sandboxes:*",
    roles: &[],
    sandbox: None,
    tenant: "acme",
};
const ERIN: Agent = Agent {
    name: "erin",
    scopes: "read",
    roles: &["viewer"],
    sandbox: None,
    tenant: "acme",
};

fn key_of(agent: &Agent) -> String {
    format!("{}-session-key-0123456789", agent.name)
}

fn store() -> MemoryStore<Agent> {
    let store = MemoryStore::new();
    for agent in [ALICE, BOB, CAROL, DAVE, ERIN] {
        store.insert(CredentialDigest::of(key_of(&agent).as_bytes()), agent);
    }
    store
}

fn guard(store: &MemoryStore<Agent>) -> Guard<Agent> {
    Guard::builder()
        .with_verifier(SessionKeys::new(store.clone()))
        .build()
        .expect("guard")
}

#[derive(Clone, Default)]
struct Hits {
    handler: Arc<AtomicUsize>,
    upgraded: Arc<AtomicUsize>,
}

impl Hits {
    fn counts(&self) -> (usize, usize) {
        (
            self.handler.load(Ordering::SeqCst),
            self.upgraded.load(Ordering::SeqCst),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Surface {
    /// `guard.layer().require(..)`.
    GuardLayer,
    /// `RequireLayer` behind the guard layer.
    RequireInside,
    /// `RequireLayer` in front of the guard layer: the guard layer checks it.
    RequireOutside,
    /// `RequireLayer` and `WithGuard`, no guard layer.
    Extractor,
    /// `guard.layer().require(..)` in front of `GuardedUpgrade` (and `Authenticated` on REST).
    Upgrade,
    /// `RequireLayer` and `WithGuard<GuardedUpgrade>`, no guard layer.
    UpgradeAlone,
}

const SURFACES: [Surface; 6] = [
    Surface::GuardLayer,
    Surface::RequireInside,
    Surface::RequireOutside,
    Surface::Extractor,
    Surface::Upgrade,
    Surface::UpgradeAlone,
];

#[derive(Clone, FromRef)]
struct AppState {
    guard: Guard<Agent>,
}

async fn rest(
    Extension(hits): Extension<Hits>,
    Authenticated(agent): Authenticated<Agent>,
) -> String {
    hits.handler.fetch_add(1, Ordering::SeqCst);
    agent.name.to_owned()
}

async fn rest_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(agent): WithGuard<Authenticated<Agent>>,
) -> String {
    rest(Extension(hits), agent).await
}

async fn plain_socket(
    Extension(hits): Extension<Hits>,
    Authenticated(agent): Authenticated<Agent>,
    ws: WebSocketUpgrade,
) -> Response {
    hits.handler.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(move |mut socket| async move {
        hits.upgraded.fetch_add(1, Ordering::SeqCst);
        let _ = socket.send(agent.name.into()).await;
        while let Some(Ok(_)) = socket.recv().await {}
    })
}

async fn plain_socket_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(agent): WithGuard<Authenticated<Agent>>,
    ws: WebSocketUpgrade,
) -> Response {
    plain_socket(Extension(hits), agent, ws).await
}

async fn guarded_socket(Extension(hits): Extension<Hits>, ws: GuardedUpgrade<Agent>) -> Response {
    hits.handler.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(move |mut socket| async move {
        hits.upgraded.fetch_add(1, Ordering::SeqCst);
        let name = socket.principal().name;
        if socket.send(name.into()).await.is_err() {
            return;
        }
        while let Some(message) = socket.recv().await {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    })
}

async fn guarded_socket_alone(
    Extension(hits): Extension<Hits>,
    WithGuard(ws): WithGuard<GuardedUpgrade<Agent>>,
) -> Response {
    guarded_socket(Extension(hits), ws).await
}

fn app(surface: Surface, guard: &Guard<Agent>, require: Require<Agent>, hits: &Hits) -> Router {
    let hits = Extension(hits.clone());
    match surface {
        Surface::GuardLayer => Router::new()
            .route("/r/{id}", get(rest))
            .route("/ws/{id}", any(plain_socket))
            .route_layer(guard.layer().require(require))
            .layer(hits),
        Surface::RequireInside => Router::new()
            .route("/r/{id}", get(rest))
            .route("/ws/{id}", any(plain_socket))
            .route_layer(require.layer())
            .route_layer(guard.layer())
            .layer(hits),
        Surface::RequireOutside => Router::new()
            .route("/r/{id}", get(rest))
            .route("/ws/{id}", any(plain_socket))
            .route_layer(guard.layer())
            .route_layer(require.layer())
            .layer(hits),
        Surface::Extractor => Router::new()
            .route("/r/{id}", get(rest_alone))
            .route("/ws/{id}", any(plain_socket_alone))
            .route_layer(require.layer())
            .layer(hits)
            .with_state(AppState {
                guard: guard.clone(),
            }),
        Surface::Upgrade => Router::new()
            .route("/r/{id}", get(rest))
            .route("/ws/{id}", any(guarded_socket))
            .route_layer(guard.layer().require(require))
            .layer(hits),
        Surface::UpgradeAlone => Router::new()
            .route("/r/{id}", get(rest_alone))
            .route("/ws/{id}", any(guarded_socket_alone))
            .route_layer(require.layer())
            .layer(hits)
            .with_state(AppState {
                guard: guard.clone(),
            }),
    }
}

const BARE: &str = r#"Bearer realm="axum-keyguard", error="insufficient_scope""#;

fn challenge(scopes: &str) -> String {
    if scopes.is_empty() {
        BARE.to_owned()
    } else {
        format!(r#"{BARE}, scope="{scopes}""#)
    }
}

/// `None`: allowed. `Some(scopes)`: 403, naming `scopes` (empty: no scope attribute).
type Expect = Option<&'static str>;

struct Case {
    name: &'static str,
    require: fn() -> Require<Agent>,
    who: Agent,
    id: &'static str,
    expect: Expect,
}

fn tenant_matches() -> Require<Agent> {
    Require::predicate(|agent: &Agent, head| {
        head.headers()
            .get("x-tenant")
            .is_some_and(|t| t.as_bytes() == agent.tenant.as_bytes())
    })
}

fn cases() -> Vec<Case> {
    let case = |name, require, who, id, expect| Case {
        name,
        require,
        who,
        id,
        expect,
    };
    vec![
        case(
            "scope held",
            || Require::scope("read").expect("r"),
            ALICE,
            "1",
            None,
        ),
        case(
            "scope missing",
            || Require::scope("read").expect("r"),
            BOB,
            "1",
            Some("read"),
        ),
        case(
            "every scope of a list",
            || Require::scopes(["read", "write"]).expect("r"),
            ERIN,
            "1",
            Some("read write"),
        ),
        case(
            "role held",
            || Require::role("admin").expect("r"),
            ALICE,
            "1",
            None,
        ),
        case(
            "role missing",
            || Require::role("admin").expect("r"),
            ERIN,
            "1",
            Some(""),
        ),
        case(
            "owns its sandbox",
            || Require::owns("id").expect("r"),
            ALICE,
            "7",
            None,
        ),
        case(
            "another sandbox",
            || Require::owns("id").expect("r"),
            ALICE,
            "8",
            Some(""),
        ),
        case(
            "scope bound to the path",
            || Require::scope("sandbox:{id}").expect("r"),
            CAROL,
            "7",
            None,
        ),
        case(
            "scope bound to another path",
            || Require::scope("sandbox:{id}").expect("r"),
            CAROL,
            "8",
            Some("sandbox:8"),
        ),
        case("predicate holds", tenant_matches, ALICE, "1", None),
        case("predicate fails", tenant_matches, BOB, "1", Some("")),
        case(
            "any of: the wildcard scope",
            || {
                Require::owns("id")
                    .expect("r")
                    .or(Require::scope("sandbox:{id}").expect("r"))
                    .or(Require::scope("sandboxes:*").expect("r"))
            },
            DAVE,
            "8",
            None,
        ),
        case(
            "any of: none",
            || {
                Require::any_of([
                    Require::owns("id").expect("r"),
                    Require::scope("sandbox:{id}").expect("r"),
                    Require::scope("sandboxes:*").expect("r"),
                ])
                .expect("r")
            },
            BOB,
            "8",
            Some("sandbox:8 sandboxes:*"),
        ),
        case(
            "all of: both",
            || {
                Require::all_of([
                    Require::scope("read").expect("r"),
                    Require::role("admin").expect("r"),
                ])
                .expect("r")
            },
            ALICE,
            "1",
            None,
        ),
        case(
            "all of: one missing",
            || {
                Require::scope("read")
                    .expect("r")
                    .and(Require::role("admin").expect("r"))
            },
            ERIN,
            "1",
            Some("read"),
        ),
    ]
}

fn assert_forbidden(reply: &Reply, scopes: &str, who: &Agent, what: &str) {
    assert_eq!(reply.status, 403, "{what}");
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some(challenge(scopes).as_str()),
        "{what}"
    );
    assert_eq!(reply.body_text(), "forbidden", "{what}");
    // No secret and nothing of the principal: not its key, its name or its own scopes.
    let all = format!("{:?}{}", reply.headers, reply.body_text());
    for leaked in [
        key_of(who).as_str(),
        who.name,
        "secret-scope-xyz",
        who.tenant,
    ] {
        assert!(!all.contains(leaked), "{what}: {leaked} in {all}");
    }
}

#[tokio::test]
async fn every_requirement_kind_passes_and_fails_alike_on_every_surface() {
    let store = store();
    let guard = guard(&store);
    for case in cases() {
        for surface in SURFACES {
            let hits = Hits::default();
            let addr = spawn(app(surface, &guard, (case.require)(), &hits)).await;
            let key = key_of(&case.who);
            let tenant = "acme";
            let what = format!("{} on {surface:?}", case.name);

            let head = get_head(
                addr,
                &format!("/r/{}", case.id),
                &[
                    ("X-Session-API-Key", key.as_bytes()),
                    ("X-Tenant", tenant.as_bytes()),
                ],
            );
            let reply = raw_http(addr, &head).await;
            match case.expect {
                None => {
                    assert_eq!(reply.status, 200, "{what}: {}", reply.body_text());
                    assert_eq!(reply.body_text(), case.who.name, "{what}");
                    assert_eq!(hits.counts(), (1, 0), "{what}");
                }
                Some(scopes) => {
                    assert_forbidden(&reply, scopes, &case.who, &format!("REST {what}"));
                    assert_eq!(hits.counts(), (0, 0), "{what}: the handler ran");
                }
            }

            let target = format!("/ws/{}", case.id);
            let connected = ws_connect(
                addr,
                &target,
                &[("X-Session-API-Key", &key), ("X-Tenant", tenant)],
            )
            .await;
            match (case.expect, connected) {
                (None, Ok(mut socket)) => {
                    assert_eq!(next_text(&mut socket).await, case.who.name, "{what}");
                    assert_eq!(hits.counts(), (2, 1), "{what}");
                }
                (Some(scopes), Err(reply)) => {
                    assert_forbidden(&reply, scopes, &case.who, &format!("WebSocket {what}"));
                    assert_eq!(hits.counts().1, 0, "{what}: on_upgrade ran");
                    assert_eq!(hits.counts().0, 0, "{what}: the handler ran");
                }
                (expect, Ok(_)) => panic!("{what}: 101, expected {expect:?}"),
                (expect, Err(reply)) => panic!("{what}: {reply:?}, expected {expect:?}"),
            }
        }
    }
}

#[tokio::test]
async fn authentication_failures_keep_their_status_before_any_requirement() {
    let store = store();
    let guard = guard(&store);
    for surface in SURFACES {
        let hits = Hits::default();
        let addr = spawn(app(
            surface,
            &guard,
            Require::scope("read").expect("r"),
            &hits,
        ))
        .await;
        let missing = raw_http(addr, &get_head(addr, "/r/1", &[])).await;
        assert_eq!(missing.status, 401, "{surface:?}");
        let wrong = get_head(
            addr,
            "/r/1",
            &[("X-Session-API-Key", b"wrong-key-0123456789")],
        );
        let wrong = raw_http(addr, &wrong).await;
        assert_eq!(
            (wrong.status, wrong.header("www-authenticate")),
            (
                401,
                Some(r#"Bearer realm="axum-keyguard", error="invalid_token""#.to_owned())
            ),
            "{surface:?}"
        );
        assert_eq!(hits.counts(), (0, 0));
    }
}

#[tokio::test]
async fn an_optional_layer_with_a_requirement_refuses_anonymous_requests_with_401() {
    let store = store();
    let guard = guard(&store);
    let hits = Hits::default();
    let app = Router::new()
        .route("/r/{id}", get(rest))
        .route_layer(Require::<Agent>::scope("read").expect("r").layer())
        .route_layer(guard.layer().optional())
        .layer(Extension(hits.clone()));
    let addr = spawn(app).await;
    let reply = raw_http(addr, &get_head(addr, "/r/1", &[])).await;
    assert_eq!(reply.status, 401);
    let key = key_of(&ALICE);
    let reply = raw_http(
        addr,
        &get_head(addr, "/r/1", &[("X-Session-API-Key", key.as_bytes())]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(hits.counts(), (1, 0));
}

#[tokio::test]
async fn a_requirement_no_guard_checks_fails_closed_with_500() {
    let store = store();
    let guard = guard(&store);
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    // No guard layer and no `WithGuard`: nothing ever knows the principal.
    let unguarded = Router::new()
        .route(
            "/r/{id}",
            get(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "open"
            }),
        )
        .route_layer(Require::<Agent>::scope("read").expect("r").layer());
    let addr = spawn(unguarded).await;
    let reply = raw_http(addr, &get_head(addr, "/r/1", &[])).await;
    assert_eq!(
        (reply.status, reply.body_text().as_str()),
        (500, "internal server error")
    );

    // A requirement on a path parameter the route does not have.
    let key = key_of(&ALICE);
    let no_param = Router::new()
        .route("/r", get(|| async { "open" }))
        .route_layer(guard.layer().require(Require::owns("id").expect("r")));
    let addr = spawn(no_param).await;
    let head = get_head(addr, "/r", &[("X-Session-API-Key", key.as_bytes())]);
    assert_eq!(raw_http(addr, &head).await.status, 500);
    // `.layer()` instead of `.route_layer()`: axum 0.8 layers each route (its parameters are
    // matched), and the fallback too, where nothing was matched.
    let router_wide = Router::new()
        .route("/r/{id}", get(|| async { "open" }))
        .layer(guard.layer().require(Require::owns("id").expect("r")));
    let addr = spawn(router_wide).await;
    let head = get_head(addr, "/r/7", &[("X-Session-API-Key", key.as_bytes())]);
    assert_eq!(raw_http(addr, &head).await.status, 200);
    let head = get_head(addr, "/unknown", &[("X-Session-API-Key", key.as_bytes())]);
    assert_eq!(raw_http(addr, &head).await.status, 500);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the unguarded handler ran once, and got 500"
    );
}

#[tokio::test]
async fn first_message_auth_checks_the_requirement_after_the_auth_frame_and_closes_4003() {
    let store = store();
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store.clone()))
        .with_first_message_auth(FirstMessage::new())
        .build()
        .expect("guard");
    for surface in [Surface::Upgrade, Surface::UpgradeAlone] {
        let hits = Hits::default();
        let addr = spawn(app(surface, &guard, Require::owns("id").expect("r"), &hits)).await;
        let mut socket = ws_connect(addr, "/ws/8", &[])
            .await
            .expect("101 without a credential");
        let auth = format!(
            r#"{{"type":"auth","session_api_key":"{}"}}"#,
            key_of(&ALICE)
        );
        socket.send(Message::text(auth)).await.expect("send");
        let (texts, code, reason) = until_close(&mut socket).await;
        assert_eq!(
            (texts.len(), code, reason.as_str()),
            (0, 4003, "forbidden"),
            "{surface:?}"
        );
        assert_eq!(hits.counts().1, 0, "{surface:?}: on_upgrade ran");

        let mut socket = ws_connect(addr, "/ws/7", &[]).await.expect("101");
        let auth = format!(
            r#"{{"type":"auth","session_api_key":"{}"}}"#,
            key_of(&ALICE)
        );
        socket.send(Message::text(auth)).await.expect("send");
        assert_eq!(next_text(&mut socket).await, "alice", "{surface:?}");
    }
}

/// Polls `condition` (a state change on another task) with a generous bound: a loaded 2-core
/// machine may be slow to run the other task, and no wall-clock timing is asserted.
async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + common::STEP;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_open_socket_whose_record_loses_the_right_closes_with_4003() {
    for surface in [Surface::Upgrade, Surface::UpgradeAlone] {
        let store = store();
        let guard = guard(&store);
        let hits = Hits::default();
        let addr = spawn(app(
            surface,
            &guard,
            Require::scope("read").expect("r"),
            &hits,
        ))
        .await;
        let key = key_of(&ALICE);
        let digest = CredentialDigest::of(key.as_bytes());
        let mut socket = ws_connect(addr, "/ws/7", &[("X-Session-API-Key", &key)])
            .await
            .expect("101");
        assert_eq!(next_text(&mut socket).await, "alice");
        wait_for(|| hits.counts().1 == 1).await;

        // A change that keeps the right: the socket stays open.
        let mut kept = ALICE;
        kept.scopes = "read admin";
        assert!(store.update(&digest, kept));
        socket
            .send(Message::text("still here?"))
            .await
            .expect("send");
        assert_eq!(next_text(&mut socket).await, "still here?", "{surface:?}");

        // The scope withdrawn: 4003, as the client sees it.
        let mut withdrawn = ALICE;
        withdrawn.scopes = "write";
        assert!(store.update(&digest, withdrawn));
        let (_, code, reason) = until_close(&mut socket).await;
        assert_eq!((code, reason.as_str()), (4003, "forbidden"), "{surface:?}");

        // New requests see the new record.
        let head = get_head(addr, "/r/7", &[("X-Session-API-Key", key.as_bytes())]);
        assert_forbidden(
            &raw_http(addr, &head).await,
            "read",
            &ALICE,
            "after the update",
        );
        assert!(ws_connect(addr, "/ws/7", &[("X-Session-API-Key", &key)])
            .await
            .is_err());
    }
}

#[tokio::test]
async fn a_record_update_on_a_path_bound_requirement_rechecks_with_the_path() {
    let store = store();
    let guard = guard(&store);
    let hits = Hits::default();
    let addr = spawn(app(
        Surface::Upgrade,
        &guard,
        Require::owns("id").expect("r"),
        &hits,
    ))
    .await;
    let key = key_of(&ALICE);
    let digest = CredentialDigest::of(key.as_bytes());
    let mut socket = ws_connect(addr, "/ws/7", &[("X-Session-API-Key", &key)])
        .await
        .expect("101");
    assert_eq!(next_text(&mut socket).await, "alice");
    let mut moved = ALICE;
    moved.sandbox = Some("9");
    assert!(store.update(&digest, moved));
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4003, "forbidden"));
}

#[tokio::test]
async fn capability_keys_carry_the_scopes_and_roles_configuration_gives_them() {
    let keys = ScopedKeys::new()
        .add_key(
            "k-tools-7f3a9c2e0d1b",
            Grants::new().add_scopes(["tools:read"]),
        )
        .expect("key")
        .add_key(
            "k-admin-b81d04f6a2c9",
            Grants::new()
                .add_scopes(["tools:read", "tools:write"])
                .add_roles(["operator"]),
        )
        .expect("key");
    let guard = Guard::builder().with_verifier(keys).build().expect("guard");
    let write = Require::<ScopedKey>::scope("tools:write").expect("r");
    let operator = Require::<ScopedKey>::role("operator").expect("r");
    let app = Router::new()
        .route(
            "/tools",
            get(|Authenticated(k): Authenticated<ScopedKey>| async move { k.to_string() }),
        )
        .route(
            "/tools/deploy",
            get(|| async { "deployed" }).route_layer(write.layer()),
        )
        .route(
            "/admin",
            get(|| async { "admin" }).route_layer(operator.layer()),
        )
        .route_layer(guard.layer());
    let addr = spawn(app).await;
    let call = |path: &'static str, key: &'static str| async move {
        raw_http(
            addr,
            &get_head(addr, path, &[("X-Session-API-Key", key.as_bytes())]),
        )
        .await
    };
    assert_eq!(call("/tools", "k-tools-7f3a9c2e0d1b").await.status, 200);
    let refused = call("/tools/deploy", "k-tools-7f3a9c2e0d1b").await;
    assert_eq!(
        (refused.status, refused.header("www-authenticate")),
        (403, Some(challenge("tools:write")))
    );
    assert_eq!(call("/admin", "k-tools-7f3a9c2e0d1b").await.status, 403);
    assert_eq!(
        call("/tools/deploy", "k-admin-b81d04f6a2c9").await.status,
        200
    );
    assert_eq!(
        call("/admin", "k-admin-b81d04f6a2c9").await.body_text(),
        "admin"
    );
}

#[tokio::test]
async fn jwt_claims_are_checked_by_their_scope_claim() {
    use axum_keyguard::{Claims, Jwt, JwtAlgorithm, JwtKey, JwtKeyring};
    let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [5u8; 32]).expect("key")])
        .expect("keyring");
    let jwt = Jwt::builder(keyring).build().expect("jwt");
    let mint = |scope: &str| {
        let mut claims = Claims::default();
        claims.sub = Some("user-1".into());
        claims.scope = Some(scope.into());
        jwt.mint(&claims, Duration::from_secs(600)).expect("mint")
    };
    let (sandbox_7, all, none) = (mint("sandbox:7"), mint("sandboxes:* other"), mint("other"));
    let guard = Guard::builder()
        .with_verifier(jwt.clone())
        .build()
        .expect("guard");
    let require = Require::<Claims>::scope("sandbox:{id}")
        .expect("r")
        .or(Require::scope("sandboxes:*").expect("r"));
    let app = Router::new()
        .route("/sandboxes/{id}", get(|| async { "ok" }))
        .route_layer(guard.layer().require(require));
    let addr = spawn(app).await;
    let status = |path: &str, token: &str| {
        let head = get_head(
            addr,
            path,
            &[("Authorization", format!("Bearer {token}").as_bytes())],
        );
        async move { raw_http(addr, &head).await }
    };
    assert_eq!(status("/sandboxes/7", &sandbox_7).await.status, 200);
    assert_eq!(status("/sandboxes/8", &all).await.status, 200);
    let refused = status("/sandboxes/8", &sandbox_7).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(challenge("sandbox:8 sandboxes:*"))
    );
    assert!(!format!("{:?}{}", refused.headers, refused.body_text()).contains(&sandbox_7));
    assert_eq!(status("/sandboxes/7", &none).await.status, 403);
    // A path value that is not scope-token text names no scope in the challenge.
    let refused = status("/sandboxes/a%22b", &none).await;
    assert_eq!(
        refused.header("www-authenticate"),
        Some(challenge("sandboxes:*"))
    );
}

#[test]
fn debug_of_requirements_layers_and_scoped_keys_shows_no_secret() {
    let key = "k-debug-S3CR3T-0123456789";
    let keys = ScopedKeys::new()
        .add_key(
            key,
            Grants::new().add_scopes(["tools:read"]).add_roles(["ops"]),
        )
        .expect("key");
    let guard = Guard::builder()
        .with_verifier(keys.clone())
        .build()
        .expect("guard");
    let require = Require::<ScopedKey>::scope("tools:{id}")
        .expect("r")
        .or(Require::role("ops").expect("r"))
        .and(Require::predicate(|_, _| true));
    let shown = format!(
        "{keys:?} {require:?} {:?} {:?}",
        require.layer(),
        guard.layer().require(require.clone())
    );
    assert!(
        shown.contains("tools:{id}") && shown.contains("Predicate"),
        "{shown}"
    );
    assert!(!shown.contains(key) && !shown.contains("S3CR3T"), "{shown}");
}

/// A store of its own: one record whose scopes the test changes, read again by open sockets.
#[derive(Clone)]
struct OneRecord {
    scopes: Arc<std::sync::Mutex<&'static str>>,
    revoker: axum_keyguard::Revoker,
}

impl OneRecord {
    fn agent(&self) -> Agent {
        Agent {
            scopes: *self.scopes.lock().expect("lock"),
            ..ALICE
        }
    }
}

impl axum_keyguard::SessionStore for OneRecord {
    type Record = Agent;

    fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> impl std::future::Future<
        Output = Result<Option<axum_keyguard::KeyRecord<Agent>>, axum_keyguard::StoreError>,
    > + Send {
        let known = *key == CredentialDigest::of(key_of(&ALICE).as_bytes());
        let this = self.clone();
        let record = known.then(|| {
            axum_keyguard::KeyRecord::active(self.agent())
                .with_revocation(self.revoker.subscribe())
                .with_current(move || Some(this.agent()))
        });
        std::future::ready(Ok(record))
    }
}

#[tokio::test]
async fn any_store_can_have_open_sockets_check_a_changed_record_again() {
    let store = OneRecord {
        scopes: Arc::new(std::sync::Mutex::new("read")),
        revoker: axum_keyguard::Revoker::new(),
    };
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store.clone()))
        .build()
        .expect("guard");
    let hits = Hits::default();
    let addr = spawn(app(
        Surface::Upgrade,
        &guard,
        Require::scope("read").expect("r"),
        &hits,
    ))
    .await;
    let key = key_of(&ALICE);
    let mut socket = ws_connect(addr, "/ws/7", &[("X-Session-API-Key", &key)])
        .await
        .expect("101");
    assert_eq!(next_text(&mut socket).await, "alice");
    *store.scopes.lock().expect("lock") = "write";
    store.revoker.record_changed();
    let (_, code, reason) = until_close(&mut socket).await;
    assert_eq!((code, reason.as_str()), (4003, "forbidden"));
}
