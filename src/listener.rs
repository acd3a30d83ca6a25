//! Refusing to serve without authentication on a reachable address.

use std::net::SocketAddr;

use crate::error::{ConfigError, ConfigErrorKind};

/// What to do when a listener on a non-loopback address has authentication disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InsecureListenerPolicy {
    /// Return a [`ConfigError`] (the default).
    #[default]
    Refuse,
    /// Log a warning and go on.
    Warn,
}

/// Checks the address of a listener that serves **without authentication** (a guard built
/// with [`with_anonymous`](crate::GuardBuilder::with_anonymous), or no guard at all) before
/// serving: a loopback address (`127.0.0.0/8`, `::1`) passes; any other is refused, or warned
/// about if the application chose [`InsecureListenerPolicy::Warn`]. Listeners that authenticate
/// need no check.
///
/// ```
/// use axum_keyguard::{check_unauthenticated_listener as check, InsecureListenerPolicy as Policy};
///
/// assert!(check("127.0.0.1:8000".parse()?, Policy::Refuse).is_ok());
/// assert!(check("0.0.0.0:8000".parse()?, Policy::Refuse).is_err());
/// assert!(check("0.0.0.0:8000".parse()?, Policy::Warn).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_unauthenticated_listener(
    addr: SocketAddr,
    policy: InsecureListenerPolicy,
) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    match policy {
        InsecureListenerPolicy::Refuse => Err(ConfigError::new(
            ConfigErrorKind::InsecureListener,
            format!(
                "refusing to listen on non-loopback address {addr} with authentication disabled"
            ),
        )),
        InsecureListenerPolicy::Warn => {
            tracing::warn!(
                target: "axum_keyguard",
                %addr,
                "listening on a non-loopback address with authentication disabled"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_run_without_auth() {
        let check =
            |a: &str, p| check_unauthenticated_listener(a.parse().expect("addr"), p).is_ok();
        let refuse = InsecureListenerPolicy::Refuse;
        assert!(check("127.0.0.1:1", refuse));
        assert!(check("127.8.9.10:1", refuse));
        assert!(check("[::1]:1", refuse));
        assert!(!check("0.0.0.0:1", refuse));
        assert!(!check("[::]:1", refuse));
        assert!(!check("192.168.1.2:1", refuse));
        assert!(check("0.0.0.0:1", InsecureListenerPolicy::Warn));
    }
}
