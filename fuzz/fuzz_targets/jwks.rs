//! Arbitrary bytes as a JWKS document, read as the edge reads what it
//! fetches from the identity service (`services/edge/src/keys.rs`: the
//! `keys` array of a JSON object, anything unusable an empty set), plus a
//! bare array of JWKs or a single JWK given to `KeySet::from_jwks`.
//!
//! Invariants: no panic; a set never holds more keys than JWKs given;
//! every usable RSA signing JWK with a valid kid is in an accepted set; and
//! a forged token naming one of its keys is refused with `BadSignature`.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keysilo_fuzz::{NOW, SKEW, expectations};
use keysilo_tokens::{KeySet, TokenError, verify};
use keysilo_types::Kid;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The edge's reading of a fetched document (`JwksCache::fetch`).
fn as_the_edge_reads(body: &Value) -> KeySet {
    let jwks = body
        .get("keys")
        .and_then(|k| k.as_array())
        .cloned()
        .unwrap_or_default();
    KeySet::from_jwks(&jwks).unwrap_or_default()
}

fn check(jwks: &[Value]) {
    let Ok(set) = KeySet::from_jwks(jwks) else {
        return;
    };
    assert!(set.len() <= jwks.len());
    assert_eq!(set.is_empty(), set.len() == 0);
    let _ = format!("{set:?}");
    for jwk in jwks {
        let Some(kid) = jwk
            .get("kid")
            .and_then(Value::as_str)
            .and_then(|k| Kid::parse(k).ok())
        else {
            continue;
        };
        let usable = jwk.get("kty") == Some(&json!("RSA"))
            && jwk.get("alg").is_none_or(|alg| alg == "RS256")
            && jwk.get("use").is_none_or(|u| u == "sig");
        if usable {
            assert!(set.contains(&kid), "usable key {kid:?} missing");
        }
    }
    // A token naming one of the keys, with a signature nobody made.
    for jwk in jwks.iter().take(2) {
        let Some(kid) = jwk.get("kid").and_then(Value::as_str) else {
            continue;
        };
        if !Kid::parse(kid).is_ok_and(|k| set.contains(&k)) {
            continue;
        }
        let header = json!({ "alg": "RS256", "typ": "at+jwt", "kid": kid }).to_string();
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"https://id.example/acme"}"#),
            URL_SAFE_NO_PAD.encode([0x5a; 256]),
        );
        let outcome = verify(&token, &set, &expectations(NOW, SKEW)).map(|_| ());
        assert_eq!(outcome, Err(TokenError::BadSignature));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let edge = as_the_edge_reads(&document);
    assert!(
        edge.len()
            <= document
                .get("keys")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
    );
    match &document {
        Value::Object(members) => {
            if let Some(Value::Array(keys)) = members.get("keys") {
                check(keys);
            }
            check(std::slice::from_ref(&document));
        }
        Value::Array(keys) => check(keys),
        _ => {}
    }
});
