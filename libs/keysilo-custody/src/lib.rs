//! Key custody: tenant RSA signing keys and the master keys that wrap them.
//!
//! - [`generate_rsa_key`] makes an RSA-2048 key whose `kid` is its RFC 7638
//!   thumbprint.
//! - [`MasterKeyRing`] holds every configured master key version and seals
//!   private keys with AES-256-GCM ([`MasterKeyRing::wrap`]): a fresh 96-bit
//!   nonce per wrap, and the tenant id and `kid` bound as associated data,
//!   so a wrapped key copied to another row does not open.
//! - [`PrivateKeyDer`] is an unwrapped key; `keysilo_tokens::SigningKey`
//!   turns it into a signer, so that a verifier never links this crate.
//!
//! ```
//! use keysilo_custody::{MasterKey, MasterKeyRing, generate_rsa_key};
//! use keysilo_types::TenantId;
//!
//! let ring = MasterKeyRing::new(1, vec![MasterKey::from_bytes(1, [7; 32])]).unwrap();
//! let tenant = TenantId::parse("acme").unwrap();
//! let key = generate_rsa_key().unwrap();
//! let wrapped = ring.wrap(&tenant, &key.kid, &key.private).unwrap();
//! let opened = ring.unwrap(&tenant, &key.kid, &wrapped).unwrap();
//! assert_eq!(opened, key.private);
//! ```
//!
//! This crate does no IO, reads no configuration and no clock.
//!
//! ## Guarantees
//! - Plaintext private keys ([`PrivateKeyDer`]) and master keys are zeroized
//!   when dropped, and their `Debug` output is redacted.
//! - Unwrapping fails with one opaque [`CustodyError::UnwrapFailed`],
//!   whatever was wrong (tenant, kid, ciphertext, tag or master key).
//!
//! ## Non-guarantees
//! - Copies made by OpenSSL while signing live in OpenSSL's memory; OpenSSL
//!   clears private key numbers when it frees them, but this crate cannot
//!   prove it.
//! - Nothing here protects against a compromised process.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::Nonce;
use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keysilo_types::{Kid, TenantId};
use zeroize::{Zeroize as _, ZeroizeOnDrop, Zeroizing};

/// RSA modulus size of generated keys.
pub const RSA_BITS: u32 = 2048;

/// Why a custody operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// A master key is not 32 bytes of standard base64.
    #[error("master key version {version} is not 32 bytes of base64")]
    InvalidMasterKey {
        /// The offending version.
        version: u32,
    },
    /// The ring has no key for this version (it was removed from the
    /// configuration before `rewrap` moved every key off it).
    #[error("master key version {version} is not configured")]
    UnknownMasterKeyVersion {
        /// The missing version.
        version: u32,
    },
    /// The ring's current version is not among its keys, or a version is
    /// listed twice.
    #[error("invalid master key ring: {0}")]
    InvalidRing(&'static str),
    /// The wrapped key does not open with this tenant, kid and master key.
    #[error("the wrapped key cannot be unwrapped for this tenant and kid")]
    UnwrapFailed,
    /// Sealing failed (not expected with valid inputs).
    #[error("wrapping the key failed")]
    WrapFailed,
    /// OpenSSL failed to generate or encode a key.
    #[error("RSA key operation failed")]
    Rsa(#[source] openssl::error::ErrorStack),
}

/// One version of the master key, held only as its AES-256-GCM key schedule
/// (zeroized on drop by the `aes-gcm` crate's `zeroize` feature), so the
/// raw bytes are not copied again on every wrap and unwrap.
pub struct MasterKey {
    version: u32,
    cipher: Aes256Gcm,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl MasterKey {
    /// A master key from its raw bytes.
    pub fn from_bytes(version: u32, bytes: [u8; 32]) -> Self {
        let mut key = Key::<Aes256Gcm>::from(bytes);
        let cipher = Aes256Gcm::new(&key);
        key.zeroize();
        let mut bytes = bytes;
        bytes.zeroize();
        Self { version, cipher }
    }

    /// A master key from 32 bytes in standard base64 (as configured).
    pub fn from_base64(version: u32, encoded: &str) -> Result<Self, CustodyError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| CustodyError::InvalidMasterKey { version })?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CustodyError::InvalidMasterKey { version })?;
        Ok(Self::from_bytes(version, bytes))
    }

    /// The version recorded next to every key this one wraps.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }
}

/// Every configured master key version, and which one is current.
pub struct MasterKeyRing {
    current: u32,
    keys: BTreeMap<u32, MasterKey>,
}

impl fmt::Debug for MasterKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyRing")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A private key sealed under a master key version.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// AES-256-GCM ciphertext followed by its 16-byte tag.
    pub ciphertext: Vec<u8>,
    /// The 96-bit nonce used for this wrap.
    pub nonce: [u8; 12],
    /// The master key version that sealed it.
    pub master_key_version: u32,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("master_key_version", &self.master_key_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Associated data of a wrap: a domain label, the tenant and the kid.
/// Neither id can contain a NUL byte, so the encoding is unambiguous.
fn associated_data(tenant: &TenantId, kid: &Kid) -> Vec<u8> {
    let mut aad = b"keysilo/signing-key/v1\0".to_vec();
    aad.extend_from_slice(tenant.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(kid.as_str().as_bytes());
    aad
}

fn fresh_nonce() -> Result<[u8; 12], CustodyError> {
    let mut nonce = [0u8; 12];
    openssl::rand::rand_bytes(&mut nonce).map_err(CustodyError::Rsa)?;
    Ok(nonce)
}

/// AES-256-GCM seal; `pub(crate)` so tests can check it against published
/// vectors with a fixed nonce.
pub(crate) fn seal(
    key: &MasterKey,
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CustodyError> {
    key.cipher()
        .encrypt(
            &Nonce::<Aes256Gcm>::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CustodyError::WrapFailed)
}

impl MasterKeyRing {
    /// A ring whose `current` version wraps new keys.
    pub fn new(current: u32, keys: Vec<MasterKey>) -> Result<Self, CustodyError> {
        let mut map = BTreeMap::new();
        for key in keys {
            if map.insert(key.version, key).is_some() {
                return Err(CustodyError::InvalidRing("a version is listed twice"));
            }
        }
        if !map.contains_key(&current) {
            return Err(CustodyError::InvalidRing("the current version has no key"));
        }
        Ok(Self { current, keys: map })
    }

    /// The version that wraps new keys.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Every configured version, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    fn key(&self, version: u32) -> Result<&MasterKey, CustodyError> {
        self.keys
            .get(&version)
            .ok_or(CustodyError::UnknownMasterKeyVersion { version })
    }

    /// Seals `private` for `tenant`/`kid` under the current version.
    pub fn wrap(
        &self,
        tenant: &TenantId,
        kid: &Kid,
        private: &PrivateKeyDer,
    ) -> Result<WrappedKey, CustodyError> {
        let key = self.key(self.current)?;
        let nonce = fresh_nonce()?;
        let ciphertext = seal(key, &nonce, &associated_data(tenant, kid), &private.0)?;
        Ok(WrappedKey {
            ciphertext,
            nonce,
            master_key_version: self.current,
        })
    }

    /// Opens a wrapped key with whichever version sealed it.
    pub fn unwrap(
        &self,
        tenant: &TenantId,
        kid: &Kid,
        wrapped: &WrappedKey,
    ) -> Result<PrivateKeyDer, CustodyError> {
        let key = self.key(wrapped.master_key_version)?;
        let plaintext = key
            .cipher()
            .decrypt(
                &Nonce::<Aes256Gcm>::from(wrapped.nonce),
                Payload {
                    msg: &wrapped.ciphertext,
                    aad: &associated_data(tenant, kid),
                },
            )
            .map_err(|_| CustodyError::UnwrapFailed)?;
        Ok(PrivateKeyDer(Zeroizing::new(plaintext)))
    }

    /// Unwraps with the old version and wraps again with the current one.
    pub fn rewrap(
        &self,
        tenant: &TenantId,
        kid: &Kid,
        wrapped: &WrappedKey,
    ) -> Result<WrappedKey, CustodyError> {
        let private = self.unwrap(tenant, kid, wrapped)?;
        self.wrap(tenant, kid, &private)
    }
}

/// A plaintext RSA private key (PKCS#8 DER), zeroized on drop. Not
/// `Clone`, so that copies are deliberate; equality is constant-time.
#[derive(ZeroizeOnDrop)]
pub struct PrivateKeyDer(Zeroizing<Vec<u8>>);

impl PartialEq for PrivateKeyDer {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && openssl::memcmp::eq(&self.0, &other.0)
    }
}

impl Eq for PrivateKeyDer {}

impl PrivateKeyDer {
    /// The PKCS#8 DER bytes, to build a signer from.
    pub fn as_der(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyDer([REDACTED])")
    }
}

/// The public half of an RSA key as RFC 7517 members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// Modulus, base64url without padding.
    pub n: String,
    /// Public exponent, base64url without padding.
    pub e: String,
}

impl PublicJwk {
    /// The RFC 7638 thumbprint: SHA-256 of the canonical JSON members,
    /// base64url without padding.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, self.e, self.n);
        URL_SAFE_NO_PAD.encode(openssl::sha::sha256(canonical.as_bytes()))
    }

    /// The JWK as published in a JWKS.
    pub fn to_jwk(&self, kid: &Kid) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid.as_str(),
            "n": self.n,
            "e": self.e,
        })
    }
}

/// A freshly generated key pair.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The RFC 7638 thumbprint of the public key.
    pub kid: Kid,
    /// The public half, to publish.
    pub public: PublicJwk,
    /// The private half, to wrap and store.
    pub private: PrivateKeyDer,
}

/// Generates an RSA-2048 key pair.
pub fn generate_rsa_key() -> Result<GeneratedKey, CustodyError> {
    let rsa = openssl::rsa::Rsa::generate(RSA_BITS).map_err(CustodyError::Rsa)?;
    let public = PublicJwk {
        n: URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
        e: URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
    };
    let pkey = openssl::pkey::PKey::from_rsa(rsa).map_err(CustodyError::Rsa)?;
    let private = PrivateKeyDer(Zeroizing::new(
        pkey.private_key_to_pkcs8().map_err(CustodyError::Rsa)?,
    ));
    let kid = Kid::parse(&public.thumbprint())
        .map_err(|_| CustodyError::InvalidRing("thumbprint is not a valid kid"))?;
    Ok(GeneratedKey {
        kid,
        public,
        private,
    })
}
