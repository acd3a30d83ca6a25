//! The JWKS tests' identity provider (a local axum server publishing a JWK Set and an OpenID
//! configuration, every fetch counted) and signing keys (OpenSSL-made fixtures, signed with
//! jsonwebtoken: an implementation independent of the crate).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/jwks/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A signing key of the tests, with its public JWK as jsonwebtoken derives it.
pub struct TestKey {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
}

impl TestKey {
    pub fn new(file: &str, alg: Algorithm) -> Self {
        let pem = fixture(file);
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no fixture for {other:?}"),
        }
        .expect("fixture key");
        Self { alg, encoding }
    }

    /// The public JWK with `kid` (and the key's `alg` and `use: sig`).
    pub fn jwk(&self, kid: &str) -> Value {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding, self.alg).expect("jwk");
        let mut value = serde_json::to_value(jwk).expect("json");
        value["kid"] = kid.into();
        value["use"] = "sig".into();
        value
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        self.sign_with(header, claims)
    }
}

/// The identity provider: a JWK Set and an OpenID configuration, both changeable, every fetch
/// counted.
#[derive(Clone)]
pub struct Provider {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProviderState>>,
    jwks_hits: Arc<AtomicUsize>,
    pub discovery_hits: Arc<AtomicUsize>,
}

pub struct ProviderState {
    pub keys: Vec<Value>,
    pub status: StatusCode,
    pub body: Option<String>,
    pub cache_control: Option<String>,
    pub delay: Duration,
    pub issuer: Option<String>,
}

impl Provider {
    pub async fn start(keys: Vec<Value>) -> Self {
        let state = Arc::new(Mutex::new(ProviderState {
            keys,
            status: StatusCode::OK,
            body: None,
            cache_control: None,
            delay: Duration::ZERO,
            issuer: None,
        }));
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let discovery_hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let provider = Self {
            addr,
            state,
            jwks_hits,
            discovery_hits,
        };
        let app = Router::new()
            .route("/keys", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .with_state(provider.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        provider
    }

    pub fn url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, change: impl FnOnce(&mut ProviderState)) {
        change(&mut self.state.lock().expect("state"));
    }

    pub fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(p): State<Provider>) -> Response {
    p.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let (status, body, cache_control, delay) = {
        let s = p.state.lock().expect("state");
        let body = s
            .body
            .clone()
            .unwrap_or_else(|| json!({ "keys": s.keys }).to_string());
        (s.status, body, s.cache_control.clone(), s.delay)
    };
    tokio::time::sleep(delay).await;
    let mut response = (status, body).into_response();
    if let Some(cc) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().expect("header"));
    }
    response
}

async fn serve_discovery(State(p): State<Provider>) -> Response {
    p.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = p
        .state
        .lock()
        .expect("state")
        .issuer
        .clone()
        .unwrap_or_else(|| p.issuer());
    json!({ "issuer": issuer, "jwks_uri": p.url() })
        .to_string()
        .into_response()
}
