//! The only place the identity service reads the wall clock, so that the
//! libraries can take `now` as an argument and stay deterministic.

use std::time::SystemTime;

/// The current wall-clock time.
#[allow(clippy::disallowed_methods, reason = "this is the clock module")]
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// RFC 3339 text for API responses (UTC, with fractional seconds).
pub fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}
