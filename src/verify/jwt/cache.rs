//! The verified-token cache.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{PoisonError, RwLock};

use crate::credential::same_token;

/// Tokens already verified. A hit skips the HMAC or signature and the JSON, and is taken only if
/// the key set has not changed since; its times are checked again on every hit. So the cache
/// never accepts a token that a fresh check would refuse.
///
/// Entries are found by a keyed hash of the token's end (keys drawn from std's `RandomState`:
/// random per process and distinct per verifier, so no one outside the process can aim two
/// tokens at one slot), and a candidate
/// is taken only when the whole presented token equals the one it holds, compared in constant
/// time. Two tokens that happen to share a slot only cost each other a fresh check. No SHA-256
/// here: a hit costs one multiply and one comparison over the token.
pub(super) struct TokenCache<C> {
    entries: RwLock<HashMap<u64, Entry<C>, BuildHasherDefault<Prehashed>>>,
    /// Drawn from std's `RandomState` (random per process, distinct per cache).
    keys: [u64; 2],
    pub(super) capacity: usize,
}

struct Entry<C> {
    /// The token itself: a slot is taken only by this exact token.
    token: Box<[u8]>,
    cached: Cached<C>,
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

impl<C> TokenCache<C> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::default()),
            keys: {
                let random = RandomState::new();
                // Odd, so that neither key can zero the multiply.
                [random.hash_one(0u8) | 1, random.hash_one(1u8) | 1]
            },
            capacity,
        }
    }
}

impl<C: Clone> TokenCache<C> {
    /// Whether the cache remembers anything at all (`with_token_cache(0)` turns it off, and then
    /// no token is hashed).
    pub(super) fn is_on(&self) -> bool {
        self.capacity > 0
    }

    /// The slot of `token`: its last 16 bytes (the end of the signature, a MAC or a signature
    /// over everything before it, so as good as random) mixed with this cache's random keys by
    /// one folded 128-bit multiply. Tokens that end alike share a slot and cost each other a
    /// fresh check, never an acceptance: a slot is taken only by the whole token it holds, and
    /// only verified tokens are ever stored.
    pub(super) fn slot(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        let mut end = [0u8; 16];
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        end[16 - tail.len()..].copy_from_slice(tail);
        let (low, high) = end.split_at(8);
        let low = u64::from_le_bytes(low.try_into().unwrap_or_default()) ^ self.keys[0];
        let high = u64::from_le_bytes(high.try_into().unwrap_or_default()) ^ self.keys[1];
        let product = u128::from(low) * u128::from(high);
        // The length too: a short token and its zero-padded tail are not one slot.
        (product as u64) ^ ((product >> 64) as u64) ^ (bytes.len() as u64)
    }

    pub(super) fn get(&self, slot: u64, token: &str, generation: u64) -> Option<Cached<C>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&slot)
            .filter(|e| e.cached.generation == generation && same_token(token.as_bytes(), &e.token))
            .map(|e| e.cached.clone())
    }

    /// Remembers a verified token; when full, first forgets the expired and stale ones, and if
    /// it is still full, does not remember this one.
    pub(super) fn insert(&self, slot: u64, token: &str, cached: Cached<C>, now: u64, leeway: u64) {
        if !self.is_on() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let generation = cached.generation;
            entries.retain(|_, e| {
                e.cached.generation == generation && e.cached.times.exp.saturating_add(leeway) > now
            });
            if entries.len() >= self.capacity {
                return;
            }
        }
        let token = token.as_bytes().into();
        entries.insert(slot, Entry { token, cached });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The map's own hasher over slots that are already keyed hashes: passes them through.
#[derive(Default)]
pub(super) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` slots are hashed here; fold anything else rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, slot: u64) {
        self.0 = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::{Cached, Times, TokenCache};

    fn cached(generation: u64) -> Cached<&'static str> {
        Cached {
            claims: "claims",
            times: Times {
                exp: 2_000_000_000,
                nbf: None,
                iat: None,
            },
            generation,
            revocation: None,
        }
    }

    #[test]
    fn a_slot_is_taken_only_by_its_own_token() {
        let cache = TokenCache::new(8);
        let token = "aaaa.bbbb.cccc";
        let slot = cache.slot(token);
        cache.insert(slot, token, cached(1), 0, 0);
        assert!(cache.get(slot, token, 1).is_some());
        // Another token aimed at the same slot (as a forged hash collision would be) misses.
        for other in ["aaaa.bbbb.cccd", "aaaa.bbbb.ccc", "aaaa.bbbb.cccc.", ""] {
            assert!(cache.get(slot, other, 1).is_none(), "{other:?}");
        }
        // Another key-set generation misses too.
        assert!(cache.get(slot, token, 2).is_none());
    }

    #[test]
    fn slots_are_keyed_per_cache() {
        // Random keys: two caches put the same token in different slots (a 2^-64 chance of
        // equality, each run).
        let (a, b) = (TokenCache::<()>::new(1), TokenCache::<()>::new(1));
        assert_ne!(a.slot("aaaa.bbbb.cccc"), b.slot("aaaa.bbbb.cccc"));
    }

    #[test]
    fn a_cache_of_capacity_zero_is_off_and_remembers_nothing() {
        let cache = TokenCache::new(0);
        assert!(!cache.is_on());
        let slot = cache.slot("a.b.c");
        cache.insert(slot, "a.b.c", cached(1), 0, 0);
        assert_eq!(cache.len(), 0);
    }
}
