//! The local registry: from a key's digest to the signal its open leases hold.
//!
//! One slot per key with open leases (not one per lease, not one channel per key). Every change
//! happens under the registry's lock, so an event, a lookup's read and a gap's re-read of the
//! same key are applied one after the other, each judged by the record version it carries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::credential::{CredentialDigest, DigestMap};
use crate::lease::{LeaseStatus, Revocation, Revoker};

use super::protocol::Change;

/// `revoked_at` of a slot that is not revoked.
const NOT_REVOKED: u64 = 0;
/// `revoked_at` of a slot revoked by a re-read that found no record (no version to compare).
const REVOKED_UNVERSIONED: u64 = u64::MAX;

/// The signal of one key's open leases.
pub(super) struct Slot {
    revoker: Revoker,
    /// The newest record version this slot has seen (read or event). Written under the lock.
    version: AtomicU64,
    /// The version of the change that revoked it, or [`NOT_REVOKED`]. Written under the lock.
    revoked_at: AtomicU64,
}

impl Slot {
    fn new(version: u64, status: LeaseStatus) -> Arc<Self> {
        let revoker = Revoker::new();
        revoker.set(status);
        Arc::new(Self {
            revoker,
            version: AtomicU64::new(version),
            revoked_at: AtomicU64::new(NOT_REVOKED),
        })
    }

    fn revoke(&self, at: u64) {
        self.revoked_at.store(at, Ordering::Relaxed);
        self.revoker.revoke();
    }

    fn is_revoked(&self) -> bool {
        self.revoked_at.load(Ordering::Relaxed) != NOT_REVOKED
    }

    fn bump(&self, version: u64) {
        self.version.fetch_max(version, Ordering::Relaxed);
    }
}

/// What a gap's re-read found for one key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reread {
    /// No record: unknown key (deleted, expired, or a Redis that restarted empty).
    Missing,
    /// A record at this version.
    Found { version: u64, active: bool },
}

#[derive(Default)]
pub(super) struct Registry {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    slots: DigestMap<Arc<Slot>>,
    /// No live subscription: new slots start `Unavailable`.
    gap: bool,
    /// The number of slots after the last sweep (sweeps are amortised against growth).
    swept_len: usize,
}

impl State {
    fn sweep(&mut self) {
        self.slots.retain(|_, slot| slot.revoker.has_leases());
        self.swept_len = self.slots.len();
    }

    fn status(&self) -> LeaseStatus {
        if self.gap {
            LeaseStatus::Unavailable
        } else {
            LeaseStatus::Active
        }
    }

    fn remove_if_current(&mut self, key: &CredentialDigest, slot: &Arc<Slot>) {
        if self.slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            self.slots.remove(key);
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before a lookup reads the record: the key's slot (new if none) and a receiver on it, so an
    /// event that lands while the read is in flight is applied to it.
    pub(super) fn watch(&self, key: CredentialDigest) -> (Arc<Slot>, Revocation) {
        let mut state = self.lock();
        if state.slots.len() >= (2 * state.swept_len).max(64) {
            state.sweep();
        }
        let status = state.status();
        let slot = Arc::clone(
            state
                .slots
                .entry(key)
                .or_insert_with(|| Slot::new(0, status)),
        );
        let revocation = slot.revoker.subscribe();
        (slot, revocation)
    }

    /// After the read found the record active at `version`: the receiver to grant, or `None`
    /// when a newer change already ended it (the read was stale: refuse the key).
    pub(super) fn grant(
        &self,
        key: CredentialDigest,
        slot: &Arc<Slot>,
        revocation: Revocation,
        version: u64,
    ) -> Option<Revocation> {
        let mut state = self.lock();
        let revoked_at = slot.revoked_at.load(Ordering::Relaxed);
        if revoked_at == NOT_REVOKED {
            slot.bump(version);
            return Some(revocation);
        }
        if revoked_at > version {
            return None;
        }
        // Revoked by a change the read already reflects: the read is newer, lease on a new slot.
        drop(revocation);
        let status = state.status();
        let current = state
            .slots
            .entry(key)
            .or_insert_with(|| Slot::new(version, status));
        current.bump(version);
        Some(current.revoker.subscribe())
    }

    /// An event from the channel.
    pub(super) fn apply(&self, key: &CredentialDigest, version: u64, change: Change) {
        let mut state = self.lock();
        let Some(slot) = state.slots.get(key) else {
            return;
        };
        if version <= slot.version.load(Ordering::Relaxed) {
            return; // older than what this replica has seen: out of order
        }
        if change.ends_leases() {
            let slot = Arc::clone(slot);
            slot.revoke(version);
            state.slots.remove(key);
        } else {
            slot.bump(version);
        }
    }

    /// The subscription is gone: every open lease is `Unavailable` until the re-read.
    pub(super) fn begin_gap(&self) {
        let mut state = self.lock();
        state.gap = true;
        state.sweep();
        for slot in state.slots.values() {
            slot.revoker.set(LeaseStatus::Unavailable);
        }
    }

    /// Every slot with open leases, to re-read after resubscribing.
    pub(super) fn snapshot(&self) -> Vec<(CredentialDigest, Arc<Slot>)> {
        let mut state = self.lock();
        state.sweep();
        state
            .slots
            .iter()
            .map(|(key, slot)| (*key, Arc::clone(slot)))
            .collect()
    }

    /// A re-read's result for one slot of the snapshot.
    pub(super) fn reread(&self, key: &CredentialDigest, slot: &Arc<Slot>, found: Reread) {
        let mut state = self.lock();
        if slot.is_revoked() {
            return;
        }
        match found {
            Reread::Missing => {
                slot.revoke(REVOKED_UNVERSIONED);
                state.remove_if_current(key, slot);
            }
            Reread::Found {
                version,
                active: false,
            } => {
                slot.revoke(version);
                state.remove_if_current(key, slot);
            }
            // Authoritative, even when older than what the slot has seen: the subscriber applies
            // no event while it re-reads (they wait in the subscription), and a Redis restored
            // from an older state has moved its counter back, so later events must not be
            // judged against the versions of before.
            Reread::Found { version, .. } => slot.version.store(version, Ordering::Relaxed),
        }
    }

    /// Every open lease has been re-read: the survivors are `Active` again.
    pub(super) fn end_gap(&self) {
        let mut state = self.lock();
        state.gap = false;
        for slot in state.slots.values() {
            slot.revoker.set(LeaseStatus::Active);
        }
    }

    /// Drops the slots whose leases have all gone.
    pub(super) fn sweep(&self) {
        self.lock().sweep();
    }

    /// How many keys have open leases (after dropping the slots whose leases have all gone).
    pub(super) fn len(&self) -> usize {
        let mut state = self.lock();
        state.sweep();
        state.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CredentialDigest {
        CredentialDigest::of(&[n])
    }

    #[test]
    fn an_older_event_is_ignored_and_a_newer_one_revokes() {
        let registry = Registry::default();
        let (slot, revocation) = registry.watch(key(1));
        let lease = registry
            .grant(key(1), &slot, revocation, 5)
            .expect("active");
        registry.apply(&key(1), 4, Change::Inactive);
        assert_eq!(lease.status(), LeaseStatus::Active, "older than the read");
        registry.apply(&key(1), 6, Change::Active);
        registry.apply(&key(1), 6, Change::Inactive);
        assert_eq!(lease.status(), LeaseStatus::Active, "same version: seen");
        registry.apply(&key(1), 7, Change::Inactive);
        assert_eq!(lease.status(), LeaseStatus::Revoked);
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn an_event_during_the_read_decides_against_a_stale_read_only() {
        let registry = Registry::default();
        // Paused at 6 while a read of version 5 was in flight: refuse.
        let (slot, revocation) = registry.watch(key(1));
        registry.apply(&key(1), 6, Change::Inactive);
        assert!(registry.grant(key(1), &slot, revocation, 5).is_none());
        // Paused at 6, resumed at 7, and the read saw 7: grant, on a fresh signal.
        let (slot, revocation) = registry.watch(key(2));
        registry.apply(&key(2), 6, Change::Inactive);
        let lease = registry
            .grant(key(2), &slot, revocation, 7)
            .expect("newer read");
        assert_eq!(lease.status(), LeaseStatus::Active);
        registry.apply(&key(2), 7, Change::Active);
        registry.apply(&key(2), 8, Change::Deleted);
        assert_eq!(lease.status(), LeaseStatus::Revoked);
    }

    #[test]
    fn a_gap_makes_leases_unavailable_and_the_reread_decides() {
        let registry = Registry::default();
        let mut leases = Vec::new();
        for n in 0..4 {
            let (slot, revocation) = registry.watch(key(n));
            leases.push(
                registry
                    .grant(key(n), &slot, revocation, 10)
                    .expect("active"),
            );
        }
        registry.begin_gap();
        assert!(leases
            .iter()
            .all(|l| l.status() == LeaseStatus::Unavailable));
        // A lease granted during the gap starts unavailable too.
        let (slot, revocation) = registry.watch(key(9));
        let late = registry
            .grant(key(9), &slot, revocation, 11)
            .expect("active");
        assert_eq!(late.status(), LeaseStatus::Unavailable);
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.len(), 5);
        for (digest, slot) in &snapshot {
            let found = if *digest == key(0) {
                Reread::Missing
            } else {
                Reread::Found {
                    version: 12,
                    active: *digest != key(1),
                }
            };
            registry.reread(digest, slot, found);
        }
        registry.end_gap();
        let statuses: Vec<_> = leases.iter().map(Revocation::status).collect();
        assert_eq!(
            statuses,
            [
                LeaseStatus::Revoked,
                LeaseStatus::Revoked,
                LeaseStatus::Active,
                LeaseStatus::Active
            ]
        );
        assert_eq!(late.status(), LeaseStatus::Active);
    }

    #[test]
    fn a_reread_resets_versions_so_a_counter_moved_back_still_revokes() {
        let registry = Registry::default();
        let (slot, revocation) = registry.watch(key(1));
        let lease = registry
            .grant(key(1), &slot, revocation, 100)
            .expect("active");
        registry.begin_gap();
        // Redis came back from an older snapshot: the record is at 80, the counter behind 100.
        for (digest, slot) in registry.snapshot() {
            registry.reread(
                &digest,
                &slot,
                Reread::Found {
                    version: 80,
                    active: true,
                },
            );
        }
        registry.end_gap();
        assert_eq!(lease.status(), LeaseStatus::Active);
        registry.apply(&key(1), 91, Change::Inactive);
        assert_eq!(lease.status(), LeaseStatus::Revoked);
    }

    #[test]
    fn slots_go_when_their_leases_go() {
        let registry = Registry::default();
        let (slot, revocation) = registry.watch(key(1));
        let lease = registry
            .grant(key(1), &slot, revocation, 1)
            .expect("active");
        drop(slot);
        assert_eq!(registry.len(), 1);
        drop(lease);
        assert_eq!(registry.len(), 0);
        // A lookup that found nothing leaves nothing behind either.
        drop(registry.watch(key(2)));
        assert_eq!(registry.len(), 0);
    }
}
