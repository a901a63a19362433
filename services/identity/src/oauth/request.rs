//! What the OAuth2 endpoints receive, as domain types: the grant types a
//! client can be registered for, the credentials a client presented, and
//! the form's parameters. The routes build these from HTTP.

use std::collections::HashMap;

use keysilo_tls::PeerCertificate;
use zeroize::Zeroizing;

/// A grant type a client can be registered for and the token endpoint
/// serves. The one list behind registration, the discovery metadata and
/// the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §4.3.
    Password,
    /// RFC 6749 §6.
    RefreshToken,
}

impl GrantType {
    /// Every grant type, in the order documents list them.
    pub const ALL: [Self; 3] = [Self::ClientCredentials, Self::Password, Self::RefreshToken];

    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
        }
    }

    /// The grant type named `value`, if it is one.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == value)
    }

    /// Every `grant_type` value.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.into_iter().map(Self::as_str).collect()
    }
}

/// Credentials a client presented: its id, and its secret unless it
/// authenticates with its TLS certificate (RFC 8705 `tls_client_auth`).
pub struct ClientCredentials {
    pub(crate) id: String,
    pub(crate) secret: Option<Zeroizing<String>>,
    pub(crate) basic: bool,
}

impl ClientCredentials {
    /// Credentials from HTTP Basic (`basic`) or from the body.
    pub fn new(id: String, secret: Option<Zeroizing<String>>, basic: bool) -> Self {
        Self { id, secret, basic }
    }
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .field("basic", &self.basic)
            .finish_non_exhaustive()
    }
}

/// One request to the token, introspection or revocation endpoint: who
/// is calling, over what connection, with which parameters (each at most
/// once, the client's credentials already taken out).
pub struct OAuthRequest<'a> {
    /// What the client presented, or why that was malformed.
    pub credentials: Result<ClientCredentials, super::OAuthError>,
    /// The connection's client certificate, if any.
    pub peer: Option<&'a PeerCertificate>,
    /// The form's other parameters.
    pub params: HashMap<String, String>,
}

/// Whether a value may be looked up: no control characters (PostgreSQL
/// refuses NUL in text) and a sane length.
pub fn plain(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && !value.chars().any(char::is_control)
}
