//! RFC 6749 §5.2 errors. `Display` is the RFC's error code; the HTTP
//! status and headers are decided in `crate::error`.

use std::time::Duration;

use keysilo_store::StoreError;

/// An error of the token, introspection or revocation endpoint.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// A parameter is missing, repeated or malformed.
    #[error("invalid_request")]
    InvalidRequest(String),
    /// Client authentication failed; `basic` tells whether the client used
    /// HTTP Basic (then the answer carries `WWW-Authenticate`).
    #[error("invalid_client")]
    InvalidClient {
        /// Whether credentials came in an `Authorization: Basic` header.
        basic: bool,
    },
    /// The grant (password, refresh token) is invalid, expired or revoked.
    #[error("invalid_grant")]
    InvalidGrant(&'static str),
    /// The client is not registered for this grant type.
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// The grant type is unknown.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// The requested scope exceeds what the client or user may hold.
    #[error("invalid_scope")]
    InvalidScope,
    /// Too many requests; retry after the given time. RFC 6749 has no
    /// code for rate limiting; this one tells clients to come back later.
    #[error("temporarily_unavailable")]
    RateLimited(Duration),
    /// The password pool is saturated.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    /// The tenant's key cannot sign (no usable active key).
    #[error("temporarily_unavailable")]
    NoSigningKey,
    /// PostgreSQL failed or refused; answered like any store error.
    #[error("server_error")]
    Store(#[from] StoreError),
    /// Something that should not fail did (randomness, signing, hashing);
    /// logged with its cause, answered with a bare 500.
    #[error("server_error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl OAuthError {
    /// An unexpected failure of `err`.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    /// A human-readable description, safe to show the caller.
    pub fn description(&self) -> &str {
        match self {
            Self::InvalidRequest(message) => message,
            Self::InvalidClient { .. } => "client authentication failed",
            Self::InvalidGrant(message) => message,
            Self::UnauthorizedClient => "the client is not registered for this grant type",
            Self::UnsupportedGrantType => "unsupported grant_type",
            Self::InvalidScope => "the requested scope is not allowed",
            Self::RateLimited(_) => "too many requests; retry later",
            Self::TemporarilyUnavailable | Self::NoSigningKey => {
                "the service is temporarily unavailable; retry later"
            }
            Self::Store(_) | Self::Internal(_) => "unexpected error",
        }
    }
}
