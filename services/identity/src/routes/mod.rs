//! HTTP routes, one module per resource.

mod clients;
mod health;
mod internal;
mod keys;
mod oauth;
mod tenants;
mod well_known;

use actix_web::web;

pub use health::{get_healthz, get_metrics, get_readyz};
pub use keys::master_key_status;

/// Largest admin JSON body accepted.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// Registers every route of the service. Routes are tried in order: the
/// hot ones (token endpoint, JWKS) come before the rarer dynamic ones.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(get_healthz))
        .route("/readyz", web::get().to(get_readyz))
        .route("/metrics", web::get().to(get_metrics))
        .route(
            "/internal/v1/revocations",
            web::get().to(internal::get_revocations),
        )
        .service(
            web::scope("/admin/v1")
                .app_data(
                    web::JsonConfig::default()
                        .limit(ADMIN_BODY_LIMIT)
                        .error_handler(crate::error::json_error),
                )
                .route("/tenants", web::post().to(tenants::post_tenant))
                .route("/tenants/{tenant}", web::get().to(tenants::get_tenant))
                .route(
                    "/tenants/{tenant}",
                    web::delete().to(tenants::delete_tenant),
                )
                .route("/tenants/{tenant}/keys", web::get().to(keys::get_keys))
                .route(
                    "/tenants/{tenant}/keys/rotate",
                    web::post().to(keys::post_rotate),
                )
                .route(
                    "/tenants/{tenant}/keys/{kid}/revoke",
                    web::post().to(keys::post_revoke),
                )
                .route("/tenants/{tenant}/audit", web::get().to(keys::get_audit))
                .route(
                    "/tenants/{tenant}/clients",
                    web::post().to(clients::post_client),
                )
                .route(
                    "/tenants/{tenant}/clients/{client}",
                    web::delete().to(clients::delete_client),
                )
                .route(
                    "/tenants/{tenant}/clients/{client}/secret",
                    web::post().to(clients::post_client_secret),
                )
                .route(
                    "/tenants/{tenant}/users",
                    web::post().to(clients::post_user),
                )
                .route(
                    "/tenants/{tenant}/users/{user}",
                    web::delete().to(clients::delete_user),
                )
                .route("/master-key", web::get().to(keys::get_master_key))
                .route("/master-key/rewrap", web::post().to(keys::post_rewrap)),
        )
        .service(
            // Every answer of the OAuth2 endpoints, errors included, must
            // not be cached (RFC 6749 §5.1).
            web::scope("/{tenant}/oauth2")
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add(("Cache-Control", "no-store"))
                        .add(("Pragma", "no-cache")),
                )
                .route("/token", web::post().to(oauth::post_token))
                .route("/introspect", web::post().to(oauth::post_introspect))
                .route("/revoke", web::post().to(oauth::post_revoke)),
        )
        .route(
            "/{tenant}/.well-known/jwks",
            web::get().to(well_known::get_jwks),
        )
        .route(
            "/{tenant}/.well-known/jwks.json",
            web::get().to(well_known::get_jwks),
        )
        .route(
            "/.well-known/oauth-authorization-server/{tenant}",
            web::get().to(well_known::get_metadata),
        )
        .route(
            "/{tenant}/.well-known/oauth-authorization-server",
            web::get().to(well_known::get_metadata),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            web::get().to(well_known::get_metadata),
        );
}
