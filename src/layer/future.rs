//! The response future of the [`Guarded`](crate::Guarded) service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{CACHE_CONTROL, REFERRER_POLICY};
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::authz::Require;
use crate::guard::{Guard, ResolveFuture};
use crate::layer::{admit, ResponseBody};
use crate::rejection::AuthRejection;

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
    optional: bool,
    require: Option<Require<P>>,
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
            rejection: Option<AuthRejection>,
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
        optional: bool,
        require: Option<Require<P>>,
    ) -> Self {
        Self {
            state: State::Resolving {
                resolving: Box::new(Resolving {
                    resolve,
                    request: Some(request),
                    inner,
                    guard,
                    upgrade,
                    optional,
                    require,
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
                rejection: Some(rejection),
            },
        }
    }
}

impl<S, B, P, ResBody> Future for ResponseFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    P: Clone + Send + Sync + 'static,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

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
                        optional,
                        require,
                    } = &mut **resolving;
                    let result = ready!(Pin::new(resolve).poll(cx));
                    let request = request
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let next = match admit(
                        guard,
                        request,
                        *upgrade,
                        *optional,
                        require.as_ref(),
                        result,
                    ) {
                        Ok((request, no_store)) => State::Calling {
                            future: inner.call(request),
                            no_store,
                        },
                        Err(rejection) => State::Rejected {
                            rejection: Some(rejection),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { future, no_store } => {
                    let mut response = ready!(future.poll(cx))?.map(ResponseBody::inner);
                    if *no_store {
                        let headers = response.headers_mut();
                        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(rejection.into_response_with(ResponseBody::rejection)));
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
