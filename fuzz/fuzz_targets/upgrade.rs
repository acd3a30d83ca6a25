//! The upgrade classifier (DESIGN §3.1, RFC 6455 §4.1). Input: a request head in HTTP/1.1 text
//! form — a request line `METHOD target HTTP/x.y`, then `name: value` lines (`$KEY`, `$B64KEY`
//! stand for the valid key, plain and base64url; `$P` for the subprotocol prefix).
//!
//! Properties: a request is an upgrade exactly when it is a complete opening handshake — HTTP/1.1
//! `GET` with a `Connection` token `upgrade`, an `Upgrade` token `websocket`, a non-empty
//! `Sec-WebSocket-Key` and `Sec-WebSocket-Version` 13 — or an HTTP/2 `CONNECT`; a request
//! classified REST never has its query or subprotocol credential honoured (always 401 missing
//! with only those sources, even when they carry the valid key); every outcome is documented.
#![no_main]

use std::sync::OnceLock;

use axum_keyguard::fuzzing::classify_upgrade;
use axum_keyguard::{AuthRejectionKind as K, Guard, KeyId, Source, SourceKind};
use axum_keyguard_fuzz::{expand, head, key_guard, resolve};
use http::{Method, Uri, Version};
use libfuzzer_sys::fuzz_target;

/// The Kubernetes subprotocol prefix the guard reads by default.
const DEFAULT_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

fn tokens<'a>(parts: &'a http::request::Parts, name: &str) -> Vec<&'a [u8]> {
    parts
        .headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect()
}

fn has(parts: &http::request::Parts, name: &str, token: &[u8]) -> bool {
    tokens(parts, name)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// RFC 6455 §4.1 (and RFC 8441 for HTTP/2), written independently of the classifier.
fn is_handshake(parts: &http::request::Parts) -> bool {
    if parts.version == Version::HTTP_2 || parts.version == Version::HTTP_3 {
        return parts.method == Method::CONNECT;
    }
    parts.version == Version::HTTP_11
        && parts.method == Method::GET
        && has(parts, "connection", b"upgrade")
        && has(parts, "upgrade", b"websocket")
        && has(parts, "sec-websocket-version", b"13")
        && parts
            .headers
            .get_all("sec-websocket-key")
            .iter()
            .any(|k| !k.as_bytes().trim_ascii().is_empty())
}

fn parse(input: &[u8]) -> http::request::Parts {
    let mut lines = input.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.trim_ascii().split(|&b| b == b' ');
    let method = Method::from_bytes(words.next().unwrap_or_default()).unwrap_or(Method::GET);
    let uri = Uri::try_from(words.next().unwrap_or_default()).unwrap_or(Uri::from_static("/ws"));
    let version = match words.next().unwrap_or_default() {
        b"HTTP/0.9" => Version::HTTP_09,
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
        b"HTTP/3" | b"HTTP/3.0" => Version::HTTP_3,
        _ => Version::HTTP_11,
    };
    let headers = lines.filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        Some((
            line[..colon].to_vec(),
            line[colon + 1..].trim_ascii().to_vec(),
        ))
    });
    head(method, uri, version, headers)
}

static CREDENTIALS_FOR_UPGRADES: OnceLock<Guard<KeyId>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let input = expand(input);
    let input = String::from_utf8_lossy(&input).replace("$P", DEFAULT_SUBPROTOCOL_PREFIX);
    let parts = parse(input.as_bytes());
    let upgrade = classify_upgrade(&parts);
    assert_eq!(
        upgrade,
        is_handshake(&parts),
        "classified as upgrade: {upgrade}"
    );
    assert_eq!(
        upgrade,
        classify_upgrade(&parts.clone()),
        "not deterministic"
    );

    // Only the upgrade-only sources: a REST request can never authenticate with them.
    let guard = CREDENTIALS_FOR_UPGRADES.get_or_init(|| {
        key_guard(vec![
            Source::query("session_api_key"),
            Source::subprotocol(),
        ])
    });
    let query = parts.uri.query().unwrap_or_default().as_bytes().to_vec();
    let protocols: Vec<Vec<u8>> = parts
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let mut secrets: Vec<&[u8]> = vec![&query, axum_keyguard_fuzz::KEY.as_bytes()];
    secrets.extend(protocols.iter().map(Vec::as_slice));
    let result = resolve(guard, &parts, &secrets);
    if upgrade {
        if let Ok(verified) = &result {
            assert!(matches!(
                verified.source(),
                SourceKind::Query | SourceKind::Subprotocol
            ));
        }
    } else {
        let hosts = parts.headers.get_all("host").iter().count();
        let expected = if parts.version == Version::HTTP_11 && hosts != 1 {
            K::InvalidHost
        } else {
            K::MissingCredential
        };
        assert_eq!(
            result.map(|v| v.source()).err(),
            Some(expected),
            "a REST request had its query or subprotocol credential honoured"
        );
    }
});
