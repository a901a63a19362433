//! `/{T}/oauth2/token`, `/{T}/oauth2/introspect` and `/{T}/oauth2/revoke`.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;

use super::tenants::tenant_in_path;
use crate::error::ApiError;
use crate::keys::TenantEntry;
use crate::oauth::OAuthError;
use crate::oauth::grants;
use crate::state::AppState;
use keysilo_tls::PeerCertificate;

/// Largest form body accepted by the OAuth2 endpoints.
const FORM_LIMIT: usize = 16 * 1024;

/// Reads the body, refusing more than [`FORM_LIMIT`] bytes with a 413.
async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest("unreadable body".into()))?;
        if body.len() + chunk.len() > FORM_LIMIT {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Everything the three endpoints do first: the tenant (404 if unknown or
/// disabled), the per-address limit, the form, and client authentication.
async fn prelude(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    payload: web::Payload,
) -> Result<
    (
        Arc<TenantEntry>,
        Arc<keysilo_store::ClientRecord>,
        std::collections::HashMap<String, String>,
    ),
    ApiError,
> {
    let id = tenant_in_path(tenant)?;
    let tenant = state.cache.get(&id).await?.ok_or(ApiError::NotFound)?;
    if let Some(address) = client_address(req, &state.settings.limits.trusted_proxies) {
        state.limits.address(address).map_err(|wait| {
            state.metrics.rate_limited("address");
            OAuthError::RateLimited(wait)
        })?;
    }
    grants::require_form(req)?;
    let body = read_body(payload).await?;
    let mut params = grants::parse_form(&body)?;
    let credentials = grants::client_credentials(req, &mut params);
    let peer = req.conn_data::<PeerCertificate>();
    let client = match credentials {
        Ok(credentials) => grants::authenticate(state, &tenant, &credentials, peer).await,
        Err(err) => Err(err.into()),
    };
    let client = refusal(req, state, &tenant, client)?;
    Ok((tenant, client, params))
}

/// Counts and logs a refused client authentication or grant, with the
/// caller's address (which a metric label could not carry).
fn refusal<T>(
    req: &HttpRequest,
    state: &AppState,
    tenant: &TenantEntry,
    outcome: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let reason = match &outcome {
        Err(ApiError::OAuth(OAuthError::InvalidClient { .. })) => "invalid_client",
        Err(ApiError::OAuth(OAuthError::InvalidGrant(_))) => "invalid_grant",
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
    let (tenant, client, mut params) = prelude(&req, &state, &path, payload).await?;
    state
        .limits
        .client(&format!("{}/{}", tenant.tenant.id, client.id))
        .map_err(|wait| {
            state.metrics.rate_limited("client");
            OAuthError::RateLimited(wait)
        })?;
    let grant = params
        .remove("grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?;
    let binding = grants::certificate_binding(&client, req.conn_data::<PeerCertificate>())?;
    let binding = binding.as_deref();
    let response = match grant.as_str() {
        "client_credentials" => {
            grants::client_credentials_grant(&state, &tenant, &client, binding, &params)
        }
        "password" => grants::password_grant(&state, &tenant, &client, binding, &mut params).await,
        "refresh_token" => {
            grants::refresh_token_grant(&state, &tenant, &client, binding, &params).await
        }
        _ => return Err(OAuthError::UnsupportedGrantType.into()),
    };
    let response = refusal(&req, &state, &tenant, response)?;
    state
        .metrics
        .token_issued(tenant.tenant.id.as_str(), &grant);
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
    let (tenant, _client, params) = prelude(&req, &state, &path, payload).await?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    let answer = grants::introspect(&state, &tenant, token).await?;
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
    let (tenant, client, params) = prelude(&req, &state, &path, payload).await?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    grants::revoke(&state, &tenant, &client, token).await?;
    Ok(no_store(HttpResponse::Ok()).finish())
}
