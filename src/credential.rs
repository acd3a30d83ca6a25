//! The presented secret, its SHA-256 digest and the constant-time comparison.
//!
//! This is the only file that compares secrets. Every comparison of a presented secret with a
//! configured or stored one hashes both sides with SHA-256 and compares the fixed-length digests
//! with [`subtle`], visiting every candidate without an early exit. The one other comparison, a
//! presented JWT against a token the verified-token cache holds ([`same_token`]), is of the whole
//! values, also with [`subtle`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// A credential presented by a client, as found in one source of a request.
///
/// Its `Debug` output is redacted and it has no `Display`: the value can only be read on purpose,
/// through [`Credential::expose`]. The SHA-256 digest is computed once, when a verifier first
/// asks for it, and shared by every verifier.
pub struct Credential<'a> {
    value: Cow<'a, str>,
    /// Computed on first use: a verifier that never asks (a JWT verifier without its cache)
    /// never pays for the hash.
    digest: OnceLock<CredentialDigest>,
}

impl<'a> Credential<'a> {
    /// Wraps a presented value. Its digest is computed once, when first asked for.
    ///
    /// ```
    /// use axum_keyguard::Credential;
    ///
    /// let credential = Credential::new("s3cr3t");
    /// assert_eq!(credential.expose(), "s3cr3t");
    /// assert!(!format!("{credential:?}").contains("s3cr3t"));
    /// ```
    #[must_use]
    pub fn new(value: impl Into<Cow<'a, str>>) -> Self {
        Self {
            value: value.into(),
            digest: OnceLock::new(),
        }
    }

    /// The secret value. Never log or echo it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The SHA-256 digest of the value: what stores are keyed by, so the raw key never leaves the
    /// process.
    #[must_use]
    pub fn digest(&self) -> &CredentialDigest {
        self.digest
            .get_or_init(|| CredentialDigest::of(self.value.as_bytes()))
    }

    /// Whether the value has the shape of a compact JWS (three non-empty dot-separated segments).
    ///
    /// Verifier composition routes by shape with this, so a JWT never reaches a key store.
    ///
    /// ```
    /// use axum_keyguard::Credential;
    ///
    /// assert!(Credential::new("a.b.c").is_jwt_shaped());
    /// assert!(!Credential::new("opaque-key").is_jwt_shaped());
    /// assert!(!Credential::new("a..c").is_jwt_shaped());
    /// ```
    #[must_use]
    pub fn is_jwt_shaped(&self) -> bool {
        let mut segments = self.value.split('.');
        let mut count = 0;
        for segment in segments.by_ref() {
            if segment.is_empty() {
                return false;
            }
            count += 1;
        }
        count == 3
    }

    /// Whether two presented credentials carry the same value, compared by digest in constant time.
    pub(crate) fn same_value(&self, other: &Credential<'_>) -> bool {
        self.digest().ct_eq(other.digest())
    }
}

/// Whether a presented token is the one a cache entry holds: every byte compared in constant
/// time (the lengths, which the token's own shape shows, may differ early).
#[cfg(feature = "jwt")]
pub(crate) fn same_token(presented: &[u8], held: &[u8]) -> bool {
    if presented.len() != held.len() {
        return false;
    }
    // Eight bytes at a time, XORed and ORed into one word with no early exit (subtle's own
    // slice comparison goes byte by byte, ten times slower on a token), then the word compared
    // with zero by `subtle`.
    let (a_words, a_tail) = presented.as_chunks::<8>();
    let (b_words, b_tail) = held.as_chunks::<8>();
    let mut diff = a_words.iter().zip(b_words).fold(0u64, |diff, (a, b)| {
        diff | (u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b))
    });
    for (a, b) in a_tail.iter().zip(b_tail) {
        diff |= u64::from(a ^ b);
    }
    std::hint::black_box(diff).ct_eq(&0).into()
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// The SHA-256 digest of a secret.
///
/// Stored keys are kept as digests; a presented credential is hashed before it is compared, so
/// comparisons always run over 32 bytes whatever the lengths of the secrets. `Debug` shows only
/// that it is a digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialDigest([u8; 32]);

impl CredentialDigest {
    /// Hashes `secret` with SHA-256.
    ///
    /// ```
    /// use axum_keyguard::CredentialDigest;
    ///
    /// let digest = CredentialDigest::of(b"abc");
    /// assert_eq!(digest.as_bytes()[..4], [0xba, 0x78, 0x16, 0xbf]);
    /// ```
    #[must_use]
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// The 32 digest bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lower-case hex digits: how shared stores name a key (a digest is not a
    /// secret: finding the key from it would need a SHA-256 preimage).
    ///
    /// ```
    /// use axum_keyguard::CredentialDigest;
    ///
    /// let hex = CredentialDigest::of(b"abc").to_hex();
    /// assert!(hex.starts_with("ba7816bf"));
    /// assert_eq!(CredentialDigest::from_hex(&hex), Some(CredentialDigest::of(b"abc")));
    /// ```
    #[must_use]
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for byte in self.0 {
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        hex
    }

    /// Parses 64 hex digits (either case) back into a digest; `None` for anything else.
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(bytes))
    }

    /// Constant-time equality of two digests.
    ///
    /// ```
    /// use axum_keyguard::CredentialDigest;
    ///
    /// assert!(CredentialDigest::of(b"a").ct_eq(&CredentialDigest::of(b"a")));
    /// assert!(!CredentialDigest::of(b"a").ct_eq(&CredentialDigest::of(b"b")));
    /// ```
    #[must_use]
    pub fn ct_eq(&self, other: &CredentialDigest) -> bool {
        self.ct_choice(other).into()
    }

    /// Constant-time equality as a [`Choice`]: four 64-bit words compared with `subtle` (one
    /// optimisation barrier per word rather than one per byte), combined without branching.
    fn ct_choice(&self, other: &CredentialDigest) -> Choice {
        let word = |digest: &[u8; 32], i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(bytes)
        };
        let mut equal = Choice::from(1);
        for i in 0..4 {
            equal &= word(&self.0, i).ct_eq(&word(&other.0, i));
        }
        equal
    }

    /// The index of the candidate equal to `self`, comparing against every candidate in constant
    /// time (no early exit when a match is found, none on a mismatch).
    pub(crate) fn position_in(&self, candidates: &[CredentialDigest]) -> Option<usize> {
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, candidate) in candidates.iter().enumerate() {
            let equal = self.ct_choice(candidate);
            index.conditional_assign(&(i as u64), equal & !found);
            found |= equal;
        }
        bool::from(found).then_some(index as usize)
    }
}

/// A map keyed by digests. SHA-256 output is uniform and cannot be chosen by an attacker (that
/// would need preimages), so hashing it again with SipHash buys nothing: the first 8 bytes are
/// the hash.
pub(crate) type DigestMap<V> = HashMap<CredentialDigest, V, BuildHasherDefault<DigestHasher>>;

/// See [`DigestMap`].
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: keep the first 8 bytes of the digest.
        if bytes.len() >= 8 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

impl fmt::Debug for CredentialDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialDigest(<sha256>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_the_sha256_test_vector() {
        // FIPS 180-2 "abc".
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = CredentialDigest::of(b"abc")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn position_in_finds_every_candidate_and_rejects_near_misses() {
        let keys: Vec<_> = ["a-long-random-key-1", "a-long-random-key-2", "k3"]
            .iter()
            .map(|k| CredentialDigest::of(k.as_bytes()))
            .collect();
        for (i, k) in ["a-long-random-key-1", "a-long-random-key-2", "k3"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                CredentialDigest::of(k.as_bytes()).position_in(&keys),
                Some(i)
            );
        }
        for miss in ["k", "k1 ", "K1", "k4", ""] {
            assert_eq!(
                CredentialDigest::of(miss.as_bytes()).position_in(&keys),
                None
            );
        }
        assert_eq!(
            CredentialDigest::of(b"a-long-random-key-1").position_in(&[]),
            None
        );
    }

    #[test]
    fn the_first_of_two_equal_candidates_wins() {
        let d = CredentialDigest::of(b"same");
        assert_eq!(d.position_in(&[CredentialDigest::of(b"x"), d, d]), Some(1));
    }

    #[test]
    fn digest_maps_find_every_key() {
        let mut map = DigestMap::default();
        for i in 0..1000u32 {
            map.insert(CredentialDigest::of(&i.to_le_bytes()), i);
        }
        for i in 0..1000u32 {
            assert_eq!(map.get(&CredentialDigest::of(&i.to_le_bytes())), Some(&i));
        }
        assert_eq!(map.get(&CredentialDigest::of(b"absent")), None);
    }

    #[test]
    fn debug_never_shows_the_value_or_digest() {
        let c = Credential::new("hunter2-secret");
        let shown = format!("{c:?} {:?}", c.digest());
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("ba78"));
    }

    #[test]
    #[cfg(feature = "jwt")]
    fn same_token_finds_a_difference_in_any_byte_and_any_length() {
        for len in 0..40 {
            let token: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_token(&token, &token.clone()), "{len}");
            for at in 0..len {
                let mut other = token.clone();
                other[at] ^= 0x01;
                assert!(!same_token(&token, &other), "{len} at {at}");
            }
            let mut longer = token.clone();
            longer.push(b'a');
            assert!(!same_token(&token, &longer));
        }
    }

    #[test]
    fn same_value_compares_values_not_sources() {
        assert!(Credential::new("a").same_value(&Credential::new(String::from("a"))));
        assert!(!Credential::new("a").same_value(&Credential::new("A")));
    }

    #[test]
    fn jwt_shape_needs_exactly_three_non_empty_segments() {
        for (value, shaped) in [
            ("a.b.c", true),
            ("a.b", false),
            ("a.b.c.d", false),
            (".b.c", false),
            ("a.b.", false),
            ("abc", false),
        ] {
            assert_eq!(Credential::new(value).is_jwt_shaped(), shaped, "{value}");
        }
    }
}
