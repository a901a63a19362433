//! Per-tenant JWKS fetched from the identity service, honouring its
//! `Cache-Control: max-age`. An unknown `kid` triggers at most one refetch
//! per tenant per `jwks_refetch_min_seconds` (single-flight: concurrent
//! requests wait for the one fetch), so random `kid`s cannot flood the
//! identity service. When it is down, known keys keep validating.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keysilo_tokens::KeySet;
use keysilo_types::{Kid, TenantId};

/// Tenants tracked at most before forgotten empty entries are pruned.
const MAX_TENANTS: usize = 100_000;
/// JWKS fetches in flight at most, over all tenants.
const MAX_FETCHES: usize = 16;

struct Entry {
    keys: Arc<KeySet>,
    fresh_until: Instant,
    last_attempt: Instant,
}

/// The cache.
pub struct JwksCache {
    http: reqwest::Client,
    identity_url: String,
    min_refetch: Duration,
    entries: Mutex<HashMap<TenantId, Entry>>,
    fetching: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").finish_non_exhaustive()
    }
}

/// What a fetch found.
enum Fetched {
    Keys(KeySet, Duration),
    /// The identity service says the tenant does not exist (or is disabled).
    NoSuchTenant,
}

impl JwksCache {
    /// An empty cache.
    pub fn new(http: reqwest::Client, identity_url: String, min_refetch: Duration) -> Self {
        Self {
            http,
            identity_url,
            min_refetch,
            entries: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_FETCHES),
        }
    }

    fn cached(&self, tenant: &TenantId) -> Option<(Arc<KeySet>, bool, Instant)> {
        let entries = self.entries.lock().ok()?;
        entries.get(tenant).map(|e| {
            (
                e.keys.clone(),
                e.fresh_until > Instant::now(),
                e.last_attempt,
            )
        })
    }

    /// Whether `kid` is among the fresh keys known for `tenant` (no fetch);
    /// once the JWKS is stale a token goes through [`Self::keys_for`] again.
    pub fn knows(&self, tenant: &TenantId, kid: &Kid) -> bool {
        self.cached(tenant)
            .is_some_and(|(keys, fresh, _)| fresh && keys.contains(kid))
    }

    /// The tenant's keys, fetched if unknown, stale, or missing `kid`.
    pub async fn keys_for(&self, tenant: &TenantId, kid: &Kid) -> Option<Arc<KeySet>> {
        if let Some((keys, fresh, _)) = self.cached(tenant)
            && fresh
            && keys.contains(kid)
        {
            return Some(keys);
        }
        let gate = {
            let mut fetching = self.fetching.lock().ok()?;
            // Invented tenant names must not grow this without bound: drop
            // the gates nobody is waiting on.
            if fetching.len() >= MAX_TENANTS {
                fetching.retain(|_, gate| Arc::strong_count(gate) > 1);
            }
            fetching.entry(tenant.clone()).or_default().clone()
        };
        let _single_flight = gate.lock().await;
        // Someone else may have fetched while we waited.
        if let Some((keys, fresh, last_attempt)) = self.cached(tenant) {
            let recently = last_attempt.elapsed() < self.min_refetch;
            if (fresh && keys.contains(kid)) || recently {
                return Some(keys);
            }
        }
        // A global cap on fetches in flight, whatever the tenants.
        let _permit = self.in_flight.acquire().await.ok()?;
        match self.fetch(tenant).await {
            Ok(Fetched::Keys(keys, max_age)) => {
                let keys = Arc::new(keys);
                let now = Instant::now();
                if let Ok(mut entries) = self.entries.lock() {
                    entries.insert(
                        tenant.clone(),
                        Entry {
                            keys: keys.clone(),
                            fresh_until: now + max_age,
                            last_attempt: now,
                        },
                    );
                }
                Some(keys)
            }
            Ok(Fetched::NoSuchTenant) => {
                // Remembered as empty for the refetch interval, so invented
                // tenants cost one fetch each per interval at most.
                self.remember_empty(tenant);
                None
            }
            Err(err) => {
                // Stale-while-revalidate: keep what we had.
                tracing::warn!(tenant = %tenant, error = %err, "JWKS fetch failed; keeping known keys");
                let now = Instant::now();
                let mut entries = self.entries.lock().ok()?;
                match entries.get_mut(tenant) {
                    Some(entry) => {
                        entry.last_attempt = now;
                        Some(entry.keys.clone())
                    }
                    None => {
                        drop(entries);
                        self.remember_empty(tenant);
                        None
                    }
                }
            }
        }
    }

    fn remember_empty(&self, tenant: &TenantId) {
        let now = Instant::now();
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_TENANTS {
                entries.retain(|_, e| !e.keys.is_empty());
            }
            entries.insert(
                tenant.clone(),
                Entry {
                    keys: Arc::new(KeySet::default()),
                    fresh_until: now,
                    last_attempt: now,
                },
            );
        }
    }

    /// Drops a tenant's keys (it was disabled, or a key was revoked).
    pub fn forget(&self, tenant: &TenantId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(tenant);
        }
    }

    async fn fetch(&self, tenant: &TenantId) -> Result<Fetched, reqwest::Error> {
        let url = format!("{}/{}/.well-known/jwks", self.identity_url, tenant);
        let response = self.http.get(&url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Fetched::NoSuchTenant);
        }
        let response = response.error_for_status()?;
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .filter_map(|d| d.trim().strip_prefix("max-age="))
                    .find_map(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(60)
            .min(300);
        let body: serde_json::Value = response.json().await?;
        let jwks = body
            .get("keys")
            .and_then(|k| k.as_array())
            .cloned()
            .unwrap_or_default();
        let keys = KeySet::from_jwks(&jwks).unwrap_or_default();
        Ok(Fetched::Keys(keys, Duration::from_secs(max_age)))
    }
}
