//! `/admin/v1/tenants/{T}/clients` and `/users`: OAuth2 clients and users.

use std::collections::BTreeSet;

use actix_web::{HttpResponse, web};
use keysilo_coord::Event;
use keysilo_store::{ClientRecord, NewAuditEvent, StoreError, UserRecord};
use keysilo_types::TenantId;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::tenants::tenant_in_path;
use crate::auth::{AdminCaller, authorize_tenant};
use crate::clock;
use crate::error::ApiError;
use crate::oauth::credentials::{new_client_id, new_secret};
use crate::oauth::grants::GRANT_TYPES;
use crate::oauth::passwords::PasswordError;
use crate::oauth::scope::{self, ADMIN};
use crate::state::AppState;

/// Body of `POST …/clients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    name: String,
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn display_text(value: &str, what: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 200 || value.chars().any(char::is_control) {
        return Err(bad(format!("{what} must be 1 to 200 printable characters")));
    }
    Ok(value.to_owned())
}

fn unique(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An origin as browsers send it: scheme, host and port only, default
/// ports dropped, lower case.
fn origin(raw: &str) -> Result<String, ApiError> {
    let invalid = || bad(format!("`{raw}` is not an origin (scheme://host[:port])"));
    let url = url::Url::parse(raw).map_err(|_| invalid())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.path() == "/"
        && !raw.trim_end_matches('/').ends_with('/')
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain {
        return Err(invalid());
    }
    Ok(url.origin().ascii_serialization())
}

struct NewClient {
    name: String,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    audience: Vec<String>,
    allowed_origins: Vec<String>,
}

impl TryFrom<CreateClient> for NewClient {
    type Error = ApiError;

    fn try_from(body: CreateClient) -> Result<Self, Self::Error> {
        let name = display_text(&body.name, "name")?;
        let grant_types = unique(body.grant_types);
        if grant_types.is_empty()
            || grant_types
                .iter()
                .any(|g| !GRANT_TYPES.contains(&g.as_str()))
        {
            return Err(bad(format!(
                "grant_types must be a non-empty subset of {}",
                GRANT_TYPES.join(", ")
            )));
        }
        let scopes = unique(body.scopes);
        if scopes.len() > 100 || scopes.iter().any(|s| !scope::is_scope_token(s)) {
            return Err(bad("scopes must be at most 100 valid scope tokens"));
        }
        if grant_types.iter().any(|g| g == "client_credentials")
            && scopes.iter().any(|s| s == ADMIN)
        {
            return Err(bad(
                "a client_credentials client can never hold the admin scope",
            ));
        }
        let audience = unique(body.audience);
        if audience.len() > 20 || audience.iter().any(|a| a.is_empty() || a.len() > 200) {
            return Err(bad("audience must be at most 20 non-empty values"));
        }
        if body.allowed_origins.len() > 50 {
            return Err(bad("at most 50 allowed_origins"));
        }
        let allowed_origins = unique(
            body.allowed_origins
                .iter()
                .map(|o| origin(o))
                .collect::<Result<Vec<_>, _>>()?,
        );
        Ok(Self {
            name,
            grant_types,
            scopes,
            audience,
            allowed_origins,
        })
    }
}

fn internal(err: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unexpected(err.into())
}

async fn announce(state: &AppState, event: Event) {
    state.keys.publish(event).await;
}

/// `POST /admin/v1/tenants/{T}/clients`: registers a client; the secret is
/// in this response only. **Permissions:** platform admin, or a tenant
/// admin of `T`.
pub async fn post_client(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CreateClient>,
) -> Result<HttpResponse, ApiError> {
    let new = NewClient::try_from(body.into_inner())?;
    let tenant = tenant_in_path(&path)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    live_tenant(&state, &tenant).await?;
    let id = new_client_id().map_err(internal)?;
    let secret = Zeroizing::new(new_secret().map_err(internal)?);
    let record = ClientRecord {
        tenant_id: tenant.clone(),
        id: id.clone(),
        name: new.name,
        secret_hash: state.secrets.hash(&secret).map_err(internal)?,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        grant_types: new.grant_types,
        scopes: new.scopes,
        audience: new.audience,
        allowed_origins: new.allowed_origins,
        created_at: clock::now(),
        disabled_at: None,
    };
    let audit = NewAuditEvent {
        tenant_id: Some(tenant.clone()),
        kind: "client.created",
        actor: actor.name(),
        details: serde_json::json!({ "client_id": id, "grant_types": record.grant_types }),
    };
    state.store.insert_client(&record, &audit).await?;
    state.clients.invalidate(&tenant, &id);
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "client_id": id,
            "client_secret": secret.as_str(),
            "name": record.name,
            "grant_types": record.grant_types,
            "scopes": record.scopes,
            "audience": record.audience,
            "allowed_origins": record.allowed_origins,
            "created_at": clock::rfc3339(record.created_at),
        })))
}

/// `POST /admin/v1/tenants/{T}/clients/{id}/secret`: a new secret; the
/// previous one keeps working for `tokens.client_secret_overlap_seconds`.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn post_client_secret(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    live_tenant(&state, &tenant).await?;
    let secret = Zeroizing::new(new_secret().map_err(internal)?);
    let now = clock::now();
    let overlap =
        std::time::Duration::from_secs(state.settings.tokens.client_secret_overlap_seconds);
    let until = now.checked_add(overlap).unwrap_or(now);
    let audit = NewAuditEvent {
        tenant_id: Some(tenant.clone()),
        kind: "client.secret_rotated",
        actor: actor.name(),
        details: serde_json::json!({ "client_id": id, "previous_secret_expires_at": clock::rfc3339(until) }),
    };
    let hash = state.secrets.hash(&secret).map_err(internal)?;
    if !state
        .store
        .rotate_client_secret(&tenant, &id, &hash, until, &audit, now)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.clients.invalidate(&tenant, &id);
    announce(
        &state,
        Event {
            client: Some(id.clone()),
            ..Event::about("client.secret_rotated", &tenant)
        },
    )
    .await;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "client_id": id,
            "client_secret": secret.as_str(),
            "previous_secret_expires_at": clock::rfc3339(until),
        })))
}

/// `DELETE /admin/v1/tenants/{T}/clients/{id}`: disables the client
/// everywhere; its refresh tokens die and its access tokens are refused.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn delete_client(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    live_tenant(&state, &tenant).await?;
    let audit = NewAuditEvent {
        tenant_id: Some(tenant.clone()),
        kind: "client.disabled",
        actor: actor.name(),
        details: serde_json::json!({ "client_id": id }),
    };
    if !state
        .store
        .disable_client(&tenant, &id, &audit, clock::now())
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.clients.invalidate(&tenant, &id);
    announce(
        &state,
        Event {
            client: Some(id),
            ..Event::about("client.disabled", &tenant)
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Body of `POST …/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("username", &self.username)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

fn is_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | ':')
        })
}

/// `POST /admin/v1/tenants/{T}/users`: creates a user (the password is
/// hashed with argon2id and never shown again). **Permissions:** platform
/// admin, or a tenant admin of `T`.
pub async fn post_user(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let password = Zeroizing::new(body.password);
    let username = display_text(&body.username, "username")?;
    let length = password.chars().count();
    if !(8..=1024).contains(&length) {
        return Err(bad("password must be 8 to 1024 characters"));
    }
    let roles = unique(body.roles);
    if roles.len() > 50 || roles.iter().any(|r| !is_role(r)) {
        return Err(bad("roles must be at most 50 names of [a-z0-9-_.:]"));
    }
    let tenant = tenant_in_path(&path)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    live_tenant(&state, &tenant).await?;
    let hash = state
        .passwords
        .hash(password)
        .await
        .map_err(|err| match err {
            PasswordError::Busy => ApiError::Unavailable(err.into()),
            other => internal(other),
        })?;
    let id = uuid::Uuid::new_v4().to_string();
    let record = UserRecord {
        tenant_id: tenant.clone(),
        id: id.clone(),
        username,
        password_hash: hash,
        roles,
        created_at: clock::now(),
        disabled_at: None,
    };
    let audit = NewAuditEvent {
        tenant_id: Some(tenant.clone()),
        kind: "user.created",
        actor: actor.name(),
        details: serde_json::json!({ "user_id": id, "roles": record.roles }),
    };
    match state.store.insert_user(&record, &audit).await {
        Err(StoreError::Conflict) => {
            return Err(ApiError::Conflict(
                "a user with this username exists".into(),
            ));
        }
        other => other?,
    }
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": id,
        "username": record.username,
        "roles": record.roles,
        "created_at": clock::rfc3339(record.created_at),
    })))
}

/// `DELETE /admin/v1/tenants/{T}/users/{id}`: disables the user; its
/// refresh-token families are revoked and its access tokens refused.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn delete_user(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    live_tenant(&state, &tenant).await?;
    let audit = NewAuditEvent {
        tenant_id: Some(tenant.clone()),
        kind: "user.disabled",
        actor: actor.name(),
        details: serde_json::json!({ "user_id": id }),
    };
    if !state
        .store
        .disable_user(&tenant, &id, &audit, clock::now())
        .await?
    {
        return Err(ApiError::NotFound);
    }
    announce(
        &state,
        Event {
            user: Some(id),
            ..Event::about("user.disabled", &tenant)
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Refuses a tenant that does not exist or is disabled.
async fn live_tenant(state: &AppState, id: &TenantId) -> Result<(), ApiError> {
    state.cache.get(id).await?.ok_or(ApiError::NotFound)?;
    Ok(())
}
