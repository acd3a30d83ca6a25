//! The requirement layer: what one route requires of the principal the guard found.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::authz::{authorize, record, Declared, PathParams, RequestHead, Require};
use crate::handoff::{Deferred, Outcome, Resolved};
use crate::head::{is_upgrade, Head};
use crate::layer::ResponseBody;
use crate::rejection::AuthRejection;

impl<P> Require<P> {
    /// This requirement as a layer: [`RequireLayer::new`].
    pub fn layer(&self) -> RequireLayer<P> {
        RequireLayer::new(self.clone())
    }
}

/// Requires a [`Require`] of the principal the guard found, before the inner service: a
/// principal that does not meet it gets `403` with `WWW-Authenticate: Bearer realm="…",
/// error="insufficient_scope", scope="…"`, and the handler (and a WebSocket's `on_upgrade`) never
/// runs.
///
/// Put it on the route with [`Router::route_layer`](axum::Router::route_layer), where axum has
/// matched the path (a requirement on a path parameter needs it). Whether it sits inside or
/// outside the [`GuardLayer`](crate::GuardLayer), the requirement is checked as soon as the
/// principal is known: at once behind the guard layer; by the guard layer itself when that is the
/// inner one; by a [`WithGuard`](crate::WithGuard) extractor on a route without a guard layer
/// (list it first among the handler's arguments); after the first message, for an upgrade under
/// first-message auth. A route where no guard ever runs fails closed: a successful response is
/// replaced with `500`, and an error is logged.
///
/// ```
/// use axum::{routing::get, Router};
/// use axum_keyguard::{Authenticated, Grants, Guard, Require, ScopedKey, ScopedKeys};
///
/// let keys = ScopedKeys::new()
///     .add_key("k-tools-7f3a9c2e0d1b", Grants::new().add_scopes(["tools:read"]))?
///     .add_key("k-admin-b81d04f6a2c9", Grants::new().add_scopes(["tools:read", "tools:write"]))?;
/// let guard = Guard::builder().with_verifier(keys).build()?;
/// let app: Router = Router::new()
///     .route("/tools", get(|Authenticated(key): Authenticated<ScopedKey>| async move {
///         key.to_string()
///     }))
///     .route_layer(Require::<ScopedKey>::scope("tools:read")?.layer())
///     .route("/tools/deploy", get(|| async { "deployed" }).route_layer(
///         Require::<ScopedKey>::scope("tools:write")?.layer(),
///     ))
///     .route_layer(guard.layer());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[must_use]
pub struct RequireLayer<P> {
    require: Require<P>,
}

impl<P> RequireLayer<P> {
    /// A layer requiring `require`.
    pub fn new(require: Require<P>) -> Self {
        Self { require }
    }
}

impl<P> Clone for RequireLayer<P> {
    fn clone(&self) -> Self {
        Self {
            require: self.require.clone(),
        }
    }
}

impl<P> fmt::Debug for RequireLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLayer")
            .field("require", &self.require)
            .finish()
    }
}

impl<S, P> Layer<S> for RequireLayer<P> {
    type Service = Required<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Required {
            inner,
            require: self.require.clone(),
        }
    }
}

/// The service of [`RequireLayer`]. Like [`Guarded`](crate::Guarded), it wraps any inner service
/// whatever its response body.
#[must_use]
pub struct Required<S, P> {
    inner: S,
    require: Require<P>,
}

impl<S: Clone, P> Clone for Required<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            require: self.require.clone(),
        }
    }
}

impl<S, P> fmt::Debug for Required<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Required")
            .field("require", &self.require)
            .finish_non_exhaustive()
    }
}

/// What the layer decided for a request.
enum Decision {
    /// Met, or left for the socket: call the inner service.
    Pass,
    /// Met; an upgrade, whose socket checks it again when its record changes.
    PassAndRecord,
    /// No guard has run yet: leave it for the one that will.
    Leave,
    Refuse(AuthRejection),
}

impl<S, P> Required<S, P>
where
    P: Clone + Send + Sync + 'static,
{
    fn decide(&self, parts: &mut Parts) -> Result<Option<Arc<AtomicBool>>, AuthRejection> {
        let require = &self.require;
        let params = require.needs_head().then(|| PathParams::read(parts));
        let decision = match parts.extensions.get::<Resolved<P>>() {
            Some(Resolved { guard, outcome }) => match outcome {
                Outcome::Identity(identity) => {
                    let head = params.as_ref().map(|p| RequestHead::new(parts, p));
                    match authorize(guard, identity, [require], head.as_ref()) {
                        Ok(()) if is_upgrade(Head::from(&*parts)) => Decision::PassAndRecord,
                        Ok(()) => Decision::Pass,
                        Err(rejection) => Decision::Refuse(rejection),
                    }
                }
                // The socket checks it once the first message has authenticated.
                Outcome::Deferred(Deferred::FirstMessage) => Decision::PassAndRecord,
                // Accepted only to be closed with its own code.
                Outcome::Deferred(Deferred::Refuse(_)) => Decision::Pass,
                // Let through without a principal (an optional guard layer): a requirement
                // needs one.
                Outcome::Rejected(rejection) => Decision::Refuse(rejection.clone()),
            },
            None => Decision::Leave,
        };
        match decision {
            Decision::Pass => Ok(None),
            Decision::PassAndRecord => {
                record(&mut parts.extensions, require);
                Ok(None)
            }
            Decision::Refuse(rejection) => Err(rejection),
            Decision::Leave => {
                let declared = match parts.extensions.get_mut::<Declared<P>>() {
                    Some(declared) => declared,
                    None => {
                        parts.extensions.insert(Declared::<P> {
                            list: Vec::new(),
                            taken: None,
                        });
                        parts
                            .extensions
                            .get_mut::<Declared<P>>()
                            .ok_or_else(AuthRejection::misconfigured)?
                    }
                };
                declared.list.push(require.clone());
                let taken = declared
                    .taken
                    .get_or_insert_with(|| Arc::new(AtomicBool::new(false)));
                Ok(Some(Arc::clone(taken)))
            }
        }
    }
}

impl<S, P, B, ResBody> Service<Request<B>> for Required<S, P>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    P: Clone + Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match self.decide(&mut parts) {
            Ok(taken) => RequireFuture {
                state: State::Calling {
                    future: self.inner.call(Request::from_parts(parts, body)),
                    taken,
                },
            },
            Err(rejection) => RequireFuture {
                state: State::Rejected {
                    rejection: Some(rejection),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`Required`]: the inner service's, or the refusal.
    pub struct RequireFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling {
            #[pin]
            future: F,
            // Set when the requirement was left for a guard that had not run yet.
            taken: Option<Arc<AtomicBool>>,
        },
        Rejected {
            rejection: Option<AuthRejection>,
        },
    }
}

impl<F, ResBody, E> Future for RequireFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { future, taken } => {
                let response = ready!(future.poll(cx))?;
                let unchecked = taken
                    .as_ref()
                    .is_some_and(|taken| !taken.load(Ordering::Acquire));
                if unchecked
                    && !(response.status().is_client_error() || response.status().is_server_error())
                {
                    tracing::error!(
                        target: "axum_keyguard::rejection",
                        "a requirement was never checked: no guard ran for this route. Put \
                         `guard.layer()` on it (`Router::route_layer`), or list a `WithGuard` \
                         extractor first among the handler's arguments"
                    );
                    let rejection = AuthRejection::misconfigured();
                    return Poll::Ready(Ok(rejection.into_response_with(ResponseBody::rejection)));
                }
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            StateProj::Rejected { rejection } => {
                let rejection = rejection
                    .take()
                    .expect("RequireFuture polled after completion");
                Poll::Ready(Ok(rejection.into_response_with(ResponseBody::rejection)))
            }
        }
    }
}

impl<F> fmt::Debug for RequireFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("RequireFuture")
            .field("state", &state)
            .finish()
    }
}
