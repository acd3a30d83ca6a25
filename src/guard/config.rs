//! What a guard is configured with: the one list of options, filled in by the builder and read by
//! the guard.

use std::time::Duration;

use crate::limit::FailureLimit;
use crate::origin::OriginPolicy;
use crate::sockets::{FirstMessage, Shutdown};
use crate::source::Source;

/// The default time the server waits for the client's Close after sending its own.
pub(crate) const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default time open sockets keep running while their key store is unavailable.
pub(crate) const DEFAULT_UNAVAILABLE_GRACE: Duration = Duration::from_secs(60);

/// The default cap on a credential's length, in bytes.
pub(crate) const DEFAULT_MAX_CREDENTIAL_LEN: usize = 4096;

/// The default realm in `WWW-Authenticate` challenges.
pub(crate) const DEFAULT_REALM: &str = "axum-keyguard";

/// What an auth frame needs besides its credential: `{"type":"auth","session_api_key":""}` and a
/// frame header, with room to spare.
pub(crate) const FIRST_MESSAGE_OVERHEAD: usize = 256;

/// Every option of a guard but its verifier.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) sources: Vec<Source>,
    pub(crate) first_source_wins: bool,
    pub(crate) max_len: usize,
    pub(crate) origin: OriginPolicy,
    pub(crate) origin_on_rest: bool,
    pub(crate) require_origin: bool,
    pub(crate) realm: String,
    pub(crate) sockets: SocketOptions,
    pub(crate) strip_headers: bool,
    pub(crate) failure_limit: Option<FailureLimit>,
}

impl Default for Config {
    /// Query on upgrades, `X-Session-API-Key`, Bearer; same-origin on upgrades; a 4096-byte cap.
    fn default() -> Self {
        Self {
            sources: vec![
                Source::query(crate::source::DEFAULT_QUERY_PARAM),
                Source::header(crate::source::DEFAULT_HEADER)
                    .expect("the default header name is valid"),
                Source::bearer(),
            ],
            first_source_wins: false,
            max_len: DEFAULT_MAX_CREDENTIAL_LEN,
            origin: OriginPolicy::same_origin(),
            origin_on_rest: false,
            require_origin: false,
            realm: DEFAULT_REALM.to_owned(),
            sockets: SocketOptions::default(),
            strip_headers: false,
            failure_limit: None,
        }
    }
}

/// How the guard treats WebSocket upgrades and open sockets.
#[derive(Debug, Clone)]
pub(crate) struct SocketOptions {
    pub(crate) first_message: Option<FirstMessage>,
    pub(crate) accept_then_close: bool,
    pub(crate) close_timeout: Duration,
    pub(crate) unavailable_grace: Duration,
    pub(crate) shutdown: Option<Shutdown>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            first_message: None,
            accept_then_close: false,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            unavailable_grace: DEFAULT_UNAVAILABLE_GRACE,
            shutdown: None,
        }
    }
}
