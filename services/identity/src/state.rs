//! Shared state handed to every request handler.

use std::sync::Arc;

use keysilo_config::Settings;
use keysilo_coord::Coord;
use keysilo_store::Store;

use crate::keys::{KeyCache, KeyService};
use crate::metrics::Metrics;

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
}
