//! Getting a key set (or a discovery document) over the network: the pluggable fetch and the
//! default HTTP/1.1 client.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

/// The future a [`JwksFetch`] returns.
pub type FetchFuture = Pin<Box<dyn Future<Output = Result<Response<Bytes>, JwksError>> + Send>>;

/// Fetches a JWK Set or an OpenID discovery document: the transport behind [`Jwks`](super::Jwks).
///
/// The default, [`HttpFetch`], speaks HTTP/1.1 to `http://` URLs. Bring your own (say, over your
/// application's TLS client) by implementing this trait. An implementation must:
///
/// - send a plain `GET` to `uri` and return the response as it came (status and headers
///   included: the verifier reads `Cache-Control`), **without following redirects**;
/// - stop reading, and fail with [`JwksErrorKind::TooLarge`], once the body passes `max_bytes`;
/// - give up within its own timeout (the verifier also bounds the whole fetch).
///
/// ```
/// use axum_keyguard::{FetchFuture, JwksError, JwksFetch};
/// use bytes::Bytes;
/// use http::{Response, Uri};
///
/// /// Serves a fixed set: for tests, or keys shipped with the application.
/// struct Fixed(&'static str);
///
/// impl JwksFetch for Fixed {
///     fn fetch(&self, _uri: &Uri, _max_bytes: usize) -> FetchFuture {
///         let body = Bytes::from_static(self.0.as_bytes());
///         Box::pin(async move { Ok(Response::new(body)) })
///     }
/// }
/// ```
pub trait JwksFetch: Send + Sync + 'static {
    /// Fetches `uri`, reading at most `max_bytes` of body.
    fn fetch(&self, uri: &Uri, max_bytes: usize) -> FetchFuture;
}

/// Why fetching or reading a key set failed. Shown without the URL's userinfo.
#[derive(Debug)]
pub struct JwksError {
    kind: JwksErrorKind,
    detail: String,
}

/// The kind of a [`JwksError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksErrorKind {
    /// The URL cannot be fetched by this fetcher (scheme, missing host, plain HTTP to a host
    /// that is not loopback without [`HttpFetch::allow_plain_http`]).
    Url,
    /// Connecting, sending or reading failed.
    Transport,
    /// The fetch did not finish within the timeout.
    Timeout,
    /// The response was not `200 OK` (redirects are not followed).
    Status,
    /// The body was larger than the configured cap.
    TooLarge,
    /// The body is not a JWK Set (or discovery document) as RFC 7517 (or OpenID Connect
    /// Discovery 1.0) defines it.
    Format,
    /// The discovery document's `issuer` is not the configured issuer.
    Issuer,
    /// An option of the [`JwksBuilder`](super::JwksBuilder) is out of range.
    Config,
}

impl JwksError {
    /// An error of `kind`; `detail` must hold nothing secret (it is shown and logged).
    pub fn new(kind: JwksErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> JwksErrorKind {
        self.kind
    }
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for JwksError {}

/// A URI as it may be shown: scheme, host, port and path, never userinfo or query.
pub(crate) struct Shown<'a>(pub(crate) &'a Uri);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        write!(
            f,
            "{}://{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?")
        )?;
        if let Some(port) = uri.port_u16() {
            write!(f, ":{port}")?;
        }
        f.write_str(uri.path())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The default fetcher: one HTTP/1.1 connection per fetch (fetches are rare), over hyper.
///
/// It speaks plain HTTP, which is safe only where nobody can sit between the server and the
/// provider: by default it fetches only from loopback addresses (`127.0.0.0/8`, `::1`,
/// `localhost`), a sidecar or a local proxy that does TLS. For `https://` providers implement
/// [`JwksFetch`] over your TLS client. Redirects are not followed.
#[derive(Debug, Clone, Default)]
pub struct HttpFetch {
    plain_http_anywhere: bool,
}

impl HttpFetch {
    /// A fetcher for loopback `http://` URLs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also fetches plain `http://` URLs from hosts that are not loopback, for networks where the
    /// path to the provider is trusted (a service mesh with its own TLS). Anyone on the path can
    /// then substitute keys.
    #[must_use]
    pub fn allow_plain_http(mut self) -> Self {
        self.plain_http_anywhere = true;
        self
    }

    /// Whether this fetcher can fetch `uri`.
    pub(crate) fn check(&self, uri: &Uri) -> Result<(), JwksError> {
        if uri.scheme_str() != Some("http") {
            return Err(JwksError::new(
                JwksErrorKind::Url,
                format!(
                    "{}: the built-in fetcher speaks plain http only; use a JwksFetch over a TLS client",
                    Shown(uri)
                ),
            ));
        }
        let host = uri.host().unwrap_or_default();
        if host.is_empty() {
            return Err(JwksError::new(JwksErrorKind::Url, "the URL has no host"));
        }
        if !self.plain_http_anywhere && !is_loopback(host) {
            return Err(JwksError::new(
                JwksErrorKind::Url,
                format!(
                    "{}: plain http to a host that is not loopback (allow it with HttpFetch::allow_plain_http)",
                    Shown(uri)
                ),
            ));
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl JwksFetch for HttpFetch {
    fn fetch(&self, uri: &Uri, max_bytes: usize) -> FetchFuture {
        let checked = self.check(uri).map(|()| uri.clone());
        Box::pin(async move { get(checked?, max_bytes).await })
    }
}

fn transport(uri: &Uri, what: &str, error: impl fmt::Display) -> JwksError {
    JwksError::new(
        JwksErrorKind::Transport,
        format!("{}: {what}: {error}", Shown(uri)),
    )
}

async fn get(uri: Uri, max_bytes: usize) -> Result<Response<Bytes>, JwksError> {
    let host = uri.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| transport(&uri, "connect", e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(&uri, "handshake", e))?;
    // The connection ends when `sender` is dropped, at the end of this fetch.
    tokio::spawn(connection);
    let authority = match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "axum-keyguard")
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(&uri, "request", e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(&uri, "send", e))?;
    if response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(too_large(&uri, max_bytes));
    }
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large(&uri, max_bytes)
            } else {
                transport(&uri, "read", e)
            }
        })?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

pub(super) fn too_large(uri: &Uri, max_bytes: usize) -> JwksError {
    JwksError::new(
        JwksErrorKind::TooLarge,
        format!("{}: the body is larger than {max_bytes} bytes", Shown(uri)),
    )
}

/// Checks a fetched response: `200`, body within the cap. Returns the body and the
/// `Cache-Control` lifetime, if any (`no-cache`/`no-store` count as zero).
pub(super) fn accept(
    uri: &Uri,
    response: Response<Bytes>,
    max_bytes: usize,
) -> Result<(Bytes, Option<Duration>), JwksError> {
    if response.status() != StatusCode::OK {
        return Err(JwksError::new(
            JwksErrorKind::Status,
            format!("{}: status {}", Shown(uri), response.status().as_u16()),
        ));
    }
    let max_age = response
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|directive| {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            let secs = lower.strip_prefix("max-age=")?;
            secs.trim_matches('"').parse().ok().map(Duration::from_secs)
        });
    let body = response.into_body();
    if body.len() > max_bytes {
        return Err(too_large(uri, max_bytes));
    }
    Ok((body, max_age))
}
