//! The tower layer: runs [`Guard::resolve`] before the inner service.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

mod body;
mod future;
mod require;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use require::{RequireFuture, RequireLayer, Required};

use crate::authz::{authorize, Declared, Require};
use crate::guard::{Guard, Identity};
use crate::handoff::{authorize_outcome, hand_over, outcome, Outcome};
use crate::head::{is_upgrade, Head};
use crate::rejection::{AuthRejection, AuthRejectionKind};

impl<P> Guard<P> {
    /// A layer that runs this guard before the inner service. Prefer
    /// [`Router::route_layer`](axum::Router::route_layer), so unknown paths stay `404`.
    pub fn layer(&self) -> GuardLayer<P> {
        GuardLayer::new(self.clone())
    }
}

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
    optional: bool,
    require: Option<Require<P>>,
}

impl<P> GuardLayer<P> {
    /// A layer running `guard`.
    pub fn new(guard: Guard<P>) -> Self {
        Self {
            guard,
            optional: false,
            require: None,
        }
    }

    /// Requires `requirement` of every principal this layer lets through: one that does not
    /// meet it gets `403 insufficient_scope` before the inner service (and before any upgrade).
    /// A second call requires both. For one route of a sub-router, use a
    /// [`RequireLayer`](crate::RequireLayer) on that route.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use axum_keyguard::{Grants, Guard, Require, ScopedKeys};
    ///
    /// let keys = ScopedKeys::new().add_key("k-admin-b81d04f6a2c9", Grants::new().add_roles(["admin"]))?;
    /// let guard = Guard::builder().with_verifier(keys).build()?;
    /// let admin: Router = Router::new()
    ///     .route("/admin/stats", get(|| async { "42" }))
    ///     .route_layer(guard.layer().require(Require::role("admin")?));
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn require(mut self, requirement: Require<P>) -> Self {
        self.require = Some(match self.require.take() {
            Some(first) => first.and(requirement),
            None => requirement,
        });
        self
    }

    /// Lets requests that present no credential through, for handlers that take
    /// `Option<Authenticated<P>>` (`None` for them). A present but bad credential is still
    /// refused here, and so is a forbidden origin.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl<P> Clone for GuardLayer<P> {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.clone(),
            optional: self.optional,
            require: self.require.clone(),
        }
    }
}

impl<P> fmt::Debug for GuardLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &self.guard)
            .field("optional", &self.optional)
            .field("require", &self.require)
            .finish()
    }
}

impl<S, P> Layer<S> for GuardLayer<P> {
    type Service = Guarded<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.guard.clone(),
            optional: self.optional,
            require: self.require.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
///
/// It wraps any inner service whatever its response body, as tower-http's middleware do: its
/// responses carry a [`ResponseBody`], the inner service's body or the rejection's text.
#[must_use]
pub struct Guarded<S, P> {
    inner: S,
    guard: Guard<P>,
    optional: bool,
    require: Option<Require<P>>,
}

impl<S: Clone, P> Clone for Guarded<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
            optional: self.optional,
            require: self.require.clone(),
        }
    }
}

impl<S, P> fmt::Debug for Guarded<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard)
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

impl<S, P, B, ResBody> Service<Request<B>> for Guarded<S, P>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    P: Clone + Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
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
            Some(result) => match admit(
                &self.guard,
                request,
                upgrade,
                self.optional,
                self.require.as_ref(),
                result,
            ) {
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
                ResponseFuture::resolving(
                    resolve,
                    request,
                    inner,
                    self.guard.clone(),
                    upgrade,
                    self.optional,
                    self.require.clone(),
                )
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
    optional: bool,
    require: Option<&Require<P>>,
    result: Result<Identity<P>, AuthRejection>,
) -> Result<(Request<B>, bool), AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    let no_store = result.as_ref().is_ok_and(Identity::is_rest_query);
    let outcome = match outcome(guard, request.headers_mut(), upgrade, result) {
        Outcome::Rejected(rejection)
            if !(optional && rejection.kind() == AuthRejectionKind::MissingCredential) =>
        {
            return Err(rejection)
        }
        outcome => outcome,
    };
    let declared = request.extensions().get::<Declared<P>>().is_some();
    match require {
        // The common case, a REST request and a requirement on the principal alone: checked
        // here, without taking the request apart.
        Some(require) if !declared && !upgrade && !require.needs_head() => match &outcome {
            Outcome::Identity(identity) => authorize(guard, identity, [require], None)?,
            Outcome::Rejected(rejection) => return Err(rejection.clone()),
            Outcome::Deferred(_) => {}
        },
        None if !declared => {}
        _ => {
            let (mut parts, body) = request.into_parts();
            authorize_outcome(guard, &outcome, require, &mut parts, upgrade)?;
            request = Request::from_parts(parts, body);
        }
    }
    hand_over(request.extensions_mut(), guard, outcome);
    Ok((request, no_store))
}
