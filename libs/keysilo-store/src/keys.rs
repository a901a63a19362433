//! Tenants, their signing keys and the audit trail.
//!
//! Every change to a tenant's key set is one transaction that first checks
//! the caller's [`Fence`] against `lock_fences`: a writer whose lock was
//! taken over by someone else is refused with [`StoreError::StaleFence`],
//! and the row lock on `lock_fences` serialises concurrent writers.

use std::time::SystemTime;

use keysilo_types::{Fence, KeyStatus, Kid, TenantId};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::{Store, StoreError};

/// A tenant as stored.
#[derive(Debug, Clone)]
pub struct TenantRecord {
    /// The tenant's id.
    pub id: TenantId,
    /// Human-readable name.
    pub display_name: String,
    /// Lifetime of its access tokens.
    pub token_ttl_seconds: i32,
    /// Lifetime of the auth tokens its backends mint (secure mode).
    pub auth_token_ttl_seconds: i32,
    /// How long a spent refresh token may be presented again when its
    /// answer was lost (0: never).
    pub refresh_reuse_grace_seconds: i32,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was disabled, if it was.
    pub disabled_at: Option<SystemTime>,
}

/// The material of a key about to be stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key's id.
    pub kid: Kid,
    /// RSA modulus, base64url.
    pub modulus_b64: String,
    /// RSA public exponent, base64url.
    pub exponent_b64: String,
    /// The sealed private key (ciphertext and tag).
    pub wrapped: Vec<u8>,
    /// The 96-bit nonce of the seal.
    pub nonce: [u8; 12],
    /// The master key version that sealed it.
    pub master_key_version: u32,
}

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The key's id.
    pub kid: Kid,
    /// Where it is in its life.
    pub status: KeyStatus,
    /// RSA modulus, base64url.
    pub modulus_b64: String,
    /// RSA public exponent, base64url.
    pub exponent_b64: String,
    /// The sealed private key.
    pub wrapped: Vec<u8>,
    /// The nonce of the seal.
    pub nonce: [u8; 12],
    /// The master key version that sealed it.
    pub master_key_version: u32,
    /// When it was generated.
    pub created_at: SystemTime,
    /// For a `next` key: when it is due to start signing.
    pub activate_after: Option<SystemTime>,
    /// When it started signing.
    pub activated_at: Option<SystemTime>,
    /// For a retired key: until when it stays published.
    pub publish_until: Option<SystemTime>,
}

/// One change to a tenant's keys, applied atomically under a fence.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// Emergency rotation: the active key retires (published until
    /// `publish_until`) and `key` signs at once. A staged `next` key, made
    /// before the emergency, is withdrawn so that it cannot take over later.
    ActivateNew {
        /// The new active key.
        key: NewKey,
        /// End of the retired key's grace period.
        publish_until: SystemTime,
    },
    /// Staged rotation, step one: publish `key` as `next`.
    StageNext {
        /// The key to publish.
        key: NewKey,
        /// When it becomes due to sign.
        activate_after: SystemTime,
    },
    /// Staged rotation, step two: `next` signs, the active key retires.
    PromoteNext {
        /// End of the retired key's grace period.
        publish_until: SystemTime,
    },
    /// Revocation of `kid`. If it is active, the `next` key takes over, or
    /// `replacement` when there is none; without one the change fails with
    /// [`StoreError::Precondition`] and nothing is written.
    Revoke {
        /// The key to revoke.
        kid: Kid,
        /// A new active key, needed only when `kid` is active and no `next`
        /// key exists.
        replacement: Option<NewKey>,
    },
}

/// What a key change left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOutcome {
    /// The key that signs after the change.
    pub active: Option<Kid>,
    /// A staged `next` key the change withdrew (emergency rotation).
    pub withdrawn_next: Option<Kid>,
}

/// An audit event to record alongside a change.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// The tenant concerned, if any.
    pub tenant_id: Option<TenantId>,
    /// Dotted event type, e.g. `key.rotated`.
    pub kind: &'static str,
    /// Who did it (`platform-admin`, `scheduler`, a user id).
    pub actor: String,
    /// Non-secret details.
    pub details: serde_json::Value,
}

/// An audit event as stored.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// Monotonic id.
    pub id: i64,
    /// Dotted event type.
    pub kind: String,
    /// When it happened.
    pub at: SystemTime,
    /// Who did it.
    pub actor: String,
    /// Non-secret details.
    pub details: serde_json::Value,
}

/// A rotation step that is due for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueRotation {
    /// The active key is old enough that a `next` key should be published.
    StageNext,
    /// The `next` key has been published long enough to start signing.
    PromoteNext,
}

const KEY_COLUMNS: &str = "tenant_id, kid, status, modulus_b64, exponent_b64, wrapped_private_key, \
     wrap_nonce, master_key_version, created_at, activate_after, activated_at, publish_until";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn key_from_row(row: &Row) -> Result<StoredKey, StoreError> {
    let tenant: String = row.try_get(0)?;
    let kid: String = row.try_get(1)?;
    let status: String = row.try_get(2)?;
    let nonce: Vec<u8> = row.try_get(6)?;
    let version: i32 = row.try_get(7)?;
    Ok(StoredKey {
        tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
        kid: Kid::parse(&kid).map_err(|_| corrupt("kid"))?,
        status: status.parse().map_err(|_| corrupt("key status"))?,
        modulus_b64: row.try_get(3)?,
        exponent_b64: row.try_get(4)?,
        wrapped: row.try_get(5)?,
        nonce: nonce.try_into().map_err(|_| corrupt("nonce"))?,
        master_key_version: u32::try_from(version).map_err(|_| corrupt("master key version"))?,
        created_at: row.try_get(8)?,
        activate_after: row.try_get(9)?,
        activated_at: row.try_get(10)?,
        publish_until: row.try_get(11)?,
    })
}

fn tenant_from_row(row: &Row) -> Result<TenantRecord, StoreError> {
    let id: String = row.try_get(0)?;
    Ok(TenantRecord {
        id: TenantId::parse(&id).map_err(|_| corrupt("tenant id"))?,
        display_name: row.try_get(1)?,
        token_ttl_seconds: row.try_get(2)?,
        created_at: row.try_get(3)?,
        disabled_at: row.try_get(4)?,
        auth_token_ttl_seconds: row.try_get(5)?,
        refresh_reuse_grace_seconds: row.try_get(6)?,
    })
}

/// The columns [`tenant_from_row`] reads, in its order.
const TENANT_COLUMNS: &str = "id, display_name, token_ttl_seconds, created_at, disabled_at, \
     auth_token_ttl_seconds, refresh_reuse_grace_seconds";

/// Changed settings of a tenant (`PATCH /admin/v1/tenants/{T}`); `None`
/// leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New access-token lifetime.
    pub token_ttl_seconds: Option<i32>,
    /// New auth-token lifetime.
    pub auth_token_ttl_seconds: Option<i32>,
    /// New lost-refresh grace.
    pub refresh_reuse_grace_seconds: Option<i32>,
}

fn version_param(version: u32) -> Result<i32, StoreError> {
    i32::try_from(version).map_err(|_| corrupt("master key version out of range"))
}

async fn insert_key(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    key: &NewKey,
    status: KeyStatus,
    activate_after: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), StoreError> {
    let activated_at = (status == KeyStatus::Active).then_some(now);
    tx.execute(
        "INSERT INTO signing_keys (tenant_id, kid, status, modulus_b64, exponent_b64, \
         wrapped_private_key, wrap_nonce, master_key_version, created_at, activate_after, activated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &tenant.as_str(),
            &key.kid.as_str(),
            &status.as_str(),
            &key.modulus_b64,
            &key.exponent_b64,
            &key.wrapped,
            &key.nonce.as_slice(),
            &version_param(key.master_key_version)?,
            &now,
            &activate_after,
            &activated_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn insert_audit(
    tx: &tokio_postgres::Transaction<'_>,
    event: &NewAuditEvent,
    now: SystemTime,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit_events (tenant_id, type, at, actor, details) VALUES ($1, $2, $3, $4, $5)",
        &[
            &event.tenant_id.as_ref().map(TenantId::as_str),
            &event.kind,
            &now,
            &event.actor,
            &event.details,
        ],
    )
    .await?;
    Ok(())
}

async fn retire_active(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    publish_until: SystemTime,
    now: SystemTime,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            "UPDATE signing_keys SET status = 'retired', retired_at = $2, publish_until = $3 \
             WHERE tenant_id = $1 AND status = 'active'",
            &[&tenant.as_str(), &now, &publish_until],
        )
        .await?)
}

async fn revoke_key(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    kid: &Kid,
    now: SystemTime,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            "UPDATE signing_keys SET status = 'revoked', revoked_at = $3 \
             WHERE tenant_id = $1 AND kid = $2 AND status <> 'revoked'",
            &[&tenant.as_str(), &kid.as_str(), &now],
        )
        .await?)
}

async fn promote_next(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    now: SystemTime,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            "UPDATE signing_keys SET status = 'active', activated_at = $2 \
             WHERE tenant_id = $1 AND status = 'next'",
            &[&tenant.as_str(), &now],
        )
        .await?)
}

impl Store {
    /// Creates a tenant with its first active key, in one transaction.
    /// [`StoreError::Conflict`] when the id exists (even disabled).
    pub async fn create_tenant(
        &self,
        tenant: &TenantRecord,
        first_key: &NewKey,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO tenants (id, display_name, token_ttl_seconds, created_at, \
                 auth_token_ttl_seconds, refresh_reuse_grace_seconds) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &tenant.id.as_str(),
                    &tenant.display_name,
                    &tenant.token_ttl_seconds,
                    &tenant.created_at,
                    &tenant.auth_token_ttl_seconds,
                    &tenant.refresh_reuse_grace_seconds,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict);
        }
        insert_key(
            &tx,
            &tenant.id,
            first_key,
            KeyStatus::Active,
            None,
            tenant.created_at,
        )
        .await?;
        insert_audit(&tx, audit, tenant.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant, enabled or not.
    pub async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&id.as_str()]).await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Disables the tenant (idempotent); `None` when it does not exist.
    pub async fn disable_tenant(
        &self,
        id: &TenantId,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<Option<TenantRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE tenants SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL",
                &[&id.as_str(), &now],
            )
            .await?;
        if changed == 1 {
            insert_audit(&tx, audit, now).await?;
        }
        let row = tx
            .query_opt(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"),
                &[&id.as_str()],
            )
            .await?;
        tx.commit().await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Applies `patch` to an enabled tenant and records `audit`, in one
    /// transaction; `None` when there is no such enabled tenant.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        patch: &TenantPatch,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<Option<TenantRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE tenants SET display_name = coalesce($2, display_name), \
                     token_ttl_seconds = coalesce($3, token_ttl_seconds), \
                     auth_token_ttl_seconds = coalesce($4, auth_token_ttl_seconds), \
                     refresh_reuse_grace_seconds = coalesce($5, refresh_reuse_grace_seconds) \
                     WHERE id = $1 AND disabled_at IS NULL RETURNING {TENANT_COLUMNS}"
                ),
                &[
                    &id.as_str(),
                    &patch.display_name,
                    &patch.token_ttl_seconds,
                    &patch.auth_token_ttl_seconds,
                    &patch.refresh_reuse_grace_seconds,
                ],
            )
            .await?;
        if row.is_some() {
            insert_audit(&tx, audit, now).await?;
        }
        tx.commit().await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Every key of the tenant, newest first.
    pub async fn keys(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM signing_keys WHERE tenant_id = $1 \
                 ORDER BY created_at DESC, kid"
            ))
            .await?;
        let rows = client.query(&statement, &[&tenant.as_str()]).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Applies `change` to the tenant's keys and records `audit`, in one
    /// transaction that commits only if `fence` is the newest seen. The
    /// decision is made on rows read inside that transaction, after the
    /// fence check, so it never rests on what a previous holder changed.
    pub async fn apply_key_change(
        &self,
        fence: Fence,
        tenant: &TenantId,
        change: &KeyChange,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<KeyOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock_name = format!("{}:{}", fence.lock(), tenant);
        let fresh = tx
            .execute(
                "INSERT INTO lock_fences (name, fence) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET fence = EXCLUDED.fence \
                 WHERE lock_fences.fence < EXCLUDED.fence",
                &[&lock_name, &fence.value()],
            )
            .await?;
        if fresh == 0 {
            return Err(StoreError::StaleFence);
        }
        let rows = tx
            .query(
                "SELECT kid, status FROM signing_keys WHERE tenant_id = $1 \
                 AND status IN ('next', 'active') FOR UPDATE",
                &[&tenant.as_str()],
            )
            .await?;
        let mut current_next = None;
        let mut current_active = None;
        for row in &rows {
            let kid: String = row.try_get(0)?;
            let kid = Kid::parse(&kid).map_err(|_| corrupt("kid"))?;
            let status: String = row.try_get(1)?;
            if status == KeyStatus::Next.as_str() {
                current_next = Some(kid);
            } else {
                current_active = Some(kid);
            }
        }
        let mut withdrawn_next = None;
        let active = match change {
            KeyChange::ActivateNew { key, publish_until } => {
                if let Some(next) = &current_next {
                    revoke_key(&tx, tenant, next, now).await?;
                    withdrawn_next = Some(next.clone());
                }
                retire_active(&tx, tenant, *publish_until, now).await?;
                insert_key(&tx, tenant, key, KeyStatus::Active, None, now).await?;
                Some(key.kid.clone())
            }
            KeyChange::StageNext {
                key,
                activate_after,
            } => {
                if current_next.is_some() {
                    return Err(StoreError::Precondition("a next key is already staged"));
                }
                insert_key(
                    &tx,
                    tenant,
                    key,
                    KeyStatus::Next,
                    Some(*activate_after),
                    now,
                )
                .await?;
                current_active
            }
            KeyChange::PromoteNext { publish_until } => {
                let next =
                    current_next.ok_or(StoreError::Precondition("no next key to promote"))?;
                retire_active(&tx, tenant, *publish_until, now).await?;
                promote_next(&tx, tenant, now).await?;
                Some(next)
            }
            KeyChange::Revoke { kid, replacement } => {
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM signing_keys WHERE tenant_id = $1 AND kid = $2",
                        &[&tenant.as_str(), &kid.as_str()],
                    )
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound);
                }
                revoke_key(&tx, tenant, kid, now).await?;
                if current_active.as_ref() != Some(kid) {
                    current_active
                } else if let Some(next) = current_next {
                    promote_next(&tx, tenant, now).await?;
                    Some(next)
                } else {
                    let key = replacement
                        .as_ref()
                        .ok_or(StoreError::Precondition("a replacement key is needed"))?;
                    insert_key(&tx, tenant, key, KeyStatus::Active, None, now).await?;
                    Some(key.kid.clone())
                }
            }
        };
        insert_audit(&tx, audit, now).await?;
        tx.commit().await?;
        Ok(KeyOutcome {
            active,
            withdrawn_next,
        })
    }

    /// Tenants with a rotation step due at `now`.
    pub async fn due_rotations(
        &self,
        now: SystemTime,
        stage_before: SystemTime,
    ) -> Result<Vec<(TenantId, DueRotation)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT k.tenant_id, CASE WHEN k.status = 'next' THEN 'promote' ELSE 'stage' END \
                 FROM signing_keys k JOIN tenants t ON t.id = k.tenant_id \
                 WHERE t.disabled_at IS NULL AND ( \
                   (k.status = 'next' AND k.activate_after <= $1) OR \
                   (k.status = 'active' AND k.activated_at <= $2 AND NOT EXISTS ( \
                      SELECT 1 FROM signing_keys n WHERE n.tenant_id = k.tenant_id AND n.status = 'next'))) \
                 ORDER BY 1",
                &[&now, &stage_before],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let tenant: String = row.try_get(0)?;
                let step: String = row.try_get(1)?;
                let tenant = TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?;
                let due = if step == "promote" {
                    DueRotation::PromoteNext
                } else {
                    DueRotation::StageNext
                };
                Ok((tenant, due))
            })
            .collect()
    }

    /// Up to `limit` keys wrapped under a version older than
    /// `current_version` (never newer ones: during a rolling configuration
    /// change, replicas still on an older current version leave them be).
    pub async fn keys_to_rewrap(
        &self,
        current_version: u32,
        limit: i64,
    ) -> Result<Vec<StoredKey>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM signing_keys WHERE master_key_version < $1 \
                     ORDER BY tenant_id, kid LIMIT $2"
                ),
                &[&version_param(current_version)?, &limit],
            )
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Replaces wrapped material, each row in its own transaction with its
    /// own `master_key.rewrapped` audit event in the key's tenant, and only
    /// if it is still under the version it was read with. A rewrap thus
    /// never holds several row locks at once (it cannot deadlock with a
    /// rotation), and a crash anywhere leaves every moved key audited.
    /// Returns how many rows changed.
    pub async fn store_rewrapped(
        &self,
        batch: &[(StoredKey, NewKey)],
        actor: &str,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let mut changed = 0;
        for (old, new) in batch {
            let tx = client.transaction().await?;
            let moved = tx
                .execute(
                    "UPDATE signing_keys SET wrapped_private_key = $3, wrap_nonce = $4, \
                     master_key_version = $5 \
                     WHERE tenant_id = $1 AND kid = $2 AND master_key_version = $6",
                    &[
                        &old.tenant_id.as_str(),
                        &old.kid.as_str(),
                        &new.wrapped,
                        &new.nonce.as_slice(),
                        &version_param(new.master_key_version)?,
                        &version_param(old.master_key_version)?,
                    ],
                )
                .await?;
            if moved == 1 {
                let audit = NewAuditEvent {
                    tenant_id: Some(old.tenant_id.clone()),
                    kind: "master_key.rewrapped",
                    actor: actor.to_owned(),
                    details: serde_json::json!({
                        "kid": old.kid,
                        "from_version": old.master_key_version,
                        "to_version": new.master_key_version,
                    }),
                };
                insert_audit(&tx, &audit, now).await?;
            }
            tx.commit().await?;
            changed += moved;
        }
        Ok(changed)
    }

    /// How many keys each master key version wraps.
    pub async fn keys_per_master_version(&self) -> Result<Vec<(u32, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT master_key_version, count(*) FROM signing_keys GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get(0)?;
                let count: i64 = row.try_get(1)?;
                Ok((
                    u32::try_from(version).map_err(|_| corrupt("master key version"))?,
                    count,
                ))
            })
            .collect()
    }

    /// Records an audit event on its own.
    pub async fn record_audit(
        &self,
        event: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_audit(&tx, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's audit events, newest first.
    pub async fn audit_events(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, type, at, actor, details FROM audit_events \
                 WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                &[&tenant.as_str(), &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get(0)?,
                    kind: row.try_get(1)?,
                    at: row.try_get(2)?,
                    actor: row.try_get(3)?,
                    details: row.try_get(4)?,
                })
            })
            .collect()
    }
}

/// Whether a query failed on a unique index (e.g. a second active key).
pub fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::UNIQUE_VIOLATION)
}
