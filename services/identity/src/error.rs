//! The one place where failures become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use keysilo_coord::CoordError;
use keysilo_store::StoreError;
use serde::Serialize;

use crate::keys::KeyError;
use crate::oauth::OAuthError;
use crate::oauth::registry::RegistryError;
use crate::tenants::TenantError;

/// Every error a handler can return. Its [`ResponseError`] impl is the only
/// place that decides status codes and bodies.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path or resource does not exist (or must not be disclosed).
    #[error("not found")]
    NotFound,
    /// The request is malformed; the message is safe to show the caller.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than allowed.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The request's headers are too large.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request was not complete (its body, say) in time.
    #[error("request timeout")]
    RequestTimeout,
    /// No credentials were presented.
    #[error("authentication required")]
    Unauthorized,
    /// The presented credentials are wrong.
    #[error("invalid credentials")]
    InvalidToken,
    /// The resource exists already; the message is safe to show.
    #[error("{0}")]
    Conflict(String),
    /// An OAuth2 endpoint error (RFC 6749 §5.2).
    #[error(transparent)]
    OAuth(OAuthError),
    /// The caller is authenticated but may not do this.
    #[error("forbidden")]
    Forbidden,
    /// A dependency (PostgreSQL, Redis) is down or a lock stayed busy.
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: logged with its cause chain, answered with a bare 500.
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Self::Unavailable(err.into()),
            StoreError::NotFound => Self::NotFound,
            StoreError::InvalidInput => {
                Self::BadRequest("a value contains characters that are not allowed".into())
            }
            other => Self::Unexpected(other.into()),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::NotFound => Self::NotFound,
            KeyError::Store(err) => err.into(),
            KeyError::Coord(CoordError::Unavailable(_) | CoordError::LockBusy { .. })
            | KeyError::LockLost => Self::Unavailable(err.into()),
            other => Self::Unexpected(other.into()),
        }
    }
}

impl From<OAuthError> for ApiError {
    fn from(err: OAuthError) -> Self {
        match err {
            OAuthError::Store(err) => err.into(),
            OAuthError::NoSigningKey => Self::Unavailable(err.into()),
            OAuthError::Internal(cause) => Self::Unexpected(anyhow::Error::from_boxed(cause)),
            other => Self::OAuth(other),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(err: TenantError) -> Self {
        match err {
            TenantError::Invalid(message) => Self::BadRequest(message),
            TenantError::NotFound => Self::NotFound,
            TenantError::Exists => Self::Conflict(err.to_string()),
            TenantError::Keys(err) => err.into(),
            TenantError::Store(err) => err.into(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid(message) => Self::BadRequest(message),
            RegistryError::NotFound => Self::NotFound,
            RegistryError::UsernameTaken => Self::Conflict(err.to_string()),
            RegistryError::Busy(_) => Self::Unavailable(err.into()),
            RegistryError::Keys(err) => err.into(),
            RegistryError::Store(err) => err.into(),
            RegistryError::Internal(cause) => Self::Unexpected(anyhow::Error::from_boxed(cause)),
        }
    }
}

/// `{"error","error_description"}`, as the contract prescribes.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::OAuth(err) => match err {
                OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
                OAuthError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                OAuthError::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::OAuth(err) = self {
            return oauth_response(self.status_code(), err);
        }
        let (error, description) = match self {
            Self::NotFound => ("not_found", "no such resource"),
            Self::BadRequest(message) => ("invalid_request", message.as_str()),
            Self::PayloadTooLarge => ("invalid_request", "the request body is too large"),
            Self::RequestTimeout => ("invalid_request", "the request took too long to arrive"),
            Self::HeadersTooLarge => ("invalid_request", "the request headers are too large"),
            Self::Unauthorized => ("invalid_request", "a bearer token is required"),
            Self::InvalidToken => ("invalid_token", "the bearer token is not valid"),
            Self::Conflict(message) => ("conflict", message.as_str()),
            Self::Forbidden => ("forbidden", "not allowed for this caller"),
            Self::OAuth(_) => ("invalid_request", ""),
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "dependency unavailable");
                (
                    "temporarily_unavailable",
                    "a dependency is unavailable; retry later",
                )
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error");
                ("server_error", "unexpected error")
            }
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            // RFC 6750 §3.1: no error code when no credentials were sent.
            Self::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Self::InvalidToken => {
                response.insert_header(("WWW-Authenticate", r#"Bearer error="invalid_token""#));
            }
            Self::Unavailable(_) => {
                response.insert_header(("Retry-After", "1"));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error,
            error_description: description,
        })
    }
}

/// RFC 6749 §5.2: JSON error, `no-store`, `WWW-Authenticate` for Basic
/// clients, `Retry-After` when rate limited.
fn oauth_response(status: StatusCode, err: &OAuthError) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Pragma", "no-cache"));
    match err {
        OAuthError::InvalidClient { basic: true } => {
            response.insert_header((
                "WWW-Authenticate",
                r#"Basic realm="keysilo", charset="UTF-8""#,
            ));
        }
        OAuthError::RateLimited(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.insert_header(("Retry-After", seconds.max(1).to_string()));
        }
        OAuthError::TemporarilyUnavailable => {
            response.insert_header(("Retry-After", "1"));
        }
        _ => {}
    }
    let code = err.to_string();
    response.json(ErrorBody {
        error: &code,
        error_description: err.description(),
    })
}

/// Turns JSON extractor failures into 400 or 413, never 500.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    let api = match &err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => {
            ApiError::BadRequest("the body must be application/json".into())
        }
        // serde's messages can quote the offending value (a password given
        // as a number, say): pass on only the ones that name a field.
        JsonPayloadError::Deserialize(inner) => {
            let message = inner.to_string();
            let names_a_field =
                message.starts_with("unknown field") || message.starts_with("missing field");
            ApiError::BadRequest(if names_a_field {
                format!("invalid JSON body: {message}")
            } else {
                format!(
                    "invalid JSON body: a value has the wrong type or shape (line {}, column {})",
                    inner.line(),
                    inner.column()
                )
            })
        }
        _ => ApiError::BadRequest("invalid JSON body".into()),
    };
    api.into()
}
