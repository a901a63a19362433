//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693),
//! secure mode: a public client redeems an auth token its tenant's backend
//! minted for one of its users.

use std::collections::HashMap;

use keysilo_store::FamilyOwner;

use super::{Context, start_family};
use crate::clock;
use crate::oauth::OAuthError;
use crate::oauth::credentials::refresh_token_hash;
use crate::oauth::request::{ACCESS_TOKEN_TYPE, AUTH_TOKEN_TYPE, GrantType};
use crate::oauth::scope;
use crate::oauth::token::{Holder, TokenResponse, grant_scope, mint, registered, response};

/// Redeems an auth token, once: an access token for its subject, issued
/// to the public client with `act` naming the minting client, and a
/// refresh token when the public client is registered for them.
pub async fn grant(
    context: &Context<'_>,
    params: &HashMap<String, String>,
) -> Result<TokenResponse, OAuthError> {
    let Context {
        service,
        tenant,
        client,
        ..
    } = context;
    registered(client, GrantType::TokenExchange)?;
    let required = |name: &str| {
        params
            .get(name)
            .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
    };
    let subject_token = required("subject_token")?;
    let token_type = required("subject_token_type")?;
    if token_type != AUTH_TOKEN_TYPE {
        return Err(OAuthError::InvalidRequest(format!(
            "subject_token_type must be {AUTH_TOKEN_TYPE}"
        )));
    }
    if params.contains_key("actor_token") || params.contains_key("actor_token_type") {
        return Err(OAuthError::InvalidRequest(
            "actor tokens are not supported: the auth token names its actor".into(),
        ));
    }
    if params
        .get("requested_token_type")
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::InvalidRequest(format!(
            "requested_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    let invalid = || OAuthError::InvalidGrant("the auth token is invalid, expired or redeemed");
    if subject_token.len() > 512 {
        return Err(invalid());
    }
    let redeemed = service
        .store
        .redeem_auth_token(
            &tenant.tenant.id,
            &refresh_token_hash(subject_token),
            &client.id,
            clock::now(),
        )
        .await?
        .ok_or_else(invalid)?;
    // The backend that vouched for the subject must still be trusted.
    if service
        .clients
        .get(&tenant.tenant.id, &redeemed.client_id)
        .await?
        .is_none()
    {
        return Err(invalid());
    }
    let minted = scope::parse(&redeemed.scope).unwrap_or_default();
    let scope = grant_scope(params.get("scope"), &minted, minted.clone())?;
    let holder = Holder {
        subject: &redeemed.subject,
        roles: &[],
        actor: Some(&redeemed.client_id),
    };
    let token = mint(context, &holder, &scope)?;
    let owner = FamilyOwner::Subject {
        subject: redeemed.subject,
        actor: redeemed.client_id,
    };
    let refresh = start_family(context, owner, &scope, &token).await?;
    Ok(response(tenant, token, &scope, refresh).exchanged())
}
