//! The OAuth2 side of the identity service: [`OAuthService`] (client
//! authentication, the grants, introspection and revocation, and minting
//! secure mode's auth tokens),
//! [`registry::RegistryService`] (clients and users), and what they need
//! (password hashing on a bounded pool, a client cache, rate limits).
//! Nothing here knows HTTP: `crate::routes` parses requests into
//! [`request`] types and maps [`OAuthError`] to responses.

mod auth_token;
mod authenticate;
pub mod clients;
pub mod credentials;
pub mod discovery;
pub mod error;
pub mod grants;
mod introspection;
pub mod limits;
pub mod passwords;
pub mod registry;
pub mod request;
pub mod scope;
mod service;
pub mod token;

pub use auth_token::AuthTokenResponse;
pub use authenticate::certificate_binding;
pub use error::OAuthError;
pub use request::GrantType;
pub use service::OAuthService;
