//! Telemetry for Keysilo processes: `tracing` logs as JSON (or pretty
//! lines in development) and, when an endpoint is configured, traces
//! exported over OTLP/HTTP.
//!
//! Call [`init`] once at the top of `main` and keep the returned
//! [`TelemetryGuard`] alive; dropping it flushes pending spans.
//!
//! ```no_run
//! let options = keysilo_telemetry::Options {
//!     filter: "info".into(),
//!     json: true,
//!     otlp_endpoint: None,
//!     service_name: "keysilo-identity".into(),
//! };
//! let _guard = keysilo_telemetry::init(&options, std::io::stdout).unwrap();
//! tracing::info!("started");
//! ```
//!
//! This crate is a leaf: it knows nothing of Keysilo's configuration types,
//! so the services translate their settings into [`Options`].

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What to log and where to send traces.
#[derive(Debug, Clone)]
pub struct Options {
    /// `tracing` filter directives, e.g. `info,keysilo_identity=debug`.
    pub filter: String,
    /// JSON lines when true, human-readable lines otherwise.
    pub json: bool,
    /// OTLP/HTTP traces URL (e.g. `http://collector:4318/v1/traces`); no
    /// export, and no export errors, when `None`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The filter directives do not parse.
    #[error("invalid log filter `{filter}`")]
    InvalidFilter {
        /// The directives as given.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up OTLP trace export to {endpoint}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's complaint.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed in this process.
    #[error("telemetry was already initialised in this process")]
    AlreadyInitialised,
}

/// Keeps the trace pipeline alive; dropping it flushes and shuts it down.
#[must_use = "dropping the guard shuts trace export down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Shutdown flushes what is queued; a collector that is gone by
            // now only costs the spans, never the process exit.
            if let Err(err) = provider.shutdown() {
                tracing::warn!(error = %err, "trace export did not shut down cleanly");
            }
        }
    }
}

/// Validates filter directives without installing anything (for `config
/// validate`).
pub fn check_filter(filter: &str) -> Result<(), TelemetryError> {
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|source| TelemetryError::InvalidFilter {
            filter: filter.to_owned(),
            source,
        })
}

/// Installs the global subscriber writing to `writer`.
pub fn init<W>(options: &Options, writer: W) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_new(&options.filter).map_err(|source| TelemetryError::InvalidFilter {
            filter: options.filter.clone(),
            source,
        })?;

    let provider = match &options.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        Resource::builder()
                            .with_service_name(options.service_name.clone())
                            .build(),
                    )
                    .build(),
            )
        }
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(options.service_name.clone()))
    });

    let (json, pretty) = if options.json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer);
        (Some(layer), None)
    } else {
        let layer = tracing_subscriber::fmt::layer().with_writer(writer);
        (None, Some(layer))
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(json)
        .with(pretty)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;

    Ok(TelemetryGuard { provider })
}
