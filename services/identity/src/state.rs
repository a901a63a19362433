//! Shared state handed to every request handler.

use std::sync::Arc;

use keysilo_config::Settings;
use keysilo_coord::Coord;
use keysilo_store::Store;

use crate::keys::{KeyCache, KeyService};
use crate::metrics::Metrics;
use crate::oauth::clients::ClientCache;
use crate::oauth::credentials::SecretHasher;
use crate::oauth::limits::Limits;
use crate::oauth::passwords::Passwords;

/// What handlers share: settings, the database, Redis and metrics. Cheap to
/// clone; everything inside is reference-counted.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The settings the process started with.
    pub settings: Arc<Settings>,
    /// PostgreSQL.
    pub store: Store,
    /// Redis.
    pub coord: Coord,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Tenants and their keys.
    pub keys: KeyService,
    /// This replica's cache of tenants' documents and signing keys.
    pub cache: Arc<KeyCache>,
    /// This replica's cache of OAuth2 clients.
    pub clients: Arc<ClientCache>,
    /// How client secrets are stored.
    pub secrets: Arc<SecretHasher>,
    /// argon2id on a bounded pool.
    pub passwords: Passwords,
    /// Rate limits and password back-off.
    pub limits: Arc<Limits>,
    /// The listener's TLS, when it serves HTTPS.
    pub tls: Option<keysilo_tls::TlsServer>,
}
