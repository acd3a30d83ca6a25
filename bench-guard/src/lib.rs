//! The cases of the hot-path table (BENCHMARKS.md, "The hot path in instructions"): one list,
//! measured twice — in wall time by criterion (`benches/guard.rs`, group `floor`) and in
//! instructions by callgrind (`src/bin/count.rs` through `counts.sh`). Each case is a router, the
//! one request it gets and the status it must answer; both harnesses check that status before
//! they measure, so no case can measure an error path by mistake.
#![allow(missing_docs)]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_keyguard::{
    Authenticated, Claims, CredentialDigest, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, KeyId,
    Keys, MemoryStore, SessionKeys, WithGuard,
};
use http::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::ServiceExt;

/// 43 bytes, like a base64url-encoded 32-byte key.
pub const KEY: &str = "bench-key-0123456789abcdefghijklmnopqrstuv";
pub const WRONG: &str = "wrong-key-0123456789abcdefghijklmnopqrstuv";
pub const JWT_SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";

/// One case of the table.
pub struct Case {
    pub name: &'static str,
    pub router: Router,
    /// The one header the request carries beside `host`.
    pub header: Option<(&'static str, String)>,
    pub status: StatusCode,
}

impl Case {
    pub fn request(&self) -> Request<Body> {
        let mut builder = Request::get("/api").header("host", "localhost");
        if let Some((name, value)) = &self.header {
            builder = builder.header(*name, value);
        }
        builder.body(Body::empty()).expect("request")
    }

    /// One request through the router, its status checked.
    pub async fn run(&self) {
        let response = self
            .router
            .clone()
            .oneshot(self.request())
            .await
            .expect("infallible");
        assert_eq!(response.status(), self.status, "{}", self.name);
    }
}

pub fn bare() -> Router {
    Router::new().route("/api", get(|| async { "ok" }))
}

/// The floor for any layer under `route_layer`: a hand-written service that only forwards.
#[derive(Clone)]
pub struct Passthrough<S>(pub S);

impl<S, B> tower::Service<Request<B>> for Passthrough<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        self.0.call(request)
    }
}

/// The expected key's digest, computed once as a user would.
pub static EXPECTED: LazyLock<[u8; 32]> = LazyLock::new(|| Sha256::digest(KEY.as_bytes()).into());

/// The hand-written peer: SHA-256 of the presented key against the stored digest with `subtle`,
/// in `axum::middleware::from_fn`.
pub async fn sha256_from_fn(request: AxumRequest, next: Next) -> Response {
    let presented = request
        .headers()
        .get("x-session-api-key")
        .map(|v| -> [u8; 32] { Sha256::digest(v.as_bytes()).into() });
    match presented {
        Some(p) if bool::from(p.ct_eq(&*EXPECTED)) => next.run(request).await,
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The name the extension peer hands on, computed once.
static PEER_ID: LazyLock<KeyId> =
    LazyLock::new(|| KeyId::of(&CredentialDigest::of(KEY.as_bytes())));

/// The same peer handing the key's name to the handler the way users do, as an extension read
/// by `Extension<KeyId>`: the hand-off the guard's layer + extractor make too.
pub async fn sha256_extension_from_fn(mut request: AxumRequest, next: Next) -> Response {
    let presented = request
        .headers()
        .get("x-session-api-key")
        .map(|v| -> [u8; 32] { Sha256::digest(v.as_bytes()).into() });
    match presented {
        Some(p) if bool::from(p.ct_eq(&*EXPECTED)) => {
            request.extensions_mut().insert(*PEER_ID);
            next.run(request).await
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The JWT peer a user writes: `jsonwebtoken::decode` in `from_fn`, with the key and the
/// `Validation` built once and shared (not rebuilt or cloned per request).
pub fn jsonwebtoken_from_fn() -> Router {
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["bench"]);
    validation.set_audience(&["svc"]);
    validation.leeway = 30;
    let shared = Arc::new((key, validation));
    bare().route_layer(middleware::from_fn(
        move |request: AxumRequest, next: Next| {
            let shared = Arc::clone(&shared);
            async move {
                let (key, validation) = &*shared;
                let token = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                match token.map(|t| jsonwebtoken::decode::<Claims>(t, key, validation)) {
                    Some(Ok(_)) => next.run(request).await,
                    _ => StatusCode::UNAUTHORIZED.into_response(),
                }
            }
        },
    ))
}

fn keyring() -> JwtKeyring {
    JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, JWT_SECRET).expect("key")]).expect("keyring")
}

/// A verifier with the table's checks; `cache` is the verified-token cache's capacity.
pub fn jwt(cache: usize) -> Jwt<Claims> {
    Jwt::builder(keyring())
        .with_issuer("bench")
        .with_audience("svc")
        .with_token_cache(cache)
        .build()
        .expect("jwt")
}

/// A token the table's verifiers accept (`sub`, `iss`, `aud`, an hour of life).
pub fn token() -> String {
    let mut claims = Claims::default();
    claims.sub = Some("user-123".to_owned());
    jwt(0)
        .mint(&claims, Duration::from_secs(3600))
        .expect("mint")
}

fn key_guard() -> Guard<KeyId> {
    Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .build()
        .expect("guard")
}

fn jwt_router(cache: usize) -> Router {
    let guard = Guard::builder()
        .with_verifier(jwt(cache))
        .build()
        .expect("guard");
    Router::new()
        .route(
            "/api",
            get(|Authenticated(_claims): Authenticated<Claims>| async { "ok" }),
        )
        .route_layer(guard.layer())
}

/// A store of `n` keys `session-key-0000000`…, behind a guard, with the extractor.
pub fn store_router(n: u32) -> Router {
    let store = MemoryStore::new();
    for i in 0..n {
        store.insert(
            CredentialDigest::of(format!("session-key-{i:07}").as_bytes()),
            i,
        );
    }
    let guard = Guard::builder()
        .with_verifier(SessionKeys::new(store))
        .build()
        .expect("guard");
    Router::new()
        .route(
            "/api",
            get(|Authenticated(_id): Authenticated<u32>| async { "ok" }),
        )
        .route_layer(guard.layer())
}

fn header(value: &str) -> Option<(&'static str, String)> {
    Some(("x-session-api-key", value.to_owned()))
}

fn bearer(value: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {value}")))
}

/// The names of every case, in table order; [`case`] builds one by its index.
pub const NAMES: &[&str] = &[
    "bare router, key header",
    "bare router, bearer key",
    "bare router, bearer JWT",
    "bare router, store key header",
    "floor: pass-through layer, key header",
    "peer: from_fn sha256+subtle, valid",
    "peer: from_fn sha256+subtle, invalid",
    "peer: tower-http bearer, valid",
    "peer: from_fn jsonwebtoken::decode, valid",
    "key valid, layer + extractor",
    "key valid, layer",
    "key valid, extractor alone",
    "key invalid, layer",
    "key invalid, extractor alone",
    "key missing, layer",
    "JWT HS256, first sight (cache off)",
    "JWT HS256, repeat (cached)",
    "store, 1 key, valid",
    "store, 1,000,000 keys, valid",
    "peer: from_fn sha256+subtle + Extension<KeyId>, valid",
];

/// For each case of [`NAMES`], the bare-router case with the same request: its ratios are to
/// that one.
pub const BASELINE: &[usize] = &[0, 1, 2, 3, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 2, 2, 3, 3, 0];

/// Builds case `index` of [`NAMES`] (only that one: a store of a million keys is not built for
/// the others).
pub fn case(index: usize) -> Case {
    let name = NAMES[index];
    let ok = StatusCode::OK;
    let refused = StatusCode::UNAUTHORIZED;
    let with_extractor = || {
        Router::new()
            .route(
                "/api",
                get(|Authenticated(_key): Authenticated<KeyId>| async { "ok" }),
            )
            .route_layer(key_guard().layer())
    };
    let extractor_alone = || -> Router {
        Router::new()
            .route(
                "/api",
                get(
                    |WithGuard(Authenticated(_key)): WithGuard<Authenticated<KeyId>>| async {
                        "ok"
                    },
                ),
            )
            .with_state(key_guard())
    };
    #[allow(deprecated)] // the peer users still reach for: compares with `==`
    let tower_http_bearer = || {
        bare().route_layer(tower_http::validate_request::ValidateRequestHeaderLayer::bearer(KEY))
    };
    let (router, header, status) = match index {
        0 => (bare(), header(KEY), ok),
        1 => (bare(), bearer(KEY), ok),
        2 => (bare(), bearer(&token()), ok),
        3 => (bare(), header("session-key-0000000"), ok),
        4 => (
            bare().route_layer(tower::layer::layer_fn(Passthrough)),
            header(KEY),
            ok,
        ),
        5 => (
            bare().route_layer(middleware::from_fn(sha256_from_fn)),
            header(KEY),
            ok,
        ),
        6 => (
            bare().route_layer(middleware::from_fn(sha256_from_fn)),
            header(WRONG),
            refused,
        ),
        7 => (tower_http_bearer(), bearer(KEY), ok),
        8 => (jsonwebtoken_from_fn(), bearer(&token()), ok),
        9 => (with_extractor(), header(KEY), ok),
        10 => (bare().route_layer(key_guard().layer()), header(KEY), ok),
        11 => (extractor_alone(), header(KEY), ok),
        12 => (with_extractor(), header(WRONG), refused),
        13 => (extractor_alone(), header(WRONG), refused),
        14 => (with_extractor(), None, refused),
        15 => (jwt_router(0), bearer(&token()), ok),
        16 => (jwt_router(1024), bearer(&token()), ok),
        17 => (store_router(1), header("session-key-0000000"), ok),
        18 => (store_router(1_000_000), header("session-key-0500000"), ok),
        19 => (
            Router::new()
                .route(
                    "/api",
                    get(|axum::Extension(_key): axum::Extension<KeyId>| async { "ok" }),
                )
                .route_layer(middleware::from_fn(sha256_extension_from_fn)),
            header(KEY),
            ok,
        ),
        _ => panic!("no case {index}"),
    };
    Case {
        name,
        router,
        header,
        status,
    }
}
