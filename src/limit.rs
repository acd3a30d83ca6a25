//! The failure limiter: a per-peer budget of refused credentials, checked before any credential
//! is read, and where the peer's address comes from.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::time::Instant;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::head::Head;

/// The default number of peers a limiter remembers.
pub const DEFAULT_MAX_PEERS: usize = 65_536;

/// The longest window a limiter accepts: a day.
const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// A budget of refused credentials per peer address: over it, the guard answers `429 Too Many
/// Requests` with `Retry-After` before it reads, hashes, looks up or verifies any credential.
///
/// Only credentials that were presented and refused count: the `400`s of a malformed, duplicate,
/// conflicting or over-long credential and the `401` of a wrong, unknown, revoked or expired one
/// (on the handshake or in a first-message auth frame). A request without a credential, a `403`,
/// and a `503` of an unavailable store never count. A valid credential does not reset the count
/// unless [`reset_on_success`](Self::reset_on_success) says so; while a peer is limited, a valid
/// credential is refused with `429` too, so the limit cannot be probed around.
///
/// The budget is a leaky bucket (GCRA): a peer may fail `limit` times in a burst; after that it
/// earns one more attempt every `window / limit`, and it has its whole budget back one `window`
/// after its last failure. (Unlike a fixed window, there is no boundary at which `2 × limit`
/// attempts fit in a short time.)
///
/// Peers are keyed by address: an IPv4 address alone, an IPv6 address by its `/64` (one site's
/// subnet, which a single host can usually spread over). The address is the connection's peer,
/// from axum's `ConnectInfo<SocketAddr>`: serve with
/// `Router::into_make_service_with_connect_info::<SocketAddr>()` (or insert
/// `axum::extract::ConnectInfo<SocketAddr>` into each request in a custom accept loop). A guard
/// with a limiter that finds no `ConnectInfo` answers `500` and logs one error: that is a
/// configuration error, never a silent pass. Behind a reverse proxy, name it with
/// [`add_trusted_proxy`](Self::add_trusted_proxy); `X-Forwarded-For` is read only from such peers.
///
/// A failure is charged when its refusal is decided; requests from one peer that are already
/// being verified when it reaches its limit still finish (a slow store lets at most the peer's
/// concurrent requests through beyond the budget, each then charged).
///
/// State is bounded: one entry per peer with failures that have not yet leaked out, 24 bytes of
/// key and timestamp in a hash table (about 25 to 57 bytes of table per peer, with the table's
/// control bytes and free buckets). At most [`with_max_peers`](Self::with_max_peers) peers
/// (default 65,536: at most 131,072 buckets, 3.1 MiB) are remembered; when the table is full,
/// peers whose failures have leaked out are dropped, then, if that frees less than an eighth of
/// it, those closest to their full budget.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use axum_keyguard::{Authenticated, FailureLimit, Guard, KeyId, Keys};
///
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["a-long-random-key-1"])?)
///     // Ten refused credentials per peer, earned back over a minute.
///     .with_failure_limit(
///         FailureLimit::new(10, Duration::from_secs(60))
///             .add_trusted_proxy("10.0.0.0/8")?,
///     )
///     .build()?;
/// let app: Router = Router::new()
///     .route("/api/whoami", get(|Authenticated(key): Authenticated<KeyId>| async move {
///         key.to_string()
///     }))
///     .route_layer(guard.layer());
/// // The limiter needs the peer address:
/// let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
/// # drop(service);
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct FailureLimit {
    limit: u32,
    window: Duration,
    max_peers: usize,
    reset_on_success: bool,
    trusted: Vec<Net>,
}

impl FailureLimit {
    /// At most `limit` refused credentials per peer in a burst, earned back over `window`. The
    /// guard's [`build`](crate::GuardBuilder::build) refuses a `limit` of 0 and a `window` of
    /// zero or longer than a day.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            max_peers: DEFAULT_MAX_PEERS,
            reset_on_success: false,
            trusted: Vec::new(),
        }
    }

    /// The most peers remembered at once (default 65,536; at least 1).
    pub fn with_max_peers(mut self, peers: usize) -> Self {
        self.max_peers = peers;
        self
    }

    /// Forgets a peer's failures when it presents a valid credential (off by default: a
    /// guesser that also holds one valid key would otherwise reset its own count).
    pub fn reset_on_success(mut self, enabled: bool) -> Self {
        self.reset_on_success = enabled;
        self
    }

    /// Trusts a reverse proxy (an address, or a network such as `10.0.0.0/8` or `fd00::/8`):
    /// when the connection's peer is in a trusted network, the client is the rightmost
    /// `X-Forwarded-For` hop that is not trusted (the one a trusted proxy saw). Hops a client
    /// wrote itself are to the left of that and never read. Without trusted proxies the header
    /// is ignored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum_keyguard::{ConfigErrorKind, FailureLimit};
    ///
    /// let limit = FailureLimit::new(5, Duration::from_secs(60))
    ///     .add_trusted_proxy("127.0.0.1")?
    ///     .add_trusted_proxy("fd00::/8")?;
    /// let err = FailureLimit::new(5, Duration::from_secs(60))
    ///     .add_trusted_proxy("10.0.0.0/33")
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ConfigErrorKind::InvalidAddress);
    /// # Ok::<(), axum_keyguard::ConfigError>(())
    /// ```
    pub fn add_trusted_proxy(mut self, net: &str) -> Result<Self, ConfigError> {
        let parsed = Net::parse(net).ok_or_else(|| {
            ConfigError::new(
                ConfigErrorKind::InvalidAddress,
                format!("trusted proxy {net:?} is not an address or a network (ADDR/PREFIX)"),
            )
        })?;
        self.trusted.push(parsed);
        self.trusted.dedup();
        Ok(self)
    }

    /// The refused credentials a peer may present in a burst.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The time over which the budget is earned back.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "a failure limit must allow at least one failure",
            ));
        }
        if self.window.is_zero() || self.window > MAX_WINDOW {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "a failure window must be longer than zero and at most a day",
            ));
        }
        if self.max_peers == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                "a failure limiter must remember at least one peer",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for FailureLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureLimit")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .field("max_peers", &self.max_peers)
            .field("reset_on_success", &self.reset_on_success)
            .field("trusted_proxies", &self.trusted)
            .finish()
    }
}

/// An address network, IPv4 held as its IPv4-mapped IPv6 form.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: u128,
    prefix: u32,
}

impl Net {
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let (bits, offset) = match addr {
            IpAddr::V4(_) => (32, 96),
            IpAddr::V6(_) => (128, 0),
        };
        let prefix = match prefix {
            // Digits only: `parse` would also take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().ok().filter(|&p| p <= bits)?
            }
            Some(_) => return None,
            None => bits,
        };
        let prefix = prefix + offset;
        Some(Self {
            addr: canonical(addr) & mask(prefix),
            prefix,
        })
    }

    fn contains(&self, addr: u128) -> bool {
        addr & mask(self.prefix) == self.addr
    }
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = Ipv6Addr::from(self.addr);
        match addr.to_ipv4_mapped() {
            Some(v4) if self.prefix >= 96 => write!(f, "{v4}/{}", self.prefix - 96),
            _ => write!(f, "{addr}/{}", self.prefix),
        }
    }
}

/// The top `prefix` bits set.
fn mask(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// An address as 128 bits: IPv6 as it is, IPv4 (and IPv4-mapped IPv6) in the mapped form.
fn canonical(addr: IpAddr) -> u128 {
    match addr.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Whom a failure is charged to: an IPv4 address, or an IPv6 `/64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PeerKey([u8; 16]);

impl PeerKey {
    pub(crate) fn of(addr: IpAddr) -> Self {
        let bits = canonical(addr);
        let is_v4 = matches!(addr.to_canonical(), IpAddr::V4(_));
        Self(if is_v4 { bits } else { bits & mask(64) }.to_be_bytes())
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = Ipv6Addr::from(self.0);
        match addr.to_ipv4_mapped() {
            Some(v4) => write!(f, "{v4}"),
            None => write!(f, "{addr}/64"),
        }
    }
}

/// Why a request cannot go on to its credential.
pub(crate) enum Refusal {
    /// Over the budget: retry after this many seconds (at least 1).
    Limited(u64),
    /// No peer address in the request: the server does not provide `ConnectInfo`.
    NoPeerAddress,
}

/// A limiter's state: the configuration and one leaky-bucket timestamp per peer.
pub(crate) struct Limiter {
    config: FailureLimit,
    /// `window / limit`: the time one failure takes to leak out.
    interval: u64,
    /// `window - interval`: how far ahead of now a peer's bucket may be and still fail once more.
    tolerance: u64,
    epoch: Instant,
    /// Per peer, the time (ns since `epoch`) at which its bucket is empty (GCRA's theoretical
    /// arrival time). Past entries are empty buckets, free to drop.
    peers: Mutex<HashMap<PeerKey, u64>>,
    warned: AtomicBool,
}

impl Limiter {
    /// `config` must be [validated](FailureLimit::validate).
    pub(crate) fn new(config: FailureLimit) -> Self {
        let window = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        let interval = (window / u64::from(config.limit)).max(1);
        Self {
            tolerance: window.saturating_sub(interval),
            interval,
            config,
            epoch: Instant::now(),
            peers: Mutex::new(HashMap::new()),
            warned: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// Whom this request's failures are charged to: the connection's peer, or the client a
    /// trusted proxy names.
    pub(crate) fn peer(&self, head: Head<'_>) -> Result<PeerKey, Refusal> {
        let Some(ConnectInfo(addr)) = head.extensions.get::<ConnectInfo<SocketAddr>>() else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    target: "axum_keyguard::rejection",
                    "a guard with a failure limit found no peer address: serve with \
                     `into_make_service_with_connect_info::<SocketAddr>()` (or insert \
                     `ConnectInfo<SocketAddr>` into each request); every request is refused with 500"
                );
            }
            return Err(Refusal::NoPeerAddress);
        };
        let mut client = addr.ip();
        let trusted = |addr: IpAddr| {
            self.config
                .trusted
                .iter()
                .any(|n| n.contains(canonical(addr)))
        };
        if !self.config.trusted.is_empty() && trusted(client) {
            // Every line of the header, in order, as one list read from the right.
            let hops = head
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .rev()
                .flat_map(|line| {
                    let hops: Vec<Option<IpAddr>> = match line.to_str() {
                        Ok(line) => line.rsplit(',').map(parse_hop).collect(),
                        Err(_) => vec![None],
                    };
                    hops
                });
            for hop in hops {
                // A hop that does not parse ends the walk at the last trusted one.
                let Some(hop) = hop else { break };
                client = hop;
                if !trusted(hop) {
                    break;
                }
            }
        }
        Ok(PeerKey::of(client))
    }

    /// Whether `peer` may present a credential now. Reads the table, changes nothing.
    pub(crate) fn check(&self, peer: PeerKey) -> Result<(), Refusal> {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(&empty_at) = peers.get(&peer) else {
            return Ok(());
        };
        drop(peers);
        let now = self.now();
        let allowed_until = now.saturating_add(self.tolerance);
        if empty_at <= allowed_until {
            return Ok(());
        }
        let wait = empty_at - allowed_until;
        Err(Refusal::Limited(wait.div_ceil(1_000_000_000).max(1)))
    }

    /// Charges a refused credential to `peer`.
    pub(crate) fn record_failure(&self, peer: PeerKey) {
        let now = self.now();
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(empty_at) = peers.get_mut(&peer) {
            *empty_at = (*empty_at).max(now).saturating_add(self.interval);
            return;
        }
        if peers.len() >= self.config.max_peers {
            self.prune(&mut peers, now);
        }
        peers.insert(peer, now.saturating_add(self.interval));
    }

    /// A valid credential from `peer`: forgets its failures when so configured.
    pub(crate) fn record_success(&self, peer: PeerKey) {
        if self.config.reset_on_success {
            self.peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&peer);
        }
    }

    /// Makes room in a full table: drops empty buckets, then, if that freed less than an eighth,
    /// the fullest-budget peers (the earliest to empty) until an eighth is free. Amortised, a
    /// full table costs O(1) per new peer.
    fn prune(&self, peers: &mut HashMap<PeerKey, u64>, now: u64) {
        peers.retain(|_, empty_at| *empty_at > now);
        let max = self.config.max_peers;
        let keep = max - max.div_ceil(8);
        if peers.len() <= keep {
            return;
        }
        let mut times: Vec<u64> = peers.values().copied().collect();
        let cut = times.len() - keep;
        let (_, threshold, _) = times.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        peers.retain(|_, empty_at| *empty_at > threshold);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, window_secs: u64) -> Limiter {
        Limiter::new(FailureLimit::new(limit, Duration::from_secs(window_secs)))
    }

    fn key(addr: &str) -> PeerKey {
        PeerKey::of(addr.parse().expect("address"))
    }

    fn limited(limiter: &Limiter, peer: PeerKey) -> Option<u64> {
        match limiter.check(peer) {
            Ok(()) => None,
            Err(Refusal::Limited(secs)) => Some(secs),
            Err(Refusal::NoPeerAddress) => panic!("not from check"),
        }
    }

    #[test]
    fn ipv6_peers_are_grouped_by_their_64_and_ipv4_by_address() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        // An IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address.
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        // ...and no IPv6 /64 collides with an IPv4 address.
        assert_ne!(key("::1"), key("0.0.0.1"));
        assert_eq!(format!("{:?}", key("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(format!("{:?}", key("192.0.2.1")), "192.0.2.1");

        let limiter = limiter(1, 60);
        limiter.record_failure(key("2001:db8:1:2::1"));
        assert!(limited(&limiter, key("2001:db8:1:2::9")).is_some());
        assert!(limited(&limiter, key("2001:db8:1:3::1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_limit_failures_then_one_per_interval_then_all_back_after_the_window() {
        let limiter = limiter(3, 60);
        let peer = key("192.0.2.7");
        for _ in 0..3 {
            assert_eq!(limited(&limiter, peer), None);
            limiter.record_failure(peer);
        }
        // The fourth is refused; one failure leaks out every 20 s.
        assert_eq!(limited(&limiter, peer), Some(20));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(limited(&limiter, peer), Some(15));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(limited(&limiter, peer), None);
        limiter.record_failure(peer);
        assert_eq!(limited(&limiter, peer), Some(20));
        // A whole window after the last failure, the whole budget is back.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(limited(&limiter, peer), None);
            limiter.record_failure(peer);
        }
        assert!(limited(&limiter, peer).is_some());
    }

    #[test]
    fn success_resets_only_when_asked() {
        let peer = key("192.0.2.8");
        let keeps = limiter(1, 60);
        keeps.record_failure(peer);
        keeps.record_success(peer);
        assert!(limited(&keeps, peer).is_some());

        let resets =
            Limiter::new(FailureLimit::new(1, Duration::from_secs(60)).reset_on_success(true));
        resets.record_failure(peer);
        resets.record_success(peer);
        assert_eq!(limited(&resets, peer), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_drops_empty_buckets_then_the_nearest_to_empty() {
        let limiter =
            Limiter::new(FailureLimit::new(2, Duration::from_secs(60)).with_max_peers(16));
        for i in 0..16u8 {
            limiter.record_failure(key(&format!("198.51.100.{i}")));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(limiter.len(), 16);
        // Peer 0's bucket (30 s per failure) is empty after 30 s: dropped first.
        tokio::time::advance(Duration::from_secs(14)).await;
        limiter.record_failure(key("203.0.113.1"));
        assert!(limiter.len() <= 16);
        // Nothing is empty now: the earliest to empty go, an eighth of the table at least.
        let mut added = 0;
        for i in 0..64u8 {
            limiter.record_failure(key(&format!("203.0.113.{}", i + 10)));
            added += 1;
            assert!(limiter.len() <= 16, "after {added}: {}", limiter.len());
        }
        // The newest peers are remembered.
        limiter.record_failure(key("203.0.113.73"));
        assert!(limited(&limiter, key("203.0.113.73")).is_some());
    }

    #[test]
    fn the_default_table_stays_within_65536_peers_and_131072_buckets() {
        let limiter = Limiter::new(FailureLimit::new(5, Duration::from_secs(3600)));
        for i in 0..80_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            limiter.record_failure(PeerKey::of(IpAddr::from([10, b, c, d])));
        }
        let peers = limiter.peers.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(peers.len() <= DEFAULT_MAX_PEERS, "{}", peers.len());
        // 131,072 buckets hold 114,688 entries at hashbrown's 7/8 load: 24 bytes of entry and
        // one control byte each, 3.1 MiB.
        assert!(peers.capacity() <= 114_688, "{}", peers.capacity());
        assert_eq!(std::mem::size_of::<(PeerKey, u64)>(), 24);
    }

    #[test]
    fn trusted_networks_parse_and_match() {
        let net = |s: &str| Net::parse(s);
        assert!(net("10.0.0.0/8")
            .expect("v4 net")
            .contains(canonical("10.1.2.3".parse().expect("ip"))));
        assert!(!net("10.0.0.0/8")
            .expect("v4 net")
            .contains(canonical("11.0.0.1".parse().expect("ip"))));
        assert!(net("127.0.0.1")
            .expect("v4 host")
            .contains(canonical("::ffff:127.0.0.1".parse().expect("ip"))));
        assert!(net("fd00::/8")
            .expect("v6 net")
            .contains(canonical("fd12::1".parse().expect("ip"))));
        assert!(net("::/0")
            .expect("everything")
            .contains(canonical("192.0.2.1".parse().expect("ip"))));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "example.com",
            "10.0.0.0/8/8",
            "",
        ] {
            assert!(net(bad).is_none(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", net("10.1.0.0/16").expect("net")),
            "10.1.0.0/16"
        );
    }

    fn head_with<'a>(parts: &'a http::request::Parts) -> Head<'a> {
        Head::from(parts)
    }

    fn parts(peer: &str, forwarded: &[&str]) -> http::request::Parts {
        let mut builder = http::Request::get("/");
        for line in forwarded {
            builder = builder.header("x-forwarded-for", *line);
        }
        let (mut parts, ()) = builder.body(()).expect("request").into_parts();
        let addr: SocketAddr = peer.parse().expect("socket address");
        parts.extensions.insert(ConnectInfo(addr));
        parts
    }

    #[test]
    fn forwarded_for_is_read_from_trusted_proxies_only_and_from_the_right() {
        let limit = FailureLimit::new(1, Duration::from_secs(60))
            .add_trusted_proxy("10.0.0.0/8")
            .expect("net");
        let limiter = Limiter::new(limit);
        let peer = |p: &str, f: &[&str]| {
            let parts = parts(p, f);
            match limiter.peer(head_with(&parts)) {
                Ok(key) => format!("{key:?}"),
                Err(_) => "none".to_owned(),
            }
        };
        // Untrusted peer: the header is the client's own words.
        assert_eq!(peer("192.0.2.1:5000", &["198.51.100.1"]), "192.0.2.1");
        // Trusted proxy: the hop it saw.
        assert_eq!(peer("10.0.0.1:5000", &["198.51.100.1"]), "198.51.100.1");
        // A client-written hop on the left is never read.
        assert_eq!(
            peer("10.0.0.1:5000", &["6.6.6.6, 198.51.100.1"]),
            "198.51.100.1"
        );
        // Trusted hops on the right are skipped, over several lines too.
        assert_eq!(
            peer("10.0.0.1:5000", &["6.6.6.6, 198.51.100.1", "10.0.0.2"]),
            "198.51.100.1"
        );
        assert_eq!(
            peer("10.0.0.1:5000", &["198.51.100.1:4711, 10.9.9.9"]),
            "198.51.100.1"
        );
        assert_eq!(
            peer("10.0.0.1:5000", &["[2001:db8::1]:443"]),
            "2001:db8::/64"
        );
        // No header, or one that does not parse: the last trusted hop.
        assert_eq!(peer("10.0.0.1:5000", &[]), "10.0.0.1");
        assert_eq!(peer("10.0.0.1:5000", &["garbage, 10.0.0.3"]), "10.0.0.3");
        // Every hop trusted: the leftmost.
        assert_eq!(peer("10.0.0.1:5000", &["10.0.0.5, 10.0.0.3"]), "10.0.0.5");

        let plain = Limiter::new(FailureLimit::new(1, Duration::from_secs(60)));
        let parts = parts("10.0.0.1:5000", &["198.51.100.1"]);
        assert_eq!(
            format!("{:?}", plain.peer(head_with(&parts)).ok().expect("peer")),
            "10.0.0.1"
        );
        let (bare, ()) = http::Request::get("/")
            .body(())
            .expect("request")
            .into_parts();
        assert!(matches!(
            plain.peer(Head::from(&bare)),
            Err(Refusal::NoPeerAddress)
        ));
    }

    #[test]
    fn out_of_range_configurations_are_refused() {
        let window = Duration::from_secs(60);
        assert!(FailureLimit::new(0, window).validate().is_err());
        assert!(FailureLimit::new(1, Duration::ZERO).validate().is_err());
        assert!(FailureLimit::new(1, Duration::from_secs(86_401))
            .validate()
            .is_err());
        assert!(FailureLimit::new(1, window)
            .with_max_peers(0)
            .validate()
            .is_err());
        assert!(FailureLimit::new(u32::MAX, Duration::from_secs(86_400))
            .validate()
            .is_ok());
    }
}
