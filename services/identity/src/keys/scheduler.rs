//! The background loops of each replica: scheduled rotation and the purge
//! of expired tokens. (The event listener is `crate::events`'.)

use std::time::Duration;

use super::KeyService;
use crate::metrics::Metrics;

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
