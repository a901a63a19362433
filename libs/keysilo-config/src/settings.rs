//! The typed settings and their defaults.
//!
//! Each section is read twice over: serde reads a `Raw*` struct (unknown
//! keys and wrong types are errors), then `validate` turns it into the typed
//! section, resolving secrets and checking values. Every step pushes its
//! problems onto one list instead of stopping at the first.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use crate::secret::{Secret, SecretProvider, SecretProviders, SecretRef};
use crate::{Problem, Problems};

/// Everything a Keysilo process is configured with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The HTTP listener and the public URL.
    pub server: ServerSettings,
    /// PostgreSQL, the state of record.
    pub database: DatabaseSettings,
    /// Redis, the coordination layer.
    pub redis: RedisSettings,
    /// The platform admin API.
    pub admin: AdminSettings,
    /// Master keys that wrap tenant private keys.
    pub custody: CustodySettings,
    /// Tenant signing-key lifecycle.
    pub keys: KeySettings,
    /// Access and refresh tokens, clients and passwords.
    pub tokens: TokenSettings,
    /// Rate limits and back-off.
    pub limits: LimitSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// HTTPS on the listener; plain HTTP when `None`.
    pub tls: Option<crate::TlsSettings>,
}

/// `[tokens]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenSettings {
    /// `aud` of access tokens whose client registered no audience.
    pub default_audience: String,
    /// Key of the HMAC that client secrets are stored under; required.
    pub client_secret_pepper: Secret,
    /// Seconds a replaced client secret keeps working (at most 3600).
    pub client_secret_overlap_seconds: u64,
    /// Absolute lifetime of a refresh-token family, from the login.
    pub refresh_token_lifetime_seconds: u64,
    /// A refresh token unused for this long expires.
    pub refresh_token_idle_seconds: u64,
    /// argon2id memory cost in KiB.
    pub password_hash_memory_kib: u32,
    /// argon2id iterations.
    pub password_hash_iterations: u32,
    /// argon2id lanes.
    pub password_hash_parallelism: u32,
    /// Threads that may hash passwords at once; `None`: one per core.
    pub password_workers: Option<usize>,
    /// Password checks allowed to wait for a thread before the token
    /// endpoint answers 503.
    pub password_queue_limit: usize,
}

/// `[limits]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LimitSettings {
    /// Token requests per second allowed to one client.
    pub token_per_client_per_second: u32,
    /// Token requests per second allowed from one source address.
    pub token_per_address_per_second: u32,
    /// Requests above the rate allowed in a burst.
    pub token_burst: u32,
    /// Wrong passwords for one username before back-off starts.
    pub password_failures_before_backoff: u32,
    /// Longest back-off after repeated wrong passwords.
    pub password_backoff_max_seconds: u64,
    /// Load balancers and proxies whose `X-Forwarded-For` is believed when
    /// telling clients apart by address; empty: the TCP peer is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// `[server]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerSettings {
    /// Address to bind, e.g. `127.0.0.1` or `0.0.0.0`.
    pub host: String,
    /// Port to bind; `0` picks a free one (tests).
    pub port: u16,
    /// Base of every issuer URL, without a trailing slash.
    pub public_base_url: String,
    /// HTTP worker threads; `None` uses one per core.
    pub workers: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout_seconds: u64,
    /// Longest a request may take from its headers to its answer, body
    /// upload included; a slower one is cut off with 408.
    pub request_timeout_seconds: u64,
}

/// How the PostgreSQL connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP (loopback development only).
    Disable,
    /// TLS required; the server certificate is verified against the system
    /// roots or `ca_file`, and its host name checked.
    Require,
}

/// `[database]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DatabaseSettings {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Role the service logs in as (owns the schema; not a superuser).
    pub user: String,
    /// That role's password, if password authentication is used.
    pub password: Option<Secret>,
    /// Database name.
    pub name: String,
    /// Maximum pooled connections per process.
    pub pool_size: usize,
    /// Connection protection.
    pub ssl_mode: SslMode,
    /// CA bundle for `ssl_mode = "require"`; system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for a connection before giving up.
    pub connect_timeout_seconds: u64,
    /// Apply pending migrations when the service starts.
    pub migrate_on_start: bool,
}

/// `[redis]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://host:port/db` (or `rediss://` for TLS), without credentials.
    pub url: String,
    /// CA bundle that verifies the server's certificate with `rediss://`;
    /// the system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Password, when the server requires one.
    pub password: Option<Secret>,
    /// Prefix of every key and channel this process uses, so several
    /// deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Maximum pooled connections per process.
    pub pool_size: usize,
    /// Seconds to wait for a connection or reply before giving up.
    pub timeout_seconds: u64,
}

/// `[admin]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminSettings {
    /// Bearer key of the platform admin; required, at least 32 characters.
    pub api_key: Secret,
    /// Bearer key that edge validators use to read the revocation snapshot
    /// (`/internal/v1/revocations`) without holding the admin key.
    pub edge_api_key: Option<Secret>,
}

/// One master key version.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MasterKeySetting {
    /// The version number recorded next to every key it wraps.
    pub version: u32,
    /// 32 random bytes, base64 (standard alphabet).
    pub key: Secret,
}

/// `[custody]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CustodySettings {
    /// The version that wraps new keys.
    pub current_master_key_version: u32,
    /// Every version still needed to unwrap stored keys.
    pub master_keys: Vec<MasterKeySetting>,
}

/// `[keys]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeySettings {
    /// Seconds between scheduled rotations of a tenant's signing key.
    pub rotation_period_seconds: u64,
    /// Seconds a `next` key is published before it starts signing; at least
    /// the JWKS cache lifetime.
    pub publish_ahead_seconds: u64,
    /// `max-age` of the JWKS response, at most 300.
    pub jwks_max_age_seconds: u64,
    /// Clock skew allowed to verifiers; part of the retired-key grace period.
    pub clock_skew_seconds: u64,
    /// Seconds between two checks for due rotations on each replica.
    pub scheduler_interval_seconds: u64,
    /// Seconds a rotation lock lives without renewal (a crashed holder
    /// blocks rotations of its tenant for at most this long).
    pub lock_ttl_seconds: u64,
    /// Seconds an admin call waits for a busy rotation lock.
    pub lock_wait_seconds: u64,
    /// Longest a replica serves its cached view of a tenant's keys without
    /// reloading, should it miss an event; part of the retired-key grace.
    pub cache_max_age_seconds: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (development).
    Pretty,
}

/// `[telemetry]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TelemetrySettings {
    /// `tracing` filter directives, e.g. `info,keysilo_identity=debug`.
    pub log_level: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint for traces; tracing export is off when unset.
    pub otlp_endpoint: Option<String>,
    /// `service.name` reported with traces; the binary's name when unset.
    pub service_name: Option<String>,
}

/// Which secret providers are consulted, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ProviderKind {
    Env,
    File,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSecrets {
    providers: Vec<ProviderKind>,
    file_dir: Option<PathBuf>,
}

impl Default for RawSecrets {
    fn default() -> Self {
        Self {
            providers: vec![ProviderKind::Env, ProviderKind::File],
            file_dir: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    host: String,
    port: u16,
    public_base_url: String,
    workers: Option<usize>,
    shutdown_timeout_seconds: u64,
    request_timeout_seconds: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            public_base_url: "http://127.0.0.1:8080".into(),
            workers: None,
            shutdown_timeout_seconds: 10,
            request_timeout_seconds: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    host: String,
    port: u16,
    user: String,
    password: Option<SecretRef>,
    name: String,
    pool_size: usize,
    ssl_mode: SslMode,
    ca_file: Option<PathBuf>,
    connect_timeout_seconds: u64,
    migrate_on_start: bool,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "keysilo".into(),
            password: None,
            name: "keysilo".into(),
            pool_size: 16,
            ssl_mode: SslMode::Disable,
            ca_file: None,
            connect_timeout_seconds: 3,
            migrate_on_start: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedis {
    url: String,
    ca_file: Option<PathBuf>,
    password: Option<SecretRef>,
    key_prefix: String,
    pool_size: usize,
    timeout_seconds: u64,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            ca_file: None,
            password: None,
            key_prefix: "keysilo:".into(),
            pool_size: 16,
            timeout_seconds: 2,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    api_key: Option<SecretRef>,
    edge_api_key: Option<SecretRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasterKey {
    version: u32,
    key: SecretRef,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawCustody {
    current_master_key_version: Option<u32>,
    master_keys: Vec<RawMasterKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeys {
    rotation_period_seconds: u64,
    publish_ahead_seconds: u64,
    jwks_max_age_seconds: u64,
    clock_skew_seconds: u64,
    scheduler_interval_seconds: u64,
    lock_ttl_seconds: u64,
    lock_wait_seconds: u64,
    cache_max_age_seconds: u64,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            rotation_period_seconds: 30 * 24 * 3600,
            publish_ahead_seconds: 600,
            jwks_max_age_seconds: 60,
            clock_skew_seconds: 60,
            scheduler_interval_seconds: 60,
            lock_ttl_seconds: 10,
            lock_wait_seconds: 10,
            cache_max_age_seconds: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTokens {
    default_audience: String,
    client_secret_pepper: Option<SecretRef>,
    client_secret_overlap_seconds: u64,
    refresh_token_lifetime_seconds: u64,
    refresh_token_idle_seconds: u64,
    password_hash_memory_kib: u32,
    password_hash_iterations: u32,
    password_hash_parallelism: u32,
    password_workers: Option<usize>,
    password_queue_limit: usize,
}

impl Default for RawTokens {
    fn default() -> Self {
        // argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1).
        Self {
            default_audience: "keysilo".into(),
            client_secret_pepper: None,
            client_secret_overlap_seconds: 3600,
            refresh_token_lifetime_seconds: 30 * 24 * 3600,
            refresh_token_idle_seconds: 7 * 24 * 3600,
            password_hash_memory_kib: 19_456,
            password_hash_iterations: 2,
            password_hash_parallelism: 1,
            password_workers: None,
            password_queue_limit: 64,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    token_per_client_per_second: u32,
    token_per_address_per_second: u32,
    token_burst: u32,
    password_failures_before_backoff: u32,
    password_backoff_max_seconds: u64,
    trusted_proxies: Vec<String>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            token_per_client_per_second: 2000,
            token_per_address_per_second: 5000,
            token_burst: 1000,
            password_failures_before_backoff: 5,
            password_backoff_max_seconds: 900,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
struct RawTelemetry {
    log_level: String,
    log_format: LogFormat,
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            service_name: None,
        }
    }
}

/// The top-level sections; anything else in the file is reported.
pub(crate) const SECTIONS: &[&str] = &[
    "secrets",
    "server",
    "database",
    "redis",
    "admin",
    "custody",
    "keys",
    "tokens",
    "limits",
    "telemetry",
    "tls",
];

/// Reads one section out of the merged table, recording a problem and
/// falling back to the defaults when it does not deserialize.
pub(crate) fn section<T: Default + for<'de> Deserialize<'de>>(
    table: &toml::Table,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    match table.get(name) {
        None => Some(T::default()),
        Some(value) => match value.clone().try_into::<T>() {
            Ok(section) => Some(section),
            Err(err) => {
                problems.push(Problem::new(name, err.message()));
                None
            }
        },
    }
}

/// Builds the secret providers from `[secrets]` and the environment.
pub(crate) fn providers(
    table: &toml::Table,
    env: &std::collections::BTreeMap<String, String>,
    problems: &mut Problems,
) -> SecretProviders {
    let Some(raw) = section::<RawSecrets>(table, "secrets", problems) else {
        return SecretProviders::default();
    };
    let mut providers = Vec::new();
    for kind in raw.providers {
        match kind {
            ProviderKind::Env => providers.push(SecretProvider::Env(
                env.iter()
                    .filter(|(k, _)| k.starts_with("KEYSILO_SECRET_"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
            // Without a directory the file provider has nothing to read; it
            // is in the default list so that setting `file_dir` is enough.
            ProviderKind::File => {
                if let Some(dir) = &raw.file_dir {
                    providers.push(SecretProvider::File(dir.clone()));
                }
            }
        }
    }
    SecretProviders::new(providers)
}

pub(crate) fn resolve(
    key: &str,
    reference: Option<&SecretRef>,
    providers: &SecretProviders,
    problems: &mut Problems,
) -> Option<Secret> {
    match reference?.resolve(providers) {
        Ok(secret) => Some(secret),
        Err(err) => {
            problems.push(Problem::new(key, err.to_string()));
            None
        }
    }
}

pub(crate) fn check_http_url(
    key: &str,
    raw: &str,
    schemes: &[&str],
    problems: &mut Problems,
) -> String {
    match Url::parse(raw) {
        Ok(url) if !schemes.contains(&url.scheme()) => problems.push(Problem::new(
            key,
            format!("scheme must be one of {}", schemes.join(", ")),
        )),
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            problems.push(Problem::new(key, "must not have a query or fragment"));
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            problems.push(Problem::new(
                key,
                "must not carry credentials; use the password setting with a ${secret:…} reference",
            ));
        }
        Ok(_) => {}
        Err(err) => problems.push(Problem::new(key, format!("not a valid URL: {err}"))),
    }
    raw.trim_end_matches('/').to_owned()
}

/// An API key: at least 32 characters, or a problem.
pub(crate) fn long_enough(key: &str, secret: Secret, problems: &mut Problems) -> Option<Secret> {
    if secret.expose().chars().count() < 32 {
        problems.push(Problem::new(
            key,
            "too short: use at least 32 random characters",
        ));
        return None;
    }
    Some(secret)
}

pub(crate) fn positive(key: &str, value: u64, problems: &mut Problems) {
    if value == 0 {
        problems.push(Problem::new(key, "must be greater than 0"));
    }
}

pub(crate) fn at_most(key: &str, value: u64, max: u64, problems: &mut Problems) {
    if value > max {
        problems.push(Problem::new(key, format!("must be at most {max}")));
    }
}

/// Reads and checks every section, returning the settings only when no
/// problem was found anywhere.
pub(crate) fn build(
    table: &toml::Table,
    providers: &SecretProviders,
    problems: &mut Problems,
) -> Option<Settings> {
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(Problem::new(key, "unknown section"));
        }
    }
    let server = section::<RawServer>(table, "server", problems).map(|raw| {
        if raw.workers == Some(0) {
            problems.push(Problem::new("server.workers", "must be at least 1"));
        }
        positive(
            "server.request_timeout_seconds",
            raw.request_timeout_seconds,
            problems,
        );
        at_most(
            "server.request_timeout_seconds",
            raw.request_timeout_seconds,
            3600,
            problems,
        );
        ServerSettings {
            public_base_url: check_http_url(
                "server.public_base_url",
                &raw.public_base_url,
                &["http", "https"],
                problems,
            ),
            host: raw.host,
            port: raw.port,
            workers: raw.workers,
            shutdown_timeout_seconds: raw.shutdown_timeout_seconds,
            request_timeout_seconds: raw.request_timeout_seconds,
        }
    });
    let database = section::<RawDatabase>(table, "database", problems).map(|raw| {
        if raw.pool_size == 0 {
            problems.push(Problem::new("database.pool_size", "must be at least 1"));
        }
        positive(
            "database.connect_timeout_seconds",
            raw.connect_timeout_seconds,
            problems,
        );
        DatabaseSettings {
            password: resolve(
                "database.password",
                raw.password.as_ref(),
                providers,
                problems,
            ),
            host: raw.host,
            port: raw.port,
            user: raw.user,
            name: raw.name,
            pool_size: raw.pool_size,
            ssl_mode: raw.ssl_mode,
            ca_file: raw.ca_file,
            connect_timeout_seconds: raw.connect_timeout_seconds,
            migrate_on_start: raw.migrate_on_start,
        }
    });
    let redis = redis_section(table, providers, problems);
    let admin = section::<RawAdmin>(table, "admin", problems).and_then(|raw| {
        if raw.api_key.is_none() {
            problems.push(Problem::new(
                "admin.api_key",
                "required: the service never runs without an admin API key; \
                 set it to a ${secret:name} reference",
            ));
        }
        // Both keys are checked, so that one pass reports every problem.
        let key = resolve("admin.api_key", raw.api_key.as_ref(), providers, problems)
            .and_then(|key| long_enough("admin.api_key", key, problems));
        let edge_api_key = match raw.edge_api_key.as_ref() {
            None => Some(None),
            Some(reference) => resolve("admin.edge_api_key", Some(reference), providers, problems)
                .and_then(|key| long_enough("admin.edge_api_key", key, problems))
                .map(Some),
        };
        Some(AdminSettings {
            api_key: key?,
            edge_api_key: edge_api_key?,
        })
    });
    let custody = section::<RawCustody>(table, "custody", problems)
        .and_then(|raw| build_custody(raw, providers, problems));
    let keys = section::<RawKeys>(table, "keys", problems).map(|raw| {
        positive("keys.rotation_period_seconds", raw.rotation_period_seconds, problems);
        positive("keys.lock_ttl_seconds", raw.lock_ttl_seconds, problems);
        const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
        at_most("keys.rotation_period_seconds", raw.rotation_period_seconds, TEN_YEARS, problems);
        at_most("keys.clock_skew_seconds", raw.clock_skew_seconds, crate::MAX_CLOCK_SKEW_SECONDS, problems);
        at_most("keys.lock_ttl_seconds", raw.lock_ttl_seconds, 300, problems);
        at_most("keys.lock_wait_seconds", raw.lock_wait_seconds, 300, problems);
        positive("keys.cache_max_age_seconds", raw.cache_max_age_seconds, problems);
        at_most("keys.cache_max_age_seconds", raw.cache_max_age_seconds, 300, problems);
        at_most("keys.scheduler_interval_seconds", raw.scheduler_interval_seconds, 86_400, problems);
        if raw.publish_ahead_seconds >= raw.rotation_period_seconds {
            problems.push(Problem::new(
                "keys.publish_ahead_seconds",
                "must be shorter than keys.rotation_period_seconds",
            ));
        }
        positive(
            "keys.scheduler_interval_seconds",
            raw.scheduler_interval_seconds,
            problems,
        );
        if raw.jwks_max_age_seconds > 300 {
            problems.push(Problem::new("keys.jwks_max_age_seconds", "must be at most 300"));
        }
        if raw.publish_ahead_seconds < raw.jwks_max_age_seconds {
            problems.push(Problem::new(
                "keys.publish_ahead_seconds",
                "must be at least keys.jwks_max_age_seconds, so verifiers see a key before it signs",
            ));
        }
        KeySettings {
            rotation_period_seconds: raw.rotation_period_seconds,
            publish_ahead_seconds: raw.publish_ahead_seconds,
            jwks_max_age_seconds: raw.jwks_max_age_seconds,
            clock_skew_seconds: raw.clock_skew_seconds,
            scheduler_interval_seconds: raw.scheduler_interval_seconds,
            lock_ttl_seconds: raw.lock_ttl_seconds,
            lock_wait_seconds: raw.lock_wait_seconds,
            cache_max_age_seconds: raw.cache_max_age_seconds,
        }
    });
    let tokens = section::<RawTokens>(table, "tokens", problems)
        .and_then(|raw| build_tokens(raw, providers, problems));
    let limits = section::<RawLimits>(table, "limits", problems).map(|raw| {
        positive(
            "limits.token_per_client_per_second",
            raw.token_per_client_per_second.into(),
            problems,
        );
        positive(
            "limits.token_per_address_per_second",
            raw.token_per_address_per_second.into(),
            problems,
        );
        positive("limits.token_burst", raw.token_burst.into(), problems);
        positive(
            "limits.password_failures_before_backoff",
            raw.password_failures_before_backoff.into(),
            problems,
        );
        at_most(
            "limits.password_backoff_max_seconds",
            raw.password_backoff_max_seconds,
            86_400,
            problems,
        );
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .filter_map(|p| match p.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(Problem::new(
                        "limits.trusted_proxies",
                        format!("`{p}` is not an IP address"),
                    ));
                    None
                }
            })
            .collect();
        LimitSettings {
            trusted_proxies,
            token_per_client_per_second: raw.token_per_client_per_second,
            token_per_address_per_second: raw.token_per_address_per_second,
            token_burst: raw.token_burst,
            password_failures_before_backoff: raw.password_failures_before_backoff,
            password_backoff_max_seconds: raw.password_backoff_max_seconds,
        }
    });
    let telemetry = telemetry_section(table, problems);
    let tls = crate::tls::tls_section(table, problems);
    Some(Settings {
        server: server?,
        database: database?,
        redis: redis?,
        admin: admin?,
        custody: custody?,
        keys: keys?,
        tokens: tokens?,
        limits: limits?,
        telemetry: telemetry?,
        tls: tls?,
    })
}

/// `[redis]`, shared by both services.
pub(crate) fn redis_section(
    table: &toml::Table,
    providers: &SecretProviders,
    problems: &mut Problems,
) -> Option<RedisSettings> {
    section::<RawRedis>(table, "redis", problems).map(|raw| {
        if raw.pool_size == 0 {
            problems.push(Problem::new("redis.pool_size", "must be at least 1"));
        }
        positive("redis.timeout_seconds", raw.timeout_seconds, problems);
        if raw.ca_file.is_some() && !raw.url.starts_with("rediss://") {
            problems.push(Problem::new(
                "redis.ca_file",
                "only used with a rediss:// url (TLS)",
            ));
        }
        RedisSettings {
            url: check_http_url("redis.url", &raw.url, &["redis", "rediss"], problems),
            ca_file: raw.ca_file,
            password: resolve("redis.password", raw.password.as_ref(), providers, problems),
            key_prefix: raw.key_prefix,
            pool_size: raw.pool_size,
            timeout_seconds: raw.timeout_seconds,
        }
    })
}

/// `[telemetry]`, shared by both services.
pub(crate) fn telemetry_section(
    table: &toml::Table,
    problems: &mut Problems,
) -> Option<TelemetrySettings> {
    section::<RawTelemetry>(table, "telemetry", problems).map(|raw| {
        if let Some(endpoint) = &raw.otlp_endpoint {
            check_http_url(
                "telemetry.otlp_endpoint",
                endpoint,
                &["http", "https"],
                problems,
            );
        }
        TelemetrySettings {
            log_level: raw.log_level,
            log_format: raw.log_format,
            otlp_endpoint: raw.otlp_endpoint,
            service_name: raw.service_name,
        }
    })
}

fn build_tokens(
    raw: RawTokens,
    providers: &SecretProviders,
    problems: &mut Problems,
) -> Option<TokenSettings> {
    let before = problems.len();
    if raw.default_audience.trim().is_empty() {
        problems.push(Problem::new("tokens.default_audience", "must not be empty"));
    }
    at_most(
        "tokens.client_secret_overlap_seconds",
        raw.client_secret_overlap_seconds,
        3600,
        problems,
    );
    positive(
        "tokens.refresh_token_lifetime_seconds",
        raw.refresh_token_lifetime_seconds,
        problems,
    );
    at_most(
        "tokens.refresh_token_lifetime_seconds",
        raw.refresh_token_lifetime_seconds,
        10 * 365 * 86_400,
        problems,
    );
    positive(
        "tokens.refresh_token_idle_seconds",
        raw.refresh_token_idle_seconds,
        problems,
    );
    at_most(
        "tokens.refresh_token_idle_seconds",
        raw.refresh_token_idle_seconds,
        raw.refresh_token_lifetime_seconds,
        problems,
    );
    // OWASP's floor for argon2id, and a ceiling that keeps one check
    // from exhausting memory.
    if !(19_456..=1_048_576).contains(&raw.password_hash_memory_kib) {
        problems.push(Problem::new(
            "tokens.password_hash_memory_kib",
            "must be between 19456 (OWASP's minimum) and 1048576",
        ));
    }
    if !(1..=10).contains(&raw.password_hash_iterations) {
        problems.push(Problem::new(
            "tokens.password_hash_iterations",
            "must be between 1 and 10",
        ));
    }
    if !(1..=16).contains(&raw.password_hash_parallelism) {
        problems.push(Problem::new(
            "tokens.password_hash_parallelism",
            "must be between 1 and 16",
        ));
    }
    if raw.password_workers == Some(0) {
        problems.push(Problem::new(
            "tokens.password_workers",
            "must be at least 1",
        ));
    }
    positive(
        "tokens.password_queue_limit",
        raw.password_queue_limit as u64,
        problems,
    );
    let pepper = match raw.client_secret_pepper {
        None => {
            problems.push(Problem::new(
                "tokens.client_secret_pepper",
                "required: client secrets are stored under this key; set it to a ${secret:name} \
                 reference to at least 32 random bytes",
            ));
            None
        }
        Some(reference) => resolve(
            "tokens.client_secret_pepper",
            Some(&reference),
            providers,
            problems,
        ),
    };
    if let Some(pepper) = &pepper
        && pepper.expose().len() < 32
    {
        problems.push(Problem::new(
            "tokens.client_secret_pepper",
            "too short: use at least 32 random characters",
        ));
    }
    let pepper = pepper?;
    (problems.len() == before).then_some(TokenSettings {
        default_audience: raw.default_audience,
        client_secret_pepper: pepper,
        client_secret_overlap_seconds: raw.client_secret_overlap_seconds,
        refresh_token_lifetime_seconds: raw.refresh_token_lifetime_seconds,
        refresh_token_idle_seconds: raw.refresh_token_idle_seconds,
        password_hash_memory_kib: raw.password_hash_memory_kib,
        password_hash_iterations: raw.password_hash_iterations,
        password_hash_parallelism: raw.password_hash_parallelism,
        password_workers: raw.password_workers,
        password_queue_limit: raw.password_queue_limit,
    })
}

fn build_custody(
    raw: RawCustody,
    providers: &SecretProviders,
    problems: &mut Problems,
) -> Option<CustodySettings> {
    let before = problems.len();
    if raw.master_keys.is_empty() {
        problems.push(Problem::new(
            "custody.master_keys",
            "required: at least one master key version, e.g. \
             [[custody.master_keys]] version = 1, key = \"${secret:master-key-v1}\"",
        ));
    }
    let mut master_keys: Vec<MasterKeySetting> = Vec::new();
    for (index, entry) in raw.master_keys.iter().enumerate() {
        let key_name = format!("custody.master_keys[{index}]");
        if entry.version == 0 || i32::try_from(entry.version).is_err() {
            problems.push(Problem::new(
                &key_name,
                "version must be between 1 and 2147483647",
            ));
        }
        if master_keys.iter().any(|k| k.version == entry.version) {
            problems.push(Problem::new(
                &key_name,
                format!("version {} is listed twice", entry.version),
            ));
        }
        let Some(key) = resolve(&key_name, Some(&entry.key), providers, problems) else {
            continue;
        };
        if !crate::is_base64_32_bytes(key.expose()) {
            problems.push(Problem::new(
                &key_name,
                "key must be 32 random bytes in standard base64 (e.g. `head -c 32 /dev/urandom | base64`)",
            ));
        }
        master_keys.push(MasterKeySetting {
            version: entry.version,
            key,
        });
    }
    let current = match raw.current_master_key_version {
        Some(current) => current,
        None => {
            // With a single version there is nothing to choose.
            match raw.master_keys.as_slice() {
                [only] => only.version,
                _ => {
                    problems.push(Problem::new(
                        "custody.current_master_key_version",
                        "required when more than one master key version is configured",
                    ));
                    0
                }
            }
        }
    };
    if current != 0 && !raw.master_keys.iter().any(|k| k.version == current) {
        problems.push(Problem::new(
            "custody.current_master_key_version",
            format!("version {current} is not among custody.master_keys"),
        ));
    }
    (problems.len() == before).then_some(CustodySettings {
        current_master_key_version: current,
        master_keys,
    })
}
