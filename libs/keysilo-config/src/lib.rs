//! Keysilo configuration: typed [`Settings`] read from a TOML file plus
//! environment overrides, with secrets resolved through providers.
//!
//! - A file (optional) gives the base values; every key has a default
//!   except the secrets a service cannot run without.
//! - `KEYSILO_<SECTION>__<KEY>=value` overrides `[section] key`. The value
//!   is read as a TOML literal when it is one (`8080`, `true`, `["a"]`) and as
//!   a string otherwise; quote it (`'"8080"'`) to force a string. Variables
//!   without `__` are not configuration (the stack script uses some).
//! - Secret settings hold `${secret:name}` references, resolved by the
//!   providers listed in `[secrets] providers` (default `["env", "file"]`),
//!   first match wins: `env` reads `KEYSILO_SECRET_<NAME>` (upper-cased,
//!   `-` and `.` as `_`); `file` reads `<file_dir>/<name>` and refuses a file
//!   readable by group or others.
//!
//! Loading never stops at the first problem: [`ConfigError`] lists them all,
//! which is what `config validate` prints.
//!
//! ```
//! use std::collections::BTreeMap;
//! use keysilo_config::Settings;
//!
//! let env = BTreeMap::from([
//!     ("KEYSILO_SECRET_ADMIN_API_KEY".to_owned(), "a".repeat(40)),
//!     ("KEYSILO_SECRET_MASTER_KEY_V1".to_owned(), "A".repeat(43) + "="),
//!     ("KEYSILO_SECRET_PEPPER".to_owned(), "p".repeat(40)),
//!     ("KEYSILO_SERVER__PORT".to_owned(), "9000".to_owned()),
//! ]);
//! let toml = r#"
//!     [admin]
//!     api_key = "${secret:admin-api-key}"
//!     [tokens]
//!     client_secret_pepper = "${secret:pepper}"
//!     [[custody.master_keys]]
//!     version = 1
//!     key = "${secret:master-key-v1}"
//! "#;
//! let settings = Settings::from_sources(Some(toml), &env).unwrap();
//! assert_eq!(settings.server.port, 9000);
//! assert_eq!(format!("{:?}", settings.admin.api_key), "[REDACTED]");
//! ```
//!
//! ## Guarantees
//! - A resolved secret is a [`Secret`]: its `Debug` and `Display` print
//!   `[REDACTED]`, and problems never quote a secret's value.
//!
//! ## Non-guarantees
//! - Literal secrets written in the file are accepted; keeping them out of
//!   the file (with references) is the operator's choice.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod edge;
mod secret;
mod settings;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;

/// The largest clock skew any verifier (identity or edge) may be
/// configured to accept: what a revocation must outlast a token's `exp` by.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 3600;

pub use edge::{EdgeSection, EdgeSettings};
pub use secret::{Secret, SecretError, SecretProvider, SecretProviders, SecretRef};
pub use settings::{
    AdminSettings, CustodySettings, DatabaseSettings, KeySettings, LimitSettings, LogFormat,
    MasterKeySetting, RedisSettings, ServerSettings, Settings, SslMode, TelemetrySettings,
    TokenSettings,
};
pub use tls::{ClientAuth, ClientIdentity, TlsSettings, TlsVersion};

/// One thing wrong with the configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `database.port` or `admin.api_key`.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

type Problems = Vec<Problem>;

/// The configuration is unusable; every problem found is listed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} problem(s)):\n{}", .0.len(), list(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Settings {
    /// Loads the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let text = read_file(file)?;
        Self::from_sources(text.as_deref(), &env)
    }

    /// Builds settings from TOML text and an explicit environment.
    pub fn from_sources(
        toml_text: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let table = merged_table(toml_text, env, &mut problems);
        let providers = settings::providers(&table, env, &mut problems);
        let settings = settings::build(&table, &providers, &mut problems);
        match settings {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(ConfigError(problems)),
        }
    }
}

/// Reads the configuration file, if one was given.
fn read_file(file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    match file {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path).map(Some).map_err(|err| {
            ConfigError(vec![Problem::new(
                path.display().to_string(),
                format!("cannot read configuration file: {err}"),
            )])
        }),
    }
}

/// The file's table with the environment's overrides applied.
fn merged_table(
    toml_text: Option<&str>,
    env: &BTreeMap<String, String>,
    problems: &mut Problems,
) -> toml::Table {
    let mut table = match toml_text.map(str::parse::<toml::Table>) {
        None => toml::Table::new(),
        Some(Ok(table)) => table,
        Some(Err(err)) => {
            problems.push(Problem::new("(file)", format!("not valid TOML: {err}")));
            toml::Table::new()
        }
    };
    overlay_env(&mut table, env, problems);
    table
}

/// Applies `KEYSILO_<SECTION>__<KEY>` variables on top of the file.
fn overlay_env(table: &mut toml::Table, env: &BTreeMap<String, String>, problems: &mut Problems) {
    for (name, value) in env {
        let Some(path) = name.strip_prefix("KEYSILO_") else {
            continue;
        };
        if path.starts_with("SECRET_") || !path.contains("__") {
            continue;
        }
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if !insert_at(table, &segments, env_value(value)) {
            problems.push(Problem::new(
                segments.join("."),
                format!("{name} overrides a key that is not a table"),
            ));
        }
    }
}

/// Sets `path` in `table`, creating intermediate tables; false when a
/// non-table value is in the way.
fn insert_at(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => true,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => insert_at(inner, rest, value),
            _ => false,
        },
    }
}

/// Reads an environment value as a TOML literal when it is one.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Whether `value` is exactly 32 bytes in standard base64.
fn is_base64_32_bytes(value: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .is_ok_and(|bytes| bytes.len() == 32)
}
