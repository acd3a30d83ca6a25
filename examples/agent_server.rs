//! The reference agent server: REST and WebSocket routes behind one guard, sandboxes whose keys
//! die with them, and a page that shows what a browser sees.
//!
//! Run it:
//!
//! ```text
//! cargo run --example agent_server -- --session-api-key "$(openssl rand -hex 32)" --admin-key admin
//! ```
//!
//! Poke it (with `KEY` set to that key):
//!
//! ```text
//! curl -i localhost:8000/health
//! curl -i -H "X-Session-API-Key: $KEY" localhost:8000/api/whoami
//! curl -i -H "Authorization: Bearer $KEY" localhost:8000/api/whoami
//! websocat "ws://localhost:8000/sockets/events?session_api_key=$KEY"
//! curl -s -X POST -H 'X-Admin-Key: admin' localhost:8000/admin/sandboxes
//! curl -i -X POST -H 'X-Admin-Key: admin' localhost:8000/admin/sandboxes/ID/pause
//! curl -i -X DELETE -H 'X-Admin-Key: admin' localhost:8000/admin/sandboxes/ID
//! open "http://localhost:8000/?via=subprotocol#$KEY"
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
//! --first-message-auth     accept credential-less upgrades, expect an auth frame
//! --auth-timeout-ms N      first-message timeout (default 10000)
//! --accept-then-close      bad handshake credentials → 101 then close 4001
//! --admin-key KEY          enables the /admin routes (X-Admin-Key)
//! --insecure-no-auth       no authentication; only allowed on a loopback address; the origin
//!                          policy still refuses cross-site upgrades
//! --jwt-max-lifetime-secs N  refuse JWTs whose exp - iat (or exp - now) exceeds N
//!                          (default 86400)
//! --header-read-timeout-ms N  close connections whose request head takes longer (default 10000)
//! --redis-url URL          sandboxes live in Redis, shared by every replica with the same URL
//!                          and prefix (needs `--features redis`)
//! --redis-prefix P         key prefix in Redis (default `keyguard:`)
//! --store-grace-ms N       open sockets survive an unavailable store this long, then 1011
//!                          (default 60000)
//! --require-scope SCOPE    repeatable; /api/whoami and /sockets/events require these scopes of
//!                          JWTs (capability and sandbox keys pass); 403 insufficient_scope
//! --failure-limit N        429 + Retry-After after N refused credentials from one peer address
//!                          (IPv6 by /64), on /api, /sockets and /admin (each its own budget)
//! --failure-window-secs S  the budget is earned back over S seconds (default 60)
//! --trusted-proxy NET      repeatable; read X-Forwarded-For from peers in NET (ADDR or ADDR/PREFIX)
//! --jwks-url URL           accept RS256/PS256/ES256/EdDSA JWTs signed by a key of this JWK Set
//!                          (needs `--features jwks`; plain http to loopback, e.g. a TLS sidecar)
//! --oidc-issuer URL        the same, with the JWK Set found by OpenID Connect discovery; `iss`
//!                          must be this issuer unless --jwt-issuer says otherwise
//! --jwks-refresh-secs N    background refresh of the key set (default 300); an unknown `kid`
//!                          refetches at once, at most once per min(N, 10) s
//! ```
//!
//! `--jwt-issuer`, `--jwt-audience`, `--jwt-leeway-secs` and `--jwt-max-lifetime-secs` apply to
//! HMAC and key-set JWTs alike. A key-set JWT's `sub` is its subject, and its `scope` counts for
//! `--require-scope` and the sandbox routes as an HMAC JWT's does. The server refuses to start
//! when the first fetch of the key set fails.
//!
//! Sandbox routes: `GET /api/sandboxes/{id}/whoami` and the WebSocket
//! `/sockets/sandboxes/{id}/events` (hello, then echo). A sandbox's key reaches only its own
//! sandbox, capability keys every sandbox, and a JWT the sandboxes its `scope` names
//! (`sandbox:{id}`, or `sandboxes:*` for all); anything else is `403 insufficient_scope`, before
//! the upgrade.
//!
//! Two replicas against one Redis (`redis-server --port 6379` first):
//!
//! ```text
//! cargo run --features redis --example agent_server -- --listen 127.0.0.1:8001 --admin-key admin --redis-url redis://127.0.0.1:6379
//! cargo run --features redis --example agent_server -- --listen 127.0.0.1:8002 --admin-key admin --redis-url redis://127.0.0.1:6379
//! ```
//!
//! A sandbox created on one is known to the other, and a pause, resume or delete on either
//! closes its sockets on both. An unreachable Redis or a wrong password at start-up is refused:
//! the server prints the reason (never the password) and exits with status 1.
//!
//! Once listening it prints `listening on http://ADDR`. It logs one line per request at `INFO`
//! (method, redacted URI, status). It never prints a credential, whatever `RUST_LOG` says.
//! SIGTERM or SIGINT shuts it down gracefully: open sockets close with `1001`, then it exits 0.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Message;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{Html, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use axum_keyguard::ws::{FirstMessage, GuardedUpgrade, LeasedSocket, Shutdown};
use axum_keyguard::{
    check_unauthenticated_listener, ByShape, CredentialDigest, FailureLimit, Guard, GuardBuilder,
    Identity, InsecureListenerPolicy, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, KeyId, Keys,
    MemoryStore, OriginPolicy, SessionKeys, Source, Verifier,
};
use axum_keyguard::{scope_claim_contains, HasScopes, OwnsResource, Require};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tower::Service as _;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

const USAGE: &str = "usage: agent_server [--listen ADDR] [--session-api-key KEY]... \
[--key-file PATH] [--jwt-secret-file PATH [--jwt-issuer ISS] [--jwt-audience AUD] \
[--jwt-leeway-secs N] [--jwt-max-lifetime-secs N]] [--allow-origin ORIGIN]... \
[--first-message-auth [--auth-timeout-ms N]] [--accept-then-close] [--admin-key KEY] \
[--insecure-no-auth] [--header-read-timeout-ms N] [--redis-url URL [--redis-prefix P]] \
[--store-grace-ms N] [--failure-limit N [--failure-window-secs S] [--trusted-proxy NET]...] \
[--require-scope SCOPE]... [--jwks-url URL | --oidc-issuer URL] [--jwks-refresh-secs N]";

/// The default cap on a JWT's lifetime: a day.
const DEFAULT_JWT_MAX_LIFETIME: Duration = Duration::from_secs(86_400);

/// The default window of `--failure-limit`.
const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The default time a client has to send its whole request head.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The page at `/`.
const INDEX: &str = include_str!("agent_server_assets/index.html");

/// The application protocol spoken on `/sockets/events`.
const PROTOCOL: &str = "agent.v1";

/// Who a request is (`name`): `key:` + 8 hex digits for a capability key, `sandbox:<id>` for a
/// sandbox key, the `sub` of a JWT; and what it may reach.
#[derive(Debug, Clone)]
struct Subject {
    name: String,
    kind: SubjectKind,
}

#[derive(Debug, Clone)]
enum SubjectKind {
    /// A capability key: every sandbox.
    Key,
    /// A sandbox's key: that sandbox only.
    Sandbox(String),
    /// A JWT: what its `scope` says.
    Token { scope: Option<String> },
    /// `--insecure-no-auth`: nothing is checked.
    Anonymous,
}

impl Subject {
    fn key(key: KeyId) -> Self {
        Self {
            name: key.to_string(),
            kind: SubjectKind::Key,
        }
    }

    /// A sandbox record, `sandbox:<id>`.
    fn sandbox(record: String) -> Self {
        let id = record
            .strip_prefix("sandbox:")
            .unwrap_or_default()
            .to_owned();
        Self {
            name: record,
            kind: SubjectKind::Sandbox(id),
        }
    }

    fn token(claims: AgentClaims) -> Self {
        Self {
            name: claims.sub,
            kind: SubjectKind::Token {
                scope: claims.scope,
            },
        }
    }

    fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            kind: SubjectKind::Anonymous,
        }
    }

    fn is_token(&self) -> bool {
        matches!(self.kind, SubjectKind::Token { .. })
    }
}

/// A JWT's scopes are its `scope` claim; keys hold none.
impl HasScopes for Subject {
    fn has_scope(&self, scope: &str) -> bool {
        match &self.kind {
            SubjectKind::Token { scope: Some(claim) } => scope_claim_contains(claim, scope),
            _ => false,
        }
    }
}

/// A sandbox key owns its sandbox; a capability key (and, without authentication, everyone)
/// reaches every sandbox; a JWT owns nothing (its scopes decide).
impl OwnsResource for Subject {
    fn owns_resource(&self, param: &str, value: &str) -> bool {
        match &self.kind {
            SubjectKind::Key | SubjectKind::Anonymous => true,
            SubjectKind::Sandbox(id) => param == "id" && id == value,
            SubjectKind::Token { .. } => false,
        }
    }
}

/// The claims this server reads from a JWT: a subject is required, `scope` is optional.
#[derive(Debug, Clone, Deserialize)]
struct AgentClaims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
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
    jwt_max_lifetime_secs: Option<String>,
    header_read_timeout_ms: Option<String>,
    allow_origins: Vec<String>,
    first_message_auth: bool,
    auth_timeout_ms: Option<String>,
    accept_then_close: bool,
    admin_key: Option<String>,
    insecure_no_auth: bool,
    help: bool,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    store_grace_ms: Option<String>,
    require_scopes: Vec<String>,
    failure_limit: Option<String>,
    failure_window_secs: Option<String>,
    trusted_proxies: Vec<String>,
    jwks_url: Option<String>,
    oidc_issuer: Option<String>,
    jwks_refresh_secs: Option<String>,
}

/// The key set of `--jwks-url` / `--oidc-issuer` (nothing without the `jwks` feature).
#[cfg(feature = "jwks")]
type KeySet = axum_keyguard::Jwks;
#[cfg(not(feature = "jwks"))]
type KeySet = std::convert::Infallible;

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
                "--jwt-max-lifetime-secs" => {
                    options.jwt_max_lifetime_secs = Some(value("--jwt-max-lifetime-secs")?);
                }
                "--header-read-timeout-ms" => {
                    options.header_read_timeout_ms = Some(value("--header-read-timeout-ms")?);
                }
                "--allow-origin" => options.allow_origins.push(value("--allow-origin")?),
                "--first-message-auth" => options.first_message_auth = true,
                "--auth-timeout-ms" => options.auth_timeout_ms = Some(value("--auth-timeout-ms")?),
                "--accept-then-close" => options.accept_then_close = true,
                "--admin-key" => options.admin_key = Some(value("--admin-key")?),
                "--insecure-no-auth" => options.insecure_no_auth = true,
                "--redis-url" => options.redis_url = Some(value("--redis-url")?),
                "--redis-prefix" => options.redis_prefix = Some(value("--redis-prefix")?),
                "--store-grace-ms" => options.store_grace_ms = Some(value("--store-grace-ms")?),
                "--require-scope" => options.require_scopes.push(value("--require-scope")?),
                "--failure-limit" => options.failure_limit = Some(value("--failure-limit")?),
                "--failure-window-secs" => {
                    options.failure_window_secs = Some(value("--failure-window-secs")?);
                }
                "--trusted-proxy" => options.trusted_proxies.push(value("--trusted-proxy")?),
                "--jwks-url" => options.jwks_url = Some(value("--jwks-url")?),
                "--oidc-issuer" => options.oidc_issuer = Some(value("--oidc-issuer")?),
                "--jwks-refresh-secs" => {
                    options.jwks_refresh_secs = Some(value("--jwks-refresh-secs")?);
                }
                "-h" | "--help" => return Ok(Self::help()),
                // Never echo an unknown argument: it might be a key in the wrong place.
                _ => return Err("unknown argument".to_owned()),
            }
        }
        Ok(options)
    }

    /// What `--help` asks for: no server, the usage on stdout.
    fn help() -> Self {
        Self {
            help: true,
            ..Self::default()
        }
    }

    fn header_read_timeout(&self) -> Result<Duration, String> {
        match &self.header_read_timeout_ms {
            None => Ok(DEFAULT_HEADER_READ_TIMEOUT),
            Some(ms) => match ms.parse() {
                Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                _ => Err("--header-read-timeout-ms takes a positive number of milliseconds".into()),
            },
        }
    }

    /// The failure limit of `--failure-limit`, `--failure-window-secs` and `--trusted-proxy`.
    fn failure_limit(&self) -> Result<Option<FailureLimit>, String> {
        let Some(limit) = &self.failure_limit else {
            if self.failure_window_secs.is_some() || !self.trusted_proxies.is_empty() {
                return Err(
                    "--failure-window-secs and --trusted-proxy need --failure-limit".into(),
                );
            }
            return Ok(None);
        };
        let limit = match limit.parse() {
            Ok(limit) if limit > 0 => limit,
            _ => return Err("--failure-limit takes a positive whole number".into()),
        };
        let window = match &self.failure_window_secs {
            None => DEFAULT_FAILURE_WINDOW,
            Some(secs) => match secs.parse() {
                Ok(secs) if (1..=86_400).contains(&secs) => Duration::from_secs(secs),
                _ => return Err("--failure-window-secs takes 1 to 86400 seconds".into()),
            },
        };
        let mut failure_limit = FailureLimit::new(limit, window);
        for net in &self.trusted_proxies {
            failure_limit = failure_limit
                .add_trusted_proxy(net)
                .map_err(|e| e.to_string())?;
        }
        Ok(Some(failure_limit))
    }

    /// The guard (anonymous when authentication is off) and the sandbox store behind it.
    fn guard(
        &self,
        sandboxes: &Sandboxes,
        shutdown: &Shutdown,
        key_set: Option<KeySet>,
    ) -> Result<Guard<Subject>, String> {
        let has_jwt_options = self.jwt_issuer.is_some()
            || self.jwt_audience.is_some()
            || self.jwt_leeway_secs.is_some()
            || self.jwt_max_lifetime_secs.is_some();
        if has_jwt_options && self.jwt_secret_file.is_none() && key_set.is_none() {
            return Err(
                "--jwt-issuer, --jwt-audience, --jwt-leeway-secs and --jwt-max-lifetime-secs \
                 need --jwt-secret-file, --jwks-url or --oidc-issuer"
                    .to_owned(),
            );
        }
        if self.auth_timeout_ms.is_some() && !self.first_message_auth {
            return Err("--auth-timeout-ms needs --first-message-auth".to_owned());
        }
        if self.insecure_no_auth {
            if !self.keys.is_empty()
                || self.key_file.is_some()
                || self.jwt_secret_file.is_some()
                || key_set.is_some()
                || self.admin_key.is_some()
                || self.first_message_auth
                || self.accept_then_close
                || self.redis_url.is_some()
            {
                return Err("--insecure-no-auth cannot be combined with keys".to_owned());
            }
            if self.failure_limit.is_some() {
                return Err(
                    "--failure-limit needs authentication: no credential is ever \
                            refused with --insecure-no-auth"
                        .to_owned(),
                );
            }
            // No credential, but the origin policy still refuses cross-site upgrades, and
            // sockets still close with 1001 on shutdown.
            return self
                .origin_policy(Guard::builder().with_anonymous(Subject::anonymous()))?
                .with_shutdown(shutdown)
                .build()
                .map_err(|e| e.to_string());
        }
        let mut opaque = self.keys()?;
        if self.admin_key.is_some() || self.redis_url.is_some() {
            // Capability keys are checked first (in constant time, no store call), then sandboxes.
            let store = sandboxes.verifier();
            opaque = Some(match opaque {
                Some(keys) => Box::new(keys.or(store)),
                None => Box::new(store),
            });
        }
        let verifier: Box<dyn Verifier<Principal = Subject>> = match (self.jwt(key_set)?, opaque) {
            (Some(jwt), Some(opaque)) => Box::new(ByShape::new(jwt, opaque)),
            (Some(jwt), None) => jwt,
            (None, Some(opaque)) => opaque,
            (None, None) => {
                return Err(
                    "no keys: pass --session-api-key, --key-file, --jwt-secret-file, \
                     --jwks-url, --oidc-issuer or --admin-key (or --insecure-no-auth on a \
                     loopback address)"
                        .to_owned(),
                )
            }
        };
        let mut builder = Guard::builder()
            .with_verifier(verifier)
            .add_source(Source::subprotocol())
            .accept_then_close(self.accept_then_close)
            .with_shutdown(shutdown);
        if let Some(limit) = self.failure_limit()? {
            builder = builder.with_failure_limit(limit);
        }
        if let Some(ms) = &self.store_grace_ms {
            let ms = ms
                .parse()
                .map_err(|_| "--store-grace-ms takes a whole number of milliseconds")?;
            builder = builder.with_unavailable_grace(Duration::from_millis(ms));
        }
        if self.first_message_auth {
            let mut first = FirstMessage::new();
            if let Some(ms) = &self.auth_timeout_ms {
                let ms = ms
                    .parse()
                    .map_err(|_| "--auth-timeout-ms takes a whole number of milliseconds")?;
                first = first.with_timeout(Duration::from_millis(ms));
            }
            builder = builder.with_first_message_auth(first);
        }
        self.origin_policy(builder)?
            .build()
            .map_err(|e| e.to_string())
    }

    /// `--allow-origin` switches from same-origin to an allow-list.
    fn origin_policy<P>(&self, builder: GuardBuilder<P>) -> Result<GuardBuilder<P>, String> {
        if self.allow_origins.is_empty() {
            return Ok(builder);
        }
        let policy = OriginPolicy::allow_list(&self.allow_origins).map_err(|e| e.to_string())?;
        Ok(builder.with_origin_policy(policy))
    }

    /// The capability keys, mapped to their subject.
    fn keys(&self) -> Result<Option<Box<dyn Verifier<Principal = Subject>>>, String> {
        let keys = match (&self.key_file, self.keys.is_empty()) {
            (None, true) => return Ok(None),
            (None, false) => Keys::new(&self.keys),
            (Some(path), true) => Keys::from_file(path),
            (Some(path), false) => Keys::new(&self.keys).and_then(|k| k.add_file(path)),
        }
        .map_err(|e| e.to_string())?;
        Ok(Some(Box::new(keys.map_principal(Subject::key))))
    }

    /// The JWT verifiers, mapped to the token's `sub`: HMAC (`--jwt-secret-file`), the key set
    /// (`--jwks-url`, `--oidc-issuer`), or the first then the second.
    fn jwt(
        &self,
        key_set: Option<KeySet>,
    ) -> Result<Option<Box<dyn Verifier<Principal = Subject>>>, String> {
        let hmac = match &self.jwt_secret_file {
            None => None,
            Some(path) => {
                let secret = std::fs::read(path)
                    .map_err(|e| format!("cannot read JWT secret file {}: {e}", path.display()))?;
                let key = JwtKey::new(JwtAlgorithm::Hs256, secret.trim_ascii())
                    .map_err(|e| e.to_string())?;
                let keyring = JwtKeyring::new([key]).map_err(|e| e.to_string())?;
                let jwt = self
                    .jwt_options(Jwt::builder(keyring).claims::<AgentClaims>(), None)?
                    .build()
                    .map_err(|e| e.to_string())?;
                Some(jwt.map_principal(Subject::token))
            }
        };
        #[cfg(feature = "jwks")]
        let public = match key_set {
            None => None,
            Some(jwks) => {
                let builder = Jwt::builder(jwks).claims::<AgentClaims>();
                let jwt = self
                    .jwt_options(builder, self.oidc_issuer.as_deref())?
                    .build()
                    .map_err(|e| e.to_string())?;
                Some(jwt.map_principal(Subject::token))
            }
        };
        #[cfg(not(feature = "jwks"))]
        let public: Option<Box<dyn Verifier<Principal = Subject>>> =
            key_set.map(|never| match never {});
        Ok(match (hmac, public) {
            (Some(hmac), Some(public)) => Some(Box::new(hmac.or(public))),
            (Some(hmac), None) => Some(Box::new(hmac)),
            (None, Some(public)) => Some(Box::new(public)),
            (None, None) => None,
        })
    }

    /// The claim checks every JWT verifier here shares. `default_issuer` is required when
    /// `--jwt-issuer` is not given (the OIDC issuer).
    fn jwt_options<C>(
        &self,
        mut builder: axum_keyguard::JwtBuilder<C>,
        default_issuer: Option<&str>,
    ) -> Result<axum_keyguard::JwtBuilder<C>, String> {
        if let Some(issuer) = self.jwt_issuer.as_deref().or(default_issuer) {
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
        let max_lifetime = match &self.jwt_max_lifetime_secs {
            None => DEFAULT_JWT_MAX_LIFETIME,
            Some(secs) => match secs.parse() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => {
                    return Err("--jwt-max-lifetime-secs takes a positive number of seconds".into())
                }
            },
        };
        Ok(builder.with_max_lifetime(max_lifetime))
    }

    /// `--jwks-url` / `--oidc-issuer`: the key set, fetched once before the server starts.
    /// `Err((message, usage))`: `usage` when the command line itself is wrong.
    async fn key_set(&self) -> Result<Option<KeySet>, (String, bool)> {
        let usage = |m: &str| Err((m.to_owned(), true));
        let url = match (&self.jwks_url, &self.oidc_issuer) {
            (None, None) => {
                if self.jwks_refresh_secs.is_some() {
                    return usage("--jwks-refresh-secs needs --jwks-url or --oidc-issuer");
                }
                return Ok(None);
            }
            (Some(_), Some(_)) => return usage("pass --jwks-url or --oidc-issuer, not both"),
            (Some(url), None) | (None, Some(url)) => url,
        };
        let refresh = match &self.jwks_refresh_secs {
            None => Duration::from_secs(300),
            Some(secs) => match secs.parse::<u64>() {
                Ok(secs @ 1..=86_400) => Duration::from_secs(secs),
                _ => return usage("--jwks-refresh-secs takes 1 to 86400 seconds"),
            },
        };
        #[cfg(not(feature = "jwks"))]
        {
            let _ = (url, refresh);
            usage("--jwks-url and --oidc-issuer need a build with `--features jwks`")
        }
        #[cfg(feature = "jwks")]
        {
            let builder = if self.oidc_issuer.is_some() {
                axum_keyguard::Jwks::discover(url)
            } else {
                axum_keyguard::Jwks::builder(url)
            }
            .map_err(|e| (format!("{e}"), true))?;
            let jwks = builder
                .with_refresh(refresh)
                .with_cooldown(refresh.min(axum_keyguard::DEFAULT_JWKS_COOLDOWN))
                .with_max_staleness(refresh.max(axum_keyguard::DEFAULT_JWKS_MAX_STALENESS))
                .build()
                .await
                .map_err(|e| (format!("cannot fetch the key set: {e}"), false))?;
            tracing::info!(keys = jwks.kids().len(), "key set fetched");
            Ok(Some(jwks))
        }
    }

    /// `--require-scope`: what `/api/whoami` and `/sockets/events` require of JWTs (keys pass).
    fn required_scopes(&self) -> Result<Option<Require<Subject>>, String> {
        if self.require_scopes.is_empty() {
            return Ok(None);
        }
        let scopes = Require::scopes(&self.require_scopes)
            .map_err(|_| "--require-scope takes an OAuth scope (printable ASCII, no space, quote or backslash)".to_owned())?;
        Ok(Some(
            Require::predicate(|subject: &Subject, _| !subject.is_token()).or(scopes),
        ))
    }

    /// The guard of the `/admin` routes, on `X-Admin-Key`.
    fn admin_guard(&self) -> Result<Option<Guard<KeyId>>, String> {
        let Some(key) = &self.admin_key else {
            return Ok(None);
        };
        let mut builder = Guard::builder()
            .with_verifier(Keys::new([key]).map_err(|e| e.to_string())?)
            .with_sources([Source::header("X-Admin-Key").map_err(|e| e.to_string())?]);
        // Admin keys are worth guessing too: the same limit, a budget of its own.
        if let Some(limit) = self.failure_limit()? {
            builder = builder.with_failure_limit(limit);
        }
        builder.build().map(Some).map_err(|e| e.to_string())
    }
}

/// Where sandboxes live: this process (`MemoryStore`), or Redis, shared by every replica.
#[derive(Clone)]
enum Sandboxes {
    Memory(MemorySandboxes),
    #[cfg(feature = "redis")]
    Redis(redis_backend::RedisSandboxes),
}

/// Sandboxes by id, with the digest of their key (the key itself is handed out once and never
/// kept).
#[derive(Clone, Default)]
struct MemorySandboxes {
    store: MemoryStore<String>,
    digests: Arc<Mutex<HashMap<String, CredentialDigest>>>,
}

impl MemorySandboxes {
    fn digests(&self) -> std::sync::MutexGuard<'_, HashMap<String, CredentialDigest>> {
        self.digests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sandboxes {
    /// Usage errors in the store options, found before connecting anywhere.
    fn check(options: &Options) -> Result<(), String> {
        if options.redis_prefix.is_some() && options.redis_url.is_none() {
            return Err("--redis-prefix needs --redis-url".to_owned());
        }
        if cfg!(not(feature = "redis")) && options.redis_url.is_some() {
            return Err("--redis-url needs a build with the `redis` feature \
                 (cargo run --features redis --example agent_server)"
                .to_owned());
        }
        Ok(())
    }

    /// The sandbox store for `options`: Redis with `--redis-url`, else this process.
    async fn open(options: &Options) -> Result<Self, String> {
        match &options.redis_url {
            None => Ok(Self::Memory(MemorySandboxes::default())),
            #[cfg(feature = "redis")]
            Some(url) => {
                redis_backend::RedisSandboxes::connect(url, options.redis_prefix.as_deref())
                    .await
                    .map(Self::Redis)
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => Err("--redis-url needs the `redis` feature".to_owned()),
        }
    }

    /// The verifier of sandbox keys.
    fn verifier(&self) -> Box<dyn Verifier<Principal = Subject>> {
        match self {
            Self::Memory(memory) => {
                Box::new(SessionKeys::new(memory.store.clone()).map_principal(Subject::sandbox))
            }
            #[cfg(feature = "redis")]
            Self::Redis(redis) => {
                Box::new(SessionKeys::new(redis.store.clone()).map_principal(Subject::sandbox))
            }
        }
    }

    async fn create(&self, id: &str, digest: CredentialDigest) -> Result<(), StatusCode> {
        let record = format!("sandbox:{id}");
        match self {
            Self::Memory(memory) => {
                memory.store.insert(digest, record);
                memory.digests().insert(id.to_owned(), digest);
                Ok(())
            }
            #[cfg(feature = "redis")]
            Self::Redis(redis) => redis.create(id, digest, record).await,
        }
    }

    /// Pauses or resumes: 204, 404 when unknown.
    async fn set_running(&self, id: &str, running: bool) -> StatusCode {
        match self {
            Self::Memory(memory) => {
                let digest = memory.digests().get(id).copied();
                match digest {
                    Some(digest) if memory.store.set_active(&digest, running) => {
                        StatusCode::NO_CONTENT
                    }
                    _ => StatusCode::NOT_FOUND,
                }
            }
            #[cfg(feature = "redis")]
            Self::Redis(redis) => redis.set_running(id, running).await,
        }
    }

    /// Deletes for good: 204, 404 when unknown.
    async fn delete(&self, id: &str) -> StatusCode {
        match self {
            Self::Memory(memory) => {
                let digest = memory.digests().remove(id);
                match digest {
                    Some(digest) => {
                        memory.store.revoke(&digest);
                        StatusCode::NO_CONTENT
                    }
                    None => StatusCode::NOT_FOUND,
                }
            }
            #[cfg(feature = "redis")]
            Self::Redis(redis) => redis.delete(id).await,
        }
    }
}

/// Sandboxes in Redis: records in a `RedisStore` (by key digest), and the id → digest index
/// beside them (`<prefix>sandbox:<id>`), so every replica can find any sandbox by id.
#[cfg(feature = "redis")]
mod redis_backend {
    use axum::http::StatusCode;
    use axum_keyguard::{CredentialDigest, RedisStore};
    use redis::aio::ConnectionManager;
    use redis::AsyncCommands as _;

    #[derive(Clone)]
    pub(super) struct RedisSandboxes {
        pub(super) store: RedisStore<String>,
        index: ConnectionManager,
    }

    impl RedisSandboxes {
        pub(super) async fn connect(url: &str, prefix: Option<&str>) -> Result<Self, String> {
            let prefix = prefix.unwrap_or("keyguard:");
            // The store's error names the server and the cause, never the URL's password.
            let store = RedisStore::builder(url)
                .with_prefix(prefix)
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let index = redis::Client::open(url)
                .map_err(|_| "redis: the URL does not parse".to_owned())?
                .get_connection_manager()
                .await
                .map_err(|_| "redis: cannot open the sandbox index connection".to_owned())?;
            Ok(Self { store, index })
        }

        fn index_key(&self, id: &str) -> String {
            format!("{}sandbox:{id}", self.store.prefix())
        }

        async fn digest(&self, id: &str) -> Result<Option<CredentialDigest>, StatusCode> {
            let mut index = self.index.clone();
            let hex: Option<String> = index
                .get(self.index_key(id))
                .await
                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
            Ok(hex.as_deref().and_then(CredentialDigest::from_hex))
        }

        pub(super) async fn create(
            &self,
            id: &str,
            digest: CredentialDigest,
            record: String,
        ) -> Result<(), StatusCode> {
            self.store
                .insert(digest, &record)
                .await
                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
            let mut index = self.index.clone();
            index
                .set::<_, _, ()>(self.index_key(id), digest.to_hex())
                .await
                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
        }

        pub(super) async fn set_running(&self, id: &str, running: bool) -> StatusCode {
            let digest = match self.digest(id).await {
                Ok(Some(digest)) => digest,
                Ok(None) => return StatusCode::NOT_FOUND,
                Err(status) => return status,
            };
            match self.store.set_active(&digest, running).await {
                Ok(true) => StatusCode::NO_CONTENT,
                Ok(false) => StatusCode::NOT_FOUND,
                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }

        pub(super) async fn delete(&self, id: &str) -> StatusCode {
            let digest = match self.digest(id).await {
                Ok(Some(digest)) => digest,
                Ok(None) => return StatusCode::NOT_FOUND,
                Err(status) => return status,
            };
            // Revoke first: a failure after it leaves an index entry whose record is gone (404
            // on the next call), never a live key without an id.
            if self.store.revoke(&digest).await.is_err() {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let mut index = self.index.clone();
            match index.del::<_, ()>(self.index_key(id)).await {
                Ok(()) => StatusCode::NO_CONTENT,
                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    }
}

fn random_token(bytes: usize) -> Result<String, StatusCode> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

async fn create_sandbox(
    State(sandboxes): State<Sandboxes>,
) -> Result<(StatusCode, Json<serde_json::Value>), StatusCode> {
    let id = random_token(9)?;
    let key = random_token(32)?;
    sandboxes
        .create(&id, CredentialDigest::of(key.as_bytes()))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "session_api_key": key})),
    ))
}

async fn pause_sandbox(State(sandboxes): State<Sandboxes>, Path(id): Path<String>) -> StatusCode {
    sandboxes.set_running(&id, false).await
}

async fn resume_sandbox(State(sandboxes): State<Sandboxes>, Path(id): Path<String>) -> StatusCode {
    sandboxes.set_running(&id, true).await
}

async fn delete_sandbox(State(sandboxes): State<Sandboxes>, Path(id): Path<String>) -> StatusCode {
    sandboxes.delete(&id).await
}

/// The application: `/` and `/health` open, `/api/whoami` and `/sockets/events` behind `guard`
/// (anonymous, with the origin policy alone, when authentication is off), `/admin` behind `admin`.
fn app(
    guard: Guard<Subject>,
    admin: Option<Guard<KeyId>>,
    sandboxes: Sandboxes,
    required_scopes: Option<Require<Subject>>,
) -> Router {
    let mut sensitive = guard.sensitive_headers();
    let mut api = Router::new()
        .route("/api/whoami", get(whoami))
        .route("/sockets/events", any(events));
    if let Some(required) = required_scopes {
        api = api.route_layer(required.layer());
    }
    let per_sandbox = Router::new()
        .route("/api/sandboxes/{id}/whoami", get(whoami))
        .route("/sockets/sandboxes/{id}/events", any(events))
        .route_layer(sandbox_requirement().layer());
    let mut router = api
        .merge(per_sandbox)
        .route_layer(guard.layer())
        .route("/", get(|| async { Html(INDEX) }))
        .route("/health", get(|| async { "ok" }));
    if let Some(admin) = admin {
        sensitive.extend(admin.sensitive_headers());
        let admin_routes = Router::new()
            .route("/admin/sandboxes", post(create_sandbox))
            .route("/admin/sandboxes/{id}/pause", post(pause_sandbox))
            .route("/admin/sandboxes/{id}/resume", post(resume_sandbox))
            .route("/admin/sandboxes/{id}", delete(delete_sandbox))
            .route_layer(admin.layer())
            .with_state(sandboxes);
        router = router.merge(admin_routes);
    }
    router
        .layer(
            // One line per request at INFO, with its URI's credential parameters (and their near
            // misses) redacted.
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request<_>| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        uri = %guard.redacted_uri(request.uri()),
                    )
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
}

/// A sandbox's key for its own sandbox, a capability key for any, a JWT with `sandbox:{id}` or
/// `sandboxes:*` in its `scope`.
fn sandbox_requirement() -> Require<Subject> {
    let owns = Require::owns("id").expect("a valid parameter name");
    let one = Require::scope("sandbox:{id}").expect("a valid scope");
    let all = Require::scope("sandboxes:*").expect("a valid scope");
    owns.or(one).or(all)
}

fn identity(verified: &Identity<Subject>) -> serde_json::Value {
    json!({"subject": verified.principal().name, "source": verified.source().as_str()})
}

async fn whoami(verified: Identity<Subject>) -> Json<serde_json::Value> {
    Json(identity(&verified))
}

async fn events(ws: GuardedUpgrade<Subject>) -> Response {
    ws.protocols([PROTOCOL])
        .on_upgrade(|mut socket: LeasedSocket<Subject>| async move {
            let mut hello = identity(socket.verified());
            hello["type"] = json!("hello");
            if socket.send(Message::text(hello.to_string())).await.is_err() {
                return;
            }
            while let Some(message) = socket.recv().await {
                if let Message::Text(_) = message {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
            }
        })
}

#[tokio::main]
async fn main() -> ExitCode {
    // tungstenite logs the payload of every frame at TRACE, auth frames included: it never gets
    // more than INFO here, whatever RUST_LOG says.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive("tungstenite=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) if options.help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = Sandboxes::check(&options) {
        eprintln!("error: {message}");
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let sandboxes = match Sandboxes::open(&options).await {
        Ok(sandboxes) => sandboxes,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let key_set = match options.key_set().await {
        Ok(key_set) => key_set,
        Err((message, usage)) => {
            eprintln!("error: {message}");
            if usage {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    let configured = options
        .guard(&sandboxes, &shutdown, key_set)
        .and_then(|guard| {
            Ok((
                guard,
                options.admin_guard()?,
                options.header_read_timeout()?,
                options.required_scopes()?,
            ))
        });
    let (guard, admin, header_read_timeout, required_scopes) = match configured {
        Ok(configured) => configured,
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
    let unauthenticated = options
        .insecure_no_auth
        .then(|| check_unauthenticated_listener(addr, InsecureListenerPolicy::Refuse));
    if let Some(Err(e)) = unauthenticated {
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
    let app = app(guard, admin, sandboxes, required_scopes);
    serve(listener, app, header_read_timeout, shutdown_signal()).await;
    // Every guarded socket closes with 1001, within the close timeout.
    shutdown.close_all();
    shutdown.drained().await;
    tracing::info!("shut down");
    ExitCode::SUCCESS
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Serves `app` until `signal`, then stops accepting and lets every open HTTP exchange finish (a
/// few seconds at most). Unlike `axum::serve`, a client that does not finish its request head
/// within `header_read_timeout` is disconnected, so half-sent heads cannot pile up. Upgraded
/// connections are left to the guard's shutdown handle. Every request carries its connection's
/// peer address (`ConnectInfo<SocketAddr>`, what
/// `into_make_service_with_connect_info::<SocketAddr>()` provides), which `--failure-limit` needs.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
    signal: impl std::future::Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a moment instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().call(request)
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopped.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
        // Forget the connections that have finished.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}
