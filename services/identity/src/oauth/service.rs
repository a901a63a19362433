//! [`OAuthService`]: the token, introspection and revocation endpoints'
//! work, given domain requests. Each job has its own module: client
//! authentication (`authenticate`), one module per grant (`grants/`),
//! introspection and revocation (`introspection`).

use std::collections::HashMap;
use std::sync::Arc;

use keysilo_config::Settings;
use keysilo_coord::Event;
use keysilo_store::{ClientRecord, RevokedAccessToken, Store};
use keysilo_tls::PeerCertificate;

use super::clients::ClientCache;
use super::credentials::SecretHasher;
use super::grants;
use super::limits::Limits;
use super::passwords::Passwords;
use super::request::{GrantType, OAuthRequest};
use super::token::TokenResponse;
use super::{OAuthError, introspection};
use crate::events::Events;
use crate::keys::{KeyCache, TenantEntry};
use crate::metrics::Metrics;

/// The OAuth2 endpoints' work. Cheap to clone; built once per replica by
/// `crate::state::Services::build`.
#[derive(Debug, Clone)]
pub struct OAuthService {
    /// The process's settings.
    pub(crate) settings: Arc<Settings>,
    /// PostgreSQL.
    pub(crate) store: Store,
    /// Tenants and their keys.
    pub(crate) cache: Arc<KeyCache>,
    /// Clients.
    pub(crate) clients: Arc<ClientCache>,
    /// How client secrets are stored.
    pub(crate) secrets: Arc<SecretHasher>,
    /// argon2id on a bounded pool.
    pub(crate) passwords: Passwords,
    /// Rate limits and password back-off.
    pub(crate) limits: Arc<Limits>,
    /// Metrics (rate-limit refusals).
    pub(crate) metrics: Metrics,
    /// Where revocations are announced.
    pub(crate) events: Events,
}

impl OAuthService {
    /// `POST /{T}/oauth2/token`: authenticates the client, applies its
    /// rate limit and runs the grant it asked for.
    pub async fn token(
        &self,
        tenant: &TenantEntry,
        request: OAuthRequest<'_>,
    ) -> Result<(GrantType, TokenResponse), OAuthError> {
        let (client, mut params, peer) = self.authenticated(tenant, request).await?;
        self.client_rate(tenant, &client.id)?;
        let grant = params
            .remove("grant_type")
            .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?;
        let binding = super::authenticate::certificate_binding(&client, peer)?;
        let grant = GrantType::parse(&grant)
            .filter(|g| g.at_token_endpoint())
            .ok_or(OAuthError::UnsupportedGrantType)?;
        let context = grants::Context {
            service: self,
            tenant,
            client: &client,
            binding: binding.as_deref(),
        };
        let response = match grant {
            GrantType::ClientCredentials => grants::client_credentials::grant(&context, &params)?,
            GrantType::Password => grants::password::grant(&context, &mut params).await?,
            GrantType::RefreshToken => grants::refresh_token::grant(&context, &params).await?,
            GrantType::TokenExchange => grants::token_exchange::grant(&context, &params).await?,
            GrantType::AuthToken => return Err(OAuthError::UnsupportedGrantType),
        };
        Ok((grant, response))
    }

    /// `POST /{T}/oauth2/introspect` (RFC 7662).
    pub async fn introspect(
        &self,
        tenant: &TenantEntry,
        request: OAuthRequest<'_>,
    ) -> Result<serde_json::Value, OAuthError> {
        let (client, token) = self.authenticated_token(tenant, request).await?;
        // Introspection is for resource servers, which keep a credential;
        // a browser's public client has none to prove who it is.
        if client.public {
            return Err(OAuthError::UnauthorizedClient);
        }
        introspection::introspect(self, tenant, &token).await
    }

    /// `POST /{T}/oauth2/revoke` (RFC 7009).
    pub async fn revoke(
        &self,
        tenant: &TenantEntry,
        request: OAuthRequest<'_>,
    ) -> Result<(), OAuthError> {
        let (client, token) = self.authenticated_token(tenant, request).await?;
        introspection::revoke(self, tenant, &client, &token).await
    }

    /// Whether browsers from `origin` (as sent in `Origin`) may call the
    /// tenant's token and revocation endpoints: a public client of the
    /// tenant registered it. From the client cache, no database read once
    /// warm; an origin that cannot be looked up is refused.
    pub async fn is_cors_origin(&self, tenant: &TenantEntry, origin: &str) -> bool {
        let Some(normalized) = keysilo_tokens::gate::normalize_origin(origin) else {
            return false;
        };
        self.clients
            .is_cors_origin(&tenant.tenant.id, &normalized)
            .await
            .unwrap_or(false)
    }

    /// Tells the edges (and the other replicas) of access tokens revoked
    /// with their refresh-token family: they refuse them and close their
    /// sessions.
    pub(super) async fn announce_revoked(&self, tokens: Vec<RevokedAccessToken>) {
        for token in tokens {
            self.events
                .publish(Event::TokenRevoked {
                    tenant: token.tenant_id,
                    client: token.client_id,
                    jti: (token.jti, crate::clock::unix_of(token.expires_at)),
                })
                .await;
        }
    }

    /// Applies the client's rate limit.
    pub(super) fn client_rate(&self, tenant: &TenantEntry, client: &str) -> Result<(), OAuthError> {
        self.limits
            .client(&format!("{}/{}", tenant.tenant.id, client))
            .map_err(|wait| {
                self.metrics.rate_limited("client");
                OAuthError::RateLimited(wait)
            })
    }

    /// Authenticates the request's client; returns it with the other
    /// parameters and the connection's certificate.
    pub(super) async fn authenticated<'r>(
        &self,
        tenant: &TenantEntry,
        request: OAuthRequest<'r>,
    ) -> Result<
        (
            Arc<ClientRecord>,
            HashMap<String, String>,
            Option<&'r PeerCertificate>,
        ),
        OAuthError,
    > {
        let OAuthRequest {
            credentials,
            peer,
            params,
        } = request;
        let client = self.authenticate(tenant, &credentials?, peer).await?;
        Ok((client, params, peer))
    }

    /// The authenticated client and the `token` parameter.
    async fn authenticated_token(
        &self,
        tenant: &TenantEntry,
        request: OAuthRequest<'_>,
    ) -> Result<(Arc<ClientRecord>, String), OAuthError> {
        let (client, mut params, _) = self.authenticated(tenant, request).await?;
        let token = params
            .remove("token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        Ok((client, token))
    }
}
