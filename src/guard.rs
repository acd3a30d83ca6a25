//! The guard: configuration plus the one resolution function every surface calls.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use crate::credential::Credential;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::future::ResolveFuture;
use crate::head::{is_upgrade, Head};
use crate::layer::GuardLayer;
use crate::origin::OriginPolicy;
use crate::rejection::{AuthRejection, AuthRejectionKind, Challenges};
use crate::source::{
    strip_subprotocol_token, Source, SourceKind, DEFAULT_HEADER, DEFAULT_QUERY_PARAM,
};
use crate::verify::{Grant, Lease, VerificationState, Verifier};
use crate::ws::{FirstMessage, Shutdown};

/// The default time the server waits for the client's Close after sending its own.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default time open sockets keep running while their key store is unavailable.
pub const DEFAULT_UNAVAILABLE_GRACE: Duration = Duration::from_secs(60);

/// The default cap on a credential's length, in bytes.
pub const DEFAULT_MAX_CREDENTIAL_LEN: usize = 4096;

/// What an auth frame needs besides its credential: `{"type":"auth","session_api_key":""}` and a
/// frame header, with room to spare.
const FIRST_MESSAGE_OVERHEAD: usize = 256;

/// The default realm in `WWW-Authenticate` challenges.
pub const DEFAULT_REALM: &str = "axum-keyguard";

/// One credential check for REST routes and WebSocket upgrades.
///
/// A guard holds the ordered credential sources, the origin policy and the verifier. Its
/// [`resolve`](Self::resolve) is the only code in the crate that reads or compares credentials;
/// the [layer](GuardLayer), the [`Authenticated`](crate::Authenticated) extractor and the
/// WebSocket helpers all call it. Cloning is cheap (an `Arc`), and `Debug` shows no secret.
///
/// ```
/// use axum_keyguard::{Guard, Keys, OriginPolicy, Source};
///
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["a-long-random-key-1", "a-long-random-key-2"])?)
///     .with_sources([Source::header("X-Api-Key")?, Source::bearer()])
///     .with_origin_policy(OriginPolicy::allow_list(["https://app.example.com"])?)
///     .build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
pub struct Guard<P> {
    inner: Arc<Inner<P>>,
}

struct Inner<P> {
    sources: Box<[Source]>,
    first_source_wins: bool,
    max_len: usize,
    origin: OriginPolicy,
    origin_on_rest: bool,
    require_origin: bool,
    challenges: Challenges,
    check: Check<P>,
    sockets: SocketOptions,
    strip_headers: bool,
}

/// What the guard does once the origin policy let a request through.
enum Check<P> {
    /// Find the credential and verify it.
    Verify(Box<dyn Verifier<Principal = P>>),
    /// Read no credential: every request is this principal.
    Anonymous(P),
    /// The fail-closed stand-in that `FromRef<()>` hands out: every request is a `500`.
    Unconfigured,
}

/// How the guard treats WebSocket upgrades and open sockets.
#[derive(Debug, Clone)]
pub(crate) struct SocketOptions {
    pub(crate) first_message: Option<FirstMessage>,
    pub(crate) accept_then_close: bool,
    pub(crate) close_timeout: Duration,
    pub(crate) unavailable_grace: Duration,
    pub(crate) shutdown: Option<Shutdown>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            first_message: None,
            accept_then_close: false,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            unavailable_grace: DEFAULT_UNAVAILABLE_GRACE,
            shutdown: None,
        }
    }
}

/// The result the layer hands to the extractors.
#[derive(Clone)]
pub(crate) enum Outcome<P> {
    Verified(Verified<P>),
    Deferred(Deferred),
}

/// What happens to an upgrade whose handshake did not authenticate, in the opt-in modes.
#[derive(Debug, Clone)]
pub(crate) enum Deferred {
    /// No credential, first-message auth on: accept, then read the auth frame.
    FirstMessage,
    /// A bad credential, accept-then-close on: accept, then close with the rejection's code.
    Refuse(AuthRejection),
}

impl<P> Clone for Guard<P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Guard<()> {
    /// Starts a guard. Set a verifier with [`GuardBuilder::with_verifier`]; everything else has
    /// defaults (sources: query on upgrades, `X-Session-API-Key`, Bearer; same-origin policy on
    /// upgrades; 4096-byte cap).
    pub fn builder() -> GuardBuilder<()> {
        GuardBuilder::new()
    }
}

impl<P> Guard<P>
where
    P: Clone + Send + Sync + 'static,
{
    /// Authenticates a request: classify (REST or WebSocket upgrade), check the origin, find the
    /// credential, verify it.
    ///
    /// The synchronous part runs now, borrowing `parts`; the returned future owns what is left
    /// (nothing, for keys and signed tokens; a store call otherwise).
    ///
    /// ```
    /// use axum_keyguard::{Guard, Keys, SourceKind};
    ///
    /// # tokio_test();
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn tokio_test() {
    /// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"]).unwrap()).build().unwrap();
    /// let (parts, ()) = http::Request::get("/api")
    ///     .header("host", "localhost")
    ///     .header("x-session-api-key", "a-long-random-key-1")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// let verified = guard.resolve(&parts).await.unwrap();
    /// assert_eq!(verified.source(), SourceKind::Header);
    /// assert_eq!(verified.principal().to_string(), "key:aad2314e");
    /// # }
    /// ```
    pub fn resolve(&self, parts: &Parts) -> ResolveFuture<P> {
        let head = Head::from(parts);
        self.resolve_head(head, is_upgrade(head))
    }

    /// [`resolve`](Self::resolve) on the borrowed head of a request, which the layer reads
    /// without splitting the request apart, once the caller has classified it (`upgrade`, from
    /// [`is_upgrade`]) so that no path classifies a request twice.
    pub(crate) fn resolve_head(&self, head: Head<'_>, upgrade: bool) -> ResolveFuture<P> {
        let verifier = match &self.inner.check {
            Check::Verify(verifier) => verifier,
            Check::Anonymous(principal) => {
                return ResolveFuture::ready(match self.check_origin(head, upgrade) {
                    Ok(()) => Ok(Verified {
                        principal: principal.clone(),
                        source: SourceKind::Anonymous,
                        lease: Lease::unbounded(),
                        rest_query: false,
                    }),
                    Err(kind) => Err(self.reject(kind, None)),
                })
            }
            Check::Unconfigured => {
                return ResolveFuture::ready(Err(
                    self.reject(AuthRejectionKind::Misconfigured, None)
                ))
            }
        };
        let found = match self.find_credential(head, upgrade) {
            Ok(found) => found,
            Err((kind, source)) => return ResolveFuture::ready(Err(self.reject(kind, source))),
        };
        let (source, credential) = found;
        let rest_query = source == SourceKind::Query && !upgrade;
        match verifier.verify(&credential).state {
            VerificationState::Ready(result) => {
                ResolveFuture::ready(self.finish(result, source, rest_query))
            }
            VerificationState::Pending(future) => {
                ResolveFuture::pending(future, self.clone(), source, rest_query)
            }
        }
    }

    /// A layer that runs this guard before the inner service. Prefer
    /// [`Router::route_layer`](axum::Router::route_layer), so unknown paths stay `404`.
    pub fn layer(&self) -> GuardLayer<P> {
        GuardLayer::new(self.clone())
    }

    /// Verifies a credential read from a WebSocket auth frame (first-message auth): the same
    /// length cap and verifier as every other source.
    pub(crate) fn resolve_message(&self, value: &str) -> ResolveFuture<P> {
        let Check::Verify(verifier) = &self.inner.check else {
            return ResolveFuture::ready(Err(self.reject(AuthRejectionKind::Misconfigured, None)));
        };
        let source = SourceKind::Message;
        if value.is_empty() {
            return ResolveFuture::ready(Err(
                self.reject(AuthRejectionKind::MalformedCredential, Some(source))
            ));
        }
        if value.len() > self.inner.max_len {
            return ResolveFuture::ready(Err(
                self.reject(AuthRejectionKind::CredentialTooLong, Some(source))
            ));
        }
        match verifier.verify(&Credential::new(value)).state {
            VerificationState::Ready(result) => {
                ResolveFuture::ready(self.finish(result, source, false))
            }
            VerificationState::Pending(future) => {
                ResolveFuture::pending(future, self.clone(), source, false)
            }
        }
    }

    /// Turns a verifier's result into the resolution's result.
    pub(crate) fn finish(
        &self,
        result: Result<Grant<P>, crate::VerifyError>,
        source: SourceKind,
        rest_query: bool,
    ) -> Result<Verified<P>, AuthRejection> {
        match result {
            Ok(grant) => {
                tracing::trace!(
                    target: "axum_keyguard",
                    source = source.as_str(),
                    "credential verified"
                );
                Ok(Verified {
                    principal: grant.principal,
                    source,
                    lease: grant.lease,
                    rest_query,
                })
            }
            Err(error) => Err(self.reject(error.kind(), Some(source))),
        }
    }
}

impl<P> Guard<P> {
    /// The configured sources, in the order they are read.
    #[must_use]
    pub fn sources(&self) -> &[Source] {
        &self.inner.sources
    }

    /// Whether an upgrade that failed with `rejection` is accepted anyway, to be finished on the
    /// socket (first-message auth, accept-then-close). An origin refusal never is.
    pub(crate) fn defer(&self, upgrade: bool, rejection: &AuthRejection) -> Option<Deferred> {
        let options = &self.inner.sockets;
        if !upgrade {
            return None;
        }
        match rejection.kind() {
            AuthRejectionKind::OriginNotAllowed
            | AuthRejectionKind::Misconfigured
            | AuthRejectionKind::InvalidHost => None,
            AuthRejectionKind::MissingCredential if options.first_message.is_some() => {
                Some(Deferred::FirstMessage)
            }
            _ if options.accept_then_close => Some(Deferred::Refuse(rejection.clone())),
            _ => None,
        }
    }

    /// What a resolution means for the request: verified (with a subprotocol token removed from
    /// `headers`), deferred to the socket, or rejected now.
    pub(crate) fn outcome(
        &self,
        headers: &mut http::HeaderMap,
        upgrade: bool,
        result: Result<Verified<P>, AuthRejection>,
    ) -> Result<Outcome<P>, AuthRejection> {
        match result {
            Ok(verified) => {
                self.strip_credential(headers, verified.source());
                Ok(Outcome::Verified(verified))
            }
            Err(rejection) => match self.defer(upgrade, &rejection) {
                Some(deferred) => Ok(Outcome::Deferred(deferred)),
                None => Err(rejection),
            },
        }
    }

    pub(crate) fn socket_options(&self) -> &SocketOptions {
        &self.inner.sockets
    }

    /// Removes the verified credential from the request headers: always a subprotocol token
    /// entry, and with [`GuardBuilder::strip_credential_headers`] the credential headers too.
    fn strip_credential(&self, headers: &mut http::HeaderMap, source: SourceKind) {
        if source == SourceKind::Subprotocol {
            for prefix in self
                .inner
                .sources
                .iter()
                .filter_map(Source::subprotocol_prefix)
            {
                strip_subprotocol_token(headers, prefix);
            }
        }
        if !self.inner.strip_headers {
            return;
        }
        for source in self.inner.sources.iter() {
            match source.kind() {
                SourceKind::Header => {
                    if let Some(name) = source.header_name() {
                        headers.remove(name);
                    }
                }
                SourceKind::Bearer => {
                    let is_bearer = headers.get(http::header::AUTHORIZATION).is_some_and(|v| {
                        v.as_bytes()
                            .get(..6)
                            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"))
                    });
                    if is_bearer {
                        headers.remove(http::header::AUTHORIZATION);
                    }
                }
                _ => {}
            }
        }
    }

    /// A guard that rejects everything with `500`: what an extractor gets when the application
    /// put no guard in its state and no layer in front of it.
    pub(crate) fn unconfigured() -> Self {
        Self {
            inner: Arc::new(Inner {
                sources: Box::new([]),
                first_source_wins: false,
                max_len: 0,
                origin: OriginPolicy::reject_any(),
                origin_on_rest: true,
                require_origin: true,
                challenges: default_challenges(),
                check: Check::Unconfigured,
                sockets: SocketOptions::default(),
                strip_headers: false,
            }),
        }
    }

    /// Origin, then every source in order, with duplicate and conflict checks.
    fn find_credential<'a>(
        &self,
        head: Head<'a>,
        upgrade: bool,
    ) -> Result<(SourceKind, Credential<'a>), (AuthRejectionKind, Option<SourceKind>)> {
        let inner = &*self.inner;
        self.check_origin(head, upgrade)
            .map_err(|kind| (kind, None))?;
        let mut chosen: Option<(SourceKind, Credential<'a>)> = None;
        for source in inner.sources.iter() {
            let kind = source.kind();
            let value = match source.find(head, upgrade, inner.max_len) {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(rejection) => return Err((rejection, Some(kind))),
            };
            let credential = Credential::new(value);
            match &chosen {
                None => {
                    chosen = Some((kind, credential));
                    if inner.first_source_wins {
                        break;
                    }
                }
                Some((_, first)) if first.same_value(&credential) => {}
                Some(_) => return Err((AuthRejectionKind::ConflictingCredentials, Some(kind))),
            }
        }
        chosen.ok_or((AuthRejectionKind::MissingCredential, None))
    }

    /// The request's `Host` (one, on HTTP/1.1), then the origin policy on upgrades (and on REST
    /// requests when enabled): before any credential work.
    fn check_origin(&self, head: Head<'_>, upgrade: bool) -> Result<(), AuthRejectionKind> {
        if head.version == http::Version::HTTP_11 {
            let mut hosts = head.headers.get_all(http::header::HOST).iter();
            if hosts.next().is_none() || hosts.next().is_some() {
                return Err(AuthRejectionKind::InvalidHost);
            }
        }
        let inner = &*self.inner;
        if (upgrade || inner.origin_on_rest) && !inner.origin.allows(head, inner.require_origin) {
            return Err(AuthRejectionKind::OriginNotAllowed);
        }
        Ok(())
    }

    /// Builds the rejection and records it (kind and source name, never the value).
    pub(crate) fn reject(
        &self,
        kind: AuthRejectionKind,
        source: Option<SourceKind>,
    ) -> AuthRejection {
        let source = source.map_or("none", SourceKind::as_str);
        let status = kind.status().as_u16();
        match kind {
            AuthRejectionKind::Unavailable | AuthRejectionKind::Misconfigured => tracing::warn!(
                target: "axum_keyguard::rejection",
                kind = kind.as_str(), source, status, "request rejected"
            ),
            _ => tracing::debug!(
                target: "axum_keyguard::rejection",
                kind = kind.as_str(), source, status, "request rejected"
            ),
        }
        AuthRejection::new(kind, &self.inner.challenges)
    }
}

impl<P> fmt::Debug for Guard<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Guard")
            .field("sources", &inner.sources)
            .field("first_source_wins", &inner.first_source_wins)
            .field("max_credential_len", &inner.max_len)
            .field("origin", &inner.origin)
            .field("origin_on_rest", &inner.origin_on_rest)
            .field("require_origin", &inner.require_origin)
            .field(
                "check",
                &match inner.check {
                    Check::Verify(_) => "verify",
                    Check::Anonymous(_) => "anonymous",
                    Check::Unconfigured => "unconfigured",
                },
            )
            .field("sockets", &inner.sockets)
            .field("strip_credential_headers", &inner.strip_headers)
            .finish_non_exhaustive()
    }
}

/// A successful resolution: who the caller is, where the credential came from, and how long it
/// stays valid.
#[derive(Clone)]
pub struct Verified<P> {
    principal: P,
    source: SourceKind,
    lease: Lease,
    rest_query: bool,
}

impl<P> Verified<P> {
    /// The principal the verifier returned.
    pub fn principal(&self) -> &P {
        &self.principal
    }

    /// Consumes this, returning the principal.
    pub fn into_principal(self) -> P {
        self.principal
    }

    /// Which source the credential came from.
    pub fn source(&self) -> SourceKind {
        self.source
    }

    /// The credential's lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// A REST request authenticated by a query parameter: its response must not be cached.
    pub(crate) fn is_rest_query(&self) -> bool {
        self.rest_query
    }
}

impl<P> fmt::Debug for Verified<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("source", &self.source)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Guard`]. Every fallible step is checked in [`build`](Self::build).
#[must_use]
pub struct GuardBuilder<P> {
    sources: Vec<Source>,
    first_source_wins: bool,
    max_len: usize,
    origin: OriginPolicy,
    origin_on_rest: bool,
    require_origin: bool,
    realm: String,
    check: Option<Check<P>>,
    /// What the verifier's own check found, reported by `build`.
    verifier_error: Option<ConfigError>,
    sockets: SocketOptions,
    strip_headers: bool,
}

fn default_sources() -> Vec<Source> {
    vec![
        Source::query(DEFAULT_QUERY_PARAM),
        Source::header(DEFAULT_HEADER).expect("the default header name is valid"),
        Source::bearer(),
    ]
}

fn default_challenges() -> Challenges {
    Challenges::new(DEFAULT_REALM).expect("the default realm is a valid header value")
}

impl GuardBuilder<()> {
    fn new() -> Self {
        Self {
            sources: default_sources(),
            first_source_wins: false,
            max_len: DEFAULT_MAX_CREDENTIAL_LEN,
            origin: OriginPolicy::same_origin(),
            origin_on_rest: false,
            require_origin: false,
            realm: DEFAULT_REALM.to_owned(),
            check: None,
            verifier_error: None,
            sockets: SocketOptions::default(),
            strip_headers: false,
        }
    }
}

impl<P> GuardBuilder<P> {
    /// Sets the verifier; the guard's principal type becomes the verifier's.
    pub fn with_verifier<V: Verifier>(self, verifier: V) -> GuardBuilder<V::Principal> {
        let verifier_error = verifier.check_config().err();
        self.with_check(Check::Verify(Box::new(verifier)), verifier_error)
    }

    /// No authentication: every request the origin policy lets through is `principal`, and no
    /// credential is read. The [origin policy](OriginPolicy) still refuses cross-site upgrades
    /// (`403`), and sockets served through [`GuardedUpgrade`](crate::ws::GuardedUpgrade) still
    /// close with `1001` on [shutdown](Self::with_shutdown). Use it only behind
    /// [`check_listener`](crate::check_listener), on a loopback address. The source of such a
    /// request is [`SourceKind::Anonymous`].
    ///
    /// ```
    /// use axum_keyguard::{Guard, SourceKind};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let guard = Guard::builder().with_anonymous("anonymous").build().unwrap();
    /// let upgrade = |origin: &str| {
    ///     http::Request::get("/ws")
    ///         .header("host", "127.0.0.1:8000")
    ///         .header("origin", origin)
    ///         .header("connection", "upgrade")
    ///         .header("upgrade", "websocket")
    ///         .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    ///         .header("sec-websocket-version", "13")
    ///         .body(())
    ///         .unwrap()
    ///         .into_parts()
    ///         .0
    /// };
    /// let same_site = guard.resolve(&upgrade("http://127.0.0.1:8000")).await.unwrap();
    /// assert_eq!(same_site.source(), SourceKind::Anonymous);
    /// let cross_site = guard.resolve(&upgrade("https://evil.example")).await.unwrap_err();
    /// assert_eq!(cross_site.status(), 403);
    /// # }
    /// ```
    pub fn with_anonymous<Q>(self, principal: Q) -> GuardBuilder<Q> {
        self.with_check(Check::Anonymous(principal), None)
    }

    fn with_check<Q>(
        self,
        check: Check<Q>,
        verifier_error: Option<ConfigError>,
    ) -> GuardBuilder<Q> {
        GuardBuilder {
            sources: self.sources,
            first_source_wins: self.first_source_wins,
            max_len: self.max_len,
            origin: self.origin,
            origin_on_rest: self.origin_on_rest,
            require_origin: self.require_origin,
            realm: self.realm,
            check: Some(check),
            verifier_error,
            sockets: self.sockets,
            strip_headers: self.strip_headers,
        }
    }

    /// Replaces the sources (default: query on upgrades, `X-Session-API-Key`, Bearer).
    pub fn with_sources(mut self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// Appends a source after the current ones.
    pub fn add_source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// OpenHands precedence: the first source (in order) that has a credential is the only one
    /// read, so a wrong first credential fails even when a later one is right. Off by default:
    /// several sources with different values are then a `400`.
    pub fn first_source_wins(mut self, enabled: bool) -> Self {
        self.first_source_wins = enabled;
        self
    }

    /// Caps a credential's length in bytes (default 4096); longer values are a `400` and are
    /// never hashed.
    pub fn with_max_credential_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// Replaces the origin policy (default: same-origin).
    pub fn with_origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.origin = policy;
        self
    }

    /// Checks the origin on REST requests too, not only on upgrades.
    pub fn check_origin_on_rest(mut self, enabled: bool) -> Self {
        self.origin_on_rest = enabled;
        self
    }

    /// Refuses checked requests that carry no `Origin` header.
    pub fn require_origin(mut self, enabled: bool) -> Self {
        self.require_origin = enabled;
        self
    }

    /// Sets the realm of the `WWW-Authenticate` challenges (printable ASCII, no `"` or `\`).
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Accepts upgrades that carry no credential and expects the first frame to be an auth
    /// message (browsers that cannot put a credential in the handshake). A handshake with a bad
    /// credential is still rejected before the upgrade. Use the
    /// [`GuardedUpgrade`](crate::ws::GuardedUpgrade) extractor on such routes.
    pub fn first_message_auth(mut self, first_message: FirstMessage) -> Self {
        self.sockets.first_message = Some(first_message);
        self
    }

    /// Answers an upgrade with a bad credential with `101` and an immediate Close (`4001`),
    /// because browsers cannot read a refused handshake's status (they only see `1006`). An
    /// origin refusal is still a `403`. Use the [`GuardedUpgrade`](crate::ws::GuardedUpgrade)
    /// extractor on such routes.
    pub fn accept_then_close(mut self, enabled: bool) -> Self {
        self.sockets.accept_then_close = enabled;
        self
    }

    /// How long the server waits for the client's Close after sending its own (default 5 s),
    /// before it drops the connection.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.sockets.close_timeout = timeout;
        self
    }

    /// How long open sockets keep running while their key store is unavailable (default 60 s),
    /// before they close with `1011`.
    pub fn with_unavailable_grace(mut self, grace: Duration) -> Self {
        self.sockets.unavailable_grace = grace;
        self
    }

    /// Closes every socket served through [`GuardedUpgrade`](crate::ws::GuardedUpgrade) with
    /// `1001` when `shutdown` is triggered (see [`Shutdown`] for the pattern with
    /// `axum::serve(..).with_graceful_shutdown(..)`).
    pub fn with_shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.sockets.shutdown = Some(shutdown.clone());
        self
    }

    /// Removes the credential headers (a named header source, `Authorization: Bearer`) from a
    /// request once it is verified, so handlers and anything they forward the request to never
    /// see them. Off by default. A subprotocol token entry is always removed.
    pub fn strip_credential_headers(mut self, enabled: bool) -> Self {
        self.strip_headers = enabled;
        self
    }

    /// Checks the configuration and builds the guard.
    ///
    /// ```
    /// use axum_keyguard::{ConfigErrorKind, Guard};
    ///
    /// let err = Guard::builder().build().unwrap_err();
    /// assert_eq!(err.kind(), ConfigErrorKind::NoVerifier);
    /// ```
    pub fn build(self) -> Result<Guard<P>, ConfigError> {
        let check = self.check.ok_or_else(|| {
            ConfigError::new(ConfigErrorKind::NoVerifier, "a guard needs a verifier")
        })?;
        if let Some(error) = self.verifier_error {
            return Err(error);
        }
        if self.sources.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Sources,
                "a guard needs at least one credential source",
            ));
        }
        for (i, source) in self.sources.iter().enumerate() {
            source.validate()?;
            let same_place = |other: &Source| {
                other.kind() == source.kind()
                    && other.header_name() == source.header_name()
                    && other.query_name() == source.query_name()
            };
            if self.sources[..i].iter().any(same_place) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Sources,
                    format!("credential source {source:?} is listed twice"),
                ));
            }
        }
        if self.max_len == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "the credential length cap must be at least 1 byte",
            ));
        }
        if let Some(first) = &self.sockets.first_message {
            // Room for the longest credential, its JSON and the frame header.
            if first.max_len < self.max_len.saturating_add(FIRST_MESSAGE_OVERHEAD) {
                return Err(ConfigError::new(
                    ConfigErrorKind::OutOfRange,
                    format!(
                        "the first-message read cap must be at least the credential cap plus \
                         {FIRST_MESSAGE_OVERHEAD} bytes"
                    ),
                ));
            }
            if first.fields.is_empty() || first.fields.iter().any(|f| f.is_empty() || f == "type") {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidName,
                    "first-message auth needs credential fields, none empty or named \"type\"",
                ));
            }
        }
        let realm_ok = !self.realm.is_empty()
            && self
                .realm
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        let challenges = Challenges::new(&self.realm)
            .ok()
            .filter(|_| realm_ok)
            .ok_or_else(|| {
                ConfigError::new(
                    ConfigErrorKind::InvalidRealm,
                    "the realm must be printable ASCII without '\"' or '\\'",
                )
            })?;
        Ok(Guard {
            inner: Arc::new(Inner {
                sources: self.sources.into_boxed_slice(),
                first_source_wins: self.first_source_wins,
                max_len: self.max_len,
                origin: self.origin,
                origin_on_rest: self.origin_on_rest,
                require_origin: self.require_origin,
                challenges,
                check,
                sockets: self.sockets,
                strip_headers: self.strip_headers,
            }),
        })
    }
}

impl<P> fmt::Debug for GuardBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("sources", &self.sources)
            .field("first_source_wins", &self.first_source_wins)
            .field("origin", &self.origin)
            .field("has_verifier", &self.check.is_some())
            .finish_non_exhaustive()
    }
}
