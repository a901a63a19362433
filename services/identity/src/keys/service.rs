//! The operations on tenants and their keys. Every change of a tenant's key
//! set runs under that tenant's Redis lock and commits with its fence.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keysilo_config::Settings;
use keysilo_coord::{Coord, CoordError, Event};

use super::KeyCache;
use crate::events::Events;
use keysilo_custody::{CustodyError, GeneratedKey, MasterKey, MasterKeyRing, generate_rsa_key};
use keysilo_store::{
    DueRotation, KeyChange, KeyOutcome, NewAuditEvent, NewKey, Store, StoreError, StoredKey,
    TenantRecord,
};
use keysilo_types::{KeyStatus, Kid, TenantId};

use crate::clock;

/// What one pass over the due rotation steps did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationPass {
    /// Steps done (a key staged, promoted or retired).
    pub done: usize,
    /// Steps that failed; each is logged with its tenant.
    pub failed: usize,
}
/// The lock kind that guards a tenant's key set.
const TENANT_KEYS_LOCK: &str = "tenant-keys";
/// Keys re-wrapped per transaction.
const REWRAP_BATCH: i64 = 100;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// PostgreSQL failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed, or the lock stayed busy.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// Key generation, wrapping or unwrapping failed.
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// No such (enabled) tenant, or no such key.
    #[error("not found")]
    NotFound,
    /// The lock was lost before the change committed; nothing changed.
    #[error("the rotation lock was lost; nothing was changed")]
    LockLost,
    /// A blocking task panicked or was cancelled.
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// The outcome of an emergency rotation.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new key, which signs now.
    pub active: Kid,
    /// The key that stopped signing, if there was one.
    pub retired: Option<Kid>,
}

/// The outcome of a rewrap.
#[derive(Debug, Clone, Copy)]
pub struct RewrapReport {
    /// The version every key is now wrapped under.
    pub version: u32,
    /// How many keys this call re-wrapped.
    pub rewrapped: u64,
}

/// Tenants' keys: custody, store and coordination put together. Every
/// change drops this replica's cached entry and is announced to the
/// others and the edges before the call returns.
#[derive(Debug, Clone)]
pub struct KeyService {
    ring: Arc<MasterKeyRing>,
    store: Store,
    coord: Coord,
    settings: Arc<Settings>,
    cache: Arc<KeyCache>,
    events: Events,
}

/// Runs `work` as its own task, so that a caller that goes away (a client
/// disconnecting drops the request future) cannot cancel it between the
/// commit and the announcement.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, KeyError>> + Send + 'static,
) -> Result<T, KeyError> {
    tokio::spawn(work).await?
}

/// The row to store for a wrapped key.
fn key_row(kid: &Kid, n: &str, e: &str, wrapped: keysilo_custody::WrappedKey) -> NewKey {
    NewKey {
        kid: kid.clone(),
        modulus_b64: n.to_owned(),
        exponent_b64: e.to_owned(),
        wrapped: wrapped.ciphertext,
        nonce: wrapped.nonce,
        master_key_version: wrapped.master_key_version,
    }
}

/// Builds the master key ring from configuration.
pub fn master_key_ring(settings: &Settings) -> Result<MasterKeyRing, CustodyError> {
    let keys = settings
        .custody
        .master_keys
        .iter()
        .map(|k| MasterKey::from_base64(k.version, k.key.expose()))
        .collect::<Result<Vec<_>, _>>()?;
    MasterKeyRing::new(settings.custody.current_master_key_version, keys)
}

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl KeyService {
    /// Puts the pieces together.
    pub fn new(
        settings: Arc<Settings>,
        ring: Arc<MasterKeyRing>,
        store: Store,
        coord: Coord,
        cache: Arc<KeyCache>,
        events: Events,
    ) -> Self {
        Self {
            ring,
            store,
            coord,
            settings,
            cache,
            events,
        }
    }

    /// The master key ring (for unwrapping in the cache).
    pub fn ring(&self) -> &MasterKeyRing {
        &self.ring
    }

    /// RSA key generation takes tens of milliseconds of CPU: keep it off the
    /// async workers.
    pub(crate) async fn generate(
        &self,
        tenant: &TenantId,
    ) -> Result<(GeneratedKey, NewKey), KeyError> {
        let ring = self.ring.clone();
        let tenant = tenant.clone();
        tokio::task::spawn_blocking(move || {
            let key = generate_rsa_key()?;
            let wrapped = ring.wrap(&tenant, &key.kid, &key.private)?;
            let row = key_row(&key.kid, &key.public.n, &key.public.e, wrapped);
            Ok((key, row))
        })
        .await?
    }

    /// The grace period of a key retired now: the token lifetime, the
    /// verifiers' clock skew, and the longest a replica that missed the
    /// change may keep signing with it (the cache's maximum age).
    fn publish_until(&self, tenant: &TenantRecord, now: SystemTime) -> SystemTime {
        let ttl = u64::try_from(tenant.token_ttl_seconds).unwrap_or(0);
        let grace = seconds(ttl.saturating_add(self.settings.keys.clock_skew_seconds))
            .saturating_add(seconds(self.settings.keys.cache_max_age_seconds));
        now.checked_add(grace).unwrap_or(now)
    }

    async fn enabled_tenant(&self, id: &TenantId) -> Result<TenantRecord, KeyError> {
        match self.store.tenant(id).await? {
            Some(tenant) if tenant.disabled_at.is_none() => Ok(tenant),
            _ => Err(KeyError::NotFound),
        }
    }

    /// After a committed change of `event.tenant()`'s keys: drop the
    /// local entry, then tell the other replicas and the edges.
    async fn changed(&self, event: Event) {
        if let Some(tenant) = event.tenant() {
            self.cache.invalidate(tenant);
        }
        self.events.publish(event).await;
    }

    async fn lock(
        &self,
        tenant: &TenantId,
        wait: Duration,
    ) -> Result<keysilo_coord::LockGuard, KeyError> {
        Ok(self
            .coord
            .acquire_lock(
                TENANT_KEYS_LOCK,
                tenant.as_str(),
                seconds(self.settings.keys.lock_ttl_seconds),
                wait,
            )
            .await?)
    }

    async fn commit(
        &self,
        guard: &keysilo_coord::LockGuard,
        tenant: &TenantId,
        change: &KeyChange,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<KeyOutcome, KeyError> {
        if guard.is_lost() {
            return Err(KeyError::LockLost);
        }
        match self
            .store
            .apply_key_change(guard.fence(), tenant, change, audit, now)
            .await
        {
            Err(StoreError::StaleFence) => Err(KeyError::LockLost),
            other => Ok(other?),
        }
    }

    /// Releases a lock after its change committed. A failure here must not
    /// turn a committed change into an error: the lock expires anyway.
    async fn release(guard: keysilo_coord::LockGuard) {
        if let Err(err) = guard.release().await {
            tracing::warn!(error = %err, "could not release a lock; it will expire");
        }
    }

    /// Emergency rotation: a fresh key signs at once; the active key retires
    /// and stays published for its grace period; a staged `next` key is
    /// withdrawn.
    pub async fn rotate_now(&self, id: &TenantId, actor: &str) -> Result<Rotation, KeyError> {
        let (this, id, actor) = (self.clone(), id.clone(), actor.to_owned());
        detached(async move { this.rotate_now_attached(&id, &actor).await }).await
    }

    async fn rotate_now_attached(&self, id: &TenantId, actor: &str) -> Result<Rotation, KeyError> {
        self.enabled_tenant(id).await?;
        let (key, row) = self.generate(id).await?;
        let guard = self
            .lock(id, seconds(self.settings.keys.lock_wait_seconds))
            .await?;
        let tenant = self.enabled_tenant(id).await?;
        let retired = active_kid(&self.store.keys(id).await?);
        let now = clock::now();
        let change = KeyChange::ActivateNew {
            key: row,
            publish_until: self.publish_until(&tenant, now),
        };
        let audit = NewAuditEvent {
            tenant_id: Some(id.clone()),
            kind: Event::KeyRotated {
                tenant: id.clone(),
                kid: None,
            }
            .kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({
                "trigger": "manual",
                "kid": key.kid,
                "retired_kid": retired,
                "fence": guard.fence().value(),
            }),
        };
        let outcome = self.commit(&guard, id, &change, &audit, now).await?;
        Self::release(guard).await;
        self.changed(Event::KeyRotated {
            tenant: id.clone(),
            kid: Some(key.kid.clone()),
        })
        .await;
        if let Some(next) = &outcome.withdrawn_next {
            tracing::info!(tenant = %id, kid = %next, "staged next key withdrawn by an emergency rotation");
        }
        Ok(Rotation {
            active: key.kid,
            retired,
        })
    }

    /// Revokes `kid` and returns the key that signs afterwards. If `kid` was
    /// active, the `next` key or a fresh one takes over before this
    /// returns. Revoking a revoked key changes nothing.
    pub async fn revoke(
        &self,
        id: &TenantId,
        kid: &Kid,
        actor: &str,
    ) -> Result<Option<Kid>, KeyError> {
        let (this, id, kid, actor) = (self.clone(), id.clone(), kid.clone(), actor.to_owned());
        detached(async move { this.revoke_attached(&id, &kid, &actor).await }).await
    }

    async fn revoke_attached(
        &self,
        id: &TenantId,
        kid: &Kid,
        actor: &str,
    ) -> Result<Option<Kid>, KeyError> {
        self.enabled_tenant(id).await?;
        let guard = self
            .lock(id, seconds(self.settings.keys.lock_wait_seconds))
            .await?;
        let keys = self.store.keys(id).await?;
        let target = keys
            .iter()
            .find(|k| &k.kid == kid)
            .ok_or(KeyError::NotFound)?;
        if target.status == KeyStatus::Revoked {
            Self::release(guard).await;
            return Ok(active_kid(&keys));
        }
        let was = target.status;
        // A replacement is needed only if the active key goes and no `next`
        // key can take over; the store decides on what it reads under the
        // fence and says so if it needs one after all.
        let mut replacement = None;
        if was == KeyStatus::Active && !keys.iter().any(|k| k.status == KeyStatus::Next) {
            replacement = Some(self.generate(id).await?.1);
        }
        let event = Event::KeyRevoked {
            tenant: id.clone(),
            kid: kid.clone(),
        };
        let outcome = loop {
            let now = clock::now();
            let change = KeyChange::Revoke {
                kid: kid.clone(),
                replacement: replacement.clone(),
            };
            let audit = NewAuditEvent {
                tenant_id: Some(id.clone()),
                kind: event.kind(),
                actor: actor.to_owned(),
                details: serde_json::json!({
                    "kid": kid,
                    "was": was.as_str(),
                    "fence": guard.fence().value(),
                }),
            };
            match self.commit(&guard, id, &change, &audit, now).await {
                Err(KeyError::Store(StoreError::Precondition(_))) if replacement.is_none() => {
                    replacement = Some(self.generate(id).await?.1);
                }
                other => break other?,
            }
        };
        Self::release(guard).await;
        self.changed(event).await;
        Ok(outcome.active)
    }

    /// One pass of scheduled rotation over every tenant with a step due.
    /// Runs on every replica; the lock and a re-check under it make each
    /// step happen once.
    pub async fn run_due_rotations(&self) -> Result<RotationPass, KeyError> {
        let keys = &self.settings.keys;
        let now = clock::now();
        let stage_before = now
            .checked_sub(seconds(
                keys.rotation_period_seconds
                    .saturating_sub(keys.publish_ahead_seconds),
            ))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let due = self.store.due_rotations(now, stage_before).await?;
        let mut pass = RotationPass::default();
        for (tenant, step) in due {
            match self.scheduled_step(&tenant, step).await {
                Ok(true) => pass.done += 1,
                Ok(false) => {}
                // Another replica holds the lock and does the step.
                Err(KeyError::Coord(CoordError::LockBusy { .. })) => {}
                Err(err) => {
                    pass.failed += 1;
                    tracing::warn!(tenant = %tenant, error = %err, "scheduled rotation failed");
                }
            }
        }
        Ok(pass)
    }

    async fn scheduled_step(&self, id: &TenantId, step: DueRotation) -> Result<bool, KeyError> {
        // Another replica may be on it already: do not wait.
        let guard = self.lock(id, Duration::ZERO).await?;
        let tenant = self.enabled_tenant(id).await?;
        let keys = self.store.keys(id).await?;
        let now = clock::now();
        let settings = &self.settings.keys;
        let next = keys.iter().find(|k| k.status == KeyStatus::Next);
        let active = keys.iter().find(|k| k.status == KeyStatus::Active);
        let (change, event, details) = match step {
            DueRotation::StageNext => {
                let lead = seconds(
                    settings
                        .rotation_period_seconds
                        .saturating_sub(settings.publish_ahead_seconds),
                );
                let old_enough = active
                    .and_then(|a| a.activated_at)
                    .is_some_and(|at| at.checked_add(lead).is_some_and(|due| due <= now));
                if next.is_some() || !old_enough {
                    Self::release(guard).await;
                    return Ok(false);
                }
                let (key, row) = self.generate(id).await?;
                let activate_after = now
                    .checked_add(seconds(settings.publish_ahead_seconds))
                    .unwrap_or(now);
                (
                    KeyChange::StageNext {
                        key: row,
                        activate_after,
                    },
                    Event::KeyStaged { tenant: id.clone() },
                    serde_json::json!({
                        "trigger": "scheduled",
                        "kid": key.kid,
                        "activate_after": clock::rfc3339(activate_after),
                    }),
                )
            }
            DueRotation::PromoteNext => {
                let Some(next) = next.filter(|n| n.activate_after.is_some_and(|at| at <= now))
                else {
                    Self::release(guard).await;
                    return Ok(false);
                };
                (
                    KeyChange::PromoteNext {
                        publish_until: self.publish_until(&tenant, now),
                    },
                    Event::KeyRotated {
                        tenant: id.clone(),
                        kid: Some(next.kid.clone()),
                    },
                    serde_json::json!({
                        "trigger": "scheduled",
                        "kid": next.kid,
                        "retired_kid": active.map(|a| &a.kid),
                    }),
                )
            }
        };
        let audit = NewAuditEvent {
            tenant_id: Some(id.clone()),
            kind: event.kind(),
            actor: "scheduler".to_owned(),
            details,
        };
        self.commit(&guard, id, &change, &audit, now).await?;
        Self::release(guard).await;
        self.changed(event).await;
        Ok(true)
    }

    /// Re-wraps every key not under the current master key version, in
    /// batches. Safe to run on several replicas at once: each row changes
    /// only if it is still under the version it was read with.
    pub async fn rewrap_all(&self, actor: &str) -> Result<RewrapReport, KeyError> {
        let version = self.ring.current_version();
        let mut rewrapped = 0;
        loop {
            let batch = self.store.keys_to_rewrap(version, REWRAP_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            let ring = self.ring.clone();
            let pairs = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|old| {
                        let new = ring.rewrap(&old.tenant_id, &old.kid, &wrapped_of(&old))?;
                        let row = key_row(&old.kid, &old.modulus_b64, &old.exponent_b64, new);
                        Ok((old, row))
                    })
                    .collect::<Result<Vec<_>, CustodyError>>()
            })
            .await??;
            rewrapped += self
                .store
                .store_rewrapped(&pairs, actor, clock::now())
                .await?;
        }
        if rewrapped > 0 {
            self.events.publish(Event::MasterKeyRewrapped).await;
        }
        Ok(RewrapReport { version, rewrapped })
    }
}

/// The wrapped material of a stored key, as custody expects it.
pub fn wrapped_of(key: &StoredKey) -> keysilo_custody::WrappedKey {
    keysilo_custody::WrappedKey {
        ciphertext: key.wrapped.clone(),
        nonce: key.nonce,
        master_key_version: key.master_key_version,
    }
}

fn active_kid(keys: &[StoredKey]) -> Option<Kid> {
    keys.iter()
        .find(|k| k.status == KeyStatus::Active)
        .map(|k| k.kid.clone())
}
