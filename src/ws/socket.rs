//! A WebSocket held to its credential's lease.
//!
//! The connection is shared between the handler's [`LeasedSocket`] and the task serving the
//! upgrade, behind a mutex that is only ever taken for one poll (never across an `.await`). The
//! task polls the handler's future next to the lease: when the lease ends it decides at once,
//! whatever the handler is doing, and finishes the close on the shared connection. No channel and
//! no second task, so a lease costs a few hundred bytes per socket.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use pin_project_lite::pin_project;
use tokio_tungstenite::tungstenite::{self as ts, protocol::CloseFrame as TsCloseFrame};
use tokio_tungstenite::WebSocketStream;

use crate::guard::{Guard, Identity};
use crate::lease::Revocation;
use crate::lease::{LeaseEnd, Recheck};
use crate::rejection::close;
use crate::sockets::OpenSocket;
use crate::ws::auth_frame::is_auth_frame;
use crate::ws::io::Io;
use crate::ws::io::ReadBudget;

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
///
/// It is also a [`Stream`] of messages and a [`Sink`] of messages, so it can be
/// [`split`](futures_util::StreamExt::split) into a reader and a writer that run in tasks of their
/// own. The lease holds both halves: when it ends, the reader's stream ends and the writer's
/// sends fail (both are woken, wherever they wait), and the client sees the same close code as
/// without the split (`4001` on revocation or expiry, `1011` after the store's grace, `1001` on
/// shutdown). Closing the sink only flushes it: the socket closes when the lease ends, through
/// [`close`](Self::close), or when the handler's future returns, so keep it running (awaiting
/// the two tasks, say) for as long as the halves are in use.
///
/// ```
/// use axum::extract::ws::Message;
/// use axum::response::Response;
/// use axum_keyguard::ws::GuardedUpgrade;
/// use axum_keyguard::KeyId;
/// use futures_util::{SinkExt, StreamExt};
///
/// async fn events(ws: GuardedUpgrade<KeyId>) -> Response {
///     ws.on_upgrade(|socket| async move {
///         let (mut writer, mut reader) = socket.split();
///         let (tx, mut rx) = tokio::sync::mpsc::channel(16);
///         // The reader ends when the client leaves or the lease ends.
///         let read = tokio::spawn(async move {
///             while let Some(message) = reader.next().await {
///                 if tx.send(message).await.is_err() {
///                     break;
///                 }
///             }
///         });
///         // The writer's sends fail once the lease has ended.
///         let write = tokio::spawn(async move {
///             while let Some(message) = rx.recv().await {
///                 if writer.send(message).await.is_err() {
///                     break;
///                 }
///             }
///         });
///         let _ = tokio::join!(read, write);
///     })
/// }
/// # let _ = events;
/// ```
pub struct LeasedSocket<P> {
    verified: Identity<P>,
    protocol: Option<String>,
    shared: Arc<Shared>,
    guard: Guard<P>,
    /// A message given to the [`Sink`] and not yet taken by the connection.
    pending: Option<Message>,
}

// Nothing in a `LeasedSocket` is pinned: its stream and sink poll the shared connection.
impl<P> Unpin for LeasedSocket<P> {}

/// The connection and its phase, shared by the handler and the serving task.
pub(crate) struct Shared {
    conn: Mutex<Conn>,
    /// The serving task, woken when the connection finishes under the handler.
    finished: AtomicWaker,
    /// One send at a time: the connection keeps a single waker for write readiness, so
    /// overlapping sends from several tasks would otherwise lose wake-ups.
    sending: tokio::sync::Mutex<()>,
    /// What the connection may still read before the client authenticates (first-message auth).
    budget: Option<Arc<ReadBudget>>,
    /// The handler's reader and writer, woken on every change of phase: once a socket is split,
    /// they may wait in tasks of their own, which nothing else would wake when the lease ends.
    reader: AtomicWaker,
    writer: AtomicWaker,
}

struct Conn {
    socket: WebSocketStream<Io>,
    phase: Phase,
    /// With [`Phase::Failed`]: the close code the failure is answered with.
    failure: u16,
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
    /// The client broke the protocol or a size limit while the handler read: no more frames to
    /// or from the handler; the server's Close with the failure's code is still to be sent.
    Failed,
    /// The connection failed or ended.
    Gone,
}

/// The close code a read error is answered with (RFC 6455 §7.4.1), if it is the client's fault
/// and the connection can still carry a Close.
fn failure_code(error: &ts::Error) -> Option<u16> {
    use ts::error::ProtocolError;
    match error {
        ts::Error::Capacity(_) => Some(close::MESSAGE_TOO_BIG),
        // The client went away without a Close (or sent after its own): nothing to answer.
        ts::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::ReceivedAfterClosing,
        ) => None,
        ts::Error::Protocol(_) => Some(close::PROTOCOL_ERROR),
        ts::Error::Utf8(_) => Some(close::INVALID_PAYLOAD),
        _ => None,
    }
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
    pub fn verified(&self) -> &Identity<P> {
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
    ///
    /// Sends may overlap (several futures of the handler, or tasks sharing the socket through an
    /// `Arc`): they go out one at a time, in the order they got their turn.
    pub async fn send(&self, message: Message) -> Result<(), SocketClosed> {
        let _turn = self.shared.sending.lock().await;
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

impl<P> Stream for LeasedSocket<P> {
    type Item = Message;

    /// As [`recv`](LeasedSocket::recv): the next text or binary frame, the client's Close last,
    /// then the end of the stream (at once when the lease ends).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = self.get_mut();
        let fields = this
            .guard
            .socket_options()
            .first_message
            .as_ref()
            .map(|f| f.fields.as_slice());
        this.shared.poll_recv(cx, fields)
    }
}

impl<P> Sink<Message> for LeasedSocket<P> {
    type Error = SocketClosed;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SocketClosed>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            // Nothing queued: ready while the socket is open.
            return if this.shared.is_open() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Ready(Err(SocketClosed))
            };
        }
        this.shared.poll_send(cx, &mut this.pending, Phase::Open)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), SocketClosed> {
        let this = self.get_mut();
        if !this.shared.is_open() {
            return Err(SocketClosed);
        }
        this.pending = Some(message);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SocketClosed>> {
        let this = self.get_mut();
        this.shared.poll_send(cx, &mut this.pending, Phase::Open)
    }

    /// Flushes. The socket itself closes when the lease ends, through
    /// [`close`](LeasedSocket::close), or when the handler returns.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SocketClosed>> {
        self.poll_flush(cx)
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
    pub(crate) fn new(socket: WebSocketStream<Io>, budget: Option<Arc<ReadBudget>>) -> Self {
        Self {
            conn: Mutex::new(Conn {
                socket,
                phase: Phase::Open,
                failure: 0,
            }),
            finished: AtomicWaker::new(),
            sending: tokio::sync::Mutex::new(()),
            budget,
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `phase` and wakes the serving task and the handler's reader and writer.
    fn set_phase(&self, conn: &mut Conn, phase: Phase) {
        conn.phase = phase;
        self.finished.wake();
        self.reader.wake();
        self.writer.wake();
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
        self.reader.register(cx.waker());
        let mut conn = self.lock();
        loop {
            if conn.phase != Phase::Open {
                return Poll::Ready(None);
            }
            let message = match ready!(Pin::new(&mut conn.socket).poll_next(cx)) {
                Some(Ok(message)) => match from_protocol(message) {
                    Some(message) => message,
                    None => continue,
                },
                Some(Err(error)) => {
                    // The serving task answers the client's fault with its code; anything else
                    // (the connection broke) ends the socket.
                    match failure_code(&error) {
                        Some(code) => {
                            conn.failure = code;
                            self.set_phase(&mut conn, Phase::Failed);
                        }
                        None => self.set_phase(&mut conn, Phase::Gone),
                    }
                    return Poll::Ready(None);
                }
                None => {
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

    /// The next frame of any kind (first-message auth reads the auth frame with this); `None`
    /// once the connection failed or ended.
    pub(crate) fn poll_next_frame(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let mut conn = self.lock();
        loop {
            if conn.phase != Phase::Open {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut conn.socket).poll_next(cx)) {
                Some(Ok(message)) => {
                    if let Some(message) = from_protocol(message) {
                        return Poll::Ready(Some(message));
                    }
                }
                Some(Err(_)) | None => {
                    self.set_phase(&mut conn, Phase::Gone);
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// The read budget of a socket that has not authenticated yet.
    pub(crate) fn budget(&self) -> Option<&ReadBudget> {
        self.budget.as_deref()
    }

    /// Sends `message` (taken on the first poll that can start it) and flushes, while the phase is
    /// `allowed`.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
        allowed: Phase,
    ) -> Poll<Result<(), SocketClosed>> {
        if allowed == Phase::Open {
            self.writer.register(cx.waker());
        }
        let mut conn = self.lock();
        if conn.phase != allowed {
            return Poll::Ready(Err(SocketClosed));
        }
        let mut socket = Pin::new(&mut conn.socket);
        let result = (|| {
            if message.is_some() {
                ready!(socket.as_mut().poll_ready(cx))?;
                if let Some(message) = message.take() {
                    socket.as_mut().start_send(into_protocol(message))?;
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
        let _turn = self.sending.lock().await;
        let mut message = Some(Message::Close(Some(frame)));
        poll_fn(|cx| self.poll_send(cx, &mut message, Phase::Closing)).await
    }

    /// Whether frames still flow both ways.
    fn is_open(&self) -> bool {
        self.lock().phase == Phase::Open
    }

    /// Whether the client closed or the connection failed.
    fn is_finished(&self) -> bool {
        matches!(
            self.lock().phase,
            Phase::ClientClosed | Phase::Failed | Phase::Gone
        )
    }

    /// Ready once the connection finished under the handler: the client closed, or it failed.
    fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.finished.register(cx.waker());
        match self.lock().phase {
            Phase::ClientClosed | Phase::Failed | Phase::Gone => Poll::Ready(()),
            Phase::Open | Phase::Closing => Poll::Pending,
        }
    }

    /// The close code of a client's fault still to be answered ([`Phase::Failed`]).
    fn failure(&self) -> Option<u16> {
        let conn = self.lock();
        (conn.phase == Phase::Failed).then_some(conn.failure)
    }

    /// Answers a client's fault: the server's Close with its code, then the connection ends
    /// (nothing more is read from a client that broke the protocol).
    async fn fail(&self, code: u16) {
        let _turn = self.sending.lock().await;
        let mut message = Some(Message::Close(Some(close_frame(code, ""))));
        let _ = poll_fn(|cx| self.poll_send(cx, &mut message, Phase::Failed)).await;
        let mut conn = self.lock();
        self.set_phase(&mut conn, Phase::Gone);
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
                Phase::Open | Phase::Failed | Phase::Gone => return Poll::Ready(()),
            }
            match ready!(Pin::new(&mut conn.socket).poll_next(cx)) {
                Some(Ok(ts::Message::Close(_))) | Some(Err(_)) | None => {
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

/// axum's message as the protocol layer sends it.
fn into_protocol(message: Message) -> ts::Message {
    // axum's text is valid UTF-8 already: the check passes, and the bytes are not copied.
    let text = |text: axum::extract::ws::Utf8Bytes| {
        let bytes = bytes::Bytes::from(text);
        ts::Utf8Bytes::try_from(bytes.clone())
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into())
    };
    match message {
        Message::Text(t) => ts::Message::Text(text(t)),
        Message::Binary(b) => ts::Message::Binary(b),
        Message::Ping(b) => ts::Message::Ping(b),
        Message::Pong(b) => ts::Message::Pong(b),
        Message::Close(frame) => ts::Message::Close(frame.map(|f| TsCloseFrame {
            code: f.code.into(),
            reason: text(f.reason),
        })),
    }
}

/// A frame read by the protocol layer, as axum's message (`None` for a raw frame, which a
/// server never reads).
fn from_protocol(message: ts::Message) -> Option<Message> {
    let text = |text: ts::Utf8Bytes| {
        let bytes = bytes::Bytes::from(text);
        axum::extract::ws::Utf8Bytes::try_from(bytes.clone())
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into())
    };
    Some(match message {
        ts::Message::Text(t) => Message::Text(text(t)),
        ts::Message::Binary(b) => Message::Binary(b),
        ts::Message::Ping(b) => Message::Ping(b),
        ts::Message::Pong(b) => Message::Pong(b),
        ts::Message::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
            code: f.code.into(),
            reason: text(f.reason),
        })),
        ts::Message::Frame(_) => return None,
    })
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: close::truncate_reason(reason).into(),
    }
}

pin_project! {
    /// The task of a leased socket: runs the handler's future beside the lease, and once either
    /// the lease ends, the client leaves or the handler returns, finishes the close.
    ///
    /// Hand-written rather than an `async fn` so that nothing is stored twice: the handler's
    /// future, the lease watcher and a pointer to the connection are all a socket keeps while it
    /// is open. What closing needs (the handshake and a timer) is allocated when it starts.
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Serve<App> {
        #[pin]
        app: App,
        end: LeaseEnd,
        app_done: bool,
        shared: Arc<Shared>,
        close_timeout: Duration,
        closing: Option<Box<Closing>>,
        open: Option<OpenSocket>,
    }
}

/// The close under way: the handshake, and the deadline for it and for the handler.
struct Closing {
    handshake: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// Runs `handler` on `shared`'s connection, held to `verified`'s lease, and completes once the
/// connection is released. When the lease ends or the client leaves first, the handler's `recv`
/// yields `None` and it has the close timeout to finish (to pass a close on, say) before it is
/// dropped.
pub(crate) fn serve<P, F, Fut>(
    shared: Arc<Shared>,
    verified: Identity<P>,
    protocol: Option<String>,
    guard: Guard<P>,
    open: Option<(OpenSocket, Revocation)>,
    recheck: Option<Recheck>,
    handler: F,
) -> Serve<Fut>
where
    F: FnOnce(LeasedSocket<P>) -> Fut,
    Fut: Future<Output = ()>,
{
    let options = guard.socket_options();
    let close_timeout = options.close_timeout;
    let (open, shutdown) = open.unzip();
    let end =
        LeaseEnd::new(verified.lease(), options.unavailable_grace, shutdown).with_recheck(recheck);
    let app = handler(LeasedSocket {
        verified,
        protocol,
        shared: Arc::clone(&shared),
        guard,
        pending: None,
    });
    Serve {
        app,
        end,
        app_done: false,
        shared,
        close_timeout,
        closing: None,
        open,
    }
}

impl<App> Future for Serve<App>
where
    App: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            let Some(closing) = this.closing.as_mut() else {
                // Open. The lease first: once it has ended, nothing else may happen on the socket.
                let handshake: Pin<Box<dyn Future<Output = ()> + Send>> =
                    if let Some(code) = this.shared.failure() {
                        // The client broke the protocol or a size limit: answer with its code
                        // (before the lease: a failed connection can carry no other Close).
                        Box::pin(fail(Arc::clone(this.shared), code))
                    } else if let Poll::Ready((code, reason)) = Pin::new(&mut *this.end).poll(cx) {
                        Box::pin(finish(Arc::clone(this.shared), code, reason))
                    } else if this.app.as_mut().poll(cx).is_ready() {
                        *this.app_done = true;
                        if let Some(code) = this.shared.failure() {
                            // The handler's last read met the client's fault.
                            Box::pin(fail(Arc::clone(this.shared), code))
                        } else if this.shared.is_finished()
                            && this.shared.poll_client_close(cx).is_ready()
                        {
                            // Most handlers return after the client's Close: then only the
                            // reply is left to flush, usually at once, with no timer to set.
                            return Poll::Ready(());
                        } else {
                            Box::pin(finish(Arc::clone(this.shared), close::NORMAL, ""))
                        }
                    } else if this.shared.poll_finished(cx).is_ready() {
                        // Finished: the phase moves no more, so this reading of it holds.
                        match this.shared.failure() {
                            Some(code) => Box::pin(fail(Arc::clone(this.shared), code)),
                            None => {
                                let shared = Arc::clone(this.shared);
                                Box::pin(poll_fn(move |cx| shared.poll_client_close(cx)))
                            }
                        }
                    } else {
                        return Poll::Pending;
                    };
                *this.closing = Some(Box::new(Closing {
                    handshake: Some(handshake),
                    deadline: Box::pin(tokio::time::sleep(*this.close_timeout)),
                }));
                continue;
            };
            if closing.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some(handshake) = &mut closing.handshake {
                if handshake.as_mut().poll(cx).is_ready() {
                    closing.handshake = None;
                }
            }
            if !*this.app_done && this.app.as_mut().poll(cx).is_ready() {
                *this.app_done = true;
            }
            return if closing.handshake.is_none() && *this.app_done {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
    }
}

/// Closes with `code` unless a close is already under way, then waits for the client's Close.
/// The caller bounds it with the close timeout.
async fn finish(shared: Arc<Shared>, code: u16, reason: &'static str) {
    shared.finish(code, reason).await;
}

/// Answers a client's fault with its close code (see [`Shared::fail`]).
async fn fail(shared: Arc<Shared>, code: u16) {
    shared.fail(code).await;
}

/// Closes a socket right after the upgrade (accept-then-close, failed first-message auth): sends
/// Close and waits up to `timeout` for the client's, then drops the connection.
pub(crate) async fn close_now(shared: &Shared, code: u16, reason: &'static str, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, shared.finish(code, reason)).await;
}

/// Sends Close and drops the connection without reading anything more from the client (it sent
/// more than it may before authenticating).
pub(crate) async fn close_and_drop(
    shared: &Shared,
    code: u16,
    reason: &'static str,
    timeout: Duration,
) {
    if shared.decide() {
        let _ = tokio::time::timeout(timeout, shared.send_close(close_frame(code, reason))).await;
    }
}
