//! The JWT pre-parse and checks (DESIGN §3.5), driven through the public HMAC `Jwt` verifier
//! with known secrets and a fixed clock. Input, by its first byte:
//! - `s<header JSON>\n<claims JSON>`: signed correctly with the key without `kid`
//!   (`k…`: with the `kid` `k2` key), so the JSON checks are reached;
//! - `m<pos:2><xor:1><claims JSON>`: a well-signed token, then one byte flipped;
//! - anything else: the raw token, in the `X-Token` header.
//!
//! `$NOW` and `$EXP` in the JSON stand for the clock and the clock + 600 s.
//!
//! Properties: the verifier accepts a token exactly when an independent check says it is a
//! compact JWS of three canonical base64url segments, whose header is one JSON object naming
//! `HS256` once, no `crit`/`jku`/`jwk`/`x5u`/`x5c`/`x5t`/`x5t#S256`/`b64`, and a known `kid` (or
//! none), whose HMAC-SHA256 (recomputed here with the `hmac` crate) is the signature, and whose
//! claims are one JSON object with typed registered claims, `exp` in the future (leeway 30 s),
//! `nbf`/`iat` not in the future, `iss` the configured issuer and no `aud`; a byte flip of a valid
//! token is never accepted; a verifier with a token cache answers as one without; a rejection is
//! 400 or 401 with canonical texts.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum_keyguard::{
    AuthRejectionKind as K, Claims, Guard, Jwt, JwtAlgorithm, JwtKey, JwtKeyring, Source,
};
use axum_keyguard_fuzz::{decode_canonical, head, object_members, resolve};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-hmac-secret-0123456789abcdef";
const SECRET2: &[u8] = b"fuzz-hmac-secret-two-0123456789ab";
const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = 30;
const ISSUER: &str = "fuzz-issuer";

fn verifier(cache: usize) -> Jwt<Claims> {
    let keyring = JwtKeyring::new([
        JwtKey::new(JwtAlgorithm::Hs256, SECRET).expect("key"),
        JwtKey::new(JwtAlgorithm::Hs256, SECRET2)
            .expect("key")
            .with_kid("k2"),
    ])
    .expect("keyring");
    Jwt::builder(keyring)
        .with_issuer(ISSUER)
        .with_clock(|| SystemTime::UNIX_EPOCH + Duration::from_secs(NOW))
        .with_token_cache(cache)
        .build()
        .expect("verifier")
}

fn guard(cache: usize) -> Guard<Claims> {
    Guard::builder()
        .with_verifier(verifier(cache))
        .with_sources([Source::header("x-token").expect("name")])
        .build()
        .expect("guard")
}

static PLAIN: OnceLock<Guard<Claims>> = OnceLock::new();
static CACHED: OnceLock<Guard<Claims>> = OnceLock::new();

fn hmac(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = URL_SAFE_NO_PAD.encode(hmac(secret, input.as_bytes()));
    format!("{input}.{signature}")
}

/// Members of `object` named `name` (duplicates kept).
fn all<'a>(object: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    object
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

/// At most one member `name`; its value, `None` when absent or `null` (serde's `Option`).
fn optional<'a>(object: &'a [(String, Value)], name: &str) -> Result<Option<&'a Value>, ()> {
    match all(object, name).as_slice() {
        [] => Ok(None),
        [Value::Null] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(()),
    }
}

fn optional_string(object: &[(String, Value)], name: &str) -> Result<Option<String>, ()> {
    match optional(object, name)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

fn optional_u64(object: &[(String, Value)], name: &str) -> Result<Option<u64>, ()> {
    match optional(object, name)? {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(()),
    }
}

/// The independent verdict: `Some(sub)` when the token must be accepted.
fn oracle(token: &str) -> Option<Option<String>> {
    let segments: Vec<&str> = token.split('.').collect();
    let [h, p, s] = segments.as_slice() else {
        return None;
    };
    if [h, p, s].iter().any(|seg| seg.is_empty()) {
        return None;
    }
    let header = decode_canonical(h.as_bytes())?;
    let payload = decode_canonical(p.as_bytes())?;
    let signature = decode_canonical(s.as_bytes())?;

    let header = object_members(&header)?;
    if all(&header, "alg").len() != 1 || all(&header, "alg")[0] != "HS256" {
        return None;
    }
    for forbidden in ["crit", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "b64"] {
        if !all(&header, forbidden).is_empty() {
            return None;
        }
    }
    optional_string(&header, "typ").ok()?;
    let secret = match optional_string(&header, "kid").ok()? {
        None => SECRET,
        Some(kid) if kid == "k2" => SECRET2,
        Some(_) => return None,
    };
    if hmac(secret, format!("{h}.{p}").as_bytes()) != signature {
        return None;
    }

    let claims = object_members(&payload)?;
    let exp = optional_u64(&claims, "exp").ok()??;
    let nbf = optional_u64(&claims, "nbf").ok()?;
    let iat = optional_u64(&claims, "iat").ok()?;
    let iss = optional_string(&claims, "iss").ok()?;
    // `aud`: with no audience configured, a token that names one is refused; its type is
    // checked either way.
    match optional(&claims, "aud").ok()? {
        None => {}
        Some(_) => return None,
    }
    let sub = optional_string(&claims, "sub").ok()?;
    for name in ["scope"] {
        optional_string(&claims, name).ok()?;
    }
    // The lease ends at `exp` + leeway, which must be a time the system can represent: a
    // later `exp` is refused (fail closed).
    let until = exp.checked_add(LEEWAY)?;
    if until <= NOW || until > i64::MAX as u64 {
        return None;
    }
    if nbf.is_some_and(|t| t > NOW + LEEWAY) || iat.is_some_and(|t| t > NOW + LEEWAY) {
        return None;
    }
    if iss.as_deref() != Some(ISSUER) {
        return None;
    }
    Some(sub)
}

fn expand_times(json: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(json);
    text.replace("$NOW", &NOW.to_string())
        .replace("$EXP", &(NOW + 600).to_string())
        .into_bytes()
}

/// Resolves a token sent in `X-Token` and checks the verdict against the oracle.
fn check(token: &[u8]) -> bool {
    let parts = head(
        Method::GET,
        "/api".parse().expect("uri"),
        Version::HTTP_11,
        [
            (b"host".to_vec(), b"example.com".to_vec()),
            (b"x-token".to_vec(), token.to_vec()),
        ],
    );
    let Some(sent) = parts.headers.get("x-token").map(|v| v.as_bytes().to_vec()) else {
        return false;
    };
    let plain = PLAIN.get_or_init(|| guard(0));
    let cached = CACHED.get_or_init(|| guard(1024));
    let secrets: Vec<&[u8]> = vec![&sent, SECRET, SECRET2];
    let got = resolve(plain, &parts, &secrets);
    let from_cache = resolve(cached, &parts, &secrets);
    assert_eq!(
        got.as_ref().map(|v| v.principal()).map_err(|k| *k),
        from_cache.as_ref().map(|v| v.principal()).map_err(|k| *k),
        "the token cache changed a verdict"
    );
    let trimmed = sent.trim_ascii();
    let expected = std::str::from_utf8(trimmed).ok().and_then(oracle);
    match (&got, &expected) {
        (Ok(verified), Some(sub)) => {
            assert_eq!(&verified.principal().sub, sub);
            assert!(
                verified.lease().expires_at().is_some(),
                "a JWT lease has an end"
            );
        }
        (Err(K::InvalidCredential), None) => {}
        (Err(K::MalformedCredential | K::CredentialTooLong), None) => {
            // The header's own rules (empty, not UTF-8, over the cap) come first.
            assert!(
                trimmed.is_empty()
                    || std::str::from_utf8(trimmed).is_err()
                    || trimmed.len() > axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN
            );
        }
        (Ok(_), None) => panic!("accepted a token the independent check refuses"),
        (Err(kind), Some(_)) => panic!("refused ({kind:?}) a token the independent check accepts"),
        (Err(kind), None) => panic!("undocumented outcome {kind:?}"),
    }
    got.is_ok()
}

fuzz_target!(|input: &[u8]| {
    match input.split_first() {
        Some((b's' | b'k', rest)) => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            let secret = if input[0] == b'k' { SECRET2 } else { SECRET };
            let token = sign(&expand_times(header), &expand_times(claims), secret);
            check(token.as_bytes());
        }
        Some((b'm', rest)) if rest.len() >= 3 => {
            let pos = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let xor = if rest[2] == 0 { 1 } else { rest[2] };
            let token = sign(
                br#"{"alg":"HS256","typ":"JWT"}"#,
                &expand_times(&rest[3..]),
                SECRET,
            );
            check(token.as_bytes());
            let mut flipped = token.into_bytes();
            let i = pos % flipped.len();
            flipped[i] ^= xor;
            assert!(
                !check(&flipped),
                "a token with byte {i} flipped was accepted"
            );
        }
        _ => {
            check(input);
        }
    }
});
