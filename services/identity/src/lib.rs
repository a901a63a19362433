//! The Keysilo identity service: an OAuth2 authorization server for many
//! tenants, each signing access tokens with its own RSA key.
//!
//! The binary (`main.rs`) only parses the command line, loads settings,
//! starts telemetry and calls [`startup::Application`]; everything else is
//! here so that tests can start the real service in-process.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod error;
pub mod events;
pub mod expiring;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod routes;
pub mod startup;
pub mod state;
pub mod tenants;
