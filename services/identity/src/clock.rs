//! The only place the identity service reads the wall clock, so that the
//! libraries can take `now` as an argument and stay deterministic.

use std::time::SystemTime;

/// The current wall-clock time.
#[allow(clippy::disallowed_methods, reason = "this is the clock module")]
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the epoch, as JWT NumericDates want them.
pub fn unix_seconds() -> u64 {
    unix_of(now())
}

/// Seconds since the epoch, signed (for differences that may go negative).
pub fn unix_seconds_signed() -> i64 {
    i64::try_from(unix_seconds()).unwrap_or(i64::MAX)
}

/// Milliseconds since the epoch.
pub fn unix_millis() -> u64 {
    now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the epoch of `at` (0 before the epoch).
pub fn unix_of(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time `seconds` after the epoch.
pub fn from_unix(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(seconds))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// RFC 3339 text for API responses (UTC, with fractional seconds).
pub fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}
