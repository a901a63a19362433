//! The edge's validation core: what a data-plane node needs besides
//! [`crate::verify`] to admit a request. Embeddable: no IO, no clock.
//!
//! - [`admit`]: the whole admission decision on a verified token, as a
//!   function of its inputs ([`Admission`] → `Result<(), Denial>`); the
//!   edge feeds it and records metrics.
//! - [`tenant_of_issuer`]: only issuers under the configured identity base
//!   are trusted, so keys are never fetched for anyone else.
//! - [`Revocations`]: tenants, keys, clients, users and `jti`s revoked
//!   since tokens were issued.
//! - [`check_origin`]: the browser `Origin` rule.
//! - [`VerifiedCache`]: skips the RSA verification of a token seen before.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use keysilo_types::{Kid, TenantId};

use crate::{AccessTokenClaims, TokenError, VerifiedAccessToken};

/// Why the gate refuses a request. [`Denial::reason`] is the label metrics
/// and logs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The token did not verify (signature, claims, issuer, expiry).
    Token(TokenError),
    /// The token's `tid` is not the tenant of its issuer.
    TenantMismatch,
    /// Something the token depends on is revoked.
    Revoked(Revoked),
    /// The token is bound to a certificate (RFC 8705 `cnf`) that the
    /// connection did not present.
    CertificateBinding,
    /// The request's `Origin` is refused.
    Origin(OriginRejection),
}

impl Denial {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Token(err) => token_error_reason(err),
            Self::TenantMismatch => "tenant",
            Self::Revoked(_) => "revoked",
            Self::CertificateBinding => "certificate_binding",
            Self::Origin(OriginRejection::NotAllowed) => "origin",
            Self::Origin(OriginRejection::MachineTokenInBrowser) => "origin_machine_token",
        }
    }
}

/// The metrics label of a verification failure.
pub fn token_error_reason(err: &TokenError) -> &'static str {
    match err {
        TokenError::Malformed => "malformed",
        TokenError::UnsupportedAlgorithm => "algorithm",
        TokenError::WrongType => "type",
        TokenError::UnknownKey => "unknown_key",
        TokenError::BadSignature => "signature",
        TokenError::InvalidClaim(_) => "claim",
        TokenError::WrongIssuer => "issuer",
        TokenError::WrongAudience => "audience",
        TokenError::Expired => "expired",
        TokenError::NotYetValid => "not_yet_valid",
        _ => "invalid",
    }
}

/// Everything the admission decision depends on besides the signature,
/// which [`crate::verify`] has checked.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// The verified token.
    pub token: &'a VerifiedAccessToken,
    /// The identity service's base URL; issuers are `{base}/{tenant}`.
    pub issuer_base: &'a str,
    /// What is revoked.
    pub revocations: &'a Revocations,
    /// SHA-256 thumbprint (`x5t#S256`) of the client certificate the
    /// connection presented, if any.
    pub peer_thumbprint: Option<&'a str>,
    /// The request's `Origin`, if any.
    pub origin: Option<&'a str>,
}

/// Admits a verified token, in this order: its `tid` must be its
/// issuer's tenant; nothing it depends on may be revoked; a token bound
/// to a certificate (RFC 8705 §3) needs a connection that proved
/// possession of it (possession is what counts, not the chain); and the
/// Origin rule ([`check_origin`]).
pub fn admit(admission: &Admission<'_>) -> Result<(), Denial> {
    let token = admission.token;
    let claims = token.claims();
    if tenant_of_issuer(admission.issuer_base, &claims.issuer).as_ref() != Some(&claims.tenant) {
        return Err(Denial::TenantMismatch);
    }
    admission
        .revocations
        .check(claims, token.kid())
        .map_err(Denial::Revoked)?;
    if let Some(bound) = &claims.certificate_thumbprint
        && admission.peer_thumbprint != Some(bound.as_str())
    {
        return Err(Denial::CertificateBinding);
    }
    check_origin(&claims.allowed_origins, admission.origin).map_err(Denial::Origin)
}

/// The tenant whose issuer `iss` is, if `iss` is `{base}/{tenant}` for the
/// configured identity `base`; `None` for any other issuer.
pub fn tenant_of_issuer(base: &str, iss: &str) -> Option<TenantId> {
    let rest = iss.strip_prefix(base.trim_end_matches('/'))?;
    TenantId::parse(rest.strip_prefix('/')?).ok()
}

/// `scheme://host[:port]` in lower case with the default port dropped, as
/// browsers send `Origin`; `None` for anything else (`null` included). The
/// one origin rule of the project: the edge compares with it and the
/// identity service registers `allowed_origins` with it. A host is what a
/// browser can send: an ASCII name (internationalised names in their
/// `xn--` form), an IPv4 address, or an IPv6 literal in brackets.
pub fn normalize_origin(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let host_port = rest.to_ascii_lowercase();
    // An IPv6 literal keeps its brackets; the port follows the last colon
    // after them.
    let (host, port) = match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => {
            let (host, port) = host_port.split_at(i);
            (
                host.to_owned(),
                Some(port.trim_start_matches(':').to_owned()),
            )
        }
        _ => (host_port.clone(), None),
    };
    if !is_origin_host(&host) {
        return None;
    }
    match port {
        Some(port) if port != default_port => {
            port.parse::<u16>().ok()?;
            Some(format!("{scheme}://{host}:{port}"))
        }
        _ => Some(format!("{scheme}://{host}")),
    }
}

/// Whether `host` (lower case) is a host a browser puts in `Origin`: an
/// IPv6 literal in brackets, or dot-separated labels of ASCII letters,
/// digits, hyphens and underscores (which covers IPv4 addresses and
/// `xn--` names; URLs allow `_` in hosts, so browsers send it). A
/// colon outside brackets (`a:b:443`, `h:8443:443`) is no host.
fn is_origin_host(host: &str) -> bool {
    if let Some(literal) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return literal.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Why a request's `Origin` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRejection {
    /// The token allows some origins, and the request sent none or another.
    NotAllowed,
    /// The token allows no origin (a machine token), yet a browser sent one.
    MachineTokenInBrowser,
}

/// The origin rule: a token with `allowed_origins` admits only requests
/// whose `Origin` equals one of them (scheme, host and port, default ports
/// implied); a token without any admits no request that carries `Origin`.
pub fn check_origin(allowed: &[String], origin: Option<&str>) -> Result<(), OriginRejection> {
    match (allowed.is_empty(), origin) {
        (true, None) => Ok(()),
        (true, Some(_)) => Err(OriginRejection::MachineTokenInBrowser),
        (false, None) => Err(OriginRejection::NotAllowed),
        (false, Some(origin)) => {
            let origin = normalize_origin(origin).ok_or(OriginRejection::NotAllowed)?;
            let matches = allowed
                .iter()
                .filter_map(|a| normalize_origin(a))
                .any(|a| a == origin);
            if matches {
                Ok(())
            } else {
                Err(OriginRejection::NotAllowed)
            }
        }
    }
}

/// What was revoked that a token depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// The tenant is disabled.
    Tenant,
    /// The signing key is revoked.
    Key,
    /// The client is disabled.
    Client,
    /// The user (`sub`) is disabled.
    User,
    /// The token itself (`jti`) is revoked.
    Token,
    /// Its subject was revoked after the token was issued.
    Subject,
}

/// What a token depends on, by reference: what [`Revocations::check_subject`]
/// looks up.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `tid`.
    pub tenant: &'a TenantId,
    /// The signing key.
    pub kid: &'a Kid,
    /// `client_id`.
    pub client: &'a str,
    /// `sub` (equal to `client` for machine tokens).
    pub subject: &'a str,
    /// `jti`.
    pub jti: &'a str,
    /// `iat`, seconds since the epoch.
    pub issued_at: u64,
}

impl<'a> Subject<'a> {
    /// The subject of verified claims signed by `kid`.
    pub fn of(claims: &'a AccessTokenClaims, kid: &'a Kid) -> Self {
        Self {
            tenant: &claims.tenant,
            kid,
            client: &claims.client_id,
            subject: &claims.subject,
            jti: &claims.jti,
            issued_at: claims.issued_at,
        }
    }
}

/// A revoked subject: tokens issued at or before `issued_before` are
/// refused until `keep_until` (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubjectCutoff {
    issued_before: u64,
    keep_until: u64,
}

/// What is revoked within one tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TenantRevocations {
    kids: HashSet<Kid>,
    clients: HashSet<String>,
    users: HashSet<String>,
    jtis: HashMap<String, u64>,
    subjects: HashMap<String, SubjectCutoff>,
}

/// Everything revoked that tokens may still carry. Nested per tenant so
/// that a check (on every request of the edge) borrows instead of
/// allocating lookup keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Revocations {
    tenants: HashSet<TenantId>,
    within: HashMap<TenantId, TenantRevocations>,
}

impl Revocations {
    fn of(&mut self, tenant: TenantId) -> &mut TenantRevocations {
        self.within.entry(tenant).or_default()
    }

    /// Records a disabled tenant.
    pub fn tenant(&mut self, tenant: TenantId) {
        self.tenants.insert(tenant);
    }

    /// Records a revoked key.
    pub fn kid(&mut self, tenant: TenantId, kid: Kid) {
        self.of(tenant).kids.insert(kid);
    }

    /// Records a disabled client.
    pub fn client(&mut self, tenant: TenantId, client: String) {
        self.of(tenant).clients.insert(client);
    }

    /// Records a disabled user.
    pub fn user(&mut self, tenant: TenantId, user: String) {
        self.of(tenant).users.insert(user);
    }

    /// Records a revoked token until it expires.
    pub fn jti(&mut self, tenant: TenantId, jti: String, expires_at: u64) {
        let expiry = self.of(tenant).jtis.entry(jti).or_insert(expires_at);
        *expiry = (*expiry).max(expires_at);
    }

    /// Records a revoked subject: its tokens issued at or before
    /// `issued_before` are refused, until `keep_until`.
    pub fn subject(
        &mut self,
        tenant: TenantId,
        subject: String,
        issued_before: u64,
        keep_until: u64,
    ) {
        merge_cutoff(
            &mut self.of(tenant).subjects,
            subject,
            SubjectCutoff {
                issued_before,
                keep_until,
            },
        );
    }

    /// Adds everything `other` revokes. Revocations are never undone (a
    /// revoked jti only expires), so merging a snapshot cannot lose an
    /// event applied while the snapshot was in flight.
    pub fn merge(&mut self, other: Revocations) {
        self.tenants.extend(other.tenants);
        for (tenant, theirs) in other.within {
            let ours = self.of(tenant);
            ours.kids.extend(theirs.kids);
            ours.clients.extend(theirs.clients);
            ours.users.extend(theirs.users);
            for (jti, exp) in theirs.jtis {
                let expiry = ours.jtis.entry(jti).or_insert(exp);
                *expiry = (*expiry).max(exp);
            }
            for (subject, cutoff) in theirs.subjects {
                merge_cutoff(&mut ours.subjects, subject, cutoff);
            }
        }
    }

    /// Forgets revoked tokens that a verifier accepting `skew` seconds
    /// past `exp` can no longer accept anyway, and subject revocations past
    /// their end.
    pub fn purge(&mut self, now: u64, skew: u64) {
        for revoked in self.within.values_mut() {
            revoked
                .jtis
                .retain(|_, exp| exp.saturating_add(skew) >= now);
            revoked
                .subjects
                .retain(|_, cutoff| cutoff.keep_until >= now);
        }
    }

    /// What, if anything, revokes a token with these claims signed by `kid`.
    pub fn check(&self, claims: &AccessTokenClaims, kid: &Kid) -> Result<(), Revoked> {
        self.check_subject(Subject::of(claims, kid))
    }

    /// What, if anything, revokes what `subject` depends on.
    pub fn check_subject(&self, subject: Subject<'_>) -> Result<(), Revoked> {
        if self.tenants.contains(subject.tenant) {
            return Err(Revoked::Tenant);
        }
        let Some(revoked) = self.within.get(subject.tenant) else {
            return Ok(());
        };
        if revoked.kids.contains(subject.kid) {
            return Err(Revoked::Key);
        }
        if revoked.clients.contains(subject.client) {
            return Err(Revoked::Client);
        }
        if subject.subject != subject.client && revoked.users.contains(subject.subject) {
            return Err(Revoked::User);
        }
        if revoked.jtis.contains_key(subject.jti) {
            return Err(Revoked::Token);
        }
        if revoked
            .subjects
            .get(subject.subject)
            .is_some_and(|cutoff| subject.issued_at <= cutoff.issued_before)
        {
            return Err(Revoked::Subject);
        }
        Ok(())
    }
}

/// Keeps the later of two cutoffs of one subject.
fn merge_cutoff(cutoffs: &mut HashMap<String, SubjectCutoff>, subject: String, new: SubjectCutoff) {
    let cutoff = cutoffs.entry(subject).or_insert(new);
    cutoff.issued_before = cutoff.issued_before.max(new.issued_before);
    cutoff.keep_until = cutoff.keep_until.max(new.keep_until);
}

/// Tokens whose signature was verified, keyed by SHA-256 of the token, so
/// a token presented again (every forward-auth call of a session) skips
/// the RSA verification. Claims are re-checked against expiry and
/// revocations on every hit; this caches the signature only.
#[derive(Debug)]
pub struct VerifiedCache {
    entries: HashMap<[u8; 32], Arc<VerifiedAccessToken>>,
    capacity: usize,
}

impl VerifiedCache {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The verified token for `digest` if it has not expired at `now`.
    pub fn get(&self, digest: &[u8; 32], now: u64, skew: u64) -> Option<&Arc<VerifiedAccessToken>> {
        self.entries
            .get(digest)
            .filter(|t| t.claims().expires_at.saturating_add(skew) > now)
    }

    /// Remembers a verified token; when full, expired entries go first and,
    /// if that is not enough, everything does (a cache, not a store).
    pub fn insert(&mut self, digest: [u8; 32], token: Arc<VerifiedAccessToken>, now: u64) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, t| t.claims().expires_at > now);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(digest, token);
    }

    /// Forgets tokens signed by `kid` of `tenant` (the key was revoked).
    pub fn forget_kid(&mut self, tenant: &TenantId, kid: &Kid) {
        self.entries
            .retain(|_, t| !(t.claims().tenant == *tenant && t.kid() == kid));
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
