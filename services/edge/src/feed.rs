//! The revocation feed: events from the identity service over Redis, and a
//! snapshot from its `/internal/v1/revocations` on start, after every
//! reconnect (events published meanwhile are lost), and every
//! `poll_interval_seconds` whatever Redis does, which bounds how long a
//! revocation can go unseen.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use keysilo_coord::{Envelope, Event, Received, RevocationSnapshot};
use keysilo_tokens::gate::Revocations;

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
                    while let Some(received) = events.next().await {
                        match received {
                            Received::Event(envelope) => apply(&state, &envelope),
                            Received::Unknown { kind, reason } => {
                                state.metrics.unknown_events.inc();
                                tracing::warn!(
                                    kind = kind.as_deref().unwrap_or("-"),
                                    reason,
                                    "ignoring an event this build does not understand; the next snapshot covers it"
                                );
                            }
                        }
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
                revocations.purge(unix_now(), state.settings.edge.clock_skew_seconds);
                state
                    .snapshot_merged
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            state.metrics.snapshots.with_label_values(&["ok"]).inc();
            close_revoked(state);
        }
        Err(err) => {
            state.metrics.snapshots.with_label_values(&["failed"]).inc();
            tracing::warn!(error = %err, "cannot fetch the revocation snapshot");
        }
    }
}

/// The identity service's snapshot. A malformed one is refused whole
/// (and logged by the caller), never merged in part.
async fn fetch_snapshot(state: &EdgeState) -> anyhow::Result<Revocations> {
    let settings = &state.settings.edge;
    let snapshot: RevocationSnapshot = state
        .http
        .get(format!("{}/internal/v1/revocations", settings.identity_url))
        .bearer_auth(settings.identity_api_key.expose())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(revocations_of(snapshot))
}

/// The revocation set a snapshot describes.
fn revocations_of(snapshot: RevocationSnapshot) -> Revocations {
    let mut revocations = Revocations::default();
    for tenant in snapshot.tenants {
        revocations.tenant(tenant);
    }
    for (tenant, kid) in snapshot.kids {
        revocations.kid(tenant, kid);
    }
    for (tenant, client) in snapshot.clients {
        revocations.client(tenant, client);
    }
    for (tenant, user) in snapshot.users {
        revocations.user(tenant, user);
    }
    for (tenant, jti, exp) in snapshot.jtis {
        revocations.jti(tenant, jti, exp);
    }
    for (tenant, subject, issued_before, keep_until) in snapshot.subjects {
        revocations.subject(tenant, subject, issued_before, keep_until);
    }
    revocations
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
pub fn apply(state: &EdgeState, envelope: &Envelope) {
    let revoke = |record: &dyn Fn(&mut Revocations)| {
        if let Ok(mut revocations) = state.revocations.write() {
            record(&mut revocations);
        }
    };
    let closed = match &envelope.event {
        Event::KeyRotated { tenant, .. } | Event::KeyStaged { tenant } => {
            state.jwks.forget(tenant);
            0
        }
        Event::KeyRevoked { tenant, kid } => {
            revoke(&|r| r.kid(tenant.clone(), kid.clone()));
            if let Ok(mut cache) = state.verified.lock() {
                cache.forget_kid(tenant, kid);
            }
            state.jwks.forget(tenant);
            state
                .sessions
                .close_where("key revoked", |s| s.tenant == *tenant && s.kid == *kid)
        }
        Event::TenantDisabled { tenant } => {
            revoke(&|r| r.tenant(tenant.clone()));
            state.jwks.forget(tenant);
            state
                .sessions
                .close_where("tenant disabled", |s| s.tenant == *tenant)
        }
        Event::ClientDisabled { tenant, client } => {
            revoke(&|r| r.client(tenant.clone(), client.clone()));
            state.sessions.close_where("client disabled", |s| {
                s.tenant == *tenant && s.client == *client
            })
        }
        Event::UserDisabled { tenant, user } => {
            revoke(&|r| r.user(tenant.clone(), user.clone()));
            state.sessions.close_where("user disabled", |s| {
                s.tenant == *tenant && s.subject == *user && s.client != *user
            })
        }
        Event::TokenRevoked {
            tenant,
            jti: (jti, exp),
            ..
        } => {
            revoke(&|r| r.jti(tenant.clone(), jti.clone(), *exp));
            state
                .sessions
                .close_where("token revoked", |s| s.tenant == *tenant && s.jti == *jti)
        }
        Event::SubjectRevoked {
            tenant,
            subject,
            issued_before,
            keep_until,
        } => {
            revoke(&|r| r.subject(tenant.clone(), subject.clone(), *issued_before, *keep_until));
            state.sessions.close_where("subject revoked", |s| {
                s.tenant == *tenant && s.subject == *subject && s.issued_at <= *issued_before
            })
        }
        // Nothing an edge holds depends on these.
        Event::TenantCreated { .. }
        | Event::TenantUpdated { .. }
        | Event::ClientCreated { .. }
        | Event::ClientSecretRotated { .. }
        | Event::MasterKeyRewrapped => 0,
    };
    count_closed(state, closed);
    if let Some(at) = envelope.at_ms {
        let lag = crate::state::unix_millis().saturating_sub(at);
        state.metrics.revocation_lag.observe(lag as f64 / 1000.0);
    }
}
