//! The one idle timer: "cut this off after `after` without activity". Every place that ends something for
//! idleness uses [`Timer`]: tunnels (`tunnel`), relayed bodies and an upstream that stops reading a request body
//! (`http::body`), the resource gateways' reads and request bodies (`backend::meta`, `backend::app`), FTP
//! transfers, listings and request bodies (`backend::ftp`). The client connection's clocks (`server::conn`) are
//! [`Stamp`]s too; its loop weighs several of them at once (head, idle, a blocked write), so it keeps its own.
//!
//! What counts as activity is the owner's to say ([`Timer::touch`]); the timer only says when there was none for
//! `after`. Cheap on the hot path: activity is one clock read (plus one relaxed atomic for a shared [`Stamp`]);
//! the sleep is made only when something first waits, and moved only when it fires before the idle time is up.
//!
//! Does not: bound a single operation from its start (a connect, one reply: `tokio::time::timeout`), or expire
//! pooled connections (the pools check their entries' ages).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`], plus one so that 0 can mean "none".
fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// A moment that tasks record and read without a lock: milliseconds in one atomic, or none.
#[derive(Debug, Default)]
pub struct Stamp(AtomicU64);

impl Stamp {
    /// A stamp that says "now".
    pub fn now() -> Stamp {
        Stamp(AtomicU64::new(now_ms()))
    }

    /// Something happened now. A stamp never moves back (two tasks may touch it).
    pub fn touch(&self) {
        self.0.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Now, unless a moment is recorded already.
    pub fn touch_if_none(&self) {
        let _ = self.0.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The moment `other` holds (none if it holds none).
    pub fn copy(&self, other: &Stamp) {
        self.0.store(other.0.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    pub fn get(&self) -> Option<Instant> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(epoch() + Duration::from_millis(ms - 1)),
        }
    }
}

/// The idle time of one resource was used up ([`Timer::guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// When a timer fires if nothing happens; None for never (an `after` too large for the clock).
fn due(last: &Last, after: Duration) -> Option<Instant> {
    match last {
        Last::Own(at) => at.checked_add(after),
        // Nothing to time yet: look again in `after`.
        Last::Shared(stamp) => stamp.get().unwrap_or_else(Instant::now).checked_add(after),
    }
}

/// Fires once nothing happened for `after`.
pub struct Timer {
    after: Duration,
    last: Last,
    /// The owner waits since its last activity ([`Timer::poll_wait`]).
    waiting: bool,
    /// Made when something first waits; moved to the new deadline when it fires early.
    sleep: Option<Pin<Box<Sleep>>>,
}

enum Last {
    /// Only this timer's owner records activity.
    Own(Instant),
    /// Other tasks record it too (a request body fed by a task of its own, say). None: nothing to time yet.
    Shared(Arc<Stamp>),
}

impl Timer {
    /// Idle from now on; activity is what the owner reports with [`Timer::touch`].
    pub fn new(after: Duration) -> Timer {
        Timer { after, last: Last::Own(Instant::now()), waiting: false, sleep: None }
    }

    /// Activity is recorded in `stamp`, which others touch too. While `stamp` holds no moment the timer does not
    /// fire (the thing it watches is not idle, it is waiting on something else).
    pub fn shared(stamp: Arc<Stamp>, after: Duration) -> Timer {
        Timer { after, last: Last::Shared(stamp), waiting: false, sleep: None }
    }

    pub fn after(&self) -> Duration {
        self.after
    }

    /// Something happened now.
    pub fn touch(&mut self) {
        self.waiting = false;
        self.record();
    }

    fn record(&mut self) {
        match &mut self.last {
            Last::Own(at) => *at = Instant::now(),
            Last::Shared(stamp) => stamp.touch(),
        }
    }

    /// Ready once nothing happened for `after` since the last activity.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Timer { after, last, sleep, .. } = self;
        let sleep = match sleep {
            Some(sleep) => sleep,
            None => {
                let Some(at) = due(last, *after) else { return Poll::Pending };
                sleep.insert(Box::pin(tokio::time::sleep_until(at)))
            }
        };
        loop {
            ready!(sleep.as_mut().poll(cx));
            match due(last, *after) {
                Some(at) if at > Instant::now() => sleep.as_mut().reset(at),
                Some(_) => return Poll::Ready(()),
                None => return Poll::Pending,
            }
        }
    }

    /// [`Timer::poll_idle`] for an owner whose idle time counts only while it waits: the first call after
    /// activity counts as activity, so time the owner spent elsewhere (its consumer not asking) is not idleness.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waiting {
            self.waiting = true;
            self.record();
        }
        self.poll_idle(cx)
    }

    /// Waits for `fut` (one read, one frame) as one wait of [`Timer::poll_wait`]: its completion is activity;
    /// `Err(Elapsed)` once the wait has lasted `after`.
    pub async fn guard<F: Future>(&mut self, fut: F) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                self.touch();
                return Poll::Ready(Ok(v));
            }
            self.poll_wait(cx).map(|()| Err(Elapsed))
        })
        .await
    }

    /// Completes once nothing happened for `after` ([`Timer::poll_idle`]).
    pub async fn idle(&mut self) {
        poll_fn(|cx| self.poll_idle(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_idle_time_since_the_last_touch() {
        let mut t = Timer::new(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(6)).await;
        t.touch();
        let start = Instant::now();
        t.idle().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10), "10 s after the touch, not after the start");
    }

    #[tokio::test(start_paused = true)]
    async fn a_guarded_wait_starts_its_clock_when_it_starts() {
        let mut t = Timer::new(Duration::from_secs(10));
        // Busy elsewhere for longer than the idle time: not idleness.
        tokio::time::advance(Duration::from_secs(30)).await;
        let r = t.guard(tokio::time::sleep(Duration::from_secs(9))).await;
        assert_eq!(r, Ok(()));
        let start = Instant::now();
        let r = t.guard(std::future::pending::<()>()).await;
        assert_eq!((r, start.elapsed()), (Err(Elapsed), Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_stamp_without_a_moment_is_not_idle() {
        let stamp = Arc::new(Stamp::default());
        let mut t = Timer::shared(stamp.clone(), Duration::from_secs(10));
        let toucher = stamp.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(25)).await;
            toucher.touch();
        });
        let start = Instant::now();
        t.idle().await;
        // Not idle until touched at 25 s; idle 10 s later (the timer looks again every 10 s meanwhile).
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(35) && took <= Duration::from_secs(36), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_time_too_large_for_the_clock_never_fires() {
        let mut t = Timer::new(Duration::MAX);
        let r = tokio::time::timeout(Duration::from_secs(3600), t.idle()).await;
        assert!(r.is_err());
    }

    #[test]
    fn stamps() {
        let s = Stamp::default();
        assert!(s.get().is_none());
        s.touch_if_none();
        let first = s.get().expect("set");
        s.touch_if_none();
        assert_eq!(s.get(), Some(first), "kept");
        let other = Stamp::default();
        s.copy(&other);
        assert!(s.get().is_none());
    }
}
