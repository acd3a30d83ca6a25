//! Leases: how long a verified credential stays valid, the signal that ends it early, and the
//! watcher that tells an open socket when it has ended.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use tokio::time::Sleep;

use crate::rejection::close;

/// How long a verified credential stays valid: an optional expiry and an optional revocation
/// signal.
///
/// The WebSocket helpers ([`ws::GuardedUpgrade`](crate::ws::GuardedUpgrade)) hold an open socket
/// to its lease and close it with `4001` when the lease expires or is revoked.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    expires_at: Option<SystemTime>,
    revocation: Option<Revocation>,
    refresh: Option<Refresh>,
}

/// Reads the credential's record as it is now (the principal, type-erased): how an open socket
/// sees a record that changed under it without being revoked (`MemoryStore::update`), to check
/// its route's requirements again. `None` once the record is gone or inactive.
#[derive(Clone)]
pub(crate) struct Refresh(Arc<dyn Fn() -> Option<Box<dyn Any + Send>> + Send + Sync>);

impl Refresh {
    pub(crate) fn new(
        read: impl Fn() -> Option<Box<dyn Any + Send>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(read))
    }

    /// The record now.
    pub(crate) fn read(&self) -> Option<Box<dyn Any + Send>> {
        (self.0)()
    }
}

impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refresh(..)")
    }
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
            refresh: None,
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

    /// Adds the reader of the record as it is now (with a revocation signal whose
    /// [`Revoker::record_changed`] is called when the record changes).
    pub(crate) fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = Some(refresh);
        self
    }

    pub(crate) fn refresh(&self) -> Option<&Refresh> {
        self.refresh.as_ref()
    }

    /// Replaces the reader (a verifier that maps its principal maps the record it reads).
    pub(crate) fn map_refresh(mut self, map: impl FnOnce(Refresh) -> Refresh) -> Self {
        self.refresh = self.refresh.map(map);
        self
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
/// Cheap to clone. When every [`Revoker`] of the signal is dropped without revoking, the lease
/// counts as revoked (fail closed).
pub struct Revocation {
    signal: Arc<Signal>,
    /// This receiver's waker slot, taken the first time it waits.
    slot: Option<usize>,
    /// The last change this receiver has seen, for [`changed`](Self::changed).
    seen: u64,
}

/// The shared state of a signal. One lock guards the status and the waiting receivers, so a
/// receiver that reads the status and registers its waker cannot miss a change in between.
struct Signal {
    state: Mutex<SignalState>,
}

struct SignalState {
    status: LeaseStatus,
    /// Bumped on every change.
    version: u64,
    /// One slot per waiting receiver (a waker until it is woken); freed when the receiver drops.
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a change of the record without a change of status; wakes every waiting receiver.
    fn touch(&self) {
        let mut state = self.lock();
        if state.status == LeaseStatus::Revoked {
            return;
        }
        state.version += 1;
        for waker in state.wakers.iter_mut().filter_map(Option::take) {
            waker.wake();
        }
    }

    /// Moves to `status` unless revoked already (final); wakes every waiting receiver.
    fn set(&self, status: LeaseStatus) {
        let mut state = self.lock();
        if state.status == LeaseStatus::Revoked || state.status == status {
            return;
        }
        state.status = status;
        state.version += 1;
        for waker in state.wakers.iter_mut().filter_map(Option::take) {
            waker.wake();
        }
    }
}

impl Revocation {
    /// The current status.
    #[must_use]
    pub fn status(&self) -> LeaseStatus {
        self.signal.lock().status
    }

    /// Waits for the next change and returns the new status.
    pub async fn changed(&mut self) -> LeaseStatus {
        std::future::poll_fn(|cx| {
            let (status, version) = self.poll_register(cx);
            if version == self.seen {
                return Poll::Pending;
            }
            self.seen = version;
            Poll::Ready(status)
        })
        .await
    }

    /// Reads the status and, under the same lock, registers `cx`'s waker for the next change.
    pub(crate) fn poll_register(&mut self, cx: &Context<'_>) -> (LeaseStatus, u64) {
        let mut state = self.signal.lock();
        let state = &mut *state;
        let slot = *self.slot.get_or_insert_with(|| match state.free.pop() {
            Some(slot) => slot,
            None => {
                state.wakers.push(None);
                state.wakers.len() - 1
            }
        });
        match &mut state.wakers[slot] {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            entry => *entry = Some(cx.waker().clone()),
        }
        (state.status, state.version)
    }
}

impl Clone for Revocation {
    fn clone(&self) -> Self {
        Self {
            signal: Arc::clone(&self.signal),
            slot: None,
            seen: self.seen,
        }
    }
}

impl Drop for Revocation {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut state = self.signal.lock();
            state.wakers[slot] = None;
            state.free.push(slot);
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
    handle: Arc<RevokerHandle>,
}

/// Shared by a revoker's clones; the last one to go revokes.
struct RevokerHandle {
    signal: Arc<Signal>,
}

impl Drop for RevokerHandle {
    fn drop(&mut self) {
        self.signal.set(LeaseStatus::Revoked);
    }
}

impl Revoker {
    /// A new signal in the [`Active`](LeaseStatus::Active) state.
    #[must_use]
    pub fn new() -> Self {
        let signal = Signal {
            state: Mutex::new(SignalState {
                status: LeaseStatus::Active,
                version: 0,
                wakers: Vec::new(),
                free: Vec::new(),
            }),
        };
        Self {
            handle: Arc::new(RevokerHandle {
                signal: Arc::new(signal),
            }),
        }
    }

    /// A receiver for a new lease.
    #[must_use]
    pub fn subscribe(&self) -> Revocation {
        let signal = Arc::clone(&self.handle.signal);
        let seen = signal.lock().version;
        Revocation {
            signal,
            slot: None,
            seen,
        }
    }

    /// Sets the status. [`Revoked`](LeaseStatus::Revoked) is final: later calls are ignored.
    pub fn set(&self, status: LeaseStatus) {
        self.handle.signal.set(status);
    }

    /// Tells every lease holding this signal that its record changed while staying valid: an
    /// open socket whose record can be read again ([`KeyRecord::with_current`]) checks its
    /// route's requirements ([`Require`](crate::Require)) against the record as it is now, and
    /// closes with `4003` where they are no longer met. Ignored once revoked.
    ///
    /// [`KeyRecord::with_current`]: crate::KeyRecord::with_current
    ///
    /// ```
    /// use axum_keyguard::{LeaseStatus, Revoker};
    ///
    /// let revoker = Revoker::new();
    /// let lease_signal = revoker.subscribe();
    /// revoker.record_changed(); // the record's scopes changed, say
    /// assert_eq!(lease_signal.status(), LeaseStatus::Active);
    /// ```
    pub fn record_changed(&self) {
        self.handle.signal.touch();
    }

    /// Revokes every lease holding this signal.
    pub fn revoke(&self) {
        self.set(LeaseStatus::Revoked);
    }

    /// The current status.
    #[must_use]
    pub fn status(&self) -> LeaseStatus {
        self.handle.signal.lock().status
    }

    /// Whether any lease still holds a receiver of this signal.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn has_leases(&self) -> bool {
        Arc::strong_count(&self.handle.signal) > 1
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
            .field("leases", &(Arc::strong_count(&self.handle.signal) - 1))
            .finish()
    }
}

/// Resolves when the lease ends: expiry, revocation, or an unavailable store past the grace.
///
/// The timers are boxed and made only when needed (a lease with an expiry; a store that went
/// unavailable), so a revocable lease without expiry keeps only its signal: a few words.
pub(crate) struct LeaseEnd {
    /// The server's shutdown signal: `1001`, ahead of everything else.
    shutdown: Option<Revocation>,
    revocation: Option<Revocation>,
    expiry: Option<Pin<Box<Sleep>>>,
    grace: Duration,
    grace_over: Option<Pin<Box<Sleep>>>,
    /// Checks the route's requirements against the record as it is now: `false` ends the lease
    /// with `4003`. Run when the signal reports a change of the record.
    recheck: Option<Recheck>,
    /// The signal's last change seen.
    seen: u64,
}

/// See [`LeaseEnd`]'s `recheck`.
pub(crate) type Recheck = Box<dyn FnMut() -> bool + Send>;

impl LeaseEnd {
    pub(crate) fn new(lease: &Lease, grace: Duration, shutdown: Option<Revocation>) -> Self {
        let revocation = lease.revocation().cloned();
        Self {
            seen: revocation.as_ref().map_or(0, |r| r.seen),
            recheck: None,
            shutdown,
            revocation,
            expiry: lease.expires_at().map(|at| {
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                Box::pin(tokio::time::sleep(left))
            }),
            grace,
            grace_over: None,
        }
    }

    /// Checks `recheck` whenever the record changes under the lease.
    pub(crate) fn with_recheck(mut self, recheck: Option<Recheck>) -> Self {
        self.recheck = recheck;
        self
    }
}

impl Future for LeaseEnd {
    type Output = (u16, &'static str);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(shutdown) = &mut this.shutdown {
            if shutdown.poll_register(cx).0 != LeaseStatus::Active {
                return Poll::Ready((close::GOING_AWAY, close::SHUTTING_DOWN));
            }
        }
        // The signal first: a revocation wins over an expiry at the same moment.
        if let Some(revocation) = &mut this.revocation {
            let (status, version) = revocation.poll_register(cx);
            match status {
                LeaseStatus::Active => {
                    this.grace_over = None;
                    if version != this.seen {
                        this.seen = version;
                        if let Some(recheck) = &mut this.recheck {
                            if !recheck() {
                                return Poll::Ready((close::FORBIDDEN, close::FORBIDDEN_REASON));
                            }
                        }
                    }
                }
                LeaseStatus::Unavailable => {
                    if this.grace_over.is_none() {
                        this.grace_over = Some(Box::pin(tokio::time::sleep(this.grace)));
                    }
                }
                _ => return Poll::Ready((close::UNAUTHORIZED, close::REVOKED)),
            }
        }
        if let Some(expiry) = &mut this.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready((close::UNAUTHORIZED, close::EXPIRED));
            }
        }
        if let Some(grace_over) = &mut this.grace_over {
            if grace_over.as_mut().poll(cx).is_ready() {
                return Poll::Ready((close::INTERNAL_ERROR, close::UNAVAILABLE));
            }
        }
        Poll::Pending
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
    async fn every_waiting_receiver_wakes_and_slots_are_reused() {
        let revoker = Revoker::new();
        let waiting: Vec<_> = (0..100)
            .map(|_| {
                let mut lease = revoker.subscribe();
                tokio::spawn(async move { lease.changed().await })
            })
            .collect();
        tokio::task::yield_now().await;
        // A change that comes back before anyone looks is still a change.
        revoker.set(LeaseStatus::Unavailable);
        revoker.set(LeaseStatus::Active);
        for task in waiting {
            assert_eq!(task.await.expect("task"), LeaseStatus::Active);
        }
        {
            let state = revoker.handle.signal.lock();
            assert!(state.wakers.len() <= 100 && state.wakers.iter().all(Option::is_none));
            assert_eq!(state.free.len(), state.wakers.len(), "every slot was freed");
        }
        // New receivers take the freed slots instead of growing the table.
        let mut again = revoker.subscribe();
        let waiter = tokio::spawn(async move { again.changed().await });
        tokio::task::yield_now().await;
        revoker.revoke();
        assert_eq!(waiter.await.expect("task"), LeaseStatus::Revoked);
        assert!(revoker.handle.signal.lock().wakers.len() <= 100);
    }

    #[tokio::test]
    async fn a_clone_waits_on_its_own() {
        let revoker = Revoker::new();
        let mut a = revoker.subscribe();
        let mut b = a.clone();
        let first = tokio::spawn(async move { a.changed().await });
        let second = tokio::spawn(async move { b.changed().await });
        tokio::task::yield_now().await;
        revoker.revoke();
        assert_eq!(first.await.expect("task"), LeaseStatus::Revoked);
        assert_eq!(second.await.expect("task"), LeaseStatus::Revoked);
    }

    #[tokio::test]
    async fn a_dropped_revoker_revokes() {
        let revoker = Revoker::new();
        let mut lease = revoker.subscribe();
        let clone = revoker.clone();
        drop(revoker);
        assert_eq!(
            lease.status(),
            LeaseStatus::Active,
            "a clone still holds it"
        );
        drop(clone);
        assert_eq!(lease.status(), LeaseStatus::Revoked);
        assert_eq!(lease.changed().await, LeaseStatus::Revoked);
    }
}
