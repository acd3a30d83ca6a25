//! Public keys from a JWK Set URL (RFC 7517), optionally found through OpenID Connect
//! discovery, kept fresh without ever making a verification wait on the network.
//!
//! The rooms: the key set and its refresh (here), one published key ([jwk]) and the transport
//! ([fetch]).

mod fetch;
pub(crate) mod jwk;

pub use fetch::{FetchFuture, HttpFetch, JwksError, JwksErrorKind, JwksFetch};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use http::Uri;
use serde::Deserialize;
use tokio::sync::watch;

use crate::lease::{LeaseStatus, Revocation, Revoker};
use crate::verify::jwt::JwtAlgorithm;

use fetch::Shown;
use jwk::Jwk;

/// Default background refresh interval, when the provider sends no shorter `Cache-Control`.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// The shortest interval between two fetches caused by unknown `kid`s, by default.
pub const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(10);
/// How long the last good set keeps verifying while the provider fails, by default.
pub const DEFAULT_JWKS_MAX_STALENESS: Duration = Duration::from_secs(3600);

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A JWK Set from a provider, shared by every verifier and task that holds a clone.
///
/// Build it with [`Jwks::builder`] (a JWKS URL) or [`Jwks::discover`] (an OpenID Connect issuer),
/// then verify with [`Jwt::builder(jwks)`](crate::Jwt::builder): the same strict checks, claims
/// and leases as HMAC tokens, for `RS256`, `PS256`, `ES256` and `EdDSA`.
///
/// - **Verification never waits on the network** for a known key: the current set is read
///   without a lock held across any fetch.
/// - **An unknown `kid` triggers one refetch**: concurrent requests wait for the same fetch
///   (single flight), and another such fetch starts no sooner than the cooldown after the last
///   one (random `kid`s cost no fetch each).
/// - **A background task refreshes** the set every [`refresh`](JwksBuilder::with_refresh)
///   interval, sooner when the provider's `Cache-Control: max-age` says so (but never more
///   often than the cooldown). It ends when the last clone is dropped.
/// - **The provider failing keeps the last good set** until the
///   [maximum staleness](JwksBuilder::with_max_staleness); then verification answers `503` with
///   `Retry-After` (never `401`), and open sockets count as unavailable (grace, then `1011`).
/// - **A key dropped from the set revokes** it: open sockets authenticated with tokens of that
///   key close with `4001` after the refresh that drops it. A `kid` republished with other key
///   material is a new key.
/// - The header members `jku`, `x5u`, `jwk`, `x5c` are refused, never followed. A JWK's own
///   `alg`, `kty`, `crv`, `use` and `key_ops` must agree with the token; `oct` (secret) keys,
///   keys with private members and RSA moduli under 2048 bits are left out of the set.
///
/// ```no_run
/// use axum_keyguard::{Guard, Jwks, Jwt};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let jwks = Jwks::discover("http://127.0.0.1:8080/realms/agents")?.build().await?;
/// let jwt = Jwt::builder(jwks)
///     .with_issuer("http://127.0.0.1:8080/realms/agents")
///     .with_audience("agent-server")
///     .build()?;
/// let guard = Guard::builder().with_verifier(jwt).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the set is fetched from: given, or found by discovery in `build`.
    uri: Uri,
    fetch: Arc<dyn JwksFetch>,
    options: Options,
    clock: Clock,
    /// The current set. Read by cloning the `Arc`, written after a fetch has finished.
    set: RwLock<Arc<KeySet>>,
    /// Fetch bookkeeping; never held across an `.await`.
    state: Mutex<FetchState>,
    /// Counts finished fetches, for requests waiting on the one in flight.
    finished: watch::Sender<u64>,
    fetches: AtomicU64,
}

enum Source {
    Url,
    Discovery { issuer: String },
}

#[derive(Clone)]
struct Options {
    refresh: Duration,
    cooldown: Duration,
    max_staleness: Duration,
    timeout: Duration,
    max_bytes: usize,
    max_keys: usize,
    algorithms: Vec<JwtAlgorithm>,
}

#[derive(Default)]
struct FetchState {
    in_flight: bool,
    /// When the last fetch caused by an unknown `kid` started.
    last_unknown_kid_fetch: Option<SystemTime>,
    /// Whether the last fetch failed (an unknown `kid` is then `503`, not `401`).
    failing: bool,
    /// The provider's `Cache-Control` lifetime from the last good fetch.
    max_age: Option<Duration>,
}

/// The keys of one fetch, with the revocation signal of each.
struct KeySet {
    keys: Vec<Entry>,
    /// Bumped whenever a key is removed or replaced, so cached tokens can tell they are stale.
    generation: u64,
    /// When the set was last confirmed by a successful fetch.
    confirmed: Option<SystemTime>,
}

struct Entry {
    jwk: Jwk,
    revoker: Revoker,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<&Entry> {
        self.keys.iter().find(|e| e.jwk.kid.as_deref() == kid)
    }
}

/// The state of a key set, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksHealth {
    /// How many usable keys the set holds.
    pub keys: usize,
    /// When the set was last fetched successfully.
    pub confirmed: Option<SystemTime>,
    /// Whether the last fetch failed.
    pub failing: bool,
    /// Whether the set is older than the maximum staleness (verification answers `503`).
    pub stale: bool,
    /// How many fetches have been made (discovery not counted).
    pub fetches: u64,
}

/// What a verification found in the set.
pub(crate) enum Lookup<'a> {
    Found {
        jwk: &'a Jwk,
        alg: JwtAlgorithm,
        revocation: Revocation,
    },
    UnknownKey,
    Algorithm,
}

/// Builds a [`Jwks`].
#[must_use]
pub struct JwksBuilder {
    source: Source,
    uri: Option<Uri>,
    fetch: Option<Arc<dyn JwksFetch>>,
    options: Options,
    clock: Option<Clock>,
}

impl fmt::Debug for JwksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksBuilder")
            .field("uri", &self.uri.as_ref().map(Shown))
            .field("refresh", &self.options.refresh)
            .field("cooldown", &self.options.cooldown)
            .field("max_staleness", &self.options.max_staleness)
            .finish_non_exhaustive()
    }
}

fn parse_uri(uri: &str) -> Result<Uri, JwksError> {
    let parsed: Uri = uri
        .parse()
        .map_err(|_| JwksError::new(JwksErrorKind::Url, "not a URL"))?;
    if parsed.host().is_none() || parsed.scheme().is_none() {
        return Err(JwksError::new(
            JwksErrorKind::Url,
            "the URL needs a scheme and a host",
        ));
    }
    Ok(parsed)
}

impl Jwks {
    /// Starts a key set fetched from `jwks_uri`.
    ///
    /// Fails on a string that is not an absolute URL.
    pub fn builder(jwks_uri: &str) -> Result<JwksBuilder, JwksError> {
        let uri = parse_uri(jwks_uri)?;
        Ok(JwksBuilder::new(Source::Url, Some(uri)))
    }

    /// Starts a key set found through OpenID Connect discovery: `build` fetches
    /// `{issuer}/.well-known/openid-configuration` once, requires its `issuer` to be exactly
    /// `issuer`, and takes its `jwks_uri`. Discovery is never run again (a changed `jwks_uri`
    /// takes a restart), so it cannot be made to run per request.
    pub fn discover(issuer: &str) -> Result<JwksBuilder, JwksError> {
        parse_uri(issuer)?;
        Ok(JwksBuilder::new(
            Source::Discovery {
                issuer: issuer.to_owned(),
            },
            None,
        ))
    }

    /// The set's state now.
    #[must_use]
    pub fn health(&self) -> JwksHealth {
        let set = self.current();
        let failing = self.inner.lock().failing;
        JwksHealth {
            keys: set.keys.len(),
            confirmed: set.confirmed,
            failing,
            stale: self.is_stale(&set),
            fetches: self.inner.fetches.load(Ordering::Relaxed),
        }
    }

    /// The key ids in the current set (`None` for a key without one).
    #[must_use]
    pub fn kids(&self) -> Vec<Option<String>> {
        self.current()
            .keys
            .iter()
            .map(|e| e.jwk.kid.as_deref().map(str::to_owned))
            .collect()
    }

    /// Fetches the set now, whatever the schedule, and waits for it. A fetch already in flight
    /// is joined rather than doubled.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut finished = self.inner.finished.subscribe();
        // Either this starts a fetch or one is in flight: both end with a `finished` tick.
        self.start_fetch();
        let _ = finished.changed().await;
        if self.inner.lock().failing {
            Err(JwksError::new(
                JwksErrorKind::Transport,
                "the key set fetch failed",
            ))
        } else {
            Ok(())
        }
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .inner
                .set
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn is_stale(&self, set: &KeySet) -> bool {
        let now = (self.inner.clock)();
        set.confirmed.is_none_or(|at| {
            now.duration_since(at).unwrap_or_default() > self.inner.options.max_staleness
        })
    }

    /// The set's generation, or `None` when it is too stale to verify with.
    pub(crate) fn generation(&self) -> Option<u64> {
        let set = self.current();
        (!self.is_stale(&set)).then_some(set.generation)
    }

    /// Looks up the key for a token's `kid` and `alg`, then calls `verify` with it. `None` when
    /// the set is too stale to verify with.
    pub(crate) fn with_key<T>(
        &self,
        kid: Option<&str>,
        alg: &str,
        verify: impl FnOnce(Lookup<'_>, u64) -> T,
    ) -> Option<T> {
        let set = self.current();
        if self.is_stale(&set) {
            return None;
        }
        let lookup = match set.find(kid) {
            None => Lookup::UnknownKey,
            Some(entry) => match entry.jwk.accepts(alg, &self.inner.options.algorithms) {
                None => Lookup::Algorithm,
                Some(alg) => Lookup::Found {
                    jwk: &entry.jwk,
                    alg,
                    revocation: entry.revoker.subscribe(),
                },
            },
        };
        Some(verify(lookup, set.generation))
    }

    /// Called when a token names a `kid` the set lacks: joins the fetch in flight, or starts one
    /// unless the last one of its kind is within the cooldown, and waits for it (bounded by the
    /// fetch timeout). Returns whether the provider is failing.
    pub(crate) async fn unknown_kid(&self) -> bool {
        let mut finished = self.inner.finished.subscribe();
        let wait = {
            let mut state = self.inner.lock();
            if state.in_flight {
                true
            } else {
                let now = (self.inner.clock)();
                let cooled = state.last_unknown_kid_fetch.is_none_or(|at| {
                    now.duration_since(at).unwrap_or_default() >= self.inner.options.cooldown
                });
                if cooled {
                    state.last_unknown_kid_fetch = Some(now);
                }
                cooled
            }
        };
        if wait {
            self.start_fetch();
            let bound = self.inner.options.timeout + Duration::from_secs(1);
            let _ = tokio::time::timeout(bound, finished.changed()).await;
        }
        self.inner.lock().failing
    }

    /// Starts a fetch unless one is in flight; returns whether it started one. The fetch runs
    /// as its own task, so a request that gives up waiting does not cancel it.
    fn start_fetch(&self) -> bool {
        {
            let mut state = self.inner.lock();
            if state.in_flight {
                return false;
            }
            state.in_flight = true;
        }
        let weak = Arc::downgrade(&self.inner);
        // Made before the task, so a task dropped before it ever runs (a runtime shutting down)
        // still ends the in-flight state.
        let guard = FetchGuard {
            inner: weak.clone(),
            done: false,
        };
        tokio::spawn(async move {
            // The whole guard moves into the task (not just the field written below).
            let mut guard = guard;
            if let Some(inner) = weak.upgrade() {
                let jwks = Jwks { inner };
                let _ = jwks.fetch_once().await;
            }
            guard.done = true;
        });
        true
    }

    /// One fetch: get, parse, swap in. Ends the in-flight state and wakes every waiter.
    async fn fetch_once(&self) -> Result<Option<Duration>, JwksError> {
        let result = self.get_and_apply().await;
        {
            let mut state = self.inner.lock();
            state.in_flight = false;
            state.failing = result.is_err();
            if let Ok(max_age) = result {
                state.max_age = max_age;
            }
        }
        match &result {
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(target: "axum_keyguard::jwks", %error, "key set fetch failed");
                if self.is_stale(&self.current()) {
                    self.set_status(LeaseStatus::Unavailable);
                }
            }
        }
        self.inner.finished.send_modify(|n| *n += 1);
        result
    }

    async fn get_and_apply(&self) -> Result<Option<Duration>, JwksError> {
        let uri = &self.inner.uri;
        let options = &self.inner.options;
        self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        let response = tokio::time::timeout(
            options.timeout,
            self.inner.fetch.fetch(uri, options.max_bytes),
        )
        .await
        .map_err(|_| {
            JwksError::new(
                JwksErrorKind::Timeout,
                format!("{}: no answer within {:?}", Shown(uri), options.timeout),
            )
        })??;
        let (body, max_age) = fetch::accept(uri, response, options.max_bytes)?;
        let keys = self.parse_set(uri, &body)?;
        self.apply(keys);
        Ok(max_age)
    }

    fn parse_set(&self, uri: &Uri, body: &[u8]) -> Result<Vec<Jwk>, JwksError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let format = |what: &str| {
            JwksError::new(
                JwksErrorKind::Format,
                format!("{}: not a JWK Set: {what}", Shown(uri)),
            )
        };
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(format("not a JSON object"));
        }
        let set: Set = serde_json::from_slice(body).map_err(|_| format("no `keys` array"))?;
        if set.keys.len() > self.inner.options.max_keys {
            return Err(format("too many keys"));
        }
        let mut keys: Vec<Jwk> = Vec::with_capacity(set.keys.len());
        let mut duplicated: Vec<Option<Arc<str>>> = Vec::new();
        for value in &set.keys {
            match Jwk::parse(value, &self.inner.options.algorithms) {
                Ok(jwk) => {
                    if keys.iter().any(|k| k.kid == jwk.kid) {
                        duplicated.push(jwk.kid.clone());
                    } else {
                        keys.push(jwk);
                    }
                }
                Err((kid, skip)) => {
                    tracing::debug!(
                        target: "axum_keyguard::jwks",
                        kid = kid.as_deref().unwrap_or("-"),
                        reason = %skip,
                        "key left out of the set"
                    );
                }
            }
        }
        // Two keys under one `kid` cannot be told apart: neither is used.
        for kid in duplicated {
            tracing::debug!(
                target: "axum_keyguard::jwks",
                kid = kid.as_deref().unwrap_or("-"),
                "two keys share this kid: both left out"
            );
            keys.retain(|k| k.kid != kid);
        }
        Ok(keys)
    }

    /// Swaps in a fetched set: keys that stay keep their revocation signal; keys removed or
    /// replaced are revoked.
    fn apply(&self, fresh: Vec<Jwk>) {
        let now = (self.inner.clock)();
        let mut slot = self
            .inner
            .set
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = Arc::clone(&slot);
        let mut changed = false;
        let keys: Vec<Entry> = fresh
            .into_iter()
            .map(|jwk| {
                let revoker = old
                    .keys
                    .iter()
                    .find(|e| e.jwk.kid == jwk.kid && e.jwk.fingerprint == jwk.fingerprint)
                    .map_or_else(Revoker::new, |e| e.revoker.clone());
                Entry { jwk, revoker }
            })
            .collect();
        for entry in &old.keys {
            let kept = keys
                .iter()
                .any(|e| e.jwk.fingerprint == entry.jwk.fingerprint && e.jwk.kid == entry.jwk.kid);
            if !kept {
                changed = true;
                tracing::info!(
                    target: "axum_keyguard::jwks",
                    kid = entry.jwk.kid.as_deref().unwrap_or("-"),
                    "key removed from the set: its tokens are refused and their sockets closed"
                );
                entry.revoker.revoke();
            }
        }
        for entry in &keys {
            entry.revoker.set(LeaseStatus::Active);
        }
        *slot = Arc::new(KeySet {
            keys,
            generation: old.generation + u64::from(changed),
            confirmed: Some(now),
        });
    }

    fn set_status(&self, status: LeaseStatus) {
        for entry in &self.current().keys {
            entry.revoker.set(status);
        }
    }

    /// The background refresh: every interval (shorter if `Cache-Control` says so, never below
    /// the cooldown), and after a failure again sooner, backing off up to the interval.
    async fn refresh_loop(weak: Weak<Inner>) {
        let mut failures: u32 = 0;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let options = inner.options.clone();
            let max_age = inner.lock().max_age;
            let mut finished = inner.finished.subscribe();
            drop(inner);
            let wait = if failures == 0 {
                max_age.map_or(options.refresh, |age| {
                    age.clamp(options.cooldown, options.refresh)
                })
            } else {
                options
                    .cooldown
                    .saturating_mul(1 << failures.min(10))
                    .min(options.refresh)
            };
            // Any other fetch (forced, or for an unknown kid) restarts the wait from its end,
            // with the lifetime it brought.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = finished.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if let Some(inner) = weak.upgrade() {
                        failures = if inner.lock().failing { failures.saturating_add(1) } else { 0 };
                    }
                    continue;
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            let jwks = Jwks { inner };
            let mut finished = jwks.inner.finished.subscribe();
            jwks.start_fetch();
            let _ = finished.changed().await;
            if jwks.inner.lock().failing {
                failures = failures.saturating_add(1);
            } else {
                failures = 0;
            }
        }
    }
}

/// Ends the in-flight state of a fetch task that never finished (a [`JwksFetch`] that
/// panicked, or a runtime that dropped the task, run or not): later requests can fetch again,
/// and no waiter waits for nothing.
struct FetchGuard {
    inner: Weak<Inner>,
    done: bool,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(inner) = self.inner.upgrade() {
            {
                let mut state = inner.lock();
                state.in_flight = false;
                state.failing = true;
            }
            inner.finished.send_modify(|n| *n += 1);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl JwksBuilder {
    fn new(source: Source, uri: Option<Uri>) -> Self {
        Self {
            source,
            uri,
            fetch: None,
            options: Options {
                refresh: DEFAULT_JWKS_REFRESH,
                cooldown: DEFAULT_JWKS_COOLDOWN,
                max_staleness: DEFAULT_JWKS_MAX_STALENESS,
                timeout: Duration::from_secs(5),
                max_bytes: 256 * 1024,
                max_keys: 64,
                algorithms: vec![
                    JwtAlgorithm::Rs256,
                    JwtAlgorithm::Ps256,
                    JwtAlgorithm::Es256,
                    JwtAlgorithm::EdDsa,
                ],
            },
            clock: None,
        }
    }

    /// Fetches with `fetch` instead of the built-in [`HttpFetch`] (for TLS, proxies, tests).
    ///
    /// ```
    /// use axum_keyguard::{FetchFuture, Jwks, JwksFetch, Jwt};
    ///
    /// /// Keys shipped with the application instead of fetched.
    /// struct Shipped;
    ///
    /// impl JwksFetch for Shipped {
    ///     fn fetch(&self, _uri: &http::Uri, _max_bytes: usize) -> FetchFuture {
    ///         let set = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"2026-12","use":"sig",
    ///             "x":"jtBotKGunAMR7usFzFMx54PHL63t-srcGzGvx_yAi1I"}]}"#;
    ///         Box::pin(async move { Ok(http::Response::new(bytes::Bytes::from_static(set.as_bytes()))) })
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let jwks = Jwks::builder("http://keys.internal/jwks.json")?
    ///     .with_fetch(Shipped)
    ///     .build()
    ///     .await?;
    /// assert_eq!(jwks.kids(), [Some("2026-12".to_owned())]);
    /// let jwt = Jwt::builder(jwks).with_audience("agent-server").build()?;
    /// assert!(jwt.keyring().is_none()); // public keys only: this verifier cannot mint
    /// # Ok(()) }
    /// ```
    pub fn with_fetch(mut self, fetch: impl JwksFetch) -> Self {
        self.fetch = Some(Arc::new(fetch));
        self
    }

    /// The background refresh interval (default 300 s), an upper bound: a provider's shorter
    /// `Cache-Control: max-age` is honoured down to the cooldown.
    pub fn with_refresh(mut self, interval: Duration) -> Self {
        self.options.refresh = interval;
        self
    }

    /// The shortest time between two fetches caused by unknown `kid`s (default 10 s), and the
    /// shortest refresh interval a provider's `Cache-Control` can ask for.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.options.cooldown = cooldown;
        self
    }

    /// How long the last good set keeps verifying while the provider fails (default one hour).
    /// Past it, verification answers `503` and open sockets count as unavailable.
    pub fn with_max_staleness(mut self, staleness: Duration) -> Self {
        self.options.max_staleness = staleness;
        self
    }

    /// The bound on one whole fetch: connect, request, body (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// The largest body read (default 256 KiB); a larger one fails the fetch.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.options.max_bytes = max_bytes;
        self
    }

    /// The most keys a set may hold (default 64); a larger set fails the fetch.
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.options.max_keys = max_keys;
        self
    }

    /// The algorithms accepted (default `RS256`, `PS256`, `ES256`, `EdDSA`). HMAC algorithms
    /// are not: a key set is public.
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = JwtAlgorithm>) -> Self {
        self.options.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Replaces the wall clock used for the cooldown and the staleness (for tests).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    fn check(&self) -> Result<(), JwksError> {
        let o = &self.options;
        let config = |what: &str| Err(JwksError::new(JwksErrorKind::Config, what.to_owned()));
        if o.cooldown.is_zero() || o.timeout.is_zero() || o.max_staleness.is_zero() {
            return config("the JWKS cooldown, timeout and maximum staleness must be positive");
        }
        if o.refresh < o.cooldown {
            return config("the JWKS refresh interval must be at least the cooldown");
        }
        if o.max_staleness < o.refresh {
            return config("the JWKS maximum staleness must be at least the refresh interval");
        }
        if o.max_bytes == 0 || o.max_keys == 0 {
            return config("the JWKS size caps must be positive");
        }
        if o.algorithms.is_empty() || o.algorithms.iter().any(|a| a.is_hmac()) {
            return config(
                "a key set verifies RS256, PS256, ES256 or EdDSA, and needs at least one",
            );
        }
        Ok(())
    }

    /// Runs discovery (if asked), fetches the set once, and starts the background refresh.
    ///
    /// Fails on an invalid option, a failed discovery (including an `issuer` that is not the
    /// configured one) or a failed first fetch: a verifier that has never seen the provider's
    /// keys is not built. Must run inside a Tokio runtime.
    pub async fn build(self) -> Result<Jwks, JwksError> {
        self.check()?;
        let fetch: Arc<dyn JwksFetch> = self.fetch.unwrap_or_else(|| Arc::new(HttpFetch::new()));
        let uri = match (&self.source, self.uri) {
            (Source::Url, Some(uri)) => uri,
            (Source::Discovery { issuer }, _) => discover(&*fetch, issuer, &self.options).await?,
            (Source::Url, None) => return Err(JwksError::new(JwksErrorKind::Url, "no JWKS URL")),
        };
        let (finished, _) = watch::channel(0);
        let jwks = Jwks {
            inner: Arc::new(Inner {
                uri,
                fetch,
                options: self.options,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemTime::now)),
                set: RwLock::new(Arc::new(KeySet {
                    keys: Vec::new(),
                    generation: 0,
                    confirmed: None,
                })),
                state: Mutex::new(FetchState {
                    in_flight: true,
                    ..FetchState::default()
                }),
                finished,
                fetches: AtomicU64::new(0),
            }),
        };
        jwks.fetch_once().await?;
        tokio::spawn(Jwks::refresh_loop(Arc::downgrade(&jwks.inner)));
        Ok(jwks)
    }
}

/// OpenID Connect Discovery 1.0 §4: the configuration document, whose `issuer` must be exactly
/// the one asked for.
async fn discover(
    fetch: &dyn JwksFetch,
    issuer: &str,
    options: &Options,
) -> Result<Uri, JwksError> {
    #[derive(Deserialize)]
    struct Configuration {
        issuer: String,
        jwks_uri: String,
    }
    let uri = parse_uri(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))?;
    let response = tokio::time::timeout(options.timeout, fetch.fetch(&uri, options.max_bytes))
        .await
        .map_err(|_| {
            JwksError::new(
                JwksErrorKind::Timeout,
                format!("{}: no answer within {:?}", Shown(&uri), options.timeout),
            )
        })??;
    let (body, _) = fetch::accept(&uri, response, options.max_bytes)?;
    let document: Configuration = serde_json::from_slice(&body).map_err(|_| {
        JwksError::new(
            JwksErrorKind::Format,
            format!(
                "{}: not an OpenID configuration with issuer and jwks_uri",
                Shown(&uri)
            ),
        )
    })?;
    if document.issuer != issuer {
        return Err(JwksError::new(
            JwksErrorKind::Issuer,
            format!("{}: the document names another issuer", Shown(&uri)),
        ));
    }
    parse_uri(&document.jwks_uri)
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("uri", &Shown(&self.inner.uri))
            .field("kids", &self.kids())
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}
