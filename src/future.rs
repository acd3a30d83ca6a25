//! Futures returned by [`Guard::resolve`](crate::Guard::resolve) and the [`Guarded`](crate::Guarded)
//! service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, REFERRER_POLICY};
use http::{HeaderValue, Request};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::guard::{Guard, Verified};
use crate::layer::admit;
use crate::rejection::AuthRejection;
use crate::source::SourceKind;
use crate::verify::{Grant, VerifyError};

type BoxVerify<P> = Pin<Box<dyn Future<Output = Result<Grant<P>, VerifyError>> + Send>>;

/// The future of [`Guard::resolve`](crate::Guard::resolve).
///
/// Already complete when the verifier decided synchronously; otherwise it drives the verifier's
/// future. It owns everything it needs and borrows nothing from the request.
#[must_use = "futures do nothing unless polled"]
pub struct ResolveFuture<P> {
    state: ResolveState<P>,
}

enum ResolveState<P> {
    Ready(Option<Result<Verified<P>, AuthRejection>>),
    Pending {
        future: BoxVerify<P>,
        guard: Guard<P>,
        source: SourceKind,
        rest_query: bool,
    },
}

impl<P> ResolveFuture<P> {
    pub(crate) fn ready(result: Result<Verified<P>, AuthRejection>) -> Self {
        Self {
            state: ResolveState::Ready(Some(result)),
        }
    }

    pub(crate) fn pending(
        future: BoxVerify<P>,
        guard: Guard<P>,
        source: SourceKind,
        rest_query: bool,
    ) -> Self {
        Self {
            state: ResolveState::Pending {
                future,
                guard,
                source,
                rest_query,
            },
        }
    }

    /// The result, if it was decided synchronously.
    pub(crate) fn take_ready(&mut self) -> Option<Result<Verified<P>, AuthRejection>> {
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
    type Output = Result<Verified<P>, AuthRejection>;

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
            } => {
                let result = ready!(future.as_mut().poll(cx));
                Poll::Ready(guard.finish(result, *source, *rest_query))
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

pin_project! {
    /// The response future of [`Guarded`](crate::Guarded): resolving the credential, then calling
    /// the inner service (never on the rejection path).
    pub struct ResponseFuture<S, B, P>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, P>,
    }
}

/// Waiting for an asynchronous verifier, with the request and the service polled ready for it.
struct Resolving<S, B, P> {
    resolve: ResolveFuture<P>,
    request: Option<Request<B>>,
    inner: S,
    guard: Guard<P>,
    upgrade: bool,
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, P>
    where
        S: Service<Request<B>>,
    {
        // Boxed: only verifiers that do I/O get here, and keeping it out of line keeps the
        // future (moved through every wrapping layer) small on the synchronous path.
        Resolving {
            resolving: Box<Resolving<S, B, P>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            no_store: bool,
        },
        Rejected {
            response: Option<Response>,
        },
    }
}

impl<S, B, P> ResponseFuture<S, B, P>
where
    S: Service<Request<B>>,
{
    pub(crate) fn resolving(
        resolve: ResolveFuture<P>,
        request: Request<B>,
        inner: S,
        guard: Guard<P>,
        upgrade: bool,
    ) -> Self {
        Self {
            state: State::Resolving {
                resolving: Box::new(Resolving {
                    resolve,
                    request: Some(request),
                    inner,
                    guard,
                    upgrade,
                }),
            },
        }
    }

    pub(crate) fn calling(future: S::Future, no_store: bool) -> Self {
        Self {
            state: State::Calling { future, no_store },
        }
    }

    pub(crate) fn rejected(rejection: AuthRejection) -> Self {
        Self {
            state: State::Rejected {
                response: Some(rejection.into_response()),
            },
        }
    }
}

impl<S, B, P> Future for ResponseFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response>,
    P: Clone + Send + Sync + 'static,
{
    type Output = Result<Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Resolving { resolving } => {
                    let Resolving {
                        resolve,
                        request,
                        inner,
                        guard,
                        upgrade,
                    } = &mut **resolving;
                    let result = ready!(Pin::new(resolve).poll(cx));
                    let request = request
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let next = match admit(guard, request, *upgrade, result) {
                        Ok((request, no_store)) => State::Calling {
                            future: inner.call(request),
                            no_store,
                        },
                        Err(rejection) => State::Rejected {
                            response: Some(rejection.into_response()),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { future, no_store } => {
                    let mut response = ready!(future.poll(cx))?;
                    if *no_store {
                        let headers = response.headers_mut();
                        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
            }
        }
    }
}

impl<S, B, P> fmt::Debug for ResponseFuture<S, B, P>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Resolving { .. } => "resolving",
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
