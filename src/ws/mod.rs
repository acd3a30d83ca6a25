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
//! revoked (and with `4003` when its record changes so that the route's
//! [requirements](crate::Require) are no longer met), delivers no application frame after that decision in either direction, completes the
//! close handshake and releases the connection. It also carries out the opt-in modes: first-message
//! auth ([`FirstMessage`]) and accept-then-close.

pub(crate) mod auth_frame;
mod first_message;
mod io;
mod socket;
mod upgrade;

pub use crate::sockets::{FirstMessage, Shutdown};
pub use socket::{LeasedSocket, SocketClosed};
pub use upgrade::GuardedUpgrade;

/// The close codes of this crate's own (the private-use range 4000–4999). The RFC codes it also
/// sends are axum's: `1000` (handler finished), `1001` (shutdown), `1011` (key store unavailable
/// past the grace period), in `axum::extract::ws::close_code`.
pub mod close_code {
    /// The credential is missing, invalid, expired or revoked.
    pub const UNAUTHORIZED: u16 = crate::rejection::close::UNAUTHORIZED;
    /// The credential is valid but not allowed on this socket.
    pub const FORBIDDEN: u16 = crate::rejection::close::FORBIDDEN;
}
