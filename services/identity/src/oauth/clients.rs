//! Per-replica cache of OAuth2 clients, so that a `client_credentials`
//! request touches neither PostgreSQL nor Redis once warm.
//!
//! Entries are dropped on the `client.*` events every replica receives,
//! when this replica changes the client, and after the configured cache
//! age should an event be missed. Unknown ids are remembered briefly, up
//! to a bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keysilo_store::{ClientRecord, Store, StoreError};
use keysilo_types::TenantId;

const NEGATIVE_AGE: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 200_000;

enum Slot {
    Present(Arc<ClientRecord>, Instant),
    Absent(Instant),
}

/// The cache.
pub struct ClientCache {
    store: Store,
    max_age: Duration,
    entries: RwLock<HashMap<(TenantId, String), Slot>>,
    generation: AtomicU64,
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
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// An enabled client of the tenant, or `None`.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        let now = Instant::now();
        let key = (tenant.clone(), id.to_owned());
        if let Ok(entries) = self.entries.read() {
            match entries.get(&key) {
                Some(Slot::Present(client, until)) if *until > now => {
                    return Ok(Some(client.clone()));
                }
                Some(Slot::Absent(until)) if *until > now => return Ok(None),
                _ => {}
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let client = self
            .store
            .oauth_client(tenant, id)
            .await?
            .filter(|c| c.disabled_at.is_none())
            .map(Arc::new);
        let slot = match &client {
            Some(client) => Slot::Present(client.clone(), now + self.max_age),
            None => Slot::Absent(now + NEGATIVE_AGE),
        };
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.retain(|_, slot| matches!(slot, Slot::Present(_, until) if *until > now));
            }
            let room = entries.len() < MAX_ENTRIES || matches!(slot, Slot::Present(..));
            if room && self.generation.load(Ordering::SeqCst) == generation {
                entries.insert(key, slot);
            }
        }
        Ok(client)
    }

    /// Forgets one client.
    pub fn invalidate(&self, tenant: &TenantId, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&(tenant.clone(), id.to_owned()));
        }
    }

    /// Forgets every client of a tenant.
    pub fn invalidate_tenant(&self, tenant: &TenantId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|(t, _), _| t != tenant);
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}
