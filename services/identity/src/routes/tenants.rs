//! `/admin/v1/tenants`: create, read and disable tenants.

use actix_web::{HttpResponse, web};
use keysilo_store::TenantRecord;
use keysilo_types::{IdError, TenantId};
use serde::{Deserialize, Serialize};

use crate::auth::{AdminCaller, PlatformAdmin, authorize_tenant};
use crate::clock;
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /admin/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    id: String,
    display_name: String,
    token_ttl_seconds: Option<i64>,
}

/// A tenant as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct TenantView {
    id: String,
    display_name: String,
    token_ttl_seconds: i32,
    issuer: String,
    jwks_uri: String,
    created_at: String,
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<String>,
}

impl TenantView {
    fn new(tenant: &TenantRecord, state: &AppState) -> Self {
        let issuer = state.cache.issuer(&tenant.id);
        Self {
            id: tenant.id.to_string(),
            display_name: tenant.display_name.clone(),
            token_ttl_seconds: tenant.token_ttl_seconds,
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

/// A validated tenant.
#[derive(Debug)]
pub struct NewTenant {
    id: TenantId,
    display_name: String,
    token_ttl_seconds: i32,
}

impl CreateTenant {
    /// The tenant this body describes, validated as the route does.
    pub fn validate(self) -> Result<NewTenant, ApiError> {
        let body = self;
        let id = TenantId::parse(&body.id).map_err(|err| match err {
            IdError::Reserved(_) => ApiError::BadRequest(format!("tenant id: {err}")),
            _ => ApiError::BadRequest(format!("{err}")),
        })?;
        let display_name = body.display_name.trim().to_owned();
        if display_name.is_empty()
            || display_name.chars().count() > 200
            || display_name.chars().any(char::is_control)
        {
            return Err(ApiError::BadRequest(
                "display_name must be 1 to 200 printable characters".into(),
            ));
        }
        let ttl = body.token_ttl_seconds.unwrap_or(900);
        let token_ttl_seconds = i32::try_from(ttl)
            .ok()
            .filter(|t| (5..=86_400).contains(t))
            .ok_or_else(|| {
                ApiError::BadRequest("token_ttl_seconds must be between 5 and 86400".into())
            })?;
        Ok(NewTenant {
            id,
            display_name,
            token_ttl_seconds,
        })
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
    let tenant = state
        .keys
        .create_tenant(
            new.id,
            new.display_name,
            new.token_ttl_seconds,
            PlatformAdmin::ACTOR,
        )
        .await?;
    state.cache.invalidate(&tenant.id);
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
    let tenant = state.store.tenant(&id).await?.ok_or(ApiError::NotFound)?;
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
    state.keys.disable_tenant(&id, PlatformAdmin::ACTOR).await?;
    state.cache.invalidate(&id);
    Ok(HttpResponse::NoContent().finish())
}
