//! The reference agent server: REST and WebSocket routes behind one guard.
//!
//! Run it:
//!
//! ```text
//! cargo run --example agent_server -- --session-api-key "$(openssl rand -hex 32)"
//! ```
//!
//! Poke it (with `KEY` set to that key):
//!
//! ```text
//! curl -i localhost:8000/health
//! curl -i -H "X-Session-API-Key: $KEY" localhost:8000/api/whoami
//! curl -i -H "Authorization: Bearer $KEY" localhost:8000/api/whoami
//! websocat "ws://localhost:8000/sockets/events?session_api_key=$KEY"
//! ```
//!
//! Options:
//!
//! ```text
//! --listen ADDR            default 127.0.0.1:8000; port 0 picks a free port
//! --session-api-key KEY    repeatable; capability keys
//! --key-file PATH          capability keys, one per line
//! --jwt-secret-file PATH   accept HS256 JWTs signed with this secret (trimmed); sub → subject
//! --jwt-issuer ISS         require this `iss`
//! --jwt-audience AUD       require this `aud`
//! --jwt-leeway-secs N      clock-skew allowance (default 30, at most 300)
//! --allow-origin ORIGIN    repeatable; switches from same-origin to an allow-list
//! --insecure-no-auth       no authentication; only allowed on a loopback address
//! ```
//!
//! Once listening it prints `listening on http://ADDR`. It never prints a credential, whatever
//! `RUST_LOG` says.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::Request;
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Json, Router};
use axum_keyguard::{
    check_listener, ByShape, Guard, InsecureListenerPolicy, Jwt, JwtAlgorithm, JwtKey, JwtKeyring,
    Keys, OriginPolicy, Verified, Verifier,
};
use serde::Deserialize;
use serde_json::json;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

const USAGE: &str = "usage: agent_server [--listen ADDR] [--session-api-key KEY]... \
[--key-file PATH] [--jwt-secret-file PATH [--jwt-issuer ISS] [--jwt-audience AUD] \
[--jwt-leeway-secs N]] [--allow-origin ORIGIN]... [--insecure-no-auth]";

/// Who a request is: `key:` + 8 hex digits for a capability key, the `sub` of a JWT.
#[derive(Debug, Clone)]
struct Subject(String);

/// The claims this server reads from a JWT: a subject is required.
#[derive(Debug, Clone, Deserialize)]
struct AgentClaims {
    sub: String,
}

/// The command line.
#[derive(Default)]
struct Options {
    listen: Option<String>,
    keys: Vec<String>,
    key_file: Option<PathBuf>,
    jwt_secret_file: Option<PathBuf>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_leeway_secs: Option<String>,
    allow_origins: Vec<String>,
    insecure_no_auth: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Self::default();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--listen" => options.listen = Some(value("--listen")?),
                "--session-api-key" => options.keys.push(value("--session-api-key")?),
                "--key-file" => options.key_file = Some(value("--key-file")?.into()),
                "--jwt-secret-file" => {
                    options.jwt_secret_file = Some(value("--jwt-secret-file")?.into());
                }
                "--jwt-issuer" => options.jwt_issuer = Some(value("--jwt-issuer")?),
                "--jwt-audience" => options.jwt_audience = Some(value("--jwt-audience")?),
                "--jwt-leeway-secs" => options.jwt_leeway_secs = Some(value("--jwt-leeway-secs")?),
                "--allow-origin" => options.allow_origins.push(value("--allow-origin")?),
                "--insecure-no-auth" => options.insecure_no_auth = true,
                "-h" | "--help" => return Err(String::new()),
                // Never echo an unknown argument: it might be a key in the wrong place.
                _ => return Err("unknown argument".to_owned()),
            }
        }
        Ok(options)
    }

    /// The guard, or `None` when authentication is off.
    fn guard(&self) -> Result<Option<Guard<Subject>>, String> {
        let has_jwt_options = self.jwt_issuer.is_some()
            || self.jwt_audience.is_some()
            || self.jwt_leeway_secs.is_some();
        if has_jwt_options && self.jwt_secret_file.is_none() {
            return Err(
                "--jwt-issuer, --jwt-audience and --jwt-leeway-secs need --jwt-secret-file"
                    .to_owned(),
            );
        }
        if self.insecure_no_auth {
            if !self.keys.is_empty() || self.key_file.is_some() || self.jwt_secret_file.is_some() {
                return Err("--insecure-no-auth cannot be combined with keys".to_owned());
            }
            return Ok(None);
        }
        let keys = self.keys()?;
        let jwt = self.jwt()?;
        let builder = Guard::builder();
        let builder = match (jwt, keys) {
            (Some(jwt), Some(keys)) => builder.with_verifier(ByShape::new(jwt, keys)),
            (Some(jwt), None) => builder.with_verifier(jwt),
            (None, Some(keys)) => builder.with_verifier(keys),
            (None, None) => {
                return Err(
                    "no keys: pass --session-api-key, --key-file or --jwt-secret-file \
                     (or --insecure-no-auth on a loopback address)"
                        .to_owned(),
                )
            }
        };
        let builder = if self.allow_origins.is_empty() {
            builder
        } else {
            let policy =
                OriginPolicy::allow_list(&self.allow_origins).map_err(|e| e.to_string())?;
            builder.with_origin_policy(policy)
        };
        builder.build().map(Some).map_err(|e| e.to_string())
    }

    /// The capability keys, mapped to their subject.
    fn keys(&self) -> Result<Option<impl Verifier<Principal = Subject>>, String> {
        let keys = match (&self.key_file, self.keys.is_empty()) {
            (None, true) => return Ok(None),
            (None, false) => Keys::new(&self.keys),
            (Some(path), true) => Keys::from_file(path),
            (Some(path), false) => Keys::new(&self.keys).and_then(|k| k.add_file(path)),
        }
        .map_err(|e| e.to_string())?;
        Ok(Some(keys.map_principal(|key| Subject(key.to_string()))))
    }

    /// The JWT verifier, mapped to the token's `sub`.
    fn jwt(&self) -> Result<Option<impl Verifier<Principal = Subject>>, String> {
        let Some(path) = &self.jwt_secret_file else {
            return Ok(None);
        };
        let secret = std::fs::read(path)
            .map_err(|e| format!("cannot read JWT secret file {}: {e}", path.display()))?;
        let key =
            JwtKey::new(JwtAlgorithm::Hs256, secret.trim_ascii()).map_err(|e| e.to_string())?;
        let keyring = JwtKeyring::new([key]).map_err(|e| e.to_string())?;
        let mut builder = Jwt::builder(keyring).claims::<AgentClaims>();
        if let Some(issuer) = &self.jwt_issuer {
            builder = builder.with_issuer(issuer);
        }
        if let Some(audience) = &self.jwt_audience {
            builder = builder.with_audience(audience);
        }
        if let Some(secs) = &self.jwt_leeway_secs {
            let secs = secs
                .parse()
                .map_err(|_| "--jwt-leeway-secs takes a whole number of seconds".to_owned())?;
            builder = builder.with_leeway(Duration::from_secs(secs));
        }
        let jwt = builder.build().map_err(|e| e.to_string())?;
        Ok(Some(
            jwt.map_principal(|claims: AgentClaims| Subject(claims.sub)),
        ))
    }
}

/// The application: `/health` open, `/api/whoami` and `/sockets/events` behind `guard` (or open
/// to everyone as `anonymous` when there is no guard).
fn app(guard: Option<Guard<Subject>>) -> Router {
    let protected = match &guard {
        Some(guard) => Router::new()
            .route("/api/whoami", get(whoami))
            .route("/sockets/events", any(events))
            .route_layer(guard.layer()),
        None => Router::new()
            .route("/api/whoami", get(whoami_anonymous))
            .route("/sockets/events", any(events_anonymous)),
    };
    let sensitive = guard
        .iter()
        .flat_map(|g| g.sources().iter().filter_map(|s| s.header_name().cloned()))
        .collect::<Vec<_>>();
    protected
        .route("/health", get(|| async { "ok" }))
        .layer(
            // The span records the path only: a query may hold a credential.
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            }),
        )
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
}

fn identity(verified: &Verified<Subject>) -> serde_json::Value {
    json!({"subject": verified.principal().0, "source": verified.source().as_str()})
}

fn anonymous() -> serde_json::Value {
    json!({"subject": "anonymous", "source": "none"})
}

async fn whoami(verified: Verified<Subject>) -> Json<serde_json::Value> {
    Json(identity(&verified))
}

async fn whoami_anonymous() -> Json<serde_json::Value> {
    Json(anonymous())
}

async fn events(verified: Verified<Subject>, ws: WebSocketUpgrade) -> Response {
    let who = identity(&verified);
    ws.on_upgrade(move |socket| hello_then_echo(socket, who))
}

async fn events_anonymous(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|socket| hello_then_echo(socket, anonymous()))
}

/// Sends `{"type":"hello",…}`, then echoes every text frame until the client closes.
async fn hello_then_echo(mut socket: WebSocket, mut who: serde_json::Value) {
    who["type"] = json!("hello");
    if socket.send(Message::text(who.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let sent = match message {
            Message::Text(text) => socket.send(Message::Text(text)).await,
            Message::Close(_) => return,
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let guard = match options.guard() {
        Ok(guard) => guard,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let listen = options.listen.as_deref().unwrap_or("127.0.0.1:8000");
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        eprintln!("error: --listen takes an address such as 127.0.0.1:8000");
        return ExitCode::from(2);
    };
    if let Err(e) = check_listener(addr, guard.is_some(), InsecureListenerPolicy::Refuse) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    println!("listening on http://{local}");
    if let Err(e) = axum::serve(listener, app(guard).into_make_service()).await {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
