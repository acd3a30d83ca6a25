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

pub(crate) mod first_message;
mod io;
mod shutdown;
mod socket;
mod upgrade;

pub use first_message::FirstMessage;
pub use shutdown::Shutdown;
pub use socket::{LeasedSocket, SocketClosed};
pub use upgrade::GuardedUpgrade;

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
