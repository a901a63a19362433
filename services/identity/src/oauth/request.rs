//! What the OAuth2 endpoints receive, as domain types: the grant types a
//! client can be registered for, the credentials a client presented, and
//! the form's parameters. The routes build these from HTTP.

use std::collections::HashMap;

use keysilo_tls::PeerCertificate;
use zeroize::Zeroizing;

/// A grant type a client can be registered for. The one list behind
/// registration, the discovery metadata and the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §4.3.
    Password,
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 8693 token exchange: a public client redeems an auth token.
    TokenExchange,
    /// Not a grant of the token endpoint: a confidential client may mint
    /// auth tokens at `/{T}/oauth2/auth-token` (secure mode).
    AuthToken,
}

/// The `subject_token_type` of an auth token (secure mode).
pub const AUTH_TOKEN_TYPE: &str = "urn:keysilo:params:oauth:token-type:auth-token";

/// The `issued_token_type` of a token exchange (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl GrantType {
    /// Every grant type a client can be registered for, in the order
    /// documents list them.
    pub const ALL: [Self; 5] = [
        Self::ClientCredentials,
        Self::Password,
        Self::RefreshToken,
        Self::TokenExchange,
        Self::AuthToken,
    ];

    /// The grant types a public client may hold.
    pub const PUBLIC: [Self; 2] = [Self::TokenExchange, Self::RefreshToken];

    /// The `grant_type` value (or, for [`GrantType::AuthToken`], the
    /// registered name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::AuthToken => "auth_token",
        }
    }

    /// Whether the token endpoint serves it.
    pub fn at_token_endpoint(self) -> bool {
        self != Self::AuthToken
    }

    /// The grant type named `value`, if it is one.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == value)
    }

    /// Every name a client can be registered with.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.into_iter().map(Self::as_str).collect()
    }

    /// Every `grant_type` value of the token endpoint.
    pub fn token_endpoint_names() -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|g| g.at_token_endpoint())
            .map(Self::as_str)
            .collect()
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

/// Longest `sub` accepted from outside (the tenant's own user id).
const MAX_SUBJECT: usize = 255;

/// Whether `value` can be a subject (`sub`): 1 to 255 characters, none of
/// them control characters.
pub fn is_subject(value: &str) -> bool {
    plain(value, MAX_SUBJECT * 4) && value.chars().count() <= MAX_SUBJECT
}
