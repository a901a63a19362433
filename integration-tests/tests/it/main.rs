//! One test binary for every end-to-end test (fast to link, one place to
//! look). Tests run against the real PostgreSQL and Redis started by
//! `scripts/stack up`.

// Test code may panic on a broken precondition: that is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod helpers;

mod abuse;
mod api_property;
mod architecture;
mod binary;
mod compat;
mod crash;
mod docs;
mod edge;
mod events;
mod footprint;
mod health;
mod keys;
mod leaks;
mod oauth;
mod outage;
mod readiness;
mod rotation;
mod secure_mode;
mod tenants;
mod tls;
