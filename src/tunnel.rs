//! The byte pump of a tunnel: copies both ways between two streams until both directions end.
//!
//! When one side reaches EOF, the write half of the other side is shut down (half-close) and the
//! other direction goes on until it ends too. A tunnel with no bytes moving either way for `idle`
//! ends. Used by the CONNECT handler (client <-> upstream), upgrades, and `hopgate tunnel`.
//! Does not: log, count against limits, or close anything it did not get (the streams are
//! dropped when the pump returns). [`report`] carries how a tunnel ended to whoever logs it.
//!
//! Memory: an idle tunnel holds no copy buffer. Each read goes into a buffer on the stack of the
//! poll and is written straight on; only bytes the writer could not take yet are moved to a heap
//! buffer, which is freed as soon as the reading side has nothing more to give.
//!
//! [`splice`] is the same for two plain TCP sockets, with splice(2) through a pipe instead of a buffer: the bytes
//! never enter user space, and the pipe exists only while bytes flow.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::idle;

/// Bytes per read (on the stack while polling; on the heap only while a writer lags behind).
/// On loopback TCP, 64 KiB chunks moved ~1.5x what 8 KiB did, and cost nothing while idle
/// (tests/tunnel_pipe.rs `throughput_vs_direct_loopback`). Two plain TCP sockets are spliced instead
/// ([`splice`]), which moved ~1.4x what this pump does (docs/benchmarks.md, C).
pub const PIPE_CHUNK_BYTES: usize = 64 * 1024;

/// RFC 9113 §7 CONNECT_ERROR: the error code of the RST_STREAM that ends an HTTP/2 CONNECT stream whose TCP
/// connection was reset or failed (§8.5).
pub const H2_CONNECT_ERROR: u32 = 0xa;

/// How a tunnel ended, with the bytes moved each way.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes read from `a` and written to `b`.
    pub a_to_b: u64,
    /// Bytes read from `b` and written to `a`.
    pub b_to_a: u64,
    pub ended: Ended,
}

#[derive(Debug)]
pub enum Ended {
    /// Both sides reached EOF and both write halves were shut down.
    Closed,
    /// No byte moved either way for the idle time.
    Idle,
    /// A read, write or shutdown failed; the tunnel was dropped there.
    Failed(io::Error),
}

/// Copies `a` <-> `b` until both directions reach EOF; `Err(TimedOut)` after `idle` without
/// traffic. Returns (bytes a->b, bytes b->a). See [`pump`] for the counts on failure too.
pub async fn pipe<A, B>(a: A, b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = pump(a, b, idle).await;
    match outcome.ended {
        Ended::Closed => Ok((outcome.a_to_b, outcome.b_to_a)),
        Ended::Idle => Err(io::Error::new(io::ErrorKind::TimedOut, format!("tunnel idle for {idle:?}"))),
        Ended::Failed(e) => Err(e),
    }
}

/// Like [`pipe`], but always reports the byte counts and how the tunnel ended (for the access log).
pub async fn pump<A, B>(a: A, b: B, idle: Duration) -> Outcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    pump_into(a, b, idle, None).await
}

/// [`pump`], keeping the counts in `tally` as they grow (for a tunnel whose task may be dropped mid-way).
async fn pump_into<A, B>(mut a: A, mut b: B, idle: Duration, tally: Option<&Tally>) -> Outcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_to_b, mut b_to_a) = (Half::default(), Half::default());
    both_ways(&mut a_to_b, &mut b_to_a, idle, tally, |cx, ab, ba| {
        [ab.poll(cx, &mut a, &mut b), ba.poll(cx, &mut b, &mut a)]
    })
    .await
}

/// One direction of a tunnel, as [`both_ways`] sees it.
trait Direction {
    fn counts(&self) -> &Counts;
    fn done(&self) -> bool;
}

impl Direction for Half {
    fn counts(&self) -> &Counts {
        &self.counts
    }
    fn done(&self) -> bool {
        self.done
    }
}

impl Direction for SpliceHalf {
    fn counts(&self) -> &Counts {
        &self.counts
    }
    fn done(&self) -> bool {
        self.done
    }
}

/// Moves both directions (`step`) until both are done, one fails, or nothing moved for `idle`; keeps `tally` up
/// to date. What the pump and the splice share.
async fn both_ways<D: Direction>(
    a_to_b: &mut D,
    b_to_a: &mut D,
    idle: Duration,
    tally: Option<&Tally>,
    mut step: impl FnMut(&mut Context<'_>, &mut D, &mut D) -> [Poll<io::Result<()>>; 2],
) -> Outcome {
    let mut idle_timer = idle::Timer::new(idle);
    let ended = poll_fn(|cx| {
        let moved_before = a_to_b.counts().moved + b_to_a.counts().moved;
        let results = step(cx, a_to_b, b_to_a);
        if let Some(t) = tally {
            t.a_to_b.store(a_to_b.counts().written, Ordering::Relaxed);
            t.b_to_a.store(b_to_a.counts().written, Ordering::Relaxed);
            t.flush();
        }
        for result in results {
            if let Poll::Ready(Err(e)) = result {
                return Poll::Ready(Ended::Failed(e));
            }
        }
        if a_to_b.done() && b_to_a.done() {
            return Poll::Ready(Ended::Closed);
        }
        if a_to_b.counts().moved + b_to_a.counts().moved != moved_before {
            idle_timer.touch();
        }
        idle_timer.poll_idle(cx).map(|()| Ended::Idle)
    })
    .await;
    Outcome { a_to_b: a_to_b.counts().written, b_to_a: b_to_a.counts().written, ended }
}

/// Copies between two plain TCP sockets with splice(2) through a pipe per direction, so that no byte passes through
/// user space; otherwise like [`pump`]. `a_read` / `b_read`: bytes already read off `a` / `b` (hyper's buffer past a
/// CONNECT head), written to the other side first. A direction holds its pipe only while bytes flow: it is closed as
/// soon as its reader has nothing more to give and the pipe is empty, so an idle tunnel holds no pipe.
pub async fn splice(a: &mut TcpStream, a_read: Bytes, b: &mut TcpStream, b_read: Bytes, idle: Duration) -> Outcome {
    splice_into(a, a_read, b, b_read, idle, None).await
}

async fn splice_into(
    a: &mut TcpStream,
    a_read: Bytes,
    b: &mut TcpStream,
    b_read: Bytes,
    idle: Duration,
    tally: Option<&Tally>,
) -> Outcome {
    let (mut a_to_b, mut b_to_a) = (SpliceHalf::new(a_read), SpliceHalf::new(b_read));
    both_ways(&mut a_to_b, &mut b_to_a, idle, tally, |cx, ab, ba| [ab.poll(cx, a, b), ba.poll(cx, b, a)]).await
}

/// A plain TCP socket inside hyper's upgraded connection, with the bytes read past the head and, for a client
/// connection the server handed over ([`PlainClient`]), what it holds; `Err` gives the connection back when it is
/// anything else (TLS, an HTTP/2 stream, a socket held to a byte rate).
pub fn tcp_of(up: Upgraded) -> Result<PlainParts, Upgraded> {
    match up.downcast::<PlainClient>() {
        Ok(parts) => Ok((parts.io.io.into_inner(), parts.read_buf, Some(parts.io.held))),
        Err(up) => up.downcast::<TokioIo<TcpStream>>().map(|parts| (parts.io.into_inner(), parts.read_buf, None)),
    }
}

/// A plain socket taken out of an upgraded connection: the socket, the bytes read past the head, and what the
/// client connection holds ([`tcp_of`]).
pub type PlainParts = (TcpStream, Bytes, Option<Box<dyn Held>>);

/// What a client connection keeps alive while it is a tunnel (the server's count of open connections), and
/// where the bytes it moves are counted (the listener's byte counters).
pub trait Held: Send + Sync {
    /// Bytes moved from and to the client.
    fn count(&self, from_client: u64, to_client: u64);
}

/// A client's plain TCP socket (no TLS, no byte limit) as the server hands it over after a CONNECT's 2xx, so that
/// the tunnel may splice it ([`tcp_of`]); pumped, it counts its bytes itself.
pub struct PlainClient {
    io: TokioIo<TcpStream>,
    held: Box<dyn Held>,
}

impl PlainClient {
    pub fn new(tcp: TcpStream, held: Box<dyn Held>) -> PlainClient {
        PlainClient { io: TokioIo::new(tcp), held }
    }
}

impl hyper::rt::Read for PlainClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The cursor can't say how much it took: read through a tokio ReadBuf over its unfilled part.
        // SAFETY: tokio's ReadBuf only writes initialized bytes into the unfilled part and reports how many.
        let n = unsafe {
            let mut rb = ReadBuf::uninit(buf.as_mut());
            ready!(Pin::new(this.io.inner_mut()).poll_read(cx, &mut rb))?;
            rb.filled().len()
        };
        // SAFETY: n bytes were written by poll_read above.
        unsafe { buf.advance(n) };
        this.held.count(n as u64, 0);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for PlainClient {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.held.count(0, n as u64);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Bytes a direction's pipe holds at most (F_SETPIPE_SZ; the kernel's default of 64 KiB when the process may not
/// have more: fs.pipe-max-size, fs.pipe-user-pages-soft). Measured on loopback (docs/benchmarks.md, C): 1 MiB
/// moved ~1.3x what 64 KiB did.
pub const SPLICE_PIPE_BYTES: usize = 1 << 20;

/// One direction's pipe: open only while bytes flow.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet spliced out.
    held: usize,
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given, which is two ints long.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened by pipe2 and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor this function owns; a refusal leaves the pipe at its size.
        let size = unsafe {
            let set = libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE_BYTES as libc::c_int);
            if set > 0 { set } else { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe { read, write, held: 0, size: usize::try_from(size).unwrap_or(0).max(4096) })
    }
}

/// splice(2) from `from` to `to`, at most `len` bytes, never blocking; moving pages where it can.
fn splice_fds(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call (borrowed from a socket and a pipe this direction owns); null
    // offsets are what sockets and pipes need.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// One spliced direction: bytes read before the tunnel, then socket -> pipe -> socket, then shut the writer down.
struct SpliceHalf {
    early: Bytes,
    pipe: Option<Pipe>,
    eof: bool,
    done: bool,
    counts: Counts,
}

impl SpliceHalf {
    fn new(early: Bytes) -> SpliceHalf {
        SpliceHalf { early, pipe: None, eof: false, done: false, counts: Counts::default() }
    }

    fn poll(&mut self, cx: &mut Context<'_>, reader: &mut TcpStream, writer: &mut TcpStream) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        while !self.early.is_empty() {
            let n = ready!(self.counts.poll_write(cx, writer, &self.early.clone()))?;
            let _ = self.early.split_to(n);
        }
        loop {
            let mut moved = false;
            // 1. Out of the pipe into the writer.
            if let Some(pipe) = &mut self.pipe
                && pipe.held > 0
                && writer.poll_write_ready(cx)?.is_ready()
            {
                let (from, to) = (pipe.read.as_raw_fd(), writer.as_raw_fd());
                match writer.try_io(Interest::WRITABLE, || splice_fds(from, to, pipe.held)) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        pipe.held -= n;
                        self.counts.moved += n as u64;
                        self.counts.written += n as u64;
                        moved = true;
                    }
                    // The socket's buffer is full (readiness cleared): the next round waits on it.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => moved = true,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let held = self.pipe.as_ref().map_or(0, |p| p.held);
            if self.eof {
                if held > 0 {
                    if moved {
                        continue;
                    }
                    return Poll::Pending;
                }
                self.pipe = None;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // 2. From the reader into the pipe, while it has room.
            if self.pipe.as_ref().is_none_or(|p| p.held < p.size) {
                if reader.poll_read_ready(cx)?.is_pending() {
                    if held == 0 {
                        self.pipe = None; // idle: hold no pipe
                    }
                    if moved {
                        continue;
                    }
                    return Poll::Pending;
                }
                if self.pipe.is_none() {
                    self.pipe = Some(Pipe::new()?);
                }
                let Some(pipe) = &mut self.pipe else { unreachable!("just opened") };
                let (from, to, room) = (reader.as_raw_fd(), pipe.write.as_raw_fd(), pipe.size - pipe.held);
                let held = pipe.held;
                // EAGAIN with bytes in the pipe may mean a full pipe (pages partly used), not an empty socket: the
                // socket's readiness is then kept (Ok(None)), and it is asked again once the pipe has drained.
                let r = reader.try_io(Interest::READABLE, || match splice_fds(from, to, room) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && held > 0 => Ok(None),
                    other => other.map(Some),
                });
                match r {
                    Ok(Some(0)) => {
                        self.eof = true;
                        moved = true;
                    }
                    Ok(Some(n)) => {
                        pipe.held += n;
                        self.counts.moved += n as u64;
                        moved = true;
                    }
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The socket is empty (readiness cleared): the next round waits on it.
                        moved = true;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if !moved {
                // Pipe full and the writer not ready: its readiness wakes this task.
                return Poll::Pending;
            }
        }
    }
}

/// Bytes written each way so far, and who hears of them as they move.
#[derive(Default)]
struct Tally {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
    /// The counts already handed to `progress`.
    flushed_a_to_b: AtomicU64,
    flushed_b_to_a: AtomicU64,
    progress: OnceLock<Progress>,
}

/// Called with the bytes moved (up, down) since its last call.
type Progress = Box<dyn Fn(u64, u64) + Send + Sync>;

impl Tally {
    /// Hands what moved since the last flush to `progress`. `fetch_max` keeps two flushers (the pump and
    /// [`Watch::on_progress`]) from counting a byte twice.
    fn flush(&self) {
        let Some(progress) = self.progress.get() else { return };
        let (up, down) = (self.a_to_b.load(Ordering::Relaxed), self.b_to_a.load(Ordering::Relaxed));
        let up = up.saturating_sub(self.flushed_a_to_b.fetch_max(up, Ordering::Relaxed));
        let down = down.saturating_sub(self.flushed_b_to_a.fetch_max(down, Ordering::Relaxed));
        if up > 0 || down > 0 {
            progress(up, down);
        }
    }
}

/// How a tunnel ended, as the access log tells it: bytes each way and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Bytes from the client to the upstream.
    pub up: u64,
    /// Bytes from the upstream to the client.
    pub down: u64,
    pub end: End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed.
    Closed,
    /// No byte moved for the idle time.
    Idle,
    /// A read or write failed (a reset, say).
    Failed,
    /// The connections never became a tunnel (the client went away before its 200/101 was sent).
    NotEstablished,
    /// The tunnel was cut off without finishing: hopgate stopped after its drain time.
    Cancelled,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::Failed => "failed",
            End::NotEstablished => "not-established",
            End::Cancelled => "cancelled",
        }
    }
}

/// The pair that carries a tunnel's end to the access log. The backend that opens a tunnel (CONNECT's 200, an
/// upgrade's 101) puts the [`Watch`] into its response's extensions and moves the [`Report`] into the task that
/// runs the tunnel; the request's log line is written when the tunnel ends, whichever of the two comes last.
/// `upgrade`: the protocol(s) switched to, None for CONNECT.
pub fn report(upgrade: Option<String>) -> (Report, Watch) {
    let slot = Arc::new(Mutex::new(Slot::Open));
    let tally = Arc::new(Tally::default());
    (
        Report { slot: slot.clone(), sent: false, tally: tally.clone() },
        Watch { slot, upgrade: upgrade.map(Arc::from), tally },
    )
}

type OnEnd = Box<dyn FnOnce(Summary) + Send>;

enum Slot {
    Open,
    Waiting(OnEnd),
    Ended(Summary),
    Done,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tunnel task's half: says how the tunnel ended. Dropped without a word (the task was dropped at the end of
/// the drain), it says [`End::Cancelled`] with the bytes moved until then.
pub struct Report {
    slot: Arc<Mutex<Slot>>,
    sent: bool,
    tally: Arc<Tally>,
}

impl Report {
    /// [`pump`] `a` (the client side) <-> `b`, counting for a report even if the tunnel is cut off.
    pub async fn pump<A, B>(&self, a: A, b: B, idle: Duration) -> Outcome
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        pump_into(a, b, idle, Some(&self.tally)).await
    }

    /// [`splice`] `a` (the client side) <-> `b`, counting for a report even if the tunnel is cut off.
    pub async fn splice(
        &self,
        a: &mut TcpStream,
        a_read: Bytes,
        b: &mut TcpStream,
        b_read: Bytes,
        idle: Duration,
    ) -> Outcome {
        splice_into(a, a_read, b, b_read, idle, Some(&self.tally)).await
    }

    /// The pump's outcome, `a` being the client side.
    pub fn outcome(mut self, o: &Outcome) {
        let end = match o.ended {
            Ended::Closed => End::Closed,
            Ended::Idle => End::Idle,
            Ended::Failed(_) => End::Failed,
        };
        self.finish(Summary { up: o.a_to_b, down: o.b_to_a, end });
    }

    pub fn not_established(mut self) {
        self.finish(Summary { up: 0, down: 0, end: End::NotEstablished });
    }

    fn finish(&mut self, summary: Summary) {
        if std::mem::replace(&mut self.sent, true) {
            return;
        }
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Waiting(f) => {
                drop(slot);
                f(summary);
            }
            _ => *slot = Slot::Ended(summary),
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let (up, down) = (self.tally.a_to_b.load(Ordering::Relaxed), self.tally.b_to_a.load(Ordering::Relaxed));
        self.finish(Summary { up, down, end: End::Cancelled });
    }
}

/// The response's half (an extension of the 200/101): who logs the request waits on it.
#[derive(Clone)]
pub struct Watch {
    slot: Arc<Mutex<Slot>>,
    upgrade: Option<Arc<str>>,
    tally: Arc<Tally>,
}

impl Watch {
    /// Calls `f` with the bytes (up from the client, down to it) moved since its last call, as they move: first
    /// with what moved before this call. Only the first `f` given is called.
    pub fn on_progress(&self, f: impl Fn(u64, u64) + Send + Sync + 'static) {
        let _ = self.tally.progress.set(Box::new(f));
        self.tally.flush();
    }

    /// The protocol(s) an upgrade switched to; None for CONNECT.
    pub fn upgrade(&self) -> Option<&str> {
        self.upgrade.as_deref()
    }

    /// Runs `f` when the tunnel has ended: now if it has, else on the tunnel task when it does.
    pub fn on_end(&self, f: impl FnOnce(Summary) + Send + 'static) {
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Ended(summary) => {
                drop(slot);
                f(summary);
            }
            Slot::Open => *slot = Slot::Waiting(Box::new(f)),
            // A second waiter: the first one keeps the report.
            other => *slot = other,
        }
    }
}

/// One direction: read from one side, write to the other, then shut the writer down at EOF.
#[derive(Default)]
struct Half {
    /// Bytes read but not yet written, kept only while the writer is slower than the reader.
    backlog: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// Reader reached EOF; what is left: write the backlog, flush, shut down.
    eof: bool,
    done: bool,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    /// Something was written since the last flush (TLS streams buffer inside).
    unflushed: bool,
    /// Bytes read plus bytes written: any change is traffic for the idle timer.
    moved: u64,
    written: u64,
}

impl Half {
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // 1. Whatever the writer could not take earlier goes first.
            if let Some(backlog) = &self.backlog {
                while self.start < self.end {
                    let n = ready!(self.counts.poll_write(cx, writer, &backlog[self.start..self.end]))?;
                    self.start += n;
                }
                if self.eof {
                    self.backlog = None;
                }
            }
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // 2. Read: into the backlog buffer while there is one (the writer is lagging),
            // otherwise into a stack buffer that is written straight on.
            if let Some(backlog) = &mut self.backlog {
                let mut buf = ReadBuf::new(backlog);
                match Pin::new(&mut *reader).poll_read(cx, &mut buf)? {
                    Poll::Pending => {
                        self.backlog = None; // idle: hold no buffer
                        return self.poll_flush_pending(cx, writer);
                    }
                    Poll::Ready(()) => {
                        self.start = 0;
                        self.end = buf.filled().len();
                        self.counts.moved += self.end as u64;
                        self.eof = self.end == 0;
                        continue;
                    }
                }
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); PIPE_CHUNK_BYTES];
            let mut buf = ReadBuf::uninit(&mut stack);
            if Pin::new(&mut *reader).poll_read(cx, &mut buf)?.is_pending() {
                return self.poll_flush_pending(cx, writer);
            }
            let chunk = buf.filled();
            if chunk.is_empty() {
                self.eof = true;
                continue;
            }
            self.counts.moved += chunk.len() as u64;
            let mut sent = 0;
            while sent < chunk.len() {
                match self.counts.poll_write(cx, writer, &chunk[sent..])? {
                    Poll::Ready(n) => sent += n,
                    Poll::Pending => break,
                }
            }
            if sent < chunk.len() {
                let mut backlog = vec![0u8; PIPE_CHUNK_BYTES].into_boxed_slice();
                let rest = &chunk[sent..];
                backlog[..rest.len()].copy_from_slice(rest);
                self.backlog = Some(backlog);
                self.start = 0;
                self.end = rest.len();
            }
        }
    }

    /// The reader is pending: flush what was written (a TLS writer may hold it) and wait.
    fn poll_flush_pending<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
    ) -> Poll<io::Result<()>> {
        if self.counts.unflushed && Pin::new(writer).poll_flush(cx)?.is_ready() {
            self.counts.unflushed = false;
        }
        Poll::Pending
    }
}

impl Counts {
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(writer).poll_write(cx, bytes))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.unflushed = true;
        self.moved += n as u64;
        self.written += n as u64;
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged() -> (Arc<Mutex<Vec<Summary>>>, impl FnOnce(Summary) + Send + 'static) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        (got, move |s| g.lock().unwrap().push(s))
    }

    fn closed(a_to_b: u64, b_to_a: u64) -> Outcome {
        Outcome { a_to_b, b_to_a, ended: Ended::Closed }
    }

    #[test]
    fn the_line_waits_for_the_end_whichever_comes_first() {
        // The log asks first, the tunnel ends later.
        let (rep, watch) = super::report(Some("websocket".into()));
        assert_eq!(watch.upgrade(), Some("websocket"));
        let (got, f) = logged();
        watch.on_end(f);
        assert!(got.lock().unwrap().is_empty());
        rep.outcome(&closed(3, 5));
        assert_eq!(*got.lock().unwrap(), [Summary { up: 3, down: 5, end: End::Closed }]);
        // The tunnel ends first (the client closed at once), the log asks later.
        let (rep, watch) = super::report(None);
        rep.outcome(&Outcome { a_to_b: 1, b_to_a: 0, ended: Ended::Idle });
        let (got, f) = logged();
        watch.on_end(f);
        assert_eq!(*got.lock().unwrap(), [Summary { up: 1, down: 0, end: End::Idle }]);
    }

    #[test]
    fn a_dropped_report_still_ends_the_line() {
        let (rep, watch) = super::report(None);
        let (got, f) = logged();
        watch.on_end(f);
        drop(rep);
        assert_eq!(*got.lock().unwrap(), [Summary { up: 0, down: 0, end: End::Cancelled }]);
        let (rep, watch) = super::report(None);
        rep.not_established();
        let (got, f) = logged();
        watch.on_end(f);
        assert_eq!(got.lock().unwrap()[0].end, End::NotEstablished);
    }
}
