//! KeyRecord keys kept in a store: records with state, looked up by digest.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::credential::{Credential, CredentialDigest, DigestMap};
use crate::lease::{Lease, Refresh, Revocation, Revoker};
use crate::verify::{Denial, Grant, Verdict, Verifier};

/// The default time a store lookup may take before the request gets `503`.
pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where session keys live: an in-process map, or a store shared by every replica of a server.
///
/// Lookups are keyed by the SHA-256 [digest](CredentialDigest) of the presented key, so the raw key
/// never leaves the process. A lookup returns the application's record, whether it is active (a
/// workspace that is running), its expiry, and a [`Revocation`] signal that fires when the key is
/// revoked or the record stops being active.
///
/// **Take the subscription before reading the state.** A store shared by several replicas (Redis:
/// a key per record, pub/sub for revocation events) subscribes to the record's channel *first* and
/// then reads it, so a revocation that lands between the two is never missed; an event published
/// on any replica then closes the matching sockets on every replica. While its pub/sub connection
/// is down, such a store sets its signals to [`LeaseStatus::Unavailable`](crate::LeaseStatus), and
/// open sockets close with `1011` after the grace period unless it recovers.
pub trait SessionStore: Send + Sync + 'static {
    /// The application's record for a key (a workspace, a user session).
    type Record: Clone + Send + Sync + 'static;

    /// Looks up the key with this digest: `Ok(None)` when unknown, `Err` when the store cannot
    /// answer.
    fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> impl Future<Output = Result<Option<KeyRecord<Self::Record>>, StoreError>> + Send;

    /// The answer of [`lookup`](Self::lookup) at once, for a store that has it without I/O (an
    /// in-process map such as [`MemoryStore`]); `None` (the default) when it must wait. With an
    /// answer here the guard needs no future, no task and no allocation for the lookup. It must
    /// be the answer `lookup` would give.
    fn lookup_now(
        &self,
        key: &CredentialDigest,
    ) -> Option<Result<Option<KeyRecord<Self::Record>>, StoreError>> {
        let _ = key;
        None
    }
}

/// What a store knows about one key.
#[derive(Debug, Clone)]
pub struct KeyRecord<R> {
    record: R,
    active: bool,
    expires_at: Option<SystemTime>,
    revocation: Option<Revocation>,
    refresh: Option<Refresh>,
}

impl<R> KeyRecord<R> {
    /// An active record (a workspace that is running): its key authenticates.
    pub fn active(record: R) -> Self {
        Self {
            record,
            active: true,
            expires_at: None,
            revocation: None,
            refresh: None,
        }
    }

    /// An inactive record (a paused workspace): its key is refused exactly like an unknown key
    /// (same status, same body).
    pub fn inactive(record: R) -> Self {
        Self {
            active: false,
            ..Self::active(record)
        }
    }

    /// The key stops being valid at `at` (a TTL).
    #[must_use]
    pub fn with_expiry(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The signal that revokes leases granted for this key.
    #[must_use]
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(revocation);
        self
    }

    /// How an open socket reads this key's record again (`None` once it is gone or inactive).
    /// With a revocation signal whose [`Revoker::record_changed`] the store calls when the record
    /// changes, open sockets check their route's requirements ([`Require`](crate::Require)) again
    /// and close with `4003` where the new record no longer meets them. [`MemoryStore`] does
    /// this for [`MemoryStore::update`].
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use axum_keyguard::{KeyRecord, Revoker};
    ///
    /// let scopes = Arc::new(Mutex::new(vec!["logs:read".to_owned()]));
    /// let revoker = Revoker::new();
    /// let now = Arc::clone(&scopes);
    /// let record = KeyRecord::active(scopes.lock().unwrap().clone())
    ///     .with_revocation(revoker.subscribe())
    ///     .with_current(move || Some(now.lock().unwrap().clone()));
    /// // Later, the scopes change: tell the open leases.
    /// scopes.lock().unwrap().clear();
    /// revoker.record_changed();
    /// ```
    #[must_use]
    pub fn with_current<F>(mut self, current: F) -> Self
    where
        F: Fn() -> Option<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        self.refresh = Some(Refresh::new(move || {
            current().map(|record| Box::new(record) as Box<dyn std::any::Any + Send>)
        }));
        self
    }
}

/// A store could not answer. Becomes `503` (with `Retry-After`); the message is only for logs.
#[derive(Clone)]
pub struct StoreError {
    message: Arc<str>,
}

impl StoreError {
    /// A store failure described by `message` (never put a key in it).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Arc::from(message.into()),
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreError").field(&self.message).finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session store: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

type Lookup<R> = Result<Option<KeyRecord<R>>, StoreError>;
type InFlight<R> = Shared<BoxFuture<'static, Lookup<R>>>;

/// A [`Verifier`] over a [`SessionStore`].
///
/// An unknown key, an inactive record or an expired one is `401 invalid_token`, all with the same
/// body; a store error, a panicking lookup or one slower than the timeout (default 2 s) is
/// `503`. A store that answers without waiting (such as [`MemoryStore`]) is answered on the spot,
/// with no task and no timer; lookups that wait run as one task per key, shared by every
/// concurrent request for that key (two requests whose very first polls overlap on different
/// threads may each reach the store once). Failures are handed to those waiters and never cached.
///
/// ```
/// use axum_keyguard::{CredentialDigest, Guard, MemoryStore, SessionKeys};
///
/// let store = MemoryStore::new();
/// store.insert(CredentialDigest::of(b"session-key-0001"), "workspace-1".to_owned());
/// let guard = Guard::builder().with_verifier(SessionKeys::new(store)).build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
pub struct SessionKeys<S: SessionStore> {
    inner: Arc<SessionsInner<S>>,
    timeout: Duration,
}

struct SessionsInner<S: SessionStore> {
    store: S,
    in_flight: Mutex<DigestMap<InFlight<S::Record>>>,
    /// `in_flight.len()`, written under its lock, read without it.
    waiting_count: AtomicUsize,
}

impl<S: SessionStore> SessionKeys<S> {
    /// A verifier over `store` with the default timeout.
    pub fn new(store: S) -> Self {
        Self {
            inner: Arc::new(SessionsInner {
                store,
                in_flight: Mutex::new(DigestMap::default()),
                waiting_count: AtomicUsize::new(0),
            }),
            timeout: DEFAULT_STORE_TIMEOUT,
        }
    }

    /// Sets how long a lookup may take before the request gets `503`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }
}

impl<S: SessionStore> Clone for SessionKeys<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            timeout: self.timeout,
        }
    }
}

impl<S: SessionStore> fmt::Debug for SessionKeys<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A lookup's first answer: at once (the store did not wait), or a call to wait for.
enum Started<R> {
    Now(Lookup<R>),
    Waiting(InFlight<R>),
}

impl<S: SessionStore> SessionsInner<S> {
    /// Starts the lookup for `key`. A store that answers without waiting (an in-process map)
    /// answers on the first poll, right here: no task, no timer. A lookup that has to wait runs as
    /// its own task, shared with every concurrent caller of the same key, so it finishes (and
    /// leaves the in-flight map) even when every caller has gone away.
    fn start(self: &Arc<Self>, key: CredentialDigest, timeout: Duration) -> Started<S::Record> {
        if let Some(shared) = self.waiting(&key) {
            return Started::Waiting(shared);
        }
        // A store that panics fails closed (503), like one that errs.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store.lookup_now(&key)))
        {
            Ok(Some(result)) => return Started::Now(result),
            Ok(None) => {}
            Err(_) => return Started::Now(Err(StoreError::new("lookup panicked"))),
        }
        let this = Arc::clone(self);
        let mut lookup = async move { this.store.lookup(&key).await }.boxed();
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lookup
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        }));
        match first {
            Ok(Poll::Ready(result)) => return Started::Now(result),
            Ok(Poll::Pending) => {}
            Err(_) => return Started::Now(Err(StoreError::new("lookup panicked"))),
        }
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another caller may have started the same key while this one took its first poll (on
        // another thread): join it, so waiting lookups stay one per key.
        if let Some(shared) = in_flight.get(&key) {
            return Started::Waiting(shared.clone());
        }
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            // Leaves the map however the lookup ends, a panic included.
            let _leave = LeaveInFlight { inner: &this, key };
            match tokio::time::timeout(timeout, lookup).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::new("lookup timed out")),
            }
        });
        let shared = async move {
            task.await
                .unwrap_or_else(|_| Err(StoreError::new("lookup task failed")))
        }
        .boxed()
        .shared();
        in_flight.insert(key, shared.clone());
        self.waiting_count.store(in_flight.len(), Ordering::Release);
        Started::Waiting(shared)
    }

    fn waiting(&self, key: &CredentialDigest) -> Option<InFlight<S::Record>> {
        // Most of the time nothing is waiting: skip the lock.
        if self.waiting_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// Removes a key's in-flight lookup when its task ends.
struct LeaveInFlight<'a, S: SessionStore> {
    inner: &'a SessionsInner<S>,
    key: CredentialDigest,
}

impl<S: SessionStore> Drop for LeaveInFlight<'_, S> {
    fn drop(&mut self) {
        let mut in_flight = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        in_flight.remove(&self.key);
        self.inner
            .waiting_count
            .store(in_flight.len(), Ordering::Release);
    }
}

/// What a lookup's result means for the credential.
fn decide<R>(lookup: Lookup<R>) -> Result<Grant<R>, Denial> {
    match lookup {
        Ok(Some(session)) if session.active => {
            if session.expires_at.is_some_and(|at| at <= SystemTime::now()) {
                return Err(Denial::invalid());
            }
            let mut lease = session
                .expires_at
                .map_or_else(Lease::unbounded, Lease::until);
            if let Some(revocation) = session.revocation {
                lease = lease.with_revocation(revocation);
            }
            if let Some(refresh) = session.refresh {
                lease = lease.with_refresh(refresh);
            }
            Ok(Grant::new(session.record).with_lease(lease))
        }
        Ok(_) => Err(Denial::invalid()),
        Err(error) => Err(Denial::unavailable().with_source(error)),
    }
}

impl<S: SessionStore> Verifier for SessionKeys<S> {
    type Principal = S::Record;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<S::Record> {
        match self.inner.start(*credential.digest(), self.timeout) {
            Started::Now(lookup) => Verdict::ready(decide(lookup)),
            Started::Waiting(shared) => Verdict::pending(async move { decide(shared.await) }),
        }
    }
}

/// An in-process [`SessionStore`]: the single-server case, and the model for shared stores.
///
/// Cloning shares the map. Marking a record inactive or revoking its key signals every lease
/// granted for it, so open sockets close with `4001`; marking it active again lets the key
/// authenticate new connections.
pub struct MemoryStore<R> {
    entries: Arc<Mutex<DigestMap<Entry<R>>>>,
}

struct Entry<R> {
    record: R,
    active: bool,
    expires_at: Option<SystemTime>,
    revoker: Revoker,
    /// The reader open sockets check the record with, made at the key's first lookup and shared
    /// by every lease after it (not one allocation per request).
    refresh: Option<Refresh>,
}

impl<R> Clone for MemoryStore<R> {
    fn clone(&self) -> Self {
        Self {
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<R> Default for MemoryStore<R> {
    fn default() -> Self {
        Self {
            entries: Arc::new(Mutex::new(DigestMap::default())),
        }
    }
}

impl<R> fmt::Debug for MemoryStore<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .finish()
    }
}

impl<R> MemoryStore<R> {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with_entries<T>(&self, f: impl FnOnce(&mut DigestMap<Entry<R>>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adds (or replaces) an active record for the key with this digest. Replacing revokes the
    /// leases of the old record.
    pub fn insert(&self, key: CredentialDigest, record: R) {
        self.insert_entry(key, record, None);
    }

    /// Like [`insert`](Self::insert), with the key valid until `expires_at`.
    pub fn insert_with_expiry(&self, key: CredentialDigest, record: R, expires_at: SystemTime) {
        self.insert_entry(key, record, Some(expires_at));
    }

    fn insert_entry(&self, key: CredentialDigest, record: R, expires_at: Option<SystemTime>) {
        let entry = Entry {
            record,
            active: true,
            expires_at,
            revoker: Revoker::new(),
            refresh: None,
        };
        if let Some(old) = self.with_entries(|entries| entries.insert(key, entry)) {
            old.revoker.revoke();
        }
    }

    /// Marks the record of this key active or not. Going inactive revokes every lease granted
    /// for it at once; going active again lets the key authenticate new connections. Returns
    /// whether the key is known.
    pub fn set_active(&self, key: &CredentialDigest, active: bool) -> bool {
        self.with_entries(|entries| {
            let Some(entry) = entries.get_mut(key) else {
                return false;
            };
            if entry.active && !active {
                entry.revoker.revoke();
            } else if !entry.active && active {
                entry.revoker = Revoker::new();
            }
            entry.active = active;
            true
        })
    }

    /// Replaces the record of this key and keeps its leases: open sockets check their route's
    /// requirements ([`Require`](crate::Require)) again against the new record, and close with
    /// `4003` where it no longer meets them (a scope withdrawn). New requests see the new record.
    /// Returns whether the key is known. ([`insert`](Self::insert) over a known key revokes
    /// instead: `4001`.)
    ///
    /// ```
    /// use axum_keyguard::{CredentialDigest, MemoryStore};
    ///
    /// let store = MemoryStore::new();
    /// let key = CredentialDigest::of(b"sandbox-key-0001");
    /// store.insert(key, vec!["logs:read", "logs:write"]);
    /// assert!(store.update(&key, vec!["logs:read"]));
    /// ```
    pub fn update(&self, key: &CredentialDigest, record: R) -> bool {
        self.with_entries(|entries| match entries.get_mut(key) {
            Some(entry) => {
                entry.record = record;
                entry.revoker.record_changed();
                true
            }
            None => false,
        })
    }

    /// Removes the key and revokes every lease granted for it. Returns whether it was known.
    pub fn revoke(&self, key: &CredentialDigest) -> bool {
        match self.with_entries(|entries| entries.remove(key)) {
            Some(entry) => {
                entry.revoker.revoke();
                true
            }
            None => false,
        }
    }

    /// How many keys the store holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.with_entries(|entries| entries.len())
    }

    /// Whether the store holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<R: Clone + Send + Sync + 'static> MemoryStore<R> {
    /// Reads the active record of `key` as it is now, for open sockets.
    fn refresh(&self, key: CredentialDigest) -> Refresh {
        let entries = Arc::downgrade(&self.entries);
        Refresh::new(move || {
            let entries = entries.upgrade()?;
            let entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.get(&key).filter(|entry| entry.active)?;
            Some(Box::new(entry.record.clone()) as Box<dyn std::any::Any + Send>)
        })
    }
}

impl<R: Clone + Send + Sync + 'static> SessionStore for MemoryStore<R> {
    type Record = R;

    fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> impl Future<Output = Result<Option<KeyRecord<R>>, StoreError>> + Send {
        std::future::ready(Ok(self.read(key)))
    }

    fn lookup_now(
        &self,
        key: &CredentialDigest,
    ) -> Option<Result<Option<KeyRecord<R>>, StoreError>> {
        Some(Ok(self.read(key)))
    }
}

impl<R: Clone + Send + Sync + 'static> MemoryStore<R> {
    /// The record of `key` now. The subscription is taken under the same lock as the state is
    /// read.
    fn read(&self, key: &CredentialDigest) -> Option<KeyRecord<R>> {
        self.with_entries(|entries| {
            entries.get_mut(key).map(|entry| {
                let refresh = entry.active.then(|| {
                    entry
                        .refresh
                        .get_or_insert_with(|| self.refresh(*key))
                        .clone()
                });
                KeyRecord {
                    record: entry.record.clone(),
                    active: entry.active,
                    expires_at: entry.expires_at,
                    revocation: entry.active.then(|| entry.revoker.subscribe()),
                    refresh,
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Guard;

    #[test]
    fn a_store_that_answers_at_once_needs_no_task_and_no_timer() {
        let store = MemoryStore::new();
        store.insert(CredentialDigest::of(b"sandbox-key"), "sandbox-1".to_owned());
        let guard = Guard::builder()
            .with_verifier(SessionKeys::new(store))
            .build()
            .expect("guard");
        // No timers on this runtime: a spawned lookup under a timeout would panic here.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (parts, ()) = http::Request::get("/api")
            .header("host", "localhost")
            .header("x-session-api-key", "sandbox-key")
            .body(())
            .expect("request")
            .into_parts();
        let verified = runtime
            .block_on(guard.resolve(&parts))
            .expect("a known key");
        assert_eq!(verified.principal(), "sandbox-1");
        assert!(verified.lease().revocation().is_some());
    }
}
