//! Structure-aware tokens: the input is a JWS header and a JWT payload as
//! JSON text, one per line, with an optional third line `now skew`. Each
//! part is base64url-encoded as given and, when the header would pass the
//! header checks, the token is signed at run time with the fuzzing key, so
//! the fuzzer reaches the claim checks behind the signature.
//!
//! Invariants: no panic; a verified token matches the expectations (issuer,
//! audience, time window); and its claims survive a round trip: minted again
//! with `mint` and verified, they come back equal.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keysilo_fuzz::{AUDIENCE, ISSUER, KID, NOW, SKEW, expectations, keys, signing};
use keysilo_tokens::{MAX_TOKEN_LEN, TokenError, UnverifiedToken, mint, verify};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Whether `verify` would get as far as the signature for this header (so
/// signing is worth its millisecond).
fn reaches_signature(header: &[u8]) -> bool {
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(header) else {
        return false;
    };
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    header.get("alg").and_then(Value::as_str) == Some("RS256")
        && (typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"))
        && !header.contains_key("crit")
        && header.get("kid").and_then(Value::as_str) == Some(KID)
}

fn clock(line: Option<&[u8]>) -> (u64, u64) {
    let parsed = line
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split_once(' '))
        .and_then(|(now, skew)| Some((now.trim().parse().ok()?, skew.trim().parse().ok()?)));
    parsed.unwrap_or((NOW, SKEW))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let header = lines.next().unwrap_or_default();
    let payload = lines.next().unwrap_or_default();
    let (now, skew) = clock(lines.next());
    let expect = expectations(now, skew);

    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = if reaches_signature(header) {
        signing()
            .sign(signing_input.as_bytes())
            .expect("sign with the fuzzing key")
    } else {
        Vec::new()
    };
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));

    let Ok(verified) = verify(&token, keys(), &expect) else {
        return;
    };
    assert!(token.len() <= MAX_TOKEN_LEN);
    let claims = verified.claims();
    assert_eq!(verified.kid().as_str(), KID);
    assert_eq!(claims.issuer, ISSUER);
    assert!(claims.audience.iter().any(|a| a == AUDIENCE));
    assert!(
        claims.expires_at.saturating_add(skew) > now,
        "expired yet valid"
    );
    assert!(
        claims.issued_at <= now.saturating_add(skew),
        "issued in the future yet valid"
    );
    let unverified = UnverifiedToken::parse(&token).expect("a verified token parses");
    assert_eq!(unverified.issuer(), Some(ISSUER));
    assert_eq!(unverified.kid().as_ref(), Some(verified.kid()));

    // What verifies can be minted again, and verifies to the same claims.
    let again = mint(claims, signing()).expect("verified claims can be minted");
    match verify(&again, keys(), &expect) {
        Ok(second) => assert_eq!(second.claims(), claims, "claims changed in a round trip"),
        Err(TokenError::Malformed) if again.len() > MAX_TOKEN_LEN => {}
        Err(err) => panic!("re-minted claims refused: {err:?}\n{token}\n{again}"),
    }
});
