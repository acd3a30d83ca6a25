//! Building a [`Jwt`] verifier: its options, checked in `build`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{ConfigError, ConfigErrorKind};

use super::{
    Claims, Clock, Jwt, JwtConfig, JwtKeys, TokenCache, DEFAULT_LEEWAY, DEFAULT_TOKEN_CACHE,
    MAX_LEEWAY,
};

impl Jwt<Claims> {
    /// Starts a verifier over `keys` (a [`JwtKeyring`](super::JwtKeyring) of HMAC secrets, or a
    /// `Jwks` of public keys, feature `jwks`), with [`Claims`] as the principal.
    pub fn builder(keys: impl Into<JwtKeys>) -> JwtBuilder<Claims> {
        JwtBuilder {
            keys: keys.into(),
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            max_lifetime: None,
            typ: None,
            clock: None,
            cache_capacity: DEFAULT_TOKEN_CACHE,
            claims: PhantomData,
        }
    }
}

/// Builds a [`Jwt`] verifier.
#[must_use]
pub struct JwtBuilder<C> {
    keys: JwtKeys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    max_lifetime: Option<Duration>,
    typ: Option<String>,
    clock: Option<Clock>,
    cache_capacity: usize,
    claims: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for JwtBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBuilder")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl<C> JwtBuilder<C> {
    /// Uses the application's claims type `D` as the principal.
    pub fn claims<D>(self) -> JwtBuilder<D> {
        JwtBuilder {
            keys: self.keys,
            issuer: self.issuer,
            audience: self.audience,
            leeway: self.leeway,
            max_lifetime: self.max_lifetime,
            typ: self.typ,
            clock: self.clock,
            cache_capacity: self.cache_capacity,
            claims: PhantomData,
        }
    }

    /// Requires `iss` to equal `issuer` (a missing `iss` is refused). Minted tokens carry it.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to be, or (as an array) to contain, `audience`. Minted tokens carry it.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock-skew allowance (default 30 s; more than 300 s is a [`ConfigError`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Refuses tokens that live longer than this (`exp - iat`, or `exp - now` without `iat`).
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// Requires the header's `typ` to be this media type (RFC 8725 §3.11), compared
    /// case-insensitively with an optional `application/` prefix. Minted tokens carry it.
    pub fn with_typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// Replaces the wall clock (for tests, or a clock kept in step by other means).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How many verified tokens to remember (default 10,000; `0` turns the cache off). A client
    /// that sends the same token on every request then costs a keyed hash and a constant-time
    /// comparison of the token instead of an HMAC (or signature) and two JSON parses. Each entry
    /// holds the token itself, its claims and its times: about the token's length plus the
    /// claims' size plus 80 bytes.
    pub fn with_token_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Checks the configuration and builds the verifier.
    ///
    /// Fails on a leeway above [`MAX_LEEWAY`], a zero maximum lifetime, or an empty keyring.
    pub fn build(self) -> Result<Jwt<C>, ConfigError> {
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "the JWT leeway must be at most 300 seconds",
            ));
        }
        if self.max_lifetime.is_some_and(|m| m.is_zero()) {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "the JWT maximum lifetime must be positive",
            ));
        }
        self_test(&self.keys)?;
        Ok(Jwt {
            inner: Arc::new(JwtConfig {
                keys: self.keys,
                issuer: self.issuer,
                audience: self.audience,
                leeway: self.leeway.as_secs(),
                max_lifetime: self.max_lifetime.map(|d| d.as_secs()),
                typ: self.typ,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemTime::now)),
            }),
            cache: Arc::new(TokenCache::new(self.cache_capacity)),
        })
    }
}

/// A keyring without a signing key can verify nothing: a configuration error. (A key set was
/// fetched once already when it was built; an empty one refuses every token.)
fn self_test(keys: &JwtKeys) -> Result<(), ConfigError> {
    let Some(keyring) = keys.keyring() else {
        return Ok(());
    };
    if keyring.read().signing().is_none() {
        return Err(ConfigError::new(
            ConfigErrorKind::EmptyKey,
            "a JWT keyring needs at least one key",
        ));
    }
    Ok(())
}
