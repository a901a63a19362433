//! `/internal/v1`: what edge validators read from the identity service.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::same_secret_as_any;
use crate::clock;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /internal/v1/revocations`: every disabled tenant, client and user,
/// revoked key and unexpired revoked `jti`, for an edge to resynchronise
/// after (re)connecting to the event feed, or to poll while Redis is down.
/// **Permissions:** the edge key (`admin.edge_api_key`) or the platform
/// admin key.
pub async fn get_revocations(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admin = &state.settings.admin;
    let keys: Vec<&str> = std::iter::once(admin.api_key.expose())
        .chain(admin.edge_api_key.as_ref().map(|k| k.expose()))
        .collect();
    same_secret_as_any(&req, &keys)?;
    let now = clock::now();
    let snapshot = state.store.revocation_snapshot(now).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "generated_at": clock::unix_of(now),
            "tenants": snapshot.tenants,
            "kids": snapshot.kids,
            "clients": snapshot.clients,
            "users": snapshot.users,
            "jtis": snapshot
                .jtis
                .iter()
                .map(|(tenant, jti, exp)| serde_json::json!([tenant, jti, clock::unix_of(*exp)]))
                .collect::<Vec<_>>(),
        })))
}
