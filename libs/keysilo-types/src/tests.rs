use super::*;

fn check(input: &str, accepted: bool) {
    assert_eq!(TenantId::parse(input).is_ok(), accepted, "{input:?}");
}

#[test]
fn tenant_ids_follow_the_contract_pattern() {
    check("ab", true);
    check("acme-prod", true);
    check("0tenant", true);
    check(&"a".repeat(63), true);
    check("a", false);
    check(&"a".repeat(64), false);
    check("-acme", false);
    check("Acme", false);
    check("acme_prod", false);
    check("acme prod", false);
    check("", false);
    check("tënant", false);
}

#[test]
fn reserved_tenant_ids_are_refused_as_reserved() {
    for id in RESERVED_TENANT_IDS {
        assert_eq!(
            TenantId::parse(id),
            Err(IdError::Reserved((*id).to_owned()))
        );
    }
}

#[test]
fn kids_are_short_base64url_strings() {
    assert!(Kid::parse("abc_DEF-123").is_ok());
    assert!(Kid::parse("").is_err());
    assert!(Kid::parse("a/b").is_err());
    assert!(Kid::parse(&"k".repeat(65)).is_err());
}

#[test]
fn key_status_round_trips_through_its_name() {
    for status in [
        KeyStatus::Next,
        KeyStatus::Active,
        KeyStatus::Retired,
        KeyStatus::Revoked,
    ] {
        assert_eq!(status.as_str().parse::<KeyStatus>().unwrap(), status);
    }
}
