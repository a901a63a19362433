//! PostgreSQL, Keysilo's state of record: the connection pool, the embedded
//! migrations from `migrations/`, and the queries the services run.
//!
//! ```no_run
//! # async fn demo(settings: &keysilo_config::DatabaseSettings) -> Result<(), keysilo_store::StoreError> {
//! let store = keysilo_store::Store::new(settings)?;
//! store.migrate().await?;
//! store.ping().await?;
//! # Ok(()) }
//! ```
//!
//! The pool connects lazily, so a service starts (and reports itself not
//! ready) while PostgreSQL is down, and recovers without a restart.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod keys;
mod migrate;
mod oauth;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use keysilo_config::{DatabaseSettings, SslMode};

pub use keys::{
    AuditRecord, DueRotation, KeyChange, KeyOutcome, NewAuditEvent, NewKey, StoredKey, TenantPatch,
    TenantRecord, is_unique_violation,
};
pub use migrate::MigrationReport;
pub use oauth::{
    AuthTokenRecord, ClientRecord, FamilyOwner, NewAuthToken, NewRefreshToken, Redemption,
    RefreshRecord, RevocationSnapshot, RevokedAccessToken, TlsClientAuth, UserRecord,
};

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// PostgreSQL cannot be reached or dropped the connection; retry later.
    #[error("PostgreSQL is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A statement failed for a reason other than connectivity.
    #[error("database query failed")]
    Query(#[source] tokio_postgres::Error),
    /// Applying migrations failed.
    #[error("database migration failed")]
    Migration(#[source] refinery::Error),
    /// The TLS settings could not be applied.
    #[error("cannot set up TLS to PostgreSQL")]
    Tls(#[source] openssl::error::ErrorStack),
    /// A value cannot be stored or looked up (a NUL byte in text, say).
    #[error("a value has characters the database refuses")]
    InvalidInput,
    /// The row to create exists already.
    #[error("already exists")]
    Conflict,
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A lock-guarded write came with a fencing token older than one that
    /// already committed: the writer's lock had expired.
    #[error("stale fencing token: the lock was lost before commit")]
    StaleFence,
    /// The change's precondition does not hold.
    #[error("precondition failed: {0}")]
    Precondition(&'static str),
    /// A stored value is not valid (the database was edited by hand?).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The pool could not be built from the settings.
    #[error("invalid database pool settings")]
    Pool(#[source] deadpool_postgres::BuildError),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        // Errors that carry no server message come from the transport (the
        // server went away); the states below are transient by nature. Both
        // mean "try again later", not "this request is wrong".
        const TRANSIENT: [SqlState; 6] = [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ];
        if err.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
            || err.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER)
        {
            return Self::InvalidInput;
        }
        let transient = err.code().is_some_and(|code| TRANSIENT.contains(code));
        if err.is_closed() || err.as_db_error().is_none() || transient {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Query(err)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => err.into(),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// A pool of connections to the Keysilo database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Store {
    /// Builds the pool; no connection is opened until one is needed.
    pub fn new(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let timeout = Duration::from_secs(settings.connect_timeout_seconds);
        let mut config = tokio_postgres::Config::new();
        config
            .host(&settings.host)
            .port(settings.port)
            .user(&settings.user)
            .dbname(&settings.name)
            .application_name("keysilo")
            .connect_timeout(timeout);
        if let Some(password) = &settings.password {
            config.password(password.expose());
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match settings.ssl_mode {
            SslMode::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            _ => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let mut builder =
                    openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
                        .map_err(StoreError::Tls)?;
                if let Some(ca_file) = &settings.ca_file {
                    builder.set_ca_file(ca_file).map_err(StoreError::Tls)?;
                }
                let tls = postgres_openssl::MakeTlsConnector::new(builder.build());
                Manager::from_config(config, tls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(StoreError::Pool)?;
        Ok(Self { pool })
    }

    /// Takes a connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Checks that PostgreSQL answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}
