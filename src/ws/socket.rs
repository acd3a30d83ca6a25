//! A WebSocket held to its credential's lease.
//!
//! The connection is shared between the handler's [`LeasedSocket`] and the task serving the
//! upgrade, behind a mutex that is only ever taken for one poll (never across an `.await`). The
//! task polls the handler's future next to the lease: when the lease ends it decides at once,
//! whatever the handler is doing, and finishes the close on the shared connection. No channel and
//! no second task, so a lease costs a few hundred bytes per socket.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use tokio::time::Instant;

use crate::guard::{Guard, Verified};
use crate::lease::{Lease, LeaseStatus};
use crate::source::is_auth_frame;
use crate::ws::close_code;

/// An authenticated WebSocket whose life is tied to its credential.
///
/// When the credential expires or is revoked the socket decides at once to close, even while the
/// handler is busy elsewhere (pushing from a channel, say): from that moment [`recv`](Self::recv)
/// returns `None` and [`send`](Self::send) fails, and no frame sent after it reaches the client.
/// The server sends Close `4001` with a short reason, waits a bounded time for the client's Close
/// (the guard's close timeout), drops the connection and ends the handler. If the key store
/// becomes unavailable the socket keeps running for the grace period, then closes with `1011`.
///
/// Frames are read when the handler calls `recv`, as with axum's own `WebSocket`: pings are
/// answered then, and a handler that only pushes learns that the client left from a failed
/// `send`.
pub struct LeasedSocket<P> {
    verified: Verified<P>,
    protocol: Option<String>,
    shared: Arc<Shared>,
    guard: Guard<P>,
}

/// The connection and its phase, shared by the handler and the serving task.
struct Shared {
    conn: Mutex<Conn>,
    /// The serving task, woken when the connection finishes under the handler.
    finished: AtomicWaker,
}

struct Conn {
    socket: WebSocket,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Frames flow both ways.
    Open,
    /// The server decided to close (lease end, the handler's `close`, the handler returned): no
    /// more frames to or from the handler.
    Closing,
    /// The client's Close arrived (and was handed to the handler); the reply is queued.
    ClientClosed,
    /// The connection failed or ended.
    Gone,
}

/// The socket is closed: the client left, or the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketClosed;

impl fmt::Display for SocketClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the WebSocket is closed")
    }
}

impl std::error::Error for SocketClosed {}

impl<P> LeasedSocket<P> {
    /// Who is on the other end.
    pub fn principal(&self) -> &P {
        self.verified.principal()
    }

    /// The whole verification result (principal, source, lease).
    pub fn verified(&self) -> &Verified<P> {
        &self.verified
    }

    /// The subprotocol selected in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The next text or binary frame. When the client closes, its Close frame comes last; then
    /// `None`, as it does at once when the lease ends or the connection drops.
    pub async fn recv(&mut self) -> Option<Message> {
        let fields = self
            .guard
            .socket_options()
            .first_message
            .as_ref()
            .map(|f| f.fields.as_slice());
        poll_fn(|cx| self.shared.poll_recv(cx, fields)).await
    }

    /// Sends a frame. Fails once the socket is closed; a frame sent after the lease ended is never
    /// delivered.
    pub async fn send(&self, message: Message) -> Result<(), SocketClosed> {
        let mut message = Some(message);
        poll_fn(|cx| self.shared.poll_send(cx, &mut message, Phase::Open)).await
    }

    /// Closes the socket with `code` and `reason` (cut to 123 bytes). The server then waits for
    /// the client's Close, up to the close timeout, once the handler returns.
    pub async fn close(self, code: u16, reason: &str) {
        if !self.shared.decide() {
            return;
        }
        let frame = close_frame(code, reason);
        let timeout = self.guard.socket_options().close_timeout;
        let _ = tokio::time::timeout(timeout, self.shared.send_close(frame)).await;
    }
}

impl<P> fmt::Debug for LeasedSocket<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedSocket")
            .field("verified", &self.verified)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn new(socket: WebSocket) -> Self {
        Self {
            conn: Mutex::new(Conn {
                socket,
                phase: Phase::Open,
            }),
            finished: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `phase` and wakes the serving task.
    fn set_phase(&self, conn: &mut Conn, phase: Phase) {
        conn.phase = phase;
        self.finished.wake();
    }

    /// Decides to close: `true` if the socket was open (the caller sends the Close).
    fn decide(&self) -> bool {
        let mut conn = self.lock();
        let open = conn.phase == Phase::Open;
        if open {
            self.set_phase(&mut conn, Phase::Closing);
        }
        open
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        auth_fields: Option<&[String]>,
    ) -> Poll<Option<Message>> {
        let mut conn = self.lock();
        loop {
            if conn.phase != Phase::Open {
                return Poll::Ready(None);
            }
            let message = match ready!(Pin::new(&mut conn.socket).poll_next(cx)) {
                Some(Ok(message)) => message,
                Some(Err(_)) | None => {
                    self.set_phase(&mut conn, Phase::Gone);
                    return Poll::Ready(None);
                }
            };
            match message {
                Message::Text(ref text) if auth_fields.is_some_and(|f| is_auth_frame(text, f)) => {}
                Message::Text(_) | Message::Binary(_) => return Poll::Ready(Some(message)),
                // The protocol layer answers pings; the reply goes out with the next read or write.
                Message::Ping(_) | Message::Pong(_) => {}
                // The client closed (its Close is answered by the protocol layer): the handler
                // gets the frame, so a proxy can pass the code on.
                Message::Close(_) => {
                    self.set_phase(&mut conn, Phase::ClientClosed);
                    return Poll::Ready(Some(message));
                }
            }
        }
    }

    /// Sends `message` (taken on the first poll that can start it) and flushes, while the phase is
    /// `allowed`.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
        allowed: Phase,
    ) -> Poll<Result<(), SocketClosed>> {
        let mut conn = self.lock();
        if conn.phase != allowed {
            return Poll::Ready(Err(SocketClosed));
        }
        let mut socket = Pin::new(&mut conn.socket);
        let result = (|| {
            if message.is_some() {
                ready!(socket.as_mut().poll_ready(cx))?;
                if let Some(message) = message.take() {
                    socket.as_mut().start_send(message)?;
                }
            }
            socket.as_mut().poll_flush(cx)
        })();
        match ready!(result) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => {
                self.set_phase(&mut conn, Phase::Gone);
                Poll::Ready(Err(SocketClosed))
            }
        }
    }

    /// Sends the server's Close frame (after [`decide`](Self::decide)).
    async fn send_close(&self, frame: CloseFrame) -> Result<(), SocketClosed> {
        let mut message = Some(Message::Close(Some(frame)));
        poll_fn(|cx| self.poll_send(cx, &mut message, Phase::Closing)).await
    }

    /// Ready once the connection finished under the handler: the client closed, or it failed.
    fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.finished.register(cx.waker());
        match self.lock().phase {
            Phase::ClientClosed | Phase::Gone => Poll::Ready(()),
            Phase::Open | Phase::Closing => Poll::Pending,
        }
    }

    /// After the server's Close: reads until the client's Close (or the end of the connection).
    fn poll_client_close(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut conn = self.lock();
        loop {
            match conn.phase {
                Phase::Closing => {}
                Phase::ClientClosed => {
                    // Flush the protocol layer's reply to the client's Close.
                    let _ = ready!(Pin::new(&mut conn.socket).poll_close(cx));
                    self.set_phase(&mut conn, Phase::Gone);
                    return Poll::Ready(());
                }
                Phase::Open | Phase::Gone => return Poll::Ready(()),
            }
            match ready!(Pin::new(&mut conn.socket).poll_next(cx)) {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    self.set_phase(&mut conn, Phase::Gone);
                    return Poll::Ready(());
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Closes with `code` unless a close is already under way, then waits for the client's Close.
    /// The caller bounds it with the close timeout.
    async fn finish(&self, code: u16, reason: &str) {
        if self.decide() && self.send_close(close_frame(code, reason)).await.is_err() {
            return;
        }
        poll_fn(|cx| self.poll_client_close(cx)).await;
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: super::truncate_close_reason(reason).into(),
    }
}

/// Runs `handler` on a socket held to `verified`'s lease, and returns once the connection is
/// released. When the lease ends or the client leaves first, the handler's `recv` yields `None`
/// and it has the close timeout to finish (to pass a close on, say) before it is dropped.
pub(crate) async fn serve<P, F, Fut>(
    socket: WebSocket,
    verified: Verified<P>,
    protocol: Option<String>,
    guard: Guard<P>,
    handler: F,
) where
    F: FnOnce(LeasedSocket<P>) -> Fut,
    Fut: Future<Output = ()>,
{
    let options = guard.socket_options();
    let (close_timeout, grace) = (options.close_timeout, options.unavailable_grace);
    let shared = Arc::new(Shared::new(socket));
    let lease = verified.lease().clone();
    let mut app = pin!(handler(LeasedSocket {
        verified,
        protocol,
        shared: Arc::clone(&shared),
        guard,
    }));
    let mut end = pin!(lease_end(lease, grace));
    let mut finished = pin!(poll_fn(|cx| shared.poll_finished(cx)));
    enum First {
        LeaseEnded(u16, &'static str),
        ClientLeft,
        HandlerDone,
    }
    let first = poll_fn(|cx| {
        if let Poll::Ready((code, reason)) = end.as_mut().poll(cx) {
            return Poll::Ready(First::LeaseEnded(code, reason));
        }
        if app.as_mut().poll(cx).is_ready() {
            return Poll::Ready(First::HandlerDone);
        }
        finished.as_mut().poll(cx).map(|()| First::ClientLeft)
    })
    .await;
    // The closing steps are boxed: only a socket that is closing pays for them.
    match first {
        First::LeaseEnded(code, reason) => {
            let closing = Box::pin(shared.finish(code, reason));
            let _ = tokio::time::timeout(close_timeout, Both::new(closing, app)).await;
        }
        First::ClientLeft => {
            let closing = Box::pin(poll_fn(|cx| shared.poll_client_close(cx)));
            let _ = tokio::time::timeout(close_timeout, Both::new(closing, app)).await;
        }
        First::HandlerDone => {
            let closing = Box::pin(shared.finish(close_code::NORMAL, ""));
            let _ = tokio::time::timeout(close_timeout, closing).await;
        }
    }
}

/// Runs two futures to completion, polling both on every wake.
struct Both<A, B> {
    a: Option<A>,
    b: Option<B>,
}

impl<A, B> Both<A, B> {
    fn new(a: A, b: B) -> Self {
        Self {
            a: Some(a),
            b: Some(b),
        }
    }
}

impl<A, B> Future for Both<A, B>
where
    A: Future<Output = ()> + Unpin,
    B: Future<Output = ()> + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(a) = &mut self.a {
            if Pin::new(a).poll(cx).is_ready() {
                self.a = None;
            }
        }
        if let Some(b) = &mut self.b {
            if Pin::new(b).poll(cx).is_ready() {
                self.b = None;
            }
        }
        if self.a.is_none() && self.b.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Closes a socket right after the upgrade (accept-then-close, failed first-message auth): sends
/// Close and waits up to `timeout` for the client's, then drops the connection.
pub(crate) async fn close_now(
    socket: WebSocket,
    code: u16,
    reason: &'static str,
    timeout: Duration,
) {
    let shared = Shared::new(socket);
    let _ = tokio::time::timeout(timeout, shared.finish(code, reason)).await;
}

/// Resolves when the lease ends: expiry, revocation, or an unavailable store past the grace.
async fn lease_end(lease: Lease, grace: Duration) -> (u16, &'static str) {
    let expired = async {
        match lease.expires_at() {
            Some(at) => {
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep_until(Instant::now() + left).await;
            }
            None => std::future::pending().await,
        }
    };
    let revoked = async {
        let Some(mut revocation) = lease.revocation().cloned() else {
            return std::future::pending().await;
        };
        loop {
            match revocation.status() {
                LeaseStatus::Active => {
                    revocation.changed().await;
                }
                LeaseStatus::Unavailable => {
                    // Boxed: only a socket whose store is down pays for the timer.
                    let grace_over = Box::pin(tokio::time::sleep(grace));
                    tokio::select! {
                        _ = revocation.changed() => {}
                        () = grace_over => {
                            return (close_code::INTERNAL_ERROR, "authentication unavailable");
                        }
                    }
                }
                _ => return (close_code::UNAUTHORIZED, "credential revoked"),
            }
        }
    };
    tokio::select! {
        biased;
        end = revoked => end,
        () = expired => (close_code::UNAUTHORIZED, "credential expired"),
    }
}
