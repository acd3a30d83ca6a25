//! HMAC JWT verifier: strict structure, header and claims, on an injectable clock.
//!
//! The HMAC comes from the RustCrypto `hmac` and `sha2` crates and is compared in constant time.
//! Everything around it is checked here, more strictly than jsonwebtoken's own `decode`: the exact compact form and base64url
//! alphabet, a header that names exactly the key's algorithm and no `crit`, `jku`, `x5u`, `jwk`,
//! `x5c` or `x5t`, typed registered claims (an `exp` that is a string or an `iss` that is an array
//! is refused), and times read from a clock the application can replace.

//!
//! The rooms: the verifier and its configuration (here), its [builder](builder), the token checks
//! ([checks]), the verified-token cache ([cache]), minting ([mint]) and the keyring ([keyring]).

mod builder;
mod cache;
mod checks;
#[cfg(feature = "jwks")]
mod jwks;
mod keyring;
mod mint;

pub use builder::JwtBuilder;
#[cfg(feature = "jwks")]
pub use jwks::{
    FetchFuture, HttpFetch, Jwks, JwksBuilder, JwksError, JwksErrorKind, JwksFetch, JwksHealth,
    DEFAULT_JWKS_COOLDOWN, DEFAULT_JWKS_MAX_STALENESS, DEFAULT_JWKS_REFRESH,
};
pub use keyring::{JwtAlgorithm, JwtKey, JwtKeyring};
pub use mint::MintError;

use cache::TokenCache;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::credential::Credential;
use crate::verify::{Verdict, Verifier};

/// The default clock-skew allowance for `exp`, `nbf` and `iat`.
pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway a verifier accepts.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// How many verified tokens a verifier remembers by default.
pub(crate) const DEFAULT_TOKEN_CACHE: usize = 10_000;

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

struct JwtConfig {
    keys: JwtKeys,
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
            .field("keys", &c.keys)
            .field("issuer", &c.issuer)
            .field("audience", &c.audience)
            .field("leeway_secs", &c.leeway)
            .field("max_lifetime_secs", &c.max_lifetime)
            .field("typ", &c.typ)
            .field("token_cache_capacity", &self.cache.capacity)
            .finish_non_exhaustive()
    }
}

/// A ready claims type: the subject and the scope. Applications with claims of their own bring
/// their own type ([`JwtBuilder::claims`]).
///
/// Unknown claims are ignored; the registered claims are checked by the verifier before this is
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// `sub`: who the token is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
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

/// Where a [`Jwt`] verifier's keys come from: HMAC secrets in a [`JwtKeyring`], or public keys
/// from a `Jwks` (feature `jwks`). Made by `From`, so [`Jwt::builder`] takes either.
#[derive(Clone, Debug)]
pub struct JwtKeys(pub(super) KeySource);

#[derive(Clone, Debug)]
pub(super) enum KeySource {
    Keyring(JwtKeyring),
    #[cfg(feature = "jwks")]
    Jwks(Jwks),
}

impl JwtKeys {
    pub(super) fn keyring(&self) -> Option<&JwtKeyring> {
        match &self.0 {
            KeySource::Keyring(keyring) => Some(keyring),
            #[cfg(feature = "jwks")]
            KeySource::Jwks(_) => None,
        }
    }
}

impl From<JwtKeyring> for JwtKeys {
    fn from(keyring: JwtKeyring) -> Self {
        Self(KeySource::Keyring(keyring))
    }
}

#[cfg(feature = "jwks")]
impl From<Jwks> for JwtKeys {
    fn from(jwks: Jwks) -> Self {
        Self(KeySource::Jwks(jwks))
    }
}

impl<C> Jwt<C> {
    /// The keyring this verifier checks against (shared: changes apply at once), or `None` for
    /// a verifier over a key set.
    #[must_use]
    pub fn keyring(&self) -> Option<&JwtKeyring> {
        self.inner.keys.keyring()
    }

    /// The key set this verifier checks against, if it was built over one.
    #[cfg(feature = "jwks")]
    #[must_use]
    pub fn jwks(&self) -> Option<&Jwks> {
        match &self.inner.keys.0 {
            KeySource::Jwks(jwks) => Some(jwks),
            KeySource::Keyring(_) => None,
        }
    }
}

impl<C> Verifier for Jwt<C>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Principal = C;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<C> {
        match self.check(credential.expose()) {
            #[cfg(feature = "jwks")]
            Err(checks::Refusal::UnknownKey) if self.jwks().is_some() => {
                // A kid the set lacks may be a rotation: one refetch (single flight, cooldown),
                // then the same check again. Only this path allocates.
                let this = self.clone();
                let token = credential.expose().to_owned();
                Verdict::pending(async move {
                    let failing = match this.jwks() {
                        Some(jwks) => jwks.unknown_kid().await,
                        None => false,
                    };
                    match this.check(&token) {
                        Err(checks::Refusal::UnknownKey) if failing => {
                            Err(checks::Refusal::Unavailable.into_denial())
                        }
                        result => result.map_err(checks::Refusal::into_denial),
                    }
                })
            }
            result => Verdict::ready(result.map_err(checks::Refusal::into_denial)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checks::Refusal;
    use super::*;
    use crate::verify::Grant;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use std::time::UNIX_EPOCH;

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
        jwt.check(token)
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
