//! The identity↔edge protocol: [`Event`]s fanned out to every replica and
//! edge over Redis pub/sub, and the [`RevocationSnapshot`] an edge reads
//! over HTTP. Both services compile against these types, so a kind is
//! spelt once; a message this build does not understand arrives as
//! [`Received::Unknown`] for the subscriber to count and log.

use futures_util::{Stream, StreamExt as _};
use keysilo_types::{Kid, TenantId};
use serde::{Deserialize, Serialize};

use crate::{Coord, CoordError};

/// The version of the event envelope this build publishes and reads.
/// Publishers before the version existed sent none; they meant 1.
pub const EVENT_VERSION: u32 = 1;

/// Something changed that caches and edges elsewhere must learn about.
/// On the wire it is an object whose `kind` is the dotted name, beside
/// the variant's fields (`{"kind":"key.revoked","tenant":"acme","kid":…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Event {
    /// A tenant was created with its first key.
    #[serde(rename = "tenant.created")]
    TenantCreated {
        /// The new tenant.
        tenant: TenantId,
        /// Its first active key.
        kid: Kid,
    },
    /// A tenant was disabled: every token of it is refused from now on.
    #[serde(rename = "tenant.disabled")]
    TenantDisabled {
        /// The tenant.
        tenant: TenantId,
    },
    /// A tenant's settings changed (`PATCH /admin/v1/tenants/{T}`).
    #[serde(rename = "tenant.updated")]
    TenantUpdated {
        /// The tenant.
        tenant: TenantId,
    },
    /// A `next` key was staged (published ahead of signing).
    #[serde(rename = "key.staged")]
    KeyStaged {
        /// The tenant.
        tenant: TenantId,
    },
    /// Another key signs now (scheduled promotion or emergency rotation).
    #[serde(rename = "key.rotated")]
    KeyRotated {
        /// The tenant.
        tenant: TenantId,
        /// The key that signs now, when the publisher knew it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kid: Option<Kid>,
    },
    /// A key was revoked: tokens it signed are refused at once.
    #[serde(rename = "key.revoked")]
    KeyRevoked {
        /// The tenant.
        tenant: TenantId,
        /// The revoked key.
        kid: Kid,
    },
    /// A client was registered (replicas may remember it did not exist,
    /// and a public client adds origins to the tenant's CORS answers).
    #[serde(rename = "client.created")]
    ClientCreated {
        /// The tenant.
        tenant: TenantId,
        /// The client.
        client: String,
    },
    /// A client's secret was replaced.
    #[serde(rename = "client.secret_rotated")]
    ClientSecretRotated {
        /// The tenant.
        tenant: TenantId,
        /// The client.
        client: String,
    },
    /// A client was disabled: its tokens are refused, its sessions closed.
    #[serde(rename = "client.disabled")]
    ClientDisabled {
        /// The tenant.
        tenant: TenantId,
        /// The client.
        client: String,
    },
    /// A user was disabled: its tokens are refused, its sessions closed.
    #[serde(rename = "user.disabled")]
    UserDisabled {
        /// The tenant.
        tenant: TenantId,
        /// The user's id (`sub`).
        user: String,
    },
    /// One access token was revoked (RFC 7009).
    #[serde(rename = "token.revoked")]
    TokenRevoked {
        /// The tenant.
        tenant: TenantId,
        /// The client the token was issued to.
        client: String,
        /// The token's `jti` and its `exp` in seconds since the epoch.
        jti: (String, u64),
    },
    /// A subject was revoked: its access tokens issued at or before
    /// `issued_before` are refused and its sessions closed.
    #[serde(rename = "subject.revoked")]
    SubjectRevoked {
        /// The tenant.
        tenant: TenantId,
        /// The `sub` (a user id or a secure-mode subject).
        subject: String,
        /// Tokens with `iat` at or before this (seconds since the epoch)
        /// are refused.
        issued_before: u64,
        /// When no such token can be accepted anymore (seconds): the
        /// revocation may be forgotten then.
        keep_until: u64,
    },
    /// Keys were re-wrapped under the current master key.
    #[serde(rename = "master_key.rewrapped")]
    MasterKeyRewrapped,
}

impl Event {
    /// The dotted kind, as the wire (the serde tags above, checked by a
    /// test) and the audit trail spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TenantCreated { .. } => "tenant.created",
            Self::TenantDisabled { .. } => "tenant.disabled",
            Self::TenantUpdated { .. } => "tenant.updated",
            Self::ClientCreated { .. } => "client.created",
            Self::KeyStaged { .. } => "key.staged",
            Self::KeyRotated { .. } => "key.rotated",
            Self::KeyRevoked { .. } => "key.revoked",
            Self::ClientSecretRotated { .. } => "client.secret_rotated",
            Self::ClientDisabled { .. } => "client.disabled",
            Self::UserDisabled { .. } => "user.disabled",
            Self::TokenRevoked { .. } => "token.revoked",
            Self::SubjectRevoked { .. } => "subject.revoked",
            Self::MasterKeyRewrapped => "master_key.rewrapped",
        }
    }

    /// The tenant concerned, if the event is about one.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::TenantCreated { tenant, .. }
            | Self::TenantDisabled { tenant }
            | Self::TenantUpdated { tenant }
            | Self::ClientCreated { tenant, .. }
            | Self::KeyStaged { tenant }
            | Self::KeyRotated { tenant, .. }
            | Self::KeyRevoked { tenant, .. }
            | Self::ClientSecretRotated { tenant, .. }
            | Self::ClientDisabled { tenant, .. }
            | Self::UserDisabled { tenant, .. }
            | Self::TokenRevoked { tenant, .. }
            | Self::SubjectRevoked { tenant, .. } => Some(tenant),
            Self::MasterKeyRewrapped => None,
        }
    }
}

/// What travels on the channel: an event, the envelope's version and when
/// it was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`EVENT_VERSION`] of the publisher.
    #[serde(default = "first_version")]
    pub v: u32,
    /// When it was published, in milliseconds since the epoch (lets
    /// subscribers measure how late they learn of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

fn first_version() -> u32 {
    1
}

impl Envelope {
    /// `event`, published at `at_ms`, in this build's version.
    pub fn new(event: Event, at_ms: u64) -> Self {
        Self {
            v: EVENT_VERSION,
            at_ms: Some(at_ms),
            event,
        }
    }
}

/// A message read from the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An event this build understands.
    Event(Envelope),
    /// A message this build does not understand: a kind it does not know
    /// (a newer publisher, say), another envelope version, or no JSON at
    /// all. Subscribers count and log it; they never drop it silently.
    Unknown {
        /// The `kind` the message named, if it named one.
        kind: Option<String>,
        /// Why it was not understood.
        reason: String,
    },
}

impl Received {
    /// Decodes one message's payload.
    pub fn decode(payload: &str) -> Self {
        let unknown = |reason: String| {
            let kind = serde_json::from_str::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("kind")?.as_str().map(str::to_owned));
            Self::Unknown { kind, reason }
        };
        match serde_json::from_str::<Envelope>(payload) {
            Ok(envelope) if envelope.v == EVENT_VERSION => Self::Event(envelope),
            Ok(envelope) => unknown(format!("envelope version {}", envelope.v)),
            Err(err) => unknown(err.to_string()),
        }
    }
}

/// Everything revoked that unexpired tokens may still carry, as
/// `GET /internal/v1/revocations` answers it. An edge merges it on start,
/// after every resubscription and on every poll.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationSnapshot {
    /// When it was taken, in seconds since the epoch.
    pub generated_at: u64,
    /// Disabled tenants.
    pub tenants: Vec<TenantId>,
    /// Revoked keys, `[tenant, kid]`.
    pub kids: Vec<(TenantId, Kid)>,
    /// Disabled clients, `[tenant, client]`.
    pub clients: Vec<(TenantId, String)>,
    /// Disabled users, `[tenant, user]`.
    pub users: Vec<(TenantId, String)>,
    /// Revoked access tokens, `[tenant, jti, until]`: until when (seconds)
    /// the token must be refused, its `exp` plus the largest clock skew a
    /// verifier may accept (later than `exp`, never earlier).
    pub jtis: Vec<(TenantId, String, u64)>,
    /// Revoked subjects, `[tenant, subject, issued_before, keep_until]`
    /// (seconds). Absent from the snapshots of earlier releases.
    #[serde(default)]
    pub subjects: Vec<(TenantId, String, u64, u64)>,
}

const CHANNEL: &str = "events";

impl Coord {
    /// Publishes `envelope` to every subscriber.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), CoordError> {
        let payload =
            serde_json::to_string(envelope).map_err(|err| CoordError::Settings(Box::new(err)))?;
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
    pub async fn subscribe(&self) -> Result<impl Stream<Item = Received> + use<>, CoordError> {
        let mut pubsub = self.client().get_async_pubsub().await?;
        pubsub.subscribe(self.key(CHANNEL)).await?;
        Ok(pubsub
            .into_on_message()
            .map(|message| match message.get_payload::<String>() {
                Ok(payload) => Received::decode(&payload),
                Err(err) => Received::Unknown {
                    kind: None,
                    reason: format!("unreadable payload: {err}"),
                },
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn kid() -> Kid {
        Kid::parse("k1").unwrap()
    }

    fn every_event() -> Vec<Event> {
        vec![
            Event::TenantCreated {
                tenant: tenant(),
                kid: kid(),
            },
            Event::TenantDisabled { tenant: tenant() },
            Event::TenantUpdated { tenant: tenant() },
            Event::ClientCreated {
                tenant: tenant(),
                client: "c".into(),
            },
            Event::KeyStaged { tenant: tenant() },
            Event::KeyRotated {
                tenant: tenant(),
                kid: Some(kid()),
            },
            Event::KeyRevoked {
                tenant: tenant(),
                kid: kid(),
            },
            Event::ClientSecretRotated {
                tenant: tenant(),
                client: "c".into(),
            },
            Event::ClientDisabled {
                tenant: tenant(),
                client: "c".into(),
            },
            Event::UserDisabled {
                tenant: tenant(),
                user: "u".into(),
            },
            Event::TokenRevoked {
                tenant: tenant(),
                client: "c".into(),
                jti: ("j".into(), 7),
            },
            Event::SubjectRevoked {
                tenant: tenant(),
                subject: "s".into(),
                issued_before: 7,
                keep_until: 9,
            },
            Event::MasterKeyRewrapped,
        ]
    }

    #[test]
    fn every_kind_on_the_wire_is_the_one_kind_names_and_round_trips() {
        for event in every_event() {
            let envelope = Envelope::new(event.clone(), 5);
            let wire = serde_json::to_value(&envelope).unwrap();
            assert_eq!(wire["kind"], event.kind(), "{wire}");
            assert_eq!(wire["v"], EVENT_VERSION);
            assert_eq!(
                Received::decode(&wire.to_string()),
                Received::Event(envelope)
            );
        }
    }

    #[test]
    fn the_wire_shape_is_what_earlier_publishers_sent() {
        let old =
            r#"{"kind":"token.revoked","tenant":"acme","client":"c","jti":["j",7],"at_ms":9}"#;
        let Received::Event(envelope) = Received::decode(old) else {
            panic!("an event of an earlier publisher is understood");
        };
        assert_eq!(envelope.v, 1);
        assert_eq!(envelope.at_ms, Some(9));
        assert_eq!(
            envelope.event,
            Event::TokenRevoked {
                tenant: tenant(),
                client: "c".into(),
                jti: ("j".into(), 7)
            }
        );
    }

    #[test]
    fn messages_this_build_does_not_understand_are_unknown_with_their_kind() {
        let check = |payload: &str, kind: Option<&str>| match Received::decode(payload) {
            Received::Unknown { kind: got, .. } => assert_eq!(got.as_deref(), kind, "{payload}"),
            other => panic!("{payload} decoded as {other:?}"),
        };
        check(
            r#"{"kind":"key.vanished","tenant":"acme"}"#,
            Some("key.vanished"),
        );
        check(
            r#"{"kind":"key.revoked","tenant":"acme"}"#,
            Some("key.revoked"),
        );
        check(
            r#"{"kind":"key.revoked","tenant":"acme","kid":"k1","v":2}"#,
            Some("key.revoked"),
        );
        check(
            r#"{"kind":"tenant.disabled","tenant":"Not A Tenant"}"#,
            Some("tenant.disabled"),
        );
        check("not json", None);
    }

    #[test]
    fn a_snapshot_with_a_malformed_entry_is_refused_whole() {
        let good = r#"{"generated_at":1,"tenants":["gone"],"kids":[["acme","k1"]],"clients":[],"users":[],"jtis":[["acme","j",9]]}"#;
        let snapshot: RevocationSnapshot = serde_json::from_str(good).unwrap();
        assert_eq!(snapshot.kids, [(tenant(), kid())]);
        assert_eq!(snapshot.jtis, [(tenant(), "j".to_owned(), 9)]);
        for bad in [
            r#"{"generated_at":1,"tenants":["Bad Id"],"kids":[],"clients":[],"users":[],"jtis":[]}"#,
            r#"{"generated_at":1,"tenants":[],"kids":[["acme"]],"clients":[],"users":[],"jtis":[]}"#,
            r#"{"generated_at":1,"tenants":[],"kids":[],"clients":[],"users":[],"jtis":[["acme","j","soon"]]}"#,
        ] {
            assert!(
                serde_json::from_str::<RevocationSnapshot>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
