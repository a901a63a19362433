//! The background loops of each replica: scheduled rotation, and the event
//! listener that keeps the cache in step with other replicas.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use keysilo_coord::Coord;

use super::{KeyCache, KeyService};
use crate::metrics::Metrics;
use crate::oauth::clients::ClientCache;

/// Checks for due rotation steps every `interval`, for ever.
pub async fn run_scheduler(service: KeyService, interval: Duration, metrics: Metrics) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Each pass is its own task: should it ever panic, the next tick
        // still comes.
        let pass = tokio::spawn({
            let service = service.clone();
            async move { service.run_due_rotations().await }
        });
        match pass.await {
            Ok(Ok(pass)) => {
                metrics.rotations("scheduled", "ok", pass.done);
                metrics.rotations("scheduled", "failed", pass.failed);
                if pass.done > 0 {
                    tracing::info!(steps = pass.done, "scheduled rotation steps done");
                }
            }
            Ok(Err(err)) => {
                metrics.rotations("scheduled", "failed", 1);
                tracing::warn!(error = %err, "scheduled rotation check failed");
            }
            Err(err) => {
                metrics.rotations("scheduled", "failed", 1);
                tracing::error!(error = %err, "scheduled rotation pass crashed");
            }
        }
    }
}

/// Deletes expired revocations and refresh tokens every `interval`, for
/// ever (on every replica; the deletes are idempotent).
pub async fn run_purge(store: keysilo_store::Store, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match store.purge_expired(crate::clock::now()).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "expired tokens purged"),
            Err(err) => tracing::warn!(error = %err, "purging expired tokens failed"),
        }
    }
}

/// Drops cached tenants named by events, for ever. Whenever the
/// subscription is (re)established the whole cache is dropped, since
/// events published while it was down are lost.
pub async fn run_event_listener(coord: Coord, cache: Arc<KeyCache>, clients: Arc<ClientCache>) {
    loop {
        match coord.subscribe().await {
            Ok(events) => {
                cache.clear();
                clients.clear();
                tracing::debug!("subscribed to events");
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    // Only tenant and key events change what the cache holds.
                    let relevant =
                        event.kind.starts_with("tenant.") || event.kind.starts_with("key.");
                    if let (true, Some(tenant)) = (relevant, &event.tenant) {
                        cache.invalidate(tenant);
                        if event.kind == "tenant.disabled" {
                            clients.invalidate_tenant(tenant);
                        }
                    }
                    if let (Some(tenant), Some(client)) = (&event.tenant, &event.client) {
                        clients.invalidate(tenant, client);
                    }
                }
                tracing::warn!("event subscription lost; resubscribing");
                cache.clear();
                clients.clear();
            }
            Err(err) => tracing::warn!(error = %err, "cannot subscribe to events"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
