//! Two guards side by side: session keys on the user-facing routes, and short-lived scoped JWTs
//! in `X-Access-Token` on an internal tool API that accepts nothing else.
//!
//! Run it:
//!
//! ```text
//! head -c 48 /dev/urandom | base64 > /tmp/signing-secret
//! cargo run --example scoped_tokens -- --session-api-key my-session-key \
//!     --signing-secret-file /tmp/signing-secret
//! ```
//!
//! Poke it:
//!
//! ```text
//! curl -s -X POST -H 'X-Session-API-Key: my-session-key' -H 'Content-Type: application/json' \
//!     -d '{"provider_type":"github","org_id":"org-7"}' localhost:8001/api/access-tokens
//! curl -s -H "X-Access-Token: $TOKEN" localhost:8001/tools/whoami
//! ```
//!
//! The session key does not open `/tools`, and the access token does not open `/api`.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_keyguard::{
    Authenticated, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, KeyId, Keys, Source,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long a minted access token lives.
const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The router state: both guards (so the extractors find them) and the minter.
/// The claims of an access token: this application's own, beside the registered ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccessClaims {
    user_id: String,
    provider_type: String,
    org_id: String,
    scope: String,
}

#[derive(Clone, FromRef)]
struct AppState {
    sessions: Guard<KeyId>,
    access: Guard<AccessClaims>,
    minter: Jwt<AccessClaims>,
}

/// The verifier of access tokens: only tokens this server minted for the tool API.
fn access_tokens(keyring: JwtKeyring) -> Result<Jwt<AccessClaims>, axum_keyguard::ConfigError> {
    Jwt::builder(keyring)
        .claims::<AccessClaims>()
        .with_issuer("agent-server")
        .with_audience("tools")
        .with_max_lifetime(Duration::from_secs(900))
        .build()
}

fn app(keys: Keys, minter: Jwt<AccessClaims>) -> Result<Router, axum_keyguard::ConfigError> {
    let sessions = Guard::builder().with_verifier(keys).build()?;
    let access = Guard::builder()
        .with_verifier(minter.clone())
        .with_sources([Source::header("X-Access-Token")?])
        .build()?;
    let api = Router::new()
        .route("/api/access-tokens", post(mint))
        .route_layer(sessions.layer());
    let tools = Router::new()
        .route("/tools/whoami", get(tool_whoami))
        .route_layer(access.layer());
    Ok(api.merge(tools).with_state(AppState {
        sessions,
        access,
        minter,
    }))
}

#[derive(Deserialize)]
struct MintRequest {
    provider_type: String,
    org_id: String,
}

/// Mints a token scoped to the caller, a provider and an organisation.
async fn mint(
    State(minter): State<Jwt<AccessClaims>>,
    Authenticated(key): Authenticated<KeyId>,
    Json(request): Json<MintRequest>,
) -> Result<Json<Value>, StatusCode> {
    let claims = AccessClaims {
        user_id: key.to_string(),
        provider_type: request.provider_type,
        org_id: request.org_id,
        scope: "tools:read".to_owned(),
    };
    let token = minter
        .mint(&claims, ACCESS_TOKEN_LIFETIME)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(
        json!({"access_token": token, "expires_in": ACCESS_TOKEN_LIFETIME.as_secs()}),
    ))
}

async fn tool_whoami(Authenticated(claims): Authenticated<AccessClaims>) -> Json<Value> {
    Json(json!({
        "user_id": claims.user_id,
        "provider_type": claims.provider_type,
        "org_id": claims.org_id,
        "scope": claims.scope,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut keys, mut secret_file, mut listen) = (Vec::new(), None, "127.0.0.1:8001".to_owned());
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--session-api-key", Some(v)) => keys.push(v),
            ("--signing-secret-file", Some(v)) => secret_file = Some(v),
            ("--listen", Some(v)) => listen = v,
            _ => {
                eprintln!("usage: scoped_tokens --session-api-key KEY --signing-secret-file PATH [--listen ADDR]");
                return ExitCode::from(2);
            }
        }
    }
    let router = (|| {
        let secret = std::fs::read(secret_file.ok_or("--signing-secret-file is required")?)
            .map_err(|e| format!("cannot read the signing secret: {e}"))?;
        let key =
            JwtKey::new(JwtAlgorithm::Hs256, secret.trim_ascii()).map_err(|e| e.to_string())?;
        let keyring = JwtKeyring::new([key.with_kid("1")]).map_err(|e| e.to_string())?;
        let keys = Keys::new(&keys).map_err(|e| e.to_string())?;
        let minter = access_tokens(keyring).map_err(|e| e.to_string())?;
        app(keys, minter).map_err(|e| e.to_string())
    })();
    let router = match router {
        Ok(router) => router,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
    }
    match axum::serve(listener, router).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const SESSION_KEY: &str = "session-key-for-tests";
    const SECRET: &[u8] = b"signing-secret-of-at-least-32-bytes";

    fn keyring() -> JwtKeyring {
        JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, SECRET)
            .expect("key")
            .with_kid("1")])
        .expect("keyring")
    }

    fn test_app() -> Router {
        let keys = Keys::new([SESSION_KEY]).expect("keys");
        app(keys, access_tokens(keyring()).expect("jwt")).expect("app")
    }

    async fn send(app: &Router, request: http::Request<Body>) -> (StatusCode, Value) {
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn get_with(path: &str, header: &str, value: &str) -> http::Request<Body> {
        http::Request::get(path)
            .header("host", "localhost")
            .header(header, value)
            .body(Body::empty())
            .expect("request")
    }

    async fn minted(app: &Router) -> String {
        let request = http::Request::post("/api/access-tokens")
            .header("host", "localhost")
            .header("x-session-api-key", SESSION_KEY)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"provider_type":"github","org_id":"org-7"}"#))
            .expect("request");
        let (status, body) = send(app, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["expires_in"], 300);
        body["access_token"].as_str().expect("token").to_owned()
    }

    #[tokio::test]
    async fn a_minted_token_opens_the_tool_api_and_nothing_else() {
        let app = test_app();
        let token = minted(&app).await;
        let (status, body) = send(&app, get_with("/tools/whoami", "x-access-token", &token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["provider_type"], "github");
        assert_eq!(body["org_id"], "org-7");
        assert_eq!(body["scope"], "tools:read");
        assert!(body["user_id"].as_str().expect("user").starts_with("key:"));

        // The token is not a session key, and the session key is not an access token.
        let post_with_token = http::Request::post("/api/access-tokens")
            .header("host", "localhost")
            .header("x-session-api-key", token.as_str())
            .body(Body::empty())
            .expect("request");
        assert_eq!(
            send(&app, post_with_token).await.0,
            StatusCode::UNAUTHORIZED
        );
        let key_as_token = get_with("/tools/whoami", "x-access-token", SESSION_KEY);
        assert_eq!(send(&app, key_as_token).await.0, StatusCode::UNAUTHORIZED);
        let key_in_its_header = get_with("/tools/whoami", "x-session-api-key", SESSION_KEY);
        assert_eq!(
            send(&app, key_in_its_header).await.0,
            StatusCode::UNAUTHORIZED
        );
        let token_as_bearer =
            get_with("/tools/whoami", "authorization", &format!("Bearer {token}"));
        assert_eq!(
            send(&app, token_as_bearer).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn tokens_for_another_audience_or_expired_are_refused() {
        let app = test_app();
        let other_audience = Jwt::builder(keyring())
            .with_issuer("agent-server")
            .with_audience("billing")
            .build()
            .expect("jwt")
            .mint(&json!({"user_id": "u"}), Duration::from_secs(60))
            .expect("mint");
        let request = get_with("/tools/whoami", "x-access-token", &other_audience);
        assert_eq!(send(&app, request).await.0, StatusCode::UNAUTHORIZED);

        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let expired = Jwt::builder(keyring())
            .with_issuer("agent-server")
            .with_audience("tools")
            .with_clock(move || an_hour_ago)
            .build()
            .expect("jwt")
            .mint(&json!({"user_id": "u"}), Duration::from_secs(300))
            .expect("mint");
        let request = get_with("/tools/whoami", "x-access-token", &expired);
        assert_eq!(send(&app, request).await.0, StatusCode::UNAUTHORIZED);

        let too_long = Jwt::builder(keyring())
            .with_issuer("agent-server")
            .with_audience("tools")
            .build()
            .expect("jwt")
            .mint(&json!({"user_id": "u"}), Duration::from_secs(3600))
            .expect("mint");
        let request = get_with("/tools/whoami", "x-access-token", &too_long);
        assert_eq!(send(&app, request).await.0, StatusCode::UNAUTHORIZED);
    }
}
