//! One public key from a JWK Set (RFC 7517): parsed strictly, built once, verify-only.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::verify::jwt::JwtAlgorithm;

/// The shortest RSA modulus accepted (2048 bits, RFC 7518 §3.3 and NIST SP 800-131A).
pub(super) const MIN_RSA_BITS: usize = 2048;
/// The longest RSA modulus accepted (larger ones cost time on every verification for no
/// security a JWT needs).
const MAX_RSA_BITS: usize = 4096;
/// The largest RSA public exponent accepted (ring's limit).
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;

/// A JWK as published. Unknown members are ignored; private members make the key unusable.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    /// Any private member (`d`, `p`, `q`, …) or a symmetric secret (`k`).
    #[serde(default)]
    d: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    k: Option<serde::de::IgnoredAny>,
}

/// Why a published key was left out of the set. Logged with the key's `kid` (public), never
/// with key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Skip {
    /// Not a JSON object with the members its `kty` needs, or a member is not base64url.
    Malformed,
    /// `kty` is not `RSA`, `EC` (P-256) or `OKP` (Ed25519): `oct` secrets are never accepted.
    Unsupported,
    /// `use` is not `sig`, or `key_ops` does not allow `verify`.
    NotForSignatures,
    /// `alg` names an algorithm this verifier does not accept, or one that does not fit `kty`.
    Algorithm,
    /// A private or secret member is present: the provider is publishing what it must not.
    Private,
    /// An RSA modulus below 2048 or above 4096 bits, or a point not on the curve.
    Weak,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::Unsupported => "unsupported kty or curve",
            Self::NotForSignatures => "not a signature key (use/key_ops)",
            Self::Algorithm => "alg not accepted or not fitting kty",
            Self::Private => "carries private or secret members",
            Self::Weak => "key too small, too large or not on the curve",
        })
    }
}

/// The verifying half of a key, checked once when the set is fetched. RSA and P-256 verify on
/// ring (its assembly is several times faster than pure-Rust big integers, and ring carries no
/// advisory), Ed25519 on ed25519-dalek's strict verification.
#[derive(Clone)]
enum PublicKey {
    /// The modulus (no leading zero) and the public exponent, big-endian.
    Rsa {
        n: Arc<[u8]>,
        e: Arc<[u8]>,
    },
    /// The uncompressed point `04 || x || y`, found on the curve when the set was read.
    P256(Arc<[u8; 65]>),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

/// Whether `point` (uncompressed SEC1) is a point of P-256 other than the identity: ring checks a
/// peer's point before any key agreement, so one agreement with a throwaway key is the check.
fn on_p256(point: &[u8]) -> bool {
    use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
    let rng = ring::rand::SystemRandom::new();
    EphemeralPrivateKey::generate(&ECDH_P256, &rng).is_ok_and(|private| {
        agree_ephemeral(private, &UnparsedPublicKey::new(&ECDH_P256, point), |_| ()).is_ok()
    })
}

/// A usable key of a fetched set.
#[derive(Clone)]
pub(crate) struct Jwk {
    pub(super) kid: Option<Arc<str>>,
    /// The JWK's own `alg`, if it names one: a token must then use exactly it.
    alg: Option<JwtAlgorithm>,
    key: PublicKey,
    /// SHA-256 over the key type and its public components: the same `kid` with new material is
    /// a different key (its old tokens are revoked).
    pub(super) fingerprint: [u8; 32],
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kty = match self.key {
            PublicKey::Rsa { .. } => "RSA",
            PublicKey::P256(_) => "EC P-256",
            PublicKey::Ed25519(_) => "OKP Ed25519",
        };
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("kty", &kty)
            .field("alg", &self.alg)
            .finish()
    }
}

fn b64(member: Option<&String>) -> Result<Vec<u8>, Skip> {
    let value = member.ok_or(Skip::Malformed)?;
    URL_SAFE_NO_PAD
        .decode(value.as_bytes())
        .map_err(|_| Skip::Malformed)
}

impl Jwk {
    /// Parses one member of a set's `keys` array, accepting only what `allowed` algorithms can
    /// use.
    pub(super) fn parse(
        value: &serde_json::Value,
        allowed: &[JwtAlgorithm],
    ) -> Result<Self, (Option<String>, Skip)> {
        let raw: RawJwk = serde_json::from_value(value.clone()).map_err(|_| {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            (kid, Skip::Malformed)
        })?;
        let kid = raw.kid.clone();
        Self::from_raw(raw, allowed).map_err(|skip| (kid, skip))
    }

    fn from_raw(raw: RawJwk, allowed: &[JwtAlgorithm]) -> Result<Self, Skip> {
        if raw.d.is_some() || raw.k.is_some() {
            return Err(Skip::Private);
        }
        if raw.use_.as_deref().is_some_and(|u| u != "sig")
            || raw
                .key_ops
                .as_ref()
                .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return Err(Skip::NotForSignatures);
        }
        let mut fingerprint = Sha256::new();
        let key = match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("RSA", None) => {
                let n = b64(raw.n.as_ref())?;
                let e = b64(raw.e.as_ref())?;
                let n = &n[n.iter().take_while(|&&b| b == 0).count()..];
                let e = &e[e.iter().take_while(|&&b| b == 0).count()..];
                let bits = n
                    .first()
                    .map_or(0, |&top| n.len() * 8 - top.leading_zeros() as usize);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(Skip::Weak);
                }
                // An odd modulus; an odd exponent of at least 3 and at most 2^33 − 1.
                let exponent = if e.len() <= 8 {
                    e.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b))
                } else {
                    u64::MAX
                };
                let exponent_ok = exponent % 2 == 1 && (3..=MAX_RSA_EXPONENT).contains(&exponent);
                if n.last().is_none_or(|&low| low & 1 == 0) || !exponent_ok {
                    return Err(Skip::Weak);
                }
                fingerprint.update(b"RSA\0");
                fingerprint.update((n.len() as u64).to_be_bytes());
                fingerprint.update(n);
                fingerprint.update(e);
                PublicKey::Rsa {
                    n: Arc::from(n),
                    e: Arc::from(e),
                }
            }
            ("EC", Some("P-256")) => {
                let x = b64(raw.x.as_ref())?;
                let y = b64(raw.y.as_ref())?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(Skip::Malformed);
                }
                let mut point = [4u8; 65];
                point[1..33].copy_from_slice(&x);
                point[33..].copy_from_slice(&y);
                if !on_p256(&point) {
                    return Err(Skip::Weak);
                }
                fingerprint.update(b"EC P-256\0");
                fingerprint.update(&x);
                fingerprint.update(&y);
                PublicKey::P256(Arc::new(point))
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64(raw.x.as_ref())?;
                let bytes: [u8; 32] = x.as_slice().try_into().map_err(|_| Skip::Malformed)?;
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| Skip::Weak)?;
                if key.is_weak() {
                    return Err(Skip::Weak);
                }
                fingerprint.update(b"OKP Ed25519\0");
                fingerprint.update(bytes);
                PublicKey::Ed25519(Box::new(key))
            }
            _ => return Err(Skip::Unsupported),
        };
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(name) => {
                let alg = JwtAlgorithm::from_name(name).ok_or(Skip::Algorithm)?;
                if !fits(&key, alg) || !allowed.contains(&alg) {
                    return Err(Skip::Algorithm);
                }
                Some(alg)
            }
        };
        if alg.is_none() && !allowed.iter().any(|&a| fits(&key, a)) {
            return Err(Skip::Algorithm);
        }
        Ok(Self {
            kid: raw.kid.map(Arc::from),
            alg,
            key,
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// Whether a token whose header says `alg` may be checked with this key: the algorithm is
    /// accepted, fits the key type, and is the JWK's own `alg` when it names one.
    pub(super) fn accepts(&self, alg: &str, allowed: &[JwtAlgorithm]) -> Option<JwtAlgorithm> {
        let alg = JwtAlgorithm::from_name(alg)?;
        let ok =
            allowed.contains(&alg) && fits(&self.key, alg) && self.alg.is_none_or(|a| a == alg);
        ok.then_some(alg)
    }

    /// Whether `signature` (raw bytes) verifies `message` under this key with `alg` (which
    /// [`accepts`](Self::accepts) returned).
    pub(crate) fn verify(&self, alg: JwtAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{
            RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
            RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
        };
        match (&self.key, alg) {
            (PublicKey::Rsa { n, e }, JwtAlgorithm::Rs256) => {
                RsaPublicKeyComponents { n: &**n, e: &**e }
                    .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                    .is_ok()
            }
            // The salt is as long as the hash (RFC 7518 §3.5), as ring requires.
            (PublicKey::Rsa { n, e }, JwtAlgorithm::Ps256) => {
                RsaPublicKeyComponents { n: &**n, e: &**e }
                    .verify(&RSA_PSS_2048_8192_SHA256, message, signature)
                    .is_ok()
            }
            // JWS carries R || S, 64 bytes (RFC 7518 §3.4), never DER.
            (PublicKey::P256(point), JwtAlgorithm::Es256) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point[..])
                    .verify(message, signature)
                    .is_ok()
            }
            (PublicKey::Ed25519(key), JwtAlgorithm::EdDsa) => {
                let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                // Strict: no small-order keys, no non-canonical R (RFC 8032 §5.1.7).
                key.verify_strict(message, &signature).is_ok()
            }
            _ => false,
        }
    }
}

/// Whether `alg` is one this key type can verify.
fn fits(key: &PublicKey, alg: JwtAlgorithm) -> bool {
    matches!(
        (key, alg),
        (
            PublicKey::Rsa { .. },
            JwtAlgorithm::Rs256 | JwtAlgorithm::Ps256
        ) | (PublicKey::P256(_), JwtAlgorithm::Es256)
            | (PublicKey::Ed25519(_), JwtAlgorithm::EdDsa)
    )
}
