//! RFC 8414 authorization server metadata of a tenant.

use super::request::GrantType;
use super::scope::ADMIN;

/// The metadata of the tenant whose issuer is `issuer`. Only what the
/// server really offers: no authorization endpoint (so no response types)
/// and no OpenID Connect members, since no ID tokens are issued.
/// `mutual_tls`: the listener asks for client certificates, so RFC 8705 is
/// offered.
pub fn metadata(issuer: &str, mutual_tls: bool) -> serde_json::Value {
    let mut client_auth = vec!["client_secret_basic", "client_secret_post"];
    if mutual_tls {
        client_auth.push("tls_client_auth");
    }
    // Public clients (secure mode) send only their `client_id` to the token
    // and revocation endpoints; introspection is for confidential clients.
    let mut public_too = client_auth.clone();
    public_too.push("none");
    let mut document = serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        // The token-exchange URN is listed whether or not the tenant has a
        // public client yet: the document describes the server.
        "grant_types_supported": GrantType::token_endpoint_names(),
        "response_types_supported": [],
        // The scopes the tenant's clients may request, plus `admin`.
        "scopes_supported": [ADMIN],
        "token_endpoint_auth_methods_supported": public_too,
        "introspection_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": public_too,
    });
    // RFC 8705 §3.3: tokens can be bound to the client's certificate.
    if mutual_tls && let Some(members) = document.as_object_mut() {
        members.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            true.into(),
        );
    }
    document
}
