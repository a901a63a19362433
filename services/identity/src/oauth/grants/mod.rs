//! The grants of the token endpoint, one module each.

pub mod client_credentials;
pub mod password;
pub mod refresh_token;
pub mod token_exchange;

use std::collections::BTreeSet;
use std::time::Duration;

use keysilo_store::{ClientRecord, FamilyOwner};

use super::credentials::random_token;
use super::request::GrantType;
use super::token::{Minted, new_refresh_token};
use super::{OAuthError, OAuthService};
use crate::clock;
use crate::keys::TenantEntry;

/// The role that may obtain the `admin` scope.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// What every grant works with: the service, the tenant, the
/// authenticated client and the certificate its tokens are bound to.
pub struct Context<'a> {
    /// The service (settings, store, caches).
    pub service: &'a OAuthService,
    /// The tenant of the endpoint.
    pub tenant: &'a TenantEntry,
    /// The authenticated client.
    pub client: &'a ClientRecord,
    /// The thumbprint tokens are bound to (RFC 8705), if any.
    pub binding: Option<&'a str>,
}

/// A refresh token starting a new family for `owner` with the access
/// token `issued`, when the client is registered for refresh tokens.
pub(super) async fn start_family(
    context: &Context<'_>,
    owner: FamilyOwner,
    scope: &BTreeSet<String>,
    issued: &Minted,
) -> Result<Option<String>, OAuthError> {
    let Context {
        service,
        tenant,
        client,
        ..
    } = context;
    if !client
        .grant_types
        .iter()
        .any(|g| g == GrantType::RefreshToken.as_str())
    {
        return Ok(None);
    }
    let tokens = &service.settings.tokens;
    let now = clock::now();
    let family_expires = now
        .checked_add(Duration::from_secs(tokens.refresh_token_lifetime_seconds))
        .unwrap_or(now);
    let (token, row) = new_refresh_token(
        Duration::from_secs(tokens.refresh_token_idle_seconds),
        scope,
        family_expires,
        issued,
    )?;
    let family = random_token(16).map_err(OAuthError::internal)?;
    service
        .store
        .start_refresh_family(
            &family,
            &tenant.tenant.id,
            &client.id,
            &owner,
            family_expires,
            &row,
            now,
        )
        .await?;
    Ok(Some(token))
}
