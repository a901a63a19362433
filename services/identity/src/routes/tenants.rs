//! `/admin/v1/tenants`: create, read and disable tenants.

use actix_web::{HttpResponse, web};
use keysilo_store::TenantRecord;
use keysilo_types::TenantId;
use serde::{Deserialize, Serialize};

use crate::auth::{AdminCaller, PlatformAdmin, authorize_tenant};
use crate::clock;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tenants::{NewTenant, TenantChange, TenantError, TenantSettings};

/// Body of `POST /admin/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    id: String,
    display_name: String,
    token_ttl_seconds: Option<i64>,
    auth_token_ttl_seconds: Option<i64>,
    refresh_reuse_grace_seconds: Option<i64>,
}

/// Body of `PATCH /admin/v1/tenants/{T}` (a JSON merge patch of the
/// settings; `null` leaves a setting as it is).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    display_name: Option<String>,
    token_ttl_seconds: Option<i64>,
    auth_token_ttl_seconds: Option<i64>,
    refresh_reuse_grace_seconds: Option<i64>,
}

impl PatchTenant {
    /// The change this body describes, validated as the route does.
    pub fn validate(self) -> Result<TenantChange, TenantError> {
        TenantChange::parse(
            self.display_name.as_deref(),
            TenantSettings {
                token_ttl_seconds: self.token_ttl_seconds,
                auth_token_ttl_seconds: self.auth_token_ttl_seconds,
                refresh_reuse_grace_seconds: self.refresh_reuse_grace_seconds,
            },
        )
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct TenantView {
    id: String,
    display_name: String,
    token_ttl_seconds: i32,
    auth_token_ttl_seconds: i32,
    refresh_reuse_grace_seconds: i32,
    issuer: String,
    jwks_uri: String,
    created_at: String,
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<String>,
}

impl TenantView {
    fn new(tenant: &TenantRecord, state: &AppState) -> Self {
        let issuer = state.tenants.issuer(&tenant.id);
        Self {
            id: tenant.id.to_string(),
            display_name: tenant.display_name.clone(),
            token_ttl_seconds: tenant.token_ttl_seconds,
            auth_token_ttl_seconds: tenant.auth_token_ttl_seconds,
            refresh_reuse_grace_seconds: tenant.refresh_reuse_grace_seconds,
            jwks_uri: format!("{issuer}/.well-known/jwks"),
            issuer,
            created_at: clock::rfc3339(tenant.created_at),
            disabled: tenant.disabled_at.is_some(),
            disabled_at: tenant.disabled_at.map(clock::rfc3339),
        }
    }
}

/// A tenant id from a path: anything malformed is simply not found.
pub fn tenant_in_path(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::NotFound)
}

impl CreateTenant {
    /// The tenant this body describes, validated as the route does.
    pub fn validate(self) -> Result<NewTenant, TenantError> {
        NewTenant::parse(
            &self.id,
            &self.display_name,
            TenantSettings {
                token_ttl_seconds: self.token_ttl_seconds,
                auth_token_ttl_seconds: self.auth_token_ttl_seconds,
                refresh_reuse_grace_seconds: self.refresh_reuse_grace_seconds,
            },
        )
    }
}

/// `POST /admin/v1/tenants`: creates a tenant and its first signing key.
/// **Permissions:** platform admin.
pub async fn post_tenant(
    _admin: PlatformAdmin,
    state: web::Data<AppState>,
    body: web::Json<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner().validate()?;
    let tenant = state.tenants.create(new, PlatformAdmin::ACTOR).await?;
    Ok(HttpResponse::Created().json(TenantView::new(&tenant, &state)))
}

/// `GET /admin/v1/tenants/{T}`, disabled tenants included.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn get_tenant(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    authorize_tenant(&state, &caller, &id).await?;
    let tenant = state.tenants.get(&id).await?;
    Ok(HttpResponse::Ok().json(TenantView::new(&tenant, &state)))
}

/// `PATCH /admin/v1/tenants/{T}`: changes the display name and settings
/// of an enabled tenant; answers the tenant document. **Permissions:**
/// platform admin, or a tenant admin of `T`.
pub async fn patch_tenant(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<PatchTenant>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let actor = authorize_tenant(&state, &caller, &id).await?;
    let change = body.into_inner().validate()?;
    let tenant = state.tenants.update(&id, change, &actor.name()).await?;
    Ok(HttpResponse::Ok().json(TenantView::new(&tenant, &state)))
}

/// `DELETE /admin/v1/tenants/{T}`: disables the tenant (idempotent); its id
/// is never reused. **Permissions:** platform admin.
pub async fn delete_tenant(
    _admin: PlatformAdmin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    state.tenants.disable(&id, PlatformAdmin::ACTOR).await?;
    Ok(HttpResponse::NoContent().finish())
}
