//! One client connection: the IO wrapper that notices activity, and the loop that runs hyper's connection
//! beside the two client-side timers (a head that trickles in, a kept-alive connection that sits idle) and the
//! drain signal.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::pages;

/// What the connection's IO, its requests and its timer loop share.
#[derive(Debug, Default)]
pub struct ConnShared {
    /// Milliseconds since [`epoch`] of the last byte read or written.
    last_activity: AtomicU64,
    /// When the first byte of a request head arrived while no request was in flight; 0 when none is arriving.
    head_started: AtomicU64,
    /// Requests whose response has not finished yet.
    in_flight: AtomicUsize,
    /// The head that is arriving names Content-Length more than once.
    duplicate_content_length: AtomicBool,
    /// When a write to the client first found its socket full and nothing was written since; 0 when none is
    /// waiting. A client that takes no response bytes for the idle time is cut off.
    write_blocked: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // +1 so that 0 can mean "not set".
    epoch().elapsed().as_millis() as u64 + 1
}

impl ConnShared {
    pub fn new() -> Arc<ConnShared> {
        let s = ConnShared::default();
        s.last_activity.store(now_ms(), Ordering::Relaxed);
        Arc::new(s)
    }

    /// A request head is complete and its handling starts.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// The response (body included) is done, or was abandoned.
    pub fn request_finished(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the head of the request now starting named Content-Length twice; clears the flag.
    pub fn take_duplicate_content_length(&self) -> bool {
        self.duplicate_content_length.swap(false, Ordering::Relaxed)
    }

    fn on_read(&self, bytes: &[u8]) {
        let now = now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == 0 {
            self.head_started.store(now, Ordering::Relaxed);
            if count_content_length(bytes) > 1 {
                self.duplicate_content_length.store(true, Ordering::Relaxed);
            }
        }
    }

    fn on_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.last_activity.store(now_ms(), Ordering::Relaxed);
                self.write_blocked.store(0, Ordering::Relaxed);
            }
            Poll::Pending => {
                let _ = self.write_blocked.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// When the connection should be closed if nothing happens before then. While a request is in flight its
    /// own upstream timeouts bound it, except for a client that stops taking the response: `idle` after a
    /// write to it found the socket full.
    pub fn deadline(&self, header_read: Duration, idle: Duration) -> Option<Instant> {
        let at = |ms: u64, d: Duration| epoch() + Duration::from_millis(ms.saturating_sub(1)) + d;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return match self.write_blocked.load(Ordering::Relaxed) {
                0 => None,
                blocked => Some(at(blocked, idle)),
            };
        }
        let head = self.head_started.load(Ordering::Relaxed);
        let idle_at = at(self.last_activity.load(Ordering::Relaxed), idle);
        if head != 0 { Some(at(head, header_read).min(idle_at)) } else { Some(idle_at) }
    }

    /// When the connection loop should look again: a head that starts arriving does not wake the loop, so
    /// while none is arriving (or a request is in flight) it re-checks every half header-read timeout (a slow head is cut off between
    /// 1x and 1.5x the timeout after its first byte).
    pub fn next_check(&self, header_read: Duration, idle: Duration) -> Instant {
        let recheck = Instant::now() + header_read / 2;
        match self.deadline(header_read, idle) {
            Some(d) if self.head_started.load(Ordering::Relaxed) != 0 => d,
            Some(d) => d.min(recheck),
            None => recheck,
        }
    }
}

/// How many `Content-Length` fields the head at the start of `bytes` has. hyper merges identical duplicates
/// silently; RFC 9112 §6.3 lets a recipient reject them, and hopgate does, so that no two parsers along the
/// path can disagree about the framing. Only the head in this first read is seen. Empty lines before the
/// request line are skipped, as hyper's parser skips them (RFC 9112 §2.2), however many there are.
pub(crate) fn count_content_length(bytes: &[u8]) -> usize {
    const NAME: &[u8] = b"content-length:";
    // One pass over the lines, ending at the empty line that ends the head (this runs for every request).
    bytes
        .split(|&b| b == b'\n')
        .skip_while(|line| line.is_empty() || *line == b"\r")
        .skip(1)
        .take_while(|line| !(line.is_empty() || *line == b"\r"))
        .filter(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
        .count()
}

/// The client socket, reporting every read and write to [`ConnShared`].
pub struct ConnIo<T> {
    inner: T,
    shared: Arc<ConnShared>,
    /// A page replacing hyper's bodyless error response, and how much of it is written.
    page: Option<(Vec<u8>, usize)>,
}

impl<T> ConnIo<T> {
    pub fn new(inner: T, shared: Arc<ConnShared>) -> ConnIo<T> {
        ConnIo { inner, shared, page: None }
    }
}

impl<T: AsyncWrite + Unpin> ConnIo<T> {
    /// Writes what is left of a replacement page.
    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((page, done)) = &mut self.page {
            if *done == page.len() {
                self.page = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &page[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// hyper answers a head it can't parse with a bodyless 400/414/431 of its own. When no request is in flight
    /// and a write is exactly that response, hopgate sends its page instead, so that the client learns why.
    fn take_automatic_error(&mut self, buf: &[u8]) -> bool {
        if self.shared.in_flight.load(Ordering::Relaxed) != 0 {
            return false;
        }
        match pages::replace_hyper_error(buf) {
            Some(page) => {
                self.page = Some((page, 0));
                true
            }
            None => false,
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
        ready!(self.poll_page(cx))?;
        if self.take_automatic_error(buf) {
            // The page stands for all of hyper's bytes; what is left of it goes out on the next write or flush.
            let _ = self.poll_page(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.shared.on_write(&r);
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_page(cx))?;
        if let [one] = bufs
            && self.take_automatic_error(one)
        {
            let _ = self.poll_page(cx)?;
            return Poll::Ready(Ok(one.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.shared.on_write(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_page(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_page(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_content_length_in_head_only() {
        assert_eq!(count_content_length(b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"), 2);
        assert_eq!(count_content_length(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nContent-Length: 5\r\n"), 1);
        assert_eq!(count_content_length(b"GET /content-length: HTTP/1.1\r\n\r\n"), 0);
        // Empty lines before the request line (found by the fuzz target content_length).
        let lead = b"\r\n\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(count_content_length(lead), 2);
    }

    #[test]
    fn deadlines() {
        let s = ConnShared::new();
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
        let s = ConnShared::new();
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
