//! The guard: configuration plus the one resolution function every surface calls.
//!
//! The guard reads the request head, the sources, the origin policy and the verifiers below it,
//! and nothing above it: the layer, the extractors and the WebSocket helpers reach it through the
//! hand-off (the `handoff` room).

mod builder;
pub(crate) mod config;
mod future;

pub use builder::GuardBuilder;
pub(crate) use config::{Config, SocketOptions};

use std::fmt;
use std::sync::Arc;

use http::request::Parts;

use crate::credential::Credential;
use crate::head::{is_upgrade, Head};
use crate::limit::{Limiter, PeerKey, Refusal};
use crate::rejection::{AuthRejection, AuthRejectionKind, Challenges};
use crate::source::{Source, SourceKind};
use crate::verify::{Grant, Lease, VerdictState, Verifier};
pub use future::ResolveFuture;

/// One credential check for REST routes and WebSocket upgrades.
///
/// A guard holds the ordered credential sources, the origin policy and the verifier. Its
/// [`resolve`](Self::resolve) is the only code in the crate that reads or compares credentials;
/// the [layer](crate::GuardLayer), the [`Authenticated`](crate::Authenticated) extractor and the
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
    config: Config,
    challenges: Challenges,
    check: Check<P>,
    limiter: Option<Limiter>,
}

/// What the guard does once the origin policy let a request through.
enum Check<P> {
    /// Find the credential and verify it.
    Verify(Box<dyn Verifier<Principal = P>>),
    /// Read no credential: every request is this principal.
    Anonymous(P),
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
                    Ok(()) => Ok(Identity {
                        principal: principal.clone(),
                        source: SourceKind::Anonymous,
                        lease: Lease::unbounded(),
                        rest_query: false,
                    }),
                    Err(kind) => Err(self.reject(kind, None)),
                })
            }
        };
        if let Err(kind) = self.check_origin(head, upgrade) {
            return ResolveFuture::ready(Err(self.reject(kind, None)));
        }
        // The failure limit: after the Host and origin checks, before any credential is read.
        let peer = match self.admit_peer(head) {
            Ok(peer) => peer,
            Err(rejection) => return ResolveFuture::ready(Err(rejection)),
        };
        let found = match self.find_credential(head, upgrade) {
            Ok(found) => found,
            Err((kind, source)) => {
                return ResolveFuture::ready(Err(self.refuse(kind, source, peer)))
            }
        };
        let (source, credential) = found;
        let rest_query = source == SourceKind::Query && !upgrade;
        match verifier.verify(&credential).state {
            VerdictState::Ready(result) => {
                ResolveFuture::ready(self.finish(result, source, rest_query, peer))
            }
            VerdictState::Pending(future) => {
                ResolveFuture::pending(future, self.clone(), source, rest_query, peer)
            }
        }
    }

    /// Whom a failure of this request is charged to, when the guard has a failure limit; a
    /// limited peer (`429`) or a missing peer address (`500`) ends the request here.
    fn admit_peer(&self, head: Head<'_>) -> Result<Option<PeerKey>, AuthRejection> {
        let Some(limiter) = &self.inner.limiter else {
            return Ok(None);
        };
        let peer = limiter
            .peer(head)
            .and_then(|peer| limiter.check(peer).map(|()| peer));
        match peer {
            Ok(peer) => Ok(Some(peer)),
            Err(refusal) => Err(self.refusal(refusal)),
        }
    }

    /// Whether `peer` is limited right now (first-message auth checks again when the frame
    /// arrives, which may be long after the handshake).
    fn check_peer(&self, peer: Option<PeerKey>) -> Result<(), AuthRejection> {
        match (&self.inner.limiter, peer) {
            (Some(limiter), Some(peer)) => limiter.check(peer).map_err(|r| self.refusal(r)),
            _ => Ok(()),
        }
    }

    fn refusal(&self, refusal: Refusal) -> AuthRejection {
        match refusal {
            Refusal::Limited(secs) => {
                tracing::debug!(
                    target: "axum_keyguard::rejection",
                    kind = AuthRejectionKind::RateLimited.as_str(),
                    status = 429u16,
                    retry_after = secs,
                    "request rejected"
                );
                AuthRejection::rate_limited(secs, &self.inner.challenges)
            }
            Refusal::NoPeerAddress => self.reject(AuthRejectionKind::Misconfigured, None),
        }
    }

    /// The peer whose failures this request's would be charged to (for first-message auth,
    /// which reads its credential after the request is gone). `None` without a limit.
    pub(crate) fn limited_peer(&self, head: Head<'_>) -> Option<PeerKey> {
        self.inner.limiter.as_ref()?.peer(head).ok()
    }

    /// [`reject`](Self::reject), charging a refused credential to `peer`.
    pub(crate) fn refuse(
        &self,
        kind: AuthRejectionKind,
        source: Option<SourceKind>,
        peer: Option<PeerKey>,
    ) -> AuthRejection {
        if kind.is_refused_credential() {
            if let (Some(limiter), Some(peer)) = (&self.inner.limiter, peer) {
                limiter.record_failure(peer);
            }
        }
        self.reject(kind, source)
    }

    /// Verifies a credential read from a WebSocket auth frame (first-message auth): the same
    /// length cap and verifier as every other source.
    pub(crate) fn resolve_message(&self, value: &str, peer: Option<PeerKey>) -> ResolveFuture<P> {
        let Check::Verify(verifier) = &self.inner.check else {
            return ResolveFuture::ready(Err(self.reject(AuthRejectionKind::Misconfigured, None)));
        };
        if let Err(rejection) = self.check_peer(peer) {
            return ResolveFuture::ready(Err(rejection));
        }
        let source = SourceKind::Message;
        if value.is_empty() {
            return ResolveFuture::ready(Err(self.refuse(
                AuthRejectionKind::MalformedCredential,
                Some(source),
                peer,
            )));
        }
        if value.len() > self.inner.config.max_len {
            return ResolveFuture::ready(Err(self.refuse(
                AuthRejectionKind::CredentialTooLong,
                Some(source),
                peer,
            )));
        }
        match verifier.verify(&Credential::new(value)).state {
            VerdictState::Ready(result) => {
                ResolveFuture::ready(self.finish(result, source, false, peer))
            }
            VerdictState::Pending(future) => {
                ResolveFuture::pending(future, self.clone(), source, false, peer)
            }
        }
    }

    /// Turns a verifier's result into the resolution's result.
    pub(crate) fn finish(
        &self,
        result: Result<Grant<P>, crate::Denial>,
        source: SourceKind,
        rest_query: bool,
        peer: Option<PeerKey>,
    ) -> Result<Identity<P>, AuthRejection> {
        match result {
            Ok(grant) => {
                if let (Some(limiter), Some(peer)) = (&self.inner.limiter, peer) {
                    limiter.record_success(peer);
                }
                tracing::trace!(
                    target: "axum_keyguard",
                    source = source.as_str(),
                    "credential verified"
                );
                Ok(Identity {
                    principal: grant.principal,
                    source,
                    lease: grant.lease,
                    rest_query,
                })
            }
            Err(error) => Err(self.refuse(error.kind(), Some(source), peer)),
        }
    }
}

impl<P> Guard<P> {
    /// The configured sources, in the order they are read.
    #[must_use]
    pub fn sources(&self) -> &[Source] {
        &self.inner.config.sources
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn socket_options(&self) -> &SocketOptions {
        &self.inner.config.sockets
    }

    fn new(config: Config, challenges: Challenges, check: Check<P>) -> Self {
        let limiter = config.failure_limit.clone().map(Limiter::new);
        Self {
            inner: Arc::new(Inner {
                config,
                challenges,
                check,
                limiter,
            }),
        }
    }

    /// Every source in order, with duplicate and conflict checks (after the origin check).
    fn find_credential<'a>(
        &self,
        head: Head<'a>,
        upgrade: bool,
    ) -> Result<(SourceKind, Credential<'a>), (AuthRejectionKind, Option<SourceKind>)> {
        let inner = &*self.inner;
        let mut chosen: Option<(SourceKind, Credential<'a>)> = None;
        for source in inner.config.sources.iter() {
            let kind = source.kind();
            let value = match source.find(head, upgrade, inner.config.max_len) {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(rejection) => return Err((rejection, Some(kind))),
            };
            let credential = Credential::new(value);
            match &chosen {
                None => {
                    chosen = Some((kind, credential));
                    if inner.config.first_source_wins {
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
        if (upgrade || inner.config.origin_on_rest)
            && !inner
                .config
                .origin
                .allows(head, inner.config.require_origin)
        {
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
        let check = match inner.check {
            Check::Verify(_) => "verify",
            Check::Anonymous(_) => "anonymous",
        };
        f.debug_struct("Guard")
            .field("config", &inner.config)
            .field("check", &check)
            .finish_non_exhaustive()
    }
}

/// A successful resolution: who the caller is, where the credential came from, and how long it
/// stays valid.
#[derive(Clone)]
pub struct Identity<P> {
    principal: P,
    source: SourceKind,
    lease: Lease,
    rest_query: bool,
}

impl<P> Identity<P> {
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

impl<P> fmt::Debug for Identity<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("source", &self.source)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! The guard on a bare `http::request::Parts`: no layer, no router, no socket.

    use super::*;
    use crate::{Keys, OriginPolicy, Source};

    const KEY: &str = "guard-unit-key-0123456789";

    fn guard() -> Guard<crate::KeyId> {
        Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("keys"))
            .build()
            .expect("guard")
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(uri).header("host", "localhost");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn upgrade(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut all = vec![
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ];
        all.extend_from_slice(headers);
        parts(uri, &all)
    }

    fn kind(guard: &Guard<crate::KeyId>, parts: &Parts) -> Result<SourceKind, AuthRejectionKind> {
        let mut future = guard.resolve(parts);
        // Keys decide synchronously: the future is ready without polling.
        match future.take_ready().expect("decided at once") {
            Ok(identity) => Ok(identity.source()),
            Err(rejection) => Err(rejection.kind()),
        }
    }

    #[test]
    fn every_source_resolves_and_absence_is_missing() {
        let guard = guard();
        let bearer = format!("Bearer {KEY}");
        assert_eq!(
            kind(&guard, &parts("/", &[("x-session-api-key", KEY)])),
            Ok(SourceKind::Header)
        );
        assert_eq!(
            kind(&guard, &parts("/", &[("authorization", &bearer)])),
            Ok(SourceKind::Bearer)
        );
        let query = format!("/?session_api_key={KEY}");
        assert_eq!(kind(&guard, &upgrade(&query, &[])), Ok(SourceKind::Query));
        // On REST the query source is not read.
        assert_eq!(
            kind(&guard, &parts(&query, &[])),
            Err(AuthRejectionKind::MissingCredential)
        );
        assert_eq!(
            kind(&guard, &parts("/", &[])),
            Err(AuthRejectionKind::MissingCredential)
        );
        assert_eq!(
            kind(
                &guard,
                &parts("/", &[("x-session-api-key", "wrong-key-0123456789")])
            ),
            Err(AuthRejectionKind::InvalidCredential)
        );
    }

    #[test]
    fn conflicts_duplicates_and_caps_are_refused_before_verification() {
        let guard = guard();
        let conflicting = parts(
            "/",
            &[
                ("x-session-api-key", KEY),
                ("authorization", "Bearer other-key-0123456789"),
            ],
        );
        assert_eq!(
            kind(&guard, &conflicting),
            Err(AuthRejectionKind::ConflictingCredentials)
        );
        let bearer = format!("Bearer {KEY}");
        let same = parts(
            "/",
            &[("x-session-api-key", KEY), ("authorization", &bearer)],
        );
        assert_eq!(
            kind(&guard, &same),
            Ok(SourceKind::Header),
            "equal values agree"
        );
        let twice = parts(
            "/",
            &[("x-session-api-key", KEY), ("x-session-api-key", KEY)],
        );
        assert_eq!(
            kind(&guard, &twice),
            Err(AuthRejectionKind::DuplicateCredential)
        );
        let long = "k".repeat(4097);
        assert_eq!(
            kind(&guard, &parts("/", &[("x-session-api-key", &long)])),
            Err(AuthRejectionKind::CredentialTooLong)
        );
    }

    #[test]
    fn first_source_wins_reads_only_the_first_present_source() {
        let guard = Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("keys"))
            .first_source_wins(true)
            .build()
            .expect("guard");
        let query = format!("/?session_api_key={KEY}");
        let wrong_header = upgrade(&query, &[("x-session-api-key", "wrong-key-0123456789")]);
        assert_eq!(kind(&guard, &wrong_header), Ok(SourceKind::Query));
        let wrong_query = upgrade(
            "/?session_api_key=wrong-key-0123456789",
            &[("x-session-api-key", KEY)],
        );
        assert_eq!(
            kind(&guard, &wrong_query),
            Err(AuthRejectionKind::InvalidCredential)
        );
    }

    #[test]
    fn host_then_origin_are_checked_before_any_credential() {
        let guard = guard();
        let mut no_host = parts("/", &[("x-session-api-key", KEY)]);
        no_host.headers.remove(http::header::HOST);
        assert_eq!(kind(&guard, &no_host), Err(AuthRejectionKind::InvalidHost));
        let cross_site = upgrade(
            "/",
            &[
                ("origin", "https://evil.example"),
                ("x-session-api-key", "x"),
            ],
        );
        assert_eq!(
            kind(&guard, &cross_site),
            Err(AuthRejectionKind::OriginNotAllowed)
        );
        // On REST the origin is not checked unless asked.
        let rest = parts(
            "/",
            &[
                ("origin", "https://evil.example"),
                ("x-session-api-key", KEY),
            ],
        );
        assert_eq!(kind(&guard, &rest), Ok(SourceKind::Header));
        let strict = Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("keys"))
            .with_origin_policy(OriginPolicy::reject_any())
            .check_origin_on_rest(true)
            .build()
            .expect("guard");
        assert_eq!(
            kind(&strict, &rest),
            Err(AuthRejectionKind::OriginNotAllowed)
        );
    }

    #[test]
    fn an_anonymous_guard_reads_no_credential_but_keeps_the_origin_policy() {
        let guard = Guard::builder()
            .with_anonymous(crate::KeyId::of(&crate::CredentialDigest::of(b"anonymous")))
            .build()
            .expect("guard");
        let with_key = parts("/", &[("x-session-api-key", "anything at all")]);
        assert_eq!(kind(&guard, &with_key), Ok(SourceKind::Anonymous));
        let cross_site = upgrade("/", &[("origin", "null")]);
        assert_eq!(
            kind(&guard, &cross_site),
            Err(AuthRejectionKind::OriginNotAllowed)
        );
    }

    #[test]
    fn message_credentials_follow_the_same_cap_and_verifier() {
        let guard = Guard::builder()
            .with_verifier(Keys::new([KEY]).expect("keys"))
            .add_source(Source::subprotocol())
            .build()
            .expect("guard");
        let decide = |value: &str| {
            guard
                .resolve_message(value, None)
                .take_ready()
                .expect("decided at once")
                .map(|identity| identity.source())
                .map_err(|rejection| rejection.kind())
        };
        assert_eq!(decide(KEY), Ok(SourceKind::Message));
        assert_eq!(decide(""), Err(AuthRejectionKind::MalformedCredential));
        assert_eq!(
            decide(&"k".repeat(4097)),
            Err(AuthRejectionKind::CredentialTooLong)
        );
        assert_eq!(
            decide("wrong-key-0123456789"),
            Err(AuthRejectionKind::InvalidCredential)
        );
    }

    #[test]
    fn debug_shows_the_configuration_and_no_secret() {
        let shown = format!("{:?}", guard());
        assert!(
            shown.contains("sources") && shown.contains("verify"),
            "{shown}"
        );
        assert!(!shown.contains(KEY));
    }
}
