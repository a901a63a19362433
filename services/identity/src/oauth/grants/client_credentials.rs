//! `grant_type=client_credentials` (RFC 6749 §4.4).

use std::collections::{BTreeSet, HashMap};

use super::Context;
use crate::oauth::OAuthError;
use crate::oauth::request::GrantType;
use crate::oauth::scope::ADMIN;
use crate::oauth::token::{Holder, TokenResponse, grant_scope, mint, registered, response};

/// A token for the client itself; never the `admin` scope.
pub fn grant(
    context: &Context<'_>,
    params: &HashMap<String, String>,
) -> Result<TokenResponse, OAuthError> {
    let client = context.client;
    registered(client, GrantType::ClientCredentials)?;
    let allowed: BTreeSet<String> = client
        .scopes
        .iter()
        .filter(|s| *s != ADMIN)
        .cloned()
        .collect();
    let scope = grant_scope(params.get("scope"), &allowed, allowed.clone())?;
    let token = mint(context, &Holder::of(&client.id, &[]), &scope)?;
    Ok(response(context.tenant, token, &scope, None))
}
