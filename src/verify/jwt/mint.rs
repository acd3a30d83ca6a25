//! Minting short-lived tokens with the keyring's newest key.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use super::Jwt;

impl<C> Jwt<C> {
    /// Mints a token signed with the keyring's newest key: `claims` (a struct or map that
    /// serialises to a JSON object) plus `iat` and `exp` from this verifier's clock, and the
    /// configured `iss`, `aud` and `typ`. The header carries the key's `kid`.
    ///
    /// Fails if `lifetime` is zero or above the configured maximum, if `claims` is not an object,
    /// or if there is no signing key (an empty keyring, or a verifier over a key set, whose
    /// private keys are the provider's).
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
        let Some(keyring) = config.keys.keyring() else {
            return Err(MintError("a key set holds public keys only"));
        };
        let keys = keyring.read();
        let key = keys.signing().ok_or(MintError("the keyring is empty"))?;
        let mut header = serde_json::Map::new();
        header.insert("typ".into(), config.typ.as_deref().unwrap_or("JWT").into());
        header.insert("alg".into(), key.algorithm().as_str().into());
        if let Some(kid) = key.kid() {
            header.insert("kid".into(), kid.into());
        }
        let header = serde_json::to_vec(&header).map_err(|_| MintError("signing failed"))?;
        let payload =
            serde_json::to_vec(&value).map_err(|_| MintError("claims do not serialise"))?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
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
