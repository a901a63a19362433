//! Tenants: creation with their first signing key, settings, disabling,
//! reading.
//! [`TenantService`] invalidates this replica's caches and announces each
//! change itself, so no caller has to remember to.

use std::sync::Arc;

use keysilo_coord::Event;
use keysilo_store::{NewAuditEvent, Store, StoreError, TenantPatch, TenantRecord};
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

/// Shortest and longest auth-token lifetime (secure mode).
pub const AUTH_TOKEN_TTL_RANGE: std::ops::RangeInclusive<i32> = 10..=600;

/// Shortest and longest lost-refresh grace.
pub const REFRESH_GRACE_RANGE: std::ops::RangeInclusive<i32> = 0..=60;

/// `value` if it lies in `range`, else the message naming `name`.
fn setting(
    name: &str,
    value: i64,
    range: &std::ops::RangeInclusive<i32>,
) -> Result<i32, TenantError> {
    i32::try_from(value)
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            TenantError::Invalid(format!(
                "{name} must be between {} and {}",
                range.start(),
                range.end()
            ))
        })
}

/// The settings a tenant is created with or patched to, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct TenantSettings {
    /// `token_ttl_seconds`.
    pub token_ttl_seconds: Option<i64>,
    /// `auth_token_ttl_seconds`.
    pub auth_token_ttl_seconds: Option<i64>,
    /// `refresh_reuse_grace_seconds`.
    pub refresh_reuse_grace_seconds: Option<i64>,
}

impl TenantSettings {
    /// Each given setting checked against its range.
    fn checked(self) -> Result<[Option<i32>; 3], TenantError> {
        let check =
            |name, value: Option<i64>, range| value.map(|v| setting(name, v, range)).transpose();
        Ok([
            check(
                "token_ttl_seconds",
                self.token_ttl_seconds,
                &TOKEN_TTL_RANGE,
            )?,
            check(
                "auth_token_ttl_seconds",
                self.auth_token_ttl_seconds,
                &AUTH_TOKEN_TTL_RANGE,
            )?,
            check(
                "refresh_reuse_grace_seconds",
                self.refresh_reuse_grace_seconds,
                &REFRESH_GRACE_RANGE,
            )?,
        ])
    }
}

fn display_name(raw: &str) -> Result<String, TenantError> {
    crate::oauth::registry::display_text(raw, "display_name").map_err(TenantError::Invalid)
}

/// A validated tenant.
#[derive(Debug)]
pub struct NewTenant {
    id: TenantId,
    display_name: String,
    token_ttl_seconds: i32,
    auth_token_ttl_seconds: i32,
    refresh_reuse_grace_seconds: i32,
}

impl NewTenant {
    /// Validates a tenant: its id, a printable display name, and its
    /// settings within their ranges ([`TOKEN_TTL_RANGE`], 900 s when not
    /// given; [`AUTH_TOKEN_TTL_RANGE`], 60 s; [`REFRESH_GRACE_RANGE`], 0).
    pub fn parse(
        id: &str,
        display_name_raw: &str,
        settings: TenantSettings,
    ) -> Result<Self, TenantError> {
        let id = TenantId::parse(id).map_err(|err| match err {
            IdError::Reserved(_) => TenantError::Invalid(format!("tenant id: {err}")),
            _ => TenantError::Invalid(format!("{err}")),
        })?;
        let display_name = display_name(display_name_raw)?;
        let [ttl, auth_ttl, grace] = settings.checked()?;
        Ok(Self {
            id,
            display_name,
            token_ttl_seconds: ttl.unwrap_or(900),
            auth_token_ttl_seconds: auth_ttl.unwrap_or(60),
            refresh_reuse_grace_seconds: grace.unwrap_or(0),
        })
    }
}

/// A validated change of a tenant's settings.
#[derive(Debug)]
pub struct TenantChange(TenantPatch);

impl TenantChange {
    /// Validates a change: each given setting as at creation; an empty
    /// change is refused.
    pub fn parse(
        display_name_raw: Option<&str>,
        settings: TenantSettings,
    ) -> Result<Self, TenantError> {
        let display_name = display_name_raw.map(display_name).transpose()?;
        let [ttl, auth_ttl, grace] = settings.checked()?;
        let patch = TenantPatch {
            display_name,
            token_ttl_seconds: ttl,
            auth_token_ttl_seconds: auth_ttl,
            refresh_reuse_grace_seconds: grace,
        };
        if patch == TenantPatch::default() {
            return Err(TenantError::Invalid(
                "nothing to change: give display_name, token_ttl_seconds, \
                 auth_token_ttl_seconds or refresh_reuse_grace_seconds"
                    .into(),
            ));
        }
        Ok(Self(patch))
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
            auth_token_ttl_seconds,
            refresh_reuse_grace_seconds,
        } = new;
        let (key, row) = self.keys.generate(&id).await?;
        let tenant = TenantRecord {
            id: id.clone(),
            display_name,
            token_ttl_seconds,
            auth_token_ttl_seconds,
            refresh_reuse_grace_seconds,
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

    /// Changes an enabled tenant's settings; every replica reloads it.
    pub async fn update(
        &self,
        id: &TenantId,
        change: TenantChange,
        actor: &str,
    ) -> Result<TenantRecord, TenantError> {
        let TenantChange(patch) = change;
        let event = Event::TenantUpdated { tenant: id.clone() };
        let audit = NewAuditEvent {
            tenant_id: Some(id.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({
                "display_name": patch.display_name,
                "token_ttl_seconds": patch.token_ttl_seconds,
                "auth_token_ttl_seconds": patch.auth_token_ttl_seconds,
                "refresh_reuse_grace_seconds": patch.refresh_reuse_grace_seconds,
            }),
        };
        let tenant = self
            .store
            .update_tenant(id, &patch, &audit, clock::now())
            .await?
            .ok_or(TenantError::NotFound)?;
        self.cache.invalidate(id);
        self.events.publish(event).await;
        Ok(tenant)
    }

    /// A tenant, disabled ones included.
    pub async fn get(&self, id: &TenantId) -> Result<TenantRecord, TenantError> {
        self.store.tenant(id).await?.ok_or(TenantError::NotFound)
    }
}
