//! Random bytes in every place a credential or an origin can be: the guard answers each request
//! with exactly 400, 401 or 403 (never 2xx, never 500, never a panic), with the challenge that
//! goes with the status. Deterministic (a fixed-seed xorshift), so a failure reproduces.

use axum::body::Body;
use axum::routing::{any, get};
use axum::Router;
use axum_keyguard::{AuthRejectionKind, Guard, Keys, Source};
use http::{HeaderValue, Request};
use tower::ServiceExt;

const KEY: &str = "the-only-valid-key";

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).expect("small")
    }

    /// Bytes biased toward the interesting ones: separators, quotes, percent signs, high bytes.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b" \t,;=\"%+/.:-_~\\\x7f\x80\xc3\xa9\xff";
        let len = self.below(max_len as u64 + 1);
        (0..len)
            .map(|_| match self.below(4) {
                0 => SPECIAL[self.below(SPECIAL.len() as u64)],
                1 => b"Bearer bearer BASIC k8s.io."[self.below(26)],
                _ => u8::try_from(self.below(256)).expect("byte"),
            })
            .collect()
    }
}

fn app() -> Router {
    let guard = Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .add_source(Source::subprotocol())
        .build()
        .expect("guard");
    Router::new()
        .route("/api", get(|| async { "ok" }))
        .route("/ws", any(|| async { "ok" }))
        .route_layer(guard.layer())
}

#[tokio::test]
async fn random_credentials_and_origins_never_pass_and_never_break() {
    let app = app();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let names = [
        "authorization",
        "x-session-api-key",
        "sec-websocket-protocol",
        "origin",
        "host",
    ];
    let mut by_status = [0usize; 3];
    for round in 0..4000 {
        let upgrade = rng.below(2) == 0;
        let query: String = rng.bytes(40).iter().map(|b| format!("%{b:02X}")).collect();
        let uri = match rng.below(3) {
            0 => format!(
                "/{}?session_api_key={query}",
                if upgrade { "ws" } else { "api" }
            ),
            1 => format!(
                "/{}?session_api_key={query}&session_api_key=x",
                if upgrade { "ws" } else { "api" }
            ),
            _ => format!("/{}", if upgrade { "ws" } else { "api" }),
        };
        let mut request = Request::get(uri.as_str()).header("host", "localhost");
        if upgrade {
            request = request
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", "13");
        }
        let mut sent = Vec::new();
        for _ in 0..rng.below(5) {
            let name = names[rng.below(names.len() as u64)];
            let value = rng.bytes(60);
            if let Ok(header) = HeaderValue::from_bytes(&value) {
                request = request.header(name, header);
                sent.push((name, value));
            }
        }
        let request = request.body(Body::empty()).expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let what = format!("round {round}: {uri} {sent:?}");
        let kind = response.extensions().get::<AuthRejectionKind>().copied();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        match status {
            400 if kind == Some(AuthRejectionKind::InvalidHost) => {
                // A second Host line: refused before any credential work, with no challenge.
                assert_eq!(challenge, None, "{what}");
                by_status[0] += 1;
            }
            400 => {
                assert_eq!(
                    challenge.as_deref(),
                    Some("Bearer realm=\"axum-keyguard\", error=\"invalid_request\""),
                    "{what}"
                );
                by_status[0] += 1;
            }
            401 => {
                let challenge = challenge.expect("every 401 has a challenge");
                assert!(
                    challenge.starts_with("Bearer realm=\"axum-keyguard\""),
                    "{what}"
                );
                by_status[1] += 1;
            }
            403 => {
                assert_eq!(kind, Some(AuthRejectionKind::OriginNotAllowed), "{what}");
                by_status[2] += 1;
            }
            other => panic!("status {other} for {what}"),
        }
        assert!(kind.is_some(), "every refusal carries its kind: {what}");
    }
    // The generator reaches every outcome, so the assertions above were all exercised.
    assert!(by_status.iter().all(|&n| n > 100), "{by_status:?}");
}
