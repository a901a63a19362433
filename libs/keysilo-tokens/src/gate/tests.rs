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
    revoked.purge(101);
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
