//! The token checks: structure, header, key, signature, typed claims, times.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use crate::verify::{Grant, Lease};

use super::cache::{Cached, Times};
#[cfg(feature = "jwks")]
use super::jwks::Lookup;
use super::{Jwt, KeySource};

/// Why a JWT was refused. Only for the application's own diagnostics (through
/// [`Error::source`](std::error::Error::source) of the [`Denial`]); responses never say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
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
    /// The key set is older than its maximum staleness: an outage, not a bad token.
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    Unavailable,
}

impl Refusal {
    /// The denial a refusal becomes: `401`, or `503` for an unavailable key set.
    pub(super) fn into_denial(self) -> crate::verify::Denial {
        match self {
            Self::Unavailable => crate::verify::Denial::unavailable().with_source(self),
            _ => crate::verify::Denial::invalid().with_source(self),
        }
    }
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
            Self::Unavailable => "the key set is too stale to verify with",
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

pub(super) fn is_base64url(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 == 1 {
        return false;
    }
    // No branch per byte and no early exit: range tests folded into one flag, which the
    // compiler turns into vector compares over many bytes at a time.
    let bad = bytes.iter().fold(0u8, |bad, &b| {
        let ok = (b.wrapping_sub(b'A') < 26)
            | (b.wrapping_sub(b'a') < 26)
            | (b.wrapping_sub(b'0') < 10)
            | (b == b'-')
            | (b == b'_');
        bad | u8::from(!ok)
    });
    bad == 0
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

pub(super) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl<C> Jwt<C> {
    pub(super) fn now(&self) -> u64 {
        unix_secs((self.inner.clock)())
    }

    /// Checks the time claims against `now`; returns when the token stops being valid.
    pub(super) fn check_times(&self, times: Times, now: u64) -> Result<u64, Refusal> {
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
    pub(super) fn check(&self, token: &str) -> Result<Grant<C>, Refusal>
    where
        C: DeserializeOwned + Clone,
    {
        let now = self.now();
        let cached = if self.cache.is_on() {
            let generation = match &self.inner.keys.0 {
                KeySource::Keyring(keyring) => keyring.read().generation(),
                #[cfg(feature = "jwks")]
                KeySource::Jwks(jwks) => jwks.generation().ok_or(Refusal::Unavailable)?,
            };
            let slot = self.cache.slot(token);
            match self.cache.get(slot, token, generation) {
                Some(cached) => cached,
                None => {
                    let cached = self.check_token(token)?;
                    self.cache
                        .insert(slot, token, cached.clone(), now, self.inner.leeway);
                    cached
                }
            }
        } else {
            self.check_token(token)?
        };
        let valid_until = self.check_times(cached.times, now)?;
        let until = UNIX_EPOCH
            .checked_add(Duration::from_secs(valid_until))
            .ok_or(Refusal::Claims)?;
        let lease = Lease::until(until);
        let lease = match cached.revocation {
            Some(revocation) => lease.with_revocation(revocation),
            None => lease,
        };
        Ok(Grant::new(cached.claims).with_lease(lease))
    }

    /// Verifies everything but the times: structure, header, key, signature, claim types,
    /// issuer and audience.
    pub(super) fn check_token(&self, token: &str) -> Result<Cached<C>, Refusal>
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
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let (generation, revocation) = match &config.keys.0 {
            KeySource::Keyring(keyring) => {
                let keys = keyring.read();
                let key = keys
                    .find(parsed.kid.as_deref())
                    .ok_or(Refusal::UnknownKey)?;
                if parsed.alg != key.algorithm().as_str() {
                    return Err(Refusal::Algorithm);
                }
                let verified = URL_SAFE_NO_PAD
                    .decode(signature)
                    .is_ok_and(|raw| key.verify(signing_input.as_bytes(), &raw));
                if !verified {
                    return Err(Refusal::Signature);
                }
                (keys.generation(), None)
            }
            #[cfg(feature = "jwks")]
            KeySource::Jwks(jwks) => jwks
                .with_key(
                    parsed.kid.as_deref(),
                    &parsed.alg,
                    |lookup, generation| match lookup {
                        Lookup::UnknownKey => Err(Refusal::UnknownKey),
                        Lookup::Algorithm => Err(Refusal::Algorithm),
                        Lookup::Found {
                            jwk,
                            alg,
                            revocation,
                        } => {
                            let verified = URL_SAFE_NO_PAD
                                .decode(signature)
                                .is_ok_and(|raw| jwk.verify(alg, signing_input.as_bytes(), &raw));
                            if verified {
                                Ok((generation, Some(revocation)))
                            } else {
                                Err(Refusal::Signature)
                            }
                        }
                    },
                )
                .ok_or(Refusal::Unavailable)??,
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
            revocation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_base64url;

    #[test]
    fn the_base64url_check_agrees_with_the_alphabet_for_every_byte() {
        let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        for b in 0..=255u8 {
            // Four bytes (a valid length), the probe in each position.
            for at in 0..4 {
                let mut bytes = *b"AAAA";
                bytes[at] = b;
                let expected = alphabet(b);
                match std::str::from_utf8(&bytes) {
                    Ok(segment) => assert_eq!(is_base64url(segment), expected, "{b:#04x} at {at}"),
                    Err(_) => assert!(!expected),
                }
            }
        }
        // Long segments: a bad byte anywhere, including past any vector width.
        let long = "a".repeat(203);
        assert!(is_base64url(&long));
        for at in [0, 15, 16, 31, 32, 63, 64, 202] {
            let mut bad = long.clone().into_bytes();
            bad[at] = b'=';
            assert!(
                !is_base64url(std::str::from_utf8(&bad).expect("ascii")),
                "{at}"
            );
        }
        // Lengths: empty and 4n+1 cannot be base64url without padding.
        assert!(!is_base64url(""));
        assert!(!is_base64url("AAAAA"));
        assert!(is_base64url("AA") && is_base64url("AAA") && is_base64url("AAAAAA"));
        // Multi-byte UTF-8 is outside the alphabet.
        assert!(!is_base64url("AAé"));
    }
}
