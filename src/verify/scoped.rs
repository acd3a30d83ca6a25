//! Capability keys given scopes and roles in configuration.

use std::fmt;
use std::sync::Arc;

use crate::credential::Credential;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::verify::keys::{KeyId, Keys};
use crate::verify::{Denial, Grant, Verdict, Verifier};

/// The scopes and roles a capability key is given.
///
/// ```
/// use axum_keyguard::Grants;
///
/// let grants = Grants::new().add_scopes(["tools:read", "tools:write"]).add_roles(["operator"]);
/// assert!(grants.scopes().any(|s| s == "tools:read"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Grants {
    scopes: Vec<Box<str>>,
    roles: Vec<Box<str>>,
}

impl Grants {
    /// No scope, no role.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds scopes.
    pub fn add_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.scopes
            .extend(scopes.into_iter().map(|s| s.as_ref().into()));
        self
    }

    /// Adds roles.
    pub fn add_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.roles
            .extend(roles.into_iter().map(|r| r.as_ref().into()));
        self
    }

    /// The scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(|s| &**s)
    }

    /// The roles.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(|r| &**r)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad_scope = self.scopes.iter().any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        });
        if bad_scope || self.roles.iter().any(|r| r.is_empty()) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidRequirement,
                "a key's scopes must be RFC 6749 scope-tokens and its roles non-empty",
            ));
        }
        Ok(())
    }
}

/// Capability keys, each with the [`Grants`] (scopes, roles) configuration gives it: the
/// principal is a [`ScopedKey`], which [`Require::scope`](crate::Require::scope) and
/// [`Require::role`](crate::Require::role) check like a token's claims.
///
/// Keys are kept and compared as [`Keys`] are (SHA-256 digests, constant time, no early exit);
/// the same key rules apply (at least [`MIN_KEY_LEN`](crate::MIN_KEY_LEN) bytes), and a set with
/// no key fails when the guard is built.
///
/// ```
/// use axum_keyguard::{Grants, Guard, Require, ScopedKey, ScopedKeys};
///
/// let keys = ScopedKeys::new()
///     .add_key("k-tools-7f3a9c2e0d1b", Grants::new().add_scopes(["tools:read"]))?
///     .add_key("k-admin-b81d04f6a2c9", Grants::new().add_scopes(["tools:read", "admin"]).add_roles(["operator"]))?;
/// let guard = Guard::builder().with_verifier(keys).build()?;
/// let admin_only = Require::<ScopedKey>::scope("admin")?;
/// # Ok::<(), axum_keyguard::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ScopedKeys {
    keys: Keys,
    grants: Vec<Arc<Grants>>,
}

impl ScopedKeys {
    /// An empty set: add keys with [`add_key`](Self::add_key).
    #[must_use]
    pub fn new() -> Self {
        Self {
            keys: Keys::empty(),
            grants: Vec::new(),
        }
    }

    /// Adds `key` with `grants`. Fails on a key that [`Keys::new`] refuses, or a grant that is
    /// not a scope-token or an empty role (the error never holds the key).
    pub fn add_key(mut self, key: impl AsRef<str>, grants: Grants) -> Result<Self, ConfigError> {
        grants.check()?;
        self.keys.push(key.as_ref())?;
        self.grants.push(Arc::new(grants));
        Ok(self)
    }
}

impl Default for ScopedKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ScopedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedKeys")
            .field("count", &self.grants.len())
            .finish()
    }
}

impl Verifier for ScopedKeys {
    type Principal = ScopedKey;

    fn verify(&self, credential: &Credential<'_>) -> Verdict<ScopedKey> {
        Verdict::ready(match self.keys.find(credential) {
            Some((index, id)) => Ok(Grant::new(ScopedKey {
                id,
                grants: Arc::clone(&self.grants[index]),
            })),
            None => Err(Denial::invalid()),
        })
    }

    fn check_config(&self) -> Result<(), ConfigError> {
        if self.grants.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::EmptyKey,
                "at least one capability key is required",
            ));
        }
        Ok(())
    }

    fn has_jwt_shaped_key(&self) -> bool {
        self.keys.has_jwt_shaped_key()
    }
}

/// The principal of [`ScopedKeys`]: which key, and what it was given.
///
/// Displays as its [`KeyId`] (`key:` and eight hex digits).
#[derive(Clone)]
pub struct ScopedKey {
    id: KeyId,
    grants: Arc<Grants>,
}

impl ScopedKey {
    /// Which key.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// What configuration gave it.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }
}

impl fmt::Display for ScopedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

impl fmt::Debug for ScopedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedKey")
            .field("id", &self.id)
            .field("grants", &self.grants)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::VerdictState;

    #[test]
    fn each_key_carries_its_own_grants() {
        let keys = ScopedKeys::new()
            .add_key("k-tools-7f3a9c2e0d1b", Grants::new().add_scopes(["tools"]))
            .expect("key")
            .add_key("k-admin-b81d04f6a2c9", Grants::new().add_roles(["admin"]))
            .expect("key");
        let grants = |presented: &str| match keys.verify(&Credential::new(presented)).state {
            VerdictState::Ready(Ok(grant)) => Some(grant.principal.grants().clone()),
            VerdictState::Ready(Err(_)) => None,
            VerdictState::Pending(_) => panic!("keys decide at once"),
        };
        assert_eq!(
            grants("k-tools-7f3a9c2e0d1b"),
            Some(Grants::new().add_scopes(["tools"]))
        );
        assert_eq!(
            grants("k-admin-b81d04f6a2c9"),
            Some(Grants::new().add_roles(["admin"]))
        );
        assert_eq!(grants("k-admin-b81d04f6a2c8"), None);
        assert!(!format!("{keys:?}").contains("k-tools"));
    }

    #[test]
    fn bad_keys_and_grants_fail_closed() {
        assert!(ScopedKeys::new().add_key("short", Grants::new()).is_err());
        let bad = Grants::new().add_scopes(["two words"]);
        assert!(ScopedKeys::new()
            .add_key("k-tools-7f3a9c2e0d1b", bad)
            .is_err());
        let bad = Grants::new().add_roles([""]);
        assert!(ScopedKeys::new()
            .add_key("k-tools-7f3a9c2e0d1b", bad)
            .is_err());
        assert!(ScopedKeys::new().check_config().is_err());
    }
}
