//! Prometheus metrics and the middleware that counts HTTP requests.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The service's metrics registry and the collectors in it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tokens_issued: IntCounterVec,
    auth_failures: IntCounterVec,
    rate_limited: IntCounterVec,
    rotations: IntCounterVec,
    master_key_version: IntGauge,
    master_key_age: IntGauge,
    unknown_events: IntCounter,
    password_checks: IntCounterVec,
    auth_tokens: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every collector.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("keysilo".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            &["method", "route"],
        )?;
        let tokens_issued = IntCounterVec::new(
            Opts::new(
                "tokens_issued_total",
                "Access tokens issued by tenant and grant type",
            ),
            &["tenant", "grant"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Refused token-endpoint requests by tenant and OAuth2 error (invalid_client, invalid_grant)",
            ),
            &["tenant", "reason"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused by a rate limit or the password back-off, by limit (client, address, password)",
            ),
            &["limit"],
        )?;
        let rotations = IntCounterVec::new(
            Opts::new(
                "key_rotations_total",
                "Signing-key rotation steps by trigger (scheduled, manual) and result (ok, failed)",
            ),
            &["trigger", "result"],
        )?;
        let master_key_version = IntGauge::new(
            "master_key_current_version",
            "The master key version that wraps new tenant keys on this replica",
        )?;
        let master_key_age = IntGauge::new(
            "master_key_age_seconds",
            "Seconds since the current master key version was first put into service by any replica",
        )?;
        let password_checks = IntCounterVec::new(
            Opts::new(
                "password_checks_total",
                "argon2id password checks run by the password grant, by user (known, unknown: checked against the dummy hash)",
            ),
            &["user"],
        )?;
        for user in ["known", "unknown"] {
            password_checks.with_label_values(&[user]);
        }
        let auth_tokens = IntCounterVec::new(
            Opts::new(
                "auth_tokens_total",
                "Auth-token minting requests (secure mode), by tenant and outcome (minted, or the OAuth error code)",
            ),
            &["tenant", "outcome"],
        )?;
        let unknown_events = IntCounter::new(
            "unknown_events_total",
            "Messages on the event channel this build did not understand (an unknown kind or version, or no JSON)",
        )?;
        // Every series exists from the start, so `increase()` sees the first one.
        for trigger in ["scheduled", "manual"] {
            for result in ["ok", "failed"] {
                rotations.with_label_values(&[trigger, result]);
            }
        }
        for limit in ["client", "address", "password"] {
            rate_limited.with_label_values(&[limit]);
        }
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(rotations.clone()))?;
        registry.register(Box::new(master_key_version.clone()))?;
        registry.register(Box::new(master_key_age.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(unknown_events.clone()))?;
        registry.register(Box::new(password_checks.clone()))?;
        registry.register(Box::new(auth_tokens.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            tokens_issued,
            auth_failures,
            rate_limited,
            rotations,
            master_key_version,
            master_key_age,
            unknown_events,
            password_checks,
            auth_tokens,
        })
    }

    /// The registry, for subsystems that add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }

    /// Counts one issued access token.
    pub fn token_issued(&self, tenant: &str, grant: &str) {
        self.tokens_issued.with_label_values(&[tenant, grant]).inc();
    }

    /// Counts one auth-token minting request by outcome.
    pub fn auth_token(&self, tenant: &str, outcome: &str) {
        self.auth_tokens.with_label_values(&[tenant, outcome]).inc();
    }

    /// Counts a refused client authentication or grant.
    pub fn auth_failure(&self, tenant: &str, reason: &str) {
        self.auth_failures
            .with_label_values(&[tenant, reason])
            .inc();
    }

    /// Counts a request refused by `limit` (`client`, `address`, `password`).
    pub fn rate_limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    /// Counts `steps` rotation steps of `trigger` with `result`.
    pub fn rotations(&self, trigger: &str, result: &str, steps: usize) {
        self.rotations
            .with_label_values(&[trigger, result])
            .inc_by(u64::try_from(steps).unwrap_or(u64::MAX));
    }

    /// Counts one argon2id check of the password grant; `known` is false
    /// when the username matched no user (the dummy hash was checked).
    pub fn password_check(&self, known: bool) {
        let user = if known { "known" } else { "unknown" };
        self.password_checks.with_label_values(&[user]).inc();
    }

    /// Counts a message on the event channel that was not understood.
    pub fn unknown_event(&self) {
        self.unknown_events.inc();
    }

    /// Records the current master key version and how long it has served.
    pub fn master_key(&self, version: u32, age_seconds: i64) {
        self.master_key_version.set(i64::from(version));
        self.master_key_age.set(age_seconds.max(0));
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }
}

/// Middleware: counts every request by its route pattern (never the raw
/// path, which would let callers create unbounded label values).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics.observe(
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(response)
}
