//! `[tls]`, shared by both services: the listener's certificate, the lowest
//! protocol version, and how client certificates are asked for.

use std::path::PathBuf;

use serde::Deserialize;

use crate::settings::{at_most, positive, section};
use crate::{Problem, Problems};

/// The lowest TLS version a listener accepts; nothing below 1.2 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only (the default).
    Tls13,
}

/// Whether and how a listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// A certificate is asked for and any is accepted; it counts as
    /// verified only when it chains to a configured CA. Enough for
    /// certificate-bound tokens, which need possession, not a chain.
    Request,
    /// A certificate is optional, but one that is presented must chain to
    /// a configured CA or the handshake fails.
    VerifyIfGiven,
    /// A certificate chaining to a configured CA is required.
    Require,
}

/// Which part of a client certificate names the client in logs and in the
/// edge's `X-Client-Identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientIdentity {
    /// The subject's common name.
    Cn,
    /// The subject's organisational unit.
    Ou,
    /// The subject's organisation.
    O,
    /// The first DNS subject alternative name.
    DnsSan,
}

/// `[tls]`: present only when `enabled = true`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsSettings {
    /// PEM certificate, followed by its chain.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate; must not be readable by others.
    pub key_file: PathBuf,
    /// The lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// Seconds between two looks at the files; a change is loaded without
    /// a restart.
    pub reload_interval_seconds: u64,
    /// Whether and how client certificates are asked for.
    pub client_auth: ClientAuth,
    /// PEM bundles of the CAs client certificates must chain to; two while
    /// a CA is being replaced.
    pub client_ca_files: Vec<PathBuf>,
    /// Which part of a client certificate names the client.
    pub client_identity: ClientIdentity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    enabled: bool,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    min_version: String,
    reload_interval_seconds: u64,
    client_auth: ClientAuth,
    client_ca_files: Vec<PathBuf>,
    client_identity: ClientIdentity,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            enabled: false,
            cert_file: None,
            key_file: None,
            min_version: "1.3".into(),
            reload_interval_seconds: 10,
            client_auth: ClientAuth::None,
            client_ca_files: Vec::new(),
            client_identity: ClientIdentity::Cn,
        }
    }
}

/// Reads `[tls]`: `Ok(None)` when TLS is off, `None` when it is unusable.
pub(crate) fn tls_section(
    table: &toml::Table,
    problems: &mut Problems,
) -> Option<Option<TlsSettings>> {
    let raw = section::<RawTls>(table, "tls", problems)?;
    if !raw.enabled {
        return Some(None);
    }
    let before = problems.len();
    let min_version = match raw.min_version.trim() {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        "1.0" | "1.1" => {
            problems.push(Problem::new(
                "tls.min_version",
                "TLS 1.0 and 1.1 are refused (RFC 8996); use \"1.2\" or \"1.3\"",
            ));
            None
        }
        _ => {
            problems.push(Problem::new(
                "tls.min_version",
                "must be \"1.2\" or \"1.3\"",
            ));
            None
        }
    };
    let required = |value: Option<PathBuf>, key: &str, problems: &mut Problems| {
        if value.is_none() {
            problems.push(Problem::new(key, "required when tls.enabled = true"));
        }
        value
    };
    let cert_file = required(raw.cert_file, "tls.cert_file", problems);
    let key_file = required(raw.key_file, "tls.key_file", problems);
    positive(
        "tls.reload_interval_seconds",
        raw.reload_interval_seconds,
        problems,
    );
    at_most(
        "tls.reload_interval_seconds",
        raw.reload_interval_seconds,
        3600,
        problems,
    );
    if raw.client_ca_files.len() > 2 {
        problems.push(Problem::new(
            "tls.client_ca_files",
            "at most two bundles: the current CA and the one replacing it",
        ));
    }
    let needs_ca = matches!(
        raw.client_auth,
        ClientAuth::VerifyIfGiven | ClientAuth::Require
    );
    if needs_ca && raw.client_ca_files.is_empty() {
        problems.push(Problem::new(
            "tls.client_ca_files",
            "required when tls.client_auth is verify_if_given or require",
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(Some(TlsSettings {
        cert_file: cert_file?,
        key_file: key_file?,
        min_version: min_version?,
        reload_interval_seconds: raw.reload_interval_seconds,
        client_auth: raw.client_auth,
        client_ca_files: raw.client_ca_files,
        client_identity: raw.client_identity,
    }))
}
