//! Clients, users, refresh-token families and revoked access tokens.
//!
//! Secrets never reach this module: client secrets and refresh tokens come
//! as hashes, passwords as argon2id PHC strings.

use std::time::SystemTime;

use keysilo_types::TenantId;
use tokio_postgres::Row;

use crate::keys::{NewAuditEvent, insert_audit};
use crate::{Store, StoreError};

/// An OAuth2 client as stored.
#[derive(Clone)]
pub struct ClientRecord {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The public client id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Keyed hash of the current secret; `None` for a client that
    /// authenticates with a certificate.
    pub secret_hash: Option<Vec<u8>>,
    /// Keyed hash of the secret replaced last, while it still works.
    pub previous_secret_hash: Option<Vec<u8>>,
    /// Until when the previous secret works.
    pub previous_secret_expires_at: Option<SystemTime>,
    /// Grant types it may use.
    pub grant_types: Vec<String>,
    /// Scopes it may request.
    pub scopes: Vec<String>,
    /// `aud` of its tokens (the default audience when empty).
    pub audience: Vec<String>,
    /// Browser origins its tokens may be used from.
    pub allowed_origins: Vec<String>,
    /// When it was registered.
    pub created_at: SystemTime,
    /// When it was disabled, if it was.
    pub disabled_at: Option<SystemTime>,
    /// The certificate a `tls_client_auth` client authenticates with.
    pub tls_client_auth: Option<TlsClientAuth>,
    /// Whether its access tokens are bound to its client certificate.
    pub certificate_bound: bool,
    /// A public client (`token_endpoint_auth_method` `none`): it has
    /// neither a secret nor a certificate.
    pub public: bool,
}

/// How a `tls_client_auth` client's certificate is recognised (RFC 8705
/// §2.1.2), as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientAuth {
    /// The metadata parameter, e.g. `tls_client_auth_subject_dn`.
    pub parameter: String,
    /// Its value in canonical form.
    pub value: String,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("tenant_id", &self.tenant_id)
            .field("id", &self.id)
            .field("grant_types", &self.grant_types)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

/// A user as stored.
#[derive(Clone)]
pub struct UserRecord {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The user id (`sub` of its tokens).
    pub id: String,
    /// Login name, unique in the tenant.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Roles, e.g. `tenant-admin`.
    pub roles: Vec<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was disabled, if it was.
    pub disabled_at: Option<SystemTime>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("tenant_id", &self.tenant_id)
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A refresh token and its family, as read for redemption.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    /// The family (one login).
    pub family_id: String,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The client it was issued to.
    pub client_id: String,
    /// Whom it was issued for.
    pub owner: FamilyOwner,
    /// The scope it carries.
    pub scope: String,
    /// When the token was issued.
    pub issued_at: SystemTime,
    /// When the token expires if unused.
    pub idle_expires_at: SystemTime,
    /// When the family expires, whatever happens.
    pub family_expires_at: SystemTime,
    /// When the token was redeemed, if it was.
    pub spent_at: Option<SystemTime>,
    /// When a redemption within the grace replaced it, if one did.
    pub superseded_at: Option<SystemTime>,
    /// When the family was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
}

/// Whom a refresh-token family was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyOwner {
    /// A user of the tenant (password grant).
    User(String),
    /// A subject a tenant's backend vouched for (secure mode).
    Subject {
        /// The tenant's own id for its user (`sub`).
        subject: String,
        /// The client that minted the auth token (`act.sub`).
        actor: String,
    },
}

impl FamilyOwner {
    /// The `sub` of the family's tokens.
    pub fn subject(&self) -> &str {
        match self {
            Self::User(id) => id,
            Self::Subject { subject, .. } => subject,
        }
    }

    /// The user id, for a user's family.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::User(id) => Some(id),
            Self::Subject { .. } => None,
        }
    }

    /// The minting client, for a secure-mode family.
    pub fn actor(&self) -> Option<&str> {
        match self {
            Self::User(_) => None,
            Self::Subject { actor, .. } => Some(actor),
        }
    }

    fn from_columns(
        user: Option<String>,
        subject: Option<String>,
        actor: Option<String>,
    ) -> Result<Self, StoreError> {
        match (user, subject, actor) {
            (Some(user), None, None) => Ok(Self::User(user)),
            (None, Some(subject), Some(actor)) => Ok(Self::Subject { subject, actor }),
            _ => Err(StoreError::Corrupt("refresh family owner".into())),
        }
    }
}

/// An auth token to store (secure mode).
#[derive(Debug, Clone)]
pub struct NewAuthToken {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The confidential client that minted it.
    pub client_id: String,
    /// The public client that may redeem it.
    pub public_client_id: String,
    /// The tenant's id for the user it signs in.
    pub subject: String,
    /// The scope it grants.
    pub scope: String,
    /// When it was minted.
    pub created_at: SystemTime,
    /// When it expires unredeemed.
    pub expires_at: SystemTime,
}

/// A redeemed auth token: what the access token is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTokenRecord {
    /// The client that minted it.
    pub client_id: String,
    /// The subject it signs in.
    pub subject: String,
    /// The scope it grants.
    pub scope: String,
}

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// The scope it carries.
    pub scope: String,
    /// When it expires if unused.
    pub idle_expires_at: SystemTime,
    /// The access token issued with it: its `jti`, and its `exp`. Revoking
    /// the family revokes it too.
    pub access_token: (String, SystemTime),
}

/// An access token revoked because its refresh-token family was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedAccessToken {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The client it was issued to.
    pub client_id: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

/// Revokes (in `tx`) the access tokens issued from `family` that some
/// verifier may still accept, keeping each until its `exp` plus the
/// largest clock skew; returns them, for the edges to learn of.
async fn revoke_family_access_tokens(
    tx: &tokio_postgres::Transaction<'_>,
    family: &str,
    now: SystemTime,
) -> Result<Vec<RevokedAccessToken>, StoreError> {
    // The skew is at most an hour: exact in a float.
    let skew = keysilo_config::MAX_CLOCK_SKEW_SECONDS as f64;
    let rows = tx
        .query(
            "WITH issued AS ( \
               SELECT f.tenant_id, f.client_id, a.jti, a.expires_at \
               FROM refresh_family_access_tokens a JOIN refresh_families f ON f.id = a.family_id \
               WHERE a.family_id = $1 AND a.expires_at + $3::float8 * interval '1 second' > $2), \
             revoked AS ( \
               INSERT INTO revoked_access_tokens (tenant_id, jti, expires_at) \
               SELECT tenant_id, jti, expires_at + $3::float8 * interval '1 second' FROM issued \
               ON CONFLICT DO NOTHING) \
             SELECT tenant_id, client_id, jti, expires_at FROM issued",
            &[&family, &now, &skew],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(RevokedAccessToken {
                tenant_id: tenant(row, 0)?,
                client_id: row.try_get(1)?,
                jti: row.try_get(2)?,
                expires_at: row.try_get(3)?,
            })
        })
        .collect()
}

/// What redeeming a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The token was spent and its successor stored.
    Rotated,
    /// The token was spent within the grace and its successor unused: a
    /// new successor replaced that one.
    Replayed,
    /// The token had been spent already: its whole family is now revoked,
    /// with the access tokens issued from it.
    ReuseDetected(Vec<RevokedAccessToken>),
    /// The family was revoked or expired, or the token idle too long.
    Dead,
}

/// Who can be disabled. The names are constants, never caller input, so
/// formatting them into SQL is safe.
#[derive(Debug, Clone, Copy)]
enum Principal {
    Client,
    User,
}

impl Principal {
    /// The table and the `refresh_families` column that point at it.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Client => ("clients", "client_id"),
            Self::User => ("users", "user_id"),
        }
    }
}

const CLIENT_COLUMNS: &str = "tenant_id, id, name, secret_hash, previous_secret_hash, \
     previous_secret_expires_at, grant_types, scopes, audience, allowed_origins, created_at, \
     disabled_at, tls_match_kind, tls_match_value, certificate_bound, public";
const USER_COLUMNS: &str = "tenant_id, id, username, password_hash, roles, created_at, disabled_at";

fn tenant(row: &Row, index: usize) -> Result<TenantId, StoreError> {
    let raw: String = row.try_get(index)?;
    TenantId::parse(&raw).map_err(|_| StoreError::Corrupt("tenant id".into()))
}

fn client_from_row(row: &Row) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        tenant_id: tenant(row, 0)?,
        id: row.try_get(1)?,
        name: row.try_get(2)?,
        secret_hash: row.try_get(3)?,
        previous_secret_hash: row.try_get(4)?,
        previous_secret_expires_at: row.try_get(5)?,
        grant_types: row.try_get(6)?,
        scopes: row.try_get(7)?,
        audience: row.try_get(8)?,
        allowed_origins: row.try_get(9)?,
        created_at: row.try_get(10)?,
        disabled_at: row.try_get(11)?,
        tls_client_auth: match (row.try_get(12)?, row.try_get(13)?) {
            (Some(parameter), Some(value)) => Some(TlsClientAuth { parameter, value }),
            _ => None,
        },
        certificate_bound: row.try_get(14)?,
        public: row.try_get(15)?,
    })
}

fn user_from_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        tenant_id: tenant(row, 0)?,
        id: row.try_get(1)?,
        username: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        roles: row.try_get(4)?,
        created_at: row.try_get(5)?,
        disabled_at: row.try_get(6)?,
    })
}

async fn revoke_families(
    tx: &tokio_postgres::Transaction<'_>,
    condition: &str,
    tenant: &TenantId,
    id: &str,
    now: SystemTime,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            &format!(
                "UPDATE refresh_families SET revoked_at = $3 \
                 WHERE tenant_id = $1 AND {condition} = $2 AND revoked_at IS NULL"
            ),
            &[&tenant.as_str(), &id, &now],
        )
        .await?)
}

impl Store {
    /// Registers a client.
    pub async fn insert_client(
        &self,
        client: &ClientRecord,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        tx.execute(
            "INSERT INTO clients (tenant_id, id, name, secret_hash, grant_types, scopes, \
             audience, allowed_origins, created_at, tls_match_kind, tls_match_value, \
             certificate_bound, public) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &client.tenant_id.as_str(),
                &client.id,
                &client.name,
                &client.secret_hash,
                &client.grant_types,
                &client.scopes,
                &client.audience,
                &client.allowed_origins,
                &client.created_at,
                &client
                    .tls_client_auth
                    .as_ref()
                    .map(|t| t.parameter.as_str()),
                &client.tls_client_auth.as_ref().map(|t| t.value.as_str()),
                &client.certificate_bound,
                &client.public,
            ],
        )
        .await?;
        insert_audit(&tx, audit, client.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records `version` as the current master key version (the first
    /// record of a version wins) and returns since when it has been.
    pub async fn master_key_in_service(&self, version: u32) -> Result<SystemTime, StoreError> {
        let version = i32::try_from(version).map_err(|_| StoreError::InvalidInput)?;
        let conn = self.client().await?;
        let row = conn
            .query_one(
                "WITH inserted AS (INSERT INTO master_key_versions (version) VALUES ($1) \
                 ON CONFLICT (version) DO NOTHING RETURNING first_current_at) \
                 SELECT first_current_at FROM inserted UNION ALL \
                 SELECT first_current_at FROM master_key_versions WHERE version = $1 LIMIT 1",
                &[&version],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// A client of the tenant, enabled or not.
    pub async fn oauth_client(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = $1 AND id = $2"
            ))
            .await?;
        let row = conn.query_opt(&statement, &[&tenant.as_str(), &id]).await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Every origin an enabled public client of the tenant registered:
    /// the origins its token and revocation endpoints answer CORS for.
    pub async fn public_client_origins(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(
                "SELECT DISTINCT unnest(allowed_origins) FROM clients \
                 WHERE tenant_id = $1 AND public AND disabled_at IS NULL",
            )
            .await?;
        conn.query(&statement, &[&tenant.as_str()])
            .await?
            .iter()
            .map(|row| row.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Replaces an enabled client's secret; the old one keeps working until
    /// `previous_expires_at`. `false` when there is no such enabled client.
    pub async fn rotate_client_secret(
        &self,
        tenant: &TenantId,
        id: &str,
        new_hash: &[u8],
        previous_expires_at: SystemTime,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE clients SET previous_secret_hash = secret_hash, \
                 previous_secret_expires_at = $4, secret_hash = $3 \
                 WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL \
                 AND tls_match_kind IS NULL",
                &[&tenant.as_str(), &id, &new_hash, &previous_expires_at],
            )
            .await?;
        if changed == 1 {
            insert_audit(&tx, audit, now).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Disables a client and revokes its refresh-token families; `false`
    /// when there is no such client.
    pub async fn disable_client(
        &self,
        tenant: &TenantId,
        id: &str,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.disable(Principal::Client, tenant, id, audit, now)
            .await
    }

    /// Creates a user. [`StoreError::Conflict`] when the username is taken.
    pub async fn insert_user(
        &self,
        user: &UserRecord,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO users (tenant_id, id, username, password_hash, roles, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &user.tenant_id.as_str(),
                    &user.id,
                    &user.username,
                    &user.password_hash,
                    &user.roles,
                    &user.created_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict);
        }
        insert_audit(&tx, audit, user.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A user by login name, enabled or not.
    pub async fn user_by_name(
        &self,
        tenant: &TenantId,
        username: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND username = $2"
            ))
            .await?;
        let row = conn
            .query_opt(&statement, &[&tenant.as_str(), &username])
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// A user by id, enabled or not.
    pub async fn user(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
            ))
            .await?;
        let row = conn.query_opt(&statement, &[&tenant.as_str(), &id]).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Disables a user and revokes its refresh-token families; `false` when
    /// there is no such user.
    pub async fn disable_user(
        &self,
        tenant: &TenantId,
        id: &str,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.disable(Principal::User, tenant, id, audit, now).await
    }

    /// Disables a client or user (idempotent) and revokes its refresh-token
    /// families, auditing only a real change; `false` when it does not exist.
    async fn disable(
        &self,
        principal: Principal,
        tenant: &TenantId,
        id: &str,
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let (table, family_column) = principal.names();
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT disabled_at IS NULL FROM {table} WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
                ),
                &[&tenant.as_str(), &id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let enabled: bool = row.try_get(0)?;
        if enabled {
            tx.execute(
                &format!("UPDATE {table} SET disabled_at = $3 WHERE tenant_id = $1 AND id = $2"),
                &[&tenant.as_str(), &id, &now],
            )
            .await?;
            revoke_families(&tx, family_column, tenant, id, now).await?;
            insert_audit(&tx, audit, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Starts a refresh-token family (a login) with its first token.
    #[allow(clippy::too_many_arguments, reason = "one row of each table")]
    pub async fn start_refresh_family(
        &self,
        family_id: &str,
        tenant: &TenantId,
        client_id: &str,
        owner: &FamilyOwner,
        expires_at: SystemTime,
        first: &NewRefreshToken,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let conn = self.client().await?;
        let (user, subject) = match owner {
            FamilyOwner::User(id) => (Some(id.as_str()), None),
            FamilyOwner::Subject { subject, .. } => (None, Some(subject.as_str())),
        };
        // One statement, so one transaction: the family and its first
        // token exist together or not at all.
        let statement = conn
            .prepare_cached(
                "WITH family AS ( \
                   INSERT INTO refresh_families (id, tenant_id, client_id, user_id, subject, actor, \
                   created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $10, $11, $5, $6) RETURNING id), \
                 issued AS ( \
                   INSERT INTO refresh_family_access_tokens (family_id, jti, expires_at) \
                   SELECT id, $12, $13 FROM family) \
                 INSERT INTO refresh_tokens (token_hash, family_id, scope, issued_at, idle_expires_at) \
                 SELECT $7, id, $8, $5, $9 FROM family",
            )
            .await?;
        conn.execute(
            &statement,
            &[
                &family_id,
                &tenant.as_str(),
                &client_id,
                &user,
                &now,
                &expires_at,
                &first.hash,
                &first.scope,
                &first.idle_expires_at,
                &subject,
                &owner.actor(),
                &first.access_token.0,
                &first.access_token.1,
            ],
        )
        .await?;
        Ok(())
    }

    /// A refresh token of the tenant by hash.
    pub async fn refresh_token(
        &self,
        tenant: &TenantId,
        hash: &[u8],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(
                "SELECT f.id, f.tenant_id, f.client_id, f.user_id, t.scope, t.issued_at, \
                 t.idle_expires_at, f.expires_at, t.spent_at, f.revoked_at, f.subject, f.actor, \
                 t.superseded_at \
                 FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
                 WHERE t.token_hash = $1 AND f.tenant_id = $2",
            )
            .await?;
        let row = conn
            .query_opt(&statement, &[&hash, &tenant.as_str()])
            .await?;
        row.map(|row| {
            Ok(RefreshRecord {
                family_id: row.try_get(0)?,
                tenant_id: tenant_from(&row)?,
                client_id: row.try_get(2)?,
                owner: FamilyOwner::from_columns(
                    row.try_get(3)?,
                    row.try_get(10)?,
                    row.try_get(11)?,
                )?,
                scope: row.try_get(4)?,
                issued_at: row.try_get(5)?,
                idle_expires_at: row.try_get(6)?,
                family_expires_at: row.try_get(7)?,
                spent_at: row.try_get(8)?,
                superseded_at: row.try_get(12)?,
                revoked_at: row.try_get(9)?,
            })
        })
        .transpose()
    }

    /// Spends the token `old_hash` and stores `next` in its family, unless
    /// the token was spent already or the family is dead. A token spent
    /// less than `grace` ago whose successor is still unspent is answered
    /// again: `next` replaces that successor, which is superseded (refused
    /// from now on, without revoking the family). Any other spent token is
    /// reuse: the family is revoked and `reuse_audit` recorded. The row
    /// locks make concurrent redemptions of one token leave exactly one
    /// live successor.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        next: &NewRefreshToken,
        grace: std::time::Duration,
        reuse_audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<Redemption, StoreError> {
        let mut conn = self.client().await?;
        // The common case in one statement (one round trip, atomic on its
        // own): lock the live, unspent token and its family, spend it and
        // insert its successor. A concurrent redemption of the same token
        // waits for the lock and then no longer finds it unspent.
        let rotate = conn
            .prepare_cached(
                "WITH target AS ( \
                   SELECT t.token_hash, t.family_id \
                   FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
                   WHERE t.token_hash = $1 AND t.spent_at IS NULL AND t.superseded_at IS NULL \
                   AND f.revoked_at IS NULL AND f.expires_at > $2 AND t.idle_expires_at > $2 \
                   FOR UPDATE OF t, f), \
                 spent AS ( \
                   UPDATE refresh_tokens t SET spent_at = $2, successor_hash = $3 FROM target \
                   WHERE t.token_hash = target.token_hash RETURNING t.family_id), \
                 issued AS ( \
                   INSERT INTO refresh_family_access_tokens (family_id, jti, expires_at) \
                   SELECT family_id, $6, $7 FROM spent) \
                 INSERT INTO refresh_tokens (token_hash, family_id, scope, issued_at, idle_expires_at) \
                 SELECT $3, family_id, $4, $2, $5 FROM spent RETURNING family_id",
            )
            .await?;
        let rotated = conn
            .query_opt(
                &rotate,
                &[
                    &old_hash,
                    &now,
                    &next.hash,
                    &next.scope,
                    &next.idle_expires_at,
                    &next.access_token.0,
                    &next.access_token.1,
                ],
            )
            .await?;
        if rotated.is_some() {
            return Ok(Redemption::Rotated);
        }
        // Otherwise find out why, under the same locks.
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT f.id, t.spent_at, t.superseded_at IS NOT NULL, \
                 f.revoked_at IS NULL AND f.expires_at > $2, t.successor_hash, \
                 s.spent_at IS NULL AND s.superseded_at IS NULL \
                 FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
                 LEFT JOIN refresh_tokens s ON s.token_hash = t.successor_hash \
                 WHERE t.token_hash = $1 FOR UPDATE OF t, f",
                &[&old_hash, &now],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Redemption::Dead);
        };
        let family: String = row.try_get(0)?;
        let spent_at: Option<SystemTime> = row.try_get(1)?;
        let superseded: bool = row.try_get(2)?;
        let family_live: bool = row.try_get(3)?;
        let successor: Option<Vec<u8>> = row.try_get(4)?;
        let successor_live: Option<bool> = row.try_get(5)?;
        let Some(spent_at) = spent_at.filter(|_| !superseded) else {
            return Ok(Redemption::Dead);
        };
        // No grace means none: `now` was read before this redemption
        // waited for the lock, so it may even precede `spent_at`.
        let within_grace =
            !grace.is_zero() && spent_at.checked_add(grace).is_some_and(|until| until > now);
        if within_grace && family_live && successor_live == Some(true) {
            tx.execute(
                "UPDATE refresh_tokens SET superseded_at = $2 WHERE token_hash = $1",
                &[&successor, &now],
            )
            .await?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, scope, issued_at, idle_expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&next.hash, &family, &next.scope, &now, &next.idle_expires_at],
            )
            .await?;
            tx.execute(
                "UPDATE refresh_tokens SET successor_hash = $2 WHERE token_hash = $1",
                &[&old_hash, &next.hash],
            )
            .await?;
            tx.execute(
                "INSERT INTO refresh_family_access_tokens (family_id, jti, expires_at) \
                 VALUES ($1, $2, $3)",
                &[&family, &next.access_token.0, &next.access_token.1],
            )
            .await?;
            tx.commit().await?;
            return Ok(Redemption::Replayed);
        }
        if !family_live {
            return Ok(Redemption::Dead);
        }
        let revoked = tx
            .execute(
                "UPDATE refresh_families SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&family, &now],
            )
            .await?;
        let mut access_tokens = Vec::new();
        if revoked == 1 {
            insert_audit(&tx, reuse_audit, now).await?;
            access_tokens = revoke_family_access_tokens(&tx, &family, now).await?;
        }
        tx.commit().await?;
        Ok(Redemption::ReuseDetected(access_tokens))
    }

    /// Revokes the family of a spent refresh token that was presented again,
    /// with its access tokens, and records `audit`, if this call revoked
    /// it; returns the access tokens it revoked.
    pub async fn revoke_refresh_family_for_reuse(
        &self,
        hash: &[u8],
        audit: &NewAuditEvent,
        now: SystemTime,
    ) -> Result<Vec<RevokedAccessToken>, StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        let revoked = tx
            .query_opt(
                "UPDATE refresh_families f SET revoked_at = $2 FROM refresh_tokens t \
                 WHERE t.family_id = f.id AND t.token_hash = $1 AND f.revoked_at IS NULL \
                 RETURNING f.id",
                &[&hash, &now],
            )
            .await?;
        let mut access_tokens = Vec::new();
        if let Some(row) = revoked {
            let family: String = row.try_get(0)?;
            insert_audit(&tx, audit, now).await?;
            access_tokens = revoke_family_access_tokens(&tx, &family, now).await?;
        }
        tx.commit().await?;
        Ok(access_tokens)
    }

    /// Revokes the family of a refresh token if it belongs to `client_id`
    /// (RFC 7009), with the access tokens issued from it; returns those
    /// (none when there is no such token of that client).
    pub async fn revoke_refresh_family(
        &self,
        tenant: &TenantId,
        client_id: &str,
        hash: &[u8],
        now: SystemTime,
    ) -> Result<Vec<RevokedAccessToken>, StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        let family = tx
            .query_opt(
                "UPDATE refresh_families f SET revoked_at = coalesce(f.revoked_at, $4) \
                 FROM refresh_tokens t WHERE t.family_id = f.id AND t.token_hash = $3 \
                 AND f.tenant_id = $1 AND f.client_id = $2 RETURNING f.id",
                &[&tenant.as_str(), &client_id, &hash, &now],
            )
            .await?;
        let mut access_tokens = Vec::new();
        if let Some(row) = family {
            let family: String = row.try_get(0)?;
            access_tokens = revoke_family_access_tokens(&tx, &family, now).await?;
        }
        tx.commit().await?;
        Ok(access_tokens)
    }

    /// Records a revoked access token until it expires.
    pub async fn revoke_access_token(
        &self,
        tenant: &TenantId,
        jti: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let conn = self.client().await?;
        conn.execute(
            "INSERT INTO revoked_access_tokens (tenant_id, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &jti, &expires_at],
        )
        .await?;
        Ok(())
    }

    /// Stores a minted auth token and audits it: one statement (so one
    /// implicit transaction, one round trip).
    pub async fn insert_auth_token(
        &self,
        token: &NewAuthToken,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(
                "WITH minted AS ( \
                   INSERT INTO auth_tokens (token_hash, tenant_id, client_id, public_client_id, \
                   subject, scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)) \
                 INSERT INTO audit_events (tenant_id, type, at, actor, details) \
                 VALUES ($2, $9, $7, $10, $11)",
            )
            .await?;
        conn.execute(
            &statement,
            &[
                &token.hash,
                &token.tenant_id.as_str(),
                &token.client_id,
                &token.public_client_id,
                &token.subject,
                &token.scope,
                &token.created_at,
                &token.expires_at,
                &audit.kind,
                &audit.actor,
                &audit.details,
            ],
        )
        .await?;
        Ok(())
    }

    /// Redeems an auth token of `tenant` for `public_client`: one
    /// statement marks it redeemed if it is unredeemed, unexpired and for
    /// that client, so of concurrent redemptions exactly one gets it.
    /// `None` for anything else (no such token, another tenant's or
    /// client's, redeemed or expired).
    pub async fn redeem_auth_token(
        &self,
        tenant: &TenantId,
        hash: &[u8],
        public_client: &str,
        now: SystemTime,
    ) -> Result<Option<AuthTokenRecord>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(
                "UPDATE auth_tokens SET redeemed_at = $4 \
                 WHERE token_hash = $1 AND tenant_id = $2 AND public_client_id = $3 \
                 AND redeemed_at IS NULL AND expires_at > $4 \
                 RETURNING client_id, subject, scope",
            )
            .await?;
        let row = conn
            .query_opt(&statement, &[&hash, &tenant.as_str(), &public_client, &now])
            .await?;
        row.map(|row| {
            Ok(AuthTokenRecord {
                client_id: row.try_get(0)?,
                subject: row.try_get(1)?,
                scope: row.try_get(2)?,
            })
        })
        .transpose()
    }

    /// Revokes a subject of `tenant`: every access token of it issued at
    /// or before `issued_before` is refused until `keep_until`, and its
    /// refresh-token families (as a user or a secure-mode subject) are
    /// revoked; `audit` recorded. One transaction.
    pub async fn revoke_subject(
        &self,
        tenant: &TenantId,
        subject: &str,
        issued_before: SystemTime,
        keep_until: SystemTime,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        tx.execute(
            "INSERT INTO revoked_subjects (tenant_id, subject, issued_before, keep_until) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, subject) DO UPDATE SET \
             issued_before = greatest(revoked_subjects.issued_before, excluded.issued_before), \
             keep_until = greatest(revoked_subjects.keep_until, excluded.keep_until)",
            &[&tenant.as_str(), &subject, &issued_before, &keep_until],
        )
        .await?;
        tx.execute(
            "UPDATE refresh_families SET revoked_at = $3 WHERE tenant_id = $1 \
             AND (user_id = $2 OR subject = $2) AND revoked_at IS NULL",
            &[&tenant.as_str(), &subject, &issued_before],
        )
        .await?;
        insert_audit(&tx, audit, issued_before).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Until when tokens of `subject` issued at or before it are refused,
    /// if the subject was revoked.
    pub async fn subject_revoked_before(
        &self,
        tenant: &TenantId,
        subject: &str,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let conn = self.client().await?;
        let statement = conn
            .prepare_cached(
                "SELECT issued_before FROM revoked_subjects \
                 WHERE tenant_id = $1 AND subject = $2 AND keep_until > $3",
            )
            .await?;
        let row = conn
            .query_opt(&statement, &[&tenant.as_str(), &subject, &now])
            .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// Deletes what can no longer matter: revoked access tokens past their
    /// expiry, and refresh families (with their tokens) past their absolute
    /// lifetime. Returns how many rows went.
    pub async fn purge_expired(&self, now: SystemTime) -> Result<u64, StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        let jtis = tx
            .execute(
                "DELETE FROM revoked_access_tokens WHERE expires_at < $1",
                &[&now],
            )
            .await?;
        let tokens = tx
            .execute(
                "DELETE FROM refresh_tokens t USING refresh_families f \
                 WHERE t.family_id = f.id AND f.expires_at < $1",
                &[&now],
            )
            .await?;
        let families = tx
            .execute(
                "DELETE FROM refresh_families WHERE expires_at < $1",
                &[&now],
            )
            .await?;
        let auth_tokens = tx
            .execute("DELETE FROM auth_tokens WHERE expires_at < $1", &[&now])
            .await?;
        let subjects = tx
            .execute(
                "DELETE FROM revoked_subjects WHERE keep_until < $1",
                &[&now],
            )
            .await?;
        tx.commit().await?;
        Ok(jtis + tokens + families + auth_tokens + subjects)
    }

    /// Whether an access token was revoked.
    pub async fn is_access_token_revoked(
        &self,
        tenant: &TenantId,
        jti: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.client().await?;
        let row = conn
            .query_opt(
                "SELECT 1 FROM revoked_access_tokens WHERE tenant_id = $1 AND jti = $2",
                &[&tenant.as_str(), &jti],
            )
            .await?;
        Ok(row.is_some())
    }
}

/// Everything revoked or disabled that unexpired tokens may still carry,
/// for edges to resynchronise from.
#[derive(Debug, Clone, Default)]
pub struct RevocationSnapshot {
    /// Disabled tenants.
    pub tenants: Vec<String>,
    /// Revoked keys, `(tenant, kid)`.
    pub kids: Vec<(String, String)>,
    /// Disabled clients, `(tenant, client)`.
    pub clients: Vec<(String, String)>,
    /// Disabled users, `(tenant, user)`.
    pub users: Vec<(String, String)>,
    /// Revoked access tokens, `(tenant, jti, until)`: kept until the token's
    /// `exp` plus the largest clock skew.
    pub jtis: Vec<(String, String, SystemTime)>,
    /// Revoked subjects, `(tenant, subject, issued_before, keep_until)`.
    pub subjects: Vec<(String, String, SystemTime, SystemTime)>,
}

impl Store {
    /// The current revocations.
    pub async fn revocation_snapshot(
        &self,
        now: SystemTime,
    ) -> Result<RevocationSnapshot, StoreError> {
        let conn = self.client().await?;
        let pairs = |rows: Vec<Row>| -> Result<Vec<(String, String)>, StoreError> {
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        };
        let tenants = conn
            .query("SELECT id FROM tenants WHERE disabled_at IS NOT NULL", &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        let kids = pairs(
            conn.query(
                "SELECT tenant_id, kid FROM signing_keys WHERE status = 'revoked'",
                &[],
            )
            .await?,
        )?;
        let clients = pairs(
            conn.query(
                "SELECT tenant_id, id FROM clients WHERE disabled_at IS NOT NULL",
                &[],
            )
            .await?,
        )?;
        let users = pairs(
            conn.query(
                "SELECT tenant_id, id FROM users WHERE disabled_at IS NOT NULL",
                &[],
            )
            .await?,
        )?;
        let jtis = conn
            .query(
                "SELECT tenant_id, jti, expires_at FROM revoked_access_tokens WHERE expires_at > $1",
                &[&now],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let subjects = conn
            .query(
                "SELECT tenant_id, subject, issued_before, keep_until FROM revoked_subjects \
                 WHERE keep_until > $1",
                &[&now],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RevocationSnapshot {
            tenants,
            kids,
            clients,
            users,
            jtis,
            subjects,
        })
    }
}

fn tenant_from(row: &Row) -> Result<TenantId, StoreError> {
    tenant(row, 1)
}
