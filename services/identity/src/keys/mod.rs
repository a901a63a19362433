//! Tenant signing keys: rotation (emergency and scheduled), revocation,
//! master-key rewrap, and the per-replica cache that serves JWKS and
//! signing keys from memory. Tenants themselves are `crate::tenants`'.

mod cache;
mod scheduler;
mod service;

pub use cache::{KeyCache, TenantEntry};
pub use scheduler::{run_purge, run_scheduler};
pub use service::{KeyError, KeyService, RewrapReport, Rotation, master_key_ring};
