//! REST behaviour, extractor modes, asynchronous verifiers and fail-closed configuration.

use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use axum_keyguard::{
    AuthRejectionKind, Authenticated, ConfigErrorKind, Credential, CredentialDigest, Denial, Grant,
    Guard, KeyId, Keys, OriginPolicy, Source, Verdict, Verifier, WithGuard,
};
use common::{get_head, raw_http, spawn};
use http::StatusCode;
use http_body_util::BodyExt;
use tower::ServiceExt;

const KEY: &str = "rest-test-key-0123456789";

fn keys() -> Keys {
    Keys::new([KEY]).expect("keys")
}

fn default_guard() -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(keys())
        .build()
        .expect("guard")
}

async fn call(app: &Router, request: http::Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn get_req(uri: &str, headers: &[(&str, &str)]) -> http::Request<Body> {
    let mut request = http::Request::get(uri).header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn rest_query_credentials_need_an_opt_in_and_are_not_cached() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_sources([
            Source::query("session_api_key").on_rest(true),
            Source::header("X-Session-API-Key").expect("header"),
        ])
        .build()
        .expect("guard");
    let app = Router::new()
        .route(
            "/api",
            get(|Authenticated(k): Authenticated<KeyId>| async move { k.to_string() }),
        )
        .route_layer(guard.layer());
    let (status, headers, _) =
        call(&app, get_req(&format!("/api?session_api_key={KEY}"), &[])).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let (status, headers, _) = call(&app, get_req("/api", &[("x-session-api-key", KEY)])).await;
    assert_eq!(status, 200);
    assert!(headers.get("cache-control").is_none());
    assert!(headers.get("referrer-policy").is_none());

    // Without the opt-in, a REST query credential is not a credential at all.
    let app = Router::new()
        .route("/api", get(|| async { "reached" }))
        .route_layer(default_guard().layer());
    let (status, headers, _) =
        call(&app, get_req(&format!("/api?session_api_key={KEY}"), &[])).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"axum-keyguard\""
    );
}

#[tokio::test]
async fn origin_on_rest_is_checked_only_when_asked() {
    let route = |guard: Guard<KeyId>| {
        Router::new()
            .route("/api", get(|| async { "ok" }))
            .route_layer(guard.layer())
    };
    let evil = [
        ("origin", "https://evil.example"),
        ("x-session-api-key", KEY),
    ];
    let default = route(default_guard());
    assert_eq!(call(&default, get_req("/api", &evil)).await.0, 200);
    let strict = route(
        Guard::builder()
            .with_verifier(keys())
            .check_origin_on_rest(true)
            .build()
            .expect("guard"),
    );
    assert_eq!(call(&strict, get_req("/api", &evil)).await.0, 403);
    let (status, _, _) = call(
        &strict,
        get_req("/api", &[("origin", "https://evil.example")]),
    )
    .await;
    assert_eq!(
        status, 403,
        "the origin check comes before the missing-credential check"
    );
}

#[derive(Clone, FromRef)]
struct AppState {
    guard: Guard<KeyId>,
}

#[tokio::test]
async fn optional_extractor_is_none_only_without_a_credential() {
    async fn greet(WithGuard(user): WithGuard<Option<Authenticated<KeyId>>>) -> String {
        greet_layer(user).await
    }
    async fn greet_layer(user: Option<Authenticated<KeyId>>) -> String {
        match user {
            Some(Authenticated(key)) => key.to_string(),
            None => "anonymous".to_owned(),
        }
    }
    let guard = Guard::builder()
        .with_verifier(keys())
        .build()
        .expect("guard");
    // Without a layer, through `WithGuard` and the state's guard; behind an optional layer, in a
    // router without state.
    let alone = Router::new().route("/", get(greet)).with_state(AppState {
        guard: guard.clone(),
    });
    let layered = Router::new()
        .route("/", get(greet_layer))
        .route_layer(guard.layer().optional());
    for app in [alone, layered] {
        check_optional(&app).await;
    }
}

async fn check_optional(app: &Router) {
    let app = app.clone();
    assert_eq!(call(&app, get_req("/", &[])).await.2, "anonymous");
    let subject = KeyId::of(&CredentialDigest::of(KEY.as_bytes())).to_string();
    assert_eq!(
        call(&app, get_req("/", &[("x-session-api-key", KEY)]))
            .await
            .2,
        subject
    );
    let (status, headers, _) = call(&app, get_req("/", &[("x-session-api-key", "wrong")])).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"axum-keyguard\", error=\"invalid_token\""
    );
    assert_eq!(
        call(&app, get_req("/", &[("authorization", "Bearer")]))
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn extractor_without_guard_or_layer_fails_closed_with_500() {
    let app: Router = Router::new().route(
        "/",
        get(|Authenticated(k): Authenticated<KeyId>| async move { k.to_string() }),
    );
    for headers in [vec![], vec![("x-session-api-key", KEY)]] {
        let (status, headers, body) = call(&app, get_req("/", &headers)).await;
        assert_eq!(status, 500);
        assert_eq!(body, "internal server error");
        assert!(headers.get("www-authenticate").is_none());
    }
}

#[tokio::test]
async fn extractor_behind_the_layer_reuses_the_layers_result() {
    let calls = Arc::new(AtomicUsize::new(0));
    let guard = Guard::builder()
        .with_verifier(Counting {
            calls: calls.clone(),
            inner: keys(),
        })
        .build()
        .expect("guard");
    // Two extractors in one handler, behind the layer: the verifier still runs once.
    let app = Router::new()
        .route(
            "/",
            get(|Authenticated(a): Authenticated<KeyId>, b: axum_keyguard::Identity<KeyId>| async move {
                assert_eq!(&a, b.principal());
                "ok"
            }),
        )
        .route_layer(guard.layer());
    assert_eq!(
        call(&app, get_req("/", &[("x-session-api-key", KEY)]))
            .await
            .0,
        200
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Counts verifications and delegates.
struct Counting<V> {
    calls: Arc<AtomicUsize>,
    inner: V,
}

impl<V: Verifier> Verifier for Counting<V> {
    type Principal = V::Principal;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<V::Principal> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.verify(credential)
    }
}

/// A verifier that answers later, like a remote store keyed by digest.
#[derive(Clone)]
struct Store {
    known: CredentialDigest,
    fail: bool,
}

impl Verifier for Store {
    type Principal = String;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<String> {
        let digest = *credential.digest();
        let this = self.clone();
        Verdict::pending(async move {
            tokio::task::yield_now().await;
            if this.fail {
                return Err(Denial::unavailable().with_source(std::io::Error::other("store down")));
            }
            if digest.ct_eq(&this.known) {
                Ok(Grant::new("sandbox:abc".to_owned()))
            } else {
                Err(Denial::invalid())
            }
        })
    }
}

fn store_app(fail: bool, reached: &Arc<AtomicUsize>) -> Router {
    let guard = Guard::builder()
        .with_verifier(Store {
            known: CredentialDigest::of(KEY.as_bytes()),
            fail,
        })
        .build()
        .expect("guard");
    let reached = reached.clone();
    Router::new()
        .route(
            "/api",
            get(
                move |Authenticated(who): Authenticated<String>| async move {
                    reached.fetch_add(1, Ordering::SeqCst);
                    who
                },
            ),
        )
        .route_layer(guard.layer())
}

#[tokio::test]
async fn asynchronous_verifiers_run_through_the_layer() {
    let reached = Arc::new(AtomicUsize::new(0));
    let app = store_app(false, &reached);
    let (status, _, body) = call(&app, get_req("/api", &[("x-session-api-key", KEY)])).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "sandbox:abc"));
    let (status, headers, body) =
        call(&app, get_req("/api", &[("x-session-api-key", "nope")])).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"axum-keyguard\", error=\"invalid_token\""
    );
    assert_eq!(body, "unauthorized");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "the inner service is not called on rejection"
    );

    // Many at once over a real socket: each request keeps the service that was polled ready.
    let addr = spawn(app).await;
    let requests = (0..32).map(|i| {
        let key = if i % 2 == 0 { KEY } else { "nope" };
        async move {
            let head = get_head(addr, "/api", &[("X-Session-API-Key", key.as_bytes())]);
            (i, raw_http(addr, &head).await.status)
        }
    });
    for (i, status) in futures_util::future::join_all(requests).await {
        assert_eq!(status, if i % 2 == 0 { 200 } else { 401 });
    }
    assert_eq!(reached.load(Ordering::SeqCst), 17);
}

#[tokio::test]
async fn store_failure_is_503_with_retry_after_and_never_reaches_the_handler() {
    let reached = Arc::new(AtomicUsize::new(0));
    let app = store_app(true, &reached);
    let (status, headers, body) = call(&app, get_req("/api", &[("x-session-api-key", KEY)])).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "5");
    assert!(headers.get("www-authenticate").is_none());
    assert_eq!(body, "service unavailable");
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rejection_kind_is_in_the_response_extensions() {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(default_guard().layer());
    for (headers, kind) in [
        (vec![], AuthRejectionKind::MissingCredential),
        (
            vec![("x-session-api-key", "wrong")],
            AuthRejectionKind::InvalidCredential,
        ),
        (
            vec![("authorization", "Bearer a b")],
            AuthRejectionKind::MalformedCredential,
        ),
        (
            vec![
                ("x-session-api-key", KEY),
                ("authorization", "Bearer other"),
            ],
            AuthRejectionKind::ConflictingCredentials,
        ),
    ] {
        let response = app
            .clone()
            .oneshot(get_req("/", &headers))
            .await
            .expect("ok");
        assert_eq!(
            response.extensions().get::<AuthRejectionKind>(),
            Some(&kind)
        );
    }
}

#[tokio::test]
async fn unknown_paths_stay_404_with_route_layer() {
    let app = Router::new()
        .route("/api", get(|| async { "ok" }))
        .route_layer(default_guard().layer());
    assert_eq!(call(&app, get_req("/nowhere", &[])).await.0, 404);
}

#[test]
fn unsafe_configurations_are_build_errors() {
    let kind =
        |r: Result<Guard<KeyId>, axum_keyguard::ConfigError>| r.map(|_| ()).unwrap_err().kind();
    assert_eq!(
        Guard::builder().build().map(|_| ()).unwrap_err().kind(),
        ConfigErrorKind::NoVerifier
    );
    assert_eq!(
        kind(
            Guard::builder()
                .with_verifier(keys())
                .with_sources([])
                .build()
        ),
        ConfigErrorKind::Sources
    );
    assert_eq!(
        kind(
            Guard::builder()
                .with_verifier(keys())
                .add_source(Source::bearer())
                .build()
        ),
        ConfigErrorKind::Sources,
        "a source listed twice"
    );
    assert_eq!(
        kind(
            Guard::builder()
                .with_verifier(keys())
                .with_max_credential_len(0)
                .build()
        ),
        ConfigErrorKind::OutOfRange
    );
    for realm in ["", "a\"b", "a\\b", "line\nbreak", "caf\u{e9}"] {
        assert_eq!(
            kind(
                Guard::builder()
                    .with_verifier(keys())
                    .with_realm(realm)
                    .build()
            ),
            ConfigErrorKind::InvalidRealm,
            "{realm:?}"
        );
    }
    assert_eq!(
        kind(
            Guard::builder()
                .with_verifier(keys())
                .with_sources([Source::query("")])
                .build()
        ),
        ConfigErrorKind::InvalidName
    );
    assert!(OriginPolicy::allow_list(Vec::<&str>::new()).is_err());
    assert!(Keys::new(Vec::<&str>::new()).is_err());
}

#[tokio::test]
async fn custom_realm_appears_in_every_challenge() {
    let guard = Guard::builder()
        .with_verifier(keys())
        .with_realm("agents")
        .build()
        .expect("guard");
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(guard.layer());
    let (_, headers, _) = call(&app, get_req("/", &[])).await;
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"agents\"");
    let (_, headers, _) = call(&app, get_req("/", &[("authorization", "Bearer x y")])).await;
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"agents\", error=\"invalid_request\""
    );
}

#[tokio::test]
async fn credential_headers_can_be_stripped_before_the_handler() {
    async fn echo_headers(headers: http::HeaderMap, _: Authenticated<KeyId>) -> String {
        let mut names: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        names.join(",")
    }
    for strip in [false, true] {
        let guard = Guard::builder()
            .with_verifier(keys())
            .strip_credential_headers(strip)
            .build()
            .expect("guard");
        let app = Router::new()
            .route("/", get(echo_headers))
            .route_layer(guard.layer());
        let bearer = format!("Bearer {KEY}");
        let (status, _, seen) = call(
            &app,
            get_req(
                "/",
                &[
                    ("x-session-api-key", KEY),
                    ("authorization", &bearer),
                    ("x-other", "kept"),
                ],
            ),
        )
        .await;
        assert_eq!(status, 200);
        let expected = if strip {
            "host,x-other"
        } else {
            "authorization,host,x-other,x-session-api-key"
        };
        assert_eq!(seen, expected, "strip={strip}");
    }
}
