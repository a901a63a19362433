//! The admin API's JSON bodies: `POST /admin/v1/tenants`, `…/clients` and
//! `…/users`. Each input is deserialized as each body and validated as the
//! route does: `NewClient::parse(…).authenticated_by(…)` (with
//! `CertificateMatch::parse` for `tls_client_auth`), `NewUser::parse`, and
//! `TenantId::parse`; failures are rendered as the API renders them
//! (`error::json_error` for bodies serde refuses, `ApiError` otherwise).
//!
//! The body structs (`routes::{clients,tenants}::Create*`) are in private
//! modules, so they are mirrored here field for field with the same serde
//! attributes; keep them in step with `services/identity/src/routes/`.
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
use keysilo_identity::oauth::registry::{NewClient, NewUser};
use keysilo_tls::CertificateMatch;
use keysilo_types::{Kid, TenantId};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use zeroize::Zeroizing;

/// `routes::tenants::CreateTenant`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CreateTenant {
    id: String,
    display_name: String,
    token_ttl_seconds: Option<i64>,
}

/// `routes::clients::CreateClient`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateClient {
    name: String,
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    tls_client_auth_san_email: Option<String>,
    #[serde(default)]
    tls_client_certificate_bound_access_tokens: Option<bool>,
}

/// `routes::clients::CreateUser`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

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

fn tenant(body: CreateTenant) {
    let id = &body.id;
    let parsed = TenantId::parse(id);
    assert_eq!(parsed, id.parse::<TenantId>());
    let deserialized = serde_json::from_value::<TenantId>(serde_json::Value::from(id.as_str()));
    assert_eq!(parsed.as_ref().ok(), deserialized.as_ref().ok());
    if let Ok(tenant) = parsed {
        assert_eq!(tenant.as_str(), id);
        assert_eq!(tenant.to_string(), *id);
        assert_eq!(
            serde_json::to_value(&tenant).ok(),
            Some(serde_json::Value::from(id.as_str()))
        );
    }
    // Key ids come in the same shape (path parameters of the keys routes).
    if let Ok(kid) = Kid::parse(id) {
        assert_eq!(kid.as_str(), id);
    }
}

/// What client authentication later reads back must be what was accepted.
fn stored_registration_reparses(parameter: &str, value: &str) {
    let Ok(registered) = CertificateMatch::parse(parameter, value) else {
        return;
    };
    let (stored_parameter, stored_value) = (registered.parameter(), registered.value());
    assert_eq!(stored_parameter, parameter);
    let again = CertificateMatch::parse(stored_parameter, &stored_value).unwrap_or_else(|err| {
        panic!("accepted {parameter} {value:?} is stored as {stored_value:?}, which fails: {err}")
    });
    assert_eq!(
        again.value(),
        stored_value,
        "the stored form is not canonical"
    );
    if let (CertificateMatch::SubjectDn(first), CertificateMatch::SubjectDn(second)) =
        (&registered, &again)
    {
        assert!(
            first.matches(second),
            "a DN no longer matches itself once stored"
        );
    }
}

fn client(body: CreateClient) {
    let certificate = [
        (
            "tls_client_auth_subject_dn",
            body.tls_client_auth_subject_dn,
        ),
        ("tls_client_auth_san_dns", body.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", body.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", body.tls_client_auth_san_ip),
        ("tls_client_auth_san_email", body.tls_client_auth_san_email),
    ];
    for (parameter, value) in &certificate {
        if let Some(value) = value {
            stored_registration_reparses(parameter, value);
        }
    }
    let new = NewClient::parse(
        &body.name,
        body.grant_types,
        body.scopes,
        body.audience,
        body.allowed_origins,
    )
    .and_then(|new| {
        new.authenticated_by(
            body.token_endpoint_auth_method.as_deref(),
            &certificate,
            body.tls_client_certificate_bound_access_tokens,
        )
    });
    if let Err(err) = new {
        refused(err);
    }
}

fn user(body: CreateUser) {
    if let Err(err) = NewUser::parse(&body.username, Zeroizing::new(body.password), body.roles) {
        refused(err);
    }
}

fuzz_target!(|data: &[u8]| {
    match serde_json::from_slice::<CreateTenant>(data) {
        Ok(body) => tenant(body),
        Err(err) => refused_body(err),
    }
    match serde_json::from_slice::<CreateClient>(data) {
        Ok(body) => client(body),
        Err(err) => refused_body(err),
    }
    match serde_json::from_slice::<CreateUser>(data) {
        Ok(body) => user(body),
        Err(err) => refused_body(err),
    }
});
