//! Public per-tenant documents: JWKS and authorization server metadata,
//! served from the replica's cache.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::tenants::tenant_in_path;
use crate::error::ApiError;
use crate::keys::TenantEntry;
use crate::state::AppState;

async fn entry(state: &AppState, raw: &str) -> Result<std::sync::Arc<TenantEntry>, ApiError> {
    let id = tenant_in_path(raw)?;
    state.cache.get(&id).await?.ok_or(ApiError::NotFound)
}

/// `GET /{T}/.well-known/jwks` (and `jwks.json`): next, active and retired
/// keys in grace; never a revoked key. **Permissions:** none.
pub async fn get_jwks(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let entry = entry(&state, &path).await?;
    let cache_control = format!(
        "public, max-age={}",
        state.settings.keys.jwks_max_age_seconds
    );
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
            v.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == entry.etag)
        });
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::ETAG, entry.etag.clone()));
    if unchanged {
        return Ok(response.finish());
    }
    Ok(response
        .content_type("application/json")
        .body(entry.jwks.clone()))
}

/// RFC 8414 metadata at `/.well-known/oauth-authorization-server/{T}` and
/// the suffix forms. **Permissions:** none.
pub async fn get_metadata(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let entry = entry(&state, &path).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(entry.metadata.clone()))
}
