//! The admin API's JSON bodies: `POST /admin/v1/tenants`, `…/clients` and
//! `…/users`. Each input is deserialized as each of the routes' own body
//! types (`routes::{CreateTenant, CreateClient, CreateUser}`) and validated
//! with their `validate`, exactly as the routes do; failures are rendered as
//! the API renders them (`error::json_error` for bodies serde refuses,
//! `ApiError` otherwise).
//!
//! Invariants: no panic; every failure renders as a 4xx; a tenant id's
//! `parse`, `FromStr`, `Deserialize` and `Display` agree; and a
//! `tls_client_auth` registration that is accepted is stored in a form
//! (`parameter()`, `value()`) that parses again to the same registration,
//! since that is what client authentication reads back.

#![no_main]

use actix_web::ResponseError as _;
use actix_web::error::JsonPayloadError;
use actix_web::test::TestRequest;
use keysilo_identity::error::{ApiError, json_error};
use keysilo_identity::routes::{CreateClient, CreateTenant, CreateUser};
use keysilo_tls::CertificateMatch;
use keysilo_types::{Kid, TenantId};
use libfuzzer_sys::fuzz_target;

/// As the admin routes answer a body serde refuses.
fn refused_body(err: serde_json::Error) {
    let request = TestRequest::post().to_http_request();
    let response = json_error(JsonPayloadError::Deserialize(err), &request).error_response();
    assert_eq!(response.status().as_u16(), 400);
}

/// As the admin routes answer a refused value.
fn refused(err: ApiError) {
    assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
    assert_eq!(err.error_response().status().as_u16(), 400);
}

/// The identifier invariants, on the `id` member if it is a string.
fn identifiers(data: &[u8]) {
    let Ok(serde_json::Value::Object(members)) = serde_json::from_slice(data) else {
        return;
    };
    let Some(id) = members.get("id").and_then(|v| v.as_str()) else {
        return;
    };
    let parsed = TenantId::parse(id);
    assert_eq!(parsed, id.parse::<TenantId>());
    let deserialized = serde_json::from_value::<TenantId>(serde_json::Value::from(id));
    assert_eq!(parsed.as_ref().ok(), deserialized.as_ref().ok());
    if let Ok(tenant) = parsed {
        assert_eq!(tenant.as_str(), id);
        assert_eq!(tenant.to_string(), id);
        assert_eq!(
            serde_json::to_value(&tenant).ok(),
            Some(serde_json::Value::from(id))
        );
    }
    // Key ids come in the same shape (path parameters of the keys routes).
    if let Ok(kid) = Kid::parse(id) {
        assert_eq!(kid.as_str(), id);
    }
}

/// What client authentication later reads back must be what was accepted.
fn stored_registration_reparses(registered: &CertificateMatch) {
    let (stored_parameter, stored_value) = (registered.parameter(), registered.value());
    let again = CertificateMatch::parse(stored_parameter, &stored_value).unwrap_or_else(|err| {
        panic!("an accepted {stored_parameter} is stored as {stored_value:?}, which fails: {err}")
    });
    assert_eq!(
        again.value(),
        stored_value,
        "the stored form is not canonical"
    );
    if let (CertificateMatch::SubjectDn(first), CertificateMatch::SubjectDn(second)) =
        (registered, &again)
    {
        assert!(
            first.matches(second),
            "a DN no longer matches itself once stored"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    identifiers(data);
    match serde_json::from_slice::<CreateTenant>(data) {
        Ok(body) => {
            if let Err(err) = body.validate() {
                refused(err.into());
            }
        }
        Err(err) => refused_body(err),
    }
    match serde_json::from_slice::<CreateClient>(data) {
        Ok(body) => match body.validate() {
            Ok(new) => {
                if let Some(certificate) = new.certificate() {
                    stored_registration_reparses(certificate);
                }
            }
            Err(err) => refused(err.into()),
        },
        Err(err) => refused_body(err),
    }
    match serde_json::from_slice::<CreateUser>(data) {
        Ok(body) => {
            if let Err(err) = body.validate() {
                refused(err.into());
            }
        }
        Err(err) => refused_body(err),
    }
});
