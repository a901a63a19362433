//! `grant_type=refresh_token` (RFC 6749 §6) with rotation: the presented
//! token is spent and replaced; presenting a spent one revokes its whole
//! family.

use std::collections::HashMap;
use std::time::Duration;

use keysilo_store::{NewAuditEvent, Redemption};

use super::{Context, TENANT_ADMIN_ROLE};
use crate::clock;
use crate::oauth::OAuthError;
use crate::oauth::credentials::refresh_token_hash;
use crate::oauth::request::GrantType;
use crate::oauth::scope::{self, ADMIN};
use crate::oauth::token::{
    TokenResponse, grant_scope, mint, new_refresh_token, registered, response,
};

/// Redeems a refresh token of the authenticated client.
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
    registered(client, GrantType::RefreshToken)?;
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
    let invalid = || OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked");
    let hash = refresh_token_hash(presented);
    let record = service
        .store
        .refresh_token(&tenant.tenant.id, &hash)
        .await?
        .filter(|r| r.client_id == client.id)
        .ok_or_else(invalid)?;
    let reuse_audit = NewAuditEvent {
        tenant_id: Some(tenant.tenant.id.clone()),
        kind: "refresh_token.reused",
        actor: client.id.clone(),
        details: serde_json::json!({ "family": record.family_id, "user": record.user_id }),
    };
    let now = clock::now();
    // A spent token is reuse whatever else the request says: revoke the
    // family before looking at anything else (scope included), so that a
    // replay can neither skip detection nor learn anything.
    let dead = record.revoked_at.is_some()
        || record.idle_expires_at <= now
        || record.family_expires_at <= now;
    if record.spent_at.is_some() {
        service
            .store
            .revoke_refresh_family_for_reuse(&hash, &reuse_audit, now)
            .await?;
        tracing::warn!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
            "refresh token reuse detected; family revoked");
        return Err(invalid());
    }
    if dead {
        return Err(invalid());
    }
    let user = service
        .store
        .user(&tenant.tenant.id, &record.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(invalid)?;
    let mut original = scope::parse(&record.scope).unwrap_or_default();
    if !user.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
        original.remove(ADMIN);
    }
    let scope = grant_scope(params.get("scope"), &original, original.clone())?;
    // Mint before spending the presented token: should minting fail, the
    // client can retry with the same refresh token instead of tripping
    // reuse detection.
    let token = mint(context, &user.id, &scope, &user.roles)?;
    // The successor keeps the originally granted scope (RFC 6749 §6): only
    // this access token is narrowed.
    let (next, row) = new_refresh_token(
        Duration::from_secs(service.settings.tokens.refresh_token_idle_seconds),
        &original,
        record.family_expires_at,
    )?;
    match service
        .store
        .rotate_refresh_token(&hash, &row, &reuse_audit, now)
        .await?
    {
        Redemption::Rotated => Ok(response(tenant, token, &scope, Some(next))),
        Redemption::ReuseDetected => {
            tracing::warn!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
                "refresh token reuse detected; family revoked");
            Err(invalid())
        }
        Redemption::Dead => Err(invalid()),
    }
}
