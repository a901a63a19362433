//! The grants of the token endpoint, one module each.

pub mod client_credentials;
pub mod password;
pub mod refresh_token;

use keysilo_store::ClientRecord;

use super::OAuthService;
use crate::keys::TenantEntry;

/// The role that may obtain the `admin` scope.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// What every grant works with: the service, the tenant, the
/// authenticated client and the certificate its tokens are bound to.
pub struct Context<'a> {
    /// The service (settings, store, caches).
    pub service: &'a OAuthService,
    /// The tenant of the endpoint.
    pub tenant: &'a TenantEntry,
    /// The authenticated client.
    pub client: &'a ClientRecord,
    /// The thumbprint tokens are bound to (RFC 8705), if any.
    pub binding: Option<&'a str>,
}
