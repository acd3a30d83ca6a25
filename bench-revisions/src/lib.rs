//! The same routers built on two revisions of axum-keyguard, for `benches/revisions.rs`
//! (criterion, wall time) and `src/bin/count.rs` (callgrind, instructions).
#![allow(missing_docs)]

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use tower::ServiceExt;

/// 43 bytes, like a base64url-encoded 32-byte key.
pub const KEY: &str = "bench-key-0123456789abcdefghijklmnopqrstuv";
pub const WRONG: &str = "wrong-key-0123456789abcdefghijklmnopqrstuv";

/// One case: a router, the request it gets, and the status it must answer.
pub struct Case {
    pub name: &'static str,
    pub router: Router,
    /// The one header the request carries beside `host`.
    pub header: Option<(&'static str, String)>,
    pub status: StatusCode,
}

fn key(value: &str) -> Option<(&'static str, String)> {
    Some(("x-session-api-key", value.to_owned()))
}

fn bearer(value: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {value}")))
}

pub const JWT_SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";

impl Case {
    pub fn request(&self) -> Request<Body> {
        let mut builder = Request::get("/api").header("host", "localhost");
        if let Some((name, value)) = &self.header {
            builder = builder.header(*name, value);
        }
        builder.body(Body::empty()).expect("request")
    }

    /// One request, its status checked.
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

fn bare() -> Router {
    Router::new().route("/api", get(|| async { "ok" }))
}

macro_rules! cases {
    ($krate:ident, $prefix:literal, $sessions:ident) => {{
        use $krate::{
            Authenticated, Claims, CredentialDigest, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring,
            KeyId, Keys, MemoryStore,
        };
        let jwt = |cache: usize| {
            let keyring =
                JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, JWT_SECRET).expect("key")])
                    .expect("keyring");
            Jwt::builder(keyring)
                .with_issuer("bench")
                .with_audience("svc")
                .with_token_cache(cache)
                .build()
                .expect("jwt")
        };
        let token = {
            let mut claims = Claims::default();
            claims.sub = Some("user-123".to_owned());
            jwt(0)
                .mint(&claims, std::time::Duration::from_secs(3600))
                .expect("mint")
        };
        let jwt_router = |cache: usize| {
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
        };
        let guard = Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("keys"))
            .build()
            .expect("guard");
        let with_extractor = Router::new()
            .route(
                "/api",
                get(|Authenticated(_key): Authenticated<KeyId>| async { "ok" }),
            )
            .route_layer(guard.layer());
        let layer_only = bare().route_layer(guard.layer());
        let store = MemoryStore::new();
        for i in 0..1000u32 {
            store.insert(CredentialDigest::of(format!("{KEY}{i}").as_bytes()), i);
        }
        store.insert(CredentialDigest::of(KEY.as_bytes()), 1000u32);
        let store_guard = Guard::builder()
            .with_verifier($krate::$sessions::new(store))
            .build()
            .expect("guard");
        let store_router = Router::new()
            .route(
                "/api",
                get(|Authenticated(_id): Authenticated<u32>| async { "ok" }),
            )
            .route_layer(store_guard.layer());
        vec![
            Case {
                name: concat!($prefix, " key valid, layer + extractor"),
                router: with_extractor,
                header: key(KEY),
                status: StatusCode::OK,
            },
            Case {
                name: concat!($prefix, " key valid, layer"),
                router: layer_only.clone(),
                header: key(KEY),
                status: StatusCode::OK,
            },
            Case {
                name: concat!($prefix, " key invalid, layer"),
                router: layer_only.clone(),
                header: key(WRONG),
                status: StatusCode::UNAUTHORIZED,
            },
            Case {
                name: concat!($prefix, " key missing, layer"),
                router: layer_only,
                header: None,
                status: StatusCode::UNAUTHORIZED,
            },
            Case {
                name: concat!($prefix, " store (1001 keys), layer + extractor"),
                router: store_router,
                header: key(KEY),
                status: StatusCode::OK,
            },
            Case {
                name: concat!($prefix, " JWT HS256, first sight (cache off)"),
                router: jwt_router(0),
                header: bearer(&token),
                status: StatusCode::OK,
            },
            Case {
                name: concat!($prefix, " JWT HS256, repeat (cached)"),
                router: jwt_router(1024),
                header: bearer(&token),
                status: StatusCode::OK,
            },
        ]
    }};
}

/// Every case: the bare router, then each guard case at the old and the new revision, paired.
pub fn cases() -> Vec<Case> {
    let old = cases!(old, "old", SessionKeys);
    let new = cases!(new, "new", SessionKeys);
    let mut all = vec![Case {
        name: "bare router",
        router: bare(),
        header: key(KEY),
        status: StatusCode::OK,
    }];
    for (o, n) in old.into_iter().zip(new) {
        all.push(o);
        all.push(n);
    }
    all
}
