//! Leases: how long a verified credential stays valid, and the signal that ends it early.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

/// How long a verified credential stays valid: an optional expiry and an optional revocation
/// signal.
///
/// The WebSocket helpers ([`ws::GuardedUpgrade`](crate::ws::GuardedUpgrade)) hold an open socket
/// to its lease and close it with `4001` when the lease expires or is revoked.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    expires_at: Option<SystemTime>,
    revocation: Option<Revocation>,
}

impl Lease {
    /// Valid until revoked by other means (capability keys).
    #[must_use]
    pub fn unbounded() -> Self {
        Self::default()
    }

    /// Valid until `at` (a token's `exp` plus leeway, a store's TTL).
    #[must_use]
    pub fn until(at: SystemTime) -> Self {
        Self {
            expires_at: Some(at),
            revocation: None,
        }
    }

    /// Adds a revocation signal.
    #[must_use]
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(revocation);
        self
    }

    /// When the credential stops being valid, if it ever does by itself.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The revocation signal, if the credential can be revoked while in use.
    #[must_use]
    pub fn revocation(&self) -> Option<&Revocation> {
        self.revocation.as_ref()
    }
}

/// The state of a lease as its issuer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseStatus {
    /// Valid.
    Active,
    /// The issuer cannot tell right now (its store is unreachable). Open sockets keep running for
    /// a grace period, then close with `1011`.
    Unavailable,
    /// Revoked for good: the key was revoked, or its record is no longer active. Final.
    Revoked,
}

/// The receiving side of a revocation signal, held by every lease the credential was granted.
///
/// Cheap to clone. When the [`Revoker`] is dropped without revoking, the lease counts as revoked
/// (fail closed).
#[derive(Clone)]
pub struct Revocation {
    rx: watch::Receiver<LeaseStatus>,
}

impl Revocation {
    /// The current status.
    #[must_use]
    pub fn status(&self) -> LeaseStatus {
        if self.rx.has_changed().is_err() {
            return LeaseStatus::Revoked;
        }
        *self.rx.borrow()
    }

    /// Waits for the next change and returns the new status.
    pub async fn changed(&mut self) -> LeaseStatus {
        match self.rx.changed().await {
            Ok(()) => *self.rx.borrow_and_update(),
            Err(_) => LeaseStatus::Revoked,
        }
    }
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("status", &self.status())
            .finish()
    }
}

/// The sending side of a revocation signal, kept by whatever issued the credential (a store
/// entry, a pub/sub subscription).
///
/// ```
/// use axum_keyguard::{LeaseStatus, Revoker};
///
/// let revoker = Revoker::new();
/// let lease_signal = revoker.subscribe();
/// assert_eq!(lease_signal.status(), LeaseStatus::Active);
/// revoker.revoke();
/// assert_eq!(lease_signal.status(), LeaseStatus::Revoked);
/// revoker.set(LeaseStatus::Active); // ignored: revocation is final
/// assert_eq!(lease_signal.status(), LeaseStatus::Revoked);
/// ```
#[derive(Clone)]
pub struct Revoker {
    tx: Arc<watch::Sender<LeaseStatus>>,
}

impl Revoker {
    /// A new signal in the [`Active`](LeaseStatus::Active) state.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(LeaseStatus::Active)),
        }
    }

    /// A receiver for a new lease.
    #[must_use]
    pub fn subscribe(&self) -> Revocation {
        Revocation {
            rx: self.tx.subscribe(),
        }
    }

    /// Sets the status. [`Revoked`](LeaseStatus::Revoked) is final: later calls are ignored.
    pub fn set(&self, status: LeaseStatus) {
        self.tx.send_if_modified(|current| {
            let change = *current != LeaseStatus::Revoked && *current != status;
            if change {
                *current = status;
            }
            change
        });
    }

    /// Revokes every lease holding this signal.
    pub fn revoke(&self) {
        self.set(LeaseStatus::Revoked);
    }

    /// The current status.
    #[must_use]
    pub fn status(&self) -> LeaseStatus {
        *self.tx.borrow()
    }
}

impl Default for Revoker {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Revoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revoker")
            .field("status", &self.status())
            .field("leases", &self.tx.receiver_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_reach_every_subscriber_and_revocation_is_final() {
        let revoker = Revoker::new();
        let mut a = revoker.subscribe();
        let b = revoker.subscribe();
        revoker.set(LeaseStatus::Unavailable);
        assert_eq!(a.changed().await, LeaseStatus::Unavailable);
        revoker.set(LeaseStatus::Active);
        assert_eq!(a.changed().await, LeaseStatus::Active);
        revoker.revoke();
        assert_eq!(a.changed().await, LeaseStatus::Revoked);
        revoker.set(LeaseStatus::Active);
        assert_eq!(b.status(), LeaseStatus::Revoked);
    }

    #[tokio::test]
    async fn a_dropped_revoker_revokes() {
        let revoker = Revoker::new();
        let mut lease = revoker.subscribe();
        drop(revoker);
        assert_eq!(lease.status(), LeaseStatus::Revoked);
        assert_eq!(lease.changed().await, LeaseStatus::Revoked);
    }
}
