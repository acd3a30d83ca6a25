//! The extractors behind the layer (`Authenticated<P>`, `Identity<P>`), and `WithGuard` for
//! routes without one.

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::guard::{Guard, Identity};
use crate::handoff::{resolve_now, verified, verified_ref};
use crate::rejection::{AuthRejection, AuthRejectionKind};

/// The principal of an authenticated request.
///
/// It reads the result of the [`GuardLayer`](crate::GuardLayer) in front of the route (kept in a
/// private extension type that nothing else can insert), so it needs nothing from the router
/// state: it works in a `Router<AppState>` of any state. On a route without the layer, wrap it in
/// [`WithGuard`] to resolve with the guard in the state instead; without either it fails closed
/// with `500` and logs what is missing.
///
/// `Option<Authenticated<P>>` is `None` only when no credential was presented (behind an
/// [optional](crate::GuardLayer::optional) layer, or in [`WithGuard`]); a present but bad
/// credential is still rejected.
///
/// ```
/// use axum::{routing::get, Router};
/// use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
///
/// #[derive(Clone)]
/// struct AppState {
///     name: &'static str,
/// }
///
/// async fn whoami(Authenticated(key): Authenticated<KeyId>) -> String {
///     key.to_string()
/// }
///
/// async fn greet(user: Option<Authenticated<KeyId>>) -> &'static str {
///     if user.is_some() { "welcome back" } else { "hello, stranger" }
/// }
///
/// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"])?).build()?;
/// let app: Router = Router::new()
///     .route("/whoami", get(whoami))
///     .route_layer(guard.layer())
///     .merge(Router::new().route("/greet", get(greet)).route_layer(guard.layer().optional()))
///     .with_state(AppState { name: "agents" });
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Authenticated<P>(pub P);

impl<S, P> FromRequestParts<S> for Authenticated<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AuthRejection> {
        verified_ref::<P>(&parts.extensions).map(|v| Authenticated(v.principal().clone()))
    }
}

impl<S, P> OptionalFromRequestParts<S> for Authenticated<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, AuthRejection> {
        match verified_ref::<P>(&parts.extensions) {
            Ok(v) => Ok(Some(Authenticated(v.principal().clone()))),
            Err(r) if r.kind() == AuthRejectionKind::MissingCredential => Ok(None),
            Err(r) => Err(r),
        }
    }
}

/// The whole result: principal, source and lease. Works like [`Authenticated`].
impl<S, P> FromRequestParts<S> for Identity<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AuthRejection> {
        verified::<P>(&parts.extensions)
    }
}

/// Runs the [`Guard<P>`] from the router state on a route without a layer, then extracts `E`
/// ([`Authenticated<P>`], `Option<Authenticated<P>>`, [`Identity<P>`] or
/// [`GuardedUpgrade<P>`](crate::ws::GuardedUpgrade)).
///
/// The state must hand out the guard through [`FromRef`] (`#[derive(FromRef)]` on a state struct
/// with a `Guard<P>` field). Behind a layer it reads the layer's result and resolves nothing.
/// Without the layer, extractors run in the order of the handler's arguments: list it first.
///
/// ```
/// use axum::{extract::FromRef, routing::get, Router};
/// use axum_keyguard::{Authenticated, Guard, KeyId, Keys, WithGuard};
///
/// #[derive(Clone, FromRef)]
/// struct AppState {
///     guard: Guard<KeyId>,
/// }
///
/// async fn greet(WithGuard(user): WithGuard<Option<Authenticated<KeyId>>>) -> String {
///     match user {
///         Some(Authenticated(key)) => format!("welcome back, {key}"),
///         None => "hello, stranger".to_owned(),
///     }
/// }
///
/// let guard = Guard::builder().with_verifier(Keys::new(["a-long-random-key-1"])?).build()?;
/// let app: Router = Router::new()
///     .route("/greet", get(greet))
///     .with_state(AppState { guard });
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WithGuard<E>(pub E);

impl<S, E> FromRequestParts<S> for WithGuard<E>
where
    S: Send + Sync,
    E: FromRequestParts<S> + ReadsGuard,
    Guard<E::Principal>: FromRef<S>,
{
    type Rejection = E::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, E::Rejection> {
        resolve_now::<S, E::Principal>(parts, state).await;
        E::from_request_parts(parts, state).await.map(WithGuard)
    }
}

/// The extractors that read a guard's result, and the principal type of that guard.
pub trait ReadsGuard: sealed::Sealed {
    /// The guard's principal.
    type Principal: Clone + Send + Sync + 'static;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! reads_guard {
    ($($ty:ty),*) => {$(
        impl<P: Clone + Send + Sync + 'static> sealed::Sealed for $ty {}
        impl<P: Clone + Send + Sync + 'static> ReadsGuard for $ty {
            type Principal = P;
        }
    )*};
}

reads_guard!(
    Authenticated<P>,
    Option<Authenticated<P>>,
    Identity<P>,
    crate::ws::GuardedUpgrade<P>
);
