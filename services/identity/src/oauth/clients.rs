//! Per-replica cache of OAuth2 clients, so that a `client_credentials`
//! request touches neither PostgreSQL nor Redis once warm.
//!
//! Entries are dropped on the `client.*` events every replica receives,
//! when this replica changes the client, and after the configured cache
//! age should an event be missed. Unknown ids are remembered briefly, up
//! to a bound.
//!
//! Beside the clients, it holds each tenant's CORS origins (those its
//! public clients registered), so a browser's preflight costs no database
//! read either; they are dropped whenever a client of the tenant is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keysilo_store::{ClientRecord, Store, StoreError};
use keysilo_types::TenantId;

use crate::expiring::{ExpiringMap, Lookup};

const NEGATIVE_AGE: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 200_000;

/// The cache.
pub struct ClientCache {
    store: Store,
    max_age: Duration,
    entries: ExpiringMap<(TenantId, String), ClientRecord>,
    origins: ExpiringMap<TenantId, HashSet<String>>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache").finish_non_exhaustive()
    }
}

impl ClientCache {
    /// An empty cache.
    pub fn new(store: Store, max_age: Duration) -> Self {
        Self {
            store,
            max_age,
            entries: ExpiringMap::new(MAX_ENTRIES, NEGATIVE_AGE),
            origins: ExpiringMap::new(MAX_ENTRIES, NEGATIVE_AGE),
        }
    }

    /// An enabled client of the tenant, or `None`. While PostgreSQL is
    /// unavailable an expired entry is served as it was: disabling a client
    /// or changing its secret is a database write, so none can have
    /// happened.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        let key = (tenant.clone(), id.to_owned());
        let generation = match self.entries.lookup(&key) {
            Lookup::Fresh(client) => return Ok(client),
            Lookup::Miss(generation) => generation,
        };
        let client = match self.store.oauth_client(tenant, id).await {
            Ok(client) => client,
            Err(StoreError::Unavailable(cause)) => {
                if let Some(client) = self.entries.stale(&key) {
                    return Ok(Some(client));
                }
                return Err(StoreError::Unavailable(cause));
            }
            Err(err) => return Err(err),
        }
        .filter(|c| c.disabled_at.is_none())
        .map(Arc::new);
        let until = Instant::now() + self.max_age;
        self.entries
            .install(key, client.clone().map(|c| (c, until)), generation);
        Ok(client)
    }

    /// Whether `origin` (as the browser sent it) is registered by an
    /// enabled public client of the tenant. Served from memory once warm;
    /// while PostgreSQL is unavailable the last known set is used.
    pub async fn is_cors_origin(
        &self,
        tenant: &TenantId,
        origin: &str,
    ) -> Result<bool, StoreError> {
        let generation = match self.origins.lookup(tenant) {
            Lookup::Fresh(origins) => return Ok(origins.is_some_and(|o| o.contains(origin))),
            Lookup::Miss(generation) => generation,
        };
        let origins = match self.store.public_client_origins(tenant).await {
            Ok(origins) => Arc::new(origins.into_iter().collect::<HashSet<_>>()),
            Err(StoreError::Unavailable(cause)) => {
                if let Some(origins) = self.origins.stale(tenant) {
                    return Ok(origins.contains(origin));
                }
                return Err(StoreError::Unavailable(cause));
            }
            Err(err) => return Err(err),
        };
        let found = origins.contains(origin);
        let until = Instant::now() + self.max_age;
        self.origins
            .install(tenant.clone(), Some((origins, until)), generation);
        Ok(found)
    }

    /// Forgets one client (and its tenant's CORS origins).
    pub fn invalidate(&self, tenant: &TenantId, id: &str) {
        self.entries.invalidate(&(tenant.clone(), id.to_owned()));
        self.origins.invalidate(tenant);
    }

    /// Forgets every client of a tenant.
    pub fn invalidate_tenant(&self, tenant: &TenantId) {
        self.entries.invalidate_where(|(t, _)| t == tenant);
        self.origins.invalidate(tenant);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.clear();
        self.origins.clear();
    }
}
