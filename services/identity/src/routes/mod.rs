//! HTTP routes, one module per resource.

mod health;

use actix_web::web;

pub use health::{get_healthz, get_metrics, get_readyz};

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(get_healthz))
        .route("/readyz", web::get().to(get_readyz))
        .route("/metrics", web::get().to(get_metrics));
}
