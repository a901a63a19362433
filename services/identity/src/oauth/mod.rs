//! The OAuth2 side of the identity service: client authentication, the
//! grants, introspection and revocation, and what they need (password
//! hashing on a bounded pool, a client cache, rate limits).

pub mod clients;
pub mod credentials;
pub mod error;
pub mod grants;
pub mod limits;
pub mod passwords;
pub mod registry;
pub mod scope;

pub use error::OAuthError;
