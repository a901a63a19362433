//! The OpenAPI 3 description served at the edge's `/openapi.json`, built
//! from [`crate::routes::endpoints`] so that it documents exactly the
//! routes the edge registers.

use serde_json::{Value, json};

use crate::routes::Endpoint;

fn empty(description: &str) -> Value {
    json!({ "description": description })
}

fn origin_header() -> Value {
    json!({
        "name": "Origin", "in": "header", "required": false,
        "description": "Checked against the token's allowed_origins",
        "schema": { "type": "string" }
    })
}

/// `GET /auth`.
pub fn auth() -> Value {
    json!({
        "summary": "Forward-auth: is the bearer token valid for this Origin?",
        "tags": ["edge"],
        "security": [{ "bearer": [] }, {}],
        "parameters": [origin_header()],
        "responses": {
            "200": {
                "description": "Valid; who the caller is",
                "headers": {
                    "X-Auth-Tenant": { "schema": { "type": "string" } },
                    "X-Auth-Subject": { "schema": { "type": "string" } },
                    "X-Auth-Client": { "schema": { "type": "string" } },
                    "X-Auth-Scope": { "schema": { "type": "string" } }
                }
            },
            "401": empty("No token, or not a valid one (WWW-Authenticate says which)"),
            "403": empty("The Origin is not allowed for this token"),
            "503": empty("No revocation snapshot merged since start yet; retry after Retry-After")
        }
    })
}

/// `GET /ws`.
pub fn ws() -> Value {
    json!({
        "summary": "The WebSocket gate: upgrade when the token is valid",
        "tags": ["edge"],
        "security": [{ "bearer": [] }, {}],
        "parameters": [
            origin_header(),
            {
                "name": "access_token", "in": "query", "required": false,
                "description": "Only when edge.allow_query_token is on",
                "schema": { "type": "string" }
            }
        ],
        "responses": {
            "101": empty("Upgraded"),
            "400": empty("Not a WebSocket upgrade"),
            "401": empty("No token, or not a valid one"),
            "403": empty("The Origin is not allowed for this token"),
            "502": empty("The upstream is unreachable"),
            "503": empty("No revocation snapshot merged since start yet; retry after Retry-After"),
            "504": empty("The upstream did not answer in time")
        }
    })
}

/// `GET /healthz`.
pub fn healthz() -> Value {
    json!({
        "summary": "The process is alive", "tags": ["operations"], "security": [],
        "responses": { "200": { "description": "Alive", "content": { "application/json": { "schema": {
            "type": "object", "required": ["status"], "properties": { "status": { "type": "string" } }
        } } } } }
    })
}

/// `GET /readyz`.
pub fn readyz() -> Value {
    let body = json!({ "application/json": { "schema": {
        "type": "object", "required": ["status", "checks"],
        "properties": { "status": { "type": "string" }, "checks": { "type": "object" } }
    } } });
    json!({
        "summary": "Redis and the identity service answer", "tags": ["operations"], "security": [],
        "responses": {
            "200": { "description": "Ready", "content": body },
            "503": { "description": "A dependency is down", "content": body }
        }
    })
}

/// `GET /metrics`.
pub fn metrics() -> Value {
    json!({
        "summary": "Prometheus metrics", "tags": ["operations"], "security": [],
        "responses": {
            "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } },
            "500": empty("The metrics could not be rendered")
        }
    })
}

/// `GET /openapi.json`.
pub fn openapi() -> Value {
    json!({
        "summary": "This document", "tags": ["operations"], "security": [],
        "responses": { "200": { "description": "OpenAPI 3.0 description", "content": { "application/json": { "schema": { "type": "object" } } } } }
    })
}

/// The whole document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let paths: serde_json::Map<String, Value> = endpoints
        .iter()
        .map(|e| (e.path.to_owned(), json!({ "get": (e.operation)() })))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Keysilo edge validator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Token validation for data-plane nodes. Contract: docs/edge.md."
        },
        "paths": paths,
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer", "description": "An access token of the identity service" }
        } }
    })
}
