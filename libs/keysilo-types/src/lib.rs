//! Identifiers and small domain types shared by Keysilo crates.
//!
//! Each type has a private field and a parsing constructor, so holding one
//! proves it is valid ("parse, don't validate"):
//!
//! ```
//! use keysilo_types::TenantId;
//!
//! assert!(TenantId::parse("acme-prod").is_ok());
//! assert!(TenantId::parse("Acme").is_err());
//! assert!(TenantId::parse("admin").is_err()); // reserved
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value does not have the identifier's shape.
    #[error("{what} must match {pattern}")]
    Malformed {
        /// Which identifier.
        what: &'static str,
        /// The accepted shape.
        pattern: &'static str,
    },
    /// The value is reserved for the platform's own paths.
    #[error("`{0}` is reserved")]
    Reserved(String),
}

/// Tenant ids that would collide with the service's own top-level paths.
pub const RESERVED_TENANT_IDS: &[&str] = &["admin", "internal", "healthz", "readyz", "metrics"];

/// What a tenant id looks like, as a regular expression (documents show
/// it; [`TenantId::parse`] checks it).
pub const TENANT_ID_PATTERN: &str = "^[a-z0-9][a-z0-9-]{1,62}$";

/// A tenant id: [`TENANT_ID_PATTERN`], not one of
/// [`RESERVED_TENANT_IDS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant id.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let mut chars = value.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !(first_ok && rest_ok && (2..=63).contains(&value.len())) {
            return Err(IdError::Malformed {
                what: "tenant id",
                pattern: TENANT_ID_PATTERN,
            });
        }
        if RESERVED_TENANT_IDS.contains(&value) {
            return Err(IdError::Reserved(value.to_owned()));
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A signing key id: 1–64 characters of the base64url alphabet (Keysilo's
/// own are RFC 7638 thumbprints, 43 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Kid(String);

impl Kid {
    /// Parses a key id.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let ok = (1..=64).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(IdError::Malformed {
                what: "kid",
                pattern: "^[A-Za-z0-9_-]{1,64}$",
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Kid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a signing key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Published in the JWKS, not signing yet.
    Next,
    /// The one key that signs.
    Active,
    /// No longer signs; published until its grace period ends.
    Retired,
    /// Withdrawn: never published again.
    Revoked,
}

impl KeyStatus {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }
}

impl FromStr for KeyStatus {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(Self::Next),
            "active" => Ok(Self::Active),
            "retired" => Ok(Self::Retired),
            "revoked" => Ok(Self::Revoked),
            _ => Err(IdError::Malformed {
                what: "key status",
                pattern: "next|active|retired|revoked",
            }),
        }
    }
}

/// A fencing token: proof that its holder acquired a distributed lock, and
/// in which order. Writes guarded by a lock present it to the database,
/// which refuses a token lower than one already committed, so a holder
/// whose lock expired cannot commit.
///
/// Only the lock implementation should build one; the constructor's name
/// says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence {
    lock: &'static str,
    value: i64,
}

impl Fence {
    /// Records the token handed out with a freshly acquired lock.
    pub fn issued_by_lock(lock: &'static str, value: i64) -> Self {
        Self { lock, value }
    }

    /// The lock's kind, e.g. `tenant-keys`.
    pub fn lock(&self) -> &'static str {
        self.lock
    }

    /// The token's value; larger is newer.
    pub fn value(&self) -> i64 {
        self.value
    }
}
