//! Fixtures shared by the fuzz targets in `fuzz_targets/`.
//!
//! No key material is committed: the one RSA key is generated at start-up
//! (once per fuzzing process, not per input) and published in a `KeySet`
//! under the fixed key id [`KID`], so seed tokens in `corpus/` can name it
//! and reach the signature check. Tokens that must verify are signed at run
//! time by the structure-aware target `token_claims`.

use std::sync::LazyLock;

use keysilo_custody::{GeneratedKey, generate_rsa_key};
use keysilo_tokens::{Expectations, KeySet, SigningKey};
use keysilo_types::Kid;

/// The key id the fuzzing key is published under (seeds use it).
pub const KID: &str = "fuzz-key";
/// The identity base URL; tenants' issuers are `{BASE}/{tenant}`.
pub const BASE: &str = "https://id.example";
/// The issuer every verification expects.
pub const ISSUER: &str = "https://id.example/acme";
/// The audience every verification requires.
pub const AUDIENCE: &str = "api";
/// "Now" for the time claims: 2023-11-14T22:13:20Z.
pub const NOW: u64 = 1_700_000_000;
/// Allowed clock skew, as the edge's default.
pub const SKEW: u64 = 60;

static KEY: LazyLock<GeneratedKey> =
    LazyLock::new(|| generate_rsa_key().expect("generate the fuzzing RSA key"));

static SIGNING: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::from_der(kid(), KEY.private.as_der()).expect("a signer for the fuzzing key"));

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    KeySet::from_jwks(&[KEY.public.to_jwk(&kid())]).expect("a key set of the fuzzing key")
});

/// [`KID`] as a `Kid`.
pub fn kid() -> Kid {
    Kid::parse(KID).expect("a valid kid")
}

/// The key set holding only the fuzzing key, under [`KID`].
pub fn keys() -> &'static KeySet {
    &KEYS
}

/// The signer of the fuzzing key; its tokens name [`KID`].
pub fn signing() -> &'static SigningKey {
    &SIGNING
}

/// What tokens must match, at `now` with `skew`.
pub fn expectations(now: u64, skew: u64) -> Expectations<'static> {
    Expectations {
        issuer: ISSUER,
        audience: Some(AUDIENCE),
        now,
        skew,
    }
}
