//! Thin wrappers over the crate-internal parsers, for the fuzz targets in `fuzz/` only.
//!
//! Compiled only with `--cfg fuzzing` (which `cargo fuzz` passes), hidden from the docs and not
//! part of the API: every function here forwards to the code the guard runs, unchanged.

use std::borrow::Cow;

use http::request::Parts;
use http::HeaderMap;

use crate::guard::Guard;
use crate::head::{is_upgrade, Head};
use crate::origin::OriginPolicy;
use crate::rejection::AuthRejectionKind;
use crate::sockets::FirstMessage;
use crate::source;
use crate::ws::auth_frame as first_message;

/// The guard's default credential cap (what `GuardBuilder::with_max_credential_len` overrides).
pub const DEFAULT_MAX_CREDENTIAL_LEN: usize = crate::guard::config::DEFAULT_MAX_CREDENTIAL_LEN;

/// `Authorization` value → Bearer token (`Ok(None)`: another scheme).
pub fn parse_bearer(raw: &[u8], max_len: usize) -> Result<Option<&str>, AuthRejectionKind> {
    source::parse_bearer(raw, max_len)
}

/// A named header's value → the credential (trimmed, capped, UTF-8).
pub fn header_value(raw: &[u8], max_len: usize) -> Result<Cow<'_, str>, AuthRejectionKind> {
    source::header_value(raw, max_len)
}

/// Query parameter `name` in a raw query string, form-decoded.
pub fn find_query<'a>(
    query: &'a str,
    name: &str,
    max_len: usize,
) -> Result<Option<Cow<'a, str>>, AuthRejectionKind> {
    source::find_query(query, name, max_len)
}

/// `application/x-www-form-urlencoded` decoding of one name or value; `None` if not UTF-8.
pub fn form_decode(raw: &str) -> Option<Cow<'_, str>> {
    source::form_decode(raw)
}

/// `query` with the parameters named `names` replaced by `marker`.
pub fn redact_query<'a>(query: &'a str, names: &[&str], marker: &str) -> Cow<'a, str> {
    crate::redact::redact_query(query, names, marker)
}

/// The credential in a `Sec-WebSocket-Protocol` token entry with `prefix`.
pub fn find_subprotocol(
    headers: &HeaderMap,
    prefix: &str,
    max_len: usize,
) -> Result<Option<String>, AuthRejectionKind> {
    source::find_subprotocol(headers, prefix, max_len).map(|v| v.map(Cow::into_owned))
}

/// The entries of every `Sec-WebSocket-Protocol` line, in the client's order.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<Vec<u8>> {
    source::offered_protocols(headers)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Removes the token entry with `prefix` from the `Sec-WebSocket-Protocol` lines.
pub fn strip_subprotocol_token(headers: &mut HeaderMap, prefix: &str) {
    source::strip_subprotocol_token(headers, prefix);
}

/// The credential of a first-message auth frame, if `text` is one.
pub fn auth_credential(text: &str, fields: &[String]) -> Option<String> {
    first_message::auth_credential(text, fields)
}

/// Whether a text frame after authentication is an auth frame again (never delivered to the
/// handler).
pub fn is_auth_frame(text: &str, fields: &[String]) -> bool {
    first_message::is_auth_frame(text, fields)
}

/// The credential fields of a first-message configuration.
pub fn first_message_fields(options: &FirstMessage) -> Vec<String> {
    options.fields.clone()
}

/// Whether the request is classified as a WebSocket upgrade.
pub fn classify_upgrade(parts: &Parts) -> bool {
    is_upgrade(Head::from(parts))
}

/// Whether the request passes the origin policy (`require`: refuse requests without `Origin`).
pub fn origin_allows(policy: &OriginPolicy, parts: &Parts, require: bool) -> bool {
    policy.allows(Head::from(parts), require)
}

/// Verifies a credential read from a first-message auth frame, as the socket does.
pub fn resolve_message<P>(guard: &Guard<P>, value: &str) -> crate::future::ResolveFuture<P>
where
    P: Clone + Send + Sync + 'static,
{
    guard.resolve_message(value, None)
}
