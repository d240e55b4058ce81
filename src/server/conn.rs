//! One client connection: the IO wrapper that notices activity, and the loop that runs hyper's connection
//! beside the two client-side timers (a head that trickles in, a kept-alive connection that sits idle) and the
//! drain signal.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::idle::Stamp;
use crate::metrics::ListenerMetrics;

/// What the connection's IO, its requests and its timer loop share.
#[derive(Debug, Default)]
pub struct ConnShared {
    /// The last byte read or written.
    last_activity: Stamp,
    /// When the first byte of a request head arrived while no request was in flight; none when none is arriving.
    head_started: Stamp,
    /// Requests whose response has not finished yet.
    in_flight: AtomicUsize,
    /// The drain has begun: a response goes out with `Connection: close`.
    draining: AtomicBool,
    /// The drain asks the connection to close: at once if no request has begun, else after its response
    /// (hopgate's HTTP/1.1 connection; hyper's HTTP/2 one is asked through its own graceful shutdown).
    close_asked: AtomicBool,
    /// When a write to the client first found its socket full and nothing was written since; none when none
    /// is waiting. A client that takes no response bytes for the idle time is cut off.
    write_blocked: Stamp,
    /// The listener's counters (bytes each way, requests in flight); None in unit tests.
    metrics: Option<Arc<ListenerMetrics>>,
    /// Counts the connection open while anything (hyper's connection, an upgraded stream, a tunnel) holds it.
    _open: Option<super::OpenConnection>,
}

impl ConnShared {
    pub fn new(metrics: Option<Arc<ListenerMetrics>>, open: Option<super::OpenConnection>) -> Arc<ConnShared> {
        let s = ConnShared { metrics, _open: open, ..ConnShared::default() };
        s.last_activity.touch();
        Arc::new(s)
    }

    /// A request head is complete and its handling starts.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.clear();
        if let Some(m) = &self.metrics {
            m.in_flight.inc();
        }
    }

    /// The response (body included) is done, or was abandoned.
    pub fn request_finished(&self) {
        self.last_activity.touch();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.in_flight.dec();
        }
    }

    /// The listener's counters.
    pub fn metrics(&self) -> Option<&Arc<ListenerMetrics>> {
        self.metrics.as_ref()
    }

    /// Bytes read from the client (by `ConnIo`, or by a read around it): activity, the byte count, a head begun.
    pub fn on_read(&self, bytes: &[u8]) {
        self.last_activity.touch();
        if let Some(m) = &self.metrics {
            m.received.inc_by(bytes.len() as u64);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.head_started.is_set() {
            self.head_started.copy(&self.last_activity);
        }
    }

    pub(super) fn on_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.last_activity.touch();
                self.write_blocked.clear();
                if let Some(m) = &self.metrics {
                    m.sent.inc_by(*n as u64);
                }
            }
            Poll::Pending => self.write_blocked.touch_if_none(),
            _ => {}
        }
    }

    /// Asks the connection to close once no request is under way.
    pub fn ask_close(&self) {
        self.close_asked.store(true, Ordering::Relaxed);
    }

    /// Whether the connection was asked to close ([`ConnShared::ask_close`]).
    pub fn close_asked(&self) -> bool {
        self.close_asked.load(Ordering::Relaxed)
    }

    /// Whether the drain has begun for this connection: an HTTP/1 response then says `Connection: close`.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a request is under way (its head is arriving, or it is being answered). A draining connection is
    /// asked to close only then (its response says `Connection: close`) or after DRAIN_FIRST_REQUEST_WAIT: never
    /// while it sits between two requests, when the client may be sending the next one (closing then fails it).
    fn begun(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0 || self.head_started.is_set()
    }

    /// When the connection should be closed if nothing happens before then. While a request is in flight its
    /// own upstream timeouts bound it, except for a client that stops taking the response: `idle` after a
    /// write to it found the socket full.
    pub fn deadline(&self, header_read: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return self.write_blocked.get().map(|blocked| blocked + idle);
        }
        let idle_at = self.last_activity.get().unwrap_or_else(Instant::now) + idle;
        match self.head_started.get() {
            Some(head) => Some((head + header_read).min(idle_at)),
            None => Some(idle_at),
        }
    }

    /// When the connection loop should look again: a head that starts arriving does not wake the loop, so
    /// while none is arriving (or a request is in flight) it re-checks every half header-read timeout (a slow head is cut off between
    /// 1x and 1.5x the timeout after its first byte).
    pub fn next_check(&self, header_read: Duration, idle: Duration) -> Instant {
        let recheck = Instant::now() + header_read / 2;
        match self.deadline(header_read, idle) {
            Some(d) if self.head_started.is_set() => d,
            Some(d) => d.min(recheck),
            None => recheck,
        }
    }
}

/// When a drain begins, a connection on which no request is under way gets this long to begin one (at most
/// `header_read_secs`): it was accepted before the drain, and its first request may be on its way (a layer-4
/// balancer connects and sends at once). That request is answered with `Connection: close`; a connection that
/// sends nothing in this time is closed.
pub const DRAIN_FIRST_REQUEST_WAIT: Duration = Duration::from_secs(2);

/// How often a connection waiting for its first request during a drain looks whether it has begun.
const DRAIN_FIRST_REQUEST_POLL: Duration = Duration::from_millis(20);

/// Runs one server connection (hopgate's HTTP/1.1, hyper's HTTP/2) beside the client-side timers and the drain signal:
/// a head that takes longer than `header_read` from its first byte, or a connection idle for `idle` with nothing
/// in flight (or a client that takes no response bytes for `idle`), is closed; on drain, `graceful` asks the
/// connection to finish what is in flight and close, at once, or, for a connection on which no request has
/// begun, once one begins or [`DRAIN_FIRST_REQUEST_WAIT`] has passed. `conn` is pinned by the caller: an async
/// function keeps a by-value argument twice (as it was passed and where it is moved), and the connection's future
/// is the largest part of an idle connection's memory.
#[allow(clippy::manual_async_fn)] // on purpose: see the comment in the body
pub fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    shared: &ConnShared,
    header_read: Duration,
    idle: Duration,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()>
where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    // Not an `async fn`, which would keep every argument twice in its state (as passed and where it is moved to).
    async move {
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        // Set when the drain begins: until then a connection with no request yet may begin one.
        let mut drain_from: Option<Instant> = None;
        let mut asked = false;
        let first_wait = DRAIN_FIRST_REQUEST_WAIT.min(header_read);
        let mut draining = *stop.borrow();
        if draining {
            drain_from = Some(Instant::now());
            shared.draining.store(true, Ordering::Relaxed);
        }
        loop {
            let mut next = shared.next_check(header_read, idle);
            if let Some(from) = drain_from
                && !asked
            {
                if shared.begun() || from.elapsed() >= first_wait {
                    graceful(conn.as_mut());
                    asked = true;
                } else {
                    next = next.min(Instant::now() + DRAIN_FIRST_REQUEST_POLL);
                }
            }
            sleep.as_mut().reset(next);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(client = %peer, "connection ended: {e}");
                    }
                    return;
                }
                _ = &mut sleep => {
                    if shared.deadline(header_read, idle).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(client = %peer, "closing connection: idle or request head too slow");
                        return;
                    }
                }
                _ = stop.changed(), if !draining => {
                    draining = true;
                    drain_from = Some(Instant::now());
                    shared.draining.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The client socket, reporting every read and write to [`ConnShared`].
pub struct ConnIo<T> {
    inner: T,
    shared: Arc<ConnShared>,
}

impl<T> ConnIo<T> {
    pub fn new(inner: T, shared: Arc<ConnShared>) -> ConnIo<T> {
        ConnIo { inner, shared }
    }

    /// The socket and what it reports to.
    pub fn into_parts(self) -> (T, Arc<ConnShared>) {
        (self.inner, self.shared)
    }

    /// The socket, for a write that does not go through `AsyncWrite` (sendfile), and what to report it to.
    pub fn parts_mut(&mut self) -> (&mut T, &ConnShared) {
        (&mut self.inner, &self.shared)
    }
}

/// A client connection handed over as a plain socket for a tunnel counts its bytes into the listener's counters,
/// and stays counted open until the tunnel ends.
impl crate::tunnel::Held for Arc<ConnShared> {
    fn count(&self, from_client: u64, to_client: u64) {
        if let Some(m) = &self.metrics {
            m.received.inc_by(from_client);
            m.sent.inc_by(to_client);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            self.shared.on_read(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.shared.on_write(&r);
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.shared.on_write(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
    fn deadlines() {
        let s = ConnShared::new(None, None);
        let idle = Duration::from_secs(60);
        let hr = Duration::from_secs(5);
        let d0 = s.deadline(hr, idle).unwrap();
        s.on_read(b"GE");
        let d1 = s.deadline(hr, idle).unwrap();
        assert!(d1 < d0, "a started head is bound by the shorter header-read timeout");
        s.request_started();
        assert!(s.deadline(hr, idle).is_none());
        s.request_finished();
        assert!(s.deadline(hr, idle).unwrap() > d1);
    }

    #[test]
    fn a_client_that_stops_reading_has_a_deadline() {
        let s = ConnShared::new(None, None);
        let idle = Duration::from_secs(60);
        s.request_started();
        assert!(s.deadline(Duration::from_secs(5), idle).is_none(), "a request in flight waits for its upstream");
        s.on_write(&Poll::Pending);
        let d = s.deadline(Duration::from_secs(5), idle).expect("a blocked write starts the idle clock");
        assert!(d > Instant::now() + Duration::from_secs(59));
        s.on_write(&Poll::Ready(Ok(10)));
        assert!(s.deadline(Duration::from_secs(5), idle).is_none(), "bytes taken: not stalled");
    }
}
