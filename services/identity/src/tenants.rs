//! Tenants: creation with their first signing key, disabling, reading.
//! [`TenantService`] invalidates this replica's caches and announces each
//! change itself, so no caller has to remember to.

use std::sync::Arc;

use keysilo_coord::Event;
use keysilo_store::{NewAuditEvent, Store, StoreError, TenantRecord};
use keysilo_types::{IdError, TenantId};

use crate::clock;
use crate::events::Events;
use crate::keys::{KeyCache, KeyError, KeyService};
use crate::oauth::clients::ClientCache;

/// Why a tenant operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The request is malformed; the message is safe to show the caller.
    #[error("{0}")]
    Invalid(String),
    /// No such tenant.
    #[error("no such tenant")]
    NotFound,
    /// The tenant id is taken (ids are never reused).
    #[error("a tenant with this id exists or existed; ids are never reused")]
    Exists,
    /// Making the first key failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// PostgreSQL failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shortest and longest access-token lifetime a tenant may choose.
pub const TOKEN_TTL_RANGE: std::ops::RangeInclusive<i32> = 5..=86_400;

/// A validated tenant.
#[derive(Debug)]
pub struct NewTenant {
    id: TenantId,
    display_name: String,
    token_ttl_seconds: i32,
}

impl NewTenant {
    /// Validates a tenant: its id, a printable display name, and a token
    /// lifetime within [`TOKEN_TTL_RANGE`] (900 s when not given).
    pub fn parse(
        id: &str,
        display_name: &str,
        token_ttl_seconds: Option<i64>,
    ) -> Result<Self, TenantError> {
        let id = TenantId::parse(id).map_err(|err| match err {
            IdError::Reserved(_) => TenantError::Invalid(format!("tenant id: {err}")),
            _ => TenantError::Invalid(format!("{err}")),
        })?;
        let display_name = crate::oauth::registry::display_text(display_name, "display_name")
            .map_err(TenantError::Invalid)?;
        let ttl = token_ttl_seconds.unwrap_or(900);
        let token_ttl_seconds = i32::try_from(ttl)
            .ok()
            .filter(|t| TOKEN_TTL_RANGE.contains(t))
            .ok_or_else(|| {
                TenantError::Invalid(format!(
                    "token_ttl_seconds must be between {} and {}",
                    TOKEN_TTL_RANGE.start(),
                    TOKEN_TTL_RANGE.end()
                ))
            })?;
        Ok(Self {
            id,
            display_name,
            token_ttl_seconds,
        })
    }
}

/// Creates, disables and reads tenants. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantService {
    store: Store,
    keys: KeyService,
    cache: Arc<KeyCache>,
    clients: Arc<ClientCache>,
    events: Events,
}

impl TenantService {
    /// Puts the pieces together.
    pub fn new(
        store: Store,
        keys: KeyService,
        cache: Arc<KeyCache>,
        clients: Arc<ClientCache>,
        events: Events,
    ) -> Self {
        Self {
            store,
            keys,
            cache,
            clients,
            events,
        }
    }

    /// The issuer of tenant `id`.
    pub fn issuer(&self, id: &TenantId) -> String {
        self.cache.issuer(id)
    }

    /// Creates a tenant and its first active key.
    pub async fn create(&self, new: NewTenant, actor: &str) -> Result<TenantRecord, TenantError> {
        let NewTenant {
            id,
            display_name,
            token_ttl_seconds,
        } = new;
        let (key, row) = self.keys.generate(&id).await?;
        let tenant = TenantRecord {
            id: id.clone(),
            display_name,
            token_ttl_seconds,
            created_at: clock::now(),
            disabled_at: None,
        };
        let event = Event::TenantCreated {
            tenant: id.clone(),
            kid: key.kid.clone(),
        };
        let audit = NewAuditEvent {
            tenant_id: Some(id.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({ "kid": key.kid, "token_ttl_seconds": token_ttl_seconds }),
        };
        match self.store.create_tenant(&tenant, &row, &audit).await {
            Err(StoreError::Conflict) => return Err(TenantError::Exists),
            other => other?,
        }
        // A replica may remember that the id did not exist.
        self.cache.invalidate(&id);
        self.events.publish(event).await;
        Ok(tenant)
    }

    /// Disables a tenant (idempotent); `NotFound` when it never existed.
    pub async fn disable(&self, id: &TenantId, actor: &str) -> Result<(), TenantError> {
        let event = Event::TenantDisabled { tenant: id.clone() };
        let audit = NewAuditEvent {
            tenant_id: Some(id.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({}),
        };
        self.store
            .disable_tenant(id, &audit, clock::now())
            .await?
            .ok_or(TenantError::NotFound)?;
        self.cache.invalidate(id);
        self.clients.invalidate_tenant(id);
        self.events.publish(event).await;
        Ok(())
    }

    /// A tenant, disabled ones included.
    pub async fn get(&self, id: &TenantId) -> Result<TenantRecord, TenantError> {
        self.store.tenant(id).await?.ok_or(TenantError::NotFound)
    }
}
