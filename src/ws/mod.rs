//! WebSocket helpers: an upgrade extractor that finishes authentication on the socket, a socket
//! held to its credential's lease, and the close codes.
//!
//! Before an upgrade a failed check is an HTTP status (see [`AuthRejection`](crate::AuthRejection));
//! after it, the same rejection is a close frame with one of these codes and a short reason
//! ([`AuthRejection::close_code`](crate::AuthRejection::close_code),
//! [`AuthRejection::close_reason`](crate::AuthRejection::close_reason)).
//!
//! [`GuardedUpgrade`] is the extractor for WebSocket routes. It runs the guard (or reads the
//! layer's result), selects a subprotocol in the client's order, and hands the callback a
//! [`LeasedSocket`]: a socket that closes itself with `4001` when the credential expires or is
//! revoked, delivers no application frame after that decision in either direction, completes the
//! close handshake and releases the connection. It also carries out the opt-in modes: first-message
//! auth ([`FirstMessage`]) and accept-then-close.

mod socket;
mod upgrade;

pub use socket::{LeasedSocket, SocketClosed};
pub use upgrade::GuardedUpgrade;

use std::time::Duration;

/// The default time a client has to send its auth frame.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// First-message authentication: the handshake carries no credential, the first frame must be a
/// text JSON object `{"type":"auth","session_api_key":"…"}` within a timeout.
///
/// Wrong key, wrong `type`, non-JSON, a JSON value that is not an object, a binary frame or the
/// timeout close the socket with `4001`. The auth frame never reaches the handler, and neither do
/// later frames that look like it (`type` `"auth"` and no other keys than the credential fields).
///
/// ```
/// use std::time::Duration;
/// use axum_keyguard::{ws::FirstMessage, Guard, Keys};
///
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["k1"])?)
///     .first_message_auth(
///         FirstMessage::new()
///             .with_fields(["session_api_key", "token"])
///             .with_timeout(Duration::from_secs(5)),
///     )
///     .build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FirstMessage {
    pub(crate) fields: Vec<String>,
    pub(crate) timeout: Duration,
}

impl FirstMessage {
    /// The credential in field `session_api_key`, within 10 s.
    #[must_use]
    pub fn new() -> Self {
        Self {
            fields: vec!["session_api_key".to_owned()],
            timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }

    /// The fields that may hold the credential (for example `token`). If a frame has several of
    /// them, their values must agree.
    #[must_use]
    pub fn with_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// How long the client has to send the auth frame.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Default for FirstMessage {
    fn default() -> Self {
        Self::new()
    }
}

/// Close codes (RFC 6455 §7.4 and the private-use range 4000–4999).
pub mod close_code {
    /// The credential is missing, invalid, expired or revoked.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The credential is valid but not allowed on this socket.
    pub const FORBIDDEN: u16 = 4003;
    /// The server cannot check the credential (key store unavailable past its grace period).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A normal closure (the handler finished).
    pub const NORMAL: u16 = 1000;
}

/// The most bytes a close reason may have (RFC 6455 §5.5: 125-byte control payload less the code).
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// Cuts `reason` to at most [`MAX_CLOSE_REASON_LEN`] bytes on a UTF-8 character boundary.
///
/// ```
/// use axum_keyguard::ws::{truncate_close_reason, MAX_CLOSE_REASON_LEN};
///
/// let long = "é".repeat(100); // 200 bytes
/// let cut = truncate_close_reason(&long);
/// assert!(cut.len() <= MAX_CLOSE_REASON_LEN);
/// assert_eq!(cut, "é".repeat(61));
/// ```
#[must_use]
pub fn truncate_close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_LEN {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_are_kept_and_long_ones_cut_on_a_char_boundary() {
        assert_eq!(truncate_close_reason("bye"), "bye");
        let exact = "a".repeat(123);
        assert_eq!(truncate_close_reason(&exact), exact);
        let over = format!("{}€", "a".repeat(121)); // 124 bytes, € starts at 121
        assert_eq!(truncate_close_reason(&over), "a".repeat(121));
    }
}
