//! Arbitrary text as a bearer token: `UnverifiedToken::parse`, its
//! accessors, `verify` (both entry points) against a fixed key set, and the
//! edge's pure helpers on what the token claims.
//!
//! Invariants: no panic; both `verify` entry points agree; a parsed token
//! is a compact JWS of at most `MAX_TOKEN_LEN` bytes; and nothing the
//! fuzzer writes ever verifies, since it cannot sign with the key generated
//! at start-up (an `Ok` here would be a forged token accepted).

#![no_main]

use keysilo_fuzz::{BASE, NOW, SKEW, expectations, keys};
use keysilo_tokens::gate::{normalize_origin, tenant_of_issuer};
use keysilo_tokens::{MAX_TOKEN_LEN, UnverifiedToken, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let token = text.as_ref();
    let expect = expectations(NOW, SKEW);

    let direct = verify(token, keys(), &expect).map(|v| v.claims().clone());
    match UnverifiedToken::parse(token) {
        Ok(parsed) => {
            assert!(token.len() <= MAX_TOKEN_LEN, "an over-long token parsed");
            assert_eq!(token.matches('.').count(), 2, "not three parts: {token:?}");
            if let Some(iss) = parsed.issuer() {
                if let Some(tenant) = tenant_of_issuer(BASE, iss) {
                    assert_eq!(format!("{BASE}/{tenant}"), iss);
                }
            }
            let _ = parsed.kid();
            let stepwise = parsed.verify(keys(), &expect).map(|v| v.claims().clone());
            assert_eq!(direct, stepwise, "verify and parse+verify disagree");
        }
        Err(err) => assert_eq!(direct, Err(err), "verify and parse disagree"),
    }
    assert!(direct.is_err(), "a token nobody signed verified: {token:?}");

    // The edge's Origin normalisation is idempotent.
    if let Some(origin) = normalize_origin(token) {
        assert_eq!(normalize_origin(&origin).as_deref(), Some(origin.as_str()));
    }
});
