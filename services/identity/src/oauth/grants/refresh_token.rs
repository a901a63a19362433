//! `grant_type=refresh_token` (RFC 6749 §6) with rotation: the presented
//! token is spent and replaced; presenting a spent one revokes its whole
//! family, unless it was spent within the tenant's
//! `refresh_reuse_grace_seconds` and its successor is unused (a lost
//! answer): then it is answered again and the successor superseded.

use std::collections::HashMap;
use std::time::Duration;

use keysilo_store::{FamilyOwner, NewAuditEvent, Redemption};

use super::{Context, TENANT_ADMIN_ROLE};
use crate::clock;
use crate::oauth::OAuthError;
use crate::oauth::credentials::refresh_token_hash;
use crate::oauth::request::GrantType;
use crate::oauth::scope::{self, ADMIN};
use crate::oauth::token::{
    Holder, TokenResponse, grant_scope, mint, new_refresh_token, registered, response,
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
        details: serde_json::json!({ "family": record.family_id, "sub": record.owner.subject() }),
    };
    let now = clock::now();
    let grace =
        Duration::from_secs(u64::try_from(tenant.tenant.refresh_reuse_grace_seconds).unwrap_or(0));
    // A spent token is reuse whatever else the request says, unless it was
    // spent within the tenant's grace (its answer may have been lost): then
    // the store decides under its locks whether it can be answered again.
    // Reuse revokes the family before anything else is looked at (scope
    // included), so that a replay can neither skip detection nor learn
    // anything.
    let dead = record.revoked_at.is_some()
        || record.superseded_at.is_some()
        || record.idle_expires_at <= now
        || record.family_expires_at <= now;
    let within_grace = record
        .spent_at
        .and_then(|spent| spent.checked_add(grace))
        .is_some_and(|until| until > now);
    if record.spent_at.is_some() && !within_grace && record.superseded_at.is_none() {
        let revoked = service
            .store
            .revoke_refresh_family_for_reuse(&hash, &reuse_audit, now)
            .await?;
        service.announce_revoked(revoked).await;
        tracing::warn!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
            "refresh token reuse detected; family revoked");
        return Err(invalid());
    }
    if dead {
        return Err(invalid());
    }
    let (roles, mut original) = match &record.owner {
        FamilyOwner::User(id) => {
            let user = service
                .store
                .user(&tenant.tenant.id, id)
                .await?
                .filter(|u| u.disabled_at.is_none())
                .ok_or_else(invalid)?;
            (user.roles, scope::parse(&record.scope).unwrap_or_default())
        }
        FamilyOwner::Subject { actor, .. } => {
            // The backend that vouched for the subject must still be
            // trusted, as at the exchange.
            service
                .clients
                .get(&tenant.tenant.id, actor)
                .await?
                .ok_or_else(invalid)?;
            (Vec::new(), scope::parse(&record.scope).unwrap_or_default())
        }
    };
    if !roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
        original.remove(ADMIN);
    }
    let scope = grant_scope(params.get("scope"), &original, original.clone())?;
    // Mint before spending the presented token: should minting fail, the
    // client can retry with the same refresh token instead of tripping
    // reuse detection.
    let holder = Holder {
        subject: record.owner.subject(),
        roles: &roles,
        actor: record.owner.actor(),
    };
    let token = mint(context, &holder, &scope)?;
    // The successor keeps the originally granted scope (RFC 6749 §6): only
    // this access token is narrowed.
    let (next, row) = new_refresh_token(
        Duration::from_secs(service.settings.tokens.refresh_token_idle_seconds),
        &original,
        record.family_expires_at,
        &token,
    )?;
    match service
        .store
        .rotate_refresh_token(&hash, &row, grace, &reuse_audit, now)
        .await?
    {
        Redemption::Rotated => Ok(response(tenant, token, &scope, Some(next))),
        Redemption::Replayed => {
            tracing::info!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
                "spent refresh token presented again within the grace; its successor replaced");
            Ok(response(tenant, token, &scope, Some(next)))
        }
        Redemption::ReuseDetected(revoked) => {
            service.announce_revoked(revoked).await;
            tracing::warn!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
                "refresh token reuse detected; family revoked");
            Err(invalid())
        }
        Redemption::Dead => Err(invalid()),
    }
}
