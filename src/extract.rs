//! The `Authenticated<P>` and `Verified<P>` extractors.

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::guard::{Deferred, Guard, Outcome, Verified};
use crate::head::{is_upgrade, Head};
use crate::rejection::{AuthRejection, AuthRejectionKind};

/// The principal of an authenticated request.
///
/// Behind a [`GuardLayer`](crate::GuardLayer) it reads the layer's result (kept in a private
/// extension type that nothing else can insert). Without the layer it resolves the request itself
/// with the [`Guard<P>`] it finds in the router state through [`FromRef`]; both give the same
/// answers because both run [`Guard::resolve`].
///
/// `Option<Authenticated<P>>` is `None` only when no credential was presented; a present but bad
/// credential is still rejected.
///
/// ```
/// use axum::{extract::FromRef, routing::get, Router};
/// use axum_keyguard::{Authenticated, Guard, KeyId, Keys};
///
/// #[derive(Clone, FromRef)]
/// struct AppState {
///     guard: Guard<KeyId>,
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
///     .route("/greet", get(greet))
///     .with_state(AppState { guard });
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
///
/// In a router without state (`Router<()>`) the extractor has no guard of its own: behind the
/// layer it works, and without it every request is a `500` (a misconfiguration, never a pass).
/// In a router with state of your own, put the guard in that state (as above, with
/// `#[derive(FromRef)]`) even when you also use the layer: the extractor must be able to find a
/// guard for the requests the layer does not cover.
///
/// Without the layer, extractors run in the order of the handler's arguments: list
/// `Authenticated` before `WebSocketUpgrade`, so that a bad credential is answered with its `401`
/// rather than with an upgrade-header error.
#[derive(Debug, Clone)]
#[must_use]
pub struct Authenticated<P>(pub P);

/// The guard's result in the request extensions, with the guard that produced it. Private, so
/// only this crate can insert it.
#[derive(Clone)]
pub(crate) struct Resolved<P> {
    pub(crate) guard: Guard<P>,
    pub(crate) outcome: Outcome<P>,
}

/// The guard's result for this request: from the layer (or an earlier extractor), or resolved now
/// with the state's guard. A handshake deferred to the socket has no principal yet: here it is
/// rejected as the handshake would have been.
async fn verified<S, P>(parts: &mut Parts, state: &S) -> Result<Verified<P>, AuthRejection>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    if let Some(Resolved { guard, outcome }) = parts.extensions.get::<Resolved<P>>() {
        return match outcome {
            Outcome::Verified(verified) => Ok(verified.clone()),
            Outcome::Deferred(Deferred::FirstMessage) => {
                Err(guard.reject(AuthRejectionKind::MissingCredential, None))
            }
            Outcome::Deferred(Deferred::Refuse(rejection)) => Err(rejection.clone()),
        };
    }
    match resolve_with_state(parts, state).await?.outcome {
        Outcome::Verified(verified) => Ok(verified),
        // Only an upgrade is ever deferred, and this extractor cannot finish it on the socket.
        Outcome::Deferred(Deferred::FirstMessage) => {
            Err(Guard::<P>::from_ref(state).reject(AuthRejectionKind::MissingCredential, None))
        }
        Outcome::Deferred(Deferred::Refuse(rejection)) => Err(rejection),
    }
}

/// No layer ran: resolves the request with the guard in the state, and keeps the result in the
/// extensions for any later extractor of the same request.
pub(crate) async fn resolve_with_state<S, P>(
    parts: &mut Parts,
    state: &S,
) -> Result<Resolved<P>, AuthRejection>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    let guard = Guard::<P>::from_ref(state);
    let head = Head::from(&*parts);
    let upgrade = is_upgrade(head);
    let result = guard.resolve_head(head, upgrade).await;
    let outcome = guard.outcome(&mut parts.headers, upgrade, result)?;
    let resolved = Resolved { guard, outcome };
    parts.extensions.insert(resolved.clone());
    Ok(resolved)
}

impl<S, P> FromRequestParts<S> for Authenticated<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        verified(parts, state)
            .await
            .map(|v| Authenticated(v.into_principal()))
    }
}

impl<S, P> OptionalFromRequestParts<S> for Authenticated<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match verified(parts, state).await {
            Ok(v) => Ok(Some(Authenticated(v.into_principal()))),
            Err(r) if r.kind() == AuthRejectionKind::MissingCredential => Ok(None),
            Err(r) => Err(r),
        }
    }
}

/// The whole result: principal, source and lease. Works like [`Authenticated`].
impl<S, P> FromRequestParts<S> for Verified<P>
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        verified(parts, state).await
    }
}

/// A router without state has no guard: the extractor then relies on the layer, and without the
/// layer it fails closed with `500`.
impl<P> FromRef<()> for Guard<P> {
    fn from_ref((): &()) -> Self {
        Guard::unconfigured()
    }
}
