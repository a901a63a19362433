use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keysilo_custody::{GeneratedKey, generate_rsa_key};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://id.example/acme";
const NOW: u64 = 1_700_000_000;

static KEY: LazyLock<GeneratedKey> = LazyLock::new(|| generate_rsa_key().unwrap());

fn signing() -> SigningKey {
    SigningKey::from_der(KEY.kid.clone(), KEY.private.as_der()).unwrap()
}

fn keys() -> KeySet {
    KeySet::from_jwks(&[KEY.public.to_jwk(&KEY.kid)]).unwrap()
}

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        issuer: ISSUER.into(),
        subject: "user-1".into(),
        audience: vec!["api".into()],
        client_id: "client-1".into(),
        scope: "read write".into(),
        tenant: TenantId::parse("acme").unwrap(),
        jti: "jti-1".into(),
        issued_at: NOW,
        expires_at: NOW + 900,
        allowed_origins: vec!["https://app.example".into()],
        roles: vec!["viewer".into()],
        certificate_thumbprint: None,
        actor: None,
    }
}

fn expect(now: u64) -> Expectations<'static> {
    Expectations {
        issuer: ISSUER,
        audience: Some("api"),
        now,
        skew: 60,
    }
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token with the given header and payload, signed (or not) by hand.
fn forge(header: serde_json::Value, payload: serde_json::Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(&header),
        b64(&payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn payload_of(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn check(token: &str, now: u64, expected: Result<(), TokenError>) {
    let outcome = verify(token, &keys(), &expect(now)).map(|_| ());
    assert_eq!(outcome, expected, "{token}");
}

#[test]
fn a_minted_token_verifies_and_round_trips_its_claims() {
    let token = mint(&claims(), &signing()).unwrap();

    let verified = verify(&token, &keys(), &expect(NOW + 1)).unwrap();

    assert_eq!(verified.claims(), &claims());
    assert_eq!(verified.kid(), &KEY.kid);
}

#[test]
fn minted_tokens_follow_rfc_9068_with_integer_dates() {
    let token = mint(&claims(), &signing()).unwrap();

    let header = josekit::jwt::decode_header(&token).unwrap();
    assert_eq!(header.claim("alg"), Some(&json!("RS256")));
    assert_eq!(header.claim("typ"), Some(&json!("at+jwt")));
    assert_eq!(header.claim("kid"), Some(&json!(KEY.kid.as_str())));
    let payload = payload_of(&token);
    assert!(
        payload["iat"].is_u64() && payload["exp"].is_u64(),
        "{payload}"
    );
    assert_eq!(payload["aud"], "api");
    assert_eq!(payload["tid"], "acme");
    assert_eq!(payload["allowed_origins"], json!(["https://app.example"]));
}

#[test]
fn empty_optional_claims_are_omitted() {
    let mut plain = claims();
    plain.allowed_origins.clear();
    plain.roles.clear();
    plain.audience = vec!["a".into(), "b".into()];

    let payload = payload_of(&mint(&plain, &signing()).unwrap());

    assert!(payload.get("allowed_origins").is_none());
    assert!(payload.get("roles").is_none());
    assert_eq!(payload["aud"], json!(["a", "b"]));
}

#[test]
fn time_claims_hold_within_the_skew_only() {
    let token = mint(&claims(), &signing()).unwrap();

    check(&token, NOW + 900 + 59, Ok(()));
    check(&token, NOW + 900 + 60, Err(TokenError::Expired));
    check(&token, NOW - 60, Ok(()));
    check(&token, NOW - 61, Err(TokenError::NotYetValid));
}

#[test]
fn issuer_and_audience_must_match() {
    let token = mint(&claims(), &signing()).unwrap();
    let keys = keys();

    let wrong_issuer = Expectations {
        issuer: "https://id.example/other",
        ..expect(NOW)
    };
    let wrong_audience = Expectations {
        audience: Some("other"),
        ..expect(NOW)
    };
    assert_eq!(
        verify(&token, &keys, &wrong_issuer).unwrap_err(),
        TokenError::WrongIssuer
    );
    assert_eq!(
        verify(&token, &keys, &wrong_audience).unwrap_err(),
        TokenError::WrongAudience
    );
}

#[test]
fn only_rs256_access_tokens_from_known_keys_are_accepted() {
    let token = mint(&claims(), &signing()).unwrap();
    let payload = payload_of(&token);
    let kid = KEY.kid.as_str();

    // alg "none", with and without a signature.
    check(
        &forge(
            json!({"alg":"none","typ":"at+jwt","kid":kid}),
            payload.clone(),
            b"",
        ),
        NOW,
        Err(TokenError::UnsupportedAlgorithm),
    );
    // HS256 keyed with the public key (the classic confusion attack).
    let hs_header = json!({"alg":"HS256","typ":"at+jwt","kid":kid});
    let input = format!("{}.{}", b64(&hs_header), b64(&payload));
    let mac = openssl_free_hmac(KEY.public.n.as_bytes(), input.as_bytes());
    check(
        &format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac)),
        NOW,
        Err(TokenError::UnsupportedAlgorithm),
    );
    // Another type of JWT signed by the right key.
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    let id_token = josekit::jwt::encode_with_signer(
        &JwtPayload::from_map(payload.as_object().unwrap().clone()).unwrap(),
        &header,
        signing().signer(),
    )
    .unwrap();
    check(&id_token, NOW, Err(TokenError::WrongType));
    // An unknown kid.
    let other = generate_rsa_key().unwrap();
    let stranger = mint(
        &claims(),
        &SigningKey::from_der(other.kid.clone(), other.private.as_der()).unwrap(),
    )
    .unwrap();
    check(&stranger, NOW, Err(TokenError::UnknownKey));
    // A tampered payload.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut changed = payload.clone();
    changed["scope"] = json!("admin");
    parts[1] = b64(&changed);
    check(&parts.join("."), NOW, Err(TokenError::BadSignature));
    // Garbage.
    check("not-a-jwt", NOW, Err(TokenError::Malformed));
    check(&"a.b.c".repeat(5000), NOW, Err(TokenError::Malformed));
}

#[test]
fn required_claims_must_be_present_with_the_right_types() {
    let mut header = JwsHeader::new();
    header.set_token_type("at+jwt");
    header.set_key_id(KEY.kid.as_str());
    // Signed as raw JWS, since josekit's JWT builder refuses some of these.
    let signed = |payload: serde_json::Value| {
        josekit::jws::serialize_compact(payload.to_string().as_bytes(), &header, signing().signer())
            .unwrap()
    };
    let base = payload_of(&mint(&claims(), &signing()).unwrap());
    for (claim, value) in [
        ("exp", None),
        ("exp", Some(json!(1_700_000_900.5))),
        ("iat", None),
        ("jti", None),
        ("sub", Some(json!(5))),
        ("tid", Some(json!("Not A Tenant"))),
        // A confirmation this verifier cannot check is not ignored.
        ("cnf", Some(json!({ "jkt": "abc" }))),
        ("cnf", Some(json!({ "x5t#S256": "abc", "jkt": "abc" }))),
        ("cnf", Some(json!({ "x5t#S256": 5 }))),
        ("cnf", Some(json!("abc"))),
    ] {
        let mut payload = base.clone();
        match value {
            None => {
                payload.as_object_mut().unwrap().remove(claim);
            }
            Some(value) => payload[claim] = value,
        }
        let outcome = verify(&signed(payload), &keys(), &expect(NOW));
        assert!(
            matches!(outcome, Err(TokenError::InvalidClaim(_))),
            "{claim}: {outcome:?}"
        );
    }
}

/// HMAC-SHA-256 from its definition, so the test needs no HMAC crate.
fn openssl_free_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha256(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let outer: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(sha256(&inner))
        .collect();
    sha256(&outer).to_vec()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

#[test]
fn critical_headers_short_keys_and_broken_parts_are_refused() {
    let token = mint(&claims(), &signing()).unwrap();
    let payload = payload_of(&token);
    let kid = KEY.kid.as_str();
    let signed = |header: serde_json::Value, payload: &serde_json::Value| {
        let input = format!("{}.{}", b64(&header), b64(payload));
        let signature = signing().sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    };
    // A header extension nobody here understands (RFC 7515 §4.1.11).
    let critical = json!({"alg":"RS256","typ":"at+jwt","kid":kid,"crit":["b64"],"b64":false});
    check(&signed(critical, &payload), NOW, Err(TokenError::Malformed));
    // Properly signed but its payload is not a JSON object.
    let header = json!({"alg":"RS256","typ":"at+jwt","kid":kid});
    check(
        &signed(header.clone(), &json!([1, 2])),
        NOW,
        Err(TokenError::Malformed),
    );
    // The right header and payload with a signature of zeros, or none.
    let (input, _) = token.rsplit_once('.').unwrap();
    let zeros = URL_SAFE_NO_PAD.encode([0u8; 256]);
    check(
        &format!("{input}.{zeros}"),
        NOW,
        Err(TokenError::BadSignature),
    );
    check(&format!("{input}."), NOW, Err(TokenError::BadSignature));
    // Four parts, and a signature that is not base64url.
    check(&format!("{token}.x"), NOW, Err(TokenError::Malformed));
    check(&format!("{input}.!!"), NOW, Err(TokenError::Malformed));
    // A JWKS offering a 1024-bit key is refused as a whole.
    let rsa = openssl::rsa::Rsa::generate(1024).unwrap();
    let short = json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
        "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
    });
    assert_eq!(
        KeySet::from_jwks(&[short]).unwrap_err(),
        TokenError::Malformed
    );
}

#[test]
fn a_jwks_key_with_a_degenerate_exponent_is_refused() {
    let n = &KEY.public.n;
    for e in [vec![1u8], vec![2u8], vec![1u8, 0u8]] {
        let jwk = json!({
            "kty": "RSA", "kid": KEY.kid.as_str(), "alg": "RS256", "use": "sig",
            "n": n, "e": URL_SAFE_NO_PAD.encode(e),
        });
        assert_eq!(
            KeySet::from_jwks(&[jwk]).unwrap_err(),
            TokenError::Malformed
        );
    }
}

#[test]
fn a_certificate_bound_token_carries_and_returns_its_thumbprint() {
    let bound = AccessTokenClaims {
        certificate_thumbprint: Some("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2".into()),
        ..claims()
    };
    let token = mint(&bound, &signing()).unwrap();
    assert_eq!(
        payload_of(&token)["cnf"],
        json!({ "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2" })
    );
    let verified = verify(&token, &keys(), &expect(NOW)).unwrap();
    assert_eq!(verified.claims(), &bound);
    assert!(
        payload_of(&mint(&claims(), &signing()).unwrap())
            .get("cnf")
            .is_none()
    );
}

#[test]
fn a_bearer_token_is_taken_from_its_header_value_in_any_case() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bEaReR  abc "), Some("abc"));
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearer"), None);
    assert_eq!(bearer_token("Basic abc"), None);
}
