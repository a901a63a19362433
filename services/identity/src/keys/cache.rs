//! Per-replica cache of each tenant's public documents and signing key.
//!
//! Entries are dropped when an event about their tenant arrives over Redis
//! (any replica's change), when this replica changes the tenant itself,
//! when a retired key's grace period ends, and in any case after
//! `keys.cache_max_age_seconds`, which bounds staleness should an event be
//! missed. The expiry, negative entries and the guard against a load that
//! raced an invalidation are [`crate::expiring::ExpiringMap`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keysilo_custody::MasterKeyRing;
use keysilo_store::{Store, StoreError, StoredKey, TenantRecord};
use keysilo_tokens::SigningKey;
use keysilo_types::{KeyStatus, TenantId};

use super::KeyError;
use super::service::wrapped_of;
use crate::clock;
use crate::expiring::{ExpiringMap, Lookup};

/// Above this many entries, expired and negative ones are purged and no
/// new negative entry is added.
const MAX_ENTRIES: usize = 100_000;
/// How long "no such tenant" is remembered; tenant creation announces
/// itself, so this only shields the database from floods of unknown ids.
const NEGATIVE_AGE: Duration = Duration::from_secs(5);

/// What a replica knows about one enabled tenant.
#[derive(Debug)]
pub struct TenantEntry {
    /// The tenant.
    pub tenant: TenantRecord,
    /// `{"keys":[…]}`: next, active and retired keys still in grace.
    pub jwks: String,
    /// Strong validator of `jwks`.
    pub etag: String,
    /// RFC 8414 metadata.
    pub metadata: String,
    /// The active key, unwrapped and ready to sign.
    pub signing: Option<SigningKey>,
    /// Verifiers of every published key, for introspection and tenant
    /// admins' tokens.
    pub verifiers: Arc<keysilo_tokens::KeySet>,
}

/// The cache; cheap to share behind an `Arc`.
pub struct KeyCache {
    store: Store,
    ring: Arc<MasterKeyRing>,
    max_age: Duration,
    public_base_url: String,
    mutual_tls: bool,
    entries: ExpiringMap<TenantId, TenantEntry>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

impl KeyCache {
    /// An empty cache.
    /// `mutual_tls`: the listener asks for client certificates, so the
    /// metadata offers RFC 8705.
    pub fn new(
        store: Store,
        ring: Arc<MasterKeyRing>,
        public_base_url: String,
        max_age: Duration,
        mutual_tls: bool,
    ) -> Self {
        Self {
            store,
            ring,
            max_age,
            public_base_url,
            mutual_tls,
            entries: ExpiringMap::new(MAX_ENTRIES, NEGATIVE_AGE),
        }
    }

    /// The issuer of tenant `id`.
    pub fn issuer(&self, id: &TenantId) -> String {
        format!("{}/{}", self.public_base_url, id)
    }

    /// The entry of an enabled tenant, loading it on a miss; `None` for an
    /// unknown or disabled tenant. While PostgreSQL is unavailable an
    /// expired entry is served as it was (see `docs/failure-modes.md`):
    /// nothing can have changed it, since every change is a database write.
    pub async fn get(&self, id: &TenantId) -> Result<Option<Arc<TenantEntry>>, KeyError> {
        let generation = match self.entries.lookup(id) {
            Lookup::Fresh(entry) => return Ok(entry),
            Lookup::Miss(generation) => generation,
        };
        let loaded = match self.load(id).await {
            Ok(loaded) => loaded,
            Err(KeyError::Store(StoreError::Unavailable(cause))) => {
                if let Some(entry) = self.entries.stale(id) {
                    tracing::debug!(tenant = %id, error = %cause, "PostgreSQL unavailable; serving the cached tenant");
                    return Ok(Some(entry));
                }
                return Err(KeyError::Store(StoreError::Unavailable(cause)));
            }
            Err(err) => return Err(err),
        };
        let entry = loaded.as_ref().map(|(entry, _)| entry.clone());
        self.entries.install(id.clone(), loaded, generation);
        Ok(entry)
    }

    /// Forgets one tenant.
    pub fn invalidate(&self, id: &TenantId) {
        self.entries.invalidate(id);
    }

    /// Forgets everything (after missing events, e.g. a Redis reconnect).
    pub fn clear(&self) {
        self.entries.clear();
    }

    async fn load(&self, id: &TenantId) -> Result<Option<(Arc<TenantEntry>, Instant)>, KeyError> {
        let store = &self.store;
        let Some(tenant) = store.tenant(id).await? else {
            return Ok(None);
        };
        if tenant.disabled_at.is_some() {
            return Ok(None);
        }
        let keys = store.keys(id).await?;
        let now = clock::now();
        let published: Vec<&StoredKey> = keys.iter().filter(|k| is_published(k, now)).collect();
        let jwks = jwks_document(&published);
        let etag = format!(
            "\"{}\"",
            URL_SAFE_NO_PAD.encode(openssl::sha::sha256(jwks.as_bytes()))
        );
        let active = keys.iter().find(|k| k.status == KeyStatus::Active);
        // An entry that expired with its keys unchanged (the same published
        // set, the same active key) hands over its signer and verifiers:
        // building them parses RSA keys, which costs more than a signature,
        // and with many tenants every entry expires every max-age.
        let (signing, verifiers) = match self.unchanged(id, &jwks, active) {
            Some(previous) => (previous.signing.clone(), previous.verifiers.clone()),
            None => {
                let public: Vec<serde_json::Value> =
                    published.iter().map(|k| public_jwk(k)).collect();
                let verifiers = keysilo_tokens::KeySet::from_jwks(&public).unwrap_or_default();
                (self.signing_key(&tenant, active), Arc::new(verifiers))
            }
        };
        // Reload when the first retired key leaves its grace period.
        let mut until = Instant::now() + self.max_age;
        for key in &published {
            if let Some(left) = key
                .publish_until
                .and_then(|end| end.duration_since(now).ok())
            {
                until = until.min(Instant::now() + left);
            }
        }
        let metadata = crate::oauth::discovery::metadata(&self.issuer(&tenant.id), self.mutual_tls)
            .to_string();
        Ok(Some((
            Arc::new(TenantEntry {
                tenant,
                jwks,
                etag,
                metadata,
                signing,
                verifiers,
            }),
            until,
        )))
    }

    /// The expired entry of tenant `id` if it published exactly `jwks` and
    /// signed with `active`, so its signer and verifiers are still right.
    fn unchanged(
        &self,
        id: &TenantId,
        jwks: &str,
        active: Option<&StoredKey>,
    ) -> Option<Arc<TenantEntry>> {
        let previous = self.entries.stale(id)?;
        let same_signer = match (&previous.signing, active) {
            (Some(signing), Some(active)) => *signing.kid() == active.kid,
            _ => false,
        };
        (same_signer && previous.jwks == jwks).then_some(previous)
    }

    /// Unwraps the active key and builds its signer. The public documents
    /// do not depend on it: if it cannot be unwrapped (a tampered row, a
    /// missing master key version), the JWKS is still served and signing
    /// fails loudly.
    fn signing_key(&self, tenant: &TenantRecord, active: Option<&StoredKey>) -> Option<SigningKey> {
        let active = active?;
        let signing = self
            .ring
            .unwrap(&tenant.id, &active.kid, &wrapped_of(active))
            .map_err(|err| err.to_string())
            .and_then(|private| {
                SigningKey::from_der(active.kid.clone(), private.as_der())
                    .map_err(|err| err.to_string())
            });
        match signing {
            Ok(signing) => Some(signing),
            Err(err) => {
                tracing::error!(
                    tenant = %tenant.id,
                    kid = %active.kid,
                    error = %err,
                    "cannot load the active signing key"
                );
                None
            }
        }
    }
}

/// Next and active keys are published; retired ones until their grace
/// period ends; revoked ones never.
fn is_published(key: &StoredKey, now: SystemTime) -> bool {
    match key.status {
        KeyStatus::Next | KeyStatus::Active => true,
        KeyStatus::Retired => key.publish_until.is_some_and(|end| end > now),
        KeyStatus::Revoked => false,
    }
}

fn rank(status: KeyStatus) -> u8 {
    match status {
        KeyStatus::Active => 0,
        KeyStatus::Next => 1,
        KeyStatus::Retired | KeyStatus::Revoked => 2,
    }
}

fn jwks_document(keys: &[&StoredKey]) -> String {
    let mut keys = keys.to_vec();
    keys.sort_by_key(|k| rank(k.status));
    let jwks: Vec<serde_json::Value> = keys.iter().map(|k| public_jwk(k)).collect();
    serde_json::json!({ "keys": jwks }).to_string()
}

fn public_jwk(key: &StoredKey) -> serde_json::Value {
    keysilo_custody::PublicJwk {
        n: key.modulus_b64.clone(),
        e: key.exponent_b64.clone(),
    }
    .to_jwk(&key.kid)
}
