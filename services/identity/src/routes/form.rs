//! The OAuth2 endpoints' HTTP input: the form body (RFC 6749 §3.2) and
//! the client's credentials from HTTP Basic or the body (§2.3.1), turned
//! into the domain's [`OAuthRequest`].

use std::collections::HashMap;

use actix_web::{HttpRequest, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt as _;
use keysilo_tls::PeerCertificate;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::oauth::OAuthError;
use crate::oauth::request::{ClientCredentials, OAuthRequest};

/// Largest form body accepted by the OAuth2 endpoints.
const FORM_LIMIT: usize = 16 * 1024;

/// Reads the body, refusing more than [`FORM_LIMIT`] bytes with a 413.
async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest("unreadable body".into()))?;
        if body.len() + chunk.len() > FORM_LIMIT {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The request as the OAuth service takes it: a form body is required,
/// read and parsed; the credentials are taken out of it (or from Basic).
pub async fn oauth_request<'r>(
    req: &'r HttpRequest,
    payload: web::Payload,
) -> Result<OAuthRequest<'r>, ApiError> {
    require_form(req)?;
    let body = read_body(payload).await?;
    let mut params = parse_form(&body)?;
    let credentials = client_credentials(req, &mut params);
    Ok(OAuthRequest {
        credentials,
        peer: req.conn_data::<PeerCertificate>(),
        params,
    })
}

/// Parameters of a form body; a repeated parameter is an error
/// (RFC 6749 §3.1).
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.1: a parameter sent without a value is omitted.
        if value.is_empty() {
            continue;
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::InvalidRequest(format!(
                "parameter `{name}` is repeated"
            )));
        }
    }
    Ok(params)
}

/// Checks that the body is a form (RFC 6749 §3.2).
pub fn require_form(req: &HttpRequest) -> Result<(), OAuthError> {
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form {
        Ok(())
    } else {
        Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ))
    }
}

/// Decodes one `application/x-www-form-urlencoded` value (RFC 6749
/// §2.3.1): `+` is a space, `%XX` a byte.
fn form_decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Takes the client's credentials from HTTP Basic (RFC 6749 §2.3.1, values
/// form-encoded) or from the body; using both is an error.
pub fn client_credentials(
    req: &HttpRequest,
    params: &mut HashMap<String, String>,
) -> Result<ClientCredentials, OAuthError> {
    let basic_failed = || OAuthError::InvalidClient { basic: true };
    let basic = match req.headers().get("authorization") {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| basic_failed())?;
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_owned())
        }
    };
    let body_id = params.remove("client_id");
    let body_secret = params.remove("client_secret").map(Zeroizing::new);
    if let Some(encoded) = basic {
        if body_secret.is_some() {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method, not two".into(),
            ));
        }
        let decoded = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Zeroizing::new)
            .ok_or_else(basic_failed)?;
        let (id, secret) = decoded.split_once(':').ok_or_else(basic_failed)?;
        let id = form_decode(id).ok_or_else(basic_failed)?;
        let secret = Zeroizing::new(form_decode(secret).ok_or_else(basic_failed)?);
        if body_id.as_ref().is_some_and(|body| body != &id) {
            return Err(OAuthError::InvalidRequest(
                "client_id differs from the authenticated client".into(),
            ));
        }
        return Ok(ClientCredentials::new(id, Some(secret), true));
    }
    // A `client_id` alone is a `tls_client_auth` client, or nobody.
    match body_id {
        Some(id) => Ok(ClientCredentials::new(id, body_secret, false)),
        None => Err(OAuthError::InvalidClient { basic: false }),
    }
}
