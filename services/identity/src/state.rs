//! Shared state handed to every request handler, and the services in it.

use std::sync::Arc;
use std::time::Duration;

use keysilo_config::Settings;
use keysilo_coord::Coord;
use keysilo_store::Store;

use crate::events::Events;
use crate::keys::{KeyCache, KeyService, master_key_ring};
use crate::metrics::Metrics;
use crate::oauth::OAuthService;
use crate::oauth::clients::ClientCache;
use crate::oauth::credentials::SecretHasher;
use crate::oauth::limits::Limits;
use crate::oauth::passwords::{PasswordError, Passwords};
use crate::oauth::registry::RegistryService;
use crate::tenants::TenantService;

/// A service could not be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The master keys are unusable.
    #[error("cannot load the master keys")]
    Custody(#[from] keysilo_custody::CustodyError),
    /// The client-secret hasher could not be keyed.
    #[error("cannot key the client-secret hasher")]
    Crypto(#[source] openssl::error::ErrorStack),
    /// The password hashing parameters are unusable.
    #[error("cannot set up password hashing")]
    Passwords(#[source] PasswordError),
}

/// The domain services of one replica, wired to one cache of each kind.
/// Every state change goes through one of them; each drops what it made
/// stale in this replica's caches and announces the change itself.
#[derive(Debug, Clone)]
pub struct Services {
    /// Tenants' signing keys.
    pub keys: KeyService,
    /// Tenants.
    pub tenants: TenantService,
    /// Clients and users.
    pub registry: RegistryService,
    /// The OAuth2 endpoints' work.
    pub oauth: OAuthService,
    /// This replica's cache of tenants' documents and signing keys.
    pub cache: Arc<KeyCache>,
    /// This replica's cache of OAuth2 clients.
    pub clients: Arc<ClientCache>,
    /// Rate limits and password back-off.
    pub limits: Arc<Limits>,
}

impl Services {
    /// Builds every service from `settings`.
    pub fn build(
        settings: &Arc<Settings>,
        store: &Store,
        coord: &Coord,
        metrics: &Metrics,
    ) -> Result<Self, ServicesError> {
        let ring = Arc::new(master_key_ring(settings)?);
        let max_age = Duration::from_secs(settings.keys.cache_max_age_seconds);
        let mutual_tls = settings
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_auth != keysilo_config::ClientAuth::None);
        let cache = Arc::new(KeyCache::new(
            store.clone(),
            ring.clone(),
            settings.server.public_base_url.clone(),
            max_age,
            mutual_tls,
        ));
        let clients = Arc::new(ClientCache::new(store.clone(), max_age));
        let events = Events::new(coord.clone());
        let keys = KeyService::new(
            settings.clone(),
            ring,
            store.clone(),
            coord.clone(),
            cache.clone(),
            events.clone(),
        );
        let secrets = Arc::new(
            SecretHasher::new(&settings.tokens.client_secret_pepper)
                .map_err(ServicesError::Crypto)?,
        );
        let passwords = Passwords::new(&settings.tokens).map_err(ServicesError::Passwords)?;
        let limits = Arc::new(Limits::new(&settings.limits));
        let tenants = TenantService::new(
            store.clone(),
            keys.clone(),
            cache.clone(),
            clients.clone(),
            events.clone(),
        );
        let registry = RegistryService::new(
            store.clone(),
            secrets.clone(),
            passwords.clone(),
            cache.clone(),
            clients.clone(),
            events.clone(),
            Duration::from_secs(settings.tokens.client_secret_overlap_seconds),
        );
        let oauth = OAuthService {
            settings: settings.clone(),
            store: store.clone(),
            cache: cache.clone(),
            clients: clients.clone(),
            secrets,
            passwords,
            limits: limits.clone(),
            metrics: metrics.clone(),
            events,
        };
        Ok(Self {
            keys,
            tenants,
            registry,
            oauth,
            cache,
            clients,
            limits,
        })
    }
}

/// What handlers share: settings, the database, Redis, metrics and the
/// services. Cheap to clone; everything inside is reference-counted.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The settings the process started with.
    pub settings: Arc<Settings>,
    /// PostgreSQL, for the admin API's reads.
    pub store: Store,
    /// Redis.
    pub coord: Coord,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Tenants' signing keys.
    pub keys: KeyService,
    /// Tenants.
    pub tenants: TenantService,
    /// Clients and users.
    pub registry: RegistryService,
    /// The OAuth2 endpoints' work.
    pub oauth: OAuthService,
    /// This replica's cache of tenants' documents and signing keys.
    pub cache: Arc<KeyCache>,
    /// Rate limits and password back-off.
    pub limits: Arc<Limits>,
    /// The listener's TLS, when it serves HTTPS.
    pub tls: Option<keysilo_tls::TlsServer>,
}
