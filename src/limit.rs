//! Rate and bandwidth limits (issue 18): token buckets that hold at most one second of their rate, kept per key
//! (a client address, a user) in bounded tables, and [`Throttled`], the IO wrapper that slows a client connection
//! to what its buckets allow.
//!
//! - A request takes one token from a request bucket; an empty bucket refuses it and says when the next token
//!   comes (429 with Retry-After, `crate::policy`). Request buckets start full: a client's first requests pass.
//! - Bytes take tokens from a byte bucket, one per byte, each direction its own: reads from the client (up) and
//!   writes to it (down). A byte bucket starts empty, so a transfer runs at the rate from its first byte; a key
//!   unused for a while has up to one second of the rate again. An empty bucket makes the connection wait (the
//!   transfer is slowed, never cut), in steps of [`STEP`] of the rate, so that a throttled connection wakes
//!   about 20 times a second. Several connections of one key share its buckets; a bucket may go into debt when
//!   they take at once, and the debt is paid off before anyone moves again, so the sum stays at the rate.
//! - A table holds at most [`MAX_LIMITED_KEYS`] keys (about 300 bytes each). When full, keys that no connection
//!   holds and that have not been used for [`REST`] are dropped (their buckets were full again, as a new key's
//!   would be, or empty for bytes: never looser); if none can go, new keys share one overflow entry, so that
//!   a flood of addresses is limited as one client rather than not at all.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// tokio's clock: the same as std's, except in tests with paused time.
use tokio::time::Instant;

/// Most keys one table (of one listener: client addresses, or users) remembers.
pub const MAX_LIMITED_KEYS: usize = 16_384;
/// A throttled connection moves bytes in steps of this much of its rate (a wake-up each).
pub const STEP: Duration = Duration::from_millis(50);
/// A key unused for this long may be forgotten: its buckets have refilled (one second of the rate), with a margin.
pub const REST: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A token bucket: `rate` tokens a second, at most `rate` held (one second's worth).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket (requests: the first ones pass).
    pub fn full(rate: f64, now: Instant) -> Bucket {
        Bucket { rate, tokens: rate, last: now }
    }

    /// An empty bucket (bytes: a transfer runs at the rate from its first byte).
    pub fn empty(rate: f64, now: Instant) -> Bucket {
        Bucket { rate, tokens: 0.0, last: now }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The tokens held now (negative: a debt).
    pub fn available(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        self.tokens
    }

    /// Takes one token, or says how long until there is one.
    pub fn take_one(&mut self, now: Instant) -> Result<(), Duration> {
        let held = self.available(now);
        if held >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - held) / self.rate))
        }
    }

    /// Spends `n` tokens (bytes moved), into debt if need be.
    pub fn spend(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// Gives back a token taken by a request another limit then refused.
    pub fn refund_one(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.rate);
    }

    /// Unused for [`REST`]: forgetting it loses nothing.
    fn rested(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= REST
    }
}

/// The buckets of one key: requests, bytes from the client, bytes to the client (each only when limited).
#[derive(Debug)]
pub struct Entry {
    pub requests: Option<Mutex<Bucket>>,
    up: Option<Mutex<Bucket>>,
    down: Option<Mutex<Bucket>>,
}

impl Entry {
    pub fn new(requests_per_second: Option<u32>, bytes_per_second: Option<u64>, now: Instant) -> Entry {
        let bytes = |rate: u64| Mutex::new(Bucket::empty(rate as f64, now));
        Entry {
            requests: requests_per_second.map(|r| Mutex::new(Bucket::full(f64::from(r), now))),
            up: bytes_per_second.map(bytes),
            down: bytes_per_second.map(bytes),
        }
    }

    pub fn limits_bytes(&self) -> bool {
        self.down.is_some()
    }

    fn bucket(&self, dir: Direction) -> Option<&Mutex<Bucket>> {
        match dir {
            Direction::Up => self.up.as_ref(),
            Direction::Down => self.down.as_ref(),
        }
    }

    fn rested(&self, now: Instant) -> bool {
        [&self.requests, &self.up, &self.down].into_iter().flatten().all(|b| lock(b).rested(now))
    }
}

/// The entries of one kind of key, bounded.
pub struct Table<K> {
    map: Mutex<HashMap<K, Arc<Entry>>>,
    max: usize,
    /// Shared by new keys while the table is full of keys in use.
    overflow: Arc<Entry>,
    make: Box<dyn Fn(Instant) -> Entry + Send + Sync>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    /// A table whose new entries `make` builds.
    pub fn new(max: usize, make: impl Fn(Instant) -> Entry + Send + Sync + 'static) -> Table<K> {
        let overflow = Arc::new(make(Instant::now()));
        Table { map: Mutex::new(HashMap::new()), max, overflow, make: Box::new(make) }
    }

    /// The entry of `key`, made now if it has none.
    pub fn entry(&self, key: &K) -> Arc<Entry> {
        let mut map = lock(&self.map);
        if let Some(e) = map.get(key) {
            return e.clone();
        }
        let now = Instant::now();
        if map.len() >= self.max {
            map.retain(|_, e| Arc::strong_count(e) > 1 || !e.rested(now));
            if map.len() >= self.max {
                return self.overflow.clone();
            }
        }
        let e = Arc::new((self.make)(now));
        map.insert(key.clone(), e.clone());
        e
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Bytes read from the client.
    Up,
    /// Bytes written to the client.
    Down,
}

/// The byte limits a connection is under now: those of its client address and of its user, set per request by
/// the policy (`Throttle::set`) and read by the connection's [`Throttled`] IO.
#[derive(Default)]
pub struct Throttle {
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Throttle {
    pub fn new() -> Arc<Throttle> {
        Arc::new(Throttle::default())
    }

    /// From now on the connection's bytes go through these entries' byte buckets (none: unlimited).
    pub fn set(&self, entries: Vec<Arc<Entry>>) {
        *lock(&self.entries) = entries.into_iter().filter(|e| e.limits_bytes()).collect();
    }

    /// How many of `want` bytes may move now, or how long to wait for a step of them.
    fn allowance(&self, dir: Direction, want: usize) -> Result<usize, Duration> {
        let entries = lock(&self.entries);
        if entries.is_empty() {
            return Ok(want);
        }
        let now = Instant::now();
        let mut held = f64::INFINITY;
        let mut step = want as f64;
        let mut buckets = Vec::with_capacity(entries.len());
        for e in entries.iter() {
            if let Some(b) = e.bucket(dir) {
                let mut b = lock(b);
                let tokens = b.available(now);
                held = held.min(tokens);
                step = step.min((b.rate() * STEP.as_secs_f64()).max(1.0));
                buckets.push((tokens, b.rate()));
            }
        }
        if held >= step {
            return Ok((held.floor() as usize).clamp(1, want));
        }
        let wait = buckets.iter().map(|(t, rate)| ((step - t) / rate).max(0.0)).fold(0.0, f64::max);
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }

    fn spend(&self, dir: Direction, n: usize) {
        for e in lock(&self.entries).iter() {
            if let Some(b) = e.bucket(dir) {
                lock(b).spend(n as f64);
            }
        }
    }
}

/// A client connection whose bytes each way are limited by a [`Throttle`] (None: never limited, at no cost).
pub struct Throttled<S> {
    inner: S,
    throttle: Option<Arc<Throttle>>,
    read_wait: Option<Pin<Box<tokio::time::Sleep>>>,
    write_wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Throttled<S> {
    pub fn new(inner: S, throttle: Option<Arc<Throttle>>) -> Throttled<S> {
        Throttled { inner, throttle, read_wait: None, write_wait: None }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection itself when it is held to no rate.
    pub fn unthrottled_mut(&mut self) -> Option<&mut S> {
        match self.throttle {
            None => Some(&mut self.inner),
            Some(_) => None,
        }
    }

    /// The connection itself when it is held to no rate; else itself back.
    pub fn into_unthrottled(self) -> Result<S, Throttled<S>> {
        match self.throttle {
            None => Ok(self.inner),
            Some(_) => Err(self),
        }
    }
}

/// Waits out `wait` (when there is one) in `slot`; Ready once the time has come.
fn poll_wait(slot: &mut Option<Pin<Box<tokio::time::Sleep>>>, cx: &mut Context<'_>, wait: Duration) -> Poll<()> {
    let deadline = Instant::now() + wait;
    let sleep = match slot {
        Some(s) => {
            s.as_mut().reset(deadline);
            s
        }
        None => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    sleep.as_mut().poll(cx)
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(throttle) = &this.throttle else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let allowed = loop {
            match throttle.allowance(Direction::Up, buf.remaining().max(1)) {
                Ok(n) => break n,
                Err(wait) => ready!(poll_wait(&mut this.read_wait, cx, wait)),
            }
        };
        if allowed >= buf.remaining() {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            throttle.spend(Direction::Up, buf.filled().len() - before);
            return Poll::Ready(Ok(()));
        }
        let mut limited = buf.take(allowed);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        // SAFETY: `limited` borrows `buf`'s unfilled part; the reader initialised and filled its first n bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        throttle.spend(Direction::Up, n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(throttle) = &this.throttle else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let allowed = loop {
            match throttle.allowance(Direction::Down, buf.len()) {
                Ok(n) => break n,
                Err(wait) => ready!(poll_wait(&mut this.write_wait, cx, wait)),
            }
        };
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]))?;
        throttle.spend(Direction::Down, n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.throttle.is_none() {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        // Throttled: one slice at a time, each cut to what may go now.
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.throttle.is_none() && self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_one_second() {
        let t0 = Instant::now();
        let mut b = Bucket::full(5.0, t0);
        for _ in 0..5 {
            assert!(b.take_one(t0).is_ok());
        }
        let wait = b.take_one(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200), "the next token in 1/rate");
        assert!(b.take_one(t0 + Duration::from_millis(200)).is_ok());
        // A long pause refills one second's worth, no more.
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 5.0);
        let mut bytes = Bucket::empty(1000.0, t0);
        assert_eq!(bytes.available(t0), 0.0);
        assert_eq!(bytes.available(t0 + Duration::from_millis(500)), 500.0);
        bytes.spend(800.0);
        assert_eq!(bytes.available(t0 + Duration::from_millis(500)), -300.0, "a debt");
    }

    #[test]
    fn tables_are_bounded() {
        let t: Table<u32> = Table::new(4, |now| Entry::new(Some(1), None, now));
        let held: Vec<_> = (0..4).map(|k| t.entry(&k)).collect();
        assert_eq!(t.len(), 4);
        let extra = t.entry(&99);
        assert!(Arc::ptr_eq(&extra, &t.overflow), "all in use: the overflow entry");
        assert!(Arc::ptr_eq(&t.entry(&1), &held[1]), "a known key keeps its entry");
        drop(held);
        drop(extra);
        // Not used for REST yet: kept, the overflow again.
        assert!(Arc::ptr_eq(&t.entry(&100), &t.overflow));
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_writes_keep_the_rate() {
        use tokio::io::AsyncWriteExt;
        let throttle = Throttle::new();
        let now = Instant::now();
        throttle.set(vec![Arc::new(Entry::new(None, Some(10_000), now))]);
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let reader = tokio::spawn(async move {
            let mut n = 0;
            let mut buf = vec![0u8; 65536];
            loop {
                match tokio::io::AsyncReadExt::read(&mut b, &mut buf).await {
                    Ok(0) | Err(_) => return n,
                    Ok(k) => n += k,
                }
            }
        });
        let mut w = Throttled::new(a, Some(throttle));
        let start = Instant::now();
        w.write_all(&vec![7u8; 50_000]).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 50_000);
        let took = start.elapsed().as_secs_f64();
        assert!((4.9..5.2).contains(&took), "50,000 bytes at 10,000 B/s from an empty bucket: {took} s");
    }
}
