//! Liveness, readiness and metrics for operators and orchestrators.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// How long readiness waits for each dependency before calling it down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is alive. **Permissions:** none.
pub async fn get_healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    postgres: &'static str,
    redis: &'static str,
}

fn up_or_down<E: std::fmt::Display>(
    name: &str,
    outcome: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> &'static str {
    match outcome {
        Ok(Ok(())) => "up",
        Ok(Err(err)) => {
            tracing::warn!(dependency = name, error = %err, "readiness check failed");
            "down"
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness check timed out");
            "down"
        }
    }
}

/// `GET /readyz`: 200 when PostgreSQL and Redis both answer, otherwise 503
/// naming the one that does not. **Permissions:** none.
pub async fn get_readyz(state: web::Data<AppState>) -> HttpResponse {
    let (postgres, redis) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.coord.ping()),
    );
    let checks = Checks {
        postgres: up_or_down("postgres", postgres),
        redis: up_or_down("redis", redis),
    };
    let ready = checks.postgres == "up" && checks.redis == "up";
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text format. **Permissions:** none; expose it
/// only on the cluster network.
pub async fn get_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let body = state
        .metrics
        .render()
        .map_err(|err| ApiError::Unexpected(err.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
