//! Client authentication and the three grants of the token endpoint, plus
//! introspection and revocation, which authenticate clients the same way.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keysilo_coord::Event;
use keysilo_store::{ClientRecord, NewAuditEvent, NewRefreshToken, Redemption};
use keysilo_tls::{CertificateMatch, PeerCertificate};
use keysilo_tokens::{AccessTokenClaims, Expectations, VerifiedAccessToken};
use serde::Serialize;
use zeroize::Zeroizing;

use super::OAuthError;
use super::credentials::{new_secret, random_token, refresh_token_hash, same_digest};
use super::passwords::PasswordError;
use super::scope::{self, ADMIN};
use crate::clock;
use crate::error::ApiError;
use crate::keys::TenantEntry;
use crate::state::AppState;

/// The role that may obtain the `admin` scope.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// Grant types a client can be registered for.
pub const GRANT_TYPES: [&str; 3] = ["client_credentials", "password", "refresh_token"];

/// Parameters of a form body; a repeated parameter is an error
/// (RFC 6749 §3.1).
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.1: a parameter sent without a value is omitted.
        if value.is_empty() {
            continue;
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::InvalidRequest(format!(
                "parameter `{name}` is repeated"
            )));
        }
    }
    Ok(params)
}

/// Checks that the body is a form (RFC 6749 §3.2).
pub fn require_form(req: &HttpRequest) -> Result<(), OAuthError> {
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form {
        Ok(())
    } else {
        Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ))
    }
}

/// Credentials a client presented: its id, and its secret unless it
/// authenticates with its TLS certificate (RFC 8705 `tls_client_auth`).
pub struct ClientCredentials {
    id: String,
    secret: Option<Zeroizing<String>>,
    basic: bool,
}

/// Decodes one `application/x-www-form-urlencoded` value (RFC 6749
/// §2.3.1): `+` is a space, `%XX` a byte.
fn form_decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Whether a value may be looked up: no control characters (PostgreSQL
/// refuses NUL in text) and a sane length.
pub fn plain(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && !value.chars().any(char::is_control)
}

/// Takes the client's credentials from HTTP Basic (RFC 6749 §2.3.1, values
/// form-encoded) or from the body; using both is an error.
pub fn client_credentials(
    req: &HttpRequest,
    params: &mut HashMap<String, String>,
) -> Result<ClientCredentials, OAuthError> {
    let basic_failed = OAuthError::InvalidClient { basic: true };
    let basic = match req.headers().get("authorization") {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| OAuthError::InvalidClient { basic: true })?;
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_owned())
        }
    };
    let body_id = params.remove("client_id");
    let body_secret = params.remove("client_secret").map(Zeroizing::new);
    if let Some(encoded) = basic {
        if body_secret.is_some() {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method, not two".into(),
            ));
        }
        let decoded = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Zeroizing::new)
            .ok_or(OAuthError::InvalidClient { basic: true })?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or(OAuthError::InvalidClient { basic: true })?;
        let id = form_decode(id).ok_or(OAuthError::InvalidClient { basic: true })?;
        let secret = Zeroizing::new(form_decode(secret).ok_or(basic_failed)?);
        if body_id.as_ref().is_some_and(|body| body != &id) {
            return Err(OAuthError::InvalidRequest(
                "client_id differs from the authenticated client".into(),
            ));
        }
        return Ok(ClientCredentials {
            id,
            secret: Some(secret),
            basic: true,
        });
    }
    // A `client_id` alone is a `tls_client_auth` client, or nobody.
    match body_id {
        Some(id) => Ok(ClientCredentials {
            id,
            secret: body_secret,
            basic: false,
        }),
        None => Err(OAuthError::InvalidClient { basic: false }),
    }
}

/// Authenticates a client of `tenant`. Unknown, disabled and wrong-secret
/// clients are indistinguishable; the secret is compared as keyed digests
/// in constant time, the previous secret only until its overlap ends. A
/// `tls_client_auth` client sends no secret: the connection's verified
/// client certificate must be the registered one (RFC 8705 §2.1). Each
/// client has exactly one method; the other always fails.
pub async fn authenticate(
    state: &AppState,
    tenant: &TenantEntry,
    credentials: &ClientCredentials,
    peer: Option<&PeerCertificate>,
) -> Result<Arc<ClientRecord>, ApiError> {
    let failed = OAuthError::InvalidClient {
        basic: credentials.basic,
    };
    let presented = credentials
        .secret
        .as_ref()
        .map(|secret| state.secrets.hash(secret))
        .transpose()
        .map_err(|err| ApiError::Unexpected(err.into()))?;
    let client = if !plain(&credentials.id, 128) {
        None
    } else {
        state
            .clients
            .get(&tenant.tenant.id, &credentials.id)
            .await?
    };
    let Some(client) = client else {
        return Err(failed.into());
    };
    let authenticated = match (&client.tls_client_auth, presented, &client.secret_hash) {
        (Some(registered), None, _) => {
            let matched = peer.is_some_and(|peer| {
                CertificateMatch::parse(&registered.parameter, &registered.value)
                    .is_ok_and(|expected| expected.matches(peer))
            });
            if !matched {
                tracing::info!(
                    client = %client.id,
                    certificate = peer.is_some(),
                    verified = peer.is_some_and(|p| p.verified),
                    "tls_client_auth failed: no verified client certificate with the registered name"
                );
            }
            matched
        }
        (None, Some(presented), Some(current)) => {
            let previous = client
                .previous_secret_hash
                .as_deref()
                .zip(client.previous_secret_expires_at)
                .is_some_and(|(hash, until)| until > clock::now() && same_digest(&presented, hash));
            same_digest(&presented, current) || previous
        }
        _ => false,
    };
    if authenticated {
        Ok(client)
    } else {
        Err(failed.into())
    }
}

/// The certificate thumbprint the client's tokens are bound to (RFC 8705
/// §3), or `None` when it did not register for bound tokens.
pub fn certificate_binding(
    client: &ClientRecord,
    peer: Option<&PeerCertificate>,
) -> Result<Option<String>, OAuthError> {
    if !client.certificate_bound {
        return Ok(None);
    }
    peer.map(|peer| Some(peer.thumbprint.clone()))
        .ok_or_else(|| {
            OAuthError::InvalidRequest(
                "this client's tokens are bound to its certificate: connect with mutual TLS".into(),
            )
        })
}

/// What the token endpoint answers on success; its `Debug` shows no token.
#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
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

fn registered(client: &ClientRecord, grant: &str) -> Result<(), OAuthError> {
    if client.grant_types.iter().any(|g| g == grant) {
        Ok(())
    } else {
        Err(OAuthError::UnauthorizedClient)
    }
}

/// The scope granted: the requested one if it is within `allowed`,
/// otherwise `invalid_scope`; `default` when none was requested.
fn grant_scope(
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

fn mint(
    state: &AppState,
    tenant: &TenantEntry,
    client: &ClientRecord,
    binding: Option<&str>,
    subject: &str,
    scope: &BTreeSet<String>,
    roles: &[String],
) -> Result<String, ApiError> {
    let signing = tenant.signing.as_ref().ok_or_else(|| {
        ApiError::Unavailable(anyhow::anyhow!(
            "tenant {} has no usable signing key",
            tenant.tenant.id
        ))
    })?;
    let now = clock::unix_seconds();
    let ttl = u64::try_from(tenant.tenant.token_ttl_seconds).unwrap_or(900);
    let issuer = state.cache.issuer(&tenant.tenant.id);
    // A token carrying `admin` is for this issuer's admin API only, so that
    // no resource server that receives it can replay it there.
    let audience = if scope.contains(ADMIN) {
        vec![issuer.clone()]
    } else if client.audience.is_empty() {
        vec![state.settings.tokens.default_audience.clone()]
    } else {
        client.audience.clone()
    };
    let claims = AccessTokenClaims {
        issuer,
        subject: subject.to_owned(),
        audience,
        client_id: client.id.clone(),
        scope: scope::join(scope),
        tenant: tenant.tenant.id.clone(),
        jti: random_token(16).map_err(|err| ApiError::Unexpected(err.into()))?,
        issued_at: now,
        expires_at: now + ttl,
        allowed_origins: client.allowed_origins.clone(),
        roles: roles.to_vec(),
        certificate_thumbprint: binding.map(str::to_owned),
    };
    keysilo_tokens::mint(&claims, signing).map_err(|err| ApiError::Unexpected(err.into()))
}

fn response(
    tenant: &TenantEntry,
    access_token: String,
    scope: &BTreeSet<String>,
    refresh_token: Option<String>,
) -> TokenResponse {
    TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: tenant.tenant.token_ttl_seconds,
        scope: scope::join(scope),
        refresh_token,
    }
}

/// `grant_type=client_credentials`: a token for the client itself; never
/// the `admin` scope.
pub fn client_credentials_grant(
    state: &AppState,
    tenant: &TenantEntry,
    client: &ClientRecord,
    binding: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<TokenResponse, ApiError> {
    registered(client, "client_credentials")?;
    let allowed: BTreeSet<String> = client
        .scopes
        .iter()
        .filter(|s| *s != ADMIN)
        .cloned()
        .collect();
    let scope = grant_scope(params.get("scope"), &allowed, allowed.clone())?;
    let token = mint(state, tenant, client, binding, &client.id, &scope, &[])?;
    Ok(response(tenant, token, &scope, None))
}

fn password_error(err: PasswordError) -> ApiError {
    match err {
        PasswordError::Busy => OAuthError::TemporarilyUnavailable.into(),
        other => ApiError::Unexpected(other.into()),
    }
}

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A new refresh token and its row; it idles out within the family's life.
fn new_refresh_token(
    state: &AppState,
    scope: &BTreeSet<String>,
    family_expires: std::time::SystemTime,
) -> Result<(String, NewRefreshToken), ApiError> {
    let token = new_secret().map_err(|err| ApiError::Unexpected(err.into()))?;
    let idle = clock::now()
        .checked_add(seconds(state.settings.tokens.refresh_token_idle_seconds))
        .unwrap_or(family_expires)
        .min(family_expires);
    let row = NewRefreshToken {
        hash: refresh_token_hash(&token),
        scope: scope::join(scope),
        idle_expires_at: idle,
    };
    Ok((token, row))
}

/// `grant_type=password`.
pub async fn password_grant(
    state: &AppState,
    tenant: &TenantEntry,
    client: &ClientRecord,
    binding: Option<&str>,
    params: &mut HashMap<String, String>,
) -> Result<TokenResponse, ApiError> {
    registered(client, "password")?;
    let (Some(username), Some(password)) = (params.remove("username"), params.remove("password"))
    else {
        return Err(OAuthError::InvalidRequest("username and password are required".into()).into());
    };
    let password = Zeroizing::new(password);
    let wrong = OAuthError::InvalidGrant("invalid username or password");
    if !plain(&username, 200) {
        return Err(wrong.into());
    }
    let limit_key = format!("{}/{}", tenant.tenant.id, username);
    // Parallel attempts for one username are capped by the failures still
    // free, and an attempt that does not succeed counts as a failure.
    let attempt = state.limits.password_attempt(&limit_key).map_err(|wait| {
        state.metrics.rate_limited("password");
        OAuthError::RateLimited(wait)
    })?;
    let user = match state.store.user_by_name(&tenant.tenant.id, &username).await {
        Ok(user) => user.filter(|u| u.disabled_at.is_none()),
        Err(err) => {
            attempt.undecided();
            return Err(err.into());
        }
    };
    // An unknown user is checked against a dummy hash: same cost, same
    // answer as a wrong password.
    let matches = match state
        .passwords
        .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
        .await
    {
        Ok(matches) => matches,
        Err(err) => {
            attempt.undecided();
            return Err(password_error(err));
        }
    };
    let Some(user) = user.filter(|_| matches) else {
        return Err(wrong.into());
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
    let token = mint(
        state,
        tenant,
        client,
        binding,
        &user.id,
        &scope,
        &user.roles,
    )?;
    let refresh = if client.grant_types.iter().any(|g| g == "refresh_token") {
        let now = clock::now();
        let family_expires = now
            .checked_add(seconds(
                state.settings.tokens.refresh_token_lifetime_seconds,
            ))
            .unwrap_or(now);
        let (token, row) = new_refresh_token(state, &scope, family_expires)?;
        let family = random_token(16).map_err(|err| ApiError::Unexpected(err.into()))?;
        state
            .store
            .start_refresh_family(
                &family,
                &tenant.tenant.id,
                &client.id,
                &user.id,
                family_expires,
                &row,
                now,
            )
            .await?;
        Some(token)
    } else {
        None
    };
    Ok(response(tenant, token, &scope, refresh))
}

/// `grant_type=refresh_token`: the presented token is spent and replaced;
/// presenting a spent one revokes its whole family.
pub async fn refresh_token_grant(
    state: &AppState,
    tenant: &TenantEntry,
    client: &ClientRecord,
    binding: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<TokenResponse, ApiError> {
    registered(client, "refresh_token")?;
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
    let invalid = || OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked");
    let hash = refresh_token_hash(presented);
    let record = state
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
        state
            .store
            .revoke_refresh_family_for_reuse(&hash, &reuse_audit, now)
            .await?;
        tracing::warn!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
            "refresh token reuse detected; family revoked");
        return Err(invalid().into());
    }
    if dead {
        return Err(invalid().into());
    }
    let user = state
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
    let token = mint(
        state,
        tenant,
        client,
        binding,
        &user.id,
        &scope,
        &user.roles,
    )?;
    // The successor keeps the originally granted scope (RFC 6749 §6): only
    // this access token is narrowed.
    let (next, row) = new_refresh_token(state, &original, record.family_expires_at)?;
    match state
        .store
        .rotate_refresh_token(&hash, &row, &reuse_audit, now)
        .await?
    {
        Redemption::Rotated => Ok(response(tenant, token, &scope, Some(next))),
        Redemption::ReuseDetected => {
            tracing::warn!(tenant = %tenant.tenant.id, client = %client.id, family = %record.family_id,
                "refresh token reuse detected; family revoked");
            Err(invalid().into())
        }
        Redemption::Dead => Err(invalid().into()),
    }
}

/// Verifies an access token of `tenant` and checks that nothing it
/// depends on was revoked or disabled since it was issued.
pub async fn live_access_token(
    state: &AppState,
    tenant: &TenantEntry,
    token: &str,
) -> Result<Option<VerifiedAccessToken>, ApiError> {
    let issuer = state.cache.issuer(&tenant.tenant.id);
    let expect = Expectations {
        issuer: &issuer,
        audience: None,
        now: clock::unix_seconds(),
        skew: state.settings.keys.clock_skew_seconds,
    };
    let Ok(verified) = keysilo_tokens::verify(token, &tenant.verifiers, &expect) else {
        return Ok(None);
    };
    let claims = verified.claims();
    if state
        .store
        .is_access_token_revoked(&tenant.tenant.id, &claims.jti)
        .await?
    {
        return Ok(None);
    }
    if state
        .clients
        .get(&tenant.tenant.id, &claims.client_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    if claims.subject != claims.client_id {
        let user = state.store.user(&tenant.tenant.id, &claims.subject).await?;
        if user.is_none_or(|u| u.disabled_at.is_some()) {
            return Ok(None);
        }
    }
    Ok(Some(verified))
}

/// RFC 7662 introspection of an access or refresh token of `tenant`.
pub async fn introspect(
    state: &AppState,
    tenant: &TenantEntry,
    token: &str,
) -> Result<serde_json::Value, ApiError> {
    if token.split('.').count() == 3 {
        if let Some(verified) = live_access_token(state, tenant, token).await? {
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
            if c.subject != c.client_id
                && let Some(user) = state.store.user(&tenant.tenant.id, &c.subject).await?
                && let Some(fields) = answer.as_object_mut()
            {
                fields.insert("username".into(), user.username.into());
            }
            return Ok(answer);
        }
        return Ok(serde_json::json!({ "active": false }));
    }
    let now = clock::now();
    let record = state
        .store
        .refresh_token(&tenant.tenant.id, &refresh_token_hash(token))
        .await?;
    let Some(record) = record.filter(|r| {
        r.spent_at.is_none()
            && r.revoked_at.is_none()
            && r.idle_expires_at > now
            && r.family_expires_at > now
    }) else {
        return Ok(serde_json::json!({ "active": false }));
    };
    let user_ok = state
        .store
        .user(&tenant.tenant.id, &record.user_id)
        .await?
        .is_some_and(|u| u.disabled_at.is_none());
    let client_ok = state
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
        "sub": record.user_id,
        "iss": state.cache.issuer(&tenant.tenant.id),
        "exp": clock::unix_of(record.idle_expires_at.min(record.family_expires_at)),
        "iat": clock::unix_of(record.issued_at),
    }))
}

/// RFC 7009 revocation by `client`: its refresh tokens (the whole family)
/// and its access tokens (by `jti`, until they expire). Tokens of other
/// clients and unknown tokens are left alone, and the answer is the same.
pub async fn revoke(
    state: &AppState,
    tenant: &TenantEntry,
    client: &ClientRecord,
    token: &str,
) -> Result<(), ApiError> {
    if token.split('.').count() == 3 {
        let Some(verified) = live_access_token(state, tenant, token).await? else {
            return Ok(());
        };
        let claims = verified.claims();
        if claims.client_id != client.id {
            return Ok(());
        }
        state
            .store
            .revoke_access_token(
                &tenant.tenant.id,
                &claims.jti,
                clock::from_unix(claims.expires_at),
            )
            .await?;
        state
            .keys
            .publish(Event {
                jti: Some((claims.jti.clone(), claims.expires_at)),
                client: Some(client.id.clone()),
                ..Event::about("token.revoked", &tenant.tenant.id)
            })
            .await;
        return Ok(());
    }
    let hash = refresh_token_hash(token);
    state
        .store
        .revoke_refresh_family(&tenant.tenant.id, &client.id, &hash, clock::now())
        .await?;
    Ok(())
}
