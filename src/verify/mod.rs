//! Verifiers turn a presented credential into the application's principal.

mod compose;
#[cfg(feature = "jwt")]
mod jwt;
mod keys;
#[cfg(feature = "redis")]
mod redis;
mod scoped;
mod store;

#[cfg(feature = "redis")]
pub use self::redis::{RedisHealth, RedisStore, RedisStoreBuilder, Reread};
pub use compose::{ByShape, MapPrincipal, Or};
#[cfg(feature = "jwt")]
pub use jwt::{
    Claims, Jwt, JwtAlgorithm, JwtBuilder, JwtKey, JwtKeyring, JwtKeys, MintError, MAX_LEEWAY,
};
#[cfg(feature = "jwks")]
pub use jwt::{
    FetchFuture, HttpFetch, Jwks, JwksBuilder, JwksError, JwksErrorKind, JwksFetch, JwksHealth,
    DEFAULT_JWKS_COOLDOWN, DEFAULT_JWKS_MAX_STALENESS, DEFAULT_JWKS_REFRESH,
};
pub use keys::{KeyId, Keys, MIN_KEY_LEN};
pub use scoped::{Grants, ScopedKey, ScopedKeys};
pub use store::{KeyRecord, MemoryStore, SessionKeys, SessionStore, StoreError};

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::credential::Credential;
use crate::error::ConfigError;
pub(crate) use crate::lease::Lease;
use crate::rejection::AuthRejectionKind;

/// Checks a presented credential and returns the principal it stands for.
///
/// `verify` is called synchronously with the credential borrowed from the request. A verifier that
/// decides at once (capability keys, signed tokens) returns [`Verdict::ready`], which costs no
/// allocation; one that must ask a remote store returns [`Verdict::pending`] with a `'static`
/// future that owns what it needs (for a store, the credential's
/// [`digest`](Credential::digest), never the raw value).
///
/// ```
/// use axum_keyguard::{Credential, Grant, Verdict, Verifier, Denial};
///
/// /// Accepts exactly one user's key (use `Keys` for real keys: it compares in constant time).
/// struct Numbered;
///
/// impl Verifier for Numbered {
///     type Principal = u32;
///
///     fn verify(&self, credential: &Credential<'_>) -> Verdict<u32> {
///         match credential.expose().strip_prefix("user-").and_then(|n| n.parse().ok()) {
///             Some(id) => Verdict::ready(Ok(Grant::new(id))),
///             None => Verdict::ready(Err(Denial::invalid())),
///         }
///     }
/// }
/// ```
pub trait Verifier: Send + Sync + 'static {
    /// What a verified credential stands for: the application's own type.
    type Principal: Clone + Send + Sync + 'static;

    /// Checks `credential`.
    fn verify(&self, credential: &Credential<'_>) -> Verdict<Self::Principal>;

    /// Maps this verifier's principal, so that verifiers with different principals can be
    /// combined (see [`ByShape`]).
    ///
    /// ```
    /// use axum_keyguard::{Keys, Verifier};
    ///
    /// let keys = Keys::new(["a-long-random-key-1"])?.map_principal(|key| format!("user {key}"));
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    fn map_principal<F, Q>(self, map: F) -> MapPrincipal<Self, F>
    where
        Self: Sized,
        F: Fn(Self::Principal) -> Q + Send + Sync + 'static,
        Q: Clone + Send + Sync + 'static,
    {
        MapPrincipal::new(self, map)
    }

    /// Checks the configuration when a [`Guard`](crate::Guard) is built with this verifier; a
    /// composite checks its parts. The default finds nothing wrong.
    ///
    /// ```
    /// use axum_keyguard::{ByShape, ConfigErrorKind, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, Keys, Verifier};
    ///
    /// let jwt = Jwt::builder(JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [9u8; 32])?])?)
    ///     .build()?
    ///     .map_principal(|claims| claims.sub.unwrap_or_default());
    /// // Shaped like a JWT: ByShape would send it to the JWT verifier, never to the keys.
    /// let keys = Keys::new(["header0.payload0.signature0"])?.map_principal(|k| k.to_string());
    /// let err = Guard::builder().with_verifier(ByShape::new(jwt, keys)).build().unwrap_err();
    /// assert_eq!(err.kind(), ConfigErrorKind::UnreachableKey);
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    fn check_config(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Whether a key this verifier accepts has the shape of a JWT (see [`ByShape`]).
    #[doc(hidden)]
    fn has_jwt_shaped_key(&self) -> bool {
        false
    }

    /// Tries `other` when this verifier finds a credential invalid (see [`Or`]).
    ///
    /// ```
    /// use axum_keyguard::{CredentialDigest, Keys, MemoryStore, SessionKeys, Verifier};
    ///
    /// let store = MemoryStore::new();
    /// store.insert(CredentialDigest::of(b"session-key-0001"), "workspace:1".to_owned());
    /// let keys = Keys::new(["a-long-admin-key-1"])?.map_principal(|k| k.to_string());
    /// let verifier = keys.or(SessionKeys::new(store));
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    fn or<V>(self, other: V) -> Or<Self, V>
    where
        Self: Sized,
        V: Verifier<Principal = Self::Principal>,
    {
        Or::new(self, other)
    }
}

/// A boxed verifier, for choosing verifiers at run time.
impl<V: Verifier + ?Sized> Verifier for Box<V> {
    type Principal = V::Principal;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<Self::Principal> {
        (**self).verify(credential)
    }

    fn check_config(&self) -> Result<(), ConfigError> {
        (**self).check_config()
    }

    fn has_jwt_shaped_key(&self) -> bool {
        (**self).has_jwt_shaped_key()
    }
}

type BoxFuture<P> = Pin<Box<dyn Future<Output = Result<Grant<P>, Denial>> + Send>>;

/// The result of [`Verifier::verify`]: decided now, or a future that decides later.
#[must_use]
pub struct Verdict<P> {
    pub(crate) state: VerdictState<P>,
}

pub(crate) enum VerdictState<P> {
    Ready(Result<Grant<P>, Denial>),
    Pending(BoxFuture<P>),
}

impl<P> Verdict<P> {
    /// A decision made synchronously.
    pub fn ready(result: Result<Grant<P>, Denial>) -> Self {
        Self {
            state: VerdictState::Ready(result),
        }
    }

    /// A decision that needs I/O. The future must own everything it uses.
    pub fn pending<F>(future: F) -> Self
    where
        F: Future<Output = Result<Grant<P>, Denial>> + Send + 'static,
    {
        Self {
            state: VerdictState::Pending(Box::pin(future)),
        }
    }
}

impl<P: Send + 'static> Verdict<P> {
    /// Maps the principal of a successful verification.
    pub(crate) fn map<Q, F>(self, map: std::sync::Arc<F>) -> Verdict<Q>
    where
        F: Fn(P) -> Q + Send + Sync + 'static,
        Q: Send + 'static,
    {
        let apply = move |grant: Grant<P>| {
            // The record an open socket reads again is mapped the same way.
            let for_refresh = std::sync::Arc::clone(&map);
            let lease = grant.lease.map_refresh(move |refresh| {
                crate::lease::Refresh::new(move || {
                    let record = refresh.read()?.downcast::<P>().ok()?;
                    Some(Box::new(for_refresh(*record)) as Box<dyn std::any::Any + Send>)
                })
            });
            Grant {
                principal: map(grant.principal),
                lease,
            }
        };
        match self.state {
            VerdictState::Ready(result) => Verdict::ready(result.map(apply)),
            VerdictState::Pending(future) => {
                Verdict::pending(async move { future.await.map(apply) })
            }
        }
    }
}

impl<P> fmt::Debug for Verdict<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            VerdictState::Ready(Ok(_)) => f.write_str("Verdict::Ready(Ok(..))"),
            VerdictState::Ready(Err(e)) => write!(f, "Verdict::Ready(Err({e:?}))"),
            VerdictState::Pending(_) => f.write_str("Verdict::Pending"),
        }
    }
}

/// A verified credential: the principal and how long it stays valid.
pub struct Grant<P> {
    pub(crate) principal: P,
    pub(crate) lease: Lease,
}

impl<P> Grant<P> {
    /// A grant with no expiry.
    pub fn new(principal: P) -> Self {
        Self {
            principal,
            lease: Lease::unbounded(),
        }
    }

    /// Sets the lease (expiry) of this grant.
    #[must_use]
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = lease;
        self
    }
}

impl<P> fmt::Debug for Grant<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Why a verifier refused a credential. Its kind decides the response; its source, if any, is
/// only for the application's own error reporting and never reaches a response or close reason.
pub struct Denial {
    kind: AuthRejectionKind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Denial {
    fn of(kind: AuthRejectionKind) -> Self {
        Self { kind, source: None }
    }

    /// Wrong, unknown, revoked, expired or inactive: `401 invalid_token`.
    #[must_use]
    pub fn invalid() -> Self {
        Self::of(AuthRejectionKind::InvalidCredential)
    }

    /// Authenticated but not allowed: `403 insufficient_scope`.
    #[must_use]
    pub fn forbidden() -> Self {
        Self::of(AuthRejectionKind::InsufficientScope)
    }

    /// The backing store failed or timed out: `503` with `Retry-After`.
    #[must_use]
    pub fn unavailable() -> Self {
        Self::of(AuthRejectionKind::Unavailable)
    }

    /// The server is misconfigured: `500`.
    #[must_use]
    pub fn misconfigured() -> Self {
        Self::of(AuthRejectionKind::Misconfigured)
    }

    /// Attaches the underlying error (for [`Error::source`](std::error::Error::source)).
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The rejection kind this error becomes.
    #[must_use]
    pub fn kind(&self) -> AuthRejectionKind {
        self.kind
    }
}

impl fmt::Debug for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credential refused: {}", self.kind.as_str())
    }
}

impl StdError for Denial {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
