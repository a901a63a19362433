//! HTTP routes, one module per resource.

mod clients;
pub mod form;
mod health;
mod internal;
mod keys;
mod oauth;
pub mod openapi;
mod tenants;
mod well_known;

use actix_web::http::Method;
use actix_web::{HttpResponse, web};

pub use clients::{CreateClient, CreateUser};
pub use health::{get_healthz, get_metrics, get_readyz};
pub use keys::master_key_status;
pub use tenants::CreateTenant;

/// Largest admin JSON body accepted.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// Which resource settings a route gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Nothing extra.
    Plain,
    /// The admin API: JSON bodies of at most [`ADMIN_BODY_LIMIT`] with
    /// JSON errors.
    Admin,
    /// The OAuth2 endpoints: every answer, errors included, is
    /// `no-store` (RFC 6749 §5.1).
    OAuth,
}

/// One operation of the HTTP API. The router registers it and
/// `/openapi.json` documents it from this same entry, so the two cannot
/// disagree about which operations exist.
pub struct Endpoint {
    /// The HTTP method.
    pub method: Method,
    /// The path pattern, `{name}` for a parameter (the same syntax in
    /// actix-web and OpenAPI).
    pub path: &'static str,
    group: Group,
    handler: fn(actix_web::Route) -> actix_web::Route,
    /// The OpenAPI operation object.
    pub operation: fn() -> serde_json::Value,
}

impl Endpoint {
    fn new(
        method: Method,
        path: &'static str,
        group: Group,
        handler: fn(actix_web::Route) -> actix_web::Route,
        operation: fn() -> serde_json::Value,
    ) -> Self {
        Self {
            method,
            path,
            group,
            handler,
            operation,
        }
    }
}

/// Every operation of the service. Routes are tried in this order: the
/// hot ones (token endpoint, JWKS) come first.
pub fn endpoints() -> Vec<Endpoint> {
    use Group::{Admin, OAuth, Plain};
    use openapi as doc;
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    let (patch, options) = (Method::PATCH, Method::OPTIONS);
    vec![
        Endpoint::new(
            post.clone(),
            "/{tenant}/oauth2/token",
            OAuth,
            |r| r.to(oauth::post_token),
            doc::token,
        ),
        Endpoint::new(
            get.clone(),
            "/{tenant}/.well-known/jwks",
            Plain,
            |r| r.to(well_known::get_jwks),
            doc::jwks,
        ),
        Endpoint::new(
            get.clone(),
            "/{tenant}/.well-known/jwks.json",
            Plain,
            |r| r.to(well_known::get_jwks),
            doc::jwks,
        ),
        Endpoint::new(
            options.clone(),
            "/{tenant}/oauth2/token",
            OAuth,
            |r| r.to(oauth::options_cors),
            doc::preflight,
        ),
        Endpoint::new(
            post.clone(),
            "/{tenant}/oauth2/auth-token",
            OAuth,
            |r| r.to(oauth::post_auth_token),
            doc::auth_token,
        ),
        Endpoint::new(
            post.clone(),
            "/{tenant}/oauth2/introspect",
            OAuth,
            |r| r.to(oauth::post_introspect),
            doc::introspect,
        ),
        Endpoint::new(
            post.clone(),
            "/{tenant}/oauth2/revoke",
            OAuth,
            |r| r.to(oauth::post_revoke),
            doc::revoke,
        ),
        Endpoint::new(
            options,
            "/{tenant}/oauth2/revoke",
            OAuth,
            |r| r.to(oauth::options_cors),
            doc::preflight,
        ),
        Endpoint::new(
            get.clone(),
            "/{tenant}/.well-known/oauth-authorization-server",
            Plain,
            |r| r.to(well_known::get_metadata),
            doc::metadata,
        ),
        Endpoint::new(
            get.clone(),
            "/{tenant}/.well-known/openid-configuration",
            Plain,
            |r| r.to(well_known::get_metadata),
            doc::metadata,
        ),
        Endpoint::new(
            get.clone(),
            "/.well-known/oauth-authorization-server/{tenant}",
            Plain,
            |r| r.to(well_known::get_metadata),
            doc::metadata,
        ),
        Endpoint::new(
            get.clone(),
            "/healthz",
            Plain,
            |r| r.to(get_healthz),
            doc::healthz,
        ),
        Endpoint::new(
            get.clone(),
            "/readyz",
            Plain,
            |r| r.to(get_readyz),
            doc::readyz,
        ),
        Endpoint::new(
            get.clone(),
            "/metrics",
            Plain,
            |r| r.to(get_metrics),
            doc::metrics,
        ),
        Endpoint::new(
            get.clone(),
            "/openapi.json",
            Plain,
            |r| r.to(get_openapi),
            doc::openapi,
        ),
        Endpoint::new(
            get.clone(),
            "/internal/v1/revocations",
            Plain,
            |r| r.to(internal::get_revocations),
            doc::revocations,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants",
            Admin,
            |r| r.to(tenants::post_tenant),
            doc::create_tenant,
        ),
        Endpoint::new(
            get.clone(),
            "/admin/v1/tenants/{tenant}",
            Admin,
            |r| r.to(tenants::get_tenant),
            doc::get_tenant,
        ),
        Endpoint::new(
            patch,
            "/admin/v1/tenants/{tenant}",
            Admin,
            |r| r.to(tenants::patch_tenant),
            doc::patch_tenant,
        ),
        Endpoint::new(
            delete.clone(),
            "/admin/v1/tenants/{tenant}",
            Admin,
            |r| r.to(tenants::delete_tenant),
            doc::delete_tenant,
        ),
        Endpoint::new(
            get.clone(),
            "/admin/v1/tenants/{tenant}/keys",
            Admin,
            |r| r.to(keys::get_keys),
            doc::get_keys,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants/{tenant}/keys/rotate",
            Admin,
            |r| r.to(keys::post_rotate),
            doc::rotate,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants/{tenant}/keys/{kid}/revoke",
            Admin,
            |r| r.to(keys::post_revoke),
            doc::revoke_key,
        ),
        Endpoint::new(
            get.clone(),
            "/admin/v1/tenants/{tenant}/audit",
            Admin,
            |r| r.to(keys::get_audit),
            doc::audit,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants/{tenant}/clients",
            Admin,
            |r| r.to(clients::post_client),
            doc::create_client,
        ),
        Endpoint::new(
            get.clone(),
            "/admin/v1/tenants/{tenant}/clients/{client}",
            Admin,
            |r| r.to(clients::get_client),
            doc::get_client,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants/{tenant}/subjects/{subject}/revoke",
            Admin,
            |r| r.to(clients::post_subject_revoke),
            doc::revoke_subject,
        ),
        Endpoint::new(
            delete.clone(),
            "/admin/v1/tenants/{tenant}/clients/{client}",
            Admin,
            |r| r.to(clients::delete_client),
            doc::delete_client,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants/{tenant}/clients/{client}/secret",
            Admin,
            |r| r.to(clients::post_client_secret),
            doc::client_secret,
        ),
        Endpoint::new(
            post.clone(),
            "/admin/v1/tenants/{tenant}/users",
            Admin,
            |r| r.to(clients::post_user),
            doc::create_user,
        ),
        Endpoint::new(
            delete,
            "/admin/v1/tenants/{tenant}/users/{user}",
            Admin,
            |r| r.to(clients::delete_user),
            doc::delete_user,
        ),
        Endpoint::new(
            get,
            "/admin/v1/master-key",
            Admin,
            |r| r.to(keys::get_master_key),
            doc::master_key,
        ),
        Endpoint::new(
            post,
            "/admin/v1/master-key/rewrap",
            Admin,
            |r| r.to(keys::post_rewrap),
            doc::rewrap,
        ),
    ]
}

/// `GET /openapi.json`: the OpenAPI 3 description of this service, built
/// from [`endpoints`]. **Permissions:** none.
pub async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(openapi::document(&endpoints()))
}

/// Registers every route of the service: one resource per path, in the
/// order of [`endpoints`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<(&'static str, Group, Vec<Endpoint>)> = Vec::new();
    for endpoint in endpoints() {
        match paths.iter_mut().find(|(path, _, _)| *path == endpoint.path) {
            Some((_, _, list)) => list.push(endpoint),
            None => paths.push((endpoint.path, endpoint.group, vec![endpoint])),
        }
    }
    for (path, group, list) in paths {
        let mut resource = web::resource(path);
        for endpoint in list {
            resource = resource.route((endpoint.handler)(web::route().method(endpoint.method)));
        }
        match group {
            Group::Plain => cfg.service(resource),
            Group::Admin => cfg.service(
                resource.app_data(
                    web::JsonConfig::default()
                        .limit(ADMIN_BODY_LIMIT)
                        .error_handler(crate::error::json_error),
                ),
            ),
            Group::OAuth => cfg.service(
                resource.wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add(("Cache-Control", "no-store"))
                        .add(("Pragma", "no-cache")),
                ),
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `$ref` in `value`.
    fn references(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner.as_str()) {
                        ("$ref", Some(target)) => found.push(target.to_owned()),
                        _ => references(inner, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| references(i, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_has_exactly_the_routed_operations_with_their_parameters() {
        let endpoints = endpoints();
        let document = openapi::document(&endpoints);
        let routed: BTreeSet<(String, String)> = endpoints
            .iter()
            .map(|e| (e.path.to_owned(), e.method.as_str().to_ascii_lowercase()))
            .collect();
        assert_eq!(
            routed.len(),
            endpoints.len(),
            "an operation is routed twice"
        );
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        assert_eq!(routed, documented);

        for endpoint in &endpoints {
            let operation = (endpoint.operation)();
            // The `{name}`s of the path are exactly the path parameters.
            let in_path: BTreeSet<&str> = endpoint
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(in_path, declared, "{}", endpoint.path);
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty())
            );
        }
        let mut found = Vec::new();
        references(&document, &mut found);
        for target in found {
            let pointer = target.trim_start_matches('#');
            assert!(
                document.pointer(pointer).is_some(),
                "{target} does not resolve"
            );
        }
    }
}
