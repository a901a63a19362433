use keysilo_types::{Kid, TenantId};

use super::*;

fn origin(allowed: &[&str], sent: Option<&str>) -> Result<(), OriginRejection> {
    let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
    check_origin(&allowed, sent)
}

#[test]
fn only_issuers_under_the_configured_base_map_to_a_tenant() {
    let base = "https://id.example.com";
    let check = |iss: &str| tenant_of_issuer(base, iss).map(|t| t.to_string());

    assert_eq!(
        check("https://id.example.com/acme").as_deref(),
        Some("acme")
    );
    assert_eq!(check("https://id.example.com/acme/"), None);
    assert_eq!(check("https://id.example.com/a/b"), None);
    assert_eq!(check("https://id.example.com.evil/acme"), None);
    assert_eq!(check("https://evil.example.com/acme"), None);
    assert_eq!(check("https://id.example.com/admin"), None);
    assert_eq!(check("https://id.example.com"), None);
    let trailing = tenant_of_issuer("https://id.example.com/", "https://id.example.com/acme");
    assert_eq!(trailing.as_ref().map(TenantId::as_str), Some("acme"));
}

#[test]
fn origins_normalise_like_browsers_send_them() {
    let check = |raw: &str| normalize_origin(raw);

    assert_eq!(
        check("https://App.Example.com").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        check("https://app.example.com:443").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        check("http://app.example.com:80/").as_deref(),
        Some("http://app.example.com")
    );
    assert_eq!(
        check("https://app.example.com:8443").as_deref(),
        Some("https://app.example.com:8443")
    );
    assert_eq!(
        check("http://[::1]:3000").as_deref(),
        Some("http://[::1]:3000")
    );
    assert_eq!(check("null"), None);
    assert_eq!(check("ftp://example.com"), None);
    assert_eq!(check("https://example.com/path"), None);
    assert_eq!(check("https://user@example.com"), None);
    assert_eq!(check("https://example.com:99999"), None);
}

/// Found by `fuzz/fuzz_targets/token.rs`: a colon in the host outside an
/// IPv6 literal was taken for part of the host, so `h:8443:443` normalised
/// to `h:8443`, and a normalised origin did not normalise to itself.
#[test]
fn a_colon_outside_an_ipv6_literal_is_no_origin() {
    let check = |raw: &str| normalize_origin(raw);

    assert_eq!(check("https://As:p.Example:443/"), None);
    assert_eq!(check("https://app.example.com:8443:443"), None);
    assert_eq!(check("https://a:b"), None);
    assert_eq!(check("http://[::1"), None);
    assert_eq!(check("http://[::1]").as_deref(), Some("http://[::1]"));
    assert_eq!(
        origin(
            &["https://app.example.com:8443"],
            Some("https://app.example.com:8443:443")
        ),
        Err(OriginRejection::NotAllowed)
    );
}

#[test]
fn the_origin_rule_follows_the_contract() {
    let allowed = ["https://app.example.com", "http://localhost:3000"];

    assert_eq!(origin(&allowed, Some("https://app.example.com")), Ok(()));
    assert_eq!(
        origin(&allowed, Some("https://app.example.com:443")),
        Ok(())
    );
    assert_eq!(origin(&allowed, Some("http://localhost:3000")), Ok(()));
    assert_eq!(
        origin(&allowed, Some("http://localhost:3001")),
        Err(OriginRejection::NotAllowed)
    );
    assert_eq!(
        origin(&allowed, Some("http://app.example.com")),
        Err(OriginRejection::NotAllowed)
    );
    assert_eq!(origin(&allowed, None), Err(OriginRejection::NotAllowed));
    assert_eq!(
        origin(&allowed, Some("null")),
        Err(OriginRejection::NotAllowed)
    );
    assert_eq!(origin(&[], None), Ok(()));
    assert_eq!(
        origin(&[], Some("https://app.example.com")),
        Err(OriginRejection::MachineTokenInBrowser)
    );
}

fn claims(sub: &str, client: &str) -> crate::AccessTokenClaims {
    crate::AccessTokenClaims {
        issuer: "https://id/acme".into(),
        subject: sub.into(),
        audience: vec!["api".into()],
        client_id: client.into(),
        scope: String::new(),
        tenant: TenantId::parse("acme").unwrap(),
        jti: "j1".into(),
        issued_at: 0,
        expires_at: 100,
        allowed_origins: vec![],
        roles: vec![],
        certificate_thumbprint: None,
        actor: None,
    }
}

#[test]
fn revocations_name_what_was_revoked() {
    let acme = TenantId::parse("acme").unwrap();
    let kid = Kid::parse("k1").unwrap();
    let user_token = claims("u1", "c1");
    let machine_token = claims("c2", "c2");

    let mut revoked = Revocations::default();
    assert_eq!(revoked.check(&user_token, &kid), Ok(()));
    revoked.jti(acme.clone(), "j1".into(), 100);
    assert_eq!(revoked.check(&user_token, &kid), Err(Revoked::Token));
    // Kept while a verifier with a 60 s skew still accepts the token.
    revoked.purge(160, 60);
    assert_eq!(revoked.check(&user_token, &kid), Err(Revoked::Token));
    revoked.purge(161, 60);
    assert_eq!(revoked.check(&user_token, &kid), Ok(()));
    revoked.user(acme.clone(), "u1".into());
    assert_eq!(revoked.check(&user_token, &kid), Err(Revoked::User));
    assert_eq!(revoked.check(&machine_token, &kid), Ok(()));
    revoked.client(acme.clone(), "c2".into());
    assert_eq!(revoked.check(&machine_token, &kid), Err(Revoked::Client));
    revoked.kid(acme.clone(), kid.clone());
    assert_eq!(revoked.check(&user_token, &kid), Err(Revoked::Key));
    revoked.tenant(acme);
    assert_eq!(revoked.check(&user_token, &kid), Err(Revoked::Tenant));
}

#[test]
fn a_revoked_subject_refuses_tokens_issued_until_the_cutoff_only() {
    let acme = TenantId::parse("acme").unwrap();
    let kid = Kid::parse("k1").unwrap();
    let mut before = claims("s1", "browser");
    before.issued_at = 50;
    let mut after = before.clone();
    after.issued_at = 51;
    let mut revoked = Revocations::default();
    revoked.subject(acme.clone(), "s1".into(), 50, 1_000);
    assert_eq!(revoked.check(&before, &kid), Err(Revoked::Subject));
    assert_eq!(revoked.check(&after, &kid), Ok(()));
    assert_eq!(revoked.check(&claims("s2", "browser"), &kid), Ok(()));
    // A later revocation of the same subject moves the cutoff forward;
    // merging an older one does not move it back.
    let mut later = Revocations::default();
    later.subject(acme.clone(), "s1".into(), 60, 2_000);
    revoked.merge(later);
    let mut older = Revocations::default();
    older.subject(acme, "s1".into(), 40, 500);
    revoked.merge(older);
    after.issued_at = 60;
    assert_eq!(revoked.check(&after, &kid), Err(Revoked::Subject));
    revoked.purge(2_000, 0);
    assert_eq!(revoked.check(&after, &kid), Err(Revoked::Subject));
    revoked.purge(2_001, 0);
    assert_eq!(revoked.check(&after, &kid), Ok(()));
}

#[test]
fn merging_a_snapshot_never_undoes_a_revocation() {
    let acme = TenantId::parse("acme").unwrap();
    let kid = Kid::parse("k1").unwrap();
    let token = claims("u1", "c1");
    let mut live = Revocations::default();
    live.jti(acme.clone(), "j1".into(), 100);
    // A snapshot taken before that event knows only something else.
    let mut older = Revocations::default();
    older.user(acme, "u9".into());

    live.merge(older);

    assert_eq!(live.check(&token, &kid), Err(Revoked::Token));
}

/// One row of the admission table: what differs from a plain machine
/// token of `acme` under `https://id`, presented with no certificate and
/// no Origin against no revocation.
#[derive(Default)]
struct Row {
    issuer: Option<&'static str>,
    tenant: Option<&'static str>,
    origins: &'static [&'static str],
    bound_to: Option<&'static str>,
    peer: Option<&'static str>,
    origin: Option<&'static str>,
    revoke: Option<fn(&mut Revocations)>,
}

fn check(row: Row, expected: Result<(), Denial>) {
    let mut claims = claims("c1", "c1");
    if let Some(issuer) = row.issuer {
        claims.issuer = issuer.into();
    }
    if let Some(tenant) = row.tenant {
        claims.tenant = TenantId::parse(tenant).unwrap();
    }
    claims.allowed_origins = row.origins.iter().map(|o| (*o).to_owned()).collect();
    claims.certificate_thumbprint = row.bound_to.map(str::to_owned);
    let token = VerifiedAccessToken {
        claims,
        kid: Kid::parse("k1").unwrap(),
    };
    let mut revocations = Revocations::default();
    if let Some(revoke) = row.revoke {
        revoke(&mut revocations);
    }
    let admission = Admission {
        token: &token,
        issuer_base: "https://id",
        revocations: &revocations,
        peer_thumbprint: row.peer,
        origin: row.origin,
    };
    assert_eq!(admit(&admission), expected);
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

#[test]
fn the_gate_admits_a_token_only_when_every_rule_holds() {
    check(Row::default(), Ok(()));
    // tid must be the issuer's tenant.
    check(
        Row {
            tenant: Some("other"),
            ..Row::default()
        },
        Err(Denial::TenantMismatch),
    );
    check(
        Row {
            issuer: Some("https://elsewhere/acme"),
            ..Row::default()
        },
        Err(Denial::TenantMismatch),
    );
    // Revocations, each by what they name.
    check(
        Row {
            revoke: Some(|r| r.tenant(acme())),
            ..Row::default()
        },
        Err(Denial::Revoked(Revoked::Tenant)),
    );
    check(
        Row {
            revoke: Some(|r| r.kid(acme(), Kid::parse("k1").unwrap())),
            ..Row::default()
        },
        Err(Denial::Revoked(Revoked::Key)),
    );
    check(
        Row {
            revoke: Some(|r| r.client(acme(), "c1".into())),
            ..Row::default()
        },
        Err(Denial::Revoked(Revoked::Client)),
    );
    check(
        Row {
            revoke: Some(|r| r.jti(acme(), "j1".into(), 100)),
            ..Row::default()
        },
        Err(Denial::Revoked(Revoked::Token)),
    );
    check(
        Row {
            revoke: Some(|r| r.client(TenantId::parse("other").unwrap(), "c1".into())),
            ..Row::default()
        },
        Ok(()),
    );
    // RFC 8705: a bound token needs that very certificate.
    check(
        Row {
            bound_to: Some("thumb"),
            ..Row::default()
        },
        Err(Denial::CertificateBinding),
    );
    check(
        Row {
            bound_to: Some("thumb"),
            peer: Some("other"),
            ..Row::default()
        },
        Err(Denial::CertificateBinding),
    );
    check(
        Row {
            bound_to: Some("thumb"),
            peer: Some("thumb"),
            ..Row::default()
        },
        Ok(()),
    );
    check(
        Row {
            peer: Some("thumb"),
            ..Row::default()
        },
        Ok(()),
    );
    // The Origin rule.
    check(
        Row {
            origin: Some("https://app.example"),
            ..Row::default()
        },
        Err(Denial::Origin(OriginRejection::MachineTokenInBrowser)),
    );
    check(
        Row {
            origins: &["https://app.example"],
            origin: Some("https://APP.example:443"),
            ..Row::default()
        },
        Ok(()),
    );
    check(
        Row {
            origins: &["https://app.example"],
            origin: Some("https://evil.example"),
            ..Row::default()
        },
        Err(Denial::Origin(OriginRejection::NotAllowed)),
    );
    check(
        Row {
            origins: &["https://app.example"],
            ..Row::default()
        },
        Err(Denial::Origin(OriginRejection::NotAllowed)),
    );
    // Rules apply in order: a revoked token is refused as revoked even from
    // a foreign Origin.
    check(
        Row {
            origin: Some("https://evil.example"),
            revoke: Some(|r| r.tenant(acme())),
            ..Row::default()
        },
        Err(Denial::Revoked(Revoked::Tenant)),
    );
}

#[test]
fn every_denial_has_the_label_the_edge_always_emitted() {
    let labels = [
        (Denial::TenantMismatch, "tenant"),
        (Denial::Revoked(Revoked::Key), "revoked"),
        (Denial::CertificateBinding, "certificate_binding"),
        (Denial::Origin(OriginRejection::NotAllowed), "origin"),
        (
            Denial::Origin(OriginRejection::MachineTokenInBrowser),
            "origin_machine_token",
        ),
        (Denial::Token(TokenError::Expired), "expired"),
        (Denial::Token(TokenError::BadSignature), "signature"),
    ];
    for (denial, label) in labels {
        assert_eq!(denial.reason(), label);
    }
}

#[test]
fn an_origin_host_is_one_a_browser_can_send() {
    let check = |raw: &str| normalize_origin(raw);

    assert_eq!(
        check("https://xn--bcher-kva.example").as_deref(),
        Some("https://xn--bcher-kva.example")
    );
    assert_eq!(
        check("http://127.0.0.1:8080").as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(check("https://[::1]").as_deref(), Some("https://[::1]"));
    assert_eq!(check("https://bücher.example"), None);
    assert_eq!(check("https://a b.example"), None);
    assert_eq!(check("https://a..example"), None);
    assert_eq!(check("https://[not-ipv6]"), None);
    assert_eq!(
        check("https://a_b.example").as_deref(),
        Some("https://a_b.example")
    );
    assert_eq!(check("https://"), None);
    assert_eq!(check("https://example.com//"), None);
}
