//! Client authentication at the token, introspection and revocation
//! endpoints, and the certificate binding of RFC 8705 tokens.

use std::sync::Arc;

use keysilo_store::ClientRecord;
use keysilo_tls::{CertificateMatch, PeerCertificate};

use super::credentials::same_digest;
use super::request::{ClientCredentials, plain};
use super::{OAuthError, OAuthService};
use crate::clock;
use crate::keys::TenantEntry;

impl OAuthService {
    /// Authenticates a client of `tenant`. Unknown, disabled and
    /// wrong-secret clients are indistinguishable; the secret is compared
    /// as keyed digests in constant time, the previous secret only until
    /// its overlap ends. A `tls_client_auth` client sends no secret: the
    /// connection's verified client certificate must be the registered one
    /// (RFC 8705 §2.1). A public client presents only its `client_id`.
    /// Each client has exactly one method; the others always fail.
    pub(super) async fn authenticate(
        &self,
        tenant: &TenantEntry,
        credentials: &ClientCredentials,
        peer: Option<&PeerCertificate>,
    ) -> Result<Arc<ClientRecord>, OAuthError> {
        let failed = OAuthError::InvalidClient {
            basic: credentials.basic,
        };
        let presented = credentials
            .secret
            .as_ref()
            .map(|secret| self.secrets.hash(secret))
            .transpose()
            .map_err(OAuthError::internal)?;
        let client = if !plain(&credentials.id, 128) {
            None
        } else {
            self.clients.get(&tenant.tenant.id, &credentials.id).await?
        };
        let Some(client) = client else {
            return Err(failed);
        };
        let authenticated = match (&client.tls_client_auth, presented, &client.secret_hash) {
            (Some(registered), None, _) => {
                let matched = peer.is_some_and(|peer| {
                    CertificateMatch::parse(&registered.parameter, &registered.value)
                        .is_ok_and(|expected| expected.matches(peer))
                });
                if !matched {
                    tracing::info!(
                        client = %client.id,
                        certificate = peer.is_some(),
                        verified = peer.is_some_and(|p| p.verified),
                        "tls_client_auth failed: no verified client certificate with the registered name"
                    );
                }
                matched
            }
            (None, Some(presented), Some(current)) => {
                let previous = client
                    .previous_secret_hash
                    .as_deref()
                    .zip(client.previous_secret_expires_at)
                    .is_some_and(|(hash, until)| {
                        until > clock::now() && same_digest(&presented, hash)
                    });
                same_digest(&presented, current) || previous
            }
            // A public client (secure mode) has nothing to present but
            // its id, in the body.
            (None, None, None) => client.public && !credentials.basic,
            _ => false,
        };
        if authenticated {
            Ok(client)
        } else {
            Err(failed)
        }
    }
}

/// The certificate thumbprint the client's tokens are bound to (RFC 8705
/// §3), or `None` when it did not register for bound tokens.
pub fn certificate_binding(
    client: &ClientRecord,
    peer: Option<&PeerCertificate>,
) -> Result<Option<String>, OAuthError> {
    if !client.certificate_bound {
        return Ok(None);
    }
    peer.map(|peer| Some(peer.thumbprint.clone()))
        .ok_or_else(|| {
            OAuthError::InvalidRequest(
                "this client's tokens are bound to its certificate: connect with mutual TLS".into(),
            )
        })
}
