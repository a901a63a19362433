//! Introspection (RFC 7662) and revocation (RFC 7009), and the check the
//! admin API also uses: is an access token of this issuer still live?

use keysilo_coord::Event;
use keysilo_store::ClientRecord;
use keysilo_tokens::{Expectations, VerifiedAccessToken};

use super::credentials::refresh_token_hash;
use super::{OAuthError, OAuthService};
use crate::clock;
use crate::keys::TenantEntry;

impl OAuthService {
    /// Verifies an access token of `tenant` and checks that nothing it
    /// depends on was revoked or disabled since it was issued.
    pub async fn live_access_token(
        &self,
        tenant: &TenantEntry,
        token: &str,
    ) -> Result<Option<VerifiedAccessToken>, OAuthError> {
        self.live_within(tenant, token, self.settings.keys.clock_skew_seconds)
            .await
    }

    /// [`Self::live_access_token`], accepting `skew` seconds past `exp`.
    async fn live_within(
        &self,
        tenant: &TenantEntry,
        token: &str,
        skew: u64,
    ) -> Result<Option<VerifiedAccessToken>, OAuthError> {
        let issuer = self.cache.issuer(&tenant.tenant.id);
        let expect = Expectations {
            issuer: &issuer,
            audience: None,
            now: clock::unix_seconds(),
            skew,
        };
        let Ok(verified) = keysilo_tokens::verify(token, &tenant.verifiers, &expect) else {
            return Ok(None);
        };
        let claims = verified.claims();
        if self
            .store
            .is_access_token_revoked(&tenant.tenant.id, &claims.jti)
            .await?
        {
            return Ok(None);
        }
        if self
            .clients
            .get(&tenant.tenant.id, &claims.client_id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        // A secure-mode subject (`act` present) is the tenant's own user,
        // unknown here; any other `sub` but the client is a user of ours.
        if claims.subject != claims.client_id && claims.actor.is_none() {
            let user = self.store.user(&tenant.tenant.id, &claims.subject).await?;
            if user.is_none_or(|u| u.disabled_at.is_some()) {
                return Ok(None);
            }
        }
        if let Some(cutoff) = self
            .store
            .subject_revoked_before(&tenant.tenant.id, &claims.subject, clock::now())
            .await?
            && claims.issued_at <= clock::unix_of(cutoff)
        {
            return Ok(None);
        }
        Ok(Some(verified))
    }
}

/// RFC 7662 introspection of an access or refresh token of `tenant`.
pub(super) async fn introspect(
    service: &OAuthService,
    tenant: &TenantEntry,
    token: &str,
) -> Result<serde_json::Value, OAuthError> {
    if token.split('.').count() == 3 {
        if let Some(verified) = service.live_access_token(tenant, token).await? {
            let c = verified.claims();
            let mut answer = serde_json::json!({
                "active": true,
                "token_type": "Bearer",
                "scope": c.scope,
                "client_id": c.client_id,
                "sub": c.subject,
                "aud": c.audience,
                "iss": c.issuer,
                "exp": c.expires_at,
                "iat": c.issued_at,
                "jti": c.jti,
                "tid": c.tenant,
            });
            if let Some(thumbprint) = &c.certificate_thumbprint
                && let Some(fields) = answer.as_object_mut()
            {
                fields.insert("cnf".into(), serde_json::json!({ "x5t#S256": thumbprint }));
            }
            if let Some(actor) = &c.actor
                && let Some(fields) = answer.as_object_mut()
            {
                fields.insert("act".into(), serde_json::json!({ "sub": actor }));
            }
            if c.subject != c.client_id
                && c.actor.is_none()
                && let Some(user) = service.store.user(&tenant.tenant.id, &c.subject).await?
                && let Some(fields) = answer.as_object_mut()
            {
                fields.insert("username".into(), user.username.into());
            }
            return Ok(answer);
        }
        return Ok(serde_json::json!({ "active": false }));
    }
    let now = clock::now();
    let record = service
        .store
        .refresh_token(&tenant.tenant.id, &refresh_token_hash(token))
        .await?;
    let Some(record) = record.filter(|r| {
        r.spent_at.is_none()
            && r.superseded_at.is_none()
            && r.revoked_at.is_none()
            && r.idle_expires_at > now
            && r.family_expires_at > now
    }) else {
        return Ok(serde_json::json!({ "active": false }));
    };
    let user_ok = match record.owner.user() {
        Some(user) => service
            .store
            .user(&tenant.tenant.id, user)
            .await?
            .is_some_and(|u| u.disabled_at.is_none()),
        None => true,
    };
    let client_ok = service
        .clients
        .get(&tenant.tenant.id, &record.client_id)
        .await?
        .is_some();
    if !(user_ok && client_ok) {
        return Ok(serde_json::json!({ "active": false }));
    }
    Ok(serde_json::json!({
        "active": true,
        "token_type": "refresh_token",
        "scope": record.scope,
        "client_id": record.client_id,
        "sub": record.owner.subject(),
        "iss": service.cache.issuer(&tenant.tenant.id),
        "exp": clock::unix_of(record.idle_expires_at.min(record.family_expires_at)),
        "iat": clock::unix_of(record.issued_at),
    }))
}

/// RFC 7009 revocation by `client`: its refresh tokens (the whole family)
/// and its access tokens (by `jti`, until they expire, announced to the
/// edges). Tokens of other clients and unknown tokens are left alone, and
/// the answer is the same.
pub(super) async fn revoke(
    service: &OAuthService,
    tenant: &TenantEntry,
    client: &ClientRecord,
    token: &str,
) -> Result<(), OAuthError> {
    if token.split('.').count() == 3 {
        // Revocable while any verifier may still accept it: some may
        // allow more skew than this service does.
        let Some(verified) = service
            .live_within(tenant, token, keysilo_config::MAX_CLOCK_SKEW_SECONDS)
            .await?
        else {
            return Ok(());
        };
        let claims = verified.claims();
        if claims.client_id != client.id {
            return Ok(());
        }
        service
            .store
            .revoke_access_token(
                &tenant.tenant.id,
                &claims.jti,
                // Verifiers accept a token until `exp` plus their skew: the
                // revocation must outlive the largest one.
                clock::from_unix(
                    claims
                        .expires_at
                        .saturating_add(keysilo_config::MAX_CLOCK_SKEW_SECONDS),
                ),
            )
            .await?;
        service
            .events
            .publish(Event::TokenRevoked {
                tenant: tenant.tenant.id.clone(),
                client: client.id.clone(),
                jti: (claims.jti.clone(), claims.expires_at),
            })
            .await;
        return Ok(());
    }
    let hash = refresh_token_hash(token);
    let revoked = service
        .store
        .revoke_refresh_family(&tenant.tenant.id, &client.id, &hash, clock::now())
        .await?;
    service.announce_revoked(revoked).await;
    Ok(())
}
