//! The OAuth2 endpoints' form handling: the input is an `Authorization`
//! header value, a newline, then the `application/x-www-form-urlencoded`
//! body (no newline: the body alone, no header). The body goes through
//! `routes::form::parse_form`, the header and parameters through
//! `routes::form::client_credentials` on a request built with actix's
//! `TestRequest`, then `scope::parse` and `request::plain` as the grants
//! use them, and errors are rendered as responses.
//!
//! Invariants: no panic; a parsed form has no empty value and survives
//! re-encoding unchanged; HTTP Basic plus a `client_secret` in the body is
//! refused; on success the credentials are taken out of the parameters; a
//! parsed scope survives `join` and `parse` again.

#![no_main]

use actix_web::ResponseError as _;
use actix_web::http::header::HeaderValue;
use actix_web::test::TestRequest;
use keysilo_identity::error::ApiError;
use keysilo_identity::oauth::OAuthError;
use keysilo_identity::oauth::request::plain;
use keysilo_identity::routes::form::{client_credentials, parse_form, require_form};
use keysilo_identity::oauth::scope;
use libfuzzer_sys::fuzz_target;

fn render(err: OAuthError) {
    let response = ApiError::from(err).error_response();
    assert!(response.status().is_client_error());
}

fuzz_target!(|data: &[u8]| {
    let (authorization, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };

    let mut params = match parse_form(body) {
        Ok(params) => params,
        Err(err) => {
            assert!(matches!(err, OAuthError::InvalidRequest(_)));
            render(err);
            return;
        }
    };
    assert!(
        params.values().all(|v| !v.is_empty()),
        "an empty value kept"
    );
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    assert_eq!(
        parse_form(encoded.as_bytes()).expect("a re-encoded form parses"),
        params,
        "a form changed when encoded again"
    );

    let mut request =
        TestRequest::post().insert_header(("content-type", "application/x-www-form-urlencoded"));
    let basic = match authorization.map(HeaderValue::from_bytes) {
        Some(Ok(value)) => {
            let basic = value.to_str().is_ok_and(|v| {
                v.split_once(' ')
                    .unwrap_or((v, ""))
                    .0
                    .eq_ignore_ascii_case("basic")
            });
            request = request.insert_header(("authorization", value));
            basic
        }
        _ => false,
    };
    let request = request.to_http_request();
    assert!(require_form(&request).is_ok());

    let had_secret = params.contains_key("client_secret");
    match client_credentials(&request, &mut params) {
        Ok(_credentials) => {
            assert!(
                !(basic && had_secret),
                "Basic and client_secret both accepted"
            );
            assert!(!params.contains_key("client_id") && !params.contains_key("client_secret"));
        }
        Err(err) => {
            assert!(matches!(
                err,
                OAuthError::InvalidClient { .. } | OAuthError::InvalidRequest(_)
            ));
            render(err);
        }
    }

    for value in params.values() {
        let _ = plain(value, 128);
    }
    if let Some(raw) = params.get("scope") {
        if let Some(scopes) = scope::parse(raw) {
            assert!(scopes.iter().all(|s| scope::is_scope_token(s)));
            assert_eq!(scope::parse(&scope::join(&scopes)), Some(scopes));
        }
    }
});
