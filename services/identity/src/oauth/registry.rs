//! Registration of clients and users: create, rotate a secret, disable.
//! [`RegistryService`] is shared by the admin API and the `bootstrap`
//! command; it drops cached clients and announces each change itself.

use std::collections::BTreeSet;
use std::sync::Arc;

use keysilo_coord::Event;
use keysilo_store::{ClientRecord, NewAuditEvent, Store, StoreError, TlsClientAuth, UserRecord};
use keysilo_tls::CertificateMatch;
use keysilo_types::TenantId;
use zeroize::Zeroizing;

use super::clients::ClientCache;
use super::credentials::{SecretHasher, new_client_id, new_secret};
use super::passwords::{PasswordError, Passwords};
use super::request::{GrantType, is_subject, plain};
use super::scope::{self, ADMIN};
use crate::clock;
use crate::events::Events;
use crate::keys::{KeyCache, KeyError};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registration is malformed; the message is safe to show.
    #[error("{0}")]
    Invalid(String),
    /// No such tenant, client or user.
    #[error("not found")]
    NotFound,
    /// The username is taken within the tenant.
    #[error("a user with this username exists")]
    UsernameTaken,
    /// The password pool is saturated; retry later.
    #[error("the password pool is busy")]
    Busy(#[source] PasswordError),
    /// Looking the tenant up failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// PostgreSQL failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Randomness or hashing failed (not expected).
    #[error("unexpected failure")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn internal(err: impl std::error::Error + Send + Sync + 'static) -> RegistryError {
    RegistryError::Internal(Box::new(err))
}

fn bad(message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(message.into())
}

/// A display text (a name): trimmed, 1 to 200 characters, none of them
/// control characters; the error is the message to show.
pub(crate) fn display_text(value: &str, what: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 200 || value.chars().any(char::is_control) {
        return Err(format!("{what} must be 1 to 200 printable characters"));
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
/// ports dropped, lower case (`keysilo_tokens::gate::normalize_origin`,
/// the rule the edge compares with).
fn origin(raw: &str) -> Result<String, RegistryError> {
    keysilo_tokens::gate::normalize_origin(raw)
        .ok_or_else(|| bad(format!("`{raw}` is not an origin (scheme://host[:port])")))
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuthentication {
    /// With a secret (`client_secret_basic` or `client_secret_post`).
    Secret,
    /// With its TLS client certificate (RFC 8705 `tls_client_auth`).
    Certificate(CertificateMatch),
    /// Not at all: a public client (`none`, secure mode), identified by
    /// its `client_id` only.
    Public,
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
    ) -> Result<Self, RegistryError> {
        let name = display_text(name, "name").map_err(RegistryError::Invalid)?;
        let grant_types = unique(grant_types);
        if grant_types.is_empty() || grant_types.iter().any(|g| GrantType::parse(g).is_none()) {
            return Err(bad(format!(
                "grant_types must be a non-empty subset of {}",
                GrantType::names().join(", ")
            )));
        }
        let scopes = unique(scopes);
        if scopes.len() > 100 || scopes.iter().any(|s| !scope::is_scope_token(s)) {
            return Err(bad("scopes must be at most 100 valid scope tokens"));
        }
        if grant_types
            .iter()
            .any(|g| g == GrantType::ClientCredentials.as_str())
            && scopes.iter().any(|s| s == ADMIN)
        {
            return Err(bad(
                "a client_credentials client can never hold the admin scope",
            ));
        }
        let audience = unique(audience);
        if audience.len() > 20 || audience.iter().any(|a| !plain(a, 200)) {
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
            ClientAuthentication::Secret | ClientAuthentication::Public => None,
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
    ) -> Result<Self, RegistryError> {
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
            "none" => {
                if let Some((name, _)) = given.first() {
                    return Err(bad(format!(
                        "{name} is for token_endpoint_auth_method tls_client_auth"
                    )));
                }
                if bound == Some(true) {
                    return Err(bad(
                        "a public client has no certificate to bind its tokens to",
                    ));
                }
                self.check_public()?;
                ClientAuthentication::Public
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
                     client_secret_basic, client_secret_post, tls_client_auth or none"
                )));
            }
        };
        self.certificate_bound = bound.unwrap_or(matches!(
            self.authentication,
            ClientAuthentication::Certificate(_)
        ));
        if !matches!(self.authentication, ClientAuthentication::Public)
            && self
                .grant_types
                .iter()
                .any(|g| g == GrantType::TokenExchange.as_str())
        {
            // Auth tokens are bound to the public client that redeems
            // them: a confidential client could never use this grant.
            return Err(bad(
                "token-exchange redeems auth tokens, which are bound to public clients: \
                 register it with token_endpoint_auth_method none",
            ));
        }
        Ok(self)
    }

    /// The rules of a public client: at least one origin, only the grant
    /// types a browser can use, never `admin`.
    fn check_public(&self) -> Result<(), RegistryError> {
        if self.allowed_origins.is_empty() {
            return Err(bad(
                "a public client must register at least one allowed_origins entry",
            ));
        }
        let allowed = GrantType::PUBLIC.map(GrantType::as_str);
        if let Some(other) = self
            .grant_types
            .iter()
            .find(|g| !allowed.contains(&g.as_str()))
        {
            return Err(bad(format!(
                "a public client may hold only the grant types {}; not {other}",
                allowed.join(" and ")
            )));
        }
        if self.scopes.iter().any(|s| s == ADMIN) {
            return Err(bad("a public client can never hold the admin scope"));
        }
        Ok(())
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
    ) -> Result<Self, RegistryError> {
        let username = display_text(username, "username").map_err(RegistryError::Invalid)?;
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

/// A client's new secret and until when the previous one still works.
pub struct RotatedSecret {
    /// The new secret, shown this once.
    pub secret: Zeroizing<String>,
    /// When the previous secret stops working.
    pub previous_expires_at: std::time::SystemTime,
}

/// What [`RegistryService::disable`] disables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// An OAuth2 client.
    Client,
    /// A user.
    User,
}

/// Creates, rotates and disables clients and users. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryService {
    store: Store,
    secrets: Arc<SecretHasher>,
    passwords: Passwords,
    cache: Arc<KeyCache>,
    clients: Arc<ClientCache>,
    events: Events,
    /// How long a replaced client secret keeps working.
    secret_overlap: std::time::Duration,
}

impl RegistryService {
    /// Puts the pieces together.
    pub fn new(
        store: Store,
        secrets: Arc<SecretHasher>,
        passwords: Passwords,
        cache: Arc<KeyCache>,
        clients: Arc<ClientCache>,
        events: Events,
        secret_overlap: std::time::Duration,
    ) -> Self {
        Self {
            store,
            secrets,
            passwords,
            cache,
            clients,
            events,
            secret_overlap,
        }
    }

    /// Refuses a tenant that does not exist or is disabled.
    async fn live_tenant(&self, id: &TenantId) -> Result<(), RegistryError> {
        self.cache.get(id).await?.ok_or(RegistryError::NotFound)?;
        Ok(())
    }

    /// A client of the tenant as registered, disabled or not.
    pub async fn client(&self, tenant: &TenantId, id: &str) -> Result<ClientRecord, RegistryError> {
        if !plain(id, 128) {
            return Err(RegistryError::NotFound);
        }
        self.store
            .oauth_client(tenant, id)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// Registers a client of an enabled tenant; returns it with its secret,
    /// shown this once (none for a client that authenticates with a
    /// certificate).
    pub async fn create_client(
        &self,
        tenant: &TenantId,
        new: NewClient,
        actor: &str,
    ) -> Result<(ClientRecord, Option<Zeroizing<String>>), RegistryError> {
        self.live_tenant(tenant).await?;
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
            ClientAuthentication::Public => (None, None),
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
            public: matches!(new.authentication, ClientAuthentication::Public),
        };
        let event = Event::ClientCreated {
            tenant: tenant.clone(),
            client: id.clone(),
        };
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({ "client_id": id, "grant_types": record.grant_types }),
        };
        self.store.insert_client(&record, &audit).await?;
        // Replicas may remember that the id did not exist, and a public
        // client's origins change the tenant's CORS answers.
        self.clients.invalidate(tenant, &record.id);
        self.events.publish(event).await;
        Ok((record, secret))
    }

    /// Gives a client a new secret; the previous one keeps working for the
    /// configured overlap. A certificate client has no secret to rotate.
    pub async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: &str,
        actor: &str,
    ) -> Result<RotatedSecret, RegistryError> {
        self.live_tenant(tenant).await?;
        if self
            .clients
            .get(tenant, id)
            .await?
            .is_some_and(|client| client.tls_client_auth.is_some() || client.public)
        {
            return Err(bad(
                "this client authenticates without a secret (a certificate, or none: a public client)",
            ));
        }
        let secret = Zeroizing::new(new_secret().map_err(internal)?);
        let now = clock::now();
        let until = now.checked_add(self.secret_overlap).unwrap_or(now);
        let event = Event::ClientSecretRotated {
            tenant: tenant.clone(),
            client: id.to_owned(),
        };
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({ "client_id": id, "previous_secret_expires_at": clock::rfc3339(until) }),
        };
        let hash = self.secrets.hash(&secret).map_err(internal)?;
        if !self
            .store
            .rotate_client_secret(tenant, id, &hash, until, &audit, now)
            .await?
        {
            return Err(RegistryError::NotFound);
        }
        self.clients.invalidate(tenant, id);
        self.events.publish(event).await;
        Ok(RotatedSecret {
            secret,
            previous_expires_at: until,
        })
    }

    /// Disables a client or a user: audited, its refresh families revoked
    /// (in the store), this replica's cache dropped, and an event for the
    /// other replicas and the edges, which refuse its tokens and close its
    /// sessions.
    pub async fn disable(
        &self,
        tenant: &TenantId,
        what: Principal,
        id: &str,
        actor: &str,
    ) -> Result<(), RegistryError> {
        self.live_tenant(tenant).await?;
        let (event, field) = match what {
            Principal::Client => (
                Event::ClientDisabled {
                    tenant: tenant.clone(),
                    client: id.to_owned(),
                },
                "client_id",
            ),
            Principal::User => (
                Event::UserDisabled {
                    tenant: tenant.clone(),
                    user: id.to_owned(),
                },
                "user_id",
            ),
        };
        let mut details = serde_json::Map::new();
        details.insert(field.into(), id.into());
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: details.into(),
        };
        let now = clock::now();
        let found = match what {
            Principal::Client => self.store.disable_client(tenant, id, &audit, now).await?,
            Principal::User => self.store.disable_user(tenant, id, &audit, now).await?,
        };
        if !found {
            return Err(RegistryError::NotFound);
        }
        if what == Principal::Client {
            self.clients.invalidate(tenant, id);
        }
        self.events.publish(event).await;
        Ok(())
    }

    /// Revokes a subject (a user id or a secure-mode subject): its access
    /// tokens issued until now are refused by introspection and the edges,
    /// whose sessions of it close; its refresh-token families are revoked.
    ///
    /// Tokens carry `iat` in whole seconds, so the cutoff is this second,
    /// and the call returns only once the next second has begun: a token
    /// issued after it returns is never caught by it.
    pub async fn revoke_subject(
        &self,
        tenant: &TenantId,
        subject: &str,
        actor: &str,
    ) -> Result<(), RegistryError> {
        self.live_tenant(tenant).await?;
        if !is_subject(subject) {
            return Err(RegistryError::NotFound);
        }
        let issued_before = clock::unix_seconds();
        // No token issued before the call is accepted after this: none
        // lives longer than the longest lifetime, plus any verifier's skew.
        let keep_until = issued_before
            + u64::try_from(*crate::tenants::TOKEN_TTL_RANGE.end()).unwrap_or(86_400)
            + keysilo_config::MAX_CLOCK_SKEW_SECONDS;
        let event = Event::SubjectRevoked {
            tenant: tenant.clone(),
            subject: subject.to_owned(),
            issued_before,
            keep_until,
        };
        let audit = NewAuditEvent {
            tenant_id: Some(tenant.clone()),
            kind: event.kind(),
            actor: actor.to_owned(),
            details: serde_json::json!({ "subject": subject }),
        };
        self.store
            .revoke_subject(
                tenant,
                subject,
                clock::from_unix(issued_before),
                clock::from_unix(keep_until),
                &audit,
            )
            .await?;
        self.events.publish(event).await;
        let next_second = clock::from_unix(issued_before + 1);
        if let Ok(wait) = next_second.duration_since(clock::now()) {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Creates a user of an enabled tenant; the password is hashed with
    /// argon2id.
    pub async fn create_user(
        &self,
        tenant: &TenantId,
        new: NewUser,
        actor: &str,
    ) -> Result<UserRecord, RegistryError> {
        self.live_tenant(tenant).await?;
        let hash = self
            .passwords
            .hash(tenant.as_str(), new.password)
            .await
            .map_err(|err| match err {
                PasswordError::Busy => RegistryError::Busy(err),
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
            Err(StoreError::Conflict) => Err(RegistryError::UsernameTaken),
            other => other.map(|()| record).map_err(RegistryError::from),
        }
    }
}
