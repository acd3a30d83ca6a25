//! The one hand-off between the core and the surfaces: what the layer (or [`WithGuard`]) leaves
//! in the request, and the function every extractor reads it with.
//!
//! [`WithGuard`]: crate::WithGuard

use axum::extract::FromRef;
use http::request::Parts;
use http::{Extensions, HeaderMap};

use crate::authz::{authorize, record, Declared, PathParams, RequestHead, Require};
use crate::guard::{Guard, Identity};
use crate::head::{is_upgrade, Head};
use crate::rejection::{AuthRejection, AuthRejectionKind};
use crate::source::strip_credential;

/// What the guard decided for a request.
#[derive(Clone)]
pub(crate) enum Outcome<P> {
    Identity(Identity<P>),
    /// An upgrade accepted without a principal yet, finished on the socket.
    Deferred(Deferred),
    /// Refused. The layer answers such requests itself, except a missing credential behind an
    /// [optional](crate::GuardLayer::optional) layer, and [`WithGuard`](crate::WithGuard) leaves
    /// every refusal to the extractor it wraps.
    Rejected(AuthRejection),
}

/// What happens to an upgrade whose handshake did not authenticate, in the opt-in modes.
#[derive(Debug, Clone)]
pub(crate) enum Deferred {
    /// No credential, first-message auth on: accept, then read the auth frame.
    FirstMessage,
    /// A bad credential, accept-then-close on: accept, then close with the rejection's code.
    Refuse(AuthRejection),
}

/// The guard's result in the request extensions, with the guard that produced it. Private, so
/// only this crate can insert it.
#[derive(Clone)]
pub(crate) struct Resolved<P> {
    pub(crate) guard: Guard<P>,
    pub(crate) outcome: Outcome<P>,
}

/// Whether an upgrade that failed with `rejection` is accepted anyway, to be finished on the
/// socket (first-message auth, accept-then-close). An origin or `Host` refusal never is, nor a
/// limited peer (`429`: no `101` for it).
fn defer<P>(guard: &Guard<P>, upgrade: bool, rejection: &AuthRejection) -> Option<Deferred> {
    let options = guard.socket_options();
    if !upgrade {
        return None;
    }
    match rejection.kind() {
        AuthRejectionKind::OriginNotAllowed
        | AuthRejectionKind::Misconfigured
        | AuthRejectionKind::InvalidHost
        | AuthRejectionKind::RateLimited => None,
        AuthRejectionKind::MissingCredential if options.first_message.is_some() => {
            Some(Deferred::FirstMessage)
        }
        _ if options.accept_then_close => Some(Deferred::Refuse(rejection.clone())),
        _ => None,
    }
}

/// What a resolution means for the request: verified (with the credential stripped from
/// `headers` as the guard asks), deferred to the socket, or refused.
pub(crate) fn outcome<P>(
    guard: &Guard<P>,
    headers: &mut HeaderMap,
    upgrade: bool,
    result: Result<Identity<P>, AuthRejection>,
) -> Outcome<P> {
    match result {
        Ok(verified) => {
            let config = guard.config();
            strip_credential(
                headers,
                &config.sources,
                verified.source(),
                config.strip_headers,
            );
            Outcome::Identity(verified)
        }
        Err(rejection) => match defer(guard, upgrade, &rejection) {
            Some(deferred) => Outcome::Deferred(deferred),
            None => Outcome::Rejected(rejection),
        },
    }
}

/// Leaves the result in the request for the extractors.
pub(crate) fn hand_over<P>(extensions: &mut Extensions, guard: &Guard<P>, outcome: Outcome<P>)
where
    P: Clone + Send + Sync + 'static,
{
    extensions.insert(Resolved {
        guard: guard.clone(),
        outcome,
    });
}

/// The result the layer (or [`WithGuard`](crate::WithGuard)) left in the request: what every
/// extractor reads. Without one, the route has no guard in front of it, which is a
/// misconfiguration: a `500`, never a pass.
pub(crate) fn resolved<P>(extensions: &Extensions) -> Result<&Resolved<P>, AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    extensions.get::<Resolved<P>>().ok_or_else(|| {
        tracing::error!(
            target: "axum_keyguard::rejection",
            principal = std::any::type_name::<P>(),
            "no guard ran for this route: put `guard.layer()` in front of it \
             (`Router::route_layer`), or wrap the extractor in `WithGuard` to use the guard in \
             the router state"
        );
        AuthRejection::misconfigured()
    })
}

/// The principal's verification, for extractors that cannot finish a deferred handshake: a
/// deferred or refused request is refused here as the handshake would have been.
pub(crate) fn verified<P>(extensions: &Extensions) -> Result<Identity<P>, AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    verified_ref(extensions).cloned()
}

/// [`verified`], borrowed: an extractor that wants the principal alone clones only that.
pub(crate) fn verified_ref<P>(extensions: &Extensions) -> Result<&Identity<P>, AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    let Resolved { guard, outcome } = resolved::<P>(extensions)?;
    match outcome {
        Outcome::Identity(verified) => Ok(verified),
        Outcome::Deferred(Deferred::FirstMessage) => {
            Err(guard.reject(AuthRejectionKind::MissingCredential, None))
        }
        Outcome::Deferred(Deferred::Refuse(rejection)) | Outcome::Rejected(rejection) => {
            Err(rejection.clone())
        }
    }
}

/// Without a layer: resolves the request now with the state's guard, unless a layer (or an
/// earlier extractor) already did, and leaves the result for the extractors.
pub(crate) async fn resolve_now<S, P>(parts: &mut Parts, state: &S)
where
    P: Clone + Send + Sync + 'static,
    S: Send + Sync,
    Guard<P>: FromRef<S>,
{
    if parts.extensions.get::<Resolved<P>>().is_some() {
        return;
    }
    let guard = Guard::<P>::from_ref(state);
    let head = Head::from(&*parts);
    let upgrade = is_upgrade(head);
    let result = guard.resolve_head(head, upgrade).await;
    let outcome = outcome(&guard, &mut parts.headers, upgrade, result);
    // Requirements a `RequireLayer` left for this route: checked now that the principal is known.
    let outcome = match authorize_outcome(&guard, &outcome, None, parts, upgrade) {
        Ok(()) => outcome,
        Err(rejection) => Outcome::Rejected(rejection),
    };
    hand_over(&mut parts.extensions, &guard, outcome);
}

/// Checks what is required of the request once the guard has decided: the requirements a
/// [`RequireLayer`](crate::RequireLayer) left before any guard ran, then `own` (the guard
/// layer's). A verified principal is checked now; a deferred upgrade keeps them for the socket
/// to check after its first message; a request let through without a principal (an optional
/// layer) is refused with its rejection, since a requirement needs a principal. On upgrades the
/// requirements stay in the request, for the socket to check again when its record changes.
pub(crate) fn authorize_outcome<P>(
    guard: &Guard<P>,
    outcome: &Outcome<P>,
    own: Option<&Require<P>>,
    parts: &mut Parts,
    upgrade: bool,
) -> Result<(), AuthRejection>
where
    P: Clone + Send + Sync + 'static,
{
    let declared = parts.extensions.get::<Declared<P>>().cloned();
    if own.is_none() && declared.is_none() {
        return Ok(());
    }
    if let Some(declared) = &declared {
        declared.take_over();
    }
    match outcome {
        Outcome::Identity(identity) => {
            let pending = declared.iter().flat_map(|d| d.list.iter());
            let needs_head = pending.clone().chain(own).any(Require::needs_head);
            let params = needs_head.then(|| PathParams::read(parts));
            let head = params.as_ref().map(|p| RequestHead::new(parts, p));
            authorize(guard, identity, pending.chain(own), head.as_ref())?;
        }
        Outcome::Deferred(Deferred::FirstMessage) => {}
        // Accepted only to be closed with its own code.
        Outcome::Deferred(Deferred::Refuse(_)) => return Ok(()),
        Outcome::Rejected(rejection) => return Err(rejection.clone()),
    }
    if let Some(own) = own.filter(|_| upgrade) {
        record(&mut parts.extensions, own);
    }
    Ok(())
}
