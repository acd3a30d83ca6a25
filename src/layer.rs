//! The tower layer: runs [`Guard::resolve`] before the inner service.

use std::fmt;
use std::task::{Context, Poll};

use axum::response::Response;
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::extract::Resolved;
use crate::future::ResponseFuture;
use crate::guard::{Guard, Verified};
use crate::head::{is_upgrade, Head};
use crate::rejection::AuthRejection;

/// Applies a [`Guard`] to every request of the wrapped service.
///
/// A rejected request gets the guard's response (`400`/`401`/`403`/`503`) and never reaches the
/// inner service, so a WebSocket handler and its `on_upgrade` callback never run for it. An
/// accepted request carries its result to the [`Authenticated`](crate::Authenticated) extractor.
///
/// Use [`Router::route_layer`](axum::Router::route_layer) so that unknown paths stay `404`:
///
/// ```
/// use axum::{routing::get, Router};
/// use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
///
/// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"])?).build()?;
/// let app: Router = Router::new()
///     .route("/api/whoami", get(|Authenticated(key): Authenticated<KeyId>| async move {
///         key.to_string()
///     }))
///     .route_layer(guard.layer())
///     .route("/health", get(|| async { "ok" }));
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[must_use]
pub struct GuardLayer<P> {
    guard: Guard<P>,
}

impl<P> GuardLayer<P> {
    /// A layer running `guard`.
    pub fn new(guard: Guard<P>) -> Self {
        Self { guard }
    }
}

impl<P> Clone for GuardLayer<P> {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.clone(),
        }
    }
}

impl<P> fmt::Debug for GuardLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &self.guard)
            .finish()
    }
}

impl<S, P> Layer<S> for GuardLayer<P> {
    type Service = Guarded<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
#[must_use]
pub struct Guarded<S, P> {
    inner: S,
    guard: Guard<P>,
}

impl<S: Clone, P> Clone for Guarded<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<S, P> fmt::Debug for Guarded<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<S, P, B> Service<Request<B>> for Guarded<S, P>
where
    S: Service<Request<B>, Response = Response> + Clone,
    P: Clone + Send + Sync + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let head = Head::from(&request);
        let upgrade = is_upgrade(head);
        let mut resolve = self.guard.resolve_head(head, upgrade);
        match resolve.take_ready() {
            // Decided synchronously (keys, signed tokens): call the service that was polled ready.
            Some(result) => match admit(&self.guard, request, upgrade, result) {
                Ok((request, no_store)) => {
                    ResponseFuture::calling(self.inner.call(request), no_store)
                }
                Err(rejection) => ResponseFuture::rejected(rejection),
            },
            None => {
                // The verifier needs I/O: keep the service that was polled ready for later and
                // leave a fresh clone in its place, as the tower docs advise:
                // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::resolving(resolve, request, inner, self.guard.clone(), upgrade)
            }
        }
    }
}

/// Decides what happens to a resolved request: passed on with the result for the extractors
/// (and whether its response must not be cached), or answered with the rejection.
pub(crate) fn admit<B, P>(
    guard: &Guard<P>,
    mut request: Request<B>,
    upgrade: bool,
    result: Result<Verified<P>, AuthRejection>,
) -> Result<(Request<B>, bool), AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    let no_store = result.as_ref().is_ok_and(Verified::is_rest_query);
    let outcome = guard.outcome(request.headers_mut(), upgrade, result)?;
    request.extensions_mut().insert(Resolved {
        guard: guard.clone(),
        outcome,
    });
    Ok((request, no_store))
}
