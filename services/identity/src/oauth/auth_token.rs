//! `POST /{T}/oauth2/auth-token` (secure mode): a tenant's backend, as a
//! confidential client registered for `auth_token`, mints a single-use
//! auth token for one of its users and one public client. Only SHA-256 of
//! the token is stored; the browser redeems it with the token-exchange
//! grant (`grants::token_exchange`).

use std::collections::BTreeSet;
use std::time::Duration;

use keysilo_store::{NewAuditEvent, NewAuthToken};
use serde::Serialize;

use super::credentials::{new_secret, refresh_token_hash};
use super::request::{GrantType, OAuthRequest, is_subject, plain};
use super::scope::{self, ADMIN};
use super::token::{grant_scope, registered};
use super::{OAuthError, OAuthService};
use crate::clock;
use crate::keys::TenantEntry;

/// What `/auth-token` answers; its `Debug` shows no token.
#[derive(Serialize)]
pub struct AuthTokenResponse {
    auth_token: String,
    expires_in: i32,
}

impl std::fmt::Debug for AuthTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthTokenResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl OAuthService {
    /// Mints an auth token for the `subject` and `public_client_id` of the
    /// request, with the scope both clients hold (or the narrower one
    /// asked for). Audited as `auth_token.minted`, never with the token.
    pub async fn mint_auth_token(
        &self,
        tenant: &TenantEntry,
        request: OAuthRequest<'_>,
    ) -> Result<AuthTokenResponse, OAuthError> {
        let (client, params, _peer) = self.authenticated(tenant, request).await?;
        self.client_rate(tenant, &client.id)?;
        registered(&client, GrantType::AuthToken)?;
        let subject = params
            .get("subject")
            .ok_or_else(|| OAuthError::InvalidRequest("subject is required".into()))?;
        if !is_subject(subject) {
            return Err(OAuthError::InvalidRequest(
                "subject must be 1 to 255 printable characters".into(),
            ));
        }
        let public_id = params
            .get("public_client_id")
            .ok_or_else(|| OAuthError::InvalidRequest("public_client_id is required".into()))?;
        let not_public = || {
            OAuthError::InvalidRequest(
                "public_client_id is not a public client of this tenant".into(),
            )
        };
        let public = if plain(public_id, 128) {
            self.clients.get(&tenant.tenant.id, public_id).await?
        } else {
            None
        }
        .filter(|c| c.public)
        .ok_or_else(not_public)?;
        let theirs: BTreeSet<&String> = public.scopes.iter().collect();
        let both: BTreeSet<String> = client
            .scopes
            .iter()
            .filter(|s| *s != ADMIN && theirs.contains(s))
            .cloned()
            .collect();
        let scope = grant_scope(params.get("scope"), &both, both.clone())?;

        let token = new_secret().map_err(OAuthError::internal)?;
        let now = clock::now();
        let ttl = tenant.tenant.auth_token_ttl_seconds;
        let expires_at = now
            .checked_add(Duration::from_secs(u64::try_from(ttl).unwrap_or(60)))
            .unwrap_or(now);
        let row = NewAuthToken {
            hash: refresh_token_hash(&token),
            tenant_id: tenant.tenant.id.clone(),
            client_id: client.id.clone(),
            public_client_id: public.id.clone(),
            subject: subject.clone(),
            scope: scope::join(&scope),
            created_at: now,
            expires_at,
        };
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.tenant.id.clone()),
            kind: "auth_token.minted",
            actor: client.id.clone(),
            details: serde_json::json!({
                "client_id": client.id,
                "subject": subject,
                "public_client_id": public.id,
                "scope": row.scope,
            }),
        };
        self.store.insert_auth_token(&row, &audit).await?;
        Ok(AuthTokenResponse {
            auth_token: token,
            expires_in: ttl,
        })
    }
}
