//! `grant_type=password` (RFC 6749 §4.3).

use std::collections::{BTreeSet, HashMap};

use keysilo_store::FamilyOwner;
use zeroize::Zeroizing;

use super::{Context, TENANT_ADMIN_ROLE, start_family};
use crate::oauth::OAuthError;
use crate::oauth::passwords::PasswordError;
use crate::oauth::request::{GrantType, plain};
use crate::oauth::scope::ADMIN;
use crate::oauth::token::{Holder, TokenResponse, grant_scope, mint, registered, response};

fn password_error(err: PasswordError) -> OAuthError {
    match err {
        PasswordError::Busy => OAuthError::TemporarilyUnavailable,
        other => OAuthError::internal(other),
    }
}

/// A token for a user whose password checks out, with a refresh token when
/// the client is registered for them. Parallel attempts for one username
/// are capped by the failures still free, and an attempt that does not
/// succeed counts as a failure.
pub async fn grant(
    context: &Context<'_>,
    params: &mut HashMap<String, String>,
) -> Result<TokenResponse, OAuthError> {
    let Context {
        service,
        tenant,
        client,
        ..
    } = context;
    registered(client, GrantType::Password)?;
    let (Some(username), Some(password)) = (params.remove("username"), params.remove("password"))
    else {
        return Err(OAuthError::InvalidRequest(
            "username and password are required".into(),
        ));
    };
    let password = Zeroizing::new(password);
    let wrong = OAuthError::InvalidGrant("invalid username or password");
    if !plain(&username, 200) {
        return Err(wrong);
    }
    let limit_key = format!("{}/{}", tenant.tenant.id, username);
    let attempt = service
        .limits
        .password_attempt(&limit_key)
        .map_err(|wait| {
            service.metrics.rate_limited("password");
            OAuthError::RateLimited(wait)
        })?;
    let user = match service
        .store
        .user_by_name(&tenant.tenant.id, &username)
        .await
    {
        Ok(user) => user.filter(|u| u.disabled_at.is_none()),
        Err(err) => {
            attempt.undecided();
            return Err(err.into());
        }
    };
    // An unknown user is checked against a dummy hash: same cost, same
    // answer as a wrong password.
    let matches = match service
        .passwords
        .verify(
            tenant.tenant.id.as_str(),
            password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await
    {
        Ok(matches) => {
            service.metrics.password_check(user.is_some());
            matches
        }
        Err(err) => {
            attempt.undecided();
            return Err(password_error(err));
        }
    };
    let Some(user) = user.filter(|_| matches) else {
        return Err(wrong);
    };
    attempt.succeeded();

    // `admin` needs both the client registered for it and the user in role.
    let is_admin = user.roles.iter().any(|r| r == TENANT_ADMIN_ROLE);
    let allowed: BTreeSet<String> = client
        .scopes
        .iter()
        .filter(|s| *s != ADMIN || is_admin)
        .cloned()
        .collect();
    let default: BTreeSet<String> = allowed.iter().filter(|s| *s != ADMIN).cloned().collect();
    let scope = grant_scope(params.get("scope"), &allowed, default)?;
    let token = mint(context, &Holder::of(&user.id, &user.roles), &scope)?;
    let refresh = start_family(context, FamilyOwner::User(user.id.clone()), &scope, &token).await?;
    Ok(response(tenant, token, &scope, refresh))
}
