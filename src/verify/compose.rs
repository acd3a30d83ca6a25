//! Composing verifiers: routing by credential shape, and mapping principals to one type.

use std::fmt;
use std::sync::Arc;

use crate::credential::Credential;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::verify::{Verdict, Verifier};

/// Sends a JWT-shaped credential (three non-empty dot-separated segments) to `jwt` only, and any
/// other credential to `opaque` only (keys or a session store), so a JWT never reaches a key
/// store and a session key is never parsed as a token.
///
/// Both verifiers must have the same principal type; use
/// [`map_principal`](Verifier::map_principal) to bring them to one.
///
/// ```
/// use axum_keyguard::{ByShape, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, Keys, Verifier};
///
/// let jwt = Jwt::builder(JwtKeyring::new([JwtKey::new(JwtAlgorithm::Hs256, [9u8; 32])?])?)
///     .build()?
///     .map_principal(|claims| claims.sub.unwrap_or_default());
/// let keys = Keys::new(["a-long-session-key"])?.map_principal(|key| key.to_string());
/// let guard = Guard::builder().with_verifier(ByShape::new(jwt, keys)).build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ByShape<J, O> {
    jwt: J,
    opaque: O,
}

impl<J, O> ByShape<J, O> {
    /// Routes JWT-shaped credentials to `jwt` and every other credential to `opaque`.
    pub fn new(jwt: J, opaque: O) -> Self {
        Self { jwt, opaque }
    }
}

impl<J, O> Verifier for ByShape<J, O>
where
    J: Verifier,
    O: Verifier<Principal = J::Principal>,
{
    type Principal = J::Principal;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<J::Principal> {
        if credential.is_jwt_shaped() {
            self.jwt.verify(credential)
        } else {
            self.opaque.verify(credential)
        }
    }

    fn check_config(&self) -> Result<(), ConfigError> {
        self.jwt.check_config()?;
        self.opaque.check_config()?;
        if self.opaque.has_jwt_shaped_key() {
            return Err(ConfigError::new(
                ConfigErrorKind::UnreachableKey,
                "a capability key has the shape of a JWT (three dot-separated segments), so it \
                 would always go to the JWT verifier: use a key without dots",
            ));
        }
        Ok(())
    }
}

/// A verifier whose principal is mapped by a function. See [`Verifier::map_principal`].
pub struct MapPrincipal<V, F> {
    verifier: V,
    map: Arc<F>,
}

impl<V, F> MapPrincipal<V, F> {
    pub(crate) fn new(verifier: V, map: F) -> Self {
        Self {
            verifier,
            map: Arc::new(map),
        }
    }
}

impl<V: Clone, F> Clone for MapPrincipal<V, F> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
            map: Arc::clone(&self.map),
        }
    }
}

impl<V: fmt::Debug, F> fmt::Debug for MapPrincipal<V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapPrincipal")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<V, F, Q> Verifier for MapPrincipal<V, F>
where
    V: Verifier,
    F: Fn(V::Principal) -> Q + Send + Sync + 'static,
    Q: Clone + Send + Sync + 'static,
{
    type Principal = Q;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<Q> {
        self.verifier.verify(credential).map(Arc::clone(&self.map))
    }

    fn check_config(&self) -> Result<(), ConfigError> {
        self.verifier.check_config()
    }

    fn has_jwt_shaped_key(&self) -> bool {
        self.verifier.has_jwt_shaped_key()
    }
}

/// Tries `first`; when it finds the credential invalid, tries `second`. Any other outcome of
/// `first` (success, `503`, `403`) is final. See [`Verifier::or`].
///
/// Put the cheaper, synchronous verifier first (capability keys before a store), so known keys
/// never cost a store call.
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: Arc<B>,
}

impl<A, B> Or<A, B> {
    pub(crate) fn new(first: A, second: B) -> Self {
        Self {
            first,
            second: Arc::new(second),
        }
    }
}

impl<A, B> Verifier for Or<A, B>
where
    A: Verifier,
    B: Verifier<Principal = A::Principal>,
{
    type Principal = A::Principal;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<A::Principal> {
        use crate::rejection::AuthRejectionKind::InvalidCredential;
        use crate::verify::VerdictState::{Pending, Ready};

        match self.first.verify(credential).state {
            Ready(Err(e)) if e.kind() == InvalidCredential => self.second.verify(credential),
            Ready(result) => Verdict::ready(result),
            Pending(first) => {
                // The credential is borrowed from the request: keep an owned copy for `second`.
                let owned = Credential::new(credential.expose().to_owned());
                let second = Arc::clone(&self.second);
                Verdict::pending(async move {
                    match first.await {
                        Err(e) if e.kind() == InvalidCredential => {
                            match second.verify(&owned).state {
                                Ready(result) => result,
                                Pending(future) => future.await,
                            }
                        }
                        result => result,
                    }
                })
            }
        }
    }

    fn check_config(&self) -> Result<(), ConfigError> {
        self.first.check_config()?;
        self.second.check_config()
    }

    fn has_jwt_shaped_key(&self) -> bool {
        self.first.has_jwt_shaped_key() || self.second.has_jwt_shaped_key()
    }
}
