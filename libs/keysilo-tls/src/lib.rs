//! TLS for the Keysilo listeners, through OpenSSL.
//!
//! - [`TlsServer`] holds a listener's certificate, key and client CAs,
//!   hands actix-web an acceptor, and reloads the files when they change
//!   (a broken replacement is refused and the old material stays).
//! - [`on_connect`] reads each connection's client certificate into a
//!   [`PeerCertificate`], which handlers find with `req.conn_data()`.
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

/// The `on_connect` hook of an actix-web server listening with TLS: stores
/// the connection's client certificate, if any, for `req.conn_data()`.
pub fn on_connect(
    identity: keysilo_config::ClientIdentity,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
    move |connection, extensions| {
        type Stream = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;
        if let Some(stream) = connection.downcast_ref::<Stream>()
            && let Some(peer) = PeerCertificate::of_connection(stream.ssl(), identity)
        {
            extensions.insert(peer);
        }
    }
}
