//! HMAC JWT verifier: strict structure, header and claims, on an injectable clock.
//!
//! jsonwebtoken computes and checks the HMAC (in constant time). Everything around it is checked
//! here, more strictly than jsonwebtoken's own `decode`: the exact compact form and base64url
//! alphabet, a header that names exactly the key's algorithm and no `crit`, `jku`, `x5u`, `jwk`,
//! `x5c` or `x5t`, typed registered claims (an `exp` that is a string or an `iss` that is an array
//! is refused), and times read from a clock the application can replace.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};

use crate::credential::{Credential, CredentialDigest, DigestMap};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::verify::keyring::JwtKeyring;
use crate::verify::{Grant, Lease, Verification, Verifier, VerifyError};

/// The default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway a verifier accepts.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// How many verified tokens a verifier remembers by default.
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Verifies HMAC-signed JWTs (`HS256` by default) against a [`JwtKeyring`], and mints them.
///
/// The principal is the application's claims type `C` (any `DeserializeOwned`), [`Claims`] by
/// default. The lease ends at `exp` plus the leeway. A token is accepted while
/// `now < exp + leeway` (RFC 7519: the current time must be *before* `exp`), and once
/// `now + leeway >= nbf`. `iss` and `aud` must match exactly when configured; when no audience is
/// configured, a token that names one is refused (RFC 7519 §4.1.3).
///
/// ```
/// use std::time::Duration;
/// use axum_keyguard::{Claims, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring};
///
/// let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [42u8; 32])?])?;
/// let jwt = Jwt::builder(keyring).with_issuer("agent-server").build()?;
///
/// let mut claims = Claims::default();
/// claims.sub = Some("user-1".into());
/// let token = jwt.mint(&claims, Duration::from_secs(600)).expect("mint");
///
/// let guard = Guard::builder().with_verifier(jwt).build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
pub struct Jwt<C = Claims> {
    inner: Arc<JwtConfig>,
    cache: Arc<TokenCache<C>>,
}

/// Tokens already verified, by the SHA-256 of the token. A hit skips the HMAC and the JSON, and is
/// taken only if the keyring has not changed since; its times are checked again on every hit. So
/// the cache never accepts a token that a fresh check would refuse.
struct TokenCache<C> {
    entries: RwLock<DigestMap<Cached<C>>>,
    capacity: usize,
}

#[derive(Clone)]
struct Cached<C> {
    claims: C,
    times: Times,
    generation: u64,
}

/// The time claims of a verified token.
#[derive(Clone, Copy)]
struct Times {
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
}

impl<C: Clone> TokenCache<C> {
    fn get(&self, key: &CredentialDigest, generation: u64) -> Option<Cached<C>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|c| c.generation == generation)
            .cloned()
    }

    /// Remembers a verified token; when full, first forgets the expired and stale ones, and if
    /// it is still full, does not remember this one.
    fn insert(&self, key: CredentialDigest, cached: Cached<C>, now: u64, leeway: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let generation = cached.generation;
            entries.retain(|_, c| {
                c.generation == generation && c.times.exp.saturating_add(leeway) > now
            });
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(key, cached);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

struct JwtConfig {
    keyring: JwtKeyring,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    max_lifetime: Option<u64>,
    typ: Option<String>,
    clock: Clock,
}

impl<C> Clone for Jwt<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            cache: Arc::clone(&self.cache),
        }
    }
}

impl<C> fmt::Debug for Jwt<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.inner;
        f.debug_struct("Jwt")
            .field("keyring", &c.keyring)
            .field("issuer", &c.issuer)
            .field("audience", &c.audience)
            .field("leeway_secs", &c.leeway)
            .field("max_lifetime_secs", &c.max_lifetime)
            .field("typ", &c.typ)
            .field("token_cache_capacity", &self.cache.capacity)
            .finish_non_exhaustive()
    }
}

impl Jwt<Claims> {
    /// Starts a verifier over `keyring`, with [`Claims`] as the principal.
    pub fn builder(keyring: JwtKeyring) -> JwtBuilder<Claims> {
        JwtBuilder {
            keyring,
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
    keyring: JwtKeyring,
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
            .field("keyring", &self.keyring)
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
            keyring: self.keyring,
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
    /// that sends the same token on every request then costs a hash lookup instead of an HMAC
    /// and two JSON parses.
    pub fn with_token_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Checks the configuration and builds the verifier.
    ///
    /// Besides the leeway bound, it signs and verifies one token with the keyring's signing key,
    /// so that a build of jsonwebtoken without exactly one crypto backend (which would panic on
    /// the first request) is a [`ConfigError`] at start-up instead.
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
        self_test(&self.keyring)?;
        Ok(Jwt {
            inner: Arc::new(JwtConfig {
                keyring: self.keyring,
                issuer: self.issuer,
                audience: self.audience,
                leeway: self.leeway.as_secs(),
                max_lifetime: self.max_lifetime.map(|d| d.as_secs()),
                typ: self.typ,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemTime::now)),
            }),
            cache: Arc::new(TokenCache {
                entries: RwLock::new(DigestMap::default()),
                capacity: self.cache_capacity,
            }),
        })
    }
}

/// Signs and verifies once with the signing key, turning a panic of a misbuilt jsonwebtoken into
/// an error.
fn self_test(keyring: &JwtKeyring) -> Result<(), ConfigError> {
    let state = keyring.read();
    let Some(key) = state.signing() else {
        return Err(ConfigError::new(
            ConfigErrorKind::EmptyKey,
            "a JWT keyring needs at least one key",
        ));
    };
    let alg = key.algorithm().to_jsonwebtoken();
    let message = b"e30.e30";
    let round_trip = catch_unwind(AssertUnwindSafe(|| {
        let signature = jsonwebtoken::crypto::sign(message, key.encoding(), alg).ok()?;
        jsonwebtoken::crypto::verify(&signature, message, key.decoding(), alg).ok()
    }));
    match round_trip {
        Ok(Some(true)) => Ok(()),
        _ => Err(ConfigError::new(
            ConfigErrorKind::CryptoBackend,
            "jsonwebtoken cannot sign and verify: enable exactly one of its crypto backends \
             (this crate's `jwt-rust-crypto` or `jwt-aws-lc-rs` feature)",
        )),
    }
}

/// A ready claims type: the subject and the scoping claims agent servers commonly use.
///
/// Unknown claims are ignored; the registered claims are checked by the verifier before this is
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// `sub`: who the token is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `user_id`: the user a scoped token acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `provider_type`: which provider a scoped token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<String>,
    /// `org_id`: the organisation a scoped token is limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// `scope`: space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `exp`, as verified (seconds since the Unix epoch). Set by minting.
    #[serde(default, skip_serializing)]
    pub exp: u64,
    /// `iat`, if the token has one. Set by minting.
    #[serde(default, skip_serializing)]
    pub iat: Option<u64>,
}

/// Why a JWT was refused. Only for the application's own diagnostics (through
/// [`Error::source`](std::error::Error::source) of the [`VerifyError`]); responses never say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Structure,
    Header,
    UnknownKey,
    Algorithm,
    Signature,
    Claims,
    Expired,
    NotYetValid,
    Lifetime,
    Issuer,
    Audience,
    Type,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Structure => "jwt is not a compact JWS with base64url segments",
            Self::Header => "jwt header is not acceptable",
            Self::UnknownKey => "jwt kid is not in the keyring",
            Self::Algorithm => "jwt alg is not the key's algorithm",
            Self::Signature => "jwt signature does not verify",
            Self::Claims => "jwt claims are missing or of the wrong type",
            Self::Expired => "jwt has expired",
            Self::NotYetValid => "jwt is not valid yet",
            Self::Lifetime => "jwt lives longer than allowed",
            Self::Issuer => "jwt issuer does not match",
            Self::Audience => "jwt audience does not match",
            Self::Type => "jwt typ does not match",
        })
    }
}

impl std::error::Error for Refusal {}

/// The JOSE header as we accept it. Duplicate members are refused by serde.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    x5t: bool,
    #[serde(default, rename = "x5t#S256", deserialize_with = "present")]
    x5t_s256: bool,
    #[serde(default, deserialize_with = "present")]
    b64: bool,
}

impl Header {
    fn has_forbidden_member(&self) -> bool {
        self.crit
            || self.jku
            || self.jwk
            || self.x5u
            || self.x5c
            || self.x5t
            || self.x5t_s256
            || self.b64
    }
}

/// `true` whenever the member is there, whatever its value (even `null`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer)?;
    Ok(true)
}

/// The registered claims, strictly typed: an `exp` that is a string, a float or negative, or an
/// `iss` that is an array, fails here.
#[derive(Deserialize)]
struct Registered {
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    #[allow(dead_code)] // type-checked only
    sub: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn is_base64url(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() % 4 != 1
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decodes a segment that must hold a JSON object (a bare array would otherwise fill a struct).
fn json_object<T: DeserializeOwned>(segment: &str, refusal: Refusal) -> Result<T, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Refusal::Structure)?;
    parse_object(&bytes, refusal)
}

/// Parses bytes that must hold a JSON object.
fn parse_object<T: DeserializeOwned>(bytes: &[u8], refusal: Refusal) -> Result<T, Refusal> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(refusal);
    }
    serde_json::from_slice(bytes).map_err(|_| refusal)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl<C> Jwt<C> {
    fn now(&self) -> u64 {
        unix_secs((self.inner.clock)())
    }

    /// Checks the time claims against `now`; returns when the token stops being valid.
    fn check_times(&self, times: Times, now: u64) -> Result<u64, Refusal> {
        let config = &*self.inner;
        let valid_until = times
            .exp
            .checked_add(config.leeway)
            .ok_or(Refusal::Claims)?;
        if now >= valid_until {
            return Err(Refusal::Expired);
        }
        let latest_start = now.saturating_add(config.leeway);
        if times.nbf.is_some_and(|nbf| nbf > latest_start)
            || times.iat.is_some_and(|iat| iat > latest_start)
        {
            return Err(Refusal::NotYetValid);
        }
        if let Some(max) = config.max_lifetime {
            let start = times.iat.unwrap_or(now);
            if times.exp.saturating_sub(start) > max || times.exp.saturating_sub(now) > max {
                return Err(Refusal::Lifetime);
            }
        }
        Ok(valid_until)
    }

    /// Verifies `token` with the cache: a hit is re-checked against the clock.
    fn check(&self, token: &str, key: &CredentialDigest) -> Result<Grant<C>, Refusal>
    where
        C: DeserializeOwned + Clone,
    {
        let now = self.now();
        let generation = self.inner.keyring.read().generation();
        let cached = match self.cache.get(key, generation) {
            Some(cached) => cached,
            None => {
                let cached = self.check_token(token)?;
                self.cache
                    .insert(*key, cached.clone(), now, self.inner.leeway);
                cached
            }
        };
        let valid_until = self.check_times(cached.times, now)?;
        let until = UNIX_EPOCH
            .checked_add(Duration::from_secs(valid_until))
            .ok_or(Refusal::Claims)?;
        Ok(Grant::new(cached.claims).with_lease(Lease::until(until)))
    }

    /// Verifies everything but the times: structure, header, key, signature, claim types,
    /// issuer and audience.
    fn check_token(&self, token: &str) -> Result<Cached<C>, Refusal>
    where
        C: DeserializeOwned,
    {
        let config = &*self.inner;
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(Refusal::Structure);
        };
        if ![header, payload, signature].into_iter().all(is_base64url) {
            return Err(Refusal::Structure);
        }
        let parsed: Header = json_object(header, Refusal::Header)?;
        if parsed.has_forbidden_member() {
            return Err(Refusal::Header);
        }
        if let Some(want) = &config.typ {
            let typ = parsed.typ.as_deref().unwrap_or_default();
            let typ = typ
                .get(..12)
                .filter(|p| p.eq_ignore_ascii_case("application/"))
                .map_or(typ, |_| &typ[12..]);
            if !typ.eq_ignore_ascii_case(want) {
                return Err(Refusal::Type);
            }
        }
        let generation = {
            let keys = config.keyring.read();
            let key = keys
                .find(parsed.kid.as_deref())
                .ok_or(Refusal::UnknownKey)?;
            if parsed.alg != key.algorithm().as_str() {
                return Err(Refusal::Algorithm);
            }
            let signing_input = &token[..header.len() + 1 + payload.len()];
            let verified = jsonwebtoken::crypto::verify(
                signature,
                signing_input.as_bytes(),
                key.decoding(),
                key.algorithm().to_jsonwebtoken(),
            );
            if !matches!(verified, Ok(true)) {
                return Err(Refusal::Signature);
            }
            keys.generation()
        };

        // Decoded once: the registered claims and the application's claims read the same bytes.
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refusal::Structure)?;
        let registered: Registered = parse_object(&payload, Refusal::Claims)?;
        let times = Times {
            exp: registered.exp.ok_or(Refusal::Claims)?,
            nbf: registered.nbf,
            iat: registered.iat,
        };
        match (&config.issuer, &registered.iss) {
            (Some(want), Some(iss)) if iss == want => {}
            (Some(_), _) => return Err(Refusal::Issuer),
            (None, _) => {}
        }
        match (&config.audience, &registered.aud) {
            (None, None) => {}
            (Some(want), Some(Audience::One(aud))) if aud == want => {}
            (Some(want), Some(Audience::Many(auds))) if auds.contains(want) => {}
            _ => return Err(Refusal::Audience),
        }
        let claims: C = parse_object(&payload, Refusal::Claims)?;
        Ok(Cached {
            claims,
            times,
            generation,
        })
    }

    /// Mints a token signed with the keyring's newest key: `claims` (a struct or map that
    /// serialises to a JSON object) plus `iat` and `exp` from this verifier's clock, and the
    /// configured `iss`, `aud` and `typ`. The header carries the key's `kid`.
    ///
    /// Fails if `lifetime` is zero or above the configured maximum, if `claims` is not an object,
    /// or if the keyring is empty.
    pub fn mint<T: Serialize>(&self, claims: &T, lifetime: Duration) -> Result<String, MintError> {
        let config = &*self.inner;
        let lifetime = lifetime.as_secs();
        if lifetime == 0 || config.max_lifetime.is_some_and(|max| lifetime > max) {
            return Err(MintError(
                "the lifetime must be positive and within the maximum",
            ));
        }
        let mut value =
            serde_json::to_value(claims).map_err(|_| MintError("claims do not serialise"))?;
        let object = value
            .as_object_mut()
            .ok_or(MintError("claims must serialise to a JSON object"))?;
        let now = self.now();
        object.insert("iat".into(), now.into());
        object.insert("exp".into(), now.saturating_add(lifetime).into());
        if let Some(iss) = &config.issuer {
            object.insert("iss".into(), iss.clone().into());
        }
        if let Some(aud) = &config.audience {
            object.insert("aud".into(), aud.clone().into());
        }
        let keys = config.keyring.read();
        let key = keys.signing().ok_or(MintError("the keyring is empty"))?;
        let mut header = jsonwebtoken::Header::new(key.algorithm().to_jsonwebtoken());
        header.kid = key.kid().map(str::to_owned);
        header.typ = Some(config.typ.clone().unwrap_or_else(|| "JWT".to_owned()));
        jsonwebtoken::encode(&header, &value, key.encoding())
            .map_err(|_| MintError("signing failed"))
    }

    /// The keyring this verifier checks against (shared: changes apply at once).
    #[must_use]
    pub fn keyring(&self) -> &JwtKeyring {
        &self.inner.keyring
    }
}

impl<C> Verifier for Jwt<C>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Principal = C;

    fn verify(&self, credential: &Credential<'_>) -> Verification<C> {
        Verification::ready(
            self.check(credential.expose(), credential.digest())
                .map_err(|refusal| VerifyError::invalid().with_source(refusal)),
        )
    }
}

/// Minting a token failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintError(&'static str);

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot mint a token: {}", self.0)
    }
}

impl std::error::Error for MintError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::keyring::JwtKey;
    use crate::JwtAlgorithm;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Jwt<Claims> {
        let key = JwtKey::new(JwtAlgorithm::Hs256, SECRET)
            .expect("key")
            .with_kid("a-long-random-key-1");
        Jwt::builder(JwtKeyring::new([key]).expect("keyring"))
            .with_issuer("iss1")
            .with_audience("svc")
            .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
            .build()
            .expect("jwt")
    }

    fn token(header: &str, payload: &str, alg: jsonwebtoken::Algorithm) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).expect("sign");
        format!("{input}.{signature}")
    }

    /// The full check, cache included.
    fn check(jwt: &Jwt<Claims>, token: &str) -> Result<Grant<Claims>, Refusal> {
        jwt.check(token, &CredentialDigest::of(token.as_bytes()))
    }

    fn refusal(header: &str, payload: &str) -> Option<Refusal> {
        check(
            &verifier(),
            &token(header, payload, jsonwebtoken::Algorithm::HS256),
        )
        .err()
    }

    const H: &str = r#"{"alg":"HS256","kid":"a-long-random-key-1"}"#;
    const P: &str = r#"{"sub":"a","iss":"iss1","aud":"svc","exp":1800000600,"iat":1799999990}"#;

    #[test]
    fn each_rejection_has_its_own_reason() {
        assert_eq!(refusal(H, P), None);
        let p = |from: &str, to: &str| P.replace(from, to);
        assert_eq!(
            refusal(r#"{"alg":"HS384","kid":"a-long-random-key-1"}"#, P),
            Some(Refusal::Algorithm)
        );
        assert_eq!(
            refusal(r#"{"alg":"none","kid":"a-long-random-key-1"}"#, P),
            Some(Refusal::Algorithm)
        );
        assert_eq!(
            refusal(
                r#"{"alg":"HS256","kid":"a-long-random-key-1","crit":["x"]}"#,
                P
            ),
            Some(Refusal::Header)
        );
        assert_eq!(
            refusal(
                r#"{"alg":"HS256","alg":"HS256","kid":"a-long-random-key-1"}"#,
                P
            ),
            Some(Refusal::Header)
        );
        assert_eq!(
            refusal(r#"{"alg":"HS256","kid":"a-long-random-key-2"}"#, P),
            Some(Refusal::UnknownKey)
        );
        assert_eq!(refusal(r#"["HS256"]"#, P), Some(Refusal::Header));
        assert_eq!(
            refusal(H, &p("1800000600", "\"1800000600\"")),
            Some(Refusal::Claims)
        );
        assert_eq!(
            refusal(H, &p("\"iss1\"", "[\"iss1\"]")),
            Some(Refusal::Claims)
        );
        assert_eq!(refusal(H, &p("\"svc\"", "123")), Some(Refusal::Claims));
        assert_eq!(
            refusal(H, &p("1800000600", "1799999000")),
            Some(Refusal::Expired)
        );
        assert_eq!(
            refusal(H, &p("1799999990", "1800000100")),
            Some(Refusal::NotYetValid)
        );
        assert_eq!(
            refusal(H, &p("\"iss1\"", "\"evil\"")),
            Some(Refusal::Issuer)
        );
        assert_eq!(
            refusal(H, &p("\"svc\"", "\"other\"")),
            Some(Refusal::Audience)
        );
        assert_eq!(refusal(H, "[1]"), Some(Refusal::Claims));
    }

    #[test]
    fn structure_is_checked_before_any_parsing() {
        let valid = token(H, P, jsonwebtoken::Algorithm::HS256);
        let jwt = verifier();
        assert!(check(&jwt, &valid).is_ok());
        for bad in [
            format!("{valid}="),
            format!("{valid}\n"),
            valid.replacen('.', "\n.", 1),
            valid.replacen('.', "..", 1),
            format!("{valid}.x"),
            valid
                .rsplit_once('.')
                .map(|(a, _)| a.to_owned())
                .expect("dot"),
        ] {
            assert_eq!(check(&jwt, &bad).err(), Some(Refusal::Structure), "{bad:?}");
        }
        let (input, sig) = valid.rsplit_once('.').expect("dot");
        let mut flipped = sig.to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{input}.{}", String::from_utf8(flipped).expect("ascii"));
        assert_eq!(check(&jwt, &flipped).err(), Some(Refusal::Signature));
    }

    #[test]
    fn the_cache_rechecks_times_and_forgets_on_keyring_changes() {
        let now = Arc::new(std::sync::atomic::AtomicU64::new(NOW));
        let clock = Arc::clone(&now);
        let key = JwtKey::new(JwtAlgorithm::Hs256, SECRET)
            .expect("key")
            .with_kid("a-long-random-key-1");
        let keyring = JwtKeyring::new([key]).expect("keyring");
        let jwt = Jwt::builder(keyring.clone())
            .with_issuer("iss1")
            .with_audience("svc")
            .with_leeway(Duration::ZERO)
            .with_clock(move || {
                UNIX_EPOCH + Duration::from_secs(clock.load(std::sync::atomic::Ordering::SeqCst))
            })
            .build()
            .expect("jwt");
        let set = |t: u64| now.store(t, std::sync::atomic::Ordering::SeqCst);
        let payload = P.replace("1799999990", "1800000000").replace(
            r#""exp":1800000600"#,
            r#""exp":1800000600,"nbf":1800000000"#,
        );
        let valid = token(H, &payload, jsonwebtoken::Algorithm::HS256);
        assert!(check(&jwt, &valid).is_ok());
        assert_eq!(jwt.cache.len(), 1, "remembered");
        // The clock steps back before nbf: the cached token is refused, as a fresh check would.
        set(NOW - 1);
        assert_eq!(check(&jwt, &valid).err(), Some(Refusal::NotYetValid));
        set(1_800_000_600);
        assert_eq!(check(&jwt, &valid).err(), Some(Refusal::Expired));
        set(NOW);
        assert!(check(&jwt, &valid).is_ok());
        // A keyring change makes every entry stale; retiring the key refuses the token.
        keyring
            .add(
                JwtKey::new(JwtAlgorithm::Hs256, [9u8; 32])
                    .expect("key")
                    .with_kid("a-long-random-key-2"),
            )
            .expect("add");
        assert!(
            check(&jwt, &valid).is_ok(),
            "re-verified against the new keyring"
        );
        assert!(keyring.retire("a-long-random-key-1"));
        assert_eq!(check(&jwt, &valid).err(), Some(Refusal::UnknownKey));
    }

    #[test]
    fn the_cache_is_bounded_and_can_be_turned_off() {
        let key = || {
            JwtKey::new(JwtAlgorithm::Hs256, SECRET)
                .expect("key")
                .with_kid("a-long-random-key-1")
        };
        let build = |capacity| {
            Jwt::builder(JwtKeyring::new([key()]).expect("keyring"))
                .with_issuer("iss1")
                .with_audience("svc")
                .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW))
                .with_token_cache(capacity)
                .build()
                .expect("jwt")
        };
        let tokens: Vec<String> = (0..5)
            .map(|i| {
                let payload = P.replace(r#""sub":"a""#, &format!(r#""sub":"user-{i}""#));
                token(H, &payload, jsonwebtoken::Algorithm::HS256)
            })
            .collect();
        let small = build(2);
        let none = build(0);
        for t in &tokens {
            assert!(check(&small, t).is_ok());
            assert!(check(&none, t).is_ok());
        }
        assert_eq!(small.cache.len(), 2);
        assert_eq!(none.cache.len(), 0);
    }
}
