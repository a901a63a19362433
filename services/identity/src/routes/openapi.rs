//! The OpenAPI 3 description served at `/openapi.json`.
//!
//! Each function below is the operation object of one entry of
//! [`super::endpoints`]; [`document`] assembles them under the paths and
//! methods the router registers, so an operation cannot be documented
//! without existing or exist without being documented. Schemas say what
//! the handlers really send, errors included (one `Error` shape); the
//! property-based API test (`integration-tests/tests/it/api_property.rs`)
//! checks every answer against them.

use keysilo_types::TENANT_ID_PATTERN;
use serde_json::{Value, json};

use super::Endpoint;
use crate::oauth::GrantType;
use crate::oauth::request::{ACCESS_TOKEN_TYPE, AUTH_TOKEN_TYPE};
use crate::tenants::{AUTH_TOKEN_TTL_RANGE, REFRESH_GRACE_RANGE, TOKEN_TTL_RANGE};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string" }
    })
}

fn tenant_parameter() -> Value {
    json!({
        "name": "tenant", "in": "path", "required": true,
        "description": "Tenant id; unknown, disabled and malformed ids are 404",
        "schema": { "type": "string", "example": "acme" }
    })
}

/// Adds the error answers `codes` to `responses`.
fn with_errors(mut responses: Value, codes: &[&str]) -> Value {
    if let Some(map) = responses.as_object_mut() {
        for code in codes {
            let description = match *code {
                "400" => "Malformed request",
                "401" => "Missing or wrong credentials",
                "403" => "Not allowed for this caller",
                "404" => "No such resource",
                "409" => "Conflicts with an existing resource",
                "413" => "Body too large",
                "429" => "Rate limited; see Retry-After",
                "503" => "A dependency is unavailable; see Retry-After",
                _ => "Error",
            };
            map.insert((*code).to_owned(), error_response(description));
        }
    }
    responses
}

fn operation(
    summary: &str,
    tag: &str,
    security: Value,
    parameters: Value,
    responses: Value,
) -> Value {
    json!({
        "summary": summary,
        "tags": [tag],
        "security": security,
        "parameters": parameters,
        "responses": responses,
    })
}

fn none() -> Value {
    json!([])
}

fn admin() -> Value {
    json!([{ "adminBearer": [] }])
}

fn client_auth() -> Value {
    json!([{ "clientBasic": [] }, {}])
}

fn form_body(properties: Value, required: &[&str]) -> Value {
    json!({
        "required": true,
        "content": { "application/x-www-form-urlencoded": { "schema": {
            "type": "object", "properties": properties, "required": required
        } } }
    })
}

fn json_body(name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema(name) } } })
}

fn with_body(mut operation: Value, body: Value) -> Value {
    if let Some(map) = operation.as_object_mut() {
        map.insert("requestBody".into(), body);
    }
    operation
}

const OAUTH_ERRORS: &[&str] = &["400", "401", "404", "413", "429", "503"];
const ADMIN_ERRORS: &[&str] = &["400", "401", "403", "404", "413", "503"];

fn client_fields() -> Value {
    json!({
        "client_id": { "type": "string" },
        "client_secret": { "type": "string" }
    })
}

/// `POST /{tenant}/oauth2/token`.
pub fn token() -> Value {
    let mut properties = client_fields();
    if let Some(map) = properties.as_object_mut() {
        for (name, value) in [
            (
                "grant_type",
                json!({ "type": "string", "enum": GrantType::token_endpoint_names() }),
            ),
            ("scope", json!({ "type": "string" })),
            ("username", json!({ "type": "string" })),
            ("password", json!({ "type": "string" })),
            ("refresh_token", json!({ "type": "string" })),
            ("subject_token", json!({ "type": "string" })),
            (
                "subject_token_type",
                json!({ "type": "string", "enum": [AUTH_TOKEN_TYPE] }),
            ),
            (
                "requested_token_type",
                json!({ "type": "string", "enum": [ACCESS_TOKEN_TYPE] }),
            ),
        ] {
            map.insert(name.into(), value);
        }
    }
    let responses = with_errors(
        json!({ "200": json_response("Tokens issued", schema("TokenResponse")) }),
        OAUTH_ERRORS,
    );
    with_body(
        operation(
            "Issue tokens (RFC 6749)",
            "oauth2",
            client_auth(),
            json!([tenant_parameter()]),
            responses,
        ),
        form_body(properties, &["grant_type"]),
    )
}

/// `POST /{tenant}/oauth2/auth-token` (secure mode).
pub fn auth_token() -> Value {
    let mut properties = client_fields();
    if let Some(map) = properties.as_object_mut() {
        map.insert(
            "subject".into(),
            json!({ "type": "string", "minLength": 1, "maxLength": 255 }),
        );
        map.insert("public_client_id".into(), json!({ "type": "string" }));
        map.insert("scope".into(), json!({ "type": "string" }));
    }
    let responses = with_errors(
        json!({ "200": json_response("A single-use auth token", schema("AuthToken")) }),
        OAUTH_ERRORS,
    );
    with_body(
        operation(
            "Mint an auth token for a browser sign-in (secure mode)",
            "oauth2",
            client_auth(),
            json!([tenant_parameter()]),
            responses,
        ),
        form_body(properties, &["subject", "public_client_id"]),
    )
}

/// `OPTIONS /{tenant}/oauth2/token` and `/revoke`: the CORS preflight.
pub fn preflight() -> Value {
    let responses = with_errors(
        json!({ "204": { "description": "CORS headers when the Origin is a public client's registered origin; none otherwise" } }),
        &["404", "429", "503"],
    );
    operation(
        "CORS preflight for browsers (public clients)",
        "oauth2",
        none(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// `POST /{tenant}/oauth2/introspect`.
pub fn introspect() -> Value {
    let mut properties = client_fields();
    if let Some(map) = properties.as_object_mut() {
        map.insert("token".into(), json!({ "type": "string" }));
        map.insert("token_type_hint".into(), json!({ "type": "string" }));
    }
    let responses = with_errors(
        json!({ "200": json_response("Token state (RFC 7662)", schema("Introspection")) }),
        OAUTH_ERRORS,
    );
    with_body(
        operation(
            "Introspect a token",
            "oauth2",
            client_auth(),
            json!([tenant_parameter()]),
            responses,
        ),
        form_body(properties, &["token"]),
    )
}

/// `POST /{tenant}/oauth2/revoke`.
pub fn revoke() -> Value {
    let mut properties = client_fields();
    if let Some(map) = properties.as_object_mut() {
        map.insert("token".into(), json!({ "type": "string" }));
        map.insert("token_type_hint".into(), json!({ "type": "string" }));
    }
    let responses = with_errors(
        json!({ "200": { "description": "Revoked, or nothing to revoke (RFC 7009)" } }),
        OAUTH_ERRORS,
    );
    with_body(
        operation(
            "Revoke a token",
            "oauth2",
            client_auth(),
            json!([tenant_parameter()]),
            responses,
        ),
        form_body(properties, &["token"]),
    )
}

/// `GET /{tenant}/.well-known/jwks` (and `.json`).
pub fn jwks() -> Value {
    let responses = with_errors(
        json!({
            "200": json_response("The tenant's published keys", schema("Jwks")),
            "304": { "description": "Unchanged since the ETag sent in If-None-Match" }
        }),
        &["404", "503"],
    );
    operation(
        "The tenant's JWKS",
        "discovery",
        none(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// The RFC 8414 metadata routes.
pub fn metadata() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("Authorization server metadata (RFC 8414)", schema("Metadata")) }),
        &["404", "503"],
    );
    operation(
        "The tenant's metadata",
        "discovery",
        none(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// `GET /healthz`.
pub fn healthz() -> Value {
    let body = json!({ "type": "object", "required": ["status"], "properties": { "status": { "type": "string" } } });
    operation(
        "The process is alive",
        "operations",
        none(),
        none(),
        json!({ "200": json_response("Alive", body) }),
    )
}

/// `GET /readyz`.
pub fn readyz() -> Value {
    operation(
        "PostgreSQL and Redis answer",
        "operations",
        none(),
        none(),
        json!({
            "200": json_response("Ready", schema("Readiness")),
            "503": json_response("A dependency is down", schema("Readiness"))
        }),
    )
}

/// `GET /metrics`.
pub fn metrics() -> Value {
    operation(
        "Prometheus metrics",
        "operations",
        none(),
        none(),
        json!({ "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } } }),
    )
}

/// `GET /openapi.json`.
pub fn openapi() -> Value {
    operation(
        "This document",
        "operations",
        none(),
        none(),
        json!({ "200": json_response("OpenAPI 3.0 description", json!({ "type": "object" })) }),
    )
}

/// `GET /internal/v1/revocations`.
pub fn revocations() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("Everything revoked or disabled", schema("RevocationSnapshot")) }),
        &["401", "503"],
    );
    operation(
        "Revocation snapshot for edge validators",
        "internal",
        json!([{ "edgeBearer": [] }]),
        none(),
        responses,
    )
}

/// `POST /admin/v1/tenants`.
pub fn create_tenant() -> Value {
    let responses = with_errors(
        json!({ "201": json_response("Created, with its first signing key", schema("Tenant")) }),
        &["400", "401", "403", "409", "413", "503"],
    );
    with_body(
        operation("Create a tenant", "tenants", admin(), none(), responses),
        json_body("TenantCreate"),
    )
}

/// `GET /admin/v1/tenants/{tenant}`.
pub fn get_tenant() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("The tenant", schema("Tenant")) }),
        ADMIN_ERRORS,
    );
    operation(
        "Read a tenant",
        "tenants",
        admin(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// `PATCH /admin/v1/tenants/{tenant}`.
pub fn patch_tenant() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("The tenant as changed", schema("Tenant")) }),
        ADMIN_ERRORS,
    );
    with_body(
        operation(
            "Change a tenant's settings (JSON merge patch)",
            "tenants",
            admin(),
            json!([tenant_parameter()]),
            responses,
        ),
        json_body("TenantPatch"),
    )
}

/// `DELETE /admin/v1/tenants/{tenant}`.
pub fn delete_tenant() -> Value {
    let responses = with_errors(
        json!({ "204": { "description": "Disabled" } }),
        ADMIN_ERRORS,
    );
    operation(
        "Disable a tenant",
        "tenants",
        admin(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// `GET /admin/v1/tenants/{tenant}/keys`.
pub fn get_keys() -> Value {
    let body = json!({ "type": "object", "required": ["keys"], "properties": { "keys": { "type": "array", "items": schema("Key") } } });
    let responses = with_errors(
        json!({ "200": json_response("The tenant's keys", body) }),
        ADMIN_ERRORS,
    );
    operation(
        "List signing keys",
        "keys",
        admin(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// `POST /admin/v1/tenants/{tenant}/keys/rotate`.
pub fn rotate() -> Value {
    let body = json!({
        "type": "object", "required": ["kid", "status"],
        "properties": { "kid": { "type": "string" }, "status": { "type": "string" }, "retired_kid": { "type": "string", "nullable": true } }
    });
    let responses = with_errors(
        json!({ "200": json_response("The new active key", body) }),
        ADMIN_ERRORS,
    );
    operation(
        "Rotate the signing key now",
        "keys",
        admin(),
        json!([tenant_parameter()]),
        responses,
    )
}

/// `POST /admin/v1/tenants/{tenant}/keys/{kid}/revoke`.
pub fn revoke_key() -> Value {
    let body = json!({
        "type": "object", "required": ["kid", "status"],
        "properties": { "kid": { "type": "string" }, "status": { "type": "string" }, "active_kid": { "type": "string", "nullable": true } }
    });
    let responses = with_errors(
        json!({ "200": json_response("Revoked", body) }),
        ADMIN_ERRORS,
    );
    operation(
        "Revoke a signing key",
        "keys",
        admin(),
        json!([tenant_parameter(), path_parameter("kid", "Key id")]),
        responses,
    )
}

/// `GET /admin/v1/tenants/{tenant}/audit`.
pub fn audit() -> Value {
    let limit = json!({
        "name": "limit", "in": "query", "required": false,
        "schema": { "type": "integer", "minimum": 1, "maximum": 1000 }
    });
    let body = json!({
        "type": "object", "required": ["events"],
        "properties": { "events": { "type": "array", "items": { "type": "object", "required": ["type", "actor", "at"] } } }
    });
    let responses = with_errors(
        json!({ "200": json_response("Newest first", body) }),
        ADMIN_ERRORS,
    );
    operation(
        "The tenant's audit trail",
        "audit",
        admin(),
        json!([tenant_parameter(), limit]),
        responses,
    )
}

/// `POST /admin/v1/tenants/{tenant}/clients`.
pub fn create_client() -> Value {
    let responses = with_errors(
        json!({ "201": json_response("Registered; the secret is shown this once", schema("Client")) }),
        ADMIN_ERRORS,
    );
    with_body(
        operation(
            "Register a client",
            "clients",
            admin(),
            json!([tenant_parameter()]),
            responses,
        ),
        json_body("ClientCreate"),
    )
}

/// `GET /admin/v1/tenants/{tenant}/clients/{client}`.
pub fn get_client() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("The client's registration (never a secret)", schema("Client")) }),
        ADMIN_ERRORS,
    );
    operation(
        "Read a client",
        "clients",
        admin(),
        json!([tenant_parameter(), path_parameter("client", "Client id")]),
        responses,
    )
}

/// `POST /admin/v1/tenants/{tenant}/subjects/{subject}/revoke`.
pub fn revoke_subject() -> Value {
    let responses = with_errors(
        json!({ "204": { "description": "Every earlier token of the subject refused, its refresh families revoked, its sessions closed" } }),
        ADMIN_ERRORS,
    );
    operation(
        "Revoke a subject (a user or a secure-mode subject)",
        "clients",
        admin(),
        json!([
            tenant_parameter(),
            path_parameter("subject", "The `sub` of its tokens")
        ]),
        responses,
    )
}

/// `DELETE /admin/v1/tenants/{tenant}/clients/{client}`.
pub fn delete_client() -> Value {
    let responses = with_errors(
        json!({ "204": { "description": "Disabled" } }),
        ADMIN_ERRORS,
    );
    operation(
        "Disable a client",
        "clients",
        admin(),
        json!([tenant_parameter(), path_parameter("client", "Client id")]),
        responses,
    )
}

/// `POST /admin/v1/tenants/{tenant}/clients/{client}/secret`.
pub fn client_secret() -> Value {
    let body = json!({
        "type": "object", "required": ["client_id", "client_secret", "previous_secret_expires_at"],
        "properties": {
            "client_id": { "type": "string" }, "client_secret": { "type": "string" },
            "previous_secret_expires_at": { "type": "string" }
        }
    });
    let responses = with_errors(
        json!({ "200": json_response("The new secret", body) }),
        ADMIN_ERRORS,
    );
    operation(
        "Rotate a client's secret",
        "clients",
        admin(),
        json!([tenant_parameter(), path_parameter("client", "Client id")]),
        responses,
    )
}

/// `POST /admin/v1/tenants/{tenant}/users`.
pub fn create_user() -> Value {
    let responses = with_errors(
        json!({ "201": json_response("Created", schema("User")) }),
        &["400", "401", "403", "404", "409", "413", "503"],
    );
    with_body(
        operation(
            "Create a user",
            "users",
            admin(),
            json!([tenant_parameter()]),
            responses,
        ),
        json_body("UserCreate"),
    )
}

/// `DELETE /admin/v1/tenants/{tenant}/users/{user}`.
pub fn delete_user() -> Value {
    let responses = with_errors(
        json!({ "204": { "description": "Disabled" } }),
        ADMIN_ERRORS,
    );
    operation(
        "Disable a user",
        "users",
        admin(),
        json!([tenant_parameter(), path_parameter("user", "User id")]),
        responses,
    )
}

/// `GET /admin/v1/master-key`.
pub fn master_key() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("Versions and the keys each wraps", json!({ "type": "object" })) }),
        &["401", "403", "503"],
    );
    operation(
        "Master key status",
        "master key",
        admin(),
        none(),
        responses,
    )
}

/// `POST /admin/v1/master-key/rewrap`.
pub fn rewrap() -> Value {
    let responses = with_errors(
        json!({ "200": json_response("Keys re-wrapped", json!({ "type": "object" })) }),
        &["401", "403", "503"],
    );
    operation(
        "Re-wrap every tenant key",
        "master key",
        admin(),
        none(),
        responses,
    )
}

fn components() -> Value {
    let string = json!({ "type": "string" });
    let range = |r: &std::ops::RangeInclusive<i32>| json!({ "type": "integer", "minimum": r.start(), "maximum": r.end() });
    let (ttl, auth_ttl, grace) = (
        range(&TOKEN_TTL_RANGE),
        range(&AUTH_TOKEN_TTL_RANGE),
        range(&REFRESH_GRACE_RANGE),
    );
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    json!({
        "securitySchemes": {
            "adminBearer": { "type": "http", "scheme": "bearer", "description": "The platform admin key, or a tenant admin's access token on tenant routes" },
            "edgeBearer": { "type": "http", "scheme": "bearer", "description": "admin.edge_api_key or the platform admin key" },
            "clientBasic": { "type": "http", "scheme": "basic", "description": "client_secret_basic; client_secret_post and tls_client_auth use the body" }
        },
        "schemas": {
            "Error": {
                "type": "object", "required": ["error"],
                "properties": { "error": string, "error_description": string }
            },
            "TokenResponse": {
                "type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
                "properties": {
                    "access_token": string, "token_type": { "type": "string", "enum": ["Bearer"] },
                    "expires_in": { "type": "integer" }, "scope": string, "refresh_token": string,
                    "issued_token_type": { "type": "string", "enum": [ACCESS_TOKEN_TYPE] }
                }
            },
            "AuthToken": {
                "type": "object", "required": ["auth_token", "expires_in"],
                "properties": {
                    "auth_token": string,
                    "expires_in": { "type": "integer", "minimum": AUTH_TOKEN_TTL_RANGE.start(), "maximum": AUTH_TOKEN_TTL_RANGE.end() }
                }
            },
            "Introspection": {
                "type": "object", "required": ["active"],
                "properties": {
                    "active": { "type": "boolean" }, "token_type": string, "scope": string,
                    "client_id": string, "sub": string, "username": string, "iss": string,
                    "aud": strings, "exp": { "type": "integer" }, "iat": { "type": "integer" },
                    "jti": string, "tid": string, "cnf": { "type": "object" },
                    "act": { "type": "object", "properties": { "sub": string } }
                }
            },
            "Jwks": {
                "type": "object", "required": ["keys"],
                "properties": { "keys": { "type": "array", "items": {
                    "type": "object", "required": ["kty", "kid"],
                    "properties": { "kty": string, "kid": string, "use": string, "alg": string, "n": string, "e": string }
                } } }
            },
            "Metadata": {
                "type": "object", "required": ["issuer", "token_endpoint", "jwks_uri"],
                "properties": { "issuer": string, "token_endpoint": string, "jwks_uri": string }
            },
            "Readiness": {
                "type": "object", "required": ["status", "checks"],
                "properties": { "status": string, "checks": { "type": "object" } }
            },
            "RevocationSnapshot": {
                "type": "object", "required": ["generated_at", "tenants", "kids", "clients", "users", "jtis"],
                "properties": {
                    "generated_at": { "type": "integer" }, "tenants": { "type": "array" },
                    "kids": { "type": "array" }, "clients": { "type": "array" },
                    "users": { "type": "array" }, "jtis": { "type": "array" },
                    "subjects": { "type": "array" }
                }
            },
            "TenantCreate": {
                "type": "object", "required": ["id", "display_name"], "additionalProperties": false,
                "properties": {
                    "id": { "type": "string", "pattern": TENANT_ID_PATTERN },
                    "display_name": string,
                    "token_ttl_seconds": ttl.clone(),
                    "auth_token_ttl_seconds": auth_ttl.clone(),
                    "refresh_reuse_grace_seconds": grace.clone()
                }
            },
            "TenantPatch": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "display_name": string,
                    "token_ttl_seconds": ttl,
                    "auth_token_ttl_seconds": auth_ttl,
                    "refresh_reuse_grace_seconds": grace
                }
            },
            "Tenant": {
                "type": "object",
                "required": ["id", "display_name", "token_ttl_seconds", "auth_token_ttl_seconds", "refresh_reuse_grace_seconds", "issuer", "jwks_uri", "created_at", "disabled"],
                "properties": {
                    "id": string, "display_name": string, "token_ttl_seconds": { "type": "integer" },
                    "auth_token_ttl_seconds": { "type": "integer" }, "refresh_reuse_grace_seconds": { "type": "integer" },
                    "issuer": string, "jwks_uri": string, "created_at": string,
                    "disabled": { "type": "boolean" }, "disabled_at": string
                }
            },
            "Key": {
                "type": "object", "required": ["kid", "status", "created_at", "master_key_version"],
                "properties": {
                    "kid": string, "status": { "type": "string", "enum": ["next", "active", "retired", "revoked"] },
                    "created_at": string, "master_key_version": { "type": "integer" },
                    "activated_at": string, "activate_after": string, "publish_until": string
                }
            },
            "ClientCreate": {
                "type": "object", "required": ["name", "grant_types"], "additionalProperties": false,
                "properties": {
                    "name": string,
                    "grant_types": { "type": "array", "items": { "type": "string", "enum": GrantType::names() } },
                    "scopes": strings, "audience": strings, "allowed_origins": strings,
                    "token_endpoint_auth_method": { "type": "string", "enum": ["client_secret_basic", "client_secret_post", "tls_client_auth", "none"] },
                    "tls_client_auth_subject_dn": string, "tls_client_auth_san_dns": string,
                    "tls_client_auth_san_uri": string, "tls_client_auth_san_ip": string,
                    "tls_client_auth_san_email": string,
                    "tls_client_certificate_bound_access_tokens": { "type": "boolean" }
                }
            },
            "Client": {
                "type": "object",
                "required": ["client_id", "name", "grant_types", "scopes", "audience", "allowed_origins", "created_at", "token_endpoint_auth_method", "tls_client_certificate_bound_access_tokens"],
                "properties": {
                    "client_id": string, "client_secret": string, "name": string,
                    "grant_types": strings, "scopes": strings, "audience": strings,
                    "allowed_origins": strings, "created_at": string,
                    "token_endpoint_auth_method": string,
                    "tls_client_certificate_bound_access_tokens": { "type": "boolean" },
                    "disabled": { "type": "boolean" }
                }
            },
            "UserCreate": {
                "type": "object", "required": ["username", "password"], "additionalProperties": false,
                "properties": { "username": string, "password": { "type": "string", "format": "password" }, "roles": strings }
            },
            "User": {
                "type": "object", "required": ["id", "username", "roles", "created_at"],
                "properties": { "id": string, "username": string, "roles": strings, "created_at": string }
            }
        }
    })
}

/// The whole document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut paths = serde_json::Map::new();
    for endpoint in endpoints {
        let item = paths
            .entry(endpoint.path.to_owned())
            .or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(
                endpoint.method.as_str().to_ascii_lowercase(),
                (endpoint.operation)(),
            );
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Keysilo identity service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant OAuth2 authorization server. Contract: docs/api.md."
        },
        "paths": paths,
        "components": components(),
    })
}
