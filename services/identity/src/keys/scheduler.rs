//! The background loops of each replica: scheduled rotation, and the event
//! listener that keeps the cache in step with other replicas.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use keysilo_coord::Coord;

use super::{KeyCache, KeyService};

/// Checks for due rotation steps every `interval`, for ever.
pub async fn run_scheduler(service: KeyService, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match service.run_due_rotations().await {
            Ok(0) => {}
            Ok(done) => tracing::info!(steps = done, "scheduled rotation steps done"),
            Err(err) => tracing::warn!(error = %err, "scheduled rotation check failed"),
        }
    }
}

/// Drops cached tenants named by events, for ever. Whenever the
/// subscription is (re)established the whole cache is dropped, since
/// events published while it was down are lost.
pub async fn run_event_listener(coord: Coord, cache: Arc<KeyCache>) {
    loop {
        match coord.subscribe().await {
            Ok(events) => {
                cache.clear();
                tracing::debug!("subscribed to events");
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    if let Some(tenant) = &event.tenant {
                        cache.invalidate(tenant);
                    }
                }
                tracing::warn!("event subscription lost; resubscribing");
                cache.clear();
            }
            Err(err) => tracing::warn!(error = %err, "cannot subscribe to events"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
