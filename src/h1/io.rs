//! The buffers and the write queue hopgate's HTTP/1.1 connections share, client side (server::h1) and upstream
//! side (upstream::h1): read buffers from a per-thread pool, taken when bytes arrive and given back when they have
//! been used, so an idle connection holds none; and a write queue that gathers small pieces (a head, chunk
//! framing, small frames) beside one larger frame for one `writev`.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A read buffer's size when it is taken from the pool; a head that needs more grows it.
pub const READ_BUF: usize = 8 * 1024;
/// Buffers kept per thread for connections to take when bytes arrive: enough for the reads under way at once on
/// one thread; more would be memory every idle connection is charged for (bench/run E).
const POOL_KEEP: usize = 16;
/// Data frames up to this size are copied beside the head or chunk framing and written in one go; larger ones
/// are written from their own buffer.
pub const COPY_FRAME: usize = 4 * 1024;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static QUEUES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Write-queue buffers kept per thread ([`Out::with_room`]), and the largest kept.
const QUEUES_KEEP: usize = 32;
const QUEUE_KEEP_BYTES: usize = 16 * 1024;

/// Field maps kept per thread ([`take_map`]): a relayed request's two maps (its request's and its response's)
/// were made and freed on every request (bench/profile callgrind gateway).
const MAPS_KEEP: usize = 32;
/// A map that has grown past this many fields is let go rather than kept.
const MAP_KEEP_FIELDS: usize = 64;

/// An empty field map with room for `fields`, from the thread's pool when it has one.
pub fn take_map(fields: usize) -> HeaderMap {
    match MAPS.with_borrow_mut(|m| m.pop()) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives a field map (a message's whose head has been written) back to the thread's pool, emptied.
pub fn give_map(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAP_KEEP_FIELDS {
        return;
    }
    map.clear();
    keep(&MAPS, map, MAPS_KEEP);
}

/// Puts `item` in this thread's `pool` unless it holds `max` already (or the thread is ending).
fn keep<T>(pool: &'static std::thread::LocalKey<RefCell<Vec<T>>>, item: T, max: usize) {
    let _ = pool.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < max {
            p.push(item);
        }
    });
}

pub fn take_buf() -> BytesMut {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
}

/// Gives an empty buffer back to the pool. One whose room has shrunk under split-off heads, and a large one (a
/// body's grown reads, a long head), is let go: the pool keeps buffers of the size it hands out.
pub fn give_buf(mut b: BytesMut) {
    if !b.is_empty() || b.capacity() == 0 || b.capacity() > 2 * READ_BUF {
        return;
    }
    if b.capacity() < READ_BUF / 2 && !b.try_reclaim(READ_BUF) {
        return;
    }
    keep(&POOL, b, POOL_KEEP);
}

/// Reads more into `buf`, at least `want` bytes of room (an empty buffer is taken from the pool for the read and
/// goes back if nothing came). Ok(0): end of stream.
pub fn poll_fill<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    fill_with(buf, want, |rb| Pin::new(io).poll_read(cx, rb))
}

/// [`poll_fill`] from a plain TCP socket the kernel stamps (`crate::arrival`): `stamp` becomes the receive time of
/// the last segment read, or None when the read had none. `on_read` is told what was read (what `ConnIo` would
/// report).
pub fn poll_fill_stamped(
    tcp: &TcpStream,
    buf: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
    stamp: &mut Option<std::time::SystemTime>,
    on_read: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    let r = fill_with(buf, want, |rb| {
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            // SAFETY: recv writes only initialised bytes into the unfilled part, and says how many.
            let unfilled = unsafe { rb.unfilled_mut() };
            match tcp.try_io(Interest::READABLE, || crate::arrival::recv(tcp.as_raw_fd(), unfilled)) {
                Ok((n, at)) => {
                    // SAFETY: recvmsg initialised the first n bytes of the unfilled part.
                    unsafe { rb.assume_init(n) };
                    rb.advance(n);
                    *stamp = at;
                    return Poll::Ready(Ok(()));
                }
                // try_io cleared the readiness: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    });
    if let Poll::Ready(Ok(n)) = r
        && n > 0
    {
        on_read(&buf[buf.len() - n..]);
    }
    r
}

/// Reads with `read` into `buf`'s spare room (the thread's pooled buffer when `buf` holds none): how many bytes.
fn fill_with(
    buf: &mut BytesMut,
    want: usize,
    read: impl FnOnce(&mut ReadBuf<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        if buf.capacity() == 0 && want <= READ_BUF {
            *buf = take_buf();
        } else {
            // A body's larger reads: the last one's buffer is used again when its frames have been written.
            buf.reserve(want.max(buf.len()));
        }
    }
    let spare = buf.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    match read(&mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            // SAFETY: the read initialized the first n bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            if n == 0 && buf.is_empty() {
                give_buf(std::mem::take(buf));
            }
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => {
            if buf.is_empty() {
                give_buf(std::mem::take(buf));
            }
            Poll::Pending
        }
    }
}

/// Bytes on their way out: small ones (the head, chunk framing, small frames) copied into `pre`, then one larger
/// frame, then its chunk's CRLF. Made with [`Out::with_room`].
pub struct Out {
    pub pre: Vec<u8>,
    pub pre_at: usize,
    pub data: Bytes,
    pub post: &'static [u8],
}

impl Drop for Out {
    fn drop(&mut self) {
        let mut pre = std::mem::take(&mut self.pre);
        if pre.capacity() == 0 || pre.capacity() > QUEUE_KEEP_BYTES {
            return;
        }
        pre.clear();
        keep(&QUEUES, pre, QUEUES_KEEP);
    }
}

impl Out {
    /// An empty queue with room for `room` small bytes, its buffer from the thread's pool (it goes back when the
    /// queue is dropped).
    pub fn with_room(room: usize) -> Out {
        let mut pre = QUEUES.try_with(|q| q.borrow_mut().pop()).ok().flatten().unwrap_or_default();
        pre.reserve(room);
        Out { pre, pre_at: 0, data: Bytes::new(), post: b"" }
    }

    pub fn is_empty(&self) -> bool {
        self.pre_at == self.pre.len() && self.data.is_empty() && self.post.is_empty()
    }

    /// Room for more small bytes: nothing larger is queued after them yet.
    pub fn open(&self) -> bool {
        self.data.is_empty() && self.post.is_empty()
    }

    /// One write: Ready(Ok) once some of it is written (or there was nothing to write).
    pub fn poll_write_once<I: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, io: &mut I) -> Poll<io::Result<()>> {
        if self.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let bufs = [IoSlice::new(&self.pre[self.pre_at..]), IoSlice::new(&self.data), IoSlice::new(self.post)];
        let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(n);
        Poll::Ready(Ok(()))
    }

    pub fn poll_write<I: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, io: &mut I) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            ready!(self.poll_write_once(cx, io))?;
        }
        self.pre.clear();
        self.pre_at = 0;
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        let pre = (self.pre.len() - self.pre_at).min(n);
        self.pre_at += pre;
        n -= pre;
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        let post = self.post.len().min(n);
        self.post = &self.post[post..];
    }
}

/// Queues a data frame and what follows it: copied when small, else written from its own buffer.
pub fn queue(out: &mut Out, data: Bytes, post: &'static [u8]) {
    if data.len() <= COPY_FRAME {
        out.pre.extend_from_slice(&data);
        out.pre.extend_from_slice(post);
    } else {
        out.data = data;
        out.post = post;
    }
}
