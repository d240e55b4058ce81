//! What proxy authentication may cost: the bounded pool that runs expensive password checks, and the record of
//! client addresses whose logins keep failing. One [`Guard`] serves every listener of a process.
//!
//! - [`VerifyPool`]: `max_verifying` threads of its own run bcrypt and `$apr1$` checks; at most `max_queued`
//!   checks wait, and one address has at most a quarter of the queue (at least 1) waiting or running. Past either
//!   bound a check is refused at once ([`Busy`]: a 503) instead of queueing without bound, unless a waiting check
//!   from an address with more failed logins can make room (it is refused instead). The queue serves addresses
//!   with the fewest failed logins first, round-robin among equals, so a burst from some addresses delays a login
//!   from a clean one by little. Equal checks (same users file, user and password) in flight at once run once.
//! - [`Failures`]: after [`FAILURES_BEFORE_DELAY`] failed logins from one address (its /64 for IPv6), the
//!   next check from it waits for its turn: [`FIRST_FAIL_DELAY`] after the last one, doubling with every further
//!   failure up to [`MAX_FAIL_DELAY`]. One attempt at a time may wait; the others are refused without a check.
//!   A success from the address clears its record; so do [`FAILURE_MEMORY`] without failures. The record keeps
//!   at most [`MAX_FAILING_CLIENTS`] addresses (the oldest is forgotten first).
//!
//! Does not: look at user names (the delay is per address, so nothing here depends on whether a user exists),
//! or slow down an address that has not failed.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Failed logins from one address before its further checks are delayed.
pub const FAILURES_BEFORE_DELAY: u32 = 5;
/// The wait after the last of [`FAILURES_BEFORE_DELAY`] failures; it doubles with each further failure.
pub const FIRST_FAIL_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two checks from one failing address.
pub const MAX_FAIL_DELAY: Duration = Duration::from_secs(8);
/// An address with no failed login for this long starts again from zero.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Most addresses whose failures are remembered; past it the one that failed longest ago is forgotten.
pub const MAX_FAILING_CLIENTS: usize = 4096;

/// How much checking work may run and wait (config `[limits]`: `auth_max_verifying`, `auth_max_queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Checks running at once, each on a thread of its own.
    pub max_verifying: usize,
    /// Checks waiting for a thread; past it: [`Busy::Queue`].
    pub max_queued: usize,
}

impl AuthLimits {
    /// Checks one address may have waiting or running: a quarter of the queue, at least one.
    pub fn max_per_client(&self) -> usize {
        (self.max_queued / 4).max(1)
    }
}

/// The verification pool and the failure record of one process.
pub struct Guard {
    pub pool: VerifyPool,
    pub failures: Failures,
}

impl Guard {
    pub fn new(limits: AuthLimits) -> Guard {
        Guard { pool: VerifyPool::new(limits), failures: Failures::new() }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").field("limits", &self.pool.inner.limits).finish_non_exhaustive()
    }
}

/// Whom limits apply to: an IPv4 address, or the /64 of an IPv6 address (one host usually has a whole /64).
/// IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => ClientKey(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)))),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Why a check was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max_queued` checks are already waiting.
    Queue { max_queued: usize },
    /// This address already has its share of checks waiting or running.
    Client { max_per_client: usize },
}

/// Identifies equal checks: the users file (an id per loaded file), the user, and a SHA-256 of the password.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub file: u64,
    pub user: String,
    pub password: [u8; 32],
}

type Work = Box<dyn FnOnce() -> bool + Send>;

/// What a submitted check ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Checked(bool),
    /// Dropped from a full queue to make room for a check from an address with fewer failed logins.
    Shed,
}

struct Job {
    key: JobKey,
    client: ClientKey,
    /// Failed logins of `client` when the job was queued: fewer go first, more are shed first.
    failures: u32,
    work: Work,
}

/// A few threads of its own for expensive password checks, with a bounded queue that is fair across addresses.
pub struct VerifyPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    limits: AuthLimits,
    state: Mutex<PoolState>,
    work_ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    /// Waiting jobs per address; an address is in `turns` exactly when it has some here.
    queues: HashMap<ClientKey, VecDeque<Job>>,
    /// Addresses with waiting jobs, in the order they are served next.
    turns: VecDeque<ClientKey>,
    queued: usize,
    running: usize,
    /// Jobs waiting or running per address.
    per_client: HashMap<ClientKey, usize>,
    /// Everyone waiting for the verdict of a job that is waiting or running.
    waiters: HashMap<JobKey, Vec<oneshot::Sender<Verdict>>>,
    threads: usize,
}

impl VerifyPool {
    pub fn new(limits: AuthLimits) -> VerifyPool {
        let limits = AuthLimits { max_verifying: limits.max_verifying.max(1), max_queued: limits.max_queued.max(1) };
        VerifyPool {
            inner: Arc::new(PoolInner { limits, state: Mutex::new(PoolState::default()), work_ready: Condvar::new() }),
        }
    }

    pub fn limits(&self) -> AuthLimits {
        self.inner.limits
    }

    /// Queues `work` for `client` (which has `failures` failed logins), or joins an equal job already waiting or
    /// running. The receiver gets the verdict; it is closed without one if the work panicked.
    pub fn submit(
        &self,
        client: ClientKey,
        failures: u32,
        key: JobKey,
        work: Work,
    ) -> Result<oneshot::Receiver<Verdict>, Busy> {
        let limits = self.inner.limits;
        let (tx, rx) = oneshot::channel();
        let mut st = self.inner.lock();
        if let Some(waiting) = st.waiters.get_mut(&key) {
            waiting.push(tx);
            return Ok(rx);
        }
        let mine = st.per_client.get(&client).copied().unwrap_or(0);
        if mine >= limits.max_per_client() {
            return Err(Busy::Client { max_per_client: limits.max_per_client() });
        }
        // Counted together, so that it does not matter whether a thread has taken a job yet.
        if st.queued + st.running >= limits.max_queued + limits.max_verifying && !st.shed_one_above(failures) {
            return Err(Busy::Queue { max_queued: limits.max_queued });
        }
        if st.threads < limits.max_verifying {
            self.start_threads(&mut st);
            if st.threads == 0 {
                return Err(Busy::Queue { max_queued: limits.max_queued });
            }
        }
        st.per_client.insert(client, mine + 1);
        st.waiters.insert(key.clone(), vec![tx]);
        let queue = st.queues.entry(client).or_default();
        queue.push_back(Job { key, client, failures, work });
        if queue.len() == 1 {
            st.turns.push_back(client);
        }
        st.queued += 1;
        drop(st);
        self.inner.work_ready.notify_one();
        Ok(rx)
    }

    /// Started at the first check, so a process without users files has no such threads.
    fn start_threads(&self, st: &mut PoolState) {
        while st.threads < self.inner.limits.max_verifying {
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new().name("hopgate-auth".into()).spawn(move || inner.worker());
            match spawned {
                Ok(_) => st.threads += 1,
                Err(e) => {
                    tracing::warn!("proxy auth: cannot start a verification thread: {e}");
                    break;
                }
            }
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.inner.lock();
        (st.running, st.queued)
    }
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker(&self) {
        loop {
            let mut st = self.lock();
            let job = loop {
                if let Some(job) = st.next_job() {
                    break job;
                }
                st = self.work_ready.wait(st).unwrap_or_else(|e| e.into_inner());
            };
            // Everyone who wanted this verdict is gone (connection closed): skip the work.
            if st.waiters.get(&job.key).is_none_or(|w| w.iter().all(|tx| tx.is_closed())) {
                st.waiters.remove(&job.key);
                st.release(job.client);
                continue;
            }
            st.running += 1;
            let (running, queued) = (st.running, st.queued);
            drop(st);
            tracing::debug!(
                "proxy auth: checking the credentials of {} ({running} running, {queued} queued)",
                job.client
            );
            let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.work)).ok();
            let mut st = self.lock();
            st.running -= 1;
            st.release(job.client);
            let waiting = st.waiters.remove(&job.key).unwrap_or_default();
            drop(st);
            if let Some(verdict) = verdict {
                for tx in waiting {
                    let _ = tx.send(Verdict::Checked(verdict));
                }
            }
        }
    }
}

impl PoolState {
    /// The first job of the address whose turn it is: the first in line among those whose next job has the fewest
    /// failures. The address goes to the back of the line.
    fn next_job(&mut self) -> Option<Job> {
        let failures = |c: &ClientKey| self.queues.get(c).and_then(|q| q.front()).map_or(u32::MAX, |j| j.failures);
        let (turn, _) = self.turns.iter().enumerate().min_by_key(|(i, c)| (failures(c), *i))?;
        let client = self.turns.remove(turn)?;
        let queue = self.queues.get_mut(&client)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&client);
        } else {
            self.turns.push_back(client);
        }
        self.queued -= 1;
        Some(job)
    }

    /// Makes room in a full queue: drops the last waiting job of the address whose jobs have the most failures,
    /// if that is more than `failures`; its waiters get [`Verdict::Shed`].
    fn shed_one_above(&mut self, failures: u32) -> bool {
        let worst = self
            .queues
            .iter()
            .filter_map(|(c, q)| q.back().map(|j| (j.failures, *c)))
            .filter(|(f, _)| *f > failures)
            .max_by_key(|(f, _)| *f);
        let Some((_, client)) = worst else { return false };
        let Some(queue) = self.queues.get_mut(&client) else { return false };
        let Some(job) = queue.pop_back() else { return false };
        if queue.is_empty() {
            self.queues.remove(&client);
            self.turns.retain(|c| *c != client);
        }
        self.queued -= 1;
        self.release(client);
        for tx in self.waiters.remove(&job.key).unwrap_or_default() {
            let _ = tx.send(Verdict::Shed);
        }
        true
    }

    fn release(&mut self, client: ClientKey) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

/// What the failure record says about a check that is about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The address has this many failed logins (0: none remembered).
    Now { failures: u32 },
    /// The address failed `failures` times: the check waits this long for its turn.
    After { wait: Duration, failures: u32 },
    /// Another attempt from the address holds the next turn: refused without a check.
    Refused { retry_after: Duration },
}

/// Failed logins per client address (see the module docs).
pub struct Failures {
    table: Mutex<HashMap<ClientKey, Record>>,
    /// Entries in `table`, so that the common case (no failures anywhere) takes no lock.
    len: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// The earliest start of the next check from this address.
    turn: Instant,
}

/// The wait between checks after `failures` failed logins (at least [`FAILURES_BEFORE_DELAY`]).
pub fn fail_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(FAILURES_BEFORE_DELAY).min(16);
    FIRST_FAIL_DELAY.saturating_mul(1 << doublings).min(MAX_FAIL_DELAY)
}

impl Default for Failures {
    fn default() -> Self {
        Failures::new()
    }
}

impl Failures {
    pub fn new() -> Failures {
        Failures { table: Mutex::new(HashMap::new()), len: AtomicUsize::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Record>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a check from `client` may start now, later, or not at all; a later start is reserved.
    pub fn admit(&self, client: ClientKey, now: Instant) -> Admit {
        if self.len.load(Ordering::Relaxed) == 0 {
            return Admit::Now { failures: 0 };
        }
        let mut table = self.lock();
        let Some(r) = table.get_mut(&client) else { return Admit::Now { failures: 0 } };
        if now.saturating_duration_since(r.last_failure) > FAILURE_MEMORY {
            table.remove(&client);
            self.len.store(table.len(), Ordering::Relaxed);
            return Admit::Now { failures: 0 };
        }
        if r.failures < FAILURES_BEFORE_DELAY {
            return Admit::Now { failures: r.failures };
        }
        let delay = fail_delay(r.failures);
        let start = r.turn.max(now);
        let wait = start - now;
        if wait > delay {
            return Admit::Refused { retry_after: wait };
        }
        r.turn = start + delay;
        if wait.is_zero() { Admit::Now { failures: r.failures } } else { Admit::After { wait, failures: r.failures } }
    }

    /// A check from `client` failed.
    pub fn failed(&self, client: ClientKey, now: Instant) {
        let mut table = self.lock();
        if !table.contains_key(&client) && table.len() >= MAX_FAILING_CLIENTS {
            table.retain(|_, r| now.saturating_duration_since(r.last_failure) <= FAILURE_MEMORY);
            if table.len() >= MAX_FAILING_CLIENTS
                && let Some(oldest) = table.iter().min_by_key(|(_, r)| r.last_failure).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let r = table.entry(client).or_insert(Record { failures: 0, last_failure: now, turn: now });
        if now.saturating_duration_since(r.last_failure) > FAILURE_MEMORY {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        if r.failures >= FAILURES_BEFORE_DELAY {
            r.turn = r.turn.max(now + fail_delay(r.failures));
        }
        self.len.store(table.len(), Ordering::Relaxed);
    }

    /// A check from `client` succeeded: its record is cleared.
    pub fn succeeded(&self, client: ClientKey) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut table = self.lock();
        table.remove(&client);
        self.len.store(table.len(), Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn client_keys() {
        assert_eq!(ip("::ffff:10.1.2.3"), ip("10.1.2.3"));
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::2"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ip("10.1.2.3").to_string(), "10.1.2.3");
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(fail_delay(FAILURES_BEFORE_DELAY), FIRST_FAIL_DELAY);
        assert_eq!(fail_delay(FAILURES_BEFORE_DELAY + 1), FIRST_FAIL_DELAY * 2);
        assert_eq!(fail_delay(FAILURES_BEFORE_DELAY + 3), MAX_FAIL_DELAY);
        assert_eq!(fail_delay(u32::MAX), MAX_FAIL_DELAY);
    }

    #[test]
    fn failures_delay_then_refuse_and_a_success_clears() {
        let f = Failures::new();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let t0 = Instant::now();
        for i in 0..FAILURES_BEFORE_DELAY {
            assert_eq!(f.admit(a, t0), Admit::Now { failures: i }, "failure {i}");
            f.failed(a, t0);
        }
        // One attempt waits for its turn; a second one at the same moment is refused.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(f.admit(a, t1), Admit::After { wait: Duration::from_millis(900), failures: FAILURES_BEFORE_DELAY });
        assert_eq!(f.admit(a, t1), Admit::Refused { retry_after: Duration::from_millis(1900) });
        assert_eq!(f.admit(b, t1), Admit::Now { failures: 0 }, "other addresses are not slowed");
        // The waiting one fails too: the next turn is two seconds after it.
        let t2 = t0 + Duration::from_secs(1);
        f.failed(a, t2);
        assert_eq!(f.admit(a, t2 + Duration::from_secs(2)), Admit::Now { failures: FAILURES_BEFORE_DELAY + 1 });
        f.succeeded(a);
        assert!(f.is_empty());
        assert_eq!(f.admit(a, t2), Admit::Now { failures: 0 });
        // Failures long ago are forgotten.
        for _ in 0..FAILURES_BEFORE_DELAY {
            f.failed(a, t0);
        }
        assert_eq!(f.admit(a, t0 + FAILURE_MEMORY + Duration::from_secs(1)), Admit::Now { failures: 0 });
        assert!(f.is_empty());
    }

    #[test]
    fn the_failure_record_is_bounded() {
        let f = Failures::new();
        let t0 = Instant::now();
        for i in 0..MAX_FAILING_CLIENTS as u32 + 100 {
            let key = ClientKey(IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i)));
            f.failed(key, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(f.len(), MAX_FAILING_CLIENTS);
        // The oldest went first.
        let first = ClientKey(IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000)));
        assert!(!f.lock().contains_key(&first));
        let last = ClientKey(IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + MAX_FAILING_CLIENTS as u32 + 99)));
        assert!(f.lock().contains_key(&last));
    }

    fn key(user: &str, n: u8) -> JobKey {
        JobKey { file: 1, user: user.into(), password: [n; 32] }
    }

    /// A job that runs until `gate` is opened.
    fn blocked(gate: &Arc<(Mutex<bool>, Condvar)>, verdict: bool) -> Work {
        let gate = gate.clone();
        Box::new(move || {
            let (open, cv) = &*gate;
            let mut o = open.lock().unwrap();
            while !*o {
                o = cv.wait(o).unwrap();
            }
            verdict
        })
    }

    #[tokio::test]
    async fn the_pool_bounds_work_per_client_and_in_all_and_joins_equal_checks() {
        let pool = VerifyPool::new(AuthLimits { max_verifying: 1, max_queued: 4 });
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = pool.submit(a, 0, key("u", 0), blocked(&gate, false)).unwrap();
        let running = |want: (usize, usize)| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pool.counts() != want {
                assert!(Instant::now() < deadline, "{:?}", pool.counts());
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        running((1, 0));
        // One per client (a quarter of 4).
        assert_eq!(
            pool.submit(a, 0, key("u", 1), blocked(&gate, false)).unwrap_err(),
            Busy::Client { max_per_client: 1 }
        );
        // An equal check joins the first one, whoever asks.
        let joined = pool.submit(b, 0, key("u", 0), blocked(&gate, true)).unwrap();
        let mut others = Vec::new();
        for i in 2..6u8 {
            // Their addresses failed before: 2..5 times.
            others.push(
                pool.submit(ip(&format!("192.0.2.{i}0")), u32::from(i), key("u", i), blocked(&gate, true)).unwrap(),
            );
        }
        // The first runs, four wait: the queue is full.
        running((1, 4));
        // Full: an address with as many failures as the worst waiting one is turned away...
        assert_eq!(
            pool.submit(ip("192.0.2.99"), 5, key("u", 9), blocked(&gate, true)).unwrap_err(),
            Busy::Queue { max_queued: 4 }
        );
        // ...one with fewer takes the place of the worst.
        let clean = pool.submit(ip("192.0.2.98"), 0, key("u", 8), blocked(&gate, true)).unwrap();
        assert_eq!(pool.counts(), (1, 4));
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert_eq!(first.await.unwrap(), Verdict::Checked(false));
        assert_eq!(joined.await.unwrap(), Verdict::Checked(false), "the joined check has the first one's verdict");
        let verdicts: Vec<Verdict> =
            futures_util::future::join_all(others).await.into_iter().map(|v| v.unwrap()).collect();
        assert_eq!(verdicts, [Verdict::Checked(true), Verdict::Checked(true), Verdict::Checked(true), Verdict::Shed]);
        assert_eq!(clean.await.unwrap(), Verdict::Checked(true));
        assert_eq!(pool.counts(), (0, 0));
        assert!(pool.inner.lock().per_client.is_empty());
        // A job that panics closes its receivers without a verdict; the thread lives on.
        let rx = pool.submit(a, 0, key("p", 0), Box::new(|| panic!("boom"))).unwrap();
        assert!(rx.await.is_err());
        assert_eq!(pool.submit(a, 0, key("p", 1), Box::new(|| true)).unwrap().await.unwrap(), Verdict::Checked(true));
    }

    #[test]
    fn the_queue_takes_turns_by_address_fewest_failures_first() {
        let pool = VerifyPool::new(AuthLimits { max_verifying: 1, max_queued: 64 });
        let mut st = pool.inner.lock();
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        for (client, failures, n) in [(c, 7, 9), (a, 0, 0), (a, 0, 1), (a, 0, 2), (b, 0, 3), (c, 7, 8)] {
            let queue = st.queues.entry(client).or_default();
            queue.push_back(Job { key: key("u", n), client, failures, work: Box::new(|| true) });
            if queue.len() == 1 {
                st.turns.push_back(client);
            }
            st.queued += 1;
        }
        let order: Vec<u8> = std::iter::from_fn(|| st.next_job()).map(|j| j.key.password[0]).collect();
        assert_eq!(order, [0, 3, 1, 2, 9, 8], "b's one check does not wait behind all of a's; c, which failed, last");
        assert_eq!(st.queued, 0);
        assert!(st.turns.is_empty() && st.queues.is_empty());
    }
}
