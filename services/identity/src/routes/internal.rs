//! `/internal/v1`: what edge validators read from the identity service.

use actix_web::{HttpRequest, HttpResponse, web};

use keysilo_coord::RevocationSnapshot;
use keysilo_types::{Kid, TenantId};

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
    let stored = state.store.revocation_snapshot(now).await?;
    // The database's ids were valid when written; one that no longer
    // parses is corruption, and half a snapshot would hide it.
    let tenant = |id: &str| TenantId::parse(id).map_err(|err| ApiError::Unexpected(err.into()));
    let pairs = |rows: &[(String, String)]| -> Result<Vec<(TenantId, String)>, ApiError> {
        rows.iter()
            .map(|(t, id)| Ok((tenant(t)?, id.clone())))
            .collect()
    };
    let snapshot = RevocationSnapshot {
        generated_at: clock::unix_of(now),
        tenants: stored
            .tenants
            .iter()
            .map(|t| tenant(t))
            .collect::<Result<_, _>>()?,
        kids: stored
            .kids
            .iter()
            .map(|(t, k)| {
                let kid = Kid::parse(k).map_err(|err| ApiError::Unexpected(err.into()))?;
                Ok((tenant(t)?, kid))
            })
            .collect::<Result<_, ApiError>>()?,
        clients: pairs(&stored.clients)?,
        users: pairs(&stored.users)?,
        jtis: stored
            .jtis
            .iter()
            .map(|(t, jti, exp)| Ok((tenant(t)?, jti.clone(), clock::unix_of(*exp))))
            .collect::<Result<_, ApiError>>()?,
        subjects: stored
            .subjects
            .iter()
            .map(|(t, subject, before, until)| {
                Ok((
                    tenant(t)?,
                    subject.clone(),
                    clock::unix_of(*before),
                    clock::unix_of(*until),
                ))
            })
            .collect::<Result<_, ApiError>>()?,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(snapshot))
}
