//! The revocation feed: events from the identity service over Redis, and a
//! snapshot from its `/internal/v1/revocations` on start, after every
//! reconnect (events published meanwhile are lost), and every
//! `poll_interval_seconds` while Redis is unreachable, which bounds how
//! long a revocation can go unseen then.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use keysilo_coord::Event;
use keysilo_tokens::gate::Revocations;
use keysilo_types::{Kid, TenantId};

use crate::state::{EdgeState, unix_now};

/// Runs for ever: the subscription, and beside it a poll of the snapshot
/// every `poll_interval_seconds`. The poll bounds staleness whatever
/// happens to the subscription: Redis down, a resync that failed, or a
/// connection that hangs without closing.
pub async fn run_feed(state: Arc<EdgeState>) {
    let poll = Duration::from_secs(state.settings.edge.poll_interval_seconds);
    let poller = {
        let state = state.clone();
        async move {
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                resync(&state).await;
            }
        }
    };
    let subscriber = async move {
        loop {
            match state.coord.subscribe().await {
                Ok(events) => {
                    // Subscribed first, then the snapshot: nothing published
                    // in between is missed (applying twice is harmless).
                    resync(&state).await;
                    let mut events = std::pin::pin!(events);
                    while let Some(event) = events.next().await {
                        apply(&state, &event);
                    }
                    tracing::warn!("revocation feed lost; resubscribing");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot subscribe to revocations; relying on the poll");
                    tokio::time::sleep(poll).await;
                }
            }
        }
    };
    tokio::join!(poller, subscriber);
}

/// Merges the identity service's snapshot into the revocation set and
/// closes the sessions it revokes.
pub async fn resync(state: &EdgeState) {
    match fetch_snapshot(state).await {
        Ok(snapshot) => {
            if let Ok(mut revocations) = state.revocations.write() {
                revocations.merge(snapshot);
                revocations.purge(unix_now());
            }
            close_revoked(state);
        }
        Err(err) => tracing::warn!(error = %err, "cannot fetch the revocation snapshot"),
    }
}

async fn fetch_snapshot(state: &EdgeState) -> anyhow::Result<Revocations> {
    let settings = &state.settings.edge;
    let body: serde_json::Value = state
        .http
        .get(format!("{}/internal/v1/revocations", settings.identity_url))
        .bearer_auth(settings.identity_api_key.expose())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut revocations = Revocations::default();
    let list = |name: &str| -> Vec<serde_json::Value> {
        body.get(name)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let text =
        |v: &serde_json::Value, i: usize| v.get(i).and_then(|x| x.as_str()).map(str::to_owned);
    for t in list("tenants") {
        if let Some(tenant) = t.as_str().and_then(|t| TenantId::parse(t).ok()) {
            revocations.tenant(tenant);
        }
    }
    for pair in list("kids") {
        if let (Some(t), Some(k)) = (text(&pair, 0), text(&pair, 1))
            && let (Ok(t), Ok(k)) = (TenantId::parse(&t), Kid::parse(&k))
        {
            revocations.kid(t, k);
        }
    }
    for pair in list("clients") {
        if let (Some(t), Some(c)) = (text(&pair, 0), text(&pair, 1))
            && let Ok(t) = TenantId::parse(&t)
        {
            revocations.client(t, c);
        }
    }
    for pair in list("users") {
        if let (Some(t), Some(u)) = (text(&pair, 0), text(&pair, 1))
            && let Ok(t) = TenantId::parse(&t)
        {
            revocations.user(t, u);
        }
    }
    for triple in list("jtis") {
        let exp = triple.get(2).and_then(|e| e.as_u64());
        if let (Some(t), Some(j), Some(exp)) = (text(&triple, 0), text(&triple, 1), exp)
            && let Ok(t) = TenantId::parse(&t)
        {
            revocations.jti(t, j, exp);
        }
    }
    Ok(revocations)
}

/// Closes every open session whose token the current set revokes.
fn close_revoked(state: &EdgeState) {
    let Ok(revocations) = state.revocations.read() else {
        return;
    };
    let closed = state.sessions.close_where("revoked", |s| {
        revocations.check_subject(s.subject()).is_err()
    });
    count_closed(state, closed);
}

/// Counts sessions closed because something they depend on was revoked.
fn count_closed(state: &EdgeState, closed: usize) {
    if closed > 0 {
        state
            .metrics
            .closed
            .with_label_values(&["revoked"])
            .inc_by(closed as u64);
    }
}

/// Applies one event: remember the revocation, drop what caches it, and
/// close the sessions it concerns.
pub fn apply(state: &EdgeState, event: &Event) {
    let Some(tenant) = event.tenant.clone() else {
        return;
    };
    let mut closed = 0;
    match event.kind.as_str() {
        "key.rotated" | "key.staged" => state.jwks.forget(&tenant),
        "key.revoked" => {
            if let Some(kid) = &event.kid {
                if let Ok(mut r) = state.revocations.write() {
                    r.kid(tenant.clone(), kid.clone());
                }
                if let Ok(mut cache) = state.verified.lock() {
                    cache.forget_kid(&tenant, kid);
                }
                closed = state
                    .sessions
                    .close_where("key revoked", |s| s.tenant == tenant && s.kid == *kid);
            }
            state.jwks.forget(&tenant);
        }
        "tenant.disabled" => {
            if let Ok(mut r) = state.revocations.write() {
                r.tenant(tenant.clone());
            }
            state.jwks.forget(&tenant);
            closed = state
                .sessions
                .close_where("tenant disabled", |s| s.tenant == tenant);
        }
        "client.disabled" => {
            if let Some(client) = &event.client {
                if let Ok(mut r) = state.revocations.write() {
                    r.client(tenant.clone(), client.clone());
                }
                closed = state.sessions.close_where("client disabled", |s| {
                    s.tenant == tenant && s.client == *client
                });
            }
        }
        "user.disabled" => {
            if let Some(user) = &event.user {
                if let Ok(mut r) = state.revocations.write() {
                    r.user(tenant.clone(), user.clone());
                }
                closed = state.sessions.close_where("user disabled", |s| {
                    s.tenant == tenant && s.subject == *user && s.client != *user
                });
            }
        }
        "token.revoked" => {
            if let Some((jti, exp)) = &event.jti {
                if let Ok(mut r) = state.revocations.write() {
                    r.jti(tenant.clone(), jti.clone(), *exp);
                }
                closed = state
                    .sessions
                    .close_where("token revoked", |s| s.tenant == tenant && s.jti == *jti);
            }
        }
        _ => {}
    }
    count_closed(state, closed);
    if let Some(at) = event.at_ms {
        let lag = crate::state::unix_millis().saturating_sub(at);
        state.metrics.revocation_lag.observe(lag as f64 / 1000.0);
    }
}
