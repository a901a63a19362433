//! Settings of the edge validator (`services/edge`): `[edge]`, `[redis]`,
//! `[telemetry]` and `[secrets]`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::secret::{Secret, SecretRef};
use crate::settings::{
    at_most, check_http_url, long_enough, positive, providers, redis_section, resolve, section,
    telemetry_section,
};
use crate::{ConfigError, Problem, RedisSettings, TelemetrySettings};

/// Everything the edge validator is configured with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EdgeSettings {
    /// `[edge]`.
    pub edge: EdgeSection,
    /// Redis, for the revocation feed.
    pub redis: RedisSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// HTTPS on the listener; plain HTTP when `None`.
    pub tls: Option<crate::TlsSettings>,
}

/// `[edge]`
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EdgeSection {
    /// Address to bind.
    pub host: String,
    /// Port to bind; `0` picks a free one.
    pub port: u16,
    /// The identity service's public base: tokens must have
    /// `iss = {issuer_base}/{tenant}`; no other issuer is trusted.
    pub issuer_base: String,
    /// Where to reach the identity service (JWKS, revocation snapshot);
    /// `issuer_base` when unset.
    pub identity_url: String,
    /// The audience tokens must carry.
    pub audience: String,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    pub clock_skew_seconds: u64,
    /// Accept `?access_token=` on `/ws` (off: it leaks into logs).
    pub allow_query_token: bool,
    /// WebSocket to relay sessions to; echo when unset.
    pub upstream_url: Option<String>,
    /// Least time between two JWKS fetches for one tenant.
    pub jwks_refetch_min_seconds: u64,
    /// Tokens whose signature is remembered.
    pub verified_cache_size: usize,
    /// How often the revocation snapshot is polled while Redis is down:
    /// the longest a revocation can go unseen then.
    pub poll_interval_seconds: u64,
    /// Key for the identity service's `/internal/v1/revocations`.
    pub identity_api_key: Secret,
    /// CA bundle that verifies the identity service's certificate when
    /// `identity_url` is https; the system roots when unset.
    pub identity_ca_file: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEdge {
    host: String,
    port: u16,
    issuer_base: Option<String>,
    identity_url: Option<String>,
    audience: Option<String>,
    clock_skew_seconds: u64,
    allow_query_token: bool,
    upstream_url: Option<String>,
    jwks_refetch_min_seconds: u64,
    verified_cache_size: usize,
    poll_interval_seconds: u64,
    identity_api_key: Option<SecretRef>,
    identity_ca_file: Option<std::path::PathBuf>,
}

impl Default for RawEdge {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8081,
            issuer_base: None,
            identity_url: None,
            audience: None,
            clock_skew_seconds: 60,
            allow_query_token: false,
            upstream_url: None,
            jwks_refetch_min_seconds: 10,
            verified_cache_size: 100_000,
            poll_interval_seconds: 5,
            identity_api_key: None,
            identity_ca_file: None,
        }
    }
}

const EDGE_SECTIONS: &[&str] = &["secrets", "edge", "redis", "telemetry", "tls"];

impl EdgeSettings {
    /// Loads the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let text = crate::read_file(file)?;
        Self::from_sources(text.as_deref(), &env)
    }

    /// Builds settings from TOML text and an explicit environment.
    pub fn from_sources(
        toml_text: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let table = crate::merged_table(toml_text, env, &mut problems);
        let providers = providers(&table, env, &mut problems);
        for key in table.keys() {
            if !EDGE_SECTIONS.contains(&key.as_str()) {
                problems.push(Problem::new(key, "unknown section"));
            }
        }
        let edge = section::<RawEdge>(&table, "edge", &mut problems).and_then(|raw| {
            let required = |value: Option<String>, key: &str, problems: &mut Vec<Problem>| {
                if value.is_none() {
                    problems.push(Problem::new(key, "required"));
                }
                value
            };
            let issuer_base = required(raw.issuer_base, "edge.issuer_base", &mut problems)
                .map(|b| check_http_url("edge.issuer_base", &b, &["http", "https"], &mut problems));
            let identity_url = raw
                .identity_url
                .map(|u| check_http_url("edge.identity_url", &u, &["http", "https"], &mut problems));
            let audience = required(raw.audience, "edge.audience", &mut problems);
            let upstream_url = raw
                .upstream_url
                .map(|u| check_http_url("edge.upstream_url", &u, &["ws", "wss"], &mut problems));
            at_most("edge.clock_skew_seconds", raw.clock_skew_seconds, crate::MAX_CLOCK_SKEW_SECONDS, &mut problems);
            positive("edge.poll_interval_seconds", raw.poll_interval_seconds, &mut problems);
            positive("edge.jwks_refetch_min_seconds", raw.jwks_refetch_min_seconds, &mut problems);
            positive("edge.verified_cache_size", raw.verified_cache_size as u64, &mut problems);
            let key = match raw.identity_api_key {
                None => {
                    problems.push(Problem::new(
                        "edge.identity_api_key",
                        "required: a ${secret:name} reference to the identity service's admin.edge_api_key",
                    ));
                    None
                }
                Some(reference) => {
                    resolve("edge.identity_api_key", Some(&reference), &providers, &mut problems)
                        .and_then(|key| long_enough("edge.identity_api_key", key, &mut problems))
                }
            };
            let issuer_base = issuer_base?;
            Some(EdgeSection {
                host: raw.host,
                port: raw.port,
                identity_url: identity_url.unwrap_or_else(|| issuer_base.clone()),
                issuer_base,
                audience: audience?,
                clock_skew_seconds: raw.clock_skew_seconds,
                allow_query_token: raw.allow_query_token,
                upstream_url,
                jwks_refetch_min_seconds: raw.jwks_refetch_min_seconds,
                verified_cache_size: raw.verified_cache_size,
                poll_interval_seconds: raw.poll_interval_seconds,
                identity_api_key: key?,
                identity_ca_file: raw.identity_ca_file,
            })
        });
        let redis = redis_section(&table, &providers, &mut problems);
        let telemetry = telemetry_section(&table, &mut problems);
        let tls = crate::tls::tls_section(&table, &mut problems);
        match (edge, redis, telemetry, tls) {
            (Some(edge), Some(redis), Some(telemetry), Some(tls)) if problems.is_empty() => {
                Ok(Self {
                    edge,
                    redis,
                    telemetry,
                    tls,
                })
            }
            _ => Err(ConfigError(problems)),
        }
    }
}
