//! Wiring: builds the shared state and the HTTP server from [`Settings`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use keysilo_config::Settings;
use keysilo_coord::{Coord, CoordError};
use keysilo_store::{Store, StoreError};
use tracing_actix_web::TracingLogger;

use crate::error::ApiError;
use crate::events::run_event_listener;
use crate::keys::{run_purge, run_scheduler};
use crate::metrics::{self, Metrics};
use crate::routes;
use crate::state::{AppState, Services, ServicesError};

/// The service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The PostgreSQL pool could not be built or migrations failed.
    #[error("cannot set up PostgreSQL")]
    Store(#[from] StoreError),
    /// The Redis pool could not be built.
    #[error("cannot set up Redis")]
    Coord(#[from] CoordError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {address}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The metrics registry could not be built.
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    /// A service could not be built (master keys, hashing).
    #[error(transparent)]
    Services(#[from] ServicesError),
    /// The TLS certificate, key or client CAs are unusable.
    #[error("cannot set up TLS")]
    Tls(#[from] keysilo_tls::TlsError),
}

/// Largest total size of a request's header names and values.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Request-level limits. Headers over [`MAX_HEADER_BYTES`] are refused
/// with 431 (actix-web itself allows far more). A request not answered
/// within `server.request_timeout_seconds` of its headers, its body upload
/// included, is cut off with 408: a client trickling a body (slowloris)
/// holds a connection at most that long, while actix-web's own
/// `client_request_timeout` bounds only the headers.
async fn deadline(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge.into());
    }
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(30, |state| state.settings.server.request_timeout_seconds);
    match tokio::time::timeout(Duration::from_secs(limit), next.call(req)).await {
        Ok(response) => response,
        Err(_) => Err(ApiError::RequestTimeout.into()),
    }
}

/// Keeps `master_key_age_seconds` current: records, once a minute, that
/// this replica's current master key version is in service, and reads
/// since when (retrying quietly while PostgreSQL is away).
async fn run_master_key_age(state: AppState) {
    let version = state.settings.custody.current_master_key_version;
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        match state.store.master_key_in_service(version).await {
            Ok(since) => {
                let age = crate::clock::now()
                    .duration_since(since)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                state.metrics.master_key(version, age);
            }
            Err(err) => tracing::debug!(error = %err, "cannot record the master key version"),
        }
    }
}

/// A built, not yet running, identity service.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Connects the pools, applies migrations when configured to, binds the
    /// listener and prepares the server.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let store = Store::new(&settings.database)?;
        if settings.database.migrate_on_start {
            let report = store.migrate().await?;
            tracing::info!(applied = ?report.applied, "database migrations applied");
        }
        let coord = Coord::new(&settings.redis)?;
        let settings = Arc::new(settings);
        let metrics = Metrics::new()?;
        let services = Services::build(&settings, &store, &coord, &metrics)?;
        let tls = settings
            .tls
            .as_ref()
            .map(keysilo_tls::TlsServer::load)
            .transpose()?;
        if let Some(tls) = &tls {
            metrics
                .registry()
                .register(Box::new(keysilo_tls::TlsMetrics::new(
                    tls.clone(),
                    crate::clock::unix_seconds_signed,
                )?))?;
            tokio::spawn(tls.clone().watch());
        }
        let limits = services.limits.clone();
        let state = AppState {
            settings: settings.clone(),
            store,
            coord: coord.clone(),
            metrics,
            tls,
            keys: services.keys.clone(),
            tenants: services.tenants,
            registry: services.registry,
            oauth: services.oauth,
            cache: services.cache.clone(),
            limits: limits.clone(),
        };
        // Background work of every replica: scheduled rotation and the event
        // listener that keeps this replica's cache in step with the others.
        tokio::spawn(run_scheduler(
            services.keys,
            Duration::from_secs(settings.keys.scheduler_interval_seconds),
            state.metrics.clone(),
        ));
        tokio::spawn(run_master_key_age(state.clone()));
        tokio::spawn(run_event_listener(
            coord,
            services.cache,
            services.clients,
            state.metrics.clone(),
        ));
        tokio::spawn(run_purge(state.store.clone(), Duration::from_secs(3600)));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(60));
            loop {
                ticker.tick().await;
                limits.shrink();
            }
        });

        let address = format!(
            "{}:{}",
            state.settings.server.host, state.settings.server.port
        );
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?
            .port();
        let server = run(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The shared state, for embedding and tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn run(listener: TcpListener, state: AppState) -> Result<Server, StartupError> {
    let tls = state.tls.clone();
    let workers = state.settings.server.workers;
    let shutdown = state.settings.server.shutdown_timeout_seconds;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(deadline))
            .wrap(from_fn(metrics::track))
            .wrap(TracingLogger::default())
            .app_data(data.clone())
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::BadRequest(format!("invalid query: {err}")).into()
            }))
            .configure(routes::configure)
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::NotFound)
            }))
    })
    .shutdown_timeout(shutdown)
    .client_request_timeout(Duration::from_secs(5));
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    let bind_failed = |source| StartupError::Bind {
        address: "listener".into(),
        source,
    };
    let server = match &tls {
        Some(tls) => server
            .on_connect(keep_peer_certificate(tls.client_identity()))
            .listen_openssl(listener, tls.acceptor()?)
            .map_err(bind_failed)?,
        None => server.listen(listener).map_err(bind_failed)?,
    };
    Ok(server.run())
}

/// actix-web's `on_connect` hook for a TLS listener: keeps the connection's
/// client certificate, if any, for handlers (`req.conn_data()`).
fn keep_peer_certificate(
    identity: keysilo_config::ClientIdentity,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
    move |connection, extensions| {
        type Stream = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;
        if let Some(stream) = connection.downcast_ref::<Stream>()
            && let Some(peer) = keysilo_tls::PeerCertificate::of_connection(stream.ssl(), identity)
        {
            extensions.insert(peer);
        }
    }
}
