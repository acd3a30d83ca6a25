//! Build-time configuration errors.

use std::error::Error as StdError;
use std::fmt;

/// A guard, verifier or listener configuration that would not be safe to run.
///
/// Returned by every fallible builder step. Nothing in this crate turns a bad configuration into
/// "no authentication": it becomes this error at start-up instead. The message never contains a
/// secret; an underlying I/O error is available through [`Error::source`](std::error::Error::source).
pub struct ConfigError {
    kind: ConfigErrorKind,
    detail: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// What kind of configuration error a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The guard was built without a verifier.
    NoVerifier,
    /// A key set was empty, or one of its keys was empty.
    EmptyKey,
    /// A key file could not be read.
    KeyFile,
    /// The guard has no credential source, or the same source twice.
    Sources,
    /// A header or query parameter name is not valid.
    InvalidName,
    /// An allow-listed origin is not of the form `scheme://host[:port]`.
    InvalidOrigin,
    /// The realm cannot be written in a `WWW-Authenticate` header.
    InvalidRealm,
    /// A numeric limit is out of range.
    OutOfRange,
    /// A listener on a non-loopback address has authentication disabled.
    InsecureListener,
    /// An HMAC secret is shorter than its algorithm's output.
    WeakSecret,
    /// A JWT keyring already holds a key with this `kid` (or two keys have none).
    DuplicateKeyId,
    /// A capability key can never be used: it has the shape of a JWT, and a JWT verifier beside
    /// it in [`ByShape`](crate::ByShape) receives every JWT-shaped credential.
    UnreachableKey,
    /// A network address (a trusted proxy) does not parse.
    InvalidAddress,
    /// A [`Require`](crate::Require) that could never be checked as written: an empty scope,
    /// role or parameter name, a scope outside the RFC 6749 `scope-token` grammar, or an empty
    /// `all_of` / `any_of`.
    InvalidRequirement,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }

    /// What went wrong.
    ///
    /// ```
    /// use axum_keyguard::{ConfigErrorKind, Keys};
    ///
    /// let err = Keys::new(Vec::<String>::new()).unwrap_err();
    /// assert_eq!(err.kind(), ConfigErrorKind::EmptyKey);
    /// ```
    #[must_use]
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
