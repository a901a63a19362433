//! Events fanned out to every replica and edge over Redis pub/sub.

use futures_util::{Stream, StreamExt as _};
use keysilo_types::{Kid, TenantId};
use serde::{Deserialize, Serialize};

use crate::{Coord, CoordError};

/// Something changed that caches elsewhere must learn about. The `kind`
/// is the audit event type (`key.revoked`, `tenant.disabled`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Dotted event type.
    pub kind: String,
    /// The tenant concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The key concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<Kid>,
    /// The client concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The user concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The access token concerned (`jti`), with its expiry in seconds since
    /// the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<(String, u64)>,
    /// When it was published, in milliseconds since the epoch (set by the
    /// publisher; lets subscribers measure how late they learn of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

impl Event {
    /// An event of `kind` about `tenant`.
    pub fn about(kind: &str, tenant: &TenantId) -> Self {
        Self {
            tenant: Some(tenant.clone()),
            ..Self::platform(kind)
        }
    }

    /// An event of `kind` about no tenant in particular.
    pub fn platform(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            tenant: None,
            kid: None,
            client: None,
            user: None,
            jti: None,
            at_ms: None,
        }
    }
}

const CHANNEL: &str = "events";

impl Coord {
    /// Publishes `event` to every subscriber.
    pub async fn publish(&self, event: &Event) -> Result<(), CoordError> {
        let payload =
            serde_json::to_string(event).map_err(|err| CoordError::Settings(Box::new(err)))?;
        let _: i64 = self
            .run(
                deadpool_redis::redis::cmd("PUBLISH")
                    .arg(self.key(CHANNEL))
                    .arg(payload),
            )
            .await?;
        Ok(())
    }

    /// Subscribes to events. The stream ends when the connection drops;
    /// subscribe again, and treat everything cached as stale, since events
    /// published meanwhile are lost.
    pub async fn subscribe(&self) -> Result<impl Stream<Item = Event> + use<>, CoordError> {
        let mut pubsub = self.client().get_async_pubsub().await?;
        pubsub.subscribe(self.key(CHANNEL)).await?;
        Ok(pubsub.into_on_message().filter_map(|message| async move {
            let payload: String = message.get_payload().ok()?;
            match serde_json::from_str(&payload) {
                Ok(event) => Some(event),
                Err(err) => {
                    tracing::warn!(error = %err, "ignoring a malformed event");
                    None
                }
            }
        }))
    }
}
