//! A WebSocket held to its credential's lease.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::guard::{SocketOptions, Verified};
use crate::lease::{Lease, LeaseStatus};
use crate::source::is_auth_frame;
use crate::ws::close_code;

/// How many frames may wait between the connection and the handler, each way.
const BUFFER: usize = 16;

/// An authenticated WebSocket whose life is tied to its credential.
///
/// A driver owns the connection: it forwards text and binary frames both ways, and when the
/// credential expires or is revoked it decides at once to close. From that moment no frame reaches
/// [`recv`](Self::recv) and none from [`send`](Self::send) reaches the client; it sends Close `4001`
/// with a short reason, waits a bounded time for the client's Close, drops the connection, and
/// ends the handler. If the key store becomes unavailable the socket keeps running for the grace
/// period, then closes with `1011`.
pub struct LeasedSocket<P> {
    verified: Verified<P>,
    protocol: Option<String>,
    inbound: mpsc::Receiver<Message>,
    outbound: mpsc::Sender<Outbound>,
}

enum Outbound {
    Frame(Message),
    Close(u16, Cow<'static, str>),
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
        self.inbound.recv().await
    }

    /// Sends a frame. Fails once the socket is closed; a frame sent after the lease ended is never
    /// delivered.
    pub async fn send(&self, message: Message) -> Result<(), SocketClosed> {
        self.outbound
            .send(Outbound::Frame(message))
            .await
            .map_err(|_| SocketClosed)
    }

    /// Closes the socket with `code` and `reason` (cut to 123 bytes).
    pub async fn close(self, code: u16, reason: &str) {
        let reason = super::truncate_close_reason(reason).to_owned();
        let _ = self
            .outbound
            .send(Outbound::Close(code, Cow::Owned(reason)))
            .await;
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

/// Runs `handler` on a socket held to `verified`'s lease, and returns once the connection is
/// released. When the driver ends first (lease, client gone), the handler's `recv` yields `None`
/// and it has the close timeout to finish (to pass a close on, say) before it is dropped.
pub(crate) async fn serve<P, F, Fut>(
    socket: WebSocket,
    verified: Verified<P>,
    protocol: Option<String>,
    options: SocketOptions,
    handler: F,
) where
    F: FnOnce(LeasedSocket<P>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (to_app, inbound) = mpsc::channel(BUFFER);
    let (outbound, from_app) = mpsc::channel(BUFFER);
    let lease = verified.lease().clone();
    let leased = LeasedSocket {
        verified,
        protocol,
        inbound,
        outbound,
    };
    let close_timeout = options.close_timeout;
    let driver = drive(socket, lease, options, to_app, from_app);
    let app = handler(leased);
    tokio::pin!(driver, app);
    tokio::select! {
        () = &mut driver => {
            let _ = tokio::time::timeout(close_timeout, app).await;
        }
        () = &mut app => driver.await,
    }
}

async fn drive(
    socket: WebSocket,
    lease: Lease,
    options: SocketOptions,
    to_app: mpsc::Sender<Message>,
    mut from_app: mpsc::Receiver<Outbound>,
) {
    let auth_fields = options.first_message.as_ref().map(|f| f.fields.clone());
    let (mut sink, mut stream) = socket.split();
    let end = lease_end(lease, options.unavailable_grace);
    tokio::pin!(end);
    let (code, reason): (u16, Cow<'static, str>) = loop {
        tokio::select! {
            biased;
            (code, reason) = &mut end => break (code, reason.into()),
            inbound = stream.next() => match inbound {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if let (Message::Text(text), Some(fields)) = (&message, &auth_fields) {
                        if is_auth_frame(text, fields) {
                            continue;
                        }
                    }
                    tokio::select! {
                        biased;
                        (code, reason) = &mut end => break (code, reason.into()),
                        _ = to_app.send(message) => {}
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // The client closed (its Close is answered by the protocol layer): the handler
                // gets the frame, so a proxy can pass the code on.
                Some(Ok(message @ Message::Close(_))) => {
                    let _ = to_app.try_send(message);
                    let _ = tokio::time::timeout(options.close_timeout, sink.close()).await;
                    return;
                }
                Some(Err(_)) | None => {
                    let _ = tokio::time::timeout(options.close_timeout, sink.close()).await;
                    return;
                }
            },
            outbound = from_app.recv() => match outbound {
                Some(Outbound::Frame(message)) => {
                    tokio::select! {
                        biased;
                        (code, reason) = &mut end => break (code, reason.into()),
                        sent = sink.send(message) => if sent.is_err() { return },
                    }
                }
                Some(Outbound::Close(code, reason)) => break (code, reason),
                None => break (close_code::NORMAL, Cow::Borrowed("")),
            },
        }
    };
    // Decided: nothing more reaches the handler, and nothing it queued reaches the client.
    drop(to_app);
    drop(from_app);
    close(&mut sink, &mut stream, code, reason, options.close_timeout).await;
}

/// Sends Close and waits up to `timeout` for the client's Close; the caller then drops the
/// connection.
pub(crate) async fn close<S, R>(
    sink: &mut S,
    stream: &mut R,
    code: u16,
    reason: Cow<'static, str>,
    timeout: Duration,
) where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: super::truncate_close_reason(&reason).into(),
    };
    let deadline = StdInstant::now() + timeout;
    let sent = tokio::time::timeout(timeout, sink.send(Message::Close(Some(frame)))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let remaining = deadline.saturating_duration_since(StdInstant::now());
    let _ = tokio::time::timeout(remaining, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Closes a socket right after the upgrade (accept-then-close, failed first-message auth).
pub(crate) async fn close_now(
    socket: WebSocket,
    code: u16,
    reason: &'static str,
    timeout: Duration,
) {
    let (mut sink, mut stream) = socket.split();
    close(&mut sink, &mut stream, code, Cow::Borrowed(reason), timeout).await;
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
                    tokio::select! {
                        _ = revocation.changed() => {}
                        () = tokio::time::sleep(grace) => {
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
