//! Query extraction, form decoding and redaction (DESIGN §3.1). Input: `name\nquery`, or just a
//! query for the default name `session_api_key` (`$KEY`, `$PCTKEY` stand for the valid key,
//! plain and percent-encoded).
//!
//! Properties: the parameter is found exactly as an independent form decoder says (names
//! compared after decoding; `+` is a space; two occurrences are a 400; empty, not UTF-8 or over
//! the cap is a 400); a found value re-encodes to an equivalent query; the query is honoured on
//! upgrades and on REST only when opted in; redaction replaces every value the guard would read,
//! changes nothing else, and reading the redacted query back never yields the credential.
#![no_main]

use axum_keyguard::fuzzing::{find_query, form_decode, redact_query};
use axum_keyguard::{AuthRejectionKind as K, Guard, Keys, Source, SourceKind, REDACTED};
use axum_keyguard_fuzz::{expand, handshake, resolve, rest, KEY};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const CAP: usize = 24;

/// `application/x-www-form-urlencoded` decoding, written independently of the crate's.
fn decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn key_of(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

/// Whether a raw key names parameter `name`: after form decoding, or (the crate's shortcut,
/// visible only for names holding `%` or `+`) spelled exactly as configured.
fn names_match(key: &str, name: &str) -> bool {
    key == name || decode(key.as_bytes()) == name.as_bytes()
}

/// What the guard must read for `name` in `query`.
fn oracle(query: &str, name: &str, cap: usize) -> Result<Option<String>, K> {
    let mut found = pairs(query).filter(|(k, _)| names_match(k, name));
    let Some((_, raw)) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(K::DuplicateCredential);
    }
    if raw.is_empty() {
        return Err(K::MalformedCredential);
    }
    if raw.len() > cap * 3 {
        return Err(K::CredentialTooLong);
    }
    let value = String::from_utf8(decode(raw.as_bytes())).map_err(|_| K::MalformedCredential)?;
    if value.len() > cap {
        return Err(K::CredentialTooLong);
    }
    Ok(Some(value))
}

/// Form encoding: every byte but ASCII alphanumerics percent-encoded, spaces as `+` or `%20`.
fn encode(value: &str, plus: bool) -> String {
    const SET: &AsciiSet = NON_ALPHANUMERIC;
    let encoded = utf8_percent_encode(value, SET).to_string();
    if plus {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

fn check_parser(query: &str, name: &str) {
    for cap in [CAP, axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN] {
        let got = find_query(query, name, cap).map(|v| v.map(|v| v.into_owned()));
        assert_eq!(got, oracle(query, name, cap), "query parameter {name:?}");
        if let Ok(Some(value)) = &got {
            // A found value re-encodes to an equivalent query, alone or among others, with the
            // name plain or encoded. The other pairs' names differ from `name` (a fuzz finding:
            // with `name` = `a` the filler `a=1` was a genuine duplicate).
            let filler = ["a", "b", "c"]
                .into_iter()
                .find(|f| !names_match(f, name))
                .expect("one of three names differs");
            let (other, last) = (format!("{filler}=1&"), format!("&{filler}"));
            for (plus, other) in [(true, other.as_str()), (false, ""), (true, "")] {
                let again = format!(
                    "{other}{}={}{last}",
                    encode(name, plus),
                    encode(value, plus)
                );
                let found = find_query(&again, name, cap).map(|v| v.map(|v| v.into_owned()));
                assert_eq!(found.as_ref(), Ok(&Some(value.clone())), "{again:?}");
            }
            assert_eq!(
                form_decode(&encode(value, true)).as_deref(),
                Some(value.as_str())
            );
        }
    }
    // Redaction: same pairs in the same order; every pair the guard reads becomes
    // `key=[REDACTED]`; any other pair is unchanged (or redacted the same way).
    let redacted = redact_query(query, &[name], REDACTED);
    let before: Vec<&str> = query.split('&').collect();
    let after: Vec<&str> = redacted.split('&').collect();
    assert_eq!(before.len(), after.len(), "redaction changed the pairs");
    for (b, a) in before.iter().zip(&after) {
        let masked = format!("{}={REDACTED}", key_of(b));
        if names_match(key_of(b), name) {
            assert_eq!(*a, masked, "a credential pair was not redacted");
        } else {
            assert!(a == b || *a == masked, "redaction changed another pair");
        }
    }
    // Reading the redacted query back never yields the credential.
    if let Ok(Some(value)) = oracle(query, name, usize::MAX / 4) {
        let back = find_query(&redacted, name, usize::MAX / 4).map(|v| v.map(|v| v.into_owned()));
        assert_eq!(back, Ok(Some(REDACTED.to_owned())));
        if value != REDACTED {
            assert_ne!(back, Ok(Some(value)));
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let input = expand(input);
    let Ok(input) = std::str::from_utf8(&input) else {
        return;
    };
    let (name, query) = input.split_once('\n').unwrap_or(("session_api_key", input));
    check_parser(query, name);

    // End to end, through the public API, when the query is a valid request target.
    let Ok(uri) = format!("/ws?{query}").parse::<http::Uri>() else {
        return;
    };
    let keys = || Keys::new([KEY]).expect("valid key");
    let (Ok(guard), Ok(rest_guard)) = (
        Guard::builder()
            .with_verifier(keys())
            .with_sources([Source::query(name)])
            .build(),
        Guard::builder()
            .with_verifier(keys())
            .with_sources([Source::query(name).on_rest(true)])
            .build(),
    ) else {
        assert!(name.is_empty(), "a query source was refused");
        return;
    };
    let read = uri.query().unwrap_or_default();
    let expected = match oracle(
        read,
        name,
        axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN,
    ) {
        Ok(None) => Err(K::MissingCredential),
        Ok(Some(v)) if v == KEY => Ok(SourceKind::Query),
        Ok(Some(_)) => Err(K::InvalidCredential),
        Err(kind) => Err(kind),
    };
    let decoded: Vec<Vec<u8>> = pairs(read).map(|(_, v)| decode(v.as_bytes())).collect();
    let mut secrets: Vec<&[u8]> = decoded.iter().map(Vec::as_slice).collect();
    secrets.push(read.as_bytes());
    let upgrade = handshake(uri.clone(), []);
    let plain = rest(uri.clone(), []);
    let source = |r: Result<axum_keyguard::Identity<_>, K>| r.map(|v| v.source());
    assert_eq!(source(resolve(&guard, &upgrade, &secrets)), expected);
    assert_eq!(source(resolve(&rest_guard, &upgrade, &secrets)), expected);
    assert_eq!(source(resolve(&rest_guard, &plain, &secrets)), expected);
    // Not opted in: a REST request's query is never read.
    assert_eq!(
        source(resolve(&guard, &plain, &secrets)),
        Err(K::MissingCredential)
    );
    // The guard's redacted URI is the redaction above.
    let shown = guard.redacted_uri(&uri).to_string();
    assert_eq!(
        shown,
        format!("/ws?{}", redact_query(read, &[name], REDACTED))
    );
});
