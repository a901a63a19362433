//! Who is calling the admin API.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::error::ApiError;
use crate::state::AppState;

/// Proof that the caller presented the platform admin API key. Handlers
/// that take this argument are platform-only.
#[derive(Debug, Clone, Copy)]
pub struct PlatformAdmin(());

impl PlatformAdmin {
    /// The audit actor name.
    pub const ACTOR: &'static str = "platform-admin";
}

/// The bearer token of the request, if it has one.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares digests, so the comparison takes the same time whatever the
/// lengths and contents.
fn same_secret(presented: &str, expected: &str) -> bool {
    let a = openssl::sha::sha256(presented.as_bytes());
    let b = openssl::sha::sha256(expected.as_bytes());
    openssl::memcmp::eq(&a, &b)
}

impl FromRequest for PlatformAdmin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unexpected(anyhow::anyhow!("state missing"))));
        };
        let outcome = match bearer(req) {
            None => Err(ApiError::Unauthorized),
            Some(token) if same_secret(token, state.settings.admin.api_key.expose()) => {
                Ok(PlatformAdmin(()))
            }
            Some(_) => Err(ApiError::InvalidToken),
        };
        ready(outcome)
    }
}
