//! The one subscription of a store: events to the registry, the liveness probe, and the re-read
//! of every open lease after a gap.
//!
//! The subscription is a dedicated pub/sub connection (redis-rs `aio::PubSub`) rather than RESP3
//! pushes on the connection manager: its stream ending is the disconnect signal, and this loop
//! owns the order of a reconnection (subscribe, re-read every open lease, only then live). The
//! connection manager's automatic resubscription would resubscribe without the re-read, and a
//! revocation published during the gap would be lost.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::time::Instant;

use super::protocol::Message;
use super::registry::Reread as Found;
use super::{RedisHealth, Reread, Shared};
use crate::credential::CredentialDigest;

const TARGET: &str = "axum_keyguard::redis";
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A nonce that tells this store's probes from other replicas' (unique, not secret).
pub(super) fn nonce() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{}:{now}:{count}", std::process::id());
    CredentialDigest::of(seed.as_bytes()).to_hex()[..16].to_owned()
}

/// Subscribes, re-reads, listens; on a gap, starts over. Runs until the store is dropped.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let failure = match subscribe(&shared).await {
            Ok(pubsub) => match reread(&shared).await {
                Ok(figures) => {
                    shared.registry.end_gap();
                    *shared
                        .last_reread
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(figures);
                    shared.set_health(RedisHealth::Live {
                        since: SystemTime::now(),
                    });
                    tracing::info!(
                        target: TARGET,
                        server = %shared.server,
                        keys = figures.keys,
                        round_trips = figures.round_trips,
                        took_ms = figures.took.as_millis() as u64,
                        "redis store live: open leases re-read"
                    );
                    backoff = MIN_BACKOFF;
                    let why = listen(&shared, pubsub).await;
                    shared.registry.begin_gap();
                    shared.set_health(RedisHealth::Gap {
                        since: SystemTime::now(),
                    });
                    tracing::warn!(
                        target: TARGET,
                        server = %shared.server,
                        reason = why,
                        "redis store in a gap: open leases unavailable until resubscribed"
                    );
                    continue;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        tracing::debug!(target: TARGET, server = %shared.server, error = %failure, "redis store still in a gap");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A new subscriber connection, subscribed to the channel.
async fn subscribe(shared: &Shared) -> Result<redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&shared.keys.channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(shared.config.timeout, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(format!("subscribe: {}", shared.scrub(&e))),
        Err(_) => Err("subscribe: timed out".to_owned()),
    }
}

/// Reads the events until the subscription drops or goes silent; returns why.
async fn listen(shared: &Shared, mut pubsub: redis::aio::PubSub) -> &'static str {
    let config = shared.config;
    let mut stream = pubsub.on_message();
    let mut tick = tokio::time::interval(config.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe = Instant::now();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                None => return "disconnected",
                Some(message) => match Message::parse(message.get_payload_bytes()) {
                    Some(Message::Event { version, key, change }) => {
                        shared.registry.apply(&key, version, change);
                    }
                    Some(Message::Probe(nonce)) if nonce == shared.nonce => {
                        last_probe = Instant::now();
                    }
                    _ => {}
                },
            },
            _ = tick.tick() => {
                if last_probe.elapsed() > config.probe_timeout {
                    return "silent: the liveness probe did not come back";
                }
                shared.registry.sweep();
                publish_probe(shared);
            }
        }
    }
}

/// Publishes this store's probe without holding up the listener (a hung command connection
/// must not stop events from being read).
fn publish_probe(shared: &Shared) {
    let mut connection = shared.commands.clone();
    let channel = shared.keys.channel.clone();
    let probe = format!("probe {}", shared.nonce);
    let timeout = shared.config.timeout;
    tokio::spawn(async move {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(probe);
        let _ = tokio::time::timeout(timeout, publish.query_async::<i64>(&mut connection)).await;
    });
}

/// Re-reads the record of every key with open leases, in pipelined batches.
async fn reread(shared: &Shared) -> Result<Reread, String> {
    let started = Instant::now();
    let snapshot = shared.registry.snapshot();
    let mut connection = shared.commands.clone();
    let mut round_trips = 0;
    for batch in snapshot.chunks(shared.config.batch) {
        let mut pipe = redis::pipe();
        for (key, _) in batch {
            pipe.cmd("HMGET")
                .arg(shared.keys.record(&key.to_hex()))
                .arg(&["v", "active"]);
        }
        let rows: Vec<(Option<u64>, Option<String>)> =
            match tokio::time::timeout(shared.config.timeout, pipe.query_async(&mut connection))
                .await
            {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => return Err(format!("re-read: {}", shared.scrub(&e))),
                Err(_) => return Err("re-read: timed out".to_owned()),
            };
        round_trips += 1;
        if rows.len() != batch.len() {
            return Err("re-read: short reply".to_owned());
        }
        for ((key, slot), (version, active)) in batch.iter().zip(rows) {
            let found = match version {
                None => Found::Missing,
                Some(version) => Found::Found {
                    version,
                    active: active.as_deref() == Some("1"),
                },
            };
            shared.registry.reread(key, slot, found);
        }
    }
    Ok(Reread {
        keys: snapshot.len(),
        round_trips,
        took: started.elapsed(),
    })
}
