//! argon2id password hashing on a bounded pool.
//!
//! Each check takes tens of milliseconds of CPU and ~19 MiB of memory, so
//! checks run on blocking threads, at most `password_workers` at once and
//! at most `password_queue_limit` waiting; beyond that the caller gets
//! `Busy` at once. A flood of password requests therefore cannot take the
//! async workers (and with them `client_credentials` traffic) down.
//! An unknown user is checked against a dummy hash with the same
//! parameters, so it costs what a wrong password costs.
//!
//! Each check's working memory (`password_hash_memory_kib`) is kept and
//! reused, one buffer per check running at once, and wiped after each use:
//! allocating it afresh cost every check thousands of page faults, about a
//! fifth of its time (found by the password-grant load test).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher as _, Version};
use keysilo_config::TokenSettings;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Why a password operation did not run.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too many checks are waiting already.
    #[error("the password pool is saturated")]
    Busy,
    /// Hashing failed (bad parameters, out of memory).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking task failed.
    #[error("password task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// The pool and the parameters.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue_limit: usize,
    dummy: Arc<String>,
    /// Working memory of finished checks, for the next ones.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// A place in the wait queue, given back on drop.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn join(waiting: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let queued = Self(waiting);
        (waiting.fetch_add(1, Ordering::SeqCst) < limit).then_some(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|err| PasswordError::Hash(err.to_string()))?;
    argon2(params)
        .hash_password_with_salt(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| PasswordError::Hash(err.to_string()))
}

impl Passwords {
    /// Builds the pool; computes the dummy hash (one hash's worth of CPU).
    pub fn new(settings: &TokenSettings) -> Result<Self, PasswordError> {
        let params = Params::new(
            settings.password_hash_memory_kib,
            settings.password_hash_iterations,
            settings.password_hash_parallelism,
            None,
        )
        .map_err(|err| PasswordError::Hash(err.to_string()))?;
        let workers = settings
            .password_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let dummy = hash_with(&params, b"keysilo dummy password for unknown users")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue_limit: settings.password_queue_limit,
            dummy: Arc::new(dummy),
            memory: Arc::new(Mutex::new(Vec::new())),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        // The guard leaves the queue however this future ends, including
        // when the caller goes away and drops it while it waits.
        let queued = Queued::join(&self.waiting, self.queue_limit).ok_or(PasswordError::Busy)?;
        let permit = self.permits.clone().acquire_owned().await;
        drop(queued);
        let permit = permit.map_err(|_| PasswordError::Busy)?;
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(permit);
            outcome
        })
        .await?;
        Ok(outcome)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move || hash_with(&params, password.as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored`; an absent user is checked
    /// against the dummy hash and never matches.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let memory = self.memory.clone();
        let configured = self.params.block_count();
        let matches = self
            .run(move || {
                // At most `password_workers` checks run at once, so the
                // pool never holds more buffers than that.
                let mut blocks = memory
                    .lock()
                    .ok()
                    .and_then(|mut pool| pool.pop())
                    .unwrap_or_default();
                let (matches, used) = verify_in(&mut blocks, password.as_bytes(), &hash);
                if let Some(used) = blocks.get_mut(..used) {
                    used.fill(Block::default());
                }
                // A hash made with more memory than configured (the
                // setting was lowered since) does not keep its buffer.
                blocks.truncate(configured);
                if let Ok(mut pool) = memory.lock() {
                    pool.push(blocks);
                }
                matches
            })
            .await?;
        Ok(known && matches)
    }
}

/// Whether `password` matches the PHC string `stored` (whatever argon2
/// variant, version and parameters it names), computed in `memory`, which
/// grows to the size the parameters need; also how many blocks were used.
fn verify_in(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> (bool, usize) {
    let Ok(hash) = PasswordHash::new(stored) else {
        return (false, 0);
    };
    let (Some(salt), Some(expected)) = (hash.salt.as_ref(), hash.hash.as_ref()) else {
        return (false, 0);
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return (false, 0);
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return (false, 0),
    };
    let Ok(params) = Params::try_from(&hash) else {
        return (false, 0);
    };
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    let Some(blocks) = memory.get_mut(..needed) else {
        return (false, 0);
    };
    let mut out = vec![0u8; expected.as_bytes().len()];
    let matches = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt.as_ref(), &mut out, blocks)
        .is_ok()
        && openssl::memcmp::eq(&out, expected.as_bytes());
    (matches, needed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use argon2::PasswordVerifier as _;

    use super::*;

    #[test]
    fn reused_memory_verifies_exactly_what_the_crate_verifies() {
        let small = Params::new(64, 1, 1, None).unwrap();
        let large = Params::new(256, 2, 2, None).unwrap();
        let mut memory = Vec::new();
        for params in [&large, &small, &large] {
            let stored = hash_with(params, b"right horse").unwrap();
            for (password, expected) in [(&b"right horse"[..], true), (b"wrong horse", false)] {
                assert_eq!(verify_in(&mut memory, password, &stored).0, expected);
                let by_crate = argon2(params).verify_password(password, stored.as_str());
                assert_eq!(by_crate.is_ok(), expected);
            }
        }
        // Another variant and version named by the string itself.
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x10, small.clone())
            .hash_password_with_salt(b"pw", b"saltsaltsalt")
            .unwrap()
            .to_string();
        assert!(verify_in(&mut memory, b"pw", &argon2i).0);
        assert!(!verify_in(&mut memory, b"pw", "$argon2id$v=19$not-a-hash").0);
    }
}
