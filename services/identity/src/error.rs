//! The one place where failures become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

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
    /// A dependency (PostgreSQL, Redis) is down.
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: logged with its cause chain, answered with a bare 500.
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
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
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (error, description) = match self {
            Self::NotFound => ("not_found", "no such resource"),
            Self::BadRequest(message) => ("invalid_request", message.as_str()),
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
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error,
            error_description: description,
        })
    }
}
