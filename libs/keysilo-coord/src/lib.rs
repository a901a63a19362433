//! Redis, Keysilo's coordination layer: a connection pool with timeouts,
//! key namespacing, and (as later capabilities arrive) distributed locks
//! and the event fan-out that keeps replicas and edges in step.
//!
//! ```no_run
//! # async fn demo(settings: &keysilo_config::RedisSettings) -> Result<(), keysilo_coord::CoordError> {
//! let coord = keysilo_coord::Coord::new(settings)?;
//! coord.ping().await?;
//! assert!(coord.key("locks:t1").ends_with("locks:t1"));
//! # Ok(()) }
//! ```
//!
//! Every key and channel goes through [`Coord::key`], which prepends the
//! configured prefix, so deployments and tests can share one Redis.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod events;
mod lock;

pub use events::{EVENT_VERSION, Envelope, Event, Received, RevocationSnapshot};
pub use lock::LockGuard;

use std::time::Duration;

use deadpool_redis::redis::{self, IntoConnectionInfo as _};
use deadpool_redis::{Manager, Pool, Runtime};
use keysilo_config::RedisSettings;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// Redis cannot be reached, timed out or dropped the connection.
    #[error("Redis is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Redis answered with an error.
    #[error("Redis command failed")]
    Command(#[source] redis::RedisError),
    /// Another holder kept the lock for longer than we were willing to wait.
    #[error("lock {resource} is busy")]
    LockBusy {
        /// The lock's kind and resource.
        resource: String,
    },
    /// The URL or pool settings are unusable.
    #[error("invalid Redis settings")]
    Settings(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<redis::RedisError> for CoordError {
    fn from(err: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        // Failover and start-up states are as transient as a dropped
        // connection: answer "try again later".
        let failing_over = matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        );
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || failing_over
        {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Command(err)
        }
    }
}

impl From<deadpool_redis::PoolError> for CoordError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        match err {
            deadpool_redis::PoolError::Backend(err) => err.into(),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// A pool of Redis connections plus the key prefix of this deployment.
#[derive(Clone)]
pub struct Coord {
    pool: Pool,
    client: redis::Client,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for Coord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coord")
            .field("prefix", &self.prefix)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Coord {
    /// Builds the pool; no connection is opened until one is needed.
    pub fn new(settings: &RedisSettings) -> Result<Self, CoordError> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|err| CoordError::Settings(Box::new(err)))?;
        if let Some(password) = &settings.password {
            let redis_settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(redis_settings);
        }
        let timeout = Duration::from_secs(settings.timeout_seconds);
        let client = match &settings.ca_file {
            // `rediss://` verified against a CA of the operator's (the
            // settings allow `ca_file` with `rediss://` only).
            Some(path) => {
                let root =
                    std::fs::read(path).map_err(|err| CoordError::Settings(Box::new(err)))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                };
                redis::Client::build_with_tls(info, certificates)
            }
            None => redis::Client::open(info),
        }
        .map_err(|err| CoordError::Settings(Box::new(err)))?;
        let info = client.get_connection_info().clone();
        let manager = Manager::new(info).map_err(|err| CoordError::Settings(Box::new(err)))?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|err| CoordError::Settings(Box::new(err)))?;
        Ok(Self {
            pool,
            client,
            prefix: settings.key_prefix.clone(),
            timeout,
        })
    }

    /// The namespaced name of key or channel `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Takes a connection from the pool.
    pub async fn connection(&self) -> Result<deadpool_redis::Connection, CoordError> {
        Ok(self.pool.get().await?)
    }

    /// A client for connections that cannot be pooled (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs one command with the configured timeout, mapping every failure
    /// to [`CoordError`].
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CoordError> {
        let work = async {
            let mut conn = self.connection().await?;
            Ok::<T, CoordError>(cmd.query_async(&mut conn).await?)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(elapsed) => Err(CoordError::Unavailable(Box::new(elapsed))),
        }
    }

    /// Checks that Redis answers `PING`.
    pub async fn ping(&self) -> Result<(), CoordError> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }
}
