//! A `kid`-indexed keyring of HMAC secrets, for verifying and minting JWTs.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

use crate::error::{ConfigError, ConfigErrorKind};

/// A JWT signature algorithm. Each key has exactly one.
///
/// The HMAC algorithms sign and verify with a [`JwtKey`]; the asymmetric ones (feature `jwks`)
/// only verify, with public keys from a `Jwks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (`HS256`), secret of at least 32 bytes.
    Hs256,
    /// HMAC with SHA-384 (`HS384`), secret of at least 48 bytes.
    Hs384,
    /// HMAC with SHA-512 (`HS512`), secret of at least 64 bytes.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`), modulus of 2048 to 4096 bits.
    #[cfg(feature = "jwks")]
    Rs256,
    /// RSASSA-PSS with SHA-256 and a 32-byte salt (`PS256`), modulus of 2048 to 4096 bits.
    #[cfg(feature = "jwks")]
    Ps256,
    /// ECDSA on P-256 with SHA-256 (`ES256`).
    #[cfg(feature = "jwks")]
    Es256,
    /// Ed25519 (`EdDSA` with `crv: Ed25519`), verified strictly.
    #[cfg(feature = "jwks")]
    EdDsa,
}

impl JwtAlgorithm {
    /// The `alg` header value (`"HS256"`, …), compared case-sensitively.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
            #[cfg(feature = "jwks")]
            Self::Rs256 => "RS256",
            #[cfg(feature = "jwks")]
            Self::Ps256 => "PS256",
            #[cfg(feature = "jwks")]
            Self::Es256 => "ES256",
            #[cfg(feature = "jwks")]
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm an `alg` header value names, compared case-sensitively.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::Hs256,
            "HS384" => Self::Hs384,
            "HS512" => Self::Hs512,
            #[cfg(feature = "jwks")]
            "RS256" => Self::Rs256,
            #[cfg(feature = "jwks")]
            "PS256" => Self::Ps256,
            #[cfg(feature = "jwks")]
            "ES256" => Self::Es256,
            #[cfg(feature = "jwks")]
            "EdDSA" => Self::EdDsa,
            _ => return None,
        })
    }

    /// Whether this is an HMAC (shared-secret) algorithm.
    #[must_use]
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::Hs256 | Self::Hs384 | Self::Hs512)
    }

    /// The shortest secret accepted: the length of the hash output (RFC 7518 §3.2); `0` for
    /// the asymmetric algorithms, which take no secret.
    #[must_use]
    pub fn min_secret_len(self) -> usize {
        match self {
            Self::Hs256 => 32,
            Self::Hs384 => 48,
            Self::Hs512 => 64,
            #[cfg(feature = "jwks")]
            _ => 0,
        }
    }
}

/// One HMAC secret with its algorithm and optional key id. `Debug` never shows the secret.
///
/// ```
/// use axum_keyguard::{JwtAlgorithm, JwtKey};
///
/// let key = JwtKey::new(JwtAlgorithm::Hs256, [7u8; 32])?.with_kid("2026-11");
/// assert!(JwtKey::new(JwtAlgorithm::Hs256, b"too short").is_err());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<Arc<str>>,
    algorithm: JwtAlgorithm,
    secret: Arc<[u8]>,
}

impl JwtKey {
    /// A key for the HMAC `algorithm`. A secret shorter than the algorithm's output
    /// ([`JwtAlgorithm::min_secret_len`]) or an asymmetric algorithm is a [`ConfigError`].
    pub fn new(algorithm: JwtAlgorithm, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref();
        if !algorithm.is_hmac() {
            return Err(ConfigError::new(
                ConfigErrorKind::WeakSecret,
                format!(
                    "{} keys are public keys from a key set (Jwks), not secrets",
                    algorithm.as_str()
                ),
            ));
        }
        if secret.len() < algorithm.min_secret_len() {
            return Err(ConfigError::new(
                ConfigErrorKind::WeakSecret,
                format!(
                    "a {} secret must be at least {} bytes",
                    algorithm.as_str(),
                    algorithm.min_secret_len()
                ),
            ));
        }
        Ok(Self {
            kid: None,
            algorithm,
            secret: Arc::from(secret),
        })
    }

    /// Names the key: tokens it signs carry this `kid`, and tokens with this `kid` are checked
    /// with it. A key without a name checks tokens that have no `kid`.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(Arc::from(kid.into()));
        self
    }

    /// The key id, if any.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key's algorithm.
    #[must_use]
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// The HMAC of `message` under this key (the raw signature bytes).
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self.algorithm {
            JwtAlgorithm::Hs256 => mac::<Hmac<Sha256>>(&self.secret, message),
            JwtAlgorithm::Hs384 => mac::<Hmac<Sha384>>(&self.secret, message),
            JwtAlgorithm::Hs512 => mac::<Hmac<Sha512>>(&self.secret, message),
            #[cfg(feature = "jwks")]
            // A JwtKey is always HMAC (checked in JwtKey::new).
            _ => Vec::new(),
        }
    }

    /// Whether `signature` (raw bytes) is the HMAC of `message`, compared in constant time
    /// (`Mac::verify_slice`, which uses `subtle`).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        fn check<M: Mac + hmac::digest::KeyInit>(
            secret: &[u8],
            message: &[u8],
            signature: &[u8],
        ) -> bool {
            let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
                return false;
            };
            mac.update(message);
            mac.verify_slice(signature).is_ok()
        }
        match self.algorithm {
            JwtAlgorithm::Hs256 => check::<Hmac<Sha256>>(&self.secret, message, signature),
            JwtAlgorithm::Hs384 => check::<Hmac<Sha384>>(&self.secret, message, signature),
            JwtAlgorithm::Hs512 => check::<Hmac<Sha512>>(&self.secret, message, signature),
            #[cfg(feature = "jwks")]
            _ => false,
        }
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys a [`Jwt`](crate::Jwt) verifier accepts: every listed key verifies, the newest signs.
///
/// Cloning shares the keyring, so keys added or retired at run time take effect everywhere at
/// once, without a restart. A token's `kid` is only ever used as an exact lookup key.
///
/// ```
/// use axum_keyguard::{JwtAlgorithm, JwtKey, JwtKeyring};
///
/// let keyring = JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [1u8; 32])?.with_kid("old")])?;
/// keyring.add(JwtKey::new(JwtAlgorithm::Hs256, [2u8; 32])?.with_kid("new"))?; // now signs
/// assert!(keyring.retire("old"));
/// assert_eq!(keyring.kids(), [Some("new".to_owned())]);
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct JwtKeyring {
    state: Arc<RwLock<KeyringState>>,
}

#[derive(Default)]
pub(crate) struct KeyringState {
    /// Oldest first; the last one signs.
    keys: Vec<JwtKey>,
    /// Bumped on every change, so caches of verified tokens can tell they are stale.
    generation: u64,
}

impl KeyringState {
    /// The key for a token's `kid` (or the unnamed key for a token without one).
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&JwtKey> {
        self.keys.iter().find(|k| k.kid() == kid)
    }

    pub(crate) fn signing(&self) -> Option<&JwtKey> {
        self.keys.last()
    }

    /// Changes with every key added or retired.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl JwtKeyring {
    /// A keyring with these keys, the last one signing. Fails if there are none, or two share
    /// a `kid` (or two have none).
    pub fn new(keys: impl IntoIterator<Item = JwtKey>) -> Result<Self, ConfigError> {
        let keyring = Self {
            state: Arc::new(RwLock::new(KeyringState::default())),
        };
        for key in keys {
            keyring.add(key)?;
        }
        if keyring.read().keys.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                "a JWT keyring needs at least one key",
            ));
        }
        Ok(keyring)
    }

    /// Adds a key, which becomes the signing key. Fails if its `kid` is already present.
    pub fn add(&self, key: JwtKey) -> Result<(), ConfigError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.find(key.kid()).is_some() {
            return Err(ConfigError::new(
                ConfigErrorKind::DuplicateKeyId,
                "a key with this kid is already in the keyring",
            ));
        }
        state.keys.push(key);
        state.generation += 1;
        Ok(())
    }

    /// Removes the key with this `kid`; tokens it signed stop verifying at once. Returns whether
    /// such a key was present. Retiring every key leaves a keyring that accepts nothing.
    pub fn retire(&self, kid: &str) -> bool {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let before = state.keys.len();
        state.keys.retain(|k| k.kid() != Some(kid));
        let removed = state.keys.len() != before;
        if removed {
            state.generation += 1;
        }
        removed
    }

    /// The key ids, oldest first (`None` for an unnamed key).
    #[must_use]
    pub fn kids(&self) -> Vec<Option<String>> {
        self.read()
            .keys
            .iter()
            .map(|k| k.kid().map(str::to_owned))
            .collect()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, KeyringState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for JwtKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("JwtKeyring")
            .field("keys", &state.keys)
            .field("generation", &state.generation)
            .finish()
    }
}
