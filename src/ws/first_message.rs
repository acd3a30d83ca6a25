//! First-message authentication: its configuration, the auth frame's strict grammar, the read
//! budget that bounds what an unauthenticated client can make the server hold, and the read loop.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::Message;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::credential::Credential;
use crate::guard::{Guard, Verified};
use crate::rejection::{close, AuthRejectionKind};
use crate::source::SourceKind;
use crate::ws::socket::Shared;

/// First-message authentication: the handshake carries no credential, and the first frame must be
/// a text JSON object `{"type":"auth","session_api_key":"…"}` or `{"type":"auth","token":"…"}`
/// within a timeout (10 s by default).
///
/// The credential fields default to `session_api_key` (OpenHands) and `token` (Open WebUI
/// terminals); [`with_fields`](Self::with_fields) replaces them. These close the socket with
/// `4001`: a wrong key, a `type` other than `"auth"`, non-JSON, a JSON value that is not an object,
/// an object with a duplicate member, two credential fields with different values, a binary
/// frame, the timeout, and more than [`with_max_len`](Self::with_max_len) bytes (8 KiB by
/// default) read from the client before the auth frame is complete — fragments, pings and frame
/// headers included, so an unauthenticated client can never make the server buffer more than that.
/// The auth frame never reaches the handler, and neither do later frames that look like it
/// (`type` `"auth"` and no other members than the credential fields).
///
/// ```
/// use std::time::Duration;
/// use axum_keyguard::{ws::FirstMessage, Guard, Keys};
///
/// let guard = Guard::builder()
///     .with_verifier(Keys::new(["a-long-random-key"])?)
///     .first_message_auth(
///         FirstMessage::new()
///             .with_fields(["token"])
///             .with_timeout(Duration::from_secs(5)),
///     )
///     .build()?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FirstMessage {
    pub(crate) fields: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_len: usize,
}

impl FirstMessage {
    /// The credential in field `session_api_key` or `token`, within 10 s, in at most 8 KiB.
    #[must_use]
    pub fn new() -> Self {
        Self {
            fields: vec!["session_api_key".to_owned(), "token".to_owned()],
            timeout: Duration::from_secs(10),
            max_len: 8 * 1024,
        }
    }

    /// The fields that may hold the credential. If a frame has several of them, their values must
    /// agree.
    #[must_use]
    pub fn with_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// How long the client has to send the auth frame (default 10 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most bytes read from the client before it has authenticated (default 8 KiB): the
    /// auth frame with its framing, and anything sent before it. More closes the socket with
    /// `4001` at once. [`Guard`] checks at build time that this leaves room for a credential of
    /// the guard's maximum length.
    #[must_use]
    pub fn with_max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }
}

impl Default for FirstMessage {
    fn default() -> Self {
        Self::new()
    }
}

/// The top-level members of a JSON object, in order; `None` for anything that is not an object
/// or has a duplicate member.
fn members(text: &str) -> Option<Vec<(String, serde_json::Value)>> {
    struct Members(Vec<(String, serde_json::Value)>);

    impl<'de> Deserialize<'de> for Members {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Object;
            impl<'de> Visitor<'de> for Object {
                type Value = Members;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object without duplicate members")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                    let mut members: Vec<(String, serde_json::Value)> = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        if members.iter().any(|(k, _)| *k == key) {
                            return Err(serde::de::Error::custom("duplicate member"));
                        }
                        let value = map.next_value()?;
                        members.push((key, value));
                    }
                    Ok(Members(members))
                }
            }
            deserializer.deserialize_map(Object)
        }
    }

    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

fn is_auth_type(members: &[(String, serde_json::Value)]) -> bool {
    members
        .iter()
        .any(|(k, v)| k == "type" && v.as_str() == Some("auth"))
}

/// The credential of a first-message auth frame: a JSON object without duplicate members, with
/// `"type": "auth"` and the credential, as a non-empty string, in one or more of `fields` (all
/// present ones must agree, compared by digest in constant time). `None` for anything else.
pub(crate) fn auth_credential(text: &str, fields: &[String]) -> Option<String> {
    let members = members(text)?;
    if !is_auth_type(&members) {
        return None;
    }
    let mut found: Option<Credential<'_>> = None;
    for (_, value) in members.iter().filter(|(k, _)| fields.contains(k)) {
        let serde_json::Value::String(value) = value else {
            return None;
        };
        if value.is_empty() {
            return None;
        }
        let credential = Credential::new(value.as_str());
        match &found {
            None => found = Some(credential),
            Some(first) if first.same_value(&credential) => {}
            Some(_) => return None,
        }
    }
    found.map(|c| c.expose().to_owned())
}

/// Whether a text frame after authentication is an auth frame again (`"type": "auth"` and no
/// members other than `type` and the credential fields). Such frames never reach the handler.
pub(crate) fn is_auth_frame(text: &str, fields: &[String]) -> bool {
    // Most frames are not JSON objects about auth: skip the parse.
    // `auth` may be written with JSON escapes (`"\u0061uth"`): skip only frames with neither.
    if !text.trim_start().starts_with('{') || !(text.contains("auth") || text.contains('\\')) {
        return false;
    }
    members(text).is_some_and(|members| {
        is_auth_type(&members)
            && members
                .iter()
                .all(|(k, _)| k == "type" || fields.contains(k))
    })
}

/// How many bytes the connection may still read before the client has authenticated.
///
/// Shared by the connection's reader (which stops at zero) and the first-message loop (which
/// closes the socket then, and lifts the budget once the client has authenticated).
#[derive(Debug)]
pub(crate) struct ReadBudget {
    left: AtomicUsize,
    exhausted: AtomicBool,
}

impl ReadBudget {
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            left: AtomicUsize::new(bytes),
            exhausted: AtomicBool::new(false),
        }
    }

    /// How many bytes may be read now: `None` for no limit.
    pub(crate) fn left(&self) -> Option<usize> {
        match self.left.load(Ordering::Acquire) {
            usize::MAX => None,
            left => Some(left),
        }
    }

    /// Counts `n` bytes read.
    pub(crate) fn spend(&self, n: usize) {
        let left = self.left.load(Ordering::Acquire);
        if left != usize::MAX {
            self.left.store(left.saturating_sub(n), Ordering::Release);
        }
    }

    /// The reader wanted more than the budget allows.
    pub(crate) fn exhaust(&self) {
        self.exhausted.store(true, Ordering::Release);
    }

    fn is_exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Acquire)
    }

    fn lift(&self) {
        self.left.store(usize::MAX, Ordering::Release);
    }
}

/// Why the first-message phase ended without a verified socket.
pub(crate) enum Refused {
    /// Close with this code and reason, then wait for the client's Close.
    Close(u16, &'static str),
    /// Close with this code and reason and drop the connection at once (the client sent more
    /// than the budget: nothing more of it is read).
    Drop(u16, &'static str),
    /// The client left.
    Gone,
}

/// Reads and verifies the auth frame, within the timeout and the read budget.
pub(crate) async fn authenticate<P>(
    socket: &Shared,
    guard: &Guard<P>,
) -> Result<Verified<P>, Refused>
where
    P: Clone + Send + Sync + 'static,
{
    let source = Some(SourceKind::Message);
    let refuse = |kind: AuthRejectionKind| {
        let rejection = guard.reject(kind, source);
        Refused::Close(rejection.close_code(), rejection.close_reason())
    };
    let Some(options) = guard.socket_options().first_message.as_ref() else {
        return Err(refuse(AuthRejectionKind::Misconfigured));
    };
    let budget = socket.budget();
    let read = async {
        loop {
            let frame = poll_fn(|cx| match socket.poll_next_frame(cx) {
                // The reader stopped at the budget: the client sent more than an auth frame needs.
                Poll::Pending if budget.is_some_and(ReadBudget::is_exhausted) => {
                    Poll::Ready(Err(AuthRejectionKind::CredentialTooLong))
                }
                other => other.map(Ok),
            });
            match frame.await? {
                Some(Message::Text(text)) => return Ok(Some(text)),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                Some(Message::Binary(_)) => return Err(AuthRejectionKind::MalformedCredential),
                Some(Message::Close(_)) | None => return Ok(None),
            }
        }
    };
    let text = match tokio::time::timeout(options.timeout, read).await {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => return Err(Refused::Gone),
        Ok(Err(AuthRejectionKind::CredentialTooLong)) => {
            let rejection = guard.reject(AuthRejectionKind::CredentialTooLong, source);
            return Err(Refused::Drop(
                rejection.close_code(),
                close::AUTH_TOO_LARGE,
            ));
        }
        Ok(Err(kind)) => return Err(refuse(kind)),
        Err(_) => {
            let rejection = guard.reject(AuthRejectionKind::MissingCredential, source);
            return Err(Refused::Close(
                rejection.close_code(),
                close::AUTH_TIMEOUT,
            ));
        }
    };
    let Some(credential) = auth_credential(&text, &options.fields) else {
        return Err(refuse(AuthRejectionKind::MalformedCredential));
    };
    let verified = guard
        .resolve_message(&credential)
        .await
        .map_err(|rejection| Refused::Close(rejection.close_code(), rejection.close_reason()))?;
    if let Some(budget) = budget {
        budget.lift();
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_frames_are_parsed_strictly() {
        let fields = FirstMessage::new().fields;
        let get = |t: &str| auth_credential(t, &fields);
        assert_eq!(
            get(r#"{"type":"auth","session_api_key":"k"}"#),
            Some("k".into())
        );
        assert_eq!(
            get(r#"{"type":"auth","token":"k","extra":1}"#),
            Some("k".into())
        );
        assert_eq!(
            get(r#" {"token":"k","type":"auth","session_api_key":"k"}"#),
            Some("k".into())
        );
        for bad in [
            r#"{"type":"auth","token":"k","session_api_key":"j"}"#,
            r#"{"type":"auth","session_api_key":"a","session_api_key":"b"}"#,
            r#"{"type":"auth","session_api_key":"a","session_api_key":"a"}"#,
            r#"{"type":"auth","type":"auth","token":"k"}"#,
            r#"{"type":"ping","type":"auth","token":"k"}"#,
            r#"{"type":"auth"}"#,
            r#"{"type":"auth","token":""}"#,
            r#"{"type":"auth","token":5}"#,
            r#"{"type":"auth","token":null}"#,
            r#"{"type":"ping","token":"k"}"#,
            r#"{"type":["auth"],"token":"k"}"#,
            r#"{"token":"k"}"#,
            r#"["auth","k"]"#,
            "not json",
            "\"k\"",
            r#"{"type":"auth","token":"k"} trailing"#,
        ] {
            assert_eq!(get(bad), None, "{bad}");
        }
    }

    #[test]
    fn later_auth_frames_are_recognised_and_others_pass() {
        let fields = FirstMessage::new().fields;
        assert!(is_auth_frame(r#"{"type":"auth","token":"x"}"#, &fields));
        assert!(is_auth_frame(r#"{"type":"auth"}"#, &fields));
        assert!(!is_auth_frame(r#"{"type":"auth","role":"user"}"#, &fields));
        assert!(!is_auth_frame(
            r#"{"role":"user","content":"auth"}"#,
            &fields
        ));
        assert!(!is_auth_frame("auth", &fields));
    }

    #[test]
    fn the_budget_counts_down_and_lifts() {
        let budget = ReadBudget::new(10);
        assert_eq!(budget.left(), Some(10));
        budget.spend(4);
        assert_eq!(budget.left(), Some(6));
        budget.spend(100);
        assert_eq!(budget.left(), Some(0));
        assert!(!budget.is_exhausted());
        budget.exhaust();
        assert!(budget.is_exhausted());
        budget.lift();
        assert_eq!(budget.left(), None);
        budget.spend(1);
        assert_eq!(budget.left(), None);
    }
}
