//! Secret values and the providers that resolve `${secret:name}` references.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A secret value taken from configuration.
///
/// `Debug` and `Display` print `[REDACTED]`, so a `Secret` can sit in any
/// struct that is logged or printed without leaking. The memory is zeroized
/// when the value is dropped (through [`secrecy::SecretString`]).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value that must not be printed.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// Gives access to the value; call sites are easy to audit with grep.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A configuration value that is either a `${secret:name}` reference or a
/// literal secret written in place.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct SecretRef(String);

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reference() {
            Ok(Some(name)) => write!(f, "${{secret:{name}}}"),
            _ => f.write_str("[REDACTED]"),
        }
    }
}

impl From<String> for SecretRef {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl SecretRef {
    /// The referenced secret's name, `None` for a literal value.
    fn reference(&self) -> Result<Option<&str>, SecretError> {
        let raw = self.0.as_str();
        let Some(rest) = raw.strip_prefix("${secret:") else {
            return if raw.contains("${secret:") {
                Err(SecretError::MalformedReference)
            } else {
                Ok(None)
            };
        };
        let name = rest
            .strip_suffix('}')
            .ok_or(SecretError::MalformedReference)?;
        if is_valid_secret_name(name) {
            Ok(Some(name))
        } else {
            Err(SecretError::InvalidName {
                name: name.to_owned(),
            })
        }
    }

    /// Resolves the reference with the first provider that knows the name,
    /// or returns the literal value.
    pub fn resolve(&self, providers: &SecretProviders) -> Result<Secret, SecretError> {
        match self.reference()? {
            Some(name) => providers.resolve(name),
            None => Ok(Secret::new(self.0.clone())),
        }
    }
}

/// Secret names may only use characters that are safe as file names and
/// environment variable suffixes, so a reference can never escape the
/// file provider's directory.
fn is_valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The value contains `${secret:` but is not exactly one reference.
    #[error("malformed secret reference: write exactly `${{secret:name}}`")]
    MalformedReference,
    /// The name has characters outside `[A-Za-z0-9._-]` or starts with a dot.
    #[error("invalid secret name `{name}`: use letters, digits, `-`, `_` and `.` only")]
    InvalidName {
        /// The offending name.
        name: String,
    },
    /// No configured provider knows the name.
    #[error("secret `{name}` not found (looked in: {looked_in})")]
    NotFound {
        /// The secret's name.
        name: String,
        /// A human-readable list of the places tried, in order.
        looked_in: String,
    },
    /// A secret file can be read by users other than its owner.
    #[error(
        "secret file {path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`",
        path = .path.display()
    )]
    InsecureFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file exists but could not be read.
    #[error("cannot read secret file {path}", path = .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The secret exists but is empty.
    #[error("secret `{name}` is empty")]
    Empty {
        /// The secret's name.
        name: String,
    },
}

/// One place secrets are looked up.
#[derive(Debug, Clone)]
pub enum SecretProvider {
    /// `KEYSILO_SECRET_<NAME>`, the name upper-cased with `-` and `.` as `_`.
    Env(BTreeMap<String, String>),
    /// A directory holding one file per secret, readable by its owner only.
    File(PathBuf),
}

impl SecretProvider {
    /// The environment variable that holds secret `name`.
    pub fn env_var_name(name: &str) -> String {
        let suffix: String = name
            .chars()
            .map(|c| match c {
                '-' | '.' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        format!("KEYSILO_SECRET_{suffix}")
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Self::Env(_) => format!("env {}", Self::env_var_name(name)),
            Self::File(dir) => format!("file {}", dir.join(name).display()),
        }
    }

    fn lookup(&self, name: &str) -> Result<Option<String>, SecretError> {
        match self {
            Self::Env(vars) => Ok(vars.get(&Self::env_var_name(name)).cloned()),
            Self::File(dir) => read_secret_file(&dir.join(name)),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Option<String>, SecretError> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SecretError::Unreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::InsecureFile {
            path: path.to_owned(),
            mode,
        });
    }
    let contents = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    // Editors and `echo` add a final newline that is not part of the secret.
    Ok(Some(contents.trim_end_matches(['\n', '\r']).to_owned()))
}

/// The configured providers, tried in order; the first that knows a name wins.
#[derive(Debug, Clone, Default)]
pub struct SecretProviders(Vec<SecretProvider>);

impl SecretProviders {
    /// Providers tried in the given order.
    pub fn new(providers: Vec<SecretProvider>) -> Self {
        Self(providers)
    }

    /// Resolves secret `name`.
    pub fn resolve(&self, name: &str) -> Result<Secret, SecretError> {
        if !is_valid_secret_name(name) {
            return Err(SecretError::InvalidName {
                name: name.to_owned(),
            });
        }
        for provider in &self.0 {
            if let Some(value) = provider.lookup(name)? {
                if value.is_empty() {
                    return Err(SecretError::Empty {
                        name: name.to_owned(),
                    });
                }
                return Ok(Secret::new(value));
            }
        }
        let looked_in = if self.0.is_empty() {
            "no providers configured".to_owned()
        } else {
            self.0
                .iter()
                .map(|p| p.describe(name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(SecretError::NotFound {
            name: name.to_owned(),
            looked_in,
        })
    }
}
