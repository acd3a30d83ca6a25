//! The verified-token cache.

use std::sync::{PoisonError, RwLock};

use crate::credential::{CredentialDigest, DigestMap};

/// Tokens already verified, by the SHA-256 of the token. A hit skips the HMAC and the JSON, and is
/// taken only if the keyring has not changed since; its times are checked again on every hit. So
/// the cache never accepts a token that a fresh check would refuse.
pub(super) struct TokenCache<C> {
    pub(super) entries: RwLock<DigestMap<Cached<C>>>,
    pub(super) capacity: usize,
}

#[derive(Clone)]
pub(super) struct Cached<C> {
    pub(super) claims: C,
    pub(super) times: Times,
    pub(super) generation: u64,
    /// The signal of the key set's key the token was verified with (none for HMAC keys).
    pub(super) revocation: Option<crate::lease::Revocation>,
}

/// The time claims of a verified token.
#[derive(Clone, Copy)]
pub(super) struct Times {
    pub(super) exp: u64,
    pub(super) nbf: Option<u64>,
    pub(super) iat: Option<u64>,
}

impl<C: Clone> TokenCache<C> {
    pub(super) fn get(&self, key: &CredentialDigest, generation: u64) -> Option<Cached<C>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|c| c.generation == generation)
            .cloned()
    }

    /// Remembers a verified token; when full, first forgets the expired and stale ones, and if
    /// it is still full, does not remember this one.
    pub(super) fn insert(&self, key: CredentialDigest, cached: Cached<C>, now: u64, leeway: u64) {
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
    pub(super) fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
