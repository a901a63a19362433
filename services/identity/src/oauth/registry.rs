//! Registration of clients and users, shared by the admin API and the
//! `bootstrap` command.

use std::collections::BTreeSet;

use keysilo_store::{ClientRecord, NewAuditEvent, Store, StoreError, TlsClientAuth, UserRecord};
use keysilo_tls::CertificateMatch;
use keysilo_types::TenantId;
use zeroize::Zeroizing;

use super::credentials::{SecretHasher, new_client_id, new_secret};
use super::grants::GRANT_TYPES;
use super::passwords::{PasswordError, Passwords};
use super::scope::{self, ADMIN};
use crate::clock;
use crate::error::ApiError;

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

pub(crate) fn display_text(value: &str, what: &str) -> Result<String, ApiError> {
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

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuthentication {
    /// With a secret (`client_secret_basic` or `client_secret_post`).
    Secret,
    /// With its TLS client certificate (RFC 8705 `tls_client_auth`).
    Certificate(CertificateMatch),
}

/// A validated client registration.
#[derive(Debug, Clone)]
pub struct NewClient {
    name: String,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    audience: Vec<String>,
    allowed_origins: Vec<String>,
    authentication: ClientAuthentication,
    certificate_bound: bool,
}

impl NewClient {
    /// Validates a registration: known grant types, valid scope tokens (and
    /// never `admin` for a `client_credentials` client), bounded audience,
    /// and origins normalised as browsers send them.
    pub fn parse(
        name: &str,
        grant_types: Vec<String>,
        scopes: Vec<String>,
        audience: Vec<String>,
        allowed_origins: Vec<String>,
    ) -> Result<Self, ApiError> {
        let name = display_text(name, "name")?;
        let grant_types = unique(grant_types);
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
        let scopes = unique(scopes);
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
        let audience = unique(audience);
        if audience.len() > 20 || audience.iter().any(|a| !super::grants::plain(a, 200)) {
            return Err(bad("audience must be at most 20 non-empty values"));
        }
        if allowed_origins.len() > 50 {
            return Err(bad("at most 50 allowed_origins"));
        }
        let allowed_origins = unique(
            allowed_origins
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
            authentication: ClientAuthentication::Secret,
            certificate_bound: false,
        })
    }

    /// The certificate a `tls_client_auth` registration names.
    pub fn certificate(&self) -> Option<&CertificateMatch> {
        match &self.authentication {
            ClientAuthentication::Certificate(certificate) => Some(certificate),
            ClientAuthentication::Secret => None,
        }
    }

    /// Applies RFC 7591/8705 registration metadata: `method` is the
    /// `token_endpoint_auth_method` (a secret when omitted), `certificate`
    /// the `tls_client_auth_*` parameters given (exactly one for
    /// `tls_client_auth`, none otherwise), and `bound` is
    /// `tls_client_certificate_bound_access_tokens` (by default true for
    /// `tls_client_auth` clients only).
    pub fn authenticated_by(
        mut self,
        method: Option<&str>,
        certificate: &[(&str, Option<String>)],
        bound: Option<bool>,
    ) -> Result<Self, ApiError> {
        let given: Vec<(&str, &String)> = certificate
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| (*name, v)))
            .collect();
        self.authentication = match method.unwrap_or("client_secret_basic") {
            "client_secret_basic" | "client_secret_post" => {
                if let Some((name, _)) = given.first() {
                    return Err(bad(format!(
                        "{name} is for token_endpoint_auth_method tls_client_auth"
                    )));
                }
                ClientAuthentication::Secret
            }
            "tls_client_auth" => match given.as_slice() {
                [(name, value)] => ClientAuthentication::Certificate(
                    CertificateMatch::parse(name, value)
                        .map_err(|err| bad(format!("{name}: {err}")))?,
                ),
                _ => {
                    return Err(bad(format!(
                        "tls_client_auth needs exactly one of {}",
                        CertificateMatch::PARAMETERS.join(", ")
                    )));
                }
            },
            other => {
                return Err(bad(format!(
                    "token_endpoint_auth_method `{other}` is not supported; use \
                     client_secret_basic, client_secret_post or tls_client_auth"
                )));
            }
        };
        self.certificate_bound = bound.unwrap_or(matches!(
            self.authentication,
            ClientAuthentication::Certificate(_)
        ));
        Ok(self)
    }
}

fn is_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | ':')
        })
}

/// A validated user.
pub struct NewUser {
    username: String,
    password: Zeroizing<String>,
    roles: Vec<String>,
}

impl NewUser {
    /// Validates a user: a printable username, a password of 8 to 1024
    /// characters, and role names.
    pub fn parse(
        username: &str,
        password: Zeroizing<String>,
        roles: Vec<String>,
    ) -> Result<Self, ApiError> {
        let username = display_text(username, "username")?;
        if !(8..=1024).contains(&password.chars().count()) {
            return Err(bad("password must be 8 to 1024 characters"));
        }
        let roles = unique(roles);
        if roles.len() > 50 || roles.iter().any(|r| !is_role(r)) {
            return Err(bad("roles must be at most 50 names of [a-z0-9-_.:]"));
        }
        Ok(Self {
            username,
            password,
            roles,
        })
    }
}

fn internal(err: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unexpected(err.into())
}

/// Creates clients and users.
#[derive(Debug, Clone, Copy)]
pub struct Registry<'a> {
    /// The database.
    pub store: &'a Store,
    /// How client secrets are stored.
    pub secrets: &'a SecretHasher,
    /// How passwords are hashed.
    pub passwords: &'a Passwords,
}

impl Registry<'_> {
    /// Registers a client; returns it with its secret, shown this once
    /// (none for a client that authenticates with a certificate).
    pub async fn create_client(
        &self,
        tenant: &TenantId,
        new: NewClient,
        actor: &str,
    ) -> Result<(ClientRecord, Option<Zeroizing<String>>), ApiError> {
        let id = new_client_id().map_err(internal)?;
        let (secret, tls_client_auth) = match &new.authentication {
            ClientAuthentication::Secret => {
                (Some(Zeroizing::new(new_secret().map_err(internal)?)), None)
            }
            ClientAuthentication::Certificate(certificate) => (
                None,
                Some(TlsClientAuth {
                    parameter: certificate.parameter().to_owned(),
                    value: certificate.value(),
                }),
            ),
        };
        let secret_hash = secret
            .as_ref()
            .map(|s| self.secrets.hash(s))
            .transpose()
            .map_err(internal)?;
        let record = ClientRecord {
            tenant_id: tenant.clone(),
            id: id.clone(),
            name: new.name,
            secret_hash,
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            grant_types: new.grant_types,
            scopes: new.scopes,
            audience: new.audience,
            allowed_origins: new.allowed_origins,
            created_at: clock::now(),
            disabled_at: None,
            tls_client_auth,
            certificate_bound: new.certificate_bound,
        };
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.clone()),
            kind: "client.created",
            actor: actor.to_owned(),
            details: serde_json::json!({ "client_id": id, "grant_types": record.grant_types }),
        };
        self.store.insert_client(&record, &audit).await?;
        Ok((record, secret))
    }

    /// Creates a user; the password is hashed with argon2id.
    pub async fn create_user(
        &self,
        tenant: &TenantId,
        new: NewUser,
        actor: &str,
    ) -> Result<UserRecord, ApiError> {
        let hash = self
            .passwords
            .hash(new.password)
            .await
            .map_err(|err| match err {
                PasswordError::Busy => ApiError::Unavailable(err.into()),
                other => internal(other),
            })?;
        let id = uuid::Uuid::new_v4().to_string();
        let record = UserRecord {
            tenant_id: tenant.clone(),
            id: id.clone(),
            username: new.username,
            password_hash: hash,
            roles: new.roles,
            created_at: clock::now(),
            disabled_at: None,
        };
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.clone()),
            kind: "user.created",
            actor: actor.to_owned(),
            details: serde_json::json!({ "user_id": id, "roles": record.roles }),
        };
        match self.store.insert_user(&record, &audit).await {
            Err(StoreError::Conflict) => Err(ApiError::Conflict(
                "a user with this username exists".into(),
            )),
            other => other.map(|()| record).map_err(ApiError::from),
        }
    }
}
