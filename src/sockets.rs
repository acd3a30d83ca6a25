//! What a guard knows about sockets, below the WebSocket code that uses it: the first-message
//! options, and the shutdown signal that closes every guarded socket with `1001`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::lease::{Revocation, Revoker};

/// First-message authentication: the handshake carries no credential, and the first frame must be
/// a text JSON object `{"type":"auth","session_api_key":"…"}` or `{"type":"auth","token":"…"}`
/// within a timeout (10 s by default).
///
/// The credential fields default to `session_api_key` and `token`, the two spellings agent
/// servers and terminal servers use; [`with_fields`](Self::with_fields) replaces them. These close the socket with
/// `4001`: a wrong key, a `type` other than `"auth"`, non-JSON, a JSON value that is not an object,
/// an object with a duplicate member, two credential fields with different values, a binary
/// frame, the timeout, and more than [`with_max_len`](Self::with_max_len) bytes (8 KiB by
/// default) read from the client before the auth frame is complete — fragments, pings and frame
/// headers included, so an unauthenticated client can never make the server buffer more than that.
/// The auth frame never reaches the handler, and neither do later frames that look like it
/// (`type` `"auth"` and no other members than the credential fields).
///
/// ```
/// use std::time::Duration;
/// use axum_keyguard::{ws::FirstMessage, Guard, Keys};
///
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["a-long-random-key"])?)
///     .with_first_message_auth(
///         FirstMessage::new()
///             .with_fields(["token"])
///             .with_timeout(Duration::from_secs(5)),
///     )
///     .build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FirstMessage {
    pub(crate) fields: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_len: usize,
}

impl FirstMessage {
    /// The credential in field `session_api_key` or `token`, within 10 s, in at most 8 KiB.
    #[must_use]
    pub fn new() -> Self {
        Self {
            fields: vec!["session_api_key".to_owned(), "token".to_owned()],
            timeout: Duration::from_secs(10),
            max_len: 8 * 1024,
        }
    }

    /// The fields that may hold the credential. If a frame has several of them, their values must
    /// agree.
    #[must_use]
    pub fn with_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// How long the client has to send the auth frame (default 10 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most bytes read from the client before it has authenticated (default 8 KiB): the
    /// auth frame with its framing, and anything sent before it. More closes the socket with
    /// `4001` at once. [`Guard`](crate::Guard) checks at build time that this leaves room for a credential of
    /// the guard's maximum length.
    #[must_use]
    pub fn with_max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }
}

impl Default for FirstMessage {
    fn default() -> Self {
        Self::new()
    }
}

/// Closes every guarded socket with `1001` (going away) when the application shuts down.
///
/// Give the guard a handle with [`GuardBuilder::with_shutdown`](crate::GuardBuilder::with_shutdown);
/// every socket served through [`GuardedUpgrade`](crate::ws::GuardedUpgrade) then watches it
/// beside its lease. [`close_all`](Self::close_all) makes each one send Close `1001` (never
/// `4001`: the credential did not fail) and complete the close handshake within the guard's close
/// timeout; [`drained`](Self::drained) waits until every one of them has finished. Sockets that
/// open after `close_all` are closed with `1001` at once.
///
/// `axum::serve` does not wait for upgraded connections, so wait for `drained` after it returns:
///
/// ```no_run
/// use axum::{routing::any, Router};
/// use axum_keyguard::{ws::{GuardedUpgrade, Shutdown}, Guard, KeyId, Keys};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let shutdown = Shutdown::new();
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["a-long-random-key"])?)
///     .with_shutdown(&shutdown)
///     .build()?;
/// let app = Router::new()
///     .route("/sockets/events", any(|ws: GuardedUpgrade<KeyId>| async move {
///         ws.on_upgrade(|_socket| async {})
///     }))
///     .route_layer(guard.layer());
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// let signal = shutdown.clone();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         let _ = tokio::signal::ctrl_c().await;
///         signal.close_all(); // every guarded socket: Close 1001
///     })
///     .await?;
/// shutdown.drained().await; // bounded by the guard's close timeout
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    revoker: Revoker,
    open: AtomicUsize,
    idle: Notify,
}

impl Shutdown {
    /// A handle that has not been triggered.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                revoker: Revoker::new(),
                open: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Closes every guarded socket with `1001`, now and from now on.
    pub fn close_all(&self) {
        self.inner.revoker.revoke();
    }

    /// Whether [`close_all`](Self::close_all) was called.
    #[must_use]
    pub fn is_closing(&self) -> bool {
        self.inner.revoker.status() != crate::LeaseStatus::Active
    }

    /// How many guarded sockets are open (or closing).
    #[must_use]
    pub fn open_sockets(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Waits until no guarded socket is open. Each socket ends within the guard's close timeout
    /// of [`close_all`](Self::close_all).
    pub async fn drained(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.open_sockets() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Counts a socket as open until the returned token drops; its signal fires on `close_all`.
    pub(crate) fn enter(&self) -> (OpenSocket, Revocation) {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        let token = OpenSocket {
            inner: Arc::clone(&self.inner),
        };
        (token, self.inner.revoker.subscribe())
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("closing", &self.is_closing())
            .field("open_sockets", &self.open_sockets())
            .finish()
    }
}

/// One open socket, counted by its [`Shutdown`].
pub(crate) struct OpenSocket {
    inner: Arc<Inner>,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
