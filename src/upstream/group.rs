//! Upstream groups at run time: the members of one route (each with its own client: a connection pool, a
//! FastCGI pool), which member a request goes to ([`Group::pick`]), and whether a member takes requests at all
//! (its health). docs/upstreams.md describes the behaviour; the rooms (relay, app) decide what is sent again.
//!
//! - **Balancing.** Smooth weighted round robin as nginx does it (each pick adds every eligible member's weight
//!   to its current weight, takes the largest and subtracts the total from it); least connections (requests in
//!   flight divided by weight, ties to the heavier member, then in turn); consistent hashing by weighted
//!   rendezvous (HRW: the member with the largest `weight / -ln(hash(key, member))`), so adding or removing a
//!   member moves only the keys that go to or came from it, about 1/N of them. A request without a key (no such
//!   header or cookie) goes round robin.
//! - **Health.** A member is down after `unhealthy_after` failed active checks in a row, and up again after
//!   `healthy_after` successful ones. Passive: a refused or timed-out connection, or `max_fails` answers of
//!   502/503/504 within `health_interval`, takes it out for `health_interval`; then one request (or a successful
//!   active check) tries it again. Every change is logged (`upstream URL down: reason` / `upstream URL up`) and
//!   is the `upstream_up` gauge.
//! - **Costs.** A pick takes one mutex (round robin) or none (least_conn, hashing) plus a look at each member's
//!   health (a mutex each, uncontended); an active check is one task per group.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::config::{Balance, Group as GroupConfig, Prefix};
use crate::error::{Error, Kind};
use crate::metrics::{MemberMetrics, RouteMetrics};

/// An active check of one member: Ok, or why it failed.
pub type Probe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How a group picks and judges its members.
#[derive(Debug, Clone)]
pub struct Settings {
    pub balance: Balance,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
    pub max_fails: u32,
    pub retries: u32,
}

impl Settings {
    pub fn of(g: &GroupConfig) -> Settings {
        Settings {
            balance: g.balance.clone(),
            interval: g.health_interval,
            timeout: g.health_timeout,
            unhealthy_after: g.unhealthy_after,
            healthy_after: g.healthy_after,
            max_fails: g.max_fails,
            retries: g.retries,
        }
    }
}

/// A route's members and their state. Cheap to share: the active checks hold it weakly and end with it.
pub struct Group<M> {
    inner: Arc<Inner<M>>,
}

struct Inner<M> {
    members: Vec<Member<M>>,
    settings: Settings,
    /// Smooth weighted round robin's current weights, one per member.
    current: Mutex<Vec<i64>>,
    /// Where least_conn starts looking among equals.
    turn: AtomicUsize,
}

/// One member: its client, its name (URL) and its health.
pub struct Member<M> {
    pub client: M,
    pub name: String,
    weight: u32,
    /// The member's own hash (of its name): its rendezvous score for a key mixes the two.
    hash: u64,
    health: Mutex<Health>,
    in_flight: AtomicUsize,
    metrics: Arc<MemberMetrics>,
}

#[derive(Debug, Default)]
struct Health {
    /// Taken down by active checks.
    down: bool,
    /// Active checks in a row that failed, and that succeeded.
    check_fails: u32,
    check_oks: u32,
    /// Taken out by a passive check until then; once it passes, one request tries it again.
    out_until: Option<Instant>,
    /// That one request is under way.
    trial: bool,
    /// When the member's recent 502/503/504 answers came (within `interval`), for `max_fails`.
    fails: Vec<Instant>,
}

impl Health {
    /// Takes requests: neither down nor out.
    fn up(&self) -> bool {
        !self.down && self.out_until.is_none()
    }
}

impl<M> Group<M> {
    /// A group of `members` (client, name, weight); `route` counts for them, one label set per member.
    pub fn new(members: Vec<(M, String, u32)>, settings: Settings, route: Option<&RouteMetrics>) -> Group<M> {
        let members: Vec<Member<M>> = members
            .into_iter()
            .map(|(client, name, weight)| {
                let metrics = match route {
                    Some(r) => r.member(&name, weight),
                    None => Arc::new(MemberMetrics { upstream: name.clone(), weight, ..MemberMetrics::default() }),
                };
                metrics.up.set(1);
                metrics.in_flight.set(0);
                Member {
                    client,
                    hash: fnv(name.as_bytes()),
                    name,
                    weight: weight.max(1),
                    health: Mutex::default(),
                    in_flight: AtomicUsize::new(0),
                    metrics,
                }
            })
            .collect();
        let current = Mutex::new(vec![0; members.len()]);
        Group { inner: Arc::new(Inner { members, settings, current, turn: AtomicUsize::new(0) }) }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn members(&self) -> &[Member<M>] {
        &self.inner.members
    }

    /// The `Retry-After` of a 503 when no member is up: the seconds until the next check or trial.
    pub fn retry_after_secs(&self) -> u64 {
        self.inner.settings.interval.as_secs_f64().ceil().max(1.0) as u64
    }

    /// The 503 when no member is up (`tried`: or every one refused the request's own attempts), naming the route
    /// by its path prefix, with `Retry-After`.
    pub fn no_member(&self, prefix: &Prefix, tried: bool) -> Error {
        let detail = match tried {
            true => format!("every member of the upstream group of {prefix} refused the request"),
            false => format!("no member of the upstream group of {prefix} is up"),
        };
        Error::upstream(Kind::NoUpstream, detail)
            .with_field(http::header::RETRY_AFTER, http::HeaderValue::from(self.retry_after_secs()))
    }

    /// The key a hashing group balances `headers`' request from `client` by; None for the other balances and
    /// for a request without the header or cookie (it then goes round robin).
    pub fn key(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        match &self.inner.settings.balance {
            Balance::RoundRobin | Balance::LeastConn => None,
            Balance::ClientIp => Some(match client.to_canonical() {
                IpAddr::V4(a) => fnv(&a.octets()),
                IpAddr::V6(a) => fnv(&a.octets()),
            }),
            Balance::Header(name) => {
                let values: Vec<&[u8]> = headers.get_all(name.as_str()).iter().map(|v| v.as_bytes()).collect();
                (!values.is_empty()).then(|| fnv(&values.join(&b","[..])))
            }
            Balance::Cookie(name) => cookie(headers, name).map(fnv),
        }
    }

    /// A member for a request with `key` (see [`Group::key`]) that is up and not in `tried`; None when there is
    /// none.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Option<Pick<'_, M>> {
        let now = Instant::now();
        let inner = &*self.inner;
        // Per member: None (no), Some(false) (up), Some(true) (out, and due for its one trial request).
        let eligible: Vec<Option<bool>> = inner
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| if tried.contains(&i) { None } else { lock(&m.health).eligible(now) })
            .collect();
        let index = match (&inner.settings.balance, key) {
            (Balance::ClientIp | Balance::Header(_) | Balance::Cookie(_), Some(key)) => {
                inner.rendezvous(key, &eligible)
            }
            (Balance::LeastConn, _) => inner.least_conn(&eligible),
            _ => inner.round_robin(&eligible),
        }?;
        let m = &inner.members[index];
        let mut trial = false;
        if eligible[index] == Some(true) {
            let mut h = lock(&m.health);
            if h.trial {
                // Another request took the trial between the look and now.
                drop(h);
                let mut tried = tried.to_vec();
                tried.push(index);
                return self.pick(key, &tried);
            }
            h.trial = true;
            trial = true;
        }
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        m.metrics.in_flight.inc();
        m.metrics.requests.inc();
        Some(Pick { group: self, index, trial, reported: false })
    }

    /// A request that `index` failed goes to another member: counted and logged.
    pub fn retried(&self, index: usize, why: &str) {
        let m = &self.inner.members[index];
        m.metrics.retries.inc();
        tracing::info!("upstream {} failed a request ({why}): retrying it on another member", m.name);
    }

    /// Starts the active checks (one task for the group; it ends when the group is dropped): `probes[i]` checks
    /// member `i`. Outside a runtime (nothing is served) nothing starts.
    pub fn start_checks(&self, probes: Vec<Probe>)
    where
        M: Send + Sync + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(checks(Arc::downgrade(&self.inner), probes));
    }
}

impl<M> Inner<M> {
    fn round_robin(&self, eligible: &[Option<bool>]) -> Option<usize> {
        let mut current = lock(&self.current);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if eligible[i].is_none() {
                continue;
            }
            let w = i64::from(m.weight);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }

    fn least_conn(&self, eligible: &[Option<bool>]) -> Option<usize> {
        let n = self.members.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if eligible[i].is_none() {
                continue;
            }
            let m = &self.members[i];
            let (load, w) = (m.in_flight.load(Ordering::Relaxed) as u64, u64::from(m.weight));
            let better = match best {
                None => true,
                // load / w < best_load / best_w, without division; equal: the heavier one.
                Some((_, bl, bw)) => load * bw < bl * w || (load * bw == bl * w && w > bw),
            };
            if better {
                best = Some((i, load, w));
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn rendezvous(&self, key: u64, eligible: &[Option<bool>]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if eligible[i].is_none() {
                continue;
            }
            let s = score(key, m.hash, m.weight);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }

    /// An active check's result for member `i`.
    fn checked(&self, i: usize, result: Result<(), String>) {
        let m = &self.members[i];
        let s = &self.settings;
        let mut h = lock(&m.health);
        let was_up = h.up();
        match result {
            Ok(()) => {
                h.check_fails = 0;
                if h.down {
                    h.check_oks += 1;
                    if h.check_oks >= s.healthy_after {
                        h.down = false;
                        h.out_until = None;
                        h.trial = false;
                    }
                } else if h.out_until.is_some_and(|t| Instant::now() >= t) {
                    // Out for its time, and the check is the trial.
                    h.out_until = None;
                    h.trial = false;
                }
            }
            Err(why) => {
                h.check_oks = 0;
                h.check_fails += 1;
                if !h.down && h.check_fails >= s.unhealthy_after {
                    h.down = true;
                    if was_up {
                        drop(h);
                        m.changed(false, &format!("{why} ({} failed checks)", s.unhealthy_after));
                        return;
                    }
                }
            }
        }
        let up = h.up();
        drop(h);
        if up != was_up {
            m.changed(up, "");
        }
    }
}

impl Health {
    fn eligible(&mut self, now: Instant) -> Option<bool> {
        if self.down {
            return None;
        }
        match self.out_until {
            None => Some(false),
            Some(until) if now >= until && !self.trial => Some(true),
            Some(_) => None,
        }
    }
}

impl<M> Member<M> {
    /// Logs and shows a change of state.
    fn changed(&self, up: bool, why: &str) {
        self.metrics.up.set(i64::from(up));
        if up {
            tracing::warn!("upstream {} up", self.name);
        } else {
            tracing::warn!("upstream {} down: {why}", self.name);
        }
    }

    /// Whether the member takes requests (for the stats page and tests).
    pub fn is_up(&self) -> bool {
        lock(&self.health).up()
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// One request's member, held while it is sent: counts it in flight, and takes what became of it.
pub struct Pick<'a, M> {
    group: &'a Group<M>,
    index: usize,
    /// The member was out and this request tries it again.
    trial: bool,
    reported: bool,
}

impl<M> Pick<'_, M> {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn member(&self) -> &Member<M> {
        &self.group.inner.members[self.index]
    }

    pub fn client(&self) -> &M {
        &self.member().client
    }

    /// The member answered with `status`: a 502, 503 or 504 counts toward `max_fails`; anything else (or a
    /// trial's answer) brings a member that was out back.
    pub fn answered(&mut self, status: u16) {
        if matches!(status, 502..=504) {
            self.failed(&format!("answered {status}"));
            return;
        }
        self.reported = true;
        let m = self.member();
        let mut h = lock(&m.health);
        if self.trial {
            h.trial = false;
            if h.out_until.is_some() {
                h.out_until = None;
                h.fails.clear();
                let up = h.up();
                drop(h);
                if up {
                    m.changed(true, "");
                }
            }
        }
    }

    /// The member could not be reached (connect refused, timed out, TLS failed): out for `health_interval`.
    pub fn unreachable(&mut self, why: &str) {
        self.reported = true;
        let interval = self.group.inner.settings.interval;
        let m = self.member();
        m.metrics.failures.inc();
        let mut h = lock(&m.health);
        let was_up = h.up();
        h.out_until = Some(Instant::now() + interval);
        h.trial = false;
        h.fails.clear();
        drop(h);
        if was_up {
            m.changed(false, why);
        }
    }

    /// The member failed the request after it was sent (closed early, timed out, answered 502/503/504): counts
    /// toward `max_fails` within `health_interval`; a trial that fails takes it out again.
    pub fn failed(&mut self, why: &str) {
        self.reported = true;
        let s = &self.group.inner.settings;
        let m = self.member();
        m.metrics.failures.inc();
        let now = Instant::now();
        let mut h = lock(&m.health);
        if self.trial {
            h.trial = false;
            h.out_until = Some(now + s.interval);
            return;
        }
        if s.max_fails == 0 {
            return;
        }
        h.fails.retain(|t| now.saturating_duration_since(*t) < s.interval);
        h.fails.push(now);
        if h.fails.len() >= s.max_fails as usize {
            let was_up = h.up();
            h.fails.clear();
            h.out_until = Some(now + s.interval);
            drop(h);
            if was_up {
                m.changed(false, &format!("{why} ({} failures within {:?})", s.max_fails, s.interval));
            }
        }
    }
}

impl<M> Drop for Pick<'_, M> {
    fn drop(&mut self) {
        let m = self.member();
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
        m.metrics.in_flight.dec();
        if self.trial && !self.reported {
            // The trial request ended without a word about the member (the client went away): another may try.
            lock(&m.health).trial = false;
        }
    }
}

/// The active checks of one group, every `interval`, all members at once, each within `timeout`.
async fn checks<M: Send + Sync + 'static>(group: Weak<Inner<M>>, probes: Vec<Probe>) {
    loop {
        let (interval, timeout) = match group.upgrade() {
            Some(g) => (g.settings.interval, g.settings.timeout),
            None => return,
        };
        let started = tokio::time::Instant::now();
        let results = futures_util::future::join_all(probes.iter().map(|probe| async move {
            match tokio::time::timeout(timeout, probe()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer to the health check within {timeout:?}")),
            }
        }))
        .await;
        let Some(g) = group.upgrade() else { return };
        for (i, r) in results.into_iter().enumerate().take(g.members.len()) {
            g.checked(i, r);
        }
        drop(g);
        tokio::time::sleep_until(started + interval).await;
    }
}

/// A cookie's value from the request's Cookie fields (`a=1; b=2`).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(http::header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

/// FNV-1a, 64 bits: stable across runs and builds, so a key keeps its member across restarts.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: every input bit reaches every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Weighted rendezvous score of a member for a key: `weight / -ln(u)` with `u` uniform in (0, 1).
fn score(key: u64, member: u64, weight: u32) -> f64 {
    let u = ((mix(key ^ mix(member)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weights: &[u32], balance: Balance) -> Group<()> {
        let settings = Settings {
            balance,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_after: 2,
            healthy_after: 2,
            max_fails: 3,
            retries: 1,
        };
        let members = weights.iter().enumerate().map(|(i, &w)| ((), format!("http://10.0.0.{i}:80"), w)).collect();
        Group::new(members, settings, None)
    }

    fn counts(g: &Group<()>, n: usize) -> Vec<usize> {
        let mut c = vec![0; g.members().len()];
        for _ in 0..n {
            c[g.pick(None, &[]).unwrap().index()] += 1;
        }
        c
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let g = group(&[5, 1, 1], Balance::RoundRobin);
        // nginx's example: a a b a c a a, spread out rather than five in a row.
        let order: Vec<usize> = (0..7).map(|_| g.pick(None, &[]).unwrap().index()).collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        let g = group(&[3, 2, 1], Balance::RoundRobin);
        assert_eq!(counts(&g, 600), [300, 200, 100]);
    }

    #[test]
    fn least_conn_prefers_the_idle_and_the_heavy() {
        let g = group(&[1, 1, 2], Balance::LeastConn);
        let a = g.pick(None, &[]).unwrap();
        assert_eq!(a.index(), 2, "a tie goes to the heavier member");
        let b = g.pick(None, &[]).unwrap();
        let c = g.pick(None, &[]).unwrap();
        assert_ne!(b.index(), c.index());
        assert!(b.index() != 2 && c.index() != 2, "0 in flight beats 1 in flight at weight 2");
        drop((a, b, c));
        // A member holding requests gets none while others are idle.
        let g = group(&[1, 1], Balance::LeastConn);
        let held = g.pick(None, &[]).unwrap();
        for _ in 0..5 {
            assert_ne!(g.pick(None, &[]).unwrap().index(), held.index());
        }
    }

    #[test]
    fn hashing_keeps_keys_and_moves_about_one_in_n() {
        let names = |n: usize| -> Vec<((), String, u32)> {
            (0..n).map(|i| ((), format!("http://127.0.0.1:{}", 9000 + i), 1)).collect()
        };
        let settings = group(&[1], Balance::ClientIp).settings().clone();
        let three = Group::new(names(3), settings.clone(), None);
        let four = Group::new(names(4), settings, None);
        let keys: Vec<u64> = (0..12_000u32).map(|k| fnv(&k.to_be_bytes())).collect();
        let mut per = [0usize; 3];
        let mut moved = 0;
        for &k in &keys {
            let a = three.pick(Some(k), &[]).unwrap().index();
            assert_eq!(three.pick(Some(k), &[]).unwrap().index(), a, "a key stays on its member");
            per[a] += 1;
            let b = four.pick(Some(k), &[]).unwrap().index();
            if a != b {
                assert_eq!(b, 3, "a key only ever moves to the new member");
                moved += 1;
            }
        }
        for n in per {
            assert!((3_600..=4_400).contains(&n), "{per:?}");
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.21..=0.29).contains(&share), "{share}: about 1/4 move to the fourth member");
        // A member that is out: its keys go elsewhere, the others stay.
        let down: Vec<usize> = keys.iter().map(|&k| three.pick(Some(k), &[1]).unwrap().index()).collect();
        for (&k, &d) in keys.iter().zip(&down) {
            let a = three.pick(Some(k), &[]).unwrap().index();
            assert!(a == 1 || a == d);
        }
    }

    #[test]
    fn weighted_hashing_follows_the_weights() {
        let g = group(&[1, 3], Balance::ClientIp);
        let mut c = [0usize; 2];
        for k in 0..8_000u32 {
            c[g.pick(Some(fnv(&k.to_le_bytes())), &[]).unwrap().index()] += 1;
        }
        assert!((1_800..=2_200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn keys_from_requests() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; sid=xyz ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "si"), None);
        let g = group(&[1, 1], Balance::Cookie("sid".into()));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(g.key(&h, ip), Some(fnv(b"xyz")));
        assert_eq!(g.key(&HeaderMap::new(), ip), None, "no cookie: round robin");
        let g = group(&[1, 1], Balance::ClientIp);
        assert_eq!(g.key(&h, "::ffff:127.0.0.1".parse().unwrap()), g.key(&h, ip));
    }

    #[test]
    fn passive_checks_take_a_member_out_and_one_request_tries_it_again() {
        let mut g = group(&[1, 1], Balance::RoundRobin);
        Arc::get_mut(&mut g.inner).unwrap().settings.interval = Duration::from_millis(50);
        let mut p = g.pick(None, &[]).unwrap();
        let out = p.index();
        p.unreachable("connection refused");
        drop(p);
        assert!(!g.members()[out].is_up());
        for _ in 0..4 {
            assert_ne!(g.pick(None, &[]).unwrap().index(), out);
        }
        std::thread::sleep(Duration::from_millis(60));
        // Due: the first request that picks it is its trial, and no other goes there meanwhile.
        let mut trial = loop {
            let p = g.pick(None, &[]).unwrap();
            if p.index() == out {
                break p;
            }
        };
        for _ in 0..4 {
            assert_ne!(g.pick(None, &[]).unwrap().index(), out);
        }
        trial.answered(200);
        drop(trial);
        assert!(g.members()[out].is_up());
        // max_fails answers of 502-504 within the interval take it out too.
        let mut seen = 0;
        while seen < 3 {
            let mut p = g.pick(None, &[]).unwrap();
            if p.index() == out {
                p.answered(503);
                seen += 1;
            } else {
                p.answered(200);
            }
        }
        assert!(!g.members()[out].is_up());
        // Nothing up: no pick.
        let other = 1 - out;
        let mut p = g.pick(None, &[]).unwrap();
        assert_eq!(p.index(), other);
        p.unreachable("refused");
        drop(p);
        assert!(g.pick(None, &[]).is_none());
    }

    #[test]
    fn active_checks_count_in_a_row() {
        let g = group(&[1, 1], Balance::RoundRobin);
        let inner = &g.inner;
        inner.checked(0, Err("refused".into()));
        assert!(g.members()[0].is_up(), "one failure is not two");
        inner.checked(0, Ok(()));
        inner.checked(0, Err("refused".into()));
        assert!(g.members()[0].is_up(), "not in a row");
        inner.checked(0, Err("refused".into()));
        assert!(!g.members()[0].is_up());
        for _ in 0..5 {
            assert_eq!(g.pick(None, &[]).unwrap().index(), 1);
        }
        inner.checked(0, Ok(()));
        assert!(!g.members()[0].is_up());
        inner.checked(0, Ok(()));
        assert!(g.members()[0].is_up());
    }
}
