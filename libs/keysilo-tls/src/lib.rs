//! TLS for the Keysilo listeners, through OpenSSL.
//!
//! - [`TlsServer`] holds a listener's certificate, key and client CAs,
//!   hands actix-web an acceptor, and reloads the files when they change
//!   (a broken replacement is refused and the old material stays).
//! - [`PeerCertificate::of_connection`] reads a connection's client
//!   certificate once; the services store it for their handlers.
//! - [`CertificateMatch`] recognises an RFC 8705 `tls_client_auth` client;
//!   [`DistinguishedName`] reads and compares RFC 4514 names.
//! - [`TlsMetrics`] exports days remaining and reload counts.
//! - [`certs`] generates development certificates, describes and checks
//!   them (the `certs` command).
//!
//! Nothing here reads the wall clock: callers pass the time in.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod certs;
mod dn;
mod metrics;
mod peer;
mod server;

pub use dn::{DistinguishedName, DnError};
pub use metrics::TlsMetrics;
pub use peer::{CertificateMatch, MatchError, PeerCertificate};
pub use server::{Reload, TlsError, TlsServer, TlsStatus};

use openssl::asn1::{Asn1Time, Asn1TimeRef};

/// Seconds since the epoch of an ASN.1 time.
pub(crate) fn unix_of(time: &Asn1TimeRef) -> Result<i64, openssl::error::ErrorStack> {
    let diff = Asn1Time::from_unix(0)?.diff(time)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}
