//! The open WebSocket sessions, indexed by what can revoke them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use keysilo_tokens::AccessTokenClaims;
use keysilo_tokens::gate::Subject;
use keysilo_types::{Kid, TenantId};
use tokio::sync::mpsc;

/// What a session's token depends on.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// `tid`.
    pub tenant: TenantId,
    /// `client_id`.
    pub client: String,
    /// `sub`.
    pub subject: String,
    /// The signing key.
    pub kid: Kid,
    /// `jti`.
    pub jti: String,
    /// `iat`, seconds since the epoch.
    pub issued_at: u64,
}

impl SessionInfo {
    /// What revocations are checked against.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            tenant: &self.tenant,
            kid: &self.kid,
            client: &self.client,
            subject: &self.subject,
            jti: &self.jti,
            issued_at: self.issued_at,
        }
    }

    /// From verified claims.
    pub fn of(claims: &AccessTokenClaims, kid: &Kid) -> Self {
        Self {
            tenant: claims.tenant.clone(),
            client: claims.client_id.clone(),
            subject: claims.subject.clone(),
            kid: kid.clone(),
            jti: claims.jti.clone(),
            issued_at: claims.issued_at,
        }
    }
}

/// The registry. Revocations are rare and a scan of every session is a few
/// microseconds per thousand, so one map is enough.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (SessionInfo, mpsc::UnboundedSender<&'static str>)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.len())
            .finish()
    }
}

impl Sessions {
    /// Registers a session; the receiver yields the reason it must close.
    pub fn register(&self, info: SessionInfo) -> (u64, mpsc::UnboundedReceiver<&'static str>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, (info, tx));
        }
        (id, rx)
    }

    /// Forgets a session that ended.
    pub fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// Tells every session matching `which` to close; returns how many.
    pub fn close_where(&self, reason: &'static str, which: impl Fn(&SessionInfo) -> bool) -> usize {
        let Ok(open) = self.open.lock() else {
            return 0;
        };
        open.values()
            .filter(|(info, _)| which(info))
            .filter(|(_, tx)| tx.send(reason).is_ok())
            .count()
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
