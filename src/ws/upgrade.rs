//! The WebSocket upgrade extractor.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::authz::{authorize, Declared, PathParams, RequestHead, Require};
use crate::guard::{Guard, Identity};
use crate::handoff::{resolved, Deferred, Outcome, Resolved};
use crate::head::{is_upgrade, Head};
use crate::lease::{LeaseStatus, Recheck};
use crate::limit::PeerKey;
use crate::rejection::close;
use crate::sockets::Shutdown;
use crate::source::offered_protocols;
use crate::ws::first_message::{authenticate, Refused};
use crate::ws::io::Io;
use crate::ws::io::ReadBudget;
use crate::ws::socket::{close_and_drop, close_now, serve, Shared};
use crate::ws::LeasedSocket;

/// Extractor for guarded WebSocket routes: authenticates the handshake, and finishes on the
/// socket what the opt-in modes defer.
///
/// Behind a [`GuardLayer`](crate::GuardLayer) it reads the layer's result; alone it runs the
/// [`Guard<P>`] found in the state, before the upgrade headers are looked at. A rejected handshake
/// gets its HTTP status and [`on_upgrade`](Self::on_upgrade)'s callback never runs. With
/// [first-message auth](crate::GuardBuilder::with_first_message_auth) a credential-less handshake is
/// accepted and the auth frame read first; with
/// [accept-then-close](crate::GuardBuilder::accept_then_close) a bad one is accepted and closed
/// with `4001`.
///
/// ```
/// use axum::{extract::ws::Message, response::Response, routing::any, Router};
/// use axum_keyguard::{ws::GuardedUpgrade, Guard, KeyId, Keys, Source};
///
/// async fn events(ws: GuardedUpgrade<KeyId>) -> Response {
///     ws.protocols(["agent.v1"]).on_upgrade(|mut socket| async move {
///         let hello = format!("hello {}", socket.principal());
///         if socket.send(Message::text(hello)).await.is_err() {
///             return;
///         }
///         while let Some(message) = socket.recv().await {
///             if socket.send(message).await.is_err() {
///                 return;
///             }
///         }
///     })
/// }
///
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["a-long-random-key-1"])?)
///     .add_source(Source::subprotocol())
///     .build()?;
/// let app: Router = Router::new()
///     .route("/sockets/events", any(events))
///     .route_layer(guard.layer());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[must_use]
pub struct GuardedUpgrade<P> {
    on_upgrade: OnUpgrade,
    /// `Sec-WebSocket-Key` of an HTTP/1.1 handshake; `None` for HTTP/2 extended `CONNECT`.
    key: Option<HeaderValue>,
    config: WebSocketConfig,
    on_failed_upgrade: Option<Box<dyn FnOnce(axum::Error) + Send>>,
    guard: Guard<P>,
    outcome: Outcome<P>,
    offered: Vec<String>,
    protocol: Option<String>,
    checks: Option<Checks<P>>,
    /// Whom a refused auth frame is charged to, when the guard has a failure limit.
    peer: Option<PeerKey>,
}

/// The requirements a socket checks after the handshake: after the first message (first-message
/// auth), and whenever its record changes. With the head they are checked against, its
/// credential headers and query removed.
struct Checks<P> {
    list: Vec<Require<P>>,
    head: Parts,
}

impl<P> Checks<P>
where
    P: Clone + Send + Sync + 'static,
{
    /// What `parts`' socket must check, if anything: the requirements declared for the route,
    /// when a first message is still to authenticate or the principal's record can change.
    fn of(parts: &mut Parts, guard: &Guard<P>, outcome: &Outcome<P>) -> Option<Self> {
        let declared = parts.extensions.get::<Declared<P>>()?;
        declared.take_over();
        let needed = match outcome {
            Outcome::Deferred(Deferred::FirstMessage) => true,
            Outcome::Identity(identity) => identity.lease().refresh().is_some(),
            Outcome::Deferred(Deferred::Refuse(_)) | Outcome::Rejected(_) => false,
        };
        if !needed || declared.list.is_empty() {
            return None;
        }
        let list = declared.list.clone();
        let mut head = parts.clone();
        for name in guard.sensitive_headers() {
            head.headers.remove(name);
        }
        head.headers.remove(http::header::AUTHORIZATION);
        head.headers.remove(SEC_WEBSOCKET_PROTOCOL);
        if let Ok(path) = parts.uri.path().parse() {
            head.uri = path;
        }
        Some(Self { list, head })
    }

    /// Checks the requirements for `verified` (after first-message auth).
    fn check(
        &mut self,
        guard: &Guard<P>,
        verified: &Identity<P>,
    ) -> Result<(), crate::AuthRejection> {
        let params = PathParams::read(&mut self.head);
        let head = RequestHead::new(&self.head, &params);
        authorize(guard, verified, &self.list, Some(&head))
    }

    /// Checks again, whenever the record changes, against the record as it is then.
    fn recheck(self, verified: &Identity<P>) -> Option<Recheck> {
        let refresh = verified.lease().refresh()?.clone();
        let Self { list, mut head } = self;
        Some(Box::new(move || {
            // Gone or inactive: the revocation closes the socket (4001).
            let Some(record) = refresh.read() else {
                return true;
            };
            let Ok(principal) = record.downcast::<P>() else {
                return false;
            };
            let params = PathParams::read(&mut head);
            let view = RequestHead::new(&head, &params);
            let met = list
                .iter()
                .all(|r| r.check(&principal, Some(&view)).is_ok());
            if !met {
                tracing::debug!(
                    target: "axum_keyguard::rejection",
                    kind = "insufficient_scope",
                    "an open socket's record no longer meets its route's requirements"
                );
            }
            met
        }))
    }
}

/// Why a request that reached [`GuardedUpgrade`] cannot be upgraded: the same statuses as axum's
/// `WebSocketUpgrade` (`405` for a method other than `GET`, `400` for a handshake that is not
/// complete, `426` for a connection that cannot be upgraded).
fn not_a_handshake(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

impl<S, P> FromRequestParts<S> for GuardedUpgrade<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let Resolved { guard, outcome } = resolved::<P>(&parts.extensions)
            .map_err(IntoResponse::into_response)?
            .clone();
        if let Outcome::Rejected(rejection) = outcome {
            return Err(rejection.into_response());
        }
        // Only what the guard classified as an opening handshake is upgraded: a request it
        // checked by the REST rules never becomes a socket.
        let key = if parts.version <= Version::HTTP_11 {
            if parts.method != Method::GET {
                return Err(not_a_handshake(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "a WebSocket handshake must be a GET request",
                ));
            }
            if !is_upgrade(Head::from(&*parts)) {
                return Err(not_a_handshake(
                    StatusCode::BAD_REQUEST,
                    "not a complete WebSocket handshake",
                ));
            }
            parts.headers.get(SEC_WEBSOCKET_KEY).cloned()
        } else {
            let version_13 = parts
                .headers
                .get(SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v.as_bytes() == b"13");
            if parts.method != Method::CONNECT || !version_13 {
                return Err(not_a_handshake(
                    StatusCode::BAD_REQUEST,
                    "not a complete WebSocket handshake",
                ));
            }
            None
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(not_a_handshake(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        let peer = match outcome {
            Outcome::Deferred(Deferred::FirstMessage) => guard.limited_peer(Head::from(&*parts)),
            _ => None,
        };
        let offered = offered_protocols(&parts.headers)
            .filter_map(|p| std::str::from_utf8(p).ok())
            .map(str::to_owned)
            .collect();
        let checks = Checks::of(parts, &guard, &outcome);
        Ok(Self {
            on_upgrade,
            key,
            config: WebSocketConfig::default(),
            on_failed_upgrade: None,
            guard,
            outcome,
            offered,
            protocol: None,
            checks,
            peer,
        })
    }
}

impl<P> GuardedUpgrade<P>
where
    P: Clone + Send + Sync + 'static,
{
    /// Selects the subprotocol to echo: the first one the client offered that is in `supported`
    /// (the client's order wins). A subprotocol credential is never among the offers.
    pub fn protocols<I, T>(mut self, supported: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let supported: Vec<T> = supported.into_iter().collect();
        self.protocol = self
            .offered
            .iter()
            .find(|offer| supported.iter().any(|s| s.as_ref() == offer.as_str()))
            .cloned();
        self
    }

    /// The read buffer's capacity (default 128 KiB), as axum's `WebSocketUpgrade`.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.config = self.config.read_buffer_size(bytes);
        self
    }

    /// How much is buffered before a write goes to the connection (default 128 KiB; `0` writes
    /// each message at once).
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.config = self.config.write_buffer_size(bytes);
        self
    }

    /// The most the write buffer may hold when writes fail (default unlimited).
    pub fn max_write_buffer_size(mut self, bytes: usize) -> Self {
        self.config = self.config.max_write_buffer_size(bytes);
        self
    }

    /// The largest message accepted (default 64 MiB). Before first-message authentication
    /// completes, the much smaller [`FirstMessage::with_max_len`](crate::ws::FirstMessage::with_max_len)
    /// applies to everything read. A bigger message never reaches the handler: its `recv` ends
    /// and the client gets Close `1009`. (A client that breaks the protocol, an unmasked frame
    /// say, gets `1002`; a text message that is not UTF-8, `1007`.)
    ///
    /// ```
    /// use axum::response::Response;
    /// use axum_keyguard::{ws::GuardedUpgrade, KeyId};
    ///
    /// async fn terminal(ws: GuardedUpgrade<KeyId>) -> Response {
    ///     ws.protocols(["terminal.v1"])
    ///         .max_message_size(64 * 1024)
    ///         .max_frame_size(16 * 1024)
    ///         .write_buffer_size(0)
    ///         .on_failed_upgrade(|error| tracing::warn!(%error, "upgrade failed"))
    ///         .on_upgrade(|mut socket| async move {
    ///             while let Some(message) = socket.recv().await {
    ///                 if socket.send(message).await.is_err() {
    ///                     break;
    ///                 }
    ///             }
    ///         })
    /// }
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config = self.config.max_message_size(Some(bytes));
        self
    }

    /// The largest frame accepted (default 16 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config = self.config.max_frame_size(Some(bytes));
        self
    }

    /// Accepts frames the client did not mask (default `false`, as RFC 6455 requires).
    pub fn accept_unmasked_frames(mut self, accept: bool) -> Self {
        self.config = self.config.accept_unmasked_frames(accept);
        self
    }

    /// Called when the connection cannot be upgraded after the `101` was sent (the client went
    /// away in between, say). By default the failure is logged at `DEBUG`.
    pub fn on_failed_upgrade(
        mut self,
        callback: impl FnOnce(axum::Error) + Send + 'static,
    ) -> Self {
        self.on_failed_upgrade = Some(Box::new(callback));
        self
    }

    /// The handshake's verification, when it carried a valid credential (`None` while first-message
    /// auth is pending, or when accept-then-close will refuse the socket).
    pub fn verified(&self) -> Option<&Identity<P>> {
        match &self.outcome {
            Outcome::Identity(verified) => Some(verified),
            Outcome::Deferred(_) | Outcome::Rejected(_) => None,
        }
    }

    /// Completes the upgrade. `callback` runs with a [`LeasedSocket`] once the socket is
    /// authenticated, and never for a socket that is refused.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(LeasedSocket<P>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self {
            on_upgrade,
            key,
            config,
            on_failed_upgrade,
            guard,
            outcome,
            protocol,
            mut checks,
            peer,
            ..
        } = self;
        let mut response = match &key {
            Some(key) => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(CONNECTION, HeaderValue::from_static("upgrade"))
                .header(UPGRADE, HeaderValue::from_static("websocket"))
                .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
                .body(axum::body::Body::empty())
                .unwrap_or_default(),
            // HTTP/2 (RFC 8441): a 2xx with an empty body accepts the extended CONNECT.
            None => Response::new(axum::body::Body::empty()),
        };
        if let Some(value) = protocol
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok())
        {
            response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
        tokio::spawn(async move {
            // Counted by the shutdown handle from the start, first-message phase included.
            let open = guard
                .socket_options()
                .shutdown
                .as_ref()
                .map(Shutdown::enter);
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    match on_failed_upgrade {
                        Some(callback) => callback(axum::Error::new(error)),
                        None => tracing::debug!(
                            target: "axum_keyguard",
                            %error,
                            "WebSocket upgrade failed"
                        ),
                    }
                    return;
                }
            };
            let options = guard.socket_options();
            let budget = match (&outcome, &options.first_message) {
                (Outcome::Deferred(Deferred::FirstMessage), Some(first)) => {
                    Some(Arc::new(ReadBudget::new(first.max_len)))
                }
                _ => None,
            };
            let io = Io::new(upgraded, budget.clone());
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            let shared = Arc::new(Shared::new(socket, budget));
            let close_timeout = options.close_timeout;
            let verified = match outcome {
                Outcome::Identity(verified) => verified,
                // (A refused outcome never gets here: `from_request_parts` answered it.)
                Outcome::Deferred(Deferred::Refuse(rejection)) | Outcome::Rejected(rejection) => {
                    let (code, reason) = (rejection.close_code(), rejection.close_reason());
                    return close_now(&shared, code, reason, close_timeout).await;
                }
                Outcome::Deferred(Deferred::FirstMessage) => {
                    let mut shutdown = open.as_ref().map(|(_, signal)| signal.clone());
                    let going_away = async {
                        match &mut shutdown {
                            Some(signal) => while signal.changed().await == LeaseStatus::Active {},
                            None => std::future::pending().await,
                        }
                    };
                    let result = tokio::select! {
                        biased;
                        () = going_away => Err(Refused::Close(close::GOING_AWAY, close::SHUTTING_DOWN)),
                        result = authenticate(&shared, &guard, peer) => result,
                    };
                    match result {
                        // What the route requires, now that the principal is known: 4003.
                        Ok(verified) => match checks.as_mut().map(|c| c.check(&guard, &verified)) {
                            Some(Err(rejection)) => {
                                let (code, reason) =
                                    (rejection.close_code(), rejection.close_reason());
                                return close_now(&shared, code, reason, close_timeout).await;
                            }
                            _ => verified,
                        },
                        Err(Refused::Close(code, reason)) => {
                            return close_now(&shared, code, reason, close_timeout).await
                        }
                        Err(Refused::Drop(code, reason)) => {
                            return close_and_drop(&shared, code, reason, close_timeout).await
                        }
                        Err(Refused::Gone) => return,
                    }
                }
            };
            let recheck = checks.and_then(|c| c.recheck(&verified));
            serve(shared, verified, protocol, guard, open, recheck, callback).await;
        });
        response
    }
}

impl<P> fmt::Debug for GuardedUpgrade<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Identity(_) => "verified",
            Outcome::Deferred(Deferred::FirstMessage) => "awaiting first message",
            Outcome::Deferred(Deferred::Refuse(_)) | Outcome::Rejected(_) => "refused",
        };
        f.debug_struct("GuardedUpgrade")
            .field("outcome", &outcome)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}
