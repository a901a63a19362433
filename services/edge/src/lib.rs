//! The Keysilo edge validator: admits WebSocket upgrades and forward-auth
//! checks for a data plane, and closes live sessions when what their token
//! depends on is revoked.
//!
//! Validation itself is `keysilo_tokens::UnverifiedToken` (each token
//! decoded once, then verified against its tenant's keys) plus
//! `keysilo_tokens::gate`; this crate adds the IO around it: the JWKS
//! cache (`keys`), the revocation feed (`feed`), the session registry
//! (`sessions`) and the HTTP routes.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod feed;
pub mod keys;
pub mod openapi;
pub mod routes;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod validate;
