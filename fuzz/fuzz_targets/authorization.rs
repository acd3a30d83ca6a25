//! `Authorization: Bearer` (RFC 6750 §2.1, DESIGN §3.1). Input: the header value(s), one per
//! line (`$KEY` stands for the valid key).
//!
//! Properties: the parser's outcome is exactly what the grammar `scheme 1*SP token68 *WS`
//! (scheme `Bearer`, any case) says; an accepted token re-encodes to an equivalent header; the
//! guard answers 200 only for the valid key, otherwise the documented 400/401 with canonical
//! rejection texts that never contain the credential; two lines are a 400.
#![no_main]

use std::sync::OnceLock;

use axum_keyguard::fuzzing::parse_bearer;
use axum_keyguard::{AuthRejectionKind as K, Guard, KeyId, Source, SourceKind};
use axum_keyguard_fuzz::{expand, handshake, key_guard, lines, resolve, rest, KEY};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 64;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68(t: &[u8]) -> bool {
    let body = t.len() - t.iter().rev().take_while(|&&b| b == b'=').count();
    body > 0
        && t[..body]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Whether `v` names the Bearer scheme: `bearer` (any case) not followed by another tchar.
fn is_bearer_scheme(v: &[u8]) -> bool {
    v.len() >= 6 && v[..6].eq_ignore_ascii_case(b"bearer") && v.get(6).is_none_or(|&b| !is_tchar(b))
}

/// The grammar, written independently of the parser: `bearer 1*SP token68 *WS`.
fn grammar(v: &[u8]) -> Option<&[u8]> {
    if !is_bearer_scheme(v) {
        return None;
    }
    let rest = &v[6..];
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    if spaces == 0 {
        return None;
    }
    let rest = &rest[spaces..];
    let end = rest.len()
        - rest
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let token = &rest[..end];
    is_token68(token).then_some(token)
}

fn check_parser(v: &[u8]) {
    let parsed = parse_bearer(v, CAP);
    match (&parsed, grammar(v)) {
        (Ok(None), _) => assert!(!is_bearer_scheme(v), "a Bearer value was ignored"),
        (Ok(Some(token)), Some(expected)) => {
            assert_eq!(token.as_bytes(), expected);
            assert!(token.len() <= CAP);
            // Re-encoding gives the same token, whatever the scheme's case and spacing.
            for scheme in ["Bearer ", "bearer ", "BEARER    ", "bEaReR "] {
                let again = format!("{scheme}{token}");
                assert_eq!(parse_bearer(again.as_bytes(), CAP), Ok(Some(*token)));
                let trailing = format!("{again} \t ");
                assert_eq!(parse_bearer(trailing.as_bytes(), CAP), Ok(Some(*token)));
            }
        }
        (Ok(Some(_)), None) => panic!("accepted a value outside the grammar"),
        (Err(K::CredentialTooLong), _) => {
            assert!(is_bearer_scheme(v) && v.get(6) == Some(&b' '));
            let rest = &v[7..];
            let token = rest[rest.iter().take_while(|&&b| b == b' ').count()..].trim_ascii_end();
            assert!(
                token.len() > CAP,
                "too long, but only {} bytes",
                token.len()
            );
        }
        (Err(K::MalformedCredential), Some(token)) => {
            panic!(
                "refused a grammatical value (token of {} bytes)",
                token.len()
            )
        }
        (Err(K::MalformedCredential), None) => assert!(is_bearer_scheme(v)),
        (Err(other), _) => panic!("undocumented parser outcome {other:?}"),
    }
    // A grammatical token within the cap is always accepted.
    if let Some(token) = grammar(v) {
        if token.len() <= CAP {
            assert_eq!(parsed, Ok(std::str::from_utf8(token).ok()));
        }
    }
}

static GUARD: OnceLock<Guard<KeyId>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let input = expand(input);
    let values: Vec<&[u8]> = lines(&input);
    for v in &values {
        check_parser(v);
    }

    let guard = GUARD.get_or_init(|| key_guard(vec![Source::bearer()]));
    let headers: Vec<(Vec<u8>, Vec<u8>)> = values
        .iter()
        .filter(|v| http::HeaderValue::from_bytes(v).is_ok())
        .map(|v| (b"authorization".to_vec(), v.to_vec()))
        .collect();
    let expected = match headers.as_slice() {
        [] => Err(K::MissingCredential),
        [(_, v)] => match parse_bearer(v, axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN) {
            Ok(None) => Err(K::MissingCredential),
            Ok(Some(token)) if token == KEY => Ok(SourceKind::Bearer),
            Ok(Some(_)) => Err(K::InvalidCredential),
            Err(kind) => Err(kind),
        },
        _ => Err(K::DuplicateCredential),
    };
    let mut secrets: Vec<&[u8]> = values.clone();
    let tokens: Vec<&[u8]> = values.iter().filter_map(|v| grammar(v)).collect();
    secrets.extend(tokens);
    for parts in [
        rest("/api".parse().expect("uri"), headers.clone()),
        handshake("/ws".parse().expect("uri"), headers.clone()),
    ] {
        let got = resolve(guard, &parts, &secrets).map(|v| v.source());
        assert_eq!(got, expected);
    }
});
