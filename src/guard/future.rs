//! The future of [`Guard::resolve`](crate::Guard::resolve).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::guard::{Guard, Identity};
use crate::limit::PeerKey;
use crate::rejection::AuthRejection;
use crate::source::SourceKind;
use crate::verify::{Denial, Grant};

type BoxVerify<P> = Pin<Box<dyn Future<Output = Result<Grant<P>, Denial>> + Send>>;

/// The future of [`Guard::resolve`](crate::Guard::resolve).
///
/// Already complete when the verifier decided synchronously; otherwise it drives the verifier's
/// future. It owns everything it needs and borrows nothing from the request.
#[must_use = "futures do nothing unless polled"]
pub struct ResolveFuture<P> {
    state: ResolveState<P>,
}

enum ResolveState<P> {
    Ready(Option<Result<Identity<P>, AuthRejection>>),
    Pending {
        future: BoxVerify<P>,
        guard: Guard<P>,
        source: SourceKind,
        rest_query: bool,
        peer: Option<PeerKey>,
    },
}

impl<P> ResolveFuture<P> {
    pub(crate) fn ready(result: Result<Identity<P>, AuthRejection>) -> Self {
        Self {
            state: ResolveState::Ready(Some(result)),
        }
    }

    pub(crate) fn pending(
        future: BoxVerify<P>,
        guard: Guard<P>,
        source: SourceKind,
        rest_query: bool,
        peer: Option<PeerKey>,
    ) -> Self {
        Self {
            state: ResolveState::Pending {
                future,
                guard,
                source,
                rest_query,
                peer,
            },
        }
    }

    /// The result, if it was decided synchronously.
    pub(crate) fn take_ready(&mut self) -> Option<Result<Identity<P>, AuthRejection>> {
        match &mut self.state {
            ResolveState::Ready(result) => result.take(),
            ResolveState::Pending { .. } => None,
        }
    }
}

// Nothing in a `ResolveFuture` is ever pinned in place: the verifier's future is boxed.
impl<P> Unpin for ResolveFuture<P> {}

impl<P> Future for ResolveFuture<P>
where
    P: Clone + Send + Sync + 'static,
{
    type Output = Result<Identity<P>, AuthRejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            ResolveState::Ready(result) => Poll::Ready(
                result
                    .take()
                    .expect("ResolveFuture polled after completion"),
            ),
            ResolveState::Pending {
                future,
                guard,
                source,
                rest_query,
                peer,
            } => {
                let result = ready!(future.as_mut().poll(cx));
                Poll::Ready(guard.finish(result, *source, *rest_query, *peer))
            }
        }
    }
}

impl<P> fmt::Debug for ResolveFuture<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ResolveState::Ready(_) => "ready",
            ResolveState::Pending { .. } => "pending",
        };
        f.debug_struct("ResolveFuture")
            .field("state", &state)
            .finish()
    }
}
