//! The named header `X-Session-API-Key` (DESIGN §3.1). Input: the header value(s), one per line
//! (`$KEY` stands for the valid key).
//!
//! Properties: a value is trimmed of ASCII whitespace, must be non-empty UTF-8 within the cap,
//! and is otherwise taken verbatim (case-sensitive); two lines are a 400; the guard answers 200
//! only for the valid key, otherwise 400/401 with canonical texts that never hold the value.
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use axum_keyguard::fuzzing::header_value;
use axum_keyguard::{AuthRejectionKind as K, Guard, KeyId, Source, SourceKind};
use axum_keyguard_fuzz::{expand, handshake, key_guard, lines, resolve, rest, KEY};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 48;

/// The rule, written independently: trim, then non-empty, then at most `cap`, then UTF-8.
fn rule(raw: &[u8], cap: usize) -> Result<&str, K> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(K::MalformedCredential);
    };
    let end = raw.len()
        - raw
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let value = &raw[start..end];
    if value.len() > cap {
        return Err(K::CredentialTooLong);
    }
    std::str::from_utf8(value).map_err(|_| K::MalformedCredential)
}

static GUARD: OnceLock<Guard<KeyId>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let input = expand(input);
    let values = lines(&input);
    for v in &values {
        for cap in [CAP, 1, axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN] {
            let got = header_value(v, cap);
            assert_eq!(got.as_deref().map_err(|k| *k), rule(v, cap));
            if let Ok(Cow::Owned(_)) = got {
                panic!("a header value was copied");
            }
        }
    }

    let guard = GUARD.get_or_init(|| {
        key_guard(vec![
            Source::header("X-Session-API-Key").expect("valid name")
        ])
    });
    // Header names are case-insensitive: alternate the spelling of the name per line.
    let names: [&[u8]; 3] = [
        b"x-session-api-key",
        b"X-Session-API-Key",
        b"X-SESSION-API-KEY",
    ];
    let headers: Vec<(Vec<u8>, Vec<u8>)> = values
        .iter()
        .filter(|v| http::HeaderValue::from_bytes(v).is_ok())
        .enumerate()
        .map(|(i, v)| (names[i % 3].to_vec(), v.to_vec()))
        .collect();
    let expected = match headers.as_slice() {
        [] => Err(K::MissingCredential),
        [(_, v)] => match rule(v, axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN) {
            Ok(value) if value == KEY => Ok(SourceKind::Header),
            Ok(_) => Err(K::InvalidCredential),
            Err(kind) => Err(kind),
        },
        _ => Err(K::DuplicateCredential),
    };
    let trimmed: Vec<&[u8]> = values.iter().map(|v| v.trim_ascii()).collect();
    let mut secrets = values.clone();
    secrets.extend(trimmed);
    for parts in [
        rest("/api".parse().expect("uri"), headers.clone()),
        handshake("/ws".parse().expect("uri"), headers.clone()),
    ] {
        assert_eq!(
            resolve(guard, &parts, &secrets).map(|v| v.source()),
            expected
        );
    }
});
