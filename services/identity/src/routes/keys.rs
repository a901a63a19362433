//! `/admin/v1/tenants/{T}/keys`: list, rotate and revoke signing keys.

use actix_web::{HttpResponse, web};
use keysilo_types::Kid;
use serde::Serialize;

use super::tenants::tenant_in_path;
use crate::auth::{AdminCaller, PlatformAdmin, authorize_tenant};
use crate::clock;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Serialize)]
struct KeyView {
    kid: String,
    status: &'static str,
    created_at: String,
    master_key_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    activated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activate_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_until: Option<String>,
}

/// `GET /admin/v1/tenants/{T}/keys`: every key, newest first.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn get_keys(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    authorize_tenant(&state, &caller, &id).await?;
    state.store.tenant(&id).await?.ok_or(ApiError::NotFound)?;
    let keys: Vec<KeyView> = state
        .store
        .keys(&id)
        .await?
        .into_iter()
        .map(|k| KeyView {
            kid: k.kid.to_string(),
            status: k.status.as_str(),
            created_at: clock::rfc3339(k.created_at),
            master_key_version: k.master_key_version,
            activated_at: k.activated_at.map(clock::rfc3339),
            activate_after: k.activate_after.map(clock::rfc3339),
            publish_until: k.publish_until.map(clock::rfc3339),
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys })))
}

/// `POST /admin/v1/tenants/{T}/keys/rotate`: emergency rotation; the new
/// key signs at once. **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn post_rotate(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    let actor = authorize_tenant(&state, &caller, &id).await?;
    let rotation = state.keys.rotate_now(&id, &actor.name()).await;
    let result = if rotation.is_ok() { "ok" } else { "failed" };
    state.metrics.rotations("manual", result, 1);
    let rotation = rotation?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "kid": rotation.active,
        "status": "active",
        "retired_kid": rotation.retired,
    })))
}

/// `POST /admin/v1/tenants/{T}/keys/{kid}/revoke`: withdraws the key from
/// the JWKS at once; if it was active, another key signs when this returns.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn post_revoke(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, kid) = path.into_inner();
    let id = tenant_in_path(&tenant)?;
    let actor = authorize_tenant(&state, &caller, &id).await?;
    let kid = Kid::parse(&kid).map_err(|_| ApiError::NotFound)?;
    let active = state.keys.revoke(&id, &kid, &actor.name()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "kid": kid,
        "status": "revoked",
        "active_kid": active,
    })))
}

/// `GET /admin/v1/tenants/{T}/audit?limit=N`: audit events, newest first
/// (default 100, at most 1000). **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn get_audit(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_in_path(&path)?;
    authorize_tenant(&state, &caller, &id).await?;
    state.store.tenant(&id).await?.ok_or(ApiError::NotFound)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let events: Vec<serde_json::Value> = state
        .store
        .audit_events(&id, limit)
        .await?
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id.to_string(),
                "type": e.kind,
                "at": clock::rfc3339(e.at),
                "actor": e.actor,
                "details": e.details,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}

/// Query of the audit route.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<i64>,
}

/// `POST /admin/v1/master-key/rewrap`: re-wraps every tenant key wrapped
/// under a version below the current one under the
/// current master key version (versions must increase). **Permissions:**
/// platform admin only.
pub async fn post_rewrap(
    _admin: PlatformAdmin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let report = state.keys.rewrap_all(PlatformAdmin::ACTOR).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "version": report.version,
        "rewrapped": report.rewrapped,
    })))
}

/// `GET /admin/v1/master-key`: the current version and how many keys each
/// version still wraps. **Permissions:** platform admin only.
pub async fn get_master_key(
    _admin: PlatformAdmin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let counts = state.store.keys_per_master_version().await?;
    Ok(HttpResponse::Ok().json(master_key_status(state.keys.ring(), &counts)))
}

/// The status document shared by the API and the CLI.
pub fn master_key_status(
    ring: &keysilo_custody::MasterKeyRing,
    counts: &[(u32, i64)],
) -> serde_json::Value {
    let per_version: Vec<serde_json::Value> = counts
        .iter()
        .map(|(version, keys)| serde_json::json!({ "version": version, "keys": keys }))
        .collect();
    serde_json::json!({
        "current_version": ring.current_version(),
        "configured_versions": ring.versions(),
        "keys_per_version": per_version,
    })
}
