//! `/{T}/oauth2/token`, `/{T}/oauth2/introspect` and `/{T}/oauth2/revoke`.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use super::form::oauth_request;
use super::tenants::tenant_in_path;
use crate::error::ApiError;
use crate::keys::TenantEntry;
use crate::oauth::OAuthError;
use crate::state::AppState;

/// The tenant of the path (404 if unknown or disabled), after the
/// per-address limit.
async fn tenant_of(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<Arc<TenantEntry>, ApiError> {
    let id = tenant_in_path(tenant)?;
    let tenant = state.cache.get(&id).await?.ok_or(ApiError::NotFound)?;
    if let Some(address) = client_address(req, &state.settings.limits.trusted_proxies) {
        state.limits.address(address).map_err(|wait| {
            state.metrics.rate_limited("address");
            OAuthError::RateLimited(wait)
        })?;
    }
    Ok(tenant)
}

/// Counts and logs a refused client authentication or grant, with the
/// caller's address (which a metric label could not carry).
fn refusal<T>(
    req: &HttpRequest,
    state: &AppState,
    tenant: &TenantEntry,
    outcome: Result<T, OAuthError>,
) -> Result<T, OAuthError> {
    let reason = match &outcome {
        Err(OAuthError::InvalidClient { .. }) => "invalid_client",
        Err(OAuthError::InvalidGrant(_)) => "invalid_grant",
        _ => return outcome,
    };
    state
        .metrics
        .auth_failure(tenant.tenant.id.as_str(), reason);
    let address = client_address(req, &state.settings.limits.trusted_proxies);
    tracing::info!(
        tenant = %tenant.tenant.id,
        client_ip = address.map(|a| a.to_string()).unwrap_or_default(),
        reason,
        "token endpoint request refused"
    );
    outcome
}

/// The caller's address: the TCP peer, unless the peer is a trusted proxy,
/// in which case the right-most `X-Forwarded-For` entry that is not itself
/// a trusted proxy (entries further left are the client's own claims).
fn client_address(req: &HttpRequest, trusted: &[std::net::IpAddr]) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .filter_map(|hop| hop.parse::<std::net::IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .or(Some(peer))
}

fn no_store(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Pragma", "no-cache"));
    response
}

/// `POST /{T}/oauth2/token` (RFC 6749): `client_credentials`, `password`
/// and `refresh_token`. **Permissions:** an authenticated client of `T`.
pub async fn post_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    let request = oauth_request(&req, payload).await?;
    let outcome = state.oauth.token(&tenant, request).await;
    let (grant, response) = refusal(&req, &state, &tenant, outcome)?;
    state
        .metrics
        .token_issued(tenant.tenant.id.as_str(), grant.as_str());
    Ok(no_store(HttpResponse::Ok()).json(response))
}

/// `POST /{T}/oauth2/introspect` (RFC 7662): `{"active":false}` for
/// anything expired, revoked, foreign or malformed. **Permissions:** an
/// authenticated client of `T`.
pub async fn post_introspect(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    let request = oauth_request(&req, payload).await?;
    let outcome = state.oauth.introspect(&tenant, request).await;
    let answer = refusal(&req, &state, &tenant, outcome)?;
    Ok(no_store(HttpResponse::Ok()).json(answer))
}

/// `POST /{T}/oauth2/revoke` (RFC 7009): `200` whatever the token was.
/// **Permissions:** an authenticated client of `T`; it can revoke only its
/// own tokens.
pub async fn post_revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    let request = oauth_request(&req, payload).await?;
    let outcome = state.oauth.revoke(&tenant, request).await;
    refusal(&req, &state, &tenant, outcome)?;
    Ok(no_store(HttpResponse::Ok()).finish())
}
