//! argon2id password hashing on a bounded pool.
//!
//! Each check takes tens of milliseconds of CPU and ~19 MiB of memory, so
//! checks run on blocking threads, at most `password_workers` at once and
//! at most `password_queue_limit` waiting; beyond that the caller gets
//! `Busy` at once. A flood of password requests therefore cannot take the
//! async workers (and with them `client_credentials` traffic) down.
//!
//! Waiting checks are queued per tenant and served round-robin between
//! tenants, and one tenant may hold at most half of the queue: a flood
//! under one tenant (any usernames) leaves another tenant's check waiting
//! for at most one running check per worker, never behind the flood.
//! An unknown user is checked against a dummy hash with the same
//! parameters, so it costs what a wrong password costs.
//!
//! Each check's working memory (`password_hash_memory_kib`) is kept and
//! reused, one buffer per check running at once, and wiped after each use:
//! allocating it afresh cost every check thousands of page faults, about a
//! fifth of its time (found by the password-grant load test).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher as _, Version};
use keysilo_config::TokenSettings;
use tokio::sync::oneshot;
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
    pool: Arc<FairPool>,
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

/// The workers' slots, handed out round-robin between tenants' queues.
struct FairPool {
    state: Mutex<PoolState>,
    /// Checks that may wait in all.
    queue_limit: usize,
    /// Checks that may wait for one tenant.
    tenant_limit: usize,
}

#[derive(Default)]
struct PoolState {
    /// Slots no check holds.
    free: usize,
    /// Waiting checks, counted over every queue.
    waiting: usize,
    /// Each tenant's waiting checks, oldest first.
    queues: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiting checks, in the order they are served.
    turn: VecDeque<String>,
}

/// A running check's slot: dropping it hands the slot on.
struct Slot(Arc<FairPool>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A check waiting for a slot. Dropped before it got one (its caller went
/// away), it leaves the queue; dropped just after one was handed to it, it
/// hands the slot on.
struct Waiter {
    pool: Arc<FairPool>,
    tenant: String,
    receiver: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            self.pool.release();
            return;
        }
        let Ok(mut state) = self.pool.state.lock() else {
            return;
        };
        let PoolState {
            waiting,
            queues,
            turn,
            ..
        } = &mut *state;
        if let Some(queue) = queues.get_mut(&self.tenant) {
            let before = queue.len();
            queue.retain(|sender| !sender.is_closed());
            *waiting -= before - queue.len();
            if queue.is_empty() {
                queues.remove(&self.tenant);
                turn.retain(|t| *t != self.tenant);
            }
        }
    }
}

impl FairPool {
    fn new(workers: usize, queue_limit: usize) -> Self {
        Self {
            state: Mutex::new(PoolState {
                free: workers.max(1),
                ..PoolState::default()
            }),
            queue_limit,
            tenant_limit: (queue_limit / 2).max(1),
        }
    }

    /// A slot for a check of `tenant`: at once if one is free and nobody
    /// waits, else in the tenant's turn; `Busy` when the queue, or the
    /// tenant's share of it, is full.
    async fn acquire(self: &Arc<Self>, tenant: &str) -> Result<Slot, PasswordError> {
        let receiver = {
            let mut state = self.state.lock().map_err(|_| PasswordError::Busy)?;
            if state.free > 0 && state.waiting == 0 {
                state.free -= 1;
                return Ok(Slot(self.clone()));
            }
            if state.waiting >= self.queue_limit {
                return Err(PasswordError::Busy);
            }
            let PoolState {
                waiting,
                queues,
                turn,
                ..
            } = &mut *state;
            let queue = queues.entry(tenant.to_owned()).or_default();
            if queue.len() >= self.tenant_limit {
                return Err(PasswordError::Busy);
            }
            let (sender, receiver) = oneshot::channel();
            queue.push_back(sender);
            if queue.len() == 1 {
                turn.push_back(tenant.to_owned());
            }
            *waiting += 1;
            receiver
        };
        let mut waiter = Waiter {
            pool: self.clone(),
            tenant: tenant.to_owned(),
            receiver,
            done: false,
        };
        let handed = (&mut waiter.receiver).await;
        waiter.done = true;
        match handed {
            Ok(()) => Ok(Slot(self.clone())),
            Err(_) => Err(PasswordError::Busy),
        }
    }

    /// Hands a freed slot to the next tenant in turn that still waits, or
    /// puts it back.
    fn release(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let PoolState {
            free,
            waiting,
            queues,
            turn,
        } = &mut *state;
        while let Some(tenant) = turn.pop_front() {
            let Some(queue) = queues.get_mut(&tenant) else {
                continue;
            };
            while let Some(sender) = queue.pop_front() {
                *waiting -= 1;
                if sender.send(()).is_ok() {
                    if queue.is_empty() {
                        queues.remove(&tenant);
                    } else {
                        turn.push_back(tenant);
                    }
                    return;
                }
            }
            queues.remove(&tenant);
        }
        *free += 1;
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
            pool: Arc::new(FairPool::new(workers, settings.password_queue_limit)),
            dummy: Arc::new(dummy),
            memory: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Runs `work` for `tenant` on a slot of the pool. The waiter leaves
    /// the queue however this future ends, including when the caller goes
    /// away and drops it while it waits.
    async fn run<T: Send + 'static>(
        &self,
        tenant: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let slot = self.pool.acquire(tenant).await?;
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(slot);
            outcome
        })
        .await?;
        Ok(outcome)
    }

    /// Hashes a new password of a user of `tenant`.
    pub async fn hash(
        &self,
        tenant: &str,
        password: Zeroizing<String>,
    ) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(tenant, move || hash_with(&params, password.as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored` (a user of `tenant`); an absent
    /// user is checked against the dummy hash and never matches.
    pub async fn verify(
        &self,
        tenant: &str,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let memory = self.memory.clone();
        let configured = self.params.block_count();
        let matches = self
            .run(tenant, move || {
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

    /// Starts a check of `tenant` that records its turn in `order` once it
    /// holds a slot, then waits for `finish` before giving it back.
    fn check(
        pool: &Arc<FairPool>,
        tenant: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (tokio::task::JoinHandle<bool>, oneshot::Sender<()>) {
        let (finish, finished) = oneshot::channel::<()>();
        let (pool, order) = (pool.clone(), order.clone());
        let task = tokio::spawn(async move {
            let Ok(slot) = pool.acquire(tenant).await else {
                return false;
            };
            order.lock().unwrap().push(tenant);
            let _ = finished.await;
            drop(slot);
            true
        });
        (task, finish)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn waiting_checks_are_served_round_robin_between_tenants() {
        let pool = Arc::new(FairPool::new(1, 8));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut finishes = Vec::new();
        let mut tasks = Vec::new();
        // A floods first; B arrives last, behind three of A's.
        for tenant in ["a", "a", "a", "a", "b"] {
            let (task, finish) = check(&pool, tenant, &order);
            tasks.push(task);
            finishes.push(finish);
            settle().await;
        }
        for finish in finishes {
            let _ = finish.send(());
            settle().await;
        }
        for task in tasks {
            assert!(task.await.unwrap());
        }
        // B is served right after the check that was running and A's
        // first waiting one, not after all of A's.
        assert_eq!(*order.lock().unwrap(), ["a", "a", "b", "a", "a"]);
    }

    #[tokio::test]
    async fn one_tenant_fills_only_its_share_of_the_queue() {
        let pool = Arc::new(FairPool::new(1, 4));
        let order = Arc::new(Mutex::new(Vec::new()));
        let running = check(&pool, "a", &order);
        settle().await;
        let waiting: Vec<_> = (0..2).map(|_| check(&pool, "a", &order)).collect();
        settle().await;
        // A third waiting check of A is refused; B still gets a place.
        assert!(matches!(pool.acquire("a").await, Err(PasswordError::Busy)));
        let b = check(&pool, "b", &order);
        settle().await;
        assert!(!b.0.is_finished());
        let (tasks, finishes): (Vec<_>, Vec<_>) =
            std::iter::once(running).chain(waiting).chain([b]).unzip();
        for finish in finishes {
            let _ = finish.send(());
        }
        for task in tasks {
            assert!(task.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_while_waiting_loses_no_slot() {
        let pool = Arc::new(FairPool::new(1, 4));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (running, finish) = check(&pool, "a", &order);
        settle().await;
        let gone = check(&pool, "a", &order);
        settle().await;
        gone.0.abort();
        settle().await;
        assert_eq!(pool.state.lock().unwrap().waiting, 0);
        let _ = finish.send(());
        assert!(running.await.unwrap());
        settle().await;
        // The slot came back: the next check runs at once.
        let slot = pool.acquire("b").await;
        assert!(slot.is_ok());
    }

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
