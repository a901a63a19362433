//! Keysilo access tokens: RFC 9068 JWTs signed RS256 with a tenant's key.
//!
//! [`mint`] signs [`AccessTokenClaims`] with a [`SigningKey`];
//! [`verify`] accepts a token only when everything holds (RS256, `typ`
//! `at+jwt`, a known `kid`, a valid signature, the expected issuer and
//! audience, time claims within the skew) and returns a
//! [`VerifiedAccessToken`], which nothing else can construct.
//!
//! ```
//! use std::collections::HashMap;
//! use keysilo_custody::generate_rsa_key;
//! use keysilo_tokens::{AccessTokenClaims, Expectations, KeySet, SigningKey, mint, verify};
//! use keysilo_types::TenantId;
//!
//! let key = generate_rsa_key().unwrap();
//! let signing = SigningKey::from_der(key.kid.clone(), key.private.as_der()).unwrap();
//! let claims = AccessTokenClaims {
//!     issuer: "https://id.example/acme".into(),
//!     subject: "svc".into(),
//!     audience: vec!["api".into()],
//!     client_id: "svc".into(),
//!     scope: "read".into(),
//!     tenant: TenantId::parse("acme").unwrap(),
//!     jti: "j1".into(),
//!     issued_at: 1_000,
//!     expires_at: 1_900,
//!     allowed_origins: vec![],
//!     roles: vec![],
//!     certificate_thumbprint: None,
//!     actor: None,
//! };
//! let token = mint(&claims, &signing).unwrap();
//! let keys = KeySet::from_jwks(&[key.public.to_jwk(&key.kid)]).unwrap();
//! let expect = Expectations { issuer: &claims.issuer, audience: Some("api"), now: 1_100, skew: 60 };
//! assert_eq!(verify(&token, &keys, &expect).unwrap().claims(), &claims);
//! ```
//!
//! No IO, no clock: `now` is an argument. Keys come in as DER or JWKs, so
//! this crate does not depend on key custody (a verifier links no AES-GCM).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod gate;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jws::JwsHeader;
use josekit::jws::alg::rsassa::RsassaJwsSigner;
use josekit::jwt::JwtPayload;
use keysilo_types::{Kid, TenantId};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use openssl::sign::Verifier;
use serde_json::Value;

/// Longest token accepted for verification, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused or could not be made. The variants name the
/// reason for logs and metrics; callers answer all of them the same way.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a compact JWS, too long, or its JSON is not an object.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not RS256 (`none`, HMAC and everything else are refused).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// `kid` is missing or not a current key.
    #[error("unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim `{0}`")]
    InvalidClaim(&'static str),
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed (beyond the skew).
    #[error("expired")]
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the skew).
    #[error("not yet valid")]
    NotYetValid,
    /// Signing failed.
    #[error("cannot sign the token")]
    Signing,
}

/// The claims of a Keysilo access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenClaims {
    /// `iss`: `{public_base_url}/{tenant}`.
    pub issuer: String,
    /// `sub`: the user id, or the client id for `client_credentials`.
    pub subject: String,
    /// `aud`.
    pub audience: Vec<String>,
    /// `client_id`.
    pub client_id: String,
    /// `scope`, space-separated.
    pub scope: String,
    /// `tid`.
    pub tenant: TenantId,
    /// `jti`.
    pub jti: String,
    /// `iat`, seconds since the epoch.
    pub issued_at: u64,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// `allowed_origins`, omitted when empty.
    pub allowed_origins: Vec<String>,
    /// `roles`, omitted when empty.
    pub roles: Vec<String>,
    /// `cnf.x5t#S256` (RFC 8705 §3.1): the thumbprint of the client
    /// certificate the token is bound to, if it is bound.
    pub certificate_thumbprint: Option<String>,
    /// `act.sub` (RFC 8693 §4.1): the client that vouched for the subject
    /// when the token came from a token exchange (secure mode).
    pub actor: Option<String>,
}

fn strings(values: &[String]) -> Value {
    Value::Array(values.iter().cloned().map(Value::String).collect())
}

/// The token of an `Authorization: Bearer <token>` header value (RFC 6750
/// §2.1; the scheme in any case), or `None` for another scheme or an empty
/// token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A private RSA key ready to sign RS256, built once and shared: parsing
/// the key costs more than a signature.
#[derive(Clone)]
pub struct SigningKey {
    kid: Kid,
    signer: RsassaJwsSigner,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The RS256 signer of a PKCS#8 DER private key, with `kid` in the
    /// headers of what it signs.
    pub fn from_der(kid: Kid, der: &[u8]) -> Result<Self, TokenError> {
        let mut signer = josekit::jws::RS256
            .signer_from_der(der)
            .map_err(|_| TokenError::Signing)?;
        signer.set_key_id(kid.as_str());
        Ok(Self { kid, signer })
    }

    /// The key's id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The josekit signer (its key id is set), to sign other JWTs.
    pub fn signer(&self) -> &RsassaJwsSigner {
        &self.signer
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5 and SHA-256.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        use josekit::jws::JwsSigner as _;
        self.signer.sign(message).map_err(|_| TokenError::Signing)
    }
}

/// Signs `claims` as an RFC 9068 access token with `key`. NumericDates are
/// written as integers, as strict verifiers require.
pub fn mint(claims: &AccessTokenClaims, key: &SigningKey) -> Result<String, TokenError> {
    let mut header = JwsHeader::new();
    header.set_token_type("at+jwt");
    header.set_key_id(key.kid().as_str());
    let mut map = serde_json::Map::new();
    map.insert("iss".into(), claims.issuer.clone().into());
    map.insert("sub".into(), claims.subject.clone().into());
    map.insert(
        "aud".into(),
        match claims.audience.as_slice() {
            [one] => one.clone().into(),
            many => strings(many),
        },
    );
    map.insert("exp".into(), claims.expires_at.into());
    map.insert("iat".into(), claims.issued_at.into());
    map.insert("jti".into(), claims.jti.clone().into());
    map.insert("client_id".into(), claims.client_id.clone().into());
    map.insert("scope".into(), claims.scope.clone().into());
    map.insert("tid".into(), claims.tenant.as_str().into());
    if !claims.allowed_origins.is_empty() {
        map.insert("allowed_origins".into(), strings(&claims.allowed_origins));
    }
    if !claims.roles.is_empty() {
        map.insert("roles".into(), strings(&claims.roles));
    }
    if let Some(thumbprint) = &claims.certificate_thumbprint {
        map.insert("cnf".into(), serde_json::json!({ "x5t#S256": thumbprint }));
    }
    if let Some(actor) = &claims.actor {
        map.insert("act".into(), serde_json::json!({ "sub": actor }));
    }
    let payload = JwtPayload::from_map(map).map_err(|_| TokenError::Signing)?;
    josekit::jwt::encode_with_signer(&payload, &header, &key.signer)
        .map_err(|_| TokenError::Signing)
}

/// Smallest RSA modulus accepted for verification, in bits.
const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted for verification, in bits.
const MAX_RSA_BITS: u32 = 8192;

/// The verification keys of one issuer, by `kid`.
#[derive(Default, Clone)]
pub struct KeySet(HashMap<Kid, PKey<Public>>);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A base64url member of a JWK as a big number.
fn jwk_number(jwk: &Value, member: &str) -> Result<BigNum, TokenError> {
    let text = jwk
        .get(member)
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed)?;
    BigNum::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

impl KeySet {
    /// Builds verifiers from RSA JWKs (members `kid`, `n`, `e`); keys that
    /// are not RS256 signing keys are skipped, and a key outside 2,048 to
    /// 8,192 bits or with an even or unit exponent is an error.
    pub fn from_jwks(jwks: &[Value]) -> Result<Self, TokenError> {
        let mut keys = HashMap::new();
        for jwk in jwks {
            let Some(Value::String(kid)) = jwk.get("kid") else {
                continue;
            };
            let usable = jwk.get("kty") == Some(&Value::from("RSA"))
                && jwk.get("alg").is_none_or(|alg| alg == "RS256")
                && jwk.get("use").is_none_or(|u| u == "sig");
            let Ok(kid) = Kid::parse(kid) else { continue };
            if !usable {
                continue;
            }
            let rsa = Rsa::from_public_components(jwk_number(jwk, "n")?, jwk_number(jwk, "e")?)
                .map_err(|_| TokenError::Malformed)?;
            // A sane RSA key: 2,048 to 8,192 bits, an odd exponent above 1
            // (e = 1 would make every signature its own message).
            let bits = rsa.n().num_bits();
            let exponent = rsa.e();
            if bits < MIN_RSA_BITS.cast_signed()
                || bits > MAX_RSA_BITS.cast_signed()
                || exponent.num_bits() < 2
                || !exponent.is_bit_set(0)
            {
                return Err(TokenError::Malformed);
            }
            let key = PKey::from_rsa(rsa).map_err(|_| TokenError::Malformed)?;
            keys.insert(kid, key);
        }
        Ok(Self(keys))
    }

    /// Whether `kid` is in the set.
    pub fn contains(&self, kid: &Kid) -> bool {
        self.0.contains_key(kid)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a token must match.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// A value `aud` must contain, if any is required.
    pub audience: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: u64,
    /// Allowed clock skew in seconds.
    pub skew: u64,
}

/// A token that passed [`verify`]. Only [`verify`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedAccessToken {
    claims: AccessTokenClaims,
    kid: Kid,
}

impl VerifiedAccessToken {
    /// The verified claims.
    pub fn claims(&self) -> &AccessTokenClaims {
        &self.claims
    }

    /// The key that signed it.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }
}

/// A compact JWS split and decoded once, nothing verified yet: what a
/// verifier reads (`iss`, `kid`) to find the keys, then [`Self::verify`].
/// Each part is decoded once, however many questions are asked of it.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    header: serde_json::Map<String, Value>,
    claims: serde_json::Map<String, Value>,
}

/// A base64url JSON object.
fn json_object(part: &str) -> Result<serde_json::Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed),
    }
}

impl<'a> UnverifiedToken<'a> {
    /// Splits and decodes `token`; `Malformed` unless it is a compact JWS
    /// of at most [`MAX_TOKEN_LEN`] bytes whose header and payload are JSON
    /// objects.
    pub fn parse(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            signing_input,
            signature: URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| TokenError::Malformed)?,
            header: json_object(header)?,
            claims: json_object(payload)?,
        })
    }

    /// The `iss` claim, unverified.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The header's `kid`, if it is a well-formed key id.
    pub fn kid(&self) -> Option<Kid> {
        self.header
            .get("kid")
            .and_then(Value::as_str)
            .and_then(|kid| Kid::parse(kid).ok())
    }

    /// Checks the header, the signature with `keys`, then the claims
    /// against `expect`. The signature is checked before any claim, so a
    /// forged token and an expired one stay distinct.
    pub fn verify(
        &self,
        keys: &KeySet,
        expect: &Expectations<'_>,
    ) -> Result<VerifiedAccessToken, TokenError> {
        if self.header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let typ = self.header.get("typ").and_then(Value::as_str).unwrap_or("");
        if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
            return Err(TokenError::WrongType);
        }
        // No header extension is understood (RFC 7515 §4.1.11), and with
        // `crit` refused, so is RFC 7797's unencoded payload.
        if self.header.contains_key("crit") {
            return Err(TokenError::Malformed);
        }
        let kid = self.kid().ok_or(TokenError::UnknownKey)?;
        let key = keys.0.get(&kid).ok_or(TokenError::UnknownKey)?;
        // RSASSA-PKCS1-v1_5 with SHA-256 over `header.payload` (RFC 7518
        // §3.3), by OpenSSL.
        let valid = Verifier::new(MessageDigest::sha256(), key)
            .and_then(|mut verifier| {
                verifier.verify_oneshot(&self.signature, self.signing_input.as_bytes())
            })
            .unwrap_or(false);
        if !valid {
            return Err(TokenError::BadSignature);
        }
        let claims = check_claims(&self.claims, expect)?;
        Ok(VerifiedAccessToken { claims, kid })
    }
}

/// Verifies `token` against `keys` and `expect`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    expect: &Expectations<'_>,
) -> Result<VerifiedAccessToken, TokenError> {
    UnverifiedToken::parse(token)?.verify(keys, expect)
}

fn text(claims: &serde_json::Map<String, Value>, name: &'static str) -> Result<String, TokenError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(TokenError::InvalidClaim(name))
}

fn seconds(
    claims: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or(TokenError::InvalidClaim(name)),
    }
}

fn text_list(
    claims: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Vec<String>, TokenError> {
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(TokenError::InvalidClaim(name))
            })
            .collect(),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

/// `cnf.x5t#S256`, when the token is bound to a certificate. A `cnf` this
/// verifier cannot honour (another confirmation method) is an error, not
/// something to ignore: the token is bound to something it cannot check.
fn confirmation(claims: &serde_json::Map<String, Value>) -> Result<Option<String>, TokenError> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    cnf.as_object()
        .filter(|members| members.len() == 1)
        .and_then(|members| members.get("x5t#S256"))
        .and_then(Value::as_str)
        .filter(|thumbprint| !thumbprint.is_empty())
        .map(|thumbprint| Some(thumbprint.to_owned()))
        .ok_or(TokenError::InvalidClaim("cnf"))
}

/// `act.sub` (RFC 8693 §4.1), when the token names an actor. Nested
/// actors (`act.act`) are prior actors, informational only (§4.1).
fn actor(claims: &serde_json::Map<String, Value>) -> Result<Option<String>, TokenError> {
    let Some(act) = claims.get("act") else {
        return Ok(None);
    };
    act.get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty())
        .map(|sub| Some(sub.to_owned()))
        .ok_or(TokenError::InvalidClaim("act"))
}

fn check_claims(
    claims: &serde_json::Map<String, Value>,
    expect: &Expectations<'_>,
) -> Result<AccessTokenClaims, TokenError> {
    let issuer = text(claims, "iss")?;
    if issuer != expect.issuer {
        return Err(TokenError::WrongIssuer);
    }
    let expires_at = seconds(claims, "exp")?.ok_or(TokenError::InvalidClaim("exp"))?;
    let issued_at = seconds(claims, "iat")?.ok_or(TokenError::InvalidClaim("iat"))?;
    if expires_at.saturating_add(expect.skew) <= expect.now {
        return Err(TokenError::Expired);
    }
    let not_before = seconds(claims, "nbf")?.unwrap_or(issued_at).max(issued_at);
    if not_before > expect.now.saturating_add(expect.skew) {
        return Err(TokenError::NotYetValid);
    }
    let audience = text_list(claims, "aud")?;
    if let Some(required) = expect.audience
        && !audience.iter().any(|a| a == required)
    {
        return Err(TokenError::WrongAudience);
    }
    let tenant =
        TenantId::parse(&text(claims, "tid")?).map_err(|_| TokenError::InvalidClaim("tid"))?;
    Ok(AccessTokenClaims {
        issuer,
        subject: text(claims, "sub")?,
        audience,
        client_id: text(claims, "client_id")?,
        scope: text(claims, "scope")?,
        tenant,
        jti: text(claims, "jti")?,
        issued_at,
        expires_at,
        allowed_origins: text_list(claims, "allowed_origins")?,
        roles: text_list(claims, "roles")?,
        certificate_thumbprint: confirmation(claims)?,
        actor: actor(claims)?,
    })
}
