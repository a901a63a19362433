//! Per-replica cache of OAuth2 clients, so that a `client_credentials`
//! request touches neither PostgreSQL nor Redis once warm.
//!
//! Entries are dropped on the `client.*` events every replica receives,
//! when this replica changes the client, and after the configured cache
//! age should an event be missed. Unknown ids are remembered briefly, up
//! to a bound.

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

    /// Forgets one client.
    pub fn invalidate(&self, tenant: &TenantId, id: &str) {
        self.entries.invalidate(&(tenant.clone(), id.to_owned()));
    }

    /// Forgets every client of a tenant.
    pub fn invalidate_tenant(&self, tenant: &TenantId) {
        self.entries.invalidate_where(|(t, _)| t == tenant);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.clear();
    }
}
