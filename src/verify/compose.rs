//! Composing verifiers: routing by credential shape, and mapping principals to one type.

use std::fmt;
use std::sync::Arc;

use crate::credential::Credential;
use crate::verify::{Verification, Verifier};

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
/// let keys = Keys::new(["session-key"])?.map_principal(|key| key.to_string());
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

    fn verify(&self, credential: &Credential<'_>) -> Verification<J::Principal> {
        if credential.is_jwt_shaped() {
            self.jwt.verify(credential)
        } else {
            self.opaque.verify(credential)
        }
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

    fn verify(&self, credential: &Credential<'_>) -> Verification<Q> {
        self.verifier.verify(credential).map(Arc::clone(&self.map))
    }
}
