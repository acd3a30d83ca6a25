//! One credential check, the same on REST routes and WebSocket upgrades, for axum servers.
//!
//! # Overview
//!
//! Servers that expose REST and WebSocket routes side by side tend to check credentials twice, in
//! two code paths that drift apart: one accepts a header the other ignores, one compares in
//! constant time and the other with `==`. This crate has one function, [`Guard::resolve`], that
//! classifies the request (REST or upgrade), checks its `Origin`, finds the credential in the
//! configured [sources](Source), and [verifies](Verifier) it. The [layer](GuardLayer), the
//! [`Authenticated`] extractor and the WebSocket helpers all call it, so they cannot disagree.
//!
//! Secrets are hashed with SHA-256 and compared in constant time; no credential value appears in
//! any `Debug` output, log event, response body or close reason; and a configuration that would
//! let a request through unchecked (no verifier, no keys, an empty key file) is an error at start-up.
//!
//! # REST
//!
//! ```
//! use axum::{routing::get, Router};
//! use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
//!
//! let guard = Guard::builder()
//!     .with_verifier(Keys::new(["a-long-random-key"])?)
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/api/whoami", get(|Authenticated(key): Authenticated<KeyId>| async move {
//!         key.to_string() // "key:" + the first 8 hex digits of the key's SHA-256
//!     }))
//!     .route_layer(guard.layer())
//!     .route("/health", get(|| async { "ok" }));
//! # Ok::<(), axum_keyguard::ConfigError>(())
//! ```
//!
//! `curl -H 'X-Session-API-Key: a-long-random-key' localhost:8000/api/whoami` and
//! `curl -H 'Authorization: Bearer a-long-random-key' …` both pass.
//!
//! # WebSocket
//!
//! The same layer guards upgrades. The check runs before the upgrade: a bad credential gets its
//! HTTP status and the handler (and `on_upgrade`) never runs.
//!
//! ```
//! use axum::{extract::ws::WebSocketUpgrade, response::Response, routing::any, Router};
//! use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
//!
//! // Put `Authenticated` before `WebSocketUpgrade`: without the layer, extractors run in order.
//! async fn events(Authenticated(key): Authenticated<KeyId>, ws: WebSocketUpgrade) -> Response {
//!     ws.on_upgrade(move |mut socket| async move {
//!         let _ = socket.send(format!("hello {key}").into()).await;
//!     })
//! }
//!
//! let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key"])?).build()?;
//! let app: Router = Router::new()
//!     .route("/sockets/events", any(events))
//!     .route_layer(guard.layer());
//! # Ok::<(), axum_keyguard::ConfigError>(())
//! ```
//!
//! For the life of the socket after the handshake, use [`ws::GuardedUpgrade`]: its
//! [`ws::LeasedSocket`] closes with `4001` when the credential expires or is revoked (a
//! [`MemoryStore`] record paused, a key revoked), and it carries out first-message auth and
//! accept-then-close when the guard enables them.
//!
//! Browsers cannot set headers on `new WebSocket(url)`, so on upgrades the guard also reads the
//! query parameter `session_api_key` (`ws://host/sockets/events?session_api_key=…`). On REST
//! requests the query source is off unless [`Source::on_rest`] turns it on, because URLs end up in
//! logs, histories and `Referer` headers. Upgrades are checked against the
//! [origin policy](OriginPolicy) (same-origin by default) to stop cross-site WebSocket hijacking.
//!
//! # Layer or extractor
//!
//! | | [`GuardLayer`] (`route_layer`) | [`WithGuard`] around an extractor |
//! |---|---|---|
//! | where the guard comes from | the layer | the router state, through `FromRef` |
//! | router state needed | none (any `Router<S>`) | a state with a `Guard<P>` |
//! | rejects before the handler's other extractors | yes | in extractor order: list it first |
//! | `Cache-Control: no-store` on REST query credentials | yes | no |
//! | optional authentication (`Option<Authenticated<P>>`) | with [`GuardLayer::optional`] | yes |
//! | wraps any inner service and body (tower-http layers) | yes | n/a |
//!
//! The extractors ([`Authenticated<P>`], [`Identity<P>`], [`ws::GuardedUpgrade<P>`]) read the
//! layer's result and need nothing from the state; on a route without a layer they fail closed
//! (`500`, with an error in the log naming what is missing) unless wrapped in [`WithGuard`].
//!
//! # Authorization
//!
//! Once the guard knows who is calling, a [`Require`] says what a route needs of them: scopes
//! ([`HasScopes`], implemented for [`Claims`]' `scope` claim and for capability keys given scopes
//! in configuration, [`ScopedKeys`]), roles ([`HasRoles`]), ownership of the resource a path
//! parameter names ([`OwnsResource`]: a sandbox key on `/sandboxes/{id}/…` of another sandbox is
//! refused), or a predicate over the principal and the request head; composed with
//! [`and`](Require::and) / [`all_of`](Require::all_of) and [`or`](Require::or) /
//! [`any_of`](Require::any_of). Declare it where the route is declared, with
//! [`GuardLayer::require`] for a sub-router or a [`RequireLayer`] per route. It runs before the
//! handler and before any upgrade, on REST and WebSocket alike; a principal that falls short gets
//! `403` with `WWW-Authenticate: Bearer realm="…", error="insufficient_scope", scope="…"` (the
//! scopes the route names, never the principal's) and the generic body `forbidden`.
//!
//! ```
//! use axum::{routing::{any, get}, Router};
//! use axum_keyguard::{ws::GuardedUpgrade, Claims, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, Require};
//!
//! let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [7u8; 32])?])?;
//! let guard = Guard::builder().with_verifier(Jwt::builder(keyring).build()?).build()?;
//! let sandbox = Require::scope("sandbox:{id}")?.or(Require::scope("sandboxes:*")?);
//! let app: Router = Router::new()
//!     .route("/sockets/sandboxes/{id}/events", any(|ws: GuardedUpgrade<Claims>| async move {
//!         ws.on_upgrade(|mut socket| async move { while socket.recv().await.is_some() {} })
//!     }))
//!     .route_layer(guard.layer().require(sandbox));
//! # Ok::<(), axum_keyguard::ConfigError>(())
//! ```
//!
//! An open [`ws::LeasedSocket`] whose record changes under it is checked again: a
//! [`MemoryStore::update`] that withdraws the right closes it with `4003` (reason `forbidden`).
//! Which changes are seen: records of a [`MemoryStore`] replaced with `update` (pausing or
//! deleting still revokes: `4001`), and records of any [`SessionStore`] that gives its
//! [`KeyRecord`]s a reader ([`KeyRecord::with_current`]) and calls
//! [`Revoker::record_changed`]. Not seen: a JWT's claims (fixed for its life; it ends at
//! `exp`), [`ScopedKeys`] grants (configuration, fixed once built), records of other stores
//! (`RedisStore` publishes revocations, not record changes), and checks made with axum's plain
//! `WebSocketUpgrade`.
//!
//! # The crate at a glance
//!
//! - **The guard:** [`Guard`], [`GuardBuilder`], [`Source`] / [`SourceKind`], [`OriginPolicy`],
//!   [`FailureLimit`], and what it answers: [`Identity`], [`AuthRejection`] / [`AuthRejectionKind`],
//!   [`ConfigError`] / [`ConfigErrorKind`].
//! - **Authorization:** [`Require`], [`RequireLayer`] / [`Required`], [`HasScopes`],
//!   [`HasRoles`], [`OwnsResource`], [`RequestHead`], [`scope_claim_contains`]; capability keys
//!   with [`Grants`]: [`ScopedKeys`] / [`ScopedKey`].
//! - **Surfaces:** [`GuardLayer`] / [`Guarded`] / [`ResponseBody`], [`Authenticated`],
//!   [`WithGuard`], and [`ws`] ([`ws::GuardedUpgrade`], [`ws::LeasedSocket`], [`ws::Shutdown`],
//!   [`ws::FirstMessage`]).
//! - **Verifiers:** the [`Verifier`] trait and its [`Verdict`] (a [`Grant`] or a [`Denial`]);
//!   capability [`Keys`]; composition with [`ByShape`], [`Or`] and [`MapPrincipal`].
//! - **Stores and leases:** [`SessionStore`] and its [`KeyRecord`]s, the [`SessionKeys`]
//!   verifier over a store, [`MemoryStore`] (and `RedisStore` with the `redis` feature);
//!   [`Lease`], [`Revocation`] / [`Revoker`], [`LeaseStatus`].
//! - **JWT** (feature `jwt`): `Jwt`, `JwtBuilder`, `JwtKeyring`, `JwtKey`, `JwtAlgorithm`, `Claims`.
//! - **Logs and start-up:** [`Guard::redacted_uri`], [`Guard::sensitive_headers`],
//!   [`check_unauthenticated_listener`].
//! - **Outbound:** [`client`], for proxies that authenticate to an upstream.
//!
//! # Responses
//!
//! | case | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no credential | 401 | `Bearer realm="…"` |
//! | malformed, duplicate, conflicting, empty, too long, not UTF-8 | 400 | `Bearer realm="…", error="invalid_request"` |
//! | wrong, unknown, revoked, expired | 401 | `Bearer realm="…", error="invalid_token"` |
//! | authenticated but not allowed ([`Require`]) | 403 | `Bearer realm="…", error="insufficient_scope", scope="…"` |
//! | origin not allowed | 403 | none |
//! | peer over its [failure limit](FailureLimit) | 429 + `Retry-After` | none |
//! | key store down or slow | 503 + `Retry-After` | none |
//! | misconfiguration found at request time | 500 | none |
//!
//! Bodies are short `text/plain` and the same for every invalid credential. The
//! [`AuthRejectionKind`] is in the response extensions. Once a socket is open the same rejection
//! closes it with the codes in [`ws::close_code`] (`4001` unauthorized, `4003` forbidden).
//!
//! # JWTs
//!
//! [`Jwt`] verifies HMAC-signed JWTs (`HS256` by default) against a [`JwtKeyring`] that rotates
//! at run time, with the application's own claims type as the principal, and mints short-lived
//! scoped tokens with the same keyring. [`ByShape`] puts it beside capability keys or a session
//! store on one guard: a JWT-shaped credential only ever reaches the JWT verifier.
//!
//! With the feature `jwks`, the same [`Jwt`] verifies an identity provider's `RS256`, `PS256`,
//! `ES256` and `EdDSA` tokens against a `Jwks`: a JWK Set URL or OpenID Connect discovery,
//! refetched once on an unknown `kid` (single flight, cooldown), refreshed in the background, the
//! last good set kept through an outage up to a maximum staleness (then `503`), and a key dropped
//! from the set closing its sockets with `4001`.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `jwt` | yes | [`Jwt`] and friends: HMAC JWTs on the RustCrypto `hmac` and `sha2` crates (no RSA or elliptic-curve crate, no C toolchain) |
//! | `jwks` | no | `Jwks`: asymmetric JWTs (`RS256`, `PS256`, `ES256`, `EdDSA`) against a JWK Set or OIDC discovery, RSA and P-256 on `ring` (needs a C compiler), Ed25519 on `ed25519-dalek`; plain-HTTP fetcher over hyper, `JwksFetch` for your own |
//! | `redis` | no | `RedisStore`: session keys in Redis, shared by every replica, revocation by pub/sub |
//! | `redis-tls` | no | the same over TLS (`rediss://`), with rustls |
//!
//! # Shutdown
//!
//! `axum::serve(..).with_graceful_shutdown(..)` stops accepting and finishes HTTP exchanges, but
//! an upgraded connection is no longer its business: without more, open sockets die with the
//! process and clients see `1006`. Give the guard a [`ws::Shutdown`] and trigger it from the same
//! signal; every guarded socket then closes with `1001` within the close timeout, and `drained`
//! tells when they are all gone.
//!
//! ```
//! use axum::{routing::any, Router};
//! use axum_keyguard::{ws::{GuardedUpgrade, Shutdown}, Guard, KeyId, Keys};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = Shutdown::new();
//! let guard = Guard::builder()
//!     .with_verifier(Keys::new(["a-long-random-key-1"])?)
//!     .with_shutdown(&shutdown)
//!     .build()?;
//! let app = Router::new()
//!     .route("/sockets/events", any(|ws: GuardedUpgrade<KeyId>| async move {
//!         ws.on_upgrade(|mut socket| async move { while socket.recv().await.is_some() {} })
//!     }))
//!     .route_layer(guard.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! let signal = shutdown.clone();
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async move {
//!         // tokio::signal::ctrl_c() or SIGTERM in a real server.
//! #       let _ = stopped.await;
//!         signal.close_all(); // every guarded socket: Close 1001
//!     })
//!     .await?;
//! shutdown.drained().await; // bounded by the guard's close timeout
//! # Ok(())
//! # }
//! ```
//!
//! # Security considerations
//!
//! - Serve with a header-read timeout. `axum::serve` sets none, so a client that sends half a
//!   request head holds its connection (and a task) forever. hyper's HTTP/1 server has one once it
//!   has a timer: `hyper::server::conn::http1::Builder::new().timer(TokioTimer::new())
//!   .header_read_timeout(..)` (10 s is a good default; the reference server shows the accept loop,
//!   with upgrades and graceful shutdown). Put a request timeout and a body size limit
//!   (`tower_http::timeout`, `tower_http::limit`) in front of handlers that read bodies.
//! - Put [`tower_http::sensitive_headers`](https://docs.rs/tower-http/latest/tower_http/sensitive_headers/)
//!   in front of any `TraceLayer`, with [`Guard::sensitive_headers`]; a query credential is in the
//!   URI, so log [`Guard::redacted_uri`] instead of the raw URI.
//! - To authenticate to another server (a proxy to its upstream), use [`client::OutboundCredential`]:
//!   put the credential in the handshake where the upstream checks it there. A first-message
//!   credential sent to an upstream that checks during the handshake never gets a chance: the
//!   upgrade is refused with `401` first.
//! - tungstenite logs the payload of every WebSocket frame at `TRACE` (target
//!   `tungstenite::protocol`), first-message auth frames included, and its client logs its whole
//!   handshake request: cap it with a `tungstenite=info` directive in every log filter.
//! - Behind a proxy that rewrites `Host`, the same-origin policy compares against the rewritten
//!   host: use an [allow-list](OriginPolicy::allow_list) there.
//! - Guessing: a [`FailureLimit`] answers `429` to a peer address after its budget of refused
//!   credentials, before any credential work. It needs the peer address: serve with
//!   `into_make_service_with_connect_info::<SocketAddr>()` (a guard with a limit and no
//!   `ConnectInfo` refuses every request with `500`). Behind a reverse proxy, every client has
//!   the proxy's address unless the proxy is named with [`FailureLimit::add_trusted_proxy`].
//! - Use [`check_unauthenticated_listener`] before serving without authentication, so that mode can never be
//!   reached from the network.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authz;
pub mod client;
mod credential;
mod error;
mod extract;
pub mod future;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod handoff;
mod head;
mod layer;
mod lease;
mod limit;
mod listener;
mod origin;
mod redact;
mod rejection;
mod sockets;
mod source;
mod verify;
pub mod ws;

// The guard, and what it answers with.
pub use authz::{scope_claim_contains, HasRoles, HasScopes, OwnsResource, RequestHead, Require};
pub use error::{ConfigError, ConfigErrorKind};
pub use extract::{Authenticated, ReadsGuard, WithGuard};
pub use guard::{Guard, GuardBuilder, Identity};
pub use layer::{GuardLayer, Guarded, RequireLayer, Required, ResponseBody};
pub use limit::{FailureLimit, DEFAULT_MAX_PEERS};
pub use listener::{check_unauthenticated_listener, InsecureListenerPolicy};
pub use origin::OriginPolicy;
pub use redact::{RedactedUri, REDACTED};
pub use rejection::{AuthRejection, AuthRejectionKind, RejectionBody};
pub use source::{Source, SourceKind};

// Verifiers.
pub use credential::{Credential, CredentialDigest};
pub use verify::{ByShape, Denial, Grant, MapPrincipal, Or, Verdict, Verifier};
pub use verify::{Grants, KeyId, Keys, ScopedKey, ScopedKeys, MIN_KEY_LEN};

// Stores and leases.
pub use lease::{Lease, LeaseStatus, Revocation, Revoker};
pub use verify::{KeyRecord, MemoryStore, SessionKeys, SessionStore, StoreError};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use verify::{RedisHealth, RedisStore, RedisStoreBuilder, Reread};

// JWT.
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use verify::{
    Claims, Jwt, JwtAlgorithm, JwtBuilder, JwtKey, JwtKeyring, JwtKeys, MintError, MAX_LEEWAY,
};
#[cfg(feature = "jwks")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks")))]
pub use verify::{
    FetchFuture, HttpFetch, Jwks, JwksBuilder, JwksError, JwksErrorKind, JwksFetch, JwksHealth,
    DEFAULT_JWKS_COOLDOWN, DEFAULT_JWKS_MAX_STALENESS, DEFAULT_JWKS_REFRESH,
};
