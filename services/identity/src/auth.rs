//! Who is calling the admin API.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::error::ApiError;
use crate::state::AppState;

/// Proof that the caller presented the platform admin API key. Handlers
/// that take this argument are platform-only.
#[derive(Debug, Clone, Copy)]
pub struct PlatformAdmin(());

impl PlatformAdmin {
    /// The audit actor name.
    pub const ACTOR: &'static str = "platform-admin";
}

/// The bearer token of the request, if it has one.
fn bearer(req: &HttpRequest) -> Option<&str> {
    keysilo_tokens::bearer_token(req.headers().get("authorization")?.to_str().ok()?)
}

/// Compares digests, so the comparison takes the same time whatever the
/// lengths and contents.
fn same_secret(presented: &str, expected: &str) -> bool {
    let a = openssl::sha::sha256(presented.as_bytes());
    let b = openssl::sha::sha256(expected.as_bytes());
    openssl::memcmp::eq(&a, &b)
}

/// Accepts the request if its bearer token equals one of `keys` (compared
/// as digests, in constant time); 401 otherwise.
pub fn same_secret_as_any(req: &HttpRequest, keys: &[&str]) -> Result<(), ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthorized)?;
    // Every key is compared, so the time taken says nothing about which.
    let matched = keys
        .iter()
        .fold(false, |found, key| same_secret(token, key) | found);
    if matched {
        Ok(())
    } else {
        Err(ApiError::InvalidToken)
    }
}

impl FromRequest for PlatformAdmin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unexpected(anyhow::anyhow!("state missing"))));
        };
        let outcome = match bearer(req) {
            None => Err(ApiError::Unauthorized),
            Some(token) if same_secret(token, state.settings.admin.api_key.expose()) => {
                Ok(PlatformAdmin(()))
            }
            Some(_) => Err(ApiError::InvalidToken),
        };
        ready(outcome)
    }
}

/// The bearer token of an admin API call, not yet checked: tenant-scoped
/// routes accept the platform key or a tenant admin's access token, which
/// can only be checked once the tenant is known (see [`authorize_tenant`]).
/// With it, the thumbprint of the connection's client certificate, which a
/// certificate-bound token requires (RFC 8705 §3).
#[derive(Clone)]
pub struct AdminCaller {
    token: Option<String>,
    certificate: Option<String>,
}

impl std::fmt::Debug for AdminCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCaller([REDACTED])")
    }
}

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self {
            token: bearer(req).map(str::to_owned),
            certificate: req
                .conn_data::<keysilo_tls::PeerCertificate>()
                .map(|peer| peer.thumbprint.clone()),
        }))
    }
}

/// Who made an admin call, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The platform admin (API key).
    Platform,
    /// A `tenant-admin` user of the tenant, by user id.
    TenantAdmin(String),
}

impl Actor {
    /// The audit `actor` value.
    pub fn name(&self) -> String {
        match self {
            Self::Platform => PlatformAdmin::ACTOR.to_owned(),
            Self::TenantAdmin(user) => format!("user:{user}"),
        }
    }
}

/// Authorises a call on tenant `tenant`'s admin routes: the platform key,
/// or an unrevoked access token of that very tenant with scope `admin`
/// held by a `tenant-admin` user, presented over a connection with the
/// client certificate it is bound to if it is bound (RFC 8705 §3; 401
/// otherwise, as for any invalid token). A token of another tenant does
/// not verify here (other issuer and keys), so it is refused.
pub async fn authorize_tenant(
    state: &AppState,
    caller: &AdminCaller,
    tenant: &keysilo_types::TenantId,
) -> Result<Actor, ApiError> {
    let Some(token) = &caller.token else {
        return Err(ApiError::Unauthorized);
    };
    if same_secret(token, state.settings.admin.api_key.expose()) {
        return Ok(Actor::Platform);
    }
    let Some(entry) = state.cache.get(tenant).await? else {
        return Err(ApiError::InvalidToken);
    };
    let verified = state
        .oauth
        .live_access_token(&entry, token)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let claims = verified.claims();
    if let Some(bound) = &claims.certificate_thumbprint
        && caller.certificate.as_ref() != Some(bound)
    {
        return Err(ApiError::InvalidToken);
    }
    // Admin-scoped tokens are audienced to the issuer itself; anything else
    // was meant for some other resource server.
    let issuer = state.cache.issuer(tenant);
    if !claims.audience.contains(&issuer) {
        return Err(ApiError::Forbidden);
    }
    let has_scope = claims
        .scope
        .split(' ')
        .any(|s| s == crate::oauth::scope::ADMIN);
    let is_admin = claims
        .roles
        .iter()
        .any(|r| r == crate::oauth::grants::TENANT_ADMIN_ROLE);
    if has_scope && is_admin && claims.subject != claims.client_id {
        Ok(Actor::TenantAdmin(claims.subject.clone()))
    } else {
        Err(ApiError::Forbidden)
    }
}
