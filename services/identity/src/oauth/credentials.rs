//! Random credentials and how they are stored.
//!
//! Client secrets and refresh tokens are 256-bit random values, so a fast
//! hash is as good as a slow one against guessing: nobody can enumerate
//! 2^256 candidates. Client secrets get a keyed hash (HMAC-SHA-256 under a
//! server-side pepper) so that a stolen database alone cannot even check a
//! guess; refresh tokens get plain SHA-256, being single-use and bound to
//! their family. Either way the token endpoint stays fast, which a
//! password-grade hash (argon2, tens of milliseconds) would not allow.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keysilo_config::Secret;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;

/// `bytes` random bytes from OpenSSL's CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> Result<String, openssl::error::ErrorStack> {
    let mut buffer = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buffer)?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

/// A new client id: 128 random bits.
pub fn new_client_id() -> Result<String, openssl::error::ErrorStack> {
    random_token(16)
}

/// A new client secret or refresh token: 256 random bits.
pub fn new_secret() -> Result<String, openssl::error::ErrorStack> {
    random_token(32)
}

/// SHA-256 of a refresh token or an auth token, as stored (256 random
/// bits need no salt or stretching).
pub fn refresh_token_hash(token: &str) -> Vec<u8> {
    openssl::sha::sha256(token.as_bytes()).to_vec()
}

/// Constant-time equality of two digests.
pub fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// HMAC-SHA-256 under the configured pepper.
pub struct SecretHasher {
    key: PKey<Private>,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher([REDACTED])")
    }
}

impl SecretHasher {
    /// A hasher keyed with `pepper`.
    pub fn new(pepper: &Secret) -> Result<Self, openssl::error::ErrorStack> {
        Ok(Self {
            key: PKey::hmac(pepper.expose().as_bytes())?,
        })
    }

    /// The stored form of a client secret.
    pub fn hash(&self, secret: &str) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(secret.as_bytes())?;
        signer.sign_to_vec()
    }
}
