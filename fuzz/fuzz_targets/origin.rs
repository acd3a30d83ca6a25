//! `Origin` / `Host` and the origin policies (DESIGN §3.4). Input: lines `policy
//! same|allow|reject|any`, `allow <origin>`, `origin <value>`, `host <value>`, `authority <value>`
//! (with `version 2`: an HTTP/2 request without `Host`), `require`.
//!
//! Properties: the result is deterministic; no `Origin` passes unless one is required; `Origin:
//! null`, two `Origin` headers or a value that is not `scheme://host[:port]` never pass a checking
//! policy; same-origin passes only an `http`/`https`/`ws`/`wss` origin whose host and effective port
//! are the request's; an allow-list passes only an origin equal to an entry after normalisation,
//! and never a look-alike of an entry (suffix, prefix, path, user info, trailing dot, other
//! scheme, other port); the guard answers 403 exactly when the policy refuses.
#![no_main]

use axum_keyguard::fuzzing::origin_allows;
use axum_keyguard::{AuthRejectionKind as K, Guard, Keys, OriginPolicy, SourceKind};
use axum_keyguard_fuzz::{expand, head, resolve, KEY};
use http::{Method, Uri, Version};
use libfuzzer_sys::fuzz_target;

type Normal = (String, String, Option<u16>);

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]`, written independently: a bracketed IPv6 literal or a name of
/// `ALPHA / DIGIT / "-" / "." / "_"`; the port 1 to 5 digits that fit `u16`.
fn host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !inside
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inside}]"), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return None;
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => None,
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// `scheme://host[:port]`, normalised: lower-case scheme and host, default port dropped.
fn normalise(origin: &str) -> Option<Normal> {
    let (scheme, authority) = origin.split_once("://")?;
    let mut chars = scheme.chars();
    if !chars.next()?.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = host_port(authority)?;
    let port = port.filter(|&p| Some(p) != default_port(&scheme));
    Some((scheme, host, port))
}

fn lookalikes(entry: &str) -> Vec<String> {
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Vec::new();
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, format!(":{p}")),
        _ => (rest, String::new()),
    };
    let other_scheme = if scheme.eq_ignore_ascii_case("https") {
        "http"
    } else {
        "https"
    };
    vec![
        format!("{scheme}://{host}.evil.com{port}"),
        format!("{scheme}://{host}evil.com{port}"),
        format!("{scheme}://evil{host}{port}"),
        format!("{scheme}://evil.{host}{port}"),
        format!("{scheme}://{host}.{port}"),
        format!("{scheme}://{host}{port}/"),
        format!("{scheme}://{host}{port}/path"),
        format!("{scheme}://{host}{port}?q"),
        format!("{scheme}://{host}{port}#f"),
        format!("{scheme}://user@{host}{port}"),
        format!("{scheme}://{host}:1{}", port.trim_start_matches(':')),
        format!("{scheme}://{host}:8443"),
        format!("{other_scheme}://{host}{port}"),
        format!("{scheme}s://{host}{port}"),
        format!("{scheme}://{host}{port} "),
        format!("{scheme}:/{host}{port}"),
        format!("{host}{port}"),
        "null".to_owned(),
    ]
}

struct Case {
    policy: &'static str,
    allow: Vec<String>,
    origins: Vec<Vec<u8>>,
    hosts: Vec<Vec<u8>>,
    authority: Option<String>,
    http2: bool,
    require: bool,
}

fn parse_case(input: &[u8]) -> Case {
    let mut case = Case {
        policy: "same",
        allow: Vec::new(),
        origins: Vec::new(),
        hosts: Vec::new(),
        authority: None,
        http2: false,
        require: false,
    };
    for line in input.split(|&b| b == b'\n') {
        let (key, value) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        match key {
            b"policy" => {
                case.policy = match value {
                    b"allow" => "allow",
                    b"reject" => "reject",
                    b"any" => "any",
                    _ => "same",
                }
            }
            b"allow" => case.allow.push(String::from_utf8_lossy(value).into_owned()),
            b"origin" => case.origins.push(value.to_vec()),
            b"host" => case.hosts.push(value.to_vec()),
            b"authority" => case.authority = Some(String::from_utf8_lossy(value).into_owned()),
            b"version" => case.http2 = value == b"2",
            b"require" => case.require = true,
            _ => {}
        }
    }
    case
}

fn request(case: &Case, origins: &[Vec<u8>]) -> http::request::Parts {
    let uri: Uri = case
        .authority
        .as_ref()
        .and_then(|a| format!("https://{a}/ws").parse().ok())
        .unwrap_or_else(|| Uri::from_static("/ws"));
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"connection".to_vec(), b"Upgrade".to_vec()),
        (b"upgrade".to_vec(), b"websocket".to_vec()),
        (
            b"sec-websocket-key".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZQ==".to_vec(),
        ),
        (b"sec-websocket-version".to_vec(), b"13".to_vec()),
        (b"x-session-api-key".to_vec(), KEY.as_bytes().to_vec()),
    ];
    headers.extend(case.hosts.iter().map(|h| (b"host".to_vec(), h.clone())));
    headers.extend(origins.iter().map(|o| (b"origin".to_vec(), o.clone())));
    let (method, version) = if case.http2 {
        (Method::CONNECT, Version::HTTP_2)
    } else {
        (Method::GET, Version::HTTP_11)
    };
    head(method, uri, version, headers)
}

/// The request's own authority as the policy must read it: one `Host`, or (none) the URI's.
fn request_authority(parts: &http::request::Parts) -> Option<String> {
    let hosts: Vec<_> = parts.headers.get_all("host").iter().collect();
    match hosts.as_slice() {
        [one] => one.to_str().ok().map(str::to_owned),
        [] => parts.uri.authority().map(|a| a.as_str().to_owned()),
        _ => None,
    }
}

fn check(policy: &OriginPolicy, kind: &str, case: &Case, allowed: &[Normal], origins: &[Vec<u8>]) {
    let parts = request(case, origins);
    let sent: Vec<&[u8]> = parts
        .headers
        .get_all("origin")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let got = origin_allows(policy, &parts, case.require);
    assert_eq!(
        got,
        origin_allows(policy, &parts.clone(), case.require),
        "not deterministic"
    );
    if sent.is_empty() {
        assert_eq!(got, !case.require, "a request without Origin");
    } else if kind != "any" && got {
        let [origin] = sent.as_slice() else {
            panic!("two Origin headers passed");
        };
        assert_ne!(*origin, b"null", "Origin: null passed");
        let origin = std::str::from_utf8(origin).expect("a passing origin is UTF-8");
        let normal = normalise(origin).expect("a passing origin is scheme://host[:port]");
        match kind {
            "same" => {
                assert!(
                    ["http", "https", "ws", "wss"].contains(&normal.0.as_str()),
                    "same-origin passed scheme {:?}",
                    normal.0
                );
                let authority = request_authority(&parts).expect("a request authority");
                let (host, port) = host_port(&authority).expect("a valid request authority");
                let port = port.filter(|&p| Some(p) != default_port(&normal.0));
                assert_eq!(
                    (normal.1, normal.2),
                    (host, port),
                    "same-origin passed another host"
                );
            }
            "allow" => assert!(allowed.contains(&normal), "allow-list passed {normal:?}"),
            _ => panic!("reject-any passed an origin"),
        }
    }
    // The guard agrees with the policy, on the upgrade it checks.
    let guard = Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("valid key"))
        .with_origin_policy(policy.clone())
        .require_origin(case.require)
        .build()
        .expect("valid guard");
    let secrets: Vec<&[u8]> = vec![KEY.as_bytes()];
    let hosts = parts.headers.get_all("host").iter().count();
    let expected = if parts.version == Version::HTTP_11 && hosts != 1 {
        // An HTTP/1.1 request needs exactly one Host, checked before the origin.
        Err(K::InvalidHost)
    } else if got {
        Ok(SourceKind::Header)
    } else {
        Err(K::OriginNotAllowed)
    };
    let upgrade = axum_keyguard::fuzzing::classify_upgrade(&parts);
    let result = resolve(&guard, &parts, &secrets).map(|v| v.source());
    assert!(upgrade, "the test request is a complete handshake");
    assert_eq!(result, expected);
}

fuzz_target!(|input: &[u8]| {
    let case = parse_case(&expand(input));
    let (policy, allowed) = match case.policy {
        "allow" => match OriginPolicy::allow_list(&case.allow) {
            Ok(policy) => {
                let normal: Vec<Normal> = case
                    .allow
                    .iter()
                    .map(|e| normalise(e).expect("an accepted allow-list entry is an origin"))
                    .collect();
                (policy, normal)
            }
            Err(_) => {
                assert!(
                    case.allow.is_empty() || case.allow.iter().any(|e| normalise(e).is_none()),
                    "a valid allow-list was refused"
                );
                return;
            }
        },
        "reject" => (OriginPolicy::reject_any(), Vec::new()),
        "any" => (OriginPolicy::any(), Vec::new()),
        _ => (OriginPolicy::same_origin(), Vec::new()),
    };
    check(&policy, case.policy, &case, &allowed, &case.origins);
    // Every look-alike of an allowed entry is refused (unless it is itself allowed).
    if case.policy == "allow" {
        for entry in &case.allow {
            for fake in lookalikes(entry) {
                if normalise(&fake).is_some_and(|n| allowed.contains(&n)) {
                    continue;
                }
                let parts = request(&case, &[fake.clone().into_bytes()]);
                if parts.headers.get_all("origin").iter().count() == 1 {
                    assert!(
                        !origin_allows(&policy, &parts, case.require),
                        "look-alike {fake:?} passed"
                    );
                }
            }
        }
    }
    // Origin: null never passes a checking policy.
    if case.policy != "any" {
        let parts = request(&case, &[b"null".to_vec()]);
        assert!(!origin_allows(&policy, &parts, case.require));
    }
});
