//! HS256 JWT on REST: the guard against axum-jwt-auth 0.7 and jwt-authorizer 0.15, with bare
//! routers, in one run.
//!
//! `cargo bench --manifest-path bench-peers/Cargo.toml`. jwt-authorizer 0.15 is built on axum
//! 0.7, so its ratio is to a bare axum 0.7 router measured in the same run.

use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use axum_keyguard::{
    scope_claim_contains, Authenticated, Claims, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring,
    Require,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use tower::ServiceExt;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";

#[derive(Clone, serde::Deserialize)]
#[allow(dead_code)]
struct PeerClaims {
    sub: String,
    exp: u64,
}

/// The claims jwt-authorizer's claim checker reads: with the `scope` claim.
#[derive(Clone, serde::Deserialize)]
#[allow(dead_code)]
struct ScopedPeerClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Clone, FromRef)]
struct PeerState {
    decoder: axum_jwt_auth::Decoder<PeerClaims>,
}

/// One `GET /api` through `app` per iteration (with `authorization` when given), on either axum
/// version (`body` makes that version's empty body); every answer must be `200`.
fn bench_get<S, B, R>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &S,
    body: fn() -> B,
    authorization: Option<&String>,
) where
    S: tower::Service<Request<B>, Response = http::Response<R>> + Clone,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.to_async(runtime).iter(|| {
            let app = app.clone();
            let mut request = Request::get("/api").header("host", "localhost");
            if let Some(value) = authorization {
                request = request.header("authorization", value.clone());
            }
            let request = request.body(body()).expect("request");
            async move {
                let response = app.oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), 200);
                response
            }
        });
    });
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let keyring =
        JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, SECRET).expect("key")]).expect("keyring");
    let build = |cache: usize| {
        Jwt::builder(keyring.clone())
            .with_issuer("bench")
            .with_audience("svc")
            .with_token_cache(cache)
            .build()
            .expect("jwt")
    };
    let jwt = build(10_000);
    let mut claims = Claims::default();
    claims.sub = Some("user-123".to_owned());
    let token = jwt.mint(&claims, Duration::from_secs(3600)).expect("mint");
    // The scope check: the same token with a `scope` claim, on both sides.
    claims.scope = Some("profile tools:read email".to_owned());
    let scoped_token = jwt.mint(&claims, Duration::from_secs(3600)).expect("mint");
    let scoped_guard = Guard::builder()
        .with_verifier(jwt.clone())
        .build()
        .expect("guard");
    let scope_route = |layer: axum_keyguard::GuardLayer<Claims>| -> Router {
        Router::new()
            .route(
                "/api",
                get(|Authenticated(_c): Authenticated<Claims>| async { "ok" }),
            )
            .route_layer(layer)
    };
    let scope = Require::<Claims>::scope("tools:read").expect("scope");
    let scope_cases = [
        (
            "guard, scoped token, no requirement (cached)",
            scope_route(scoped_guard.layer()),
        ),
        (
            "guard, scoped token, require(scope) (cached)",
            scope_route(scoped_guard.layer().require(scope)),
        ),
    ];

    let guarded = |jwt: Jwt<Claims>| -> Router {
        let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
        Router::new()
            .route(
                "/api",
                get(|Authenticated(_c): Authenticated<Claims>| async { "ok" }),
            )
            .route_layer(guard.layer())
    };

    let mut validation = jsonwebtoken10::Validation::new(jsonwebtoken10::Algorithm::HS256);
    validation.set_issuer(&["bench"]);
    validation.set_audience(&["svc"]);
    let decoder = axum_jwt_auth::LocalDecoder::new(
        vec![jsonwebtoken10::DecodingKey::from_secret(SECRET)],
        validation,
    )
    .expect("decoder");
    let peer: Router = Router::new()
        .route(
            "/api",
            get(|_claims: axum_jwt_auth::Claims<PeerClaims>| async { "ok" }),
        )
        .with_state(PeerState {
            decoder: std::sync::Arc::new(decoder),
        });
    let bare: Router = Router::new().route("/api", get(|| async { "ok" }));

    let cases = [
        ("bare router (no header)", bare.clone(), false),
        ("bare router, same header", bare, true),
        ("axum-jwt-auth 0.7, valid", peer, true),
        ("guard, valid, first sight", guarded(build(0)), true),
        ("guard, valid, repeat (cached)", guarded(jwt), true),
    ];
    let mut group = c.benchmark_group("peers");
    let authorization = format!("Bearer {token}");

    // jwt-authorizer 0.15 on axum 0.7, beside a bare axum 0.7 router.
    let authorizer = runtime.block_on(async {
        use jwt_authorizer::{JwtAuthorizer, Validation};
        let secret = std::str::from_utf8(SECRET).expect("ascii secret");
        JwtAuthorizer::<PeerClaims>::from_secret(secret)
            .validation(Validation::new().iss(&["bench"]).aud(&["svc"]))
            .build()
            .await
            .expect("authorizer")
    });
    let bare07: axum07::Router =
        axum07::Router::new().route("/api", axum07::routing::get(|| async { "ok" }));
    let authorized07: axum07::Router = axum07::Router::new()
        .route(
            "/api",
            axum07::routing::get(|_claims: jwt_authorizer::JwtClaims<PeerClaims>| async { "ok" }),
        )
        .layer(jwt_authorizer::IntoLayer::into_layer(authorizer));
    // jwt-authorizer's claim checker against its own unchecked layer, on the scoped token.
    let (plain_scoped, checked) = runtime.block_on(async {
        use jwt_authorizer::{JwtAuthorizer, Validation};
        let secret = std::str::from_utf8(SECRET).expect("ascii secret");
        let build = || {
            JwtAuthorizer::<ScopedPeerClaims>::from_secret(secret)
                .validation(Validation::new().iss(&["bench"]).aud(&["svc"]))
        };
        let plain = build().build().await.expect("authorizer");
        let checked = build()
            .check(|c: &ScopedPeerClaims| {
                c.scope
                    .as_deref()
                    .is_some_and(|s| scope_claim_contains(s, "tools:read"))
            })
            .build()
            .await
            .expect("authorizer");
        (plain, checked)
    });
    let scoped07 = |authorizer| -> axum07::Router {
        axum07::Router::new()
            .route(
                "/api",
                axum07::routing::get(
                    |_claims: jwt_authorizer::JwtClaims<ScopedPeerClaims>| async { "ok" },
                ),
            )
            .layer(jwt_authorizer::IntoLayer::into_layer(authorizer))
    };
    let scoped_authorization = format!("Bearer {scoped_token}");
    for (name, app, header) in [
        ("axum 0.7 bare router, same header", bare07, &authorization),
        (
            "jwt-authorizer 0.15 (axum 0.7), valid",
            authorized07,
            &authorization,
        ),
        (
            "jwt-authorizer 0.15, scoped token, no checker",
            scoped07(plain_scoped),
            &scoped_authorization,
        ),
        (
            "jwt-authorizer 0.15, scoped token, check(scope)",
            scoped07(checked),
            &scoped_authorization,
        ),
    ] {
        bench_get(
            &mut group,
            &runtime,
            name,
            &app,
            axum07::body::Body::empty,
            Some(header),
        );
    }

    for (name, app, with_token) in cases {
        let token = with_token.then_some(&authorization);
        bench_get(&mut group, &runtime, name, &app, Body::empty, token);
    }
    for (name, app) in scope_cases {
        bench_get(
            &mut group,
            &runtime,
            name,
            &app,
            Body::empty,
            Some(&scoped_authorization),
        );
    }
    group.finish();
}

/// Key-set JWTs (RS256, ES256, EdDSA): the guard over a `Jwks` against jwt-authorizer 0.15 over
/// the same JWK Set text (`from_jwks_text`), each beside its own bare router, in one run.
fn bench_asymmetric(c: &mut Criterion) {
    use axum_keyguard::{FetchFuture, Jwks, JwksFetch};
    use jsonwebtoken10::{Algorithm, EncodingKey};

    struct Fixed(String);
    impl JwksFetch for Fixed {
        fn fetch(&self, _uri: &http::Uri, _max_bytes: usize) -> FetchFuture {
            let body = bytes::Bytes::from(self.0.clone());
            Box::pin(async move { Ok(http::Response::new(body)) })
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({"sub": "user-123", "iss": "bench", "aud": "svc",
        "iat": now, "exp": now + 3600});
    for (name, alg, private) in [
        ("RS256", Algorithm::RS256, "rsa-a.pem"),
        ("ES256", Algorithm::ES256, "ec-p256.pem"),
        ("EdDSA", Algorithm::EdDSA, "ed25519.pem"),
    ] {
        let pem = std::fs::read(format!(
            "{}/../integration/tests/fixtures/jwks/{private}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("key");
        // The same set for both verifiers; each token names its key's kid.
        let set = std::fs::read_to_string(format!(
            "{}/../integration/tests/fixtures/jwks/public.jwks.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        let mut header = jsonwebtoken10::Header::new(alg);
        header.kid = Some(format!("k1-{name}"));
        let token = jsonwebtoken10::encode(&header, &claims, &encoding).expect("sign");
        let authorization = format!("Bearer {token}");

        let jwks = runtime
            .block_on(
                Jwks::builder("http://127.0.0.1/keys")
                    .expect("url")
                    .with_fetch(Fixed(set.clone()))
                    .build(),
            )
            .expect("jwks");
        let guarded = |cache: usize| -> Router {
            let jwt = Jwt::builder(jwks.clone())
                .with_issuer("bench")
                .with_audience("svc")
                .with_token_cache(cache)
                .build()
                .expect("jwt");
            let guard = Guard::builder().with_verifier(jwt).build().expect("guard");
            Router::new()
                .route(
                    "/api",
                    get(|Authenticated(_claims): Authenticated<Claims>| async { "ok" }),
                )
                .route_layer(guard.layer())
        };
        let authorizer = runtime.block_on(async {
            use jwt_authorizer::{JwtAuthorizer, Validation};
            JwtAuthorizer::<PeerClaims>::from_jwks_text(&set)
                .validation(Validation::new().iss(&["bench"]).aud(&["svc"]))
                .build()
                .await
                .expect("authorizer")
        });
        let bare07: axum07::Router =
            axum07::Router::new().route("/api", axum07::routing::get(|| async { "ok" }));
        let authorized07: axum07::Router = axum07::Router::new()
            .route(
                "/api",
                axum07::routing::get(|_claims: jwt_authorizer::JwtClaims<PeerClaims>| async {
                    "ok"
                }),
            )
            .layer(jwt_authorizer::IntoLayer::into_layer(authorizer));
        let mut group = c.benchmark_group(format!("peers {name}"));
        // The raw primitives, no router: the same token, key and checks.
        let public = std::fs::read(format!(
            "{}/../integration/tests/fixtures/jwks/{}",
            env!("CARGO_MANIFEST_DIR"),
            private.replace(".pem", ".pub.pem")
        ))
        .expect("fixture");
        {
            use jsonwebtoken9 as jwt9;
            let key = match alg {
                Algorithm::RS256 => jwt9::DecodingKey::from_rsa_pem(&public),
                Algorithm::ES256 => jwt9::DecodingKey::from_ec_pem(&public),
                _ => jwt9::DecodingKey::from_ed_pem(&public),
            }
            .expect("key");
            let alg9 = match alg {
                Algorithm::RS256 => jwt9::Algorithm::RS256,
                Algorithm::ES256 => jwt9::Algorithm::ES256,
                _ => jwt9::Algorithm::EdDSA,
            };
            let mut validation = jwt9::Validation::new(alg9);
            validation.set_issuer(&["bench"]);
            validation.set_audience(&["svc"]);
            group.bench_function("raw jsonwebtoken 9 decode (ring)", |b| {
                b.iter(|| {
                    jwt9::decode::<serde_json::Value>(&token, &key, &validation).expect("valid")
                });
            });
        }
        {
            let key = match alg {
                Algorithm::RS256 => jsonwebtoken10::DecodingKey::from_rsa_pem(&public),
                Algorithm::ES256 => jsonwebtoken10::DecodingKey::from_ec_pem(&public),
                _ => jsonwebtoken10::DecodingKey::from_ed_pem(&public),
            }
            .expect("key");
            let mut validation = jsonwebtoken10::Validation::new(alg);
            validation.set_issuer(&["bench"]);
            validation.set_audience(&["svc"]);
            group.bench_function("raw jsonwebtoken 10 decode (RustCrypto)", |b| {
                b.iter(|| {
                    jsonwebtoken10::decode::<serde_json::Value>(&token, &key, &validation)
                        .expect("valid")
                });
            });
        }
        for (case, app) in [
            ("axum 0.7 bare router, same header", bare07),
            (
                "jwt-authorizer 0.15 (axum 0.7), from_jwks_text, valid",
                authorized07,
            ),
        ] {
            bench_get(
                &mut group,
                &runtime,
                case,
                &app,
                axum07::body::Body::empty,
                Some(&authorization),
            );
        }
        let bare: Router = Router::new().route("/api", get(|| async { "ok" }));
        for (case, app) in [
            ("bare router, same header", bare),
            ("guard over Jwks, valid, first sight", guarded(0)),
            ("guard over Jwks, valid, repeat (cached)", guarded(10_000)),
        ] {
            bench_get(
                &mut group,
                &runtime,
                case,
                &app,
                Body::empty,
                Some(&authorization),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench, bench_asymmetric);
criterion_main!(benches);
