//! `/admin/v1/tenants/{T}/clients` and `/users`: OAuth2 clients and users.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::tenants::tenant_in_path;
use crate::auth::{AdminCaller, authorize_tenant};
use keysilo_store::ClientRecord;

use crate::clock;
use crate::error::ApiError;
use crate::oauth::registry::{NewClient, NewUser, Principal, RegistryError};
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
    /// RFC 7591; a secret when omitted.
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    /// RFC 8705 §2.1.2: exactly one of these for `tls_client_auth`.
    #[serde(default)]
    tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    tls_client_auth_san_email: Option<String>,
    /// RFC 8705 §3.4; by default true for `tls_client_auth` clients.
    #[serde(default)]
    tls_client_certificate_bound_access_tokens: Option<bool>,
}

impl CreateClient {
    /// The registration this body describes, validated as the route does
    /// (also what `fuzz/fuzz_targets/json.rs` drives).
    pub fn validate(self) -> Result<NewClient, RegistryError> {
        NewClient::parse(
            &self.name,
            self.grant_types,
            self.scopes,
            self.audience,
            self.allowed_origins,
        )?
        .authenticated_by(
            self.token_endpoint_auth_method.as_deref(),
            &[
                (
                    "tls_client_auth_subject_dn",
                    self.tls_client_auth_subject_dn,
                ),
                ("tls_client_auth_san_dns", self.tls_client_auth_san_dns),
                ("tls_client_auth_san_uri", self.tls_client_auth_san_uri),
                ("tls_client_auth_san_ip", self.tls_client_auth_san_ip),
                ("tls_client_auth_san_email", self.tls_client_auth_san_email),
            ],
            self.tls_client_certificate_bound_access_tokens,
        )
    }
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
    // Authenticate before judging the body, so anonymous callers learn
    // nothing from validation messages.
    let tenant = tenant_in_path(&path)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    let body = body.into_inner();
    let method = body.token_endpoint_auth_method.clone();
    let new = body.validate()?;
    let (record, secret) = state
        .registry
        .create_client(&tenant, new, &actor.name())
        .await?;
    let mut document = client_document(&record, method.as_deref());
    if let (Some(secret), Some(members)) = (&secret, document.as_object_mut()) {
        members.insert("client_secret".into(), secret.as_str().into());
    }
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(document))
}

/// A client as the admin API shows it (never a secret). `method` is the
/// secret method it registered with, when known (the store keeps only
/// that it has a secret; `client_secret_basic` otherwise).
fn client_document(record: &ClientRecord, method: Option<&str>) -> serde_json::Value {
    let mut document = serde_json::json!({
        "client_id": record.id,
        "name": record.name,
        "grant_types": record.grant_types,
        "scopes": record.scopes,
        "audience": record.audience,
        "allowed_origins": record.allowed_origins,
        "created_at": clock::rfc3339(record.created_at),
        "tls_client_certificate_bound_access_tokens": record.certificate_bound,
        "disabled": record.disabled_at.is_some(),
    });
    let method = match (&record.tls_client_auth, record.public) {
        (Some(_), _) => "tls_client_auth",
        (None, true) => "none",
        (None, false) => method.unwrap_or("client_secret_basic"),
    };
    if let Some(members) = document.as_object_mut() {
        members.insert("token_endpoint_auth_method".into(), method.into());
        if let Some(tls) = &record.tls_client_auth {
            members.insert(tls.parameter.clone(), tls.value.clone().into());
        }
    }
    document
}

/// `GET /admin/v1/tenants/{T}/clients/{id}`: the client's registration,
/// disabled clients included, without any secret. **Permissions:**
/// platform admin, or a tenant admin of `T`.
pub async fn get_client(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    authorize_tenant(&state, &caller, &tenant).await?;
    let record = state.registry.client(&tenant, &id).await?;
    Ok(HttpResponse::Ok().json(client_document(&record, None)))
}

/// `POST /admin/v1/tenants/{T}/subjects/{subject}/revoke`: every access
/// token of the subject issued before the call is refused, its refresh
/// families revoked and its sessions closed. **Permissions:** platform
/// admin, or a tenant admin of `T`.
pub async fn post_subject_revoke(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, subject) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    state
        .registry
        .revoke_subject(&tenant, &subject, &actor.name())
        .await?;
    Ok(HttpResponse::NoContent().finish())
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
    let rotated = state
        .registry
        .rotate_secret(&tenant, &id, &actor.name())
        .await?;
    let until = rotated.previous_expires_at;
    let secret = rotated.secret;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "client_id": id,
            "client_secret": secret.as_str(),
            "previous_secret_expires_at": clock::rfc3339(until),
        })))
}

/// Disables a client or a user (`RegistryService::disable`).
async fn disable(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    what: Principal,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let tenant = tenant_in_path(&tenant)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    state
        .registry
        .disable(&tenant, what, &id, &actor.name())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /admin/v1/tenants/{T}/clients/{id}`: disables the client
/// everywhere; its refresh tokens die and its access tokens are refused.
/// **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn delete_client(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    disable(caller, state, path, Principal::Client).await
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

impl CreateUser {
    /// The user this body describes, validated as the route does.
    pub fn validate(self) -> Result<NewUser, RegistryError> {
        NewUser::parse(&self.username, Zeroizing::new(self.password), self.roles)
    }
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("username", &self.username)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
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
    let tenant = tenant_in_path(&path)?;
    let actor = authorize_tenant(&state, &caller, &tenant).await?;
    let new = body.into_inner().validate()?;
    let record = state
        .registry
        .create_user(&tenant, new, &actor.name())
        .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": record.id,
        "username": record.username,
        "roles": record.roles,
        "created_at": clock::rfc3339(record.created_at),
    })))
}

/// `DELETE /admin/v1/tenants/{T}/users/{id}`: disables the user; its
/// refresh-token families are revoked, its access tokens refused and its
/// sessions closed. **Permissions:** platform admin, or a tenant admin of `T`.
pub async fn delete_user(
    caller: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    disable(caller, state, path, Principal::User).await
}
