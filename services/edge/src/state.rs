//! What the edge's handlers share.

use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use keysilo_config::EdgeSettings;
use keysilo_coord::Coord;
use keysilo_tokens::gate::{Revocations, VerifiedCache};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::keys::JwksCache;
use crate::sessions::Sessions;

/// Seconds since the epoch; the only wall-clock read of the edge.
#[allow(clippy::disallowed_methods, reason = "the edge's clock")]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch.
#[allow(clippy::disallowed_methods, reason = "the edge's clock")]
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The edge's metrics.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// The registry rendered at `/metrics`.
    pub registry: Registry,
    /// Validations by outcome (`accepted`, `rejected`) and reason.
    pub validations: IntCounterVec,
    /// Verified-token cache lookups by result (`hit`, `miss`).
    pub cache: IntCounterVec,
    /// Open WebSocket sessions.
    pub sessions: IntGauge,
    /// Sessions closed by the edge, by reason.
    pub closed: IntCounterVec,
    /// Seconds between an event's publication and its application here.
    pub revocation_lag: prometheus::Histogram,
    /// Messages on the event channel this build did not understand.
    pub unknown_events: prometheus::IntCounter,
    /// Revocation snapshot fetches by result (`ok`, `failed`).
    pub snapshots: IntCounterVec,
}

impl EdgeMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("keysilo_edge".into()), None)?;
        let validations = IntCounterVec::new(
            Opts::new(
                "validations_total",
                "Token validations by outcome and reason",
            ),
            &["outcome", "reason"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new("verified_cache_total", "Verified-token cache lookups"),
            &["result"],
        )?;
        let sessions = IntGauge::new("sessions_open", "Open WebSocket sessions")?;
        let closed = IntCounterVec::new(
            Opts::new(
                "sessions_closed_total",
                "Sessions closed by the edge, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(validations.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        let revocation_lag = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "revocation_lag_seconds",
                "Time from an event's publication by the identity service to its application here",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
        )?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(revocation_lag.clone()))?;
        let unknown_events = prometheus::IntCounter::new(
            "unknown_events_total",
            "Messages on the event channel this build did not understand (an unknown kind or version, or no JSON)",
        )?;
        registry.register(Box::new(unknown_events.clone()))?;
        let snapshots = IntCounterVec::new(
            Opts::new(
                "snapshot_fetches_total",
                "Revocation snapshot fetches from the identity service, by result",
            ),
            &["result"],
        )?;
        for result in ["ok", "failed"] {
            snapshots.with_label_values(&[result]);
        }
        registry.register(Box::new(snapshots.clone()))?;
        Ok(Self {
            registry,
            validations,
            cache,
            sessions,
            closed,
            revocation_lag,
            unknown_events,
            snapshots,
        })
    }
}

/// Shared state.
pub struct EdgeState {
    /// Settings.
    pub settings: EdgeSettings,
    /// Tenants' keys.
    pub jwks: JwksCache,
    /// What is revoked.
    pub revocations: RwLock<Revocations>,
    /// Whether a revocation snapshot has merged since start: until then
    /// the edge cannot know what was revoked before it started, and admits
    /// nothing.
    pub snapshot_merged: std::sync::atomic::AtomicBool,
    /// Tokens whose signature was verified.
    pub verified: Mutex<VerifiedCache>,
    /// Open sessions.
    pub sessions: Sessions,
    /// Redis.
    pub coord: Coord,
    /// For the identity service.
    pub http: reqwest::Client,
    /// Metrics.
    pub metrics: EdgeMetrics,
}

impl std::fmt::Debug for EdgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeState").finish_non_exhaustive()
    }
}

impl EdgeState {
    /// Builds the state.
    pub fn new(
        settings: EdgeSettings,
        coord: Coord,
        tls: Option<keysilo_tls::TlsServer>,
    ) -> Result<Arc<Self>, anyhow::Error> {
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3));
        if let Some(path) = &settings.edge.identity_ca_file {
            let pem = std::fs::read(path)
                .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        let jwks = JwksCache::new(
            http.clone(),
            settings.edge.identity_url.clone(),
            std::time::Duration::from_secs(settings.edge.jwks_refetch_min_seconds),
        );
        let verified = Mutex::new(VerifiedCache::new(settings.edge.verified_cache_size));
        let metrics = EdgeMetrics::new()?;
        if let Some(tls) = tls {
            let now = || i64::try_from(unix_now()).unwrap_or(i64::MAX);
            metrics
                .registry
                .register(Box::new(keysilo_tls::TlsMetrics::new(tls, now)?))?;
        }
        Ok(Arc::new(Self {
            jwks,
            revocations: RwLock::new(Revocations::default()),
            snapshot_merged: std::sync::atomic::AtomicBool::new(false),
            verified,
            sessions: Sessions::default(),
            coord,
            http,
            metrics,
            settings,
        }))
    }
}
