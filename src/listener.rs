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

/// Checks a listener address before serving.
///
/// With authentication enabled, or on a loopback address (`127.0.0.0/8`, `::1`), it always passes.
/// Otherwise it refuses (or warns, if the application chose [`InsecureListenerPolicy::Warn`]).
///
/// ```
/// use axum_keyguard::{check_listener, InsecureListenerPolicy as Policy};
///
/// assert!(check_listener("127.0.0.1:8000".parse()?, false, Policy::Refuse).is_ok());
/// assert!(check_listener("0.0.0.0:8000".parse()?, false, Policy::Refuse).is_err());
/// assert!(check_listener("0.0.0.0:8000".parse()?, true, Policy::Refuse).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_listener(
    addr: SocketAddr,
    auth_enabled: bool,
    policy: InsecureListenerPolicy,
) -> Result<(), ConfigError> {
    if auth_enabled || addr.ip().is_loopback() {
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
        let check = |a: &str, auth, p| check_listener(a.parse().expect("addr"), auth, p).is_ok();
        let refuse = InsecureListenerPolicy::Refuse;
        assert!(check("127.0.0.1:1", false, refuse));
        assert!(check("127.8.9.10:1", false, refuse));
        assert!(check("[::1]:1", false, refuse));
        assert!(!check("0.0.0.0:1", false, refuse));
        assert!(!check("[::]:1", false, refuse));
        assert!(!check("192.168.1.2:1", false, refuse));
        assert!(check("0.0.0.0:1", false, InsecureListenerPolicy::Warn));
        assert!(check("0.0.0.0:1", true, refuse));
    }
}
