//! First-message authentication on the socket: reading the auth frame within the timeout and
//! the read budget, then verifying it. (Its options, [`FirstMessage`](crate::ws::FirstMessage),
//! are the guard's; the frame's grammar is in `auth_frame`, the budget in `io`.)

use std::future::poll_fn;
use std::task::Poll;

use axum::extract::ws::Message;

use crate::guard::{Guard, Identity};
use crate::limit::PeerKey;
use crate::rejection::{close, AuthRejectionKind};
use crate::source::SourceKind;
use crate::ws::auth_frame::auth_credential;
use crate::ws::io::ReadBudget;
use crate::ws::socket::Shared;

/// Why the first-message phase ended without a verified socket.
pub(crate) enum Refused {
    /// Close with this code and reason, then wait for the client's Close.
    Close(u16, &'static str),
    /// Close with this code and reason and drop the connection at once (the client sent more
    /// than the budget: nothing more of it is read).
    Drop(u16, &'static str),
    /// The client left.
    Gone,
}

/// Reads and verifies the auth frame, within the timeout and the read budget. A refused frame
/// (malformed, too long, a wrong credential) is charged to `peer` when the guard has a failure
/// limit; a peer limited by the time its frame arrives is closed with `1013`.
pub(crate) async fn authenticate<P>(
    socket: &Shared,
    guard: &Guard<P>,
    peer: Option<PeerKey>,
) -> Result<Identity<P>, Refused>
where
    P: Clone + Send + Sync + 'static,
{
    let source = Some(SourceKind::Message);
    let refuse = |kind: AuthRejectionKind| {
        let rejection = guard.refuse(kind, source, peer);
        Refused::Close(rejection.close_code(), rejection.close_reason())
    };
    let Some(options) = guard.socket_options().first_message.as_ref() else {
        return Err(refuse(AuthRejectionKind::Misconfigured));
    };
    let budget = socket.budget();
    let read = async {
        loop {
            let frame = poll_fn(|cx| match socket.poll_next_frame(cx) {
                // The reader stopped at the budget: the client sent more than an auth frame needs.
                Poll::Pending if budget.is_some_and(ReadBudget::is_exhausted) => {
                    Poll::Ready(Err(AuthRejectionKind::CredentialTooLong))
                }
                other => other.map(Ok),
            });
            match frame.await? {
                Some(Message::Text(text)) => return Ok(Some(text)),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                Some(Message::Binary(_)) => return Err(AuthRejectionKind::MalformedCredential),
                Some(Message::Close(_)) | None => return Ok(None),
            }
        }
    };
    let text = match tokio::time::timeout(options.timeout, read).await {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => return Err(Refused::Gone),
        Ok(Err(AuthRejectionKind::CredentialTooLong)) => {
            let rejection = guard.refuse(AuthRejectionKind::CredentialTooLong, source, peer);
            return Err(Refused::Drop(rejection.close_code(), close::AUTH_TOO_LARGE));
        }
        Ok(Err(kind)) => return Err(refuse(kind)),
        Err(_) => {
            let rejection = guard.reject(AuthRejectionKind::MissingCredential, source);
            return Err(Refused::Close(rejection.close_code(), close::AUTH_TIMEOUT));
        }
    };
    let Some(credential) = auth_credential(&text, &options.fields) else {
        return Err(refuse(AuthRejectionKind::MalformedCredential));
    };
    let verified = guard
        .resolve_message(&credential, peer)
        .await
        .map_err(|rejection| Refused::Close(rejection.close_code(), rejection.close_reason()))?;
    if let Some(budget) = budget {
        budget.lift();
    }
    Ok(verified)
}
