//! The validation pipeline of both `/auth` and `/ws`.

use std::sync::Arc;

use keysilo_tokens::gate;
use keysilo_tokens::{Expectations, UnverifiedToken, VerifiedAccessToken};

use keysilo_tls::PeerCertificate;

use crate::state::{EdgeState, unix_now};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No token at all (401 without an error code, RFC 6750 §3.1).
    Missing,
    /// No revocation snapshot has merged since the edge started: it
    /// cannot know what was revoked before, so it admits nothing (503).
    NotSynchronized,
    /// The token's keys could not be had (an issuer outside the base, an
    /// unknown tenant) or the revocation set is unusable; the reason is for
    /// logs and metrics.
    Invalid(&'static str),
    /// The validation core refused it (`gate::Denial`): a token that does
    /// not verify or is revoked (401), or an Origin it does not allow (403).
    Gate(gate::Denial),
}

impl Denial {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotSynchronized => "snapshot",
            Self::Invalid(reason) => reason,
            Self::Gate(denial) => denial.reason(),
        }
    }
}

/// Admits a request carrying `token` (if any) from `origin` (if any) over
/// a connection with client certificate `peer` (if any).
pub async fn validate(
    state: &EdgeState,
    token: Option<&str>,
    origin: Option<&str>,
    peer: Option<&PeerCertificate>,
) -> Result<Arc<VerifiedAccessToken>, Denial> {
    let outcome = admit(state, token, origin, peer).await;
    let (label, why) = match &outcome {
        Ok(_) => ("accepted", "ok"),
        Err(denial) => ("rejected", denial.reason()),
    };
    state
        .metrics
        .validations
        .with_label_values(&[label, why])
        .inc();
    outcome
}

async fn admit(
    state: &EdgeState,
    token: Option<&str>,
    origin: Option<&str>,
    peer: Option<&PeerCertificate>,
) -> Result<Arc<VerifiedAccessToken>, Denial> {
    if !state
        .snapshot_merged
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Err(Denial::NotSynchronized);
    }
    let token = token.filter(|t| !t.is_empty()).ok_or(Denial::Missing)?;
    let settings = &state.settings.edge;
    let now = unix_now();
    // A token seen before needs neither parsing nor RSA: its digest finds
    // the verified claims, used while their key is still a fresh one.
    let digest = openssl::sha::sha256(token.as_bytes());
    let cached = state
        .verified
        .lock()
        .ok()
        .and_then(|cache| {
            cache
                .get(&digest, now, settings.clock_skew_seconds)
                .cloned()
        })
        // Its `tid` is checked against its issuer by the gate, for both paths.
        .filter(|v| state.jwks.knows(&v.claims().tenant, v.kid()));
    let verified = match cached {
        Some(verified) => {
            state.metrics.cache.with_label_values(&["hit"]).inc();
            verified
        }
        None => {
            state.metrics.cache.with_label_values(&["miss"]).inc();
            let verified = Arc::new(verify_fresh(state, token, now).await?);
            if let Ok(mut cache) = state.verified.lock() {
                cache.insert(digest, verified.clone(), now);
            }
            verified
        }
    };
    // Revocations fail closed on a poisoned lock (a writer panicked).
    let revocations = state
        .revocations
        .read()
        .map_err(|_| Denial::Invalid("internal"))?;
    gate::admit(&gate::Admission {
        token: &verified,
        issuer_base: &settings.issuer_base,
        revocations: &revocations,
        peer_thumbprint: peer.map(|peer| peer.thumbprint.as_str()),
        origin,
    })
    .map_err(Denial::Gate)?;
    Ok(verified)
}

/// Verifies `token` from scratch: its issuer must be under the configured
/// base (nobody else's keys are ever fetched), then signature and claims
/// against that tenant's keys.
async fn verify_fresh(
    state: &EdgeState,
    token: &str,
    now: u64,
) -> Result<VerifiedAccessToken, Denial> {
    let settings = &state.settings.edge;
    // Decoded once: the issuer and kid pick the keys, then the same parts
    // are verified.
    let parsed =
        UnverifiedToken::parse(token).map_err(|err| Denial::Gate(gate::Denial::Token(err)))?;
    let issuer = parsed.issuer().ok_or(Denial::Invalid("malformed"))?;
    let tenant = gate::tenant_of_issuer(&settings.issuer_base, issuer)
        .ok_or(Denial::Invalid("untrusted_issuer"))?;
    let kid = parsed.kid().ok_or(Denial::Invalid("unknown_key"))?;
    let keys = state
        .jwks
        .keys_for(&tenant, &kid)
        .await
        .ok_or(Denial::Invalid("unknown_tenant"))?;
    let expect = Expectations {
        issuer,
        audience: Some(&settings.audience),
        now,
        skew: settings.clock_skew_seconds,
    };
    parsed
        .verify(&keys, &expect)
        .map_err(|err| Denial::Gate(gate::Denial::Token(err)))
}
