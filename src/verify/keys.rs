//! Capability keys: a fixed set of secrets, any of which grants access.

use std::fmt;
use std::path::Path;

use crate::credential::{Credential, CredentialDigest};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::verify::{Denial, Grant, Verdict, Verifier};

/// One or more capability keys (several for rotation), kept only as SHA-256 digests.
///
/// A presented key is hashed and compared with every stored digest in constant time, with no early
/// exit. An empty set, an empty key file, or a key shorter than [`MIN_KEY_LEN`] (16) bytes is a
/// [`ConfigError`]: there is no key set that means "no authentication", and no key short enough to
/// guess. A key shaped like a JWT (three dot-separated segments) is refused where a JWT verifier
/// sits beside it in [`ByShape`](crate::ByShape), which would never hand it to the keys.
///
/// ```
/// use axum_keyguard::{Guard, Keys};
///
/// let keys = Keys::new(["k-2026-11-7f3a9c2e", "k-2026-10-b81d04f6"])?;
/// let guard = Guard::builder().with_verifier(keys).build()?;
/// assert!(Keys::new([""]).is_err());
/// assert!(Keys::new(["short"]).is_err());
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Keys {
    digests: Vec<CredentialDigest>,
    /// Whether a key has the shape of a JWT.
    jwt_shaped: bool,
}

/// The shortest capability key accepted, in bytes: 16 bytes is 128 bits of a random key (use
/// 32 random bytes, hex- or base64url-encoded).
pub const MIN_KEY_LEN: usize = 16;

impl Keys {
    /// Keys given as strings, used verbatim (not trimmed). Fails if there are none, or one is
    /// empty, only whitespace or shorter than [`MIN_KEY_LEN`] bytes.
    pub fn new<I, S>(keys: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Self {
            digests: Vec::new(),
            jwt_shaped: false,
        };
        for key in keys {
            set.push(key.as_ref())?;
        }
        set.non_empty()
    }

    /// Keys from a file, one per line; each line is trimmed, and blank lines and comment lines
    /// (starting with `#`) are skipped. Fails if the file cannot be read, holds no key, or holds
    /// a key shorter than [`MIN_KEY_LEN`] bytes (the error names the line, never the key).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let set = Self {
            digests: Vec::new(),
            jwt_shaped: false,
        };
        set.add_file(path)
    }

    /// Adds the keys of a file (as [`from_file`](Self::from_file) reads them) to this set.
    pub fn add_file(mut self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::KeyFile,
                format!("cannot read key file {}", path.display()),
            )
            .with_source(e)
        })?;
        let before = self.digests.len();
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()));
        for (number, key) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
            self.push(key).map_err(|e| {
                ConfigError::new(
                    e.kind(),
                    format!("key file {} line {number}: {}", path.display(), e.detail()),
                )
            })?;
        }
        if self.digests.len() == before {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                format!("key file {} must not be empty", path.display()),
            ));
        }
        Ok(self)
    }

    pub(super) fn push(&mut self, key: &str) -> Result<(), ConfigError> {
        if key.trim().is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                "a capability key must not be empty",
            ));
        }
        if key.len() < MIN_KEY_LEN {
            return Err(ConfigError::new(
                ConfigErrorKind::WeakSecret,
                format!("a capability key must be at least {MIN_KEY_LEN} bytes"),
            ));
        }
        self.jwt_shaped |= Credential::new(key).is_jwt_shaped();
        self.digests.push(CredentialDigest::of(key.as_bytes()));
        Ok(())
    }

    /// How many keys the set holds (never zero: a key set cannot be built empty).
    #[must_use]
    #[expect(clippy::len_without_is_empty, reason = "a key set is never empty")]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    fn non_empty(self) -> Result<Self, ConfigError> {
        if self.digests.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                "at least one capability key is required",
            ));
        }
        Ok(self)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.digests.len())
            .finish()
    }
}

impl Keys {
    /// An empty set, filled by [`push`](Self::push) (for verifiers built on keys).
    pub(super) fn empty() -> Self {
        Self {
            digests: Vec::new(),
            jwt_shaped: false,
        }
    }

    /// The index of the presented key in the set (constant time over every key) and its id.
    pub(super) fn find(&self, credential: &Credential<'_>) -> Option<(usize, KeyId)> {
        let digest = credential.digest();
        digest
            .position_in(&self.digests)
            .map(|i| (i, KeyId::of(digest)))
    }
}

impl Verifier for Keys {
    type Principal = KeyId;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<KeyId> {
        Verdict::ready(match self.find(credential) {
            Some((_, id)) => Ok(Grant::new(id)),
            None => Err(Denial::invalid()),
        })
    }

    fn has_jwt_shaped_key(&self) -> bool {
        self.jwt_shaped
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
    use crate::verify::VerdictState;
    use std::io::Write;

    fn check(keys: &Keys, presented: &str) -> Option<KeyId> {
        match keys.verify(&Credential::new(presented)).state {
            VerdictState::Ready(Ok(grant)) => Some(grant.principal),
            VerdictState::Ready(Err(e)) => {
                assert_eq!(e.kind(), crate::AuthRejectionKind::InvalidCredential);
                None
            }
            VerdictState::Pending(_) => panic!("keys decide synchronously"),
        }
    }

    #[test]
    fn every_listed_key_verifies_and_near_misses_do_not() {
        let keys = Keys::new(["test-key-123-abcdefgh", "k2@#$.-0123456789ab"]).expect("keys");
        assert_eq!(
            check(&keys, "test-key-123-abcdefgh"),
            Some(KeyId::of(&CredentialDigest::of(b"test-key-123-abcdefgh")))
        );
        assert!(check(&keys, "k2@#$.-0123456789ab").is_some());
        let hex_digest: String = CredentialDigest::of(b"test-key-123-abcdefgh")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for miss in [
            "Test-key-123-abcdefgh",
            "test-key-123-abcdefg",
            "test-key-123-abcdefghi",
            "uest-key-123-abcdefgh",
            "test-kez-123-abcdefgh",
            "test-key-123-abcdefgi",
            hex_digest.as_str(),
        ] {
            assert_eq!(check(&keys, miss), None, "{miss}");
        }
    }

    #[test]
    fn empty_and_short_keys_fail_closed() {
        let kind = |r: Result<Keys, ConfigError>| r.map(|_| ()).unwrap_err().kind();
        assert_eq!(
            kind(Keys::new(Vec::<&str>::new())),
            ConfigErrorKind::EmptyKey
        );
        assert_eq!(
            kind(Keys::new(["a-long-random-key-1", ""])),
            ConfigErrorKind::EmptyKey
        );
        assert_eq!(kind(Keys::new(["  "])), ConfigErrorKind::EmptyKey);
        assert_eq!(kind(Keys::new(["x"])), ConfigErrorKind::WeakSecret);
        assert_eq!(
            kind(Keys::new(["fifteen-bytes!!"])),
            ConfigErrorKind::WeakSecret
        );
        assert!(Keys::new(["sixteen-bytes!!!"]).is_ok());
        assert_eq!(
            kind(Keys::from_file("/nonexistent/keyguard-keys")),
            ConfigErrorKind::KeyFile
        );
    }

    #[test]
    fn key_files_are_trimmed_skip_comments_and_must_not_be_empty() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("keyguard-keys-{}", std::process::id()));
        let write = |text: &str| {
            let mut f = std::fs::File::create(&path).expect("create");
            f.write_all(text.as_bytes()).expect("write");
        };
        write("# production keys, rotate monthly\nsuper-secret-token-0001\n\n  # old: x\n  second-key-000000  \r\n");
        let keys = Keys::from_file(&path).expect("keys");
        assert_eq!(keys.len(), 2);
        assert!(check(&keys, "super-secret-token-0001").is_some());
        assert!(check(&keys, "second-key-000000").is_some());
        assert!(check(&keys, "  second-key-000000  ").is_none());
        assert!(check(&keys, "# production keys, rotate monthly").is_none());
        assert!(check(&keys, "# old: x").is_none());
        write(" \n\t\n# only a comment\n");
        let err = Keys::from_file(&path).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::EmptyKey);
        assert!(err.to_string().contains("must not be empty"));
        write("# keys\nshort-key\n");
        let err = Keys::from_file(&path).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::WeakSecret);
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(!err.to_string().contains("short-key"), "{err}");
        write("\n");
        let joined = Keys::new(["a-long-random-key-1"])
            .expect("keys")
            .add_file(&path);
        assert!(joined.is_err());
        write("a-long-random-key-2\n");
        let joined = Keys::new(["a-long-random-key-1"])
            .expect("keys")
            .add_file(&path)
            .expect("joined");
        assert_eq!(joined.len(), 2);
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn jwt_shaped_keys_are_flagged() {
        let keys = Keys::new(["a-long-random-key-1"]).expect("keys");
        assert!(!keys.has_jwt_shaped_key());
        let keys =
            Keys::new(["a-long-random-key-1", "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"]).expect("keys");
        assert!(keys.has_jwt_shaped_key());
    }

    #[test]
    fn debug_shows_only_the_count() {
        let keys = Keys::new(["very-secret-key-0001"]).expect("keys");
        assert_eq!(format!("{keys:?}"), "Keys { count: 1 }");
    }
}
