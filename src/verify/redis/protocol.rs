//! The wire protocol: key names, the Lua scripts that write, and the events they publish.
//!
//! Documented for other languages in `src/docs/redis.md`; a test checks that the page quotes
//! every script verbatim.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::credential::CredentialDigest;

/// The prefix used when none is configured.
pub(crate) const DEFAULT_PREFIX: &str = "keyguard:";

/// `insert`: writes the record (active), sets its expiry, publishes `created` or `replaced`.
pub(super) const INSERT: &str = include_str!("lua/insert.lua");
/// `set_active`: pauses or resumes, publishes `inactive` or `active`.
pub(super) const SET_ACTIVE: &str = include_str!("lua/set_active.lua");
/// `delete`: removes the record, publishes `deleted`.
pub(super) const DELETE: &str = include_str!("lua/delete.lua");

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    /// `<prefix>events`: the one channel every event and probe goes through.
    pub(super) channel: String,
    /// `<prefix>version`: the counter every write increments.
    pub(super) version: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}events"),
            version: format!("{prefix}version"),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>rec:<hex>`: the hash holding one record.
    pub(super) fn record(&self, hex: &str) -> String {
        format!("{}rec:{hex}", self.prefix)
    }
}

/// What a write did to a record, as published in its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Inserted where there was none.
    Created,
    /// Inserted over an existing record: the old one's leases end.
    Replaced,
    /// Resumed.
    Active,
    /// Paused.
    Inactive,
    /// Deleted (revoked for good).
    Deleted,
}

impl Change {
    /// Whether leases granted before this change end with it.
    pub(super) fn ends_leases(self) -> bool {
        matches!(self, Self::Replaced | Self::Inactive | Self::Deleted)
    }
}

/// One message on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    /// `<version> <hex> <change>`.
    Event {
        version: u64,
        key: CredentialDigest,
        change: Change,
    },
    /// `probe <nonce>`: a replica's liveness probe.
    Probe(String),
}

impl Message {
    /// Parses a channel payload; `None` for anything malformed (ignored, never trusted).
    pub(super) fn parse(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut words = text.split(' ');
        let first = words.next()?;
        if first == "probe" {
            let nonce = words.next()?;
            return words
                .next()
                .is_none()
                .then(|| Self::Probe(nonce.to_owned()));
        }
        let version: u64 = first.parse().ok().filter(|v| *v > 0)?;
        let key = CredentialDigest::from_hex(words.next()?)?;
        let change = match words.next()? {
            "created" => Change::Created,
            "replaced" => Change::Replaced,
            "active" => Change::Active,
            "inactive" => Change::Inactive,
            "deleted" => Change::Deleted,
            _ => return None,
        };
        if words.next().is_some() {
            return None;
        }
        Some(Self::Event {
            version,
            key,
            change,
        })
    }
}

/// A record as read with `HMGET <record> v active record exp`.
pub(super) type RawRecord = (Option<u64>, Option<String>, Option<String>, Option<u64>);

/// Unix milliseconds, as the `exp` field holds them.
pub(super) fn to_unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_probes_and_ignores_anything_else() {
        let key = CredentialDigest::of(b"k");
        let hex = key.to_hex();
        assert_eq!(
            Message::parse(format!("7 {hex} inactive").as_bytes()),
            Some(Message::Event {
                version: 7,
                key,
                change: Change::Inactive
            })
        );
        assert_eq!(
            Message::parse(b"probe abc"),
            Some(Message::Probe("abc".to_owned()))
        );
        for bad in [
            format!("0 {hex} inactive"),
            format!("x {hex} inactive"),
            format!("7 {hex} paused"),
            format!("7 {hex} inactive extra"),
            "7 nothex inactive".to_owned(),
            "probe".to_owned(),
            String::new(),
        ] {
            assert_eq!(Message::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Message::parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn the_protocol_page_quotes_every_script_verbatim() {
        let page = include_str!("../../docs/redis.md");
        for script in [INSERT, SET_ACTIVE, DELETE] {
            assert!(page.contains(script.trim_end()), "{script}");
        }
    }
}
