//! Capability keys: a fixed set of secrets, any of which grants access.

use std::fmt;
use std::path::Path;

use crate::credential::{Credential, CredentialDigest};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::verify::{Grant, Verification, Verifier, VerifyError};

/// One or more capability keys (several for rotation), kept only as SHA-256 digests.
///
/// A presented key is hashed and compared with every stored digest in constant time, with no early
/// exit. An empty set, an empty key or an empty key file is a [`ConfigError`]: there is no key set
/// that means "no authentication".
///
/// ```
/// use axum_keyguard::{Guard, Keys};
///
/// let keys = Keys::new(["k-2026-11", "k-2026-10"])?;
/// let guard = Guard::builder().with_verifier(keys).build()?;
/// assert!(Keys::new([""]).is_err());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Keys {
    digests: Vec<CredentialDigest>,
}

impl Keys {
    /// Keys given as strings, used verbatim (not trimmed). Fails if there are none or one is
    /// empty or only whitespace.
    pub fn new<I, S>(keys: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut digests = Vec::new();
        for key in keys {
            digests.push(digest_of(key.as_ref())?);
        }
        Self::non_empty(digests)
    }

    /// Keys from a file, one per line; each line is trimmed and blank lines are skipped. Fails if
    /// the file cannot be read or holds no key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::non_empty(read_key_file(path.as_ref())?)
    }

    /// Adds the keys of a file (as [`from_file`](Self::from_file) reads them) to this set.
    pub fn add_file(mut self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let more = read_key_file(path.as_ref())?;
        if more.is_empty() {
            return Err(empty_file(path.as_ref()));
        }
        self.digests.extend(more);
        Ok(self)
    }

    /// How many keys the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Always `false`: a key set cannot be built empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    fn non_empty(digests: Vec<CredentialDigest>) -> Result<Self, ConfigError> {
        if digests.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                "at least one capability key is required",
            ));
        }
        Ok(Self { digests })
    }
}

fn digest_of(key: &str) -> Result<CredentialDigest, ConfigError> {
    if key.trim().is_empty() {
        return Err(ConfigError::new(
            ConfigErrorKind::EmptyKey,
            "a capability key must not be empty",
        ));
    }
    Ok(CredentialDigest::of(key.as_bytes()))
}

fn empty_file(path: &Path) -> ConfigError {
    ConfigError::new(
        ConfigErrorKind::EmptyKey,
        format!("key file {} must not be empty", path.display()),
    )
}

fn read_key_file(path: &Path) -> Result<Vec<CredentialDigest>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            ConfigErrorKind::KeyFile,
            format!("cannot read key file {}", path.display()),
        )
        .with_source(e)
    })?;
    let digests: Vec<_> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| CredentialDigest::of(line.as_bytes()))
        .collect();
    if digests.is_empty() {
        return Err(empty_file(path));
    }
    Ok(digests)
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.digests.len())
            .finish()
    }
}

impl Verifier for Keys {
    type Principal = KeyId;

    fn verify(&self, credential: &Credential<'_>) -> Verification<KeyId> {
        let digest = credential.digest();
        Verification::ready(match digest.position_in(&self.digests) {
            Some(_) => Ok(Grant::new(KeyId::of(digest))),
            None => Err(VerifyError::invalid()),
        })
    }
}

/// Which capability key a request used: the first four bytes of its SHA-256 digest.
///
/// Displays as `key:` followed by eight hex digits, so logs and audit trails can tell keys apart
/// (during a rotation, say) without holding anything that would let someone rebuild a key.
///
/// ```
/// use axum_keyguard::{CredentialDigest, KeyId};
///
/// let id = KeyId::of(&CredentialDigest::of(b"abc"));
/// assert_eq!(id.to_string(), "key:ba7816bf");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

impl KeyId {
    /// The id of the key with this digest.
    #[must_use]
    pub fn of(digest: &CredentialDigest) -> Self {
        let b = digest.as_bytes();
        Self([b[0], b[1], b[2], b[3]])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "key:{a:02x}{b:02x}{c:02x}{d:02x}")
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::VerificationState;
    use std::io::Write;

    fn check(keys: &Keys, presented: &str) -> Option<KeyId> {
        match keys.verify(&Credential::new(presented)).state {
            VerificationState::Ready(Ok(grant)) => Some(grant.principal),
            VerificationState::Ready(Err(e)) => {
                assert_eq!(e.kind(), crate::AuthRejectionKind::InvalidCredential);
                None
            }
            VerificationState::Pending(_) => panic!("keys decide synchronously"),
        }
    }

    #[test]
    fn every_listed_key_verifies_and_near_misses_do_not() {
        let keys = Keys::new(["test-key-123", "k2@#$."]).expect("keys");
        assert_eq!(
            check(&keys, "test-key-123"),
            Some(KeyId::of(&CredentialDigest::of(b"test-key-123")))
        );
        assert!(check(&keys, "k2@#$.").is_some());
        let hex_digest: String = CredentialDigest::of(b"test-key-123")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for miss in [
            "Test-key-123",
            "test-key-12",
            "test-key-1234",
            "uest-key-123",
            "test-kez-123",
            "test-key-124",
            hex_digest.as_str(),
        ] {
            assert_eq!(check(&keys, miss), None, "{miss}");
        }
    }

    #[test]
    fn empty_configurations_fail_closed() {
        let kind = |r: Result<Keys, ConfigError>| r.map(|_| ()).unwrap_err().kind();
        assert_eq!(
            kind(Keys::new(Vec::<&str>::new())),
            ConfigErrorKind::EmptyKey
        );
        assert_eq!(kind(Keys::new(["ok", ""])), ConfigErrorKind::EmptyKey);
        assert_eq!(kind(Keys::new(["  "])), ConfigErrorKind::EmptyKey);
        assert_eq!(
            kind(Keys::from_file("/nonexistent/keyguard-keys")),
            ConfigErrorKind::KeyFile
        );
    }

    #[test]
    fn key_files_are_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("keyguard-keys-{}", std::process::id()));
        let write = |text: &str| {
            let mut f = std::fs::File::create(&path).expect("create");
            f.write_all(text.as_bytes()).expect("write");
        };
        write("super-secret-token\n\n  second-key  \r\n");
        let keys = Keys::from_file(&path).expect("keys");
        assert_eq!(keys.len(), 2);
        assert!(check(&keys, "super-secret-token").is_some());
        assert!(check(&keys, "second-key").is_some());
        assert!(check(&keys, "  second-key  ").is_none());
        write(" \n\t\n");
        let err = Keys::from_file(&path).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::EmptyKey);
        assert!(err.to_string().contains("must not be empty"));
        let joined = Keys::new(["a"]).expect("keys").add_file(&path);
        assert!(joined.is_err());
        write("b\n");
        let joined = Keys::new(["a"])
            .expect("keys")
            .add_file(&path)
            .expect("joined");
        assert_eq!(joined.len(), 2);
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn debug_shows_only_the_count() {
        let keys = Keys::new(["very-secret-key"]).expect("keys");
        assert_eq!(format!("{keys:?}"), "Keys { count: 1 }");
    }
}
