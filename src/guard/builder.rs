//! Building a guard: every option written once, in [`Config`], and checked in `build`.

use std::fmt;
use std::time::Duration;

use super::config::{Config, FIRST_MESSAGE_OVERHEAD};
use super::{Check, Guard};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::limit::FailureLimit;
use crate::origin::OriginPolicy;
use crate::rejection::Challenges;
use crate::sockets::{FirstMessage, Shutdown};
use crate::source::Source;
use crate::verify::Verifier;

/// Builds a [`Guard`]. Every fallible step is checked in [`build`](Self::build).
#[must_use]
pub struct GuardBuilder<P> {
    config: Config,
    check: Option<Check<P>>,
    /// What the verifier's own check found, reported by `build`.
    verifier_error: Option<ConfigError>,
}

impl GuardBuilder<()> {
    pub(super) fn new() -> Self {
        Self {
            config: Config::default(),
            check: None,
            verifier_error: None,
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
    /// [`check_unauthenticated_listener`](crate::check_unauthenticated_listener), on a loopback address. The source of such a
    /// request is [`SourceKind::Anonymous`](crate::SourceKind::Anonymous).
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
            config: self.config,
            check: Some(check),
            verifier_error,
        }
    }

    /// Replaces the sources (default: query on upgrades, `X-Session-API-Key`, Bearer).
    pub fn with_sources(mut self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.config.sources = sources.into_iter().collect();
        self
    }

    /// Appends a source after the current ones.
    pub fn add_source(mut self, source: Source) -> Self {
        self.config.sources.push(source);
        self
    }

    /// First-source precedence: the first source (in order) that has a credential is the only one
    /// read, so a wrong first credential fails even when a later one is right. Off by default:
    /// several sources with different values are then a `400`.
    pub fn first_source_wins(mut self, enabled: bool) -> Self {
        self.config.first_source_wins = enabled;
        self
    }

    /// Caps a credential's length in bytes (default 4096); longer values are a `400` and are
    /// never hashed.
    pub fn with_max_credential_len(mut self, bytes: usize) -> Self {
        self.config.max_len = bytes;
        self
    }

    /// Replaces the origin policy (default: same-origin).
    pub fn with_origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.config.origin = policy;
        self
    }

    /// Checks the origin on REST requests too, not only on upgrades.
    pub fn check_origin_on_rest(mut self, enabled: bool) -> Self {
        self.config.origin_on_rest = enabled;
        self
    }

    /// Refuses checked requests that carry no `Origin` header.
    pub fn require_origin(mut self, enabled: bool) -> Self {
        self.config.require_origin = enabled;
        self
    }

    /// Sets the realm of the `WWW-Authenticate` challenges (printable ASCII, no `"` or `\`).
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.config.realm = realm.into();
        self
    }

    /// Accepts upgrades that carry no credential and expects the first frame to be an auth
    /// message (browsers that cannot put a credential in the handshake). A handshake with a bad
    /// credential is still rejected before the upgrade. Use the
    /// [`GuardedUpgrade`](crate::ws::GuardedUpgrade) extractor on such routes.
    pub fn with_first_message_auth(mut self, first_message: FirstMessage) -> Self {
        self.config.sockets.first_message = Some(first_message);
        self
    }

    /// Answers an upgrade with a bad credential with `101` and an immediate Close (`4001`),
    /// because browsers cannot read a refused handshake's status (they only see `1006`). An
    /// origin refusal is still a `403`. Use the [`GuardedUpgrade`](crate::ws::GuardedUpgrade)
    /// extractor on such routes.
    pub fn accept_then_close(mut self, enabled: bool) -> Self {
        self.config.sockets.accept_then_close = enabled;
        self
    }

    /// How long the server waits for the client's Close after sending its own (default 5 s),
    /// before it drops the connection.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.config.sockets.close_timeout = timeout;
        self
    }

    /// How long open sockets keep running while their key store is unavailable (default 60 s),
    /// before they close with `1011`.
    pub fn with_unavailable_grace(mut self, grace: Duration) -> Self {
        self.config.sockets.unavailable_grace = grace;
        self
    }

    /// Closes every socket served through [`GuardedUpgrade`](crate::ws::GuardedUpgrade) with
    /// `1001` when `shutdown` is triggered (see [`Shutdown`] for the pattern with
    /// `axum::serve(..).with_graceful_shutdown(..)`).
    pub fn with_shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.config.sockets.shutdown = Some(shutdown.clone());
        self
    }

    /// Removes the credential headers (a named header source, `Authorization: Bearer`) from a
    /// request once it is verified, so handlers and anything they forward the request to never
    /// see them. Off by default. A subprotocol token entry is always removed.
    pub fn strip_credential_headers(mut self, enabled: bool) -> Self {
        self.config.strip_headers = enabled;
        self
    }

    /// Limits refused credentials per peer address: over the budget, requests get `429` with
    /// `Retry-After` before any credential is read or verified (see [`FailureLimit`]). The server
    /// must provide the peer address (`into_make_service_with_connect_info::<SocketAddr>()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum_keyguard::{FailureLimit, Guard, Keys};
    ///
    /// let guard = Guard::builder()
    ///     .with_verifier(Keys::new(["a-long-random-key-1"])?)
    ///     .with_failure_limit(FailureLimit::new(5, Duration::from_secs(60)))
    ///     .build()?;
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn with_failure_limit(mut self, limit: FailureLimit) -> Self {
        self.config.failure_limit = Some(limit);
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
        if self.config.sources.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Sources,
                "a guard needs at least one credential source",
            ));
        }
        for (i, source) in self.config.sources.iter().enumerate() {
            source.validate()?;
            let same_place = |other: &Source| {
                other.kind() == source.kind()
                    && other.header_name() == source.header_name()
                    && other.query_name() == source.query_name()
            };
            if self.config.sources[..i].iter().any(same_place) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Sources,
                    format!("credential source {source:?} is listed twice"),
                ));
            }
        }
        if let Some(limit) = &self.config.failure_limit {
            limit.validate()?;
            if matches!(check, Check::Anonymous(_)) {
                return Err(ConfigError::new(
                    ConfigErrorKind::NoVerifier,
                    "a failure limit needs a verifier: a guard without authentication refuses no \
                     credential",
                ));
            }
        }
        if self.config.max_len == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "the credential length cap must be at least 1 byte",
            ));
        }
        if let Some(first) = &self.config.sockets.first_message {
            // Room for the longest credential, its JSON and the frame header.
            if first.max_len < self.config.max_len.saturating_add(FIRST_MESSAGE_OVERHEAD) {
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
        let realm_ok = !self.config.realm.is_empty()
            && self
                .config
                .realm
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        let challenges = Challenges::new(&self.config.realm)
            .ok()
            .filter(|_| realm_ok)
            .ok_or_else(|| {
                ConfigError::new(
                    ConfigErrorKind::InvalidRealm,
                    "the realm must be printable ASCII without '\"' or '\\'",
                )
            })?;
        Ok(Guard::new(self.config, challenges, check))
    }
}

impl<P> fmt::Debug for GuardBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("config", &self.config)
            .field("has_verifier", &self.check.is_some())
            .finish_non_exhaustive()
    }
}
