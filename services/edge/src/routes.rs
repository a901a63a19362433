//! `/auth` (forward-auth), `/ws` (the WebSocket gate) and operations.

use keysilo_tls::PeerCertificate;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::{SinkExt as _, StreamExt as _};
use prometheus::Encoder as _;

use crate::sessions::SessionInfo;
use crate::state::{EdgeState, unix_now};
use crate::validate::{Denial, validate};
use keysilo_tokens::gate;

/// The subprotocol a browser offers next to `bearer.<jwt>`.
const SUBPROTOCOL: &str = "keysilo";

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    keysilo_tokens::bearer_token(value).map(str::to_owned)
}

/// The request's `Origin`. A header that is present but unreadable, or
/// repeated, still counts as present (as a value no rule admits), so it can
/// never make a browser request pass for a machine one.
fn origin(req: &HttpRequest) -> Option<String> {
    let mut values = req.headers().get_all(header::ORIGIN);
    let first = values.next()?;
    if values.next().is_some() {
        return Some(String::new());
    }
    Some(first.to_str().unwrap_or_default().to_owned())
}

/// Longest a frame may wait to be sent before the session is dropped: a
/// peer that stops reading must not hold the close and expiry checks up.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest the upstream WebSocket may take to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn sent<E>(send: impl std::future::Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(())))
}

/// RFC 6750 §3: no error code without a token, `invalid_token` with a bad
/// one; 403 for a refused `Origin`.
fn denied(denial: Denial) -> HttpResponse {
    match denial {
        // Retry soon: the feed fetches the snapshot again every poll.
        Denial::NotSynchronized => HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .finish(),
        Denial::Missing => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .finish(),
        Denial::Gate(gate::Denial::Origin(_)) => HttpResponse::Forbidden().finish(),
        Denial::Invalid(_) | Denial::Gate(_) => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#))
            .finish(),
    }
}

/// `GET /auth`: forward-auth for nginx `auth_request` and Envoy
/// `ext_authz`: 200 with `X-Auth-*` headers when the bearer token is
/// valid for the request's `Origin`.
pub async fn get_auth(req: HttpRequest, state: web::Data<Arc<EdgeState>>) -> HttpResponse {
    let token = bearer(&req);
    let peer = req.conn_data::<PeerCertificate>();
    match validate(&state, token.as_deref(), origin(&req).as_deref(), peer).await {
        Ok(verified) => {
            let claims = verified.claims();
            let mut response = HttpResponse::Ok();
            // Only a verified certificate's name means anything.
            let identity = peer
                .filter(|p| p.verified)
                .and_then(|p| p.identity.as_deref())
                .map(|identity| ("X-Client-Identity", identity));
            for (name, value) in [
                ("X-Auth-Tenant", claims.tenant.as_str()),
                ("X-Auth-Subject", claims.subject.as_str()),
                ("X-Auth-Client", claims.client_id.as_str()),
                ("X-Auth-Scope", claims.scope.as_str()),
            ]
            .into_iter()
            .chain(identity)
            {
                // Signed, but still not necessarily header-safe.
                if let Ok(value) = header::HeaderValue::from_str(value) {
                    response.insert_header((name, value));
                }
            }
            response.finish()
        }
        Err(denial) => denied(denial),
    }
}

/// The token of a WebSocket upgrade and whether it came as a subprotocol.
fn ws_token(req: &HttpRequest, allow_query: bool) -> (Option<String>, bool) {
    if let Some(token) = bearer(req) {
        return (Some(token), false);
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    if offered.iter().any(|p| p == SUBPROTOCOL)
        && let Some(token) = offered.iter().find_map(|p| p.strip_prefix("bearer."))
    {
        return (Some(token.to_owned()), true);
    }
    if allow_query {
        let token =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.get("access_token").cloned());
        return (token, false);
    }
    (None, false)
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the configured upstream, passing who the caller is.
async fn connect_upstream(
    url: &str,
    claims: &keysilo_tokens::AccessTokenClaims,
) -> Result<Upstream, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    for (name, value) in [
        ("x-auth-tenant", claims.tenant.as_str()),
        ("x-auth-subject", claims.subject.as_str()),
        ("x-auth-client", claims.client_id.as_str()),
        ("x-auth-scope", claims.scope.as_str()),
    ] {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// The next upstream frame, or never when there is no upstream.
async fn next_upstream(
    upstream: &mut Option<Upstream>,
) -> Option<Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
{
    match upstream {
        Some(upstream) => upstream.next().await,
        None => std::future::pending().await,
    }
}

/// `GET /ws`: validates, then upgrades; relays frames to the configured
/// upstream WebSocket (connected before the upgrade: 502 if it cannot be
/// reached), or echoes them when none is configured. The session closes
/// with 1008 when its token expires or anything it depends on is revoked.
pub async fn get_ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<Arc<EdgeState>>,
) -> Result<HttpResponse, actix_web::Error> {
    let (token, via_subprotocol) = ws_token(&req, state.settings.edge.allow_query_token);
    let peer = req.conn_data::<PeerCertificate>();
    let verified = match validate(&state, token.as_deref(), origin(&req).as_deref(), peer).await {
        Ok(verified) => verified,
        Err(denial) => return Ok(denied(denial)),
    };
    let mut upstream = match &state.settings.edge.upstream_url {
        None => None,
        Some(url) => {
            let connect = connect_upstream(url, verified.claims());
            match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect).await {
                Ok(Ok(upstream)) => Some(upstream),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "upstream WebSocket unreachable");
                    return Ok(HttpResponse::BadGateway().finish());
                }
                Err(_) => {
                    tracing::warn!("upstream WebSocket did not answer in time");
                    return Ok(HttpResponse::GatewayTimeout().finish());
                }
            }
        }
    };
    // The selected subprotocol is `keysilo`, never the token.
    let (response, mut session, mut stream) = if via_subprotocol {
        actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL])?
    } else {
        actix_ws::handle(&req, body)?
    };
    let claims = verified.claims().clone();
    let (id, mut close) = state
        .sessions
        .register(SessionInfo::of(&claims, verified.kid()));
    // A revocation applied between the validation and the registration
    // found no session to close: look again now that it is registered.
    let revoked_meanwhile = state
        .revocations
        .read()
        .map_or(true, |r| r.check(&claims, verified.kid()).is_err());
    if revoked_meanwhile {
        state.sessions.close_where("revoked", |s| {
            s.tenant == claims.tenant && s.jti == claims.jti
        });
    }
    state.metrics.sessions.inc();
    let expires_in = claims
        .expires_at
        .saturating_add(state.settings.edge.clock_skew_seconds)
        .saturating_sub(unix_now());
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let expiry = tokio::time::sleep(Duration::from_secs(expires_in));
        tokio::pin!(expiry);
        use tokio_tungstenite::tungstenite::Message as Up;
        let reason: Option<&'static str> = loop {
            tokio::select! {
                message = stream.next() => {
                    let forwarded = match (message, upstream.as_mut()) {
                        (Some(Ok(Message::Text(text))), Some(up)) => sent(up.send(Up::text(text.to_string()))).await,
                        (Some(Ok(Message::Text(text))), None) => sent(session.text(text)).await,
                        (Some(Ok(Message::Binary(bytes))), Some(up)) => sent(up.send(Up::binary(bytes))).await,
                        (Some(Ok(Message::Binary(bytes))), None) => sent(session.binary(bytes)).await,
                        (Some(Ok(Message::Ping(bytes))), _) => sent(session.pong(&bytes)).await,
                        (Some(Ok(Message::Close(_))) | None | Some(Err(_)), _) => false,
                        (Some(Ok(_)), _) => true,
                    };
                    if !forwarded { break None; }
                }
                message = next_upstream(&mut upstream) => {
                    let relayed = match message {
                        Some(Ok(Up::Text(text))) => sent(session.text(text.as_str().to_owned())).await,
                        Some(Ok(Up::Binary(bytes))) => sent(session.binary(bytes)).await,
                        Some(Ok(Up::Close(_))) | None | Some(Err(_)) => false,
                        Some(Ok(_)) => true,
                    };
                    if !relayed { break Some("upstream closed"); }
                }
                why = close.recv() => break Some(why.unwrap_or("revoked")),
                () = &mut expiry => break Some("token expired"),
            }
        };
        if let Some(mut up) = upstream {
            let _ = up.close(None).await;
        }
        if let Some(why) = reason {
            // Policy (1008) for expiry and revocation; a plain close when
            // the upstream went away.
            let code = if why == "upstream closed" {
                CloseCode::Normal
            } else {
                CloseCode::Policy
            };
            let _ = session
                .close(Some(CloseReason {
                    code,
                    description: Some(why.to_owned()),
                }))
                .await;
        }
        state.sessions.remove(id);
        state.metrics.sessions.dec();
    });
    Ok(response)
}

/// `GET /healthz`.
pub async fn get_healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when Redis (the revocation feed) and the identity
/// service (keys and snapshots) both answer within 2 s and a revocation
/// snapshot has merged since start, otherwise 503 naming what is not. The
/// edge has no database of its own.
pub async fn get_readyz(state: web::Data<Arc<EdgeState>>) -> HttpResponse {
    let limit = Duration::from_secs(2);
    let identity = state
        .http
        .get(format!("{}/healthz", state.settings.edge.identity_url))
        .send();
    let (redis, identity) = tokio::join!(
        tokio::time::timeout(limit, state.coord.ping()),
        tokio::time::timeout(limit, identity),
    );
    let redis = matches!(redis, Ok(Ok(())));
    let identity = matches!(identity, Ok(Ok(ref r)) if r.status().is_success());
    let snapshot = state
        .snapshot_merged
        .load(std::sync::atomic::Ordering::Acquire);
    let up = |ok: bool| if ok { "up" } else { "down" };
    let ready = redis && identity && snapshot;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "redis": up(redis),
            "identity": up(identity),
            "snapshot": if snapshot { "merged" } else { "missing" },
        },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn get_metrics(state: web::Data<Arc<EdgeState>>) -> HttpResponse {
    let mut buffer = Vec::new();
    if prometheus::TextEncoder::new()
        .encode(&state.metrics.registry.gather(), &mut buffer)
        .is_err()
    {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(buffer)
}

/// One operation: the router registers it and `/openapi.json` documents
/// it from this same entry.
pub struct Endpoint {
    /// The path (every edge route is a GET).
    pub path: &'static str,
    handler: fn(actix_web::Route) -> actix_web::Route,
    /// The OpenAPI operation object.
    pub operation: fn() -> serde_json::Value,
}

/// Every operation of the edge, hot ones first.
pub fn endpoints() -> Vec<Endpoint> {
    use crate::openapi as doc;
    let endpoint = |path, handler, operation| Endpoint {
        path,
        handler,
        operation,
    };
    vec![
        endpoint("/auth", |r| r.to(get_auth), doc::auth),
        endpoint("/ws", |r| r.to(get_ws), doc::ws),
        endpoint("/healthz", |r| r.to(get_healthz), doc::healthz),
        endpoint("/readyz", |r| r.to(get_readyz), doc::readyz),
        endpoint("/metrics", |r| r.to(get_metrics), doc::metrics),
        endpoint("/openapi.json", |r| r.to(get_openapi), doc::openapi),
    ]
}

/// `GET /openapi.json`: the OpenAPI 3 description of the edge.
pub async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document(&endpoints()))
}

/// Registers the routes of [`endpoints`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    for endpoint in endpoints() {
        cfg.route(endpoint.path, (endpoint.handler)(web::get()));
    }
}
