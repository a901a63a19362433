//! The identity service's side of the event channel: [`Events`] publishes
//! what a service committed, and [`run_event_listener`] drops what this
//! replica cached about changes any replica made.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use keysilo_coord::{Coord, Envelope, Event, Received};

use crate::clock;
use crate::keys::KeyCache;
use crate::metrics::Metrics;
use crate::oauth::clients::ClientCache;

/// Publishes events for the other replicas and the edges. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    coord: Coord,
}

impl Events {
    /// Publishes through `coord`.
    pub fn new(coord: Coord) -> Self {
        Self { coord }
    }

    /// Publishes `event`, retrying a little: the change it reports is
    /// committed already. Replicas that still miss it drop their cached
    /// entry when it expires; edges learn it from their next snapshot.
    pub async fn publish(&self, event: Event) {
        let envelope = Envelope::new(event, clock::unix_millis());
        let (kind, tenant) = (envelope.event.kind(), envelope.event.tenant());
        for attempt in 1..=3u32 {
            match self.coord.publish(&envelope).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, kind, tenant = ?tenant, attempt, "could not publish event");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
        }
    }
}

/// What this replica drops from its caches when `event` arrives.
fn invalidate(cache: &KeyCache, clients: &ClientCache, event: &Event) {
    match event {
        Event::TenantCreated { tenant, .. }
        | Event::KeyStaged { tenant }
        | Event::KeyRotated { tenant, .. }
        | Event::KeyRevoked { tenant, .. }
        | Event::TenantUpdated { tenant } => cache.invalidate(tenant),
        Event::TenantDisabled { tenant } => {
            cache.invalidate(tenant);
            clients.invalidate_tenant(tenant);
        }
        Event::ClientCreated { tenant, client }
        | Event::ClientSecretRotated { tenant, client }
        | Event::ClientDisabled { tenant, client }
        | Event::TokenRevoked { tenant, client, .. } => clients.invalidate(tenant, client),
        // Users and re-wrapped keys are not cached per replica.
        Event::UserDisabled { .. } | Event::SubjectRevoked { .. } | Event::MasterKeyRewrapped => {}
    }
}

/// Drops cached tenants and clients named by events, for ever. Whenever
/// the subscription is (re)established both caches are dropped, since
/// events published while it was down are lost. A message this build does
/// not understand is counted and logged.
pub async fn run_event_listener(
    coord: Coord,
    cache: Arc<KeyCache>,
    clients: Arc<ClientCache>,
    metrics: Metrics,
) {
    loop {
        match coord.subscribe().await {
            Ok(events) => {
                cache.clear();
                clients.clear();
                tracing::debug!("subscribed to events");
                let mut events = std::pin::pin!(events);
                while let Some(received) = events.next().await {
                    match received {
                        Received::Event(envelope) => invalidate(&cache, &clients, &envelope.event),
                        Received::Unknown { kind, reason } => {
                            metrics.unknown_event();
                            tracing::warn!(
                                kind = kind.as_deref().unwrap_or("-"),
                                reason,
                                "ignoring an event this build does not understand"
                            );
                        }
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
