//! A Redis lock with expiry, renewal, compare-and-delete release and
//! fencing tokens.
//!
//! Acquisition is one script: `SET key token NX PX ttl` and, only if that
//! succeeded, `INCR` of the lock's fence counter. The counter starts from
//! Redis's clock in microseconds, so it keeps growing even if Redis loses
//! it (no persistence, restart). The database refuses a fence lower than
//! the last one committed, so a holder whose lock expired cannot commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_redis::redis::Script;
use keysilo_types::Fence;

use crate::{Coord, CoordError};

const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
  end
  return redis.call('INCR', KEYS[2])
end
return 0
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Proof of holding a lock. It renews the lock in the background while it
/// lives, and releases it when dropped (or, awaited, through
/// [`LockGuard::release`]).
#[derive(Debug)]
pub struct LockGuard {
    coord: Coord,
    key: String,
    token: String,
    fence: Fence,
    lost: Arc<AtomicBool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl LockGuard {
    /// The fencing token to present with every write made under the lock.
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// Whether a renewal found the lock gone (expired and maybe taken).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Releases the lock if this guard still holds it.
    pub async fn release(mut self) -> Result<(), CoordError> {
        self.stop_renewing();
        let released = release(&self.coord, &self.key, &self.token).await;
        // Mark as released so that Drop does not try again.
        self.token.clear();
        released
    }

    fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.token.is_empty() {
            return;
        }
        // An early return or error left the lock held: release it in the
        // background rather than making everyone wait for its expiry.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (coord, key, token) = (self.coord.clone(), self.key.clone(), self.token.clone());
            handle.spawn(async move {
                if let Err(err) = release(&coord, &key, &token).await {
                    tracing::warn!(error = %err, key, "could not release a lock; it will expire");
                }
            });
        }
    }
}

async fn release(coord: &Coord, key: &str, token: &str) -> Result<(), CoordError> {
    let mut conn = coord.connection().await?;
    let _: i64 = Script::new(RELEASE)
        .key(key)
        .arg(token)
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Coord {
    /// Acquires lock `kind` on `resource`, waiting up to `wait`. The lock
    /// expires `ttl` after the last renewal; the guard renews it every
    /// `ttl / 3` while it lives.
    pub async fn acquire_lock(
        &self,
        kind: &'static str,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, CoordError> {
        let key = self.key(&format!("lock:{kind}:{resource}"));
        let fence_key = self.key(&format!("fence:{kind}:{resource}"));
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        let acquire = Script::new(ACQUIRE);
        loop {
            let fence: i64 = {
                let mut conn = self.connection().await?;
                acquire
                    .key(&key)
                    .key(&fence_key)
                    .arg(&token)
                    .arg(millis(ttl))
                    .invoke_async(&mut conn)
                    .await?
            };
            if fence > 0 {
                let lost = Arc::new(AtomicBool::new(false));
                let renewer = tokio::spawn(renew(
                    self.clone(),
                    key.clone(),
                    token.clone(),
                    ttl,
                    lost.clone(),
                ));
                return Ok(LockGuard {
                    coord: self.clone(),
                    key,
                    token,
                    fence: Fence::issued_by_lock(kind, fence),
                    lost,
                    renewer: Some(renewer),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoordError::LockBusy {
                    resource: format!("{kind}:{resource}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn renew(coord: Coord, key: String, token: String, ttl: Duration, lost: Arc<AtomicBool>) {
    let script = Script::new(RENEW);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let renewed: Result<i64, CoordError> = async {
            let mut conn = coord.connection().await?;
            Ok(script
                .key(&key)
                .arg(&token)
                .arg(millis(ttl))
                .invoke_async(&mut conn)
                .await?)
        }
        .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                lost.store(true, Ordering::SeqCst);
                tracing::warn!(key, "lock expired before it was renewed");
                return;
            }
            // A transient error: try again; if the lock expires meanwhile,
            // the fence keeps the late writer out.
            Err(err) => tracing::warn!(key, error = %err, "lock renewal failed"),
        }
    }
}
