//! Logged-in control connections kept for a short idle time per (host, port, user, password),
//! so that many small files don't each pay a connect and a log-in (issue 5).
//!
//! A session goes back to the pool when its [`PooledSession`] is dropped, and only if its
//! state is known (no I/O error, timeout, 421 or broken transfer; see
//! [`FtpError::leaves_session_unknown`]). Checkout takes the most recently used idle session,
//! checks it without a round trip (has the server closed it or said something unasked?) and,
//! when it was idle longer than `noop_after`, with a NOOP; a dead one is dropped and the next
//! tried, then a fresh connection is made through the room's dialer (resolve once, its target policy if
//! any, the loop check, `connect_secs`), which also makes every data connection of the session (with the
//! data connect timeout). Expired sessions are dropped lazily, at the next checkout or return: no
//! background task.

use std::borrow::{Borrow, BorrowMut};
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{FtpSession, Login};
use super::transfer::{Download, Upload};
use super::{FtpError, FtpSettings};
use crate::upstream::Dialer;

/// How long an unused logged-in session is kept.
pub const DEFAULT_FTP_IDLE_SECS: u64 = 30;
/// Idle sessions kept per (host, port, user, password).
pub const DEFAULT_FTP_MAX_IDLE_PER_KEY: usize = 4;
/// Idle sessions kept in all.
pub const DEFAULT_FTP_MAX_IDLE_TOTAL: usize = 64;
/// A session idle for longer than this is checked with a NOOP before reuse.
pub const DEFAULT_FTP_NOOP_AFTER_SECS: u64 = 5;

/// Pool limits; `Default` uses the `DEFAULT_*` constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtpPoolConfig {
    pub idle_timeout: Duration,
    pub max_idle_per_key: usize,
    pub max_idle_total: usize,
    pub noop_after: Duration,
}

impl Default for FtpPoolConfig {
    fn default() -> Self {
        FtpPoolConfig {
            idle_timeout: Duration::from_secs(DEFAULT_FTP_IDLE_SECS),
            max_idle_per_key: DEFAULT_FTP_MAX_IDLE_PER_KEY,
            max_idle_total: DEFAULT_FTP_MAX_IDLE_TOTAL,
            noop_after: Duration::from_secs(DEFAULT_FTP_NOOP_AFTER_SECS),
        }
    }
}

/// Which server, as whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A host name or IP literal (no brackets), as in the URL.
    pub host: String,
    pub port: u16,
    pub login: Login,
}

/// The pool key. The password is kept as a keyed hash (SipHash with the pool's random keys),
/// so that idle-pool bookkeeping never holds it in clear; two passwords colliding in 64 bits
/// for the same user and server is not a practical concern.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    user: String,
    password_hash: u64,
}

struct Idle {
    session: FtpSession,
    since: Instant,
}

struct Inner {
    settings: FtpSettings,
    config: FtpPoolConfig,
    /// New control connections.
    dialer: Dialer,
    /// Data connections: the same dialer with `settings.data_connect_timeout`.
    data: Dialer,
    hasher: RandomState,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

/// A cheap-to-clone handle on the pool.
#[derive(Clone)]
pub struct FtpPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for FtpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpPool").field("idle", &self.idle_count()).finish()
    }
}

impl FtpPool {
    /// A pool whose sessions connect through `dialer` (the room's: with the target policy for the forward
    /// proxy, without for a gateway route; the loop check for both).
    pub fn new(settings: FtpSettings, config: FtpPoolConfig, dialer: Dialer) -> FtpPool {
        let data = dialer.clone().with_connect_timeout(settings.data_connect_timeout);
        let idle = Mutex::new(HashMap::new());
        FtpPool { inner: Arc::new(Inner { settings, config, dialer, data, hasher: RandomState::new(), idle }) }
    }

    /// A logged-in session for `target`: a live idle one, else a new connection through the pool's dialer
    /// (its errors are [`FtpError::Dial`]).
    pub async fn checkout(&self, target: &Target) -> Result<PooledSession, FtpError> {
        let key = self.key(target);
        // bounded: each turn removes one idle session
        while let Some(mut idle) = self.take_idle(&key) {
            if !idle.session.looks_alive() {
                continue;
            }
            if idle.since.elapsed() > self.inner.config.noop_after && idle.session.noop().await.is_err() {
                continue;
            }
            if let Some(route) = self.inner.dialer.route() {
                route.reused.inc();
            }
            return Ok(self.wrap(idle.session, key));
        }
        let (stream, _) = self.inner.dialer.dial(&target.host, target.port).await.map_err(FtpError::Dial)?;
        let inner = &self.inner;
        let session = FtpSession::start(stream, &target.login, inner.settings.clone(), inner.data.clone()).await?;
        Ok(self.wrap(session, key))
    }

    /// Idle sessions held now (all keys).
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        // a panic while holding the lock leaves plain data behind: keep using it
        self.inner.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, target: &Target) -> Key {
        Key {
            host: target.host.to_ascii_lowercase(),
            port: target.port,
            user: target.login.user.clone(),
            password_hash: self.inner.hasher.hash_one(&target.login.password),
        }
    }

    fn take_idle(&self, key: &Key) -> Option<Idle> {
        let mut idle = self.lock();
        prune(&mut idle, self.inner.config.idle_timeout);
        let found = idle.get_mut(key).and_then(Vec::pop);
        if idle.get(key).is_some_and(Vec::is_empty) {
            idle.remove(key);
        }
        publish_idle(&self.inner, &idle);
        found
    }

    fn wrap(&self, session: FtpSession, key: Key) -> PooledSession {
        PooledSession { session: Some(session), home: Arc::downgrade(&self.inner), key }
    }
}

fn prune(idle: &mut HashMap<Key, Vec<Idle>>, idle_timeout: Duration) {
    idle.retain(|_, list| {
        list.retain(|i| i.since.elapsed() < idle_timeout);
        !list.is_empty()
    });
}

/// A session checked out of an [`FtpPool`]; use it as an [`FtpSession`] (it derefs to one).
/// Dropped, it goes back to the pool if its state is known and the pool has room.
pub struct PooledSession {
    /// `Some` until drop.
    session: Option<FtpSession>,
    home: Weak<Inner>,
    key: Key,
}

impl PooledSession {
    /// Starts RETR of `path` from byte `offset` (REST first when non-zero; needs `features().rest_stream`); the
    /// session travels inside the [`Download`] and returns to the pool when it is dropped after a confirmed end.
    pub async fn retr(self, path: &str, offset: u64) -> Result<Download<PooledSession>, FtpError> {
        Download::start(self, path, offset).await
    }

    /// Starts STOR of `path`: write the bytes into the [`Upload`], then `finish()` it; the session returns to
    /// the pool after a successful [`Upload::finish`].
    pub async fn upload(self, path: &str) -> Result<Upload<PooledSession>, FtpError> {
        Upload::start(self, path).await
    }

    fn session(&self) -> &FtpSession {
        self.session.as_ref().expect("a PooledSession holds its session until dropped")
    }

    fn session_mut(&mut self) -> &mut FtpSession {
        self.session.as_mut().expect("a PooledSession holds its session until dropped")
    }
}

impl Deref for PooledSession {
    type Target = FtpSession;
    fn deref(&self) -> &FtpSession {
        self.session()
    }
}

impl DerefMut for PooledSession {
    fn deref_mut(&mut self) -> &mut FtpSession {
        self.session_mut()
    }
}

impl Borrow<FtpSession> for PooledSession {
    fn borrow(&self) -> &FtpSession {
        self.session()
    }
}

impl BorrowMut<FtpSession> for PooledSession {
    fn borrow_mut(&mut self) -> &mut FtpSession {
        self.session_mut()
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        let (Some(session), Some(inner)) = (self.session.take(), self.home.upgrade()) else {
            return;
        };
        if !session.is_reusable() {
            return;
        }
        let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut idle, inner.config.idle_timeout);
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(self.key.clone()).or_default();
        if list.len() < inner.config.max_idle_per_key && total < inner.config.max_idle_total {
            list.push(Idle { session, since: Instant::now() });
        }
        publish_idle(&inner, &idle);
    }
}

/// The route's `ftp_sessions_idle`: the sessions held now, after each change.
fn publish_idle(inner: &Inner, idle: &HashMap<Key, Vec<Idle>>) {
    if let Some(route) = inner.dialer.route() {
        route.ftp_idle.set(idle.values().map(Vec::len).sum::<usize>() as i64);
    }
}
