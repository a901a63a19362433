//! `/{T}/oauth2/token`, `/auth-token`, `/introspect` and `/revoke`, and
//! the CORS answers of the two a browser calls.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use super::form::oauth_request;
use super::tenants::tenant_in_path;
use crate::error::ApiError;
use crate::keys::TenantEntry;
use crate::oauth::OAuthError;
use crate::state::AppState;

/// The tenant of the path (404 if unknown or disabled). The per-address
/// limit comes first, so that requests naming invented tenants cost a
/// database lookup each only within it.
async fn tenant_of(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<Arc<TenantEntry>, ApiError> {
    if let Some(address) = client_address(req, &state.settings.limits.trusted_proxies) {
        state.limits.address(address).map_err(|wait| {
            state.metrics.rate_limited("address");
            OAuthError::RateLimited(wait)
        })?;
    }
    let id = tenant_in_path(tenant)?;
    state.cache.get(&id).await?.ok_or(ApiError::NotFound)
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
/// a trusted proxy (entries further left are the client's own claims). An
/// entry that does not parse ends the walk at the last trusted hop: what
/// lies left of it was never vouched for.
fn client_address(req: &HttpRequest, trusted: &[std::net::IpAddr]) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut last_trusted = peer;
    for hop in forwarded.iter().rev() {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else {
            return Some(last_trusted);
        };
        if !trusted.contains(&ip) {
            return Some(ip);
        }
        last_trusted = ip;
    }
    Some(last_trusted)
}

fn no_store(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Pragma", "no-cache"));
    response
}

/// `POST /{T}/oauth2/token` (RFC 6749): `client_credentials`, `password`,
/// `refresh_token` and token exchange (RFC 8693, secure mode).
/// **Permissions:** a client of `T` (a public client by its `client_id`).
/// Answers CORS for the origins of `T`'s public clients.
pub async fn post_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    let outcome = async {
        let request = oauth_request(&req, payload).await?;
        let outcome = state.oauth.token(&tenant, request).await;
        let (grant, response) = refusal(&req, &state, &tenant, outcome)?;
        state
            .metrics
            .token_issued(tenant.tenant.id.as_str(), grant.as_str());
        Ok::<_, ApiError>(no_store(HttpResponse::Ok()).json(response))
    }
    .await;
    Ok(cors(&req, &state, &tenant, outcome, false).await)
}

/// `POST /{T}/oauth2/auth-token` (secure mode): a confidential client
/// registered for `auth_token` mints a single-use auth token for one
/// subject and one public client. **Permissions:** a confidential client
/// of `T`. Never answers CORS: browsers must not call it.
pub async fn post_auth_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    let id = tenant.tenant.id.as_str();
    let outcome = async {
        let request = oauth_request(&req, payload).await?;
        Ok::<_, ApiError>(state.oauth.mint_auth_token(&tenant, request).await)
    }
    .await?;
    let minted = refusal(&req, &state, &tenant, outcome).inspect_err(|err| {
        state.metrics.auth_token(id, &err.to_string());
    })?;
    state.metrics.auth_token(id, "minted");
    Ok(no_store(HttpResponse::Ok()).json(minted))
}

/// `OPTIONS /{T}/oauth2/token` and `/revoke`: the CORS preflight. From a
/// registered origin of one of `T`'s public clients it allows `POST` with
/// `Content-Type` (and `Authorization`); from any other, it allows
/// nothing. **Permissions:** none.
pub async fn options_cors(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    Ok(cors(
        &req,
        &state,
        &tenant,
        Ok(HttpResponse::NoContent().finish()),
        true,
    )
    .await)
}

/// Adds the CORS headers to `outcome` (an error becomes its response
/// first, so browsers can read errors too) when the request's `Origin` is
/// one of the tenant's public clients'. `Vary: Origin` always.
async fn cors(
    req: &HttpRequest,
    state: &AppState,
    tenant: &TenantEntry,
    outcome: Result<HttpResponse, ApiError>,
    preflight: bool,
) -> HttpResponse {
    use actix_web::ResponseError as _;
    use actix_web::http::header::{self, HeaderValue};
    let mut response = outcome.unwrap_or_else(|err| err.error_response());
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return response;
    };
    let allowed = match origin.to_str() {
        Ok(text) => state.oauth.is_cors_origin(tenant, text).await,
        Err(_) => false,
    };
    if !allowed {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
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
/// **Permissions:** a client of `T` (a public client by its `client_id`);
/// it can revoke only its own tokens. Answers CORS like the token endpoint.
pub async fn post_revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&req, &state, &path).await?;
    let outcome = async {
        let request = oauth_request(&req, payload).await?;
        let outcome = state.oauth.revoke(&tenant, request).await;
        refusal(&req, &state, &tenant, outcome)?;
        Ok::<_, ApiError>(no_store(HttpResponse::Ok()).finish())
    }
    .await;
    Ok(cors(&req, &state, &tenant, outcome, false).await)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use actix_web::test::TestRequest;

    use super::client_address;

    fn from_proxy(forwarded: &str) -> Option<IpAddr> {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let req = TestRequest::default()
            .peer_addr(SocketAddr::new(proxy, 4000))
            .insert_header(("x-forwarded-for", forwarded))
            .to_http_request();
        client_address(&req, &[proxy, "10.0.0.2".parse().unwrap()])
    }

    #[test]
    fn the_address_is_the_right_most_untrusted_hop_and_nothing_left_of_garbage() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(from_proxy("198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(
            from_proxy("203.0.113.9, 198.51.100.7, 10.0.0.2"),
            ip("198.51.100.7")
        );
        // The client wrote "unknown, 203.0.113.9" itself: an unparseable
        // hop must not let it choose the address.
        assert_eq!(from_proxy("203.0.113.9, garbage, 10.0.0.2"), ip("10.0.0.2"));
        assert_eq!(from_proxy("203.0.113.9, garbage"), ip("10.0.0.1"));
        assert_eq!(from_proxy(""), ip("10.0.0.1"));
    }
}
