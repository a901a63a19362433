//! What every grant shares: the registered-grant check, the scope rule,
//! minting an access token and the token endpoint's answer.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use keysilo_store::{ClientRecord, NewRefreshToken};
use keysilo_tokens::AccessTokenClaims;
use serde::Serialize;

use super::OAuthError;
use super::credentials::{new_secret, random_token, refresh_token_hash};
use super::grants::Context;
use super::request::GrantType;
use super::scope::{self, ADMIN};
use crate::clock;
use crate::keys::TenantEntry;

/// What the token endpoint answers on success; its `Debug` shows no token.
#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    /// RFC 8693 §2.2.1, for a token exchange only.
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    token_type: &'static str,
    expires_in: i32,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("scope", &self.scope)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `unauthorized_client` unless `client` is registered for `grant`.
pub(super) fn registered(client: &ClientRecord, grant: GrantType) -> Result<(), OAuthError> {
    if client.grant_types.iter().any(|g| g == grant.as_str()) {
        Ok(())
    } else {
        Err(OAuthError::UnauthorizedClient)
    }
}

/// The scope granted: the requested one if it is within `allowed`,
/// otherwise `invalid_scope`; `default` when none was requested.
pub(super) fn grant_scope(
    requested: Option<&String>,
    allowed: &BTreeSet<String>,
    default: BTreeSet<String>,
) -> Result<BTreeSet<String>, OAuthError> {
    let Some(raw) = requested else {
        return Ok(default);
    };
    let requested = scope::parse(raw).ok_or(OAuthError::InvalidScope)?;
    if requested.is_empty() {
        return Ok(default);
    }
    if requested.is_subset(allowed) {
        Ok(requested)
    } else {
        Err(OAuthError::InvalidScope)
    }
}

/// Whom an access token is for: its `sub`, the user's roles, and the
/// client that vouched for the subject (`act`, secure mode).
pub(super) struct Holder<'a> {
    /// `sub`.
    pub subject: &'a str,
    /// `roles`.
    pub roles: &'a [String],
    /// `act.sub`.
    pub actor: Option<&'a str>,
}

impl<'a> Holder<'a> {
    /// A token for a client or a user with these roles.
    pub fn of(subject: &'a str, roles: &'a [String]) -> Self {
        Self {
            subject,
            roles,
            actor: None,
        }
    }
}

/// A signed access token, with what revoking it takes.
pub(super) struct Minted {
    /// The JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Signs an access token for `holder` with the tenant's active key.
pub(super) fn mint(
    context: &Context<'_>,
    holder: &Holder<'_>,
    scope: &BTreeSet<String>,
) -> Result<Minted, OAuthError> {
    let Context {
        service,
        tenant,
        client,
        binding,
    } = context;
    let signing = tenant.signing.as_ref().ok_or(OAuthError::NoSigningKey)?;
    let now = clock::unix_seconds();
    let ttl = u64::try_from(tenant.tenant.token_ttl_seconds).unwrap_or(900);
    let issuer = service.cache.issuer(&tenant.tenant.id);
    // A token carrying `admin` is for this issuer's admin API only, so that
    // no resource server that receives it can replay it there.
    let audience = if scope.contains(ADMIN) {
        vec![issuer.clone()]
    } else if client.audience.is_empty() {
        vec![service.settings.tokens.default_audience.clone()]
    } else {
        client.audience.clone()
    };
    let claims = AccessTokenClaims {
        issuer,
        subject: holder.subject.to_owned(),
        audience,
        client_id: client.id.clone(),
        scope: scope::join(scope),
        tenant: tenant.tenant.id.clone(),
        jti: random_token(16).map_err(OAuthError::internal)?,
        issued_at: now,
        expires_at: now + ttl,
        allowed_origins: client.allowed_origins.clone(),
        roles: holder.roles.to_vec(),
        certificate_thumbprint: binding.map(str::to_owned),
        actor: holder.actor.map(str::to_owned),
    };
    let token = keysilo_tokens::mint(&claims, signing).map_err(OAuthError::internal)?;
    Ok(Minted {
        token,
        jti: claims.jti,
        expires_at: claims.expires_at,
    })
}

/// The token endpoint's answer.
pub(super) fn response(
    tenant: &TenantEntry,
    access_token: Minted,
    scope: &BTreeSet<String>,
    refresh_token: Option<String>,
) -> TokenResponse {
    TokenResponse {
        access_token: access_token.token,
        issued_token_type: None,
        token_type: "Bearer",
        expires_in: tenant.tenant.token_ttl_seconds,
        scope: scope::join(scope),
        refresh_token,
    }
}

impl TokenResponse {
    /// The answer to a token exchange (RFC 8693 §2.2.1).
    pub(super) fn exchanged(mut self) -> Self {
        self.issued_token_type = Some(super::request::ACCESS_TOKEN_TYPE);
        self
    }
}

/// A new refresh token and its row, issued with the access token
/// `issued`; it idles out after `idle` within the family's life.
pub(super) fn new_refresh_token(
    idle: Duration,
    scope: &BTreeSet<String>,
    family_expires: SystemTime,
    issued: &Minted,
) -> Result<(String, NewRefreshToken), OAuthError> {
    let token = new_secret().map_err(OAuthError::internal)?;
    let idle = clock::now()
        .checked_add(idle)
        .unwrap_or(family_expires)
        .min(family_expires);
    let row = NewRefreshToken {
        hash: refresh_token_hash(&token),
        scope: scope::join(scope),
        idle_expires_at: idle,
        access_token: (issued.jti.clone(), clock::from_unix(issued.expires_at)),
    };
    Ok((token, row))
}
