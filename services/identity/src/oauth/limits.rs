//! Rate limits of the token endpoint (governor, per client and per source
//! address) and back-off after wrong passwords (per tenant and username).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keysilo_config::LimitSettings;

/// Usernames tracked for back-off at most.
const MAX_TRACKED: usize = 100_000;

struct Failures {
    /// Wrong passwords since the last right one.
    count: u32,
    /// Attempts admitted and not judged yet.
    in_flight: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

/// A password attempt admitted by [`Limits::password_attempt`]. Dropped
/// without [`PasswordAttempt::succeeded`], it counts as a wrong password:
/// whatever ends the request early (an error, the caller going away) counts
/// against the username too.
#[must_use = "an attempt dropped unjudged counts as a wrong password"]
pub struct PasswordAttempt<'a> {
    limits: &'a Limits,
    key: String,
    succeeded: bool,
    undecided: bool,
}

impl PasswordAttempt<'_> {
    /// The password was right: the username's failures are forgotten.
    pub fn succeeded(mut self) {
        self.succeeded = true;
    }

    /// The password could not be checked (PostgreSQL unavailable, the
    /// hashing pool saturated): neither a success nor a failure. An outage
    /// must not push users into back-off.
    pub fn undecided(mut self) {
        self.undecided = true;
    }
}

impl Drop for PasswordAttempt<'_> {
    fn drop(&mut self) {
        if self.undecided {
            self.limits.abandoned(&self.key);
        } else {
            self.limits.judged(&self.key, self.succeeded);
        }
    }
}

/// The limiters of one replica.
pub struct Limits {
    per_client: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    failures: Mutex<HashMap<String, Failures>>,
    free_failures: u32,
    max_backoff: Duration,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    /// Limiters as configured.
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            per_client: RateLimiter::keyed(quota(
                settings.token_per_client_per_second,
                settings.token_burst,
            )),
            per_address: RateLimiter::keyed(quota(
                settings.token_per_address_per_second,
                settings.token_burst,
            )),
            failures: Mutex::new(HashMap::new()),
            free_failures: settings.password_failures_before_backoff,
            max_backoff: Duration::from_secs(settings.password_backoff_max_seconds),
            clock: DefaultClock::default(),
        }
    }

    fn wait(
        &self,
        outcome: Result<(), governor::NotUntil<governor::clock::QuantaInstant>>,
    ) -> Result<(), Duration> {
        outcome.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// One request from `address`; `Err(wait)` when over its limit. IPv6
    /// addresses count per /64, the smallest network one subscriber gets:
    /// per /128 one host could take 2^64 budgets.
    pub fn address(&self, address: IpAddr) -> Result<(), Duration> {
        self.wait(self.per_address.check_key(&limit_key(address)))
    }

    /// One request of client `key` (`tenant/client_id`).
    pub fn client(&self, key: &str) -> Result<(), Duration> {
        self.wait(self.per_client.check_key(&key.to_owned()))
    }

    /// Admits a password attempt for `key` (`tenant/username`) unless it is
    /// backing off, or as many attempts as the failures still free are
    /// being judged already: parallel guesses cannot all slip in before the
    /// first is judged, while parallel right passwords cost nothing. After
    /// the free failures, one attempt at a time, and each wrong one doubles
    /// the back-off, up to the maximum.
    pub fn password_attempt(&self, key: &str) -> Result<PasswordAttempt<'_>, Duration> {
        let now = Instant::now();
        let mut failures = self.failures();
        if let Some(until) = failures.get(key).and_then(|f| f.blocked_until)
            && until > now
        {
            return Err(until - now);
        }
        if failures.len() >= MAX_TRACKED && !failures.contains_key(key) {
            // Invented usernames must not grow this without bound: forget
            // the ones that are neither blocked nor recent.
            failures.retain(|_, f| {
                f.in_flight > 0
                    || f.blocked_until.is_some_and(|u| u > now)
                    || now.duration_since(f.last) < Duration::from_secs(60)
            });
            if failures.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            in_flight: 0,
            blocked_until: None,
            last: now,
        });
        let parallel = self.free_failures.saturating_sub(entry.count).max(1);
        if entry.in_flight >= parallel {
            return Err(Duration::from_secs(1));
        }
        entry.in_flight += 1;
        entry.last = now;
        Ok(PasswordAttempt {
            limits: self,
            key: key.to_owned(),
            succeeded: false,
            undecided: false,
        })
    }

    /// The failure counts. A panic elsewhere while holding the lock left
    /// them consistent (every update is a few field writes), so a poisoned
    /// lock is used as it is rather than ending password sign-in.
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the outcome of an attempt.
    fn judged(&self, key: &str, succeeded: bool) {
        let now = Instant::now();
        let mut failures = self.failures();
        // Entries with attempts in flight are never purged, so it is there.
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            in_flight: 1,
            blocked_until: None,
            last: now,
        });
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.last = now;
        if succeeded {
            entry.count = 0;
            entry.blocked_until = None;
        } else {
            entry.count = entry.count.saturating_add(1);
            if entry.count >= self.free_failures {
                let doublings = (entry.count - self.free_failures).min(20);
                let backoff = Duration::from_secs(1u64 << doublings).min(self.max_backoff);
                entry.blocked_until = Some(now + backoff);
            }
        }
        if entry.count == 0 && entry.in_flight == 0 {
            failures.remove(key);
        }
    }

    /// Ends an attempt that was neither right nor wrong.
    fn abandoned(&self, key: &str) {
        let mut failures = self.failures();
        if let Some(entry) = failures.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.count == 0 && entry.in_flight == 0 {
                failures.remove(key);
            }
        }
    }

    /// Drops state nobody needs any more; called periodically.
    pub fn shrink(&self) {
        self.per_client.retain_recent();
        self.per_address.retain_recent();
        let now = Instant::now();
        let horizon = self.max_backoff.max(Duration::from_secs(3600));
        self.failures()
            .retain(|_, f| f.in_flight > 0 || now.duration_since(f.last) < horizon);
    }
}

/// The key an address is limited under: an IPv4 address (IPv4-mapped
/// IPv6 included) as itself, an IPv6 address as its /64.
fn limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(free_failures: u32) -> Limits {
        Limits {
            per_client: RateLimiter::keyed(quota(1, 1)),
            per_address: RateLimiter::keyed(quota(1, 1)),
            failures: Mutex::new(HashMap::new()),
            free_failures,
            max_backoff: Duration::from_secs(900),
            clock: DefaultClock::default(),
        }
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let limits = limits(3);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.address(a).is_ok());
        // One per second: the neighbour in the same /64 is over the limit.
        assert!(limits.address(b).is_err());
        assert!(limits.address(other).is_ok());
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(limits.address(v4).is_ok());
        assert!(limits.address(mapped).is_err());
    }

    #[test]
    fn parallel_attempts_are_capped_by_the_free_failures_and_right_ones_cost_nothing() {
        let limits = limits(3);
        let held: Vec<_> = (0..3)
            .map(|_| limits.password_attempt("t/alice").unwrap())
            .collect();
        // A fourth guess cannot slip in while three are being judged...
        assert!(limits.password_attempt("t/alice").is_err());
        // ...nor does anyone else's username suffer.
        drop(limits.password_attempt("t/bob").unwrap());
        for attempt in held {
            attempt.succeeded();
        }
        // Right passwords, however parallel, leave nothing behind.
        assert!(limits.failures.lock().unwrap().get("t/alice").is_none());
        for _ in 0..10 {
            limits.password_attempt("t/alice").unwrap().succeeded();
        }
    }

    #[test]
    fn wrong_passwords_back_off_and_then_admit_one_attempt_at_a_time() {
        let limits = limits(2);
        drop(limits.password_attempt("t/alice").unwrap());
        // One failure left free: one attempt at a time.
        let pending = limits.password_attempt("t/alice").unwrap();
        assert!(limits.password_attempt("t/alice").is_err());
        drop(pending);
        // Two failures: blocked for a second.
        let wait = limits.password_attempt("t/alice").err().unwrap();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(500));
        // Once the block ends, one attempt at a time; a right one clears all.
        limits
            .failures
            .lock()
            .unwrap()
            .get_mut("t/alice")
            .unwrap()
            .blocked_until = None;
        let attempt = limits.password_attempt("t/alice").unwrap();
        assert!(limits.password_attempt("t/alice").is_err());
        attempt.succeeded();
        assert!(limits.failures.lock().unwrap().is_empty());
    }
}
