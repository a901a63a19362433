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
    count: u32,
    blocked_until: Option<Instant>,
    last: Instant,
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

    /// One request from `address`; `Err(wait)` when over its limit.
    pub fn address(&self, address: IpAddr) -> Result<(), Duration> {
        self.wait(self.per_address.check_key(&address))
    }

    /// One request of client `key` (`tenant/client_id`).
    pub fn client(&self, key: &str) -> Result<(), Duration> {
        self.wait(self.per_client.check_key(&key.to_owned()))
    }

    /// Admits a password attempt for `key` (`tenant/username`) unless it is
    /// backing off, and counts it as a failure until
    /// [`Limits::password_succeeded`] says otherwise, so that parallel
    /// guesses cannot all slip in before the first is judged. After the free
    /// attempts each further one doubles the back-off, up to the maximum.
    pub fn password_attempt(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else {
            return Ok(());
        };
        if let Some(until) = failures.get(key).and_then(|f| f.blocked_until)
            && until > now
        {
            return Err(until - now);
        }
        if failures.len() >= MAX_TRACKED && !failures.contains_key(key) {
            // Invented usernames must not grow this without bound: forget
            // the ones that are neither blocked nor recent.
            failures.retain(|_, f| {
                f.blocked_until.is_some_and(|u| u > now)
                    || now.duration_since(f.last) < Duration::from_secs(60)
            });
            if failures.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            blocked_until: None,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= self.free_failures {
            let doublings = (entry.count - self.free_failures).min(20);
            let backoff = Duration::from_secs(1u64 << doublings).min(self.max_backoff);
            entry.blocked_until = Some(now + backoff);
        }
        Ok(())
    }

    /// Forgets the failures of `key` after a correct password.
    pub fn password_succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Drops state nobody needs any more; called periodically.
    pub fn shrink(&self) {
        self.per_client.retain_recent();
        self.per_address.retain_recent();
        let now = Instant::now();
        let horizon = self.max_backoff.max(Duration::from_secs(3600));
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|_, f| now.duration_since(f.last) < horizon);
        }
    }
}
