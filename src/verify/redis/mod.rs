//! KeyRecord keys in Redis, shared by every replica: records by digest, revocation by pub/sub.
//!
//! `protocol` holds the key names, scripts and event format (the wire protocol); `registry` the
//! local map from digest to open leases; `subscriber` the one subscription per store, its
//! liveness probe and the re-read after a gap.

mod protocol;
mod registry;
mod subscriber;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::credential::CredentialDigest;
use crate::verify::store::{KeyRecord, SessionStore, StoreError};

use protocol::{Change, Keys, RawRecord};
use registry::Registry;

/// The key prefix used when none is set: `keyguard:`.
pub(crate) const DEFAULT_REDIS_PREFIX: &str = protocol::DEFAULT_PREFIX;
/// How often each store publishes its liveness probe when none is set (1 s).
pub(crate) const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long without its own probe coming back before a store declares a gap, when none is set
/// (3 s).
pub(crate) const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting, and each command, may take when none is set (2 s).
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How many records one round trip re-reads after a gap, when none is set.
pub(crate) const DEFAULT_REREAD_BATCH: usize = 1000;

/// A [`SessionStore`] in Redis, shared by every replica that uses the same Redis and prefix.
///
/// Records (any `Serialize + DeserializeOwned` type, stored as JSON) are keyed by the hex of the
/// key's SHA-256 [digest](CredentialDigest): the raw key is never stored or sent. Writes
/// ([`insert`](Self::insert), [`set_active`](Self::set_active), [`revoke`](Self::revoke)) change
/// the record and publish its event in one Lua script, with a version number; the format is a
/// documented [wire protocol](#wire-protocol), so a control plane in another language (or
/// `redis-cli` alone) can pause and revoke keys too.
///
/// Each store holds one command connection (a redis-rs connection manager) and **one**
/// subscription, whatever the number of keys, and a local registry from digest to the signal of
/// the open leases. An event published on any replica ends the matching leases on every replica
/// (their sockets close with `4001`). When the subscription drops, or goes silent (the store's
/// own liveness probe, published through the channel, stops coming back), every open lease is
/// [`Unavailable`](crate::LeaseStatus::Unavailable) until the store has resubscribed **and
/// re-read every open lease's record** (pipelined, in batches): survivors are active again, the
/// others revoked, so an event lost in the gap still takes effect. A gap longer than the guard's
/// [grace](crate::GuardBuilder::with_unavailable_grace) closes sockets with `1011`.
///
/// Nothing is cached: every lookup reads Redis (one `HMGET`), so a lookup right after a pause
/// has returned, on any replica, refuses the key. A lookup that fails is a [`StoreError`], which
/// [`SessionKeys`](crate::SessionKeys) turns into `503` and never caches.
///
/// `Debug`, logs and errors show the server's host and port, never the URL's user or password.
///
/// ```no_run
/// use axum_keyguard::{CredentialDigest, Guard, RedisStore, SessionKeys};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store: RedisStore<String> = RedisStore::builder("redis://127.0.0.1:6379")
///     .with_prefix("my-app:")
///     .connect()
///     .await?;
/// store.insert(CredentialDigest::of(b"session-key-0001"), &"workspace-1".to_owned()).await?;
/// let guard = Guard::builder().with_verifier(SessionKeys::new(store.clone())).build()?;
/// // On any replica:
/// store.set_active(&CredentialDigest::of(b"session-key-0001"), false).await?;
/// # Ok(())
/// # }
/// ```
///
#[doc = include_str!("../../docs/redis.md")]
pub struct RedisStore<R> {
    handle: Arc<Handle>,
    _record: PhantomData<fn() -> R>,
}

/// Owns the subscriber task: it stops when the last clone of the store goes.
struct Handle {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the store's clones and its subscriber task share.
struct Shared {
    client: redis::Client,
    commands: ConnectionManager,
    keys: Keys,
    registry: Registry,
    config: Config,
    /// This store's probe nonce: it waits for its own probes.
    nonce: String,
    health: watch::Sender<RedisHealth>,
    last_reread: Mutex<Option<Reread>>,
    /// `host:port`, for `Debug` and logs.
    server: String,
    /// The URL's user name and password: scrubbed from every error message.
    secrets: Vec<String>,
    insert: redis::Script,
    set_active: redis::Script,
    delete: redis::Script,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    probe_interval: Duration,
    probe_timeout: Duration,
    timeout: Duration,
    batch: usize,
}

impl Shared {
    /// A [`StoreError`] for a failed Redis call, with no secret in it.
    fn error(&self, what: &str, error: &redis::RedisError) -> StoreError {
        StoreError::new(format!(
            "redis {} at {}: {}",
            what,
            self.server,
            self.scrub(error)
        ))
    }

    fn scrub(&self, error: &impl fmt::Display) -> String {
        let mut text = error.to_string();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }

    fn set_health(&self, health: RedisHealth) {
        self.health.send_replace(health);
    }

    fn record_key(&self, key: &CredentialDigest) -> (String, String) {
        let hex = key.to_hex();
        (self.keys.record(&hex), hex)
    }

    /// Runs one of the write scripts; applies its own event locally at once, so this replica
    /// does not wait for the channel (and a write made during a gap still ends local leases).
    async fn write(
        &self,
        script: &redis::Script,
        key: &CredentialDigest,
        args: &[&str],
        change: Change,
    ) -> Result<bool, StoreError> {
        let (record_key, hex) = self.record_key(key);
        let mut invocation = script.key(record_key);
        invocation
            .key(&self.keys.version)
            .arg(&self.keys.channel)
            .arg(&hex);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.commands.clone();
        let version: u64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.error("write", &e))?;
        if version == 0 {
            return Ok(false);
        }
        self.registry.apply(key, version, change);
        Ok(true)
    }
}

/// What a [`RedisStore`] can tell about its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisHealth {
    /// Subscribed, and the liveness probe comes back: events are delivered.
    Live {
        /// When the store became live (after the re-read of the last gap).
        since: SystemTime,
    },
    /// No working subscription (connecting, disconnected, or silent): open leases are
    /// `Unavailable` and events may be missed until the store resubscribes and re-reads.
    Gap {
        /// When the gap began.
        since: SystemTime,
    },
}

impl RedisHealth {
    /// Whether events are being delivered.
    ///
    /// ```
    /// use axum_keyguard::RedisHealth;
    ///
    /// assert!(!RedisHealth::Gap { since: std::time::SystemTime::now() }.is_live());
    /// ```
    #[must_use]
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live { .. })
    }
}

/// The figures of the last re-read of open leases after a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reread {
    keys: usize,
    round_trips: usize,
    took: Duration,
}

impl Reread {
    /// How many keys with open leases were re-read.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// How many round trips to Redis it took (one pipelined batch each).
    #[must_use]
    pub fn round_trips(&self) -> usize {
        self.round_trips
    }

    /// How long it took.
    #[must_use]
    pub fn took(&self) -> Duration {
        self.took
    }
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[must_use]
pub struct RedisStoreBuilder<R> {
    url: String,
    prefix: String,
    config: Config,
    _record: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RedisStoreBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R> RedisStoreBuilder<R> {
    /// Sets the prefix of every key and of the channel (default `keyguard:`), so
    /// that several applications can share one Redis.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets how often the store publishes its liveness probe (default 1 s).
    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.config.probe_interval = interval;
        self
    }

    /// Sets how long the store waits for its own probe to come back before it declares a gap
    /// (default 3 s). At least the probe interval.
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.config.probe_timeout = timeout;
        self
    }

    /// Sets how long connecting and each command may take (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Sets how many records one pipelined round trip re-reads after a gap (default 1000).
    pub fn with_reread_batch(mut self, batch: usize) -> Self {
        self.config.batch = batch;
        self
    }
}

impl<R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> RedisStoreBuilder<R> {
    /// Connects the command connection and the subscription. Fails when the URL does not parse,
    /// when Redis cannot be reached or refuses the credentials, or when the subscription is not
    /// live within the timeout; the error never shows the URL's user or password. Needs a
    /// Tokio runtime (the subscription runs as a task until the last clone of the store goes).
    pub async fn connect(self) -> Result<RedisStore<R>, StoreError> {
        let config = self.config;
        if config.probe_interval.is_zero()
            || config.probe_timeout < config.probe_interval
            || config.timeout.is_zero()
            || config.batch == 0
        {
            return Err(StoreError::new(
                "redis: invalid configuration (probe interval, probe timeout or timeout zero, \
                 probe timeout shorter than the interval, or batch zero)",
            ));
        }
        // The redis-rs error for a bad URL may quote it: say only that it did not parse.
        let client = redis::Client::open(self.url.as_str()).map_err(|_| {
            StoreError::new(
                "redis: the URL does not parse (rediss:// needs the `redis-tls` feature)",
            )
        })?;
        let info = client.get_connection_info();
        let server = info.addr().to_string();
        let settings = info.redis_settings();
        let secrets: Vec<String> = [settings.password(), settings.username()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_max_delay(Duration::from_secs(2));
        let (health, _) = watch::channel(RedisHealth::Gap {
            since: SystemTime::now(),
        });
        let connecting = tokio::time::timeout(
            config.timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await;
        let scrub = |text: String| -> String {
            let mut text = text;
            for secret in &secrets {
                text = text.replace(secret.as_str(), "<redacted>");
            }
            text
        };
        let commands = match connecting {
            Ok(Ok(commands)) => commands,
            Ok(Err(e)) => {
                return Err(StoreError::new(format!(
                    "redis: cannot connect to {server}: {}",
                    scrub(e.to_string())
                )))
            }
            Err(_) => {
                return Err(StoreError::new(format!(
                    "redis: cannot connect to {server}: timed out"
                )))
            }
        };
        let shared = Arc::new(Shared {
            client,
            commands,
            keys: Keys::new(&self.prefix),
            registry: Registry::default(),
            config,
            nonce: subscriber::nonce(),
            health,
            last_reread: Mutex::new(None),
            server,
            secrets,
            insert: redis::Script::new(protocol::INSERT),
            set_active: redis::Script::new(protocol::SET_ACTIVE),
            delete: redis::Script::new(protocol::DELETE),
        });
        let mut health = shared.health.subscribe();
        let task = tokio::spawn(subscriber::run(Arc::clone(&shared))).abort_handle();
        let store = RedisStore {
            handle: Arc::new(Handle { shared, task }),
            _record: PhantomData,
        };
        let live = tokio::time::timeout(config.timeout, health.wait_for(RedisHealth::is_live))
            .await
            .is_ok_and(|live| live.is_ok());
        if !live {
            return Err(StoreError::new(format!(
                "redis: no subscription to {} within {:?}",
                store.handle.shared.server, config.timeout
            )));
        }
        Ok(store)
    }
}

impl<R> RedisStore<R> {
    /// A builder for a store on `url` (`redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://` with the `redis-tls` feature).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder<R> {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            config: Config {
                probe_interval: DEFAULT_PROBE_INTERVAL,
                probe_timeout: DEFAULT_PROBE_TIMEOUT,
                timeout: DEFAULT_REDIS_TIMEOUT,
                batch: DEFAULT_REREAD_BATCH,
            },
            _record: PhantomData,
        }
    }

    /// The state of the subscription. Every change is also a `tracing` event (target
    /// `axum_keyguard::redis`): `WARN` when a gap begins, `INFO` when the store is live again.
    #[must_use]
    pub fn health(&self) -> RedisHealth {
        *self.handle.shared.health.borrow()
    }

    /// The figures of the last re-read (after the last gap), if any.
    #[must_use]
    pub fn last_reread(&self) -> Option<Reread> {
        *self
            .handle
            .shared
            .last_reread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many keys this replica holds open leases for (the size of its local registry).
    #[must_use]
    pub fn watched_keys(&self) -> usize {
        self.handle.shared.registry.len()
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.handle.shared.keys.prefix()
    }
}

impl<R: Serialize> RedisStore<R> {
    /// Adds (or replaces) an active record for the key with this digest. Replacing ends the
    /// leases of the old record on every replica.
    pub async fn insert(&self, key: CredentialDigest, record: &R) -> Result<(), StoreError> {
        self.insert_entry(key, record, None).await
    }

    /// Like [`insert`](Self::insert), with the key valid until `expires_at`: open sockets close
    /// with `4001` then, and Redis drops the record then too (`PEXPIREAT`).
    pub async fn insert_with_expiry(
        &self,
        key: CredentialDigest,
        record: &R,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.insert_entry(key, record, Some(expires_at)).await
    }

    async fn insert_entry(
        &self,
        key: CredentialDigest,
        record: &R,
        expires_at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let shared = &self.handle.shared;
        let json = serde_json::to_string(record)
            .map_err(|_| StoreError::new("redis: the record does not serialize"))?;
        let expiry = expires_at.map_or_else(String::new, |at| {
            protocol::to_unix_ms(at).max(1).to_string()
        });
        shared
            .write(&shared.insert, &key, &[&json, &expiry], Change::Replaced)
            .await
            .map(|_| ())
    }
}

impl<R> RedisStore<R> {
    /// Pauses (`false`) or resumes (`true`) the record of this key. Pausing ends every lease
    /// granted for it on every replica; resuming lets the key authenticate new connections.
    /// Returns whether the key is known.
    pub async fn set_active(
        &self,
        key: &CredentialDigest,
        active: bool,
    ) -> Result<bool, StoreError> {
        let shared = &self.handle.shared;
        let (flag, change) = if active {
            ("1", Change::Active)
        } else {
            ("0", Change::Inactive)
        };
        shared.write(&shared.set_active, key, &[flag], change).await
    }

    /// Deletes the record of this key and ends every lease granted for it on every replica.
    /// Returns whether the key was known.
    pub async fn revoke(&self, key: &CredentialDigest) -> Result<bool, StoreError> {
        let shared = &self.handle.shared;
        shared
            .write(&shared.delete, key, &[], Change::Deleted)
            .await
    }
}

impl<R> Clone for RedisStore<R> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
            _record: PhantomData,
        }
    }
}

impl<R> fmt::Debug for RedisStore<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        f.debug_struct("RedisStore")
            .field("server", &shared.server)
            .field("prefix", &shared.keys.prefix())
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl<R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> SessionStore
    for RedisStore<R>
{
    type Record = R;

    fn lookup(
        &self,
        key: &CredentialDigest,
    ) -> impl Future<Output = Result<Option<KeyRecord<R>>, StoreError>> + Send {
        let shared = Arc::clone(&self.handle.shared);
        let key = *key;
        // Watch first, read second: an event that lands while the read is in flight still
        // reaches the lease this lookup grants.
        let (slot, revocation) = shared.registry.watch(key);
        async move {
            let (record_key, _) = shared.record_key(&key);
            let mut connection = shared.commands.clone();
            let (version, active, record, expiry): RawRecord = redis::cmd("HMGET")
                .arg(record_key)
                .arg(&["v", "active", "record", "exp"])
                .query_async(&mut connection)
                .await
                .map_err(|e| shared.error("lookup", &e))?;
            let (Some(version), Some(active), Some(record)) = (version, active, record) else {
                return Ok(None);
            };
            let record: R = serde_json::from_str(&record)
                .map_err(|_| StoreError::new("redis: a record does not deserialize"))?;
            let active = active == "1";
            let session = |active| {
                let session = if active {
                    KeyRecord::active(record)
                } else {
                    KeyRecord::inactive(record)
                };
                match expiry {
                    Some(ms) => session.with_expiry(protocol::from_unix_ms(ms)),
                    None => session,
                }
            };
            if !active {
                return Ok(Some(session(false)));
            }
            Ok(Some(
                match shared.registry.grant(key, &slot, revocation, version) {
                    Some(revocation) => session(true).with_revocation(revocation),
                    // A newer change ended the key while the read was in flight.
                    None => session(false),
                },
            ))
        }
    }
}
