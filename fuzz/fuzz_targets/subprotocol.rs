//! `Sec-WebSocket-Protocol` with the Kubernetes token entry
//! `base64url.bearer.authorization.k8s.io.<base64url token>` (DESIGN §3.3). Input: the header
//! lines (`$P` stands for the prefix, `$B64KEY` for the encoded valid key).
//!
//! Properties: the token entry alone is a 400, two token entries are a 400, an encoding that is
//! not canonical unpadded base64url of a non-empty UTF-8 value is a 400; an accepted token is
//! exactly the entry's decoding (and re-encodes to it); stripping leaves every other entry in
//! order and no token entry; the subprotocol is honoured on upgrades only.
#![no_main]

use std::sync::OnceLock;

use axum_keyguard::fuzzing::{find_subprotocol, offered_protocols, strip_subprotocol_token};
use axum_keyguard::{AuthRejectionKind as K, Guard, KeyId, Source, SourceKind};
use axum_keyguard_fuzz::{
    decode_canonical, expand, handshake, key_guard, lines, resolve, rest, KEY,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The Kubernetes subprotocol prefix the guard reads by default.
const P: &str = "base64url.bearer.authorization.k8s.io.";

const CAP: usize = 32;

static GUARD: OnceLock<Guard<KeyId>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let input = expand(input);
    let input = {
        let mut out = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix(b"$P") {
                out.extend_from_slice(P.as_bytes());
                rest = r;
            } else {
                out.push(rest[0]);
                rest = &rest[1..];
            }
        }
        out
    };
    let mut headers = HeaderMap::new();
    let mut raw_lines = Vec::new();
    for line in lines(&input) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(SEC_WEBSOCKET_PROTOCOL, value);
            raw_lines.push(line.to_vec());
        }
    }
    // The entries as the grammar defines them: comma-separated, trimmed, empty ones skipped.
    let entries: Vec<&[u8]> = raw_lines
        .iter()
        .flat_map(|l| l.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(offered_protocols(&headers), entries);
    let tokens: Vec<&[u8]> = entries
        .iter()
        .filter_map(|e| e.strip_prefix(P.as_bytes()))
        .collect();
    let others = entries.len() - tokens.len();

    let got = find_subprotocol(&headers, P, CAP);
    match tokens.as_slice() {
        [] => assert_eq!(got, Ok(None)),
        [_, _, ..] => assert_eq!(got, Err(K::DuplicateCredential), "two token entries"),
        [[]] => assert_eq!(got, Ok(None), "empty token entry"),
        [_] if others == 0 => assert_eq!(got, Err(K::MalformedCredential), "token alone"),
        [token] => {
            let acceptable = decode_canonical(token)
                .and_then(|d| String::from_utf8(d).ok())
                .filter(|v| !v.is_empty() && v.len() <= CAP);
            match (&got, &acceptable) {
                (Ok(Some(value)), Some(expected)) => {
                    assert_eq!(value, expected);
                    assert_eq!(URL_SAFE_NO_PAD.encode(value).as_bytes(), *token);
                }
                (Err(K::MalformedCredential | K::CredentialTooLong), None) => {}
                _ => panic!("token entry decoded as {got:?}, expected {acceptable:?}"),
            }
        }
    }

    // Stripping removes the token entries and keeps every other entry, in order, on one line.
    let mut stripped = headers.clone();
    strip_subprotocol_token(&mut stripped, P);
    let kept: Vec<&[u8]> = entries
        .iter()
        .copied()
        .filter(|e| !e.starts_with(P.as_bytes()))
        .collect();
    assert_eq!(offered_protocols(&stripped), kept);
    assert!(stripped.get_all(SEC_WEBSOCKET_PROTOCOL).iter().count() <= 1);
    assert_eq!(
        stripped.contains_key(SEC_WEBSOCKET_PROTOCOL),
        !kept.is_empty()
    );

    // End to end: honoured on upgrades only.
    let guard = GUARD.get_or_init(|| key_guard(vec![Source::subprotocol()]));
    let expected = match find_subprotocol(
        &headers,
        P,
        axum_keyguard::fuzzing::DEFAULT_MAX_CREDENTIAL_LEN,
    ) {
        Ok(None) => Err(K::MissingCredential),
        Ok(Some(v)) if v == KEY => Ok(SourceKind::Subprotocol),
        Ok(Some(_)) => Err(K::InvalidCredential),
        Err(kind) => Err(kind),
    };
    let decoded: Vec<Vec<u8>> = tokens.iter().filter_map(|t| decode_canonical(t)).collect();
    let mut secrets: Vec<&[u8]> = tokens.clone();
    secrets.extend(decoded.iter().map(Vec::as_slice));
    let lines_as_headers = || {
        raw_lines
            .iter()
            .map(|l| (b"sec-websocket-protocol".to_vec(), l.clone()))
            .collect::<Vec<_>>()
    };
    let upgrade = handshake("/ws".parse().expect("uri"), lines_as_headers());
    let got = resolve(guard, &upgrade, &secrets).map(|v| v.source());
    assert_eq!(got, expected);
    let plain = rest("/ws".parse().expect("uri"), lines_as_headers());
    let got = resolve(guard, &plain, &secrets).map(|v| v.source());
    assert_eq!(
        got,
        Err(K::MissingCredential),
        "a REST request used a subprotocol token"
    );
});
