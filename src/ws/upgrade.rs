//! The WebSocket upgrade extractor.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::request::Parts;
use http::HeaderValue;

use crate::extract::{resolve_with_state, Resolved};
use crate::guard::{Deferred, Guard, Outcome, Verified};
use crate::rejection::AuthRejectionKind;
use crate::source::{message_credential, offered_protocols, SourceKind};
use crate::ws::socket::{close_now, serve, Shared};
use crate::ws::LeasedSocket;

/// Extractor for guarded WebSocket routes: authenticates the handshake, and finishes on the
/// socket what the opt-in modes defer.
///
/// Behind a [`GuardLayer`](crate::GuardLayer) it reads the layer's result; alone it runs the
/// [`Guard<P>`] found in the state, before the upgrade headers are looked at. A rejected handshake
/// gets its HTTP status and [`on_upgrade`](Self::on_upgrade)'s callback never runs. With
/// [first-message auth](crate::GuardBuilder::first_message_auth) a credential-less handshake is
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
///     .with_verifier(Keys::new(["k1"])?)
///     .add_source(Source::subprotocol())
///     .build()?;
/// let app: Router = Router::new()
///     .route("/sockets/events", any(events))
///     .route_layer(guard.layer());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[must_use]
pub struct GuardedUpgrade<P> {
    upgrade: WebSocketUpgrade,
    guard: Guard<P>,
    outcome: Outcome<P>,
    offered: Vec<String>,
    protocol: Option<String>,
}

impl<S, P> FromRequestParts<S> for GuardedUpgrade<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Resolved { guard, outcome } = match parts.extensions.get::<Resolved<P>>() {
            Some(resolved) => resolved.clone(),
            None => resolve_with_state(parts, state)
                .await
                .map_err(IntoResponse::into_response)?,
        };
        let offered = offered_protocols(&parts.headers)
            .filter_map(|p| std::str::from_utf8(p).ok())
            .map(str::to_owned)
            .collect();
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            upgrade,
            guard,
            outcome,
            offered,
            protocol: None,
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
        if let Some(value) = self
            .protocol
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok())
        {
            self.upgrade.set_selected_protocol(value);
        }
        self
    }

    /// The handshake's verification, when it carried a valid credential (`None` while first-message
    /// auth is pending, or when accept-then-close will refuse the socket).
    pub fn verified(&self) -> Option<&Verified<P>> {
        match &self.outcome {
            Outcome::Verified(verified) => Some(verified),
            Outcome::Deferred(_) => None,
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
            upgrade,
            guard,
            outcome,
            protocol,
            ..
        } = self;
        upgrade.on_upgrade(move |socket| {
            let shared = Arc::new(Shared::new(socket));
            match outcome {
                // The common case is the serving future itself: nothing else is kept per socket.
                Outcome::Verified(verified) => {
                    Either::Left(serve(shared, verified, protocol, guard, callback))
                }
                Outcome::Deferred(deferred) => Either::Right(Box::pin(async move {
                    let close_timeout = guard.socket_options().close_timeout;
                    let verified = match deferred {
                        Deferred::Refuse(rejection) => {
                            let (code, reason) = (rejection.close_code(), rejection.close_reason());
                            return close_now(&shared, code, reason, close_timeout).await;
                        }
                        Deferred::FirstMessage => match first_message(&shared, &guard).await {
                            Ok(verified) => verified,
                            Err(Some((code, reason))) => {
                                return close_now(&shared, code, reason, close_timeout).await
                            }
                            Err(None) => return,
                        },
                    };
                    serve(shared, verified, protocol, guard, callback).await;
                })),
            }
        })
    }
}

impl<P> fmt::Debug for GuardedUpgrade<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Verified(_) => "verified",
            Outcome::Deferred(Deferred::FirstMessage) => "awaiting first message",
            Outcome::Deferred(Deferred::Refuse(_)) => "refused",
        };
        f.debug_struct("GuardedUpgrade")
            .field("outcome", &outcome)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Reads and verifies the auth frame. `Err(None)`: the client left; `Err(Some(..))`: close with
/// that code and reason.
async fn first_message<P>(
    socket: &Shared,
    guard: &Guard<P>,
) -> Result<Verified<P>, Option<(u16, &'static str)>>
where
    P: Clone + Send + Sync + 'static,
{
    let source = Some(SourceKind::Message);
    let Some(options) = guard.socket_options().first_message.clone() else {
        let rejection = guard.reject(AuthRejectionKind::Misconfigured, source);
        return Err(Some((rejection.close_code(), rejection.close_reason())));
    };
    let deadline = tokio::time::sleep(options.timeout);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            () = &mut deadline => {
                let rejection = guard.reject(AuthRejectionKind::MissingCredential, source);
                return Err(Some((rejection.close_code(), "authentication timeout")));
            }
            message = socket.next_frame() => message,
        };
        let text = match message {
            Some(Message::Text(text)) => text,
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            Some(Message::Binary(_)) => {
                let rejection = guard.reject(AuthRejectionKind::MalformedCredential, source);
                return Err(Some((rejection.close_code(), rejection.close_reason())));
            }
            Some(Message::Close(_)) | None => return Err(None),
        };
        let Some(credential) = message_credential(&text, &options.fields) else {
            let rejection = guard.reject(AuthRejectionKind::MalformedCredential, source);
            return Err(Some((rejection.close_code(), rejection.close_reason())));
        };
        return guard
            .resolve_message(&credential)
            .await
            .map_err(|rejection| Some((rejection.close_code(), rejection.close_reason())));
    }
}
