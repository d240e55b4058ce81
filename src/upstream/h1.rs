//! One pooled HTTP/1.1 upstream connection on hopgate's own framing (crate::h1), in place of hyper's client
//! connection (issue 14). There is no connection task and no dispatch channel: the request's own future writes
//! the head and the body on the socket and reads the response head ([`send`]); the response body ([`Reader`])
//! reads the body off the socket, keeps driving an upload the origin answered before it ended, and at its end
//! puts the connection back in its pool. An idle connection holds its socket only: its read buffer comes from a
//! per-thread pool when bytes arrive and goes back when they have been used.
//!
//! What it does is what hyper's client connection did (tests/h1_differential.rs and the integration tests hold it
//! to that): the request head hyper writes (`h1::request_head`), the response head as hyper reads it
//! (`h1::response_head`, 1xx skipped and handed to the relay's [`OnInformational`]), chunked bodies with
//! trailers, close-delimited bodies, a 101 (or a CONNECT's 2xx) handed over as a hyper `Upgraded` with the bytes
//! read past the head, and no reuse after `Connection: close`, HTTP/1.0 without keep-alive, an error, an
//! unfinished body or bytes the origin sent unasked.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool::HostPool;
use super::{UpstreamIo, tls};
use crate::error::BoxError;
use crate::h1::chunked::{self, Decoded};
use crate::h1::fields::has_token;
use crate::h1::io::{Out, READ_BUF, give_buf, give_map, poll_fill, queue};
use crate::h1::request_head::{RequestBody, set_length, write_last_chunk, write_request_head};
use crate::h1::response::Encoder;
use crate::h1::response_head::{ResponseHead, parse_response};
use crate::h1::{BodyLen, HeadError};
use crate::http::Body;

/// The largest read a body grows its buffer to (reads that fill the buffer double the next one; hyper's client
/// read up to about 400 KiB at once).
const MAX_READ: usize = 256 * 1024;
/// Fields in a response head (hyper's default `max_headers`).
const MAX_HEADERS: usize = 100;
/// The most bytes a response head may fill before it is complete (hyper's client's default buffer limit).
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// More informational (1xx) responses than this to one request end the exchange ([`ConnError::Flooded`]) and
/// close the connection: an origin that sends them without end would otherwise keep hopgate reading for the whole
/// response-head time. Go's HTTP client allows 5; a 100 (Continue), 102 (Processing) or 103 (Early Hints) come
/// once or a few times.
pub const MAX_INFORMATIONAL: u32 = 10;

/// The relay's callback for every interim (1xx) response to a request: a request extension (hyper's own,
/// `hyper::ext::on_informational`, is for its HTTP/2 client; its type is private).
#[derive(Clone)]
pub struct OnInformational(pub Arc<InformationalFn>);

/// What [`OnInformational`] calls with each interim response.
pub type InformationalFn = dyn Fn(&Response<()>) + Send + Sync;

/// Why an exchange on a connection failed.
#[derive(Debug)]
pub enum ConnError {
    /// The request body from the client failed (it broke off, stalled, or ended short of its length).
    Body(BoxError),
    /// The upstream's response head can't be read.
    Head(HeadError),
    /// The upstream closed the connection before a complete response head.
    Closed,
    /// The upstream sent more than [`MAX_INFORMATIONAL`] interim (1xx) responses to one request.
    Flooded,
    /// Reading or writing the connection failed.
    Io(io::Error),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Body(e) => write!(f, "the request body failed: {e}"),
            ConnError::Head(HeadError::TooLarge) => f.write_str("message head is too large"),
            ConnError::Head(e) => write!(f, "invalid response head: {e}"),
            ConnError::Closed => f.write_str("connection closed before a complete response"),
            ConnError::Flooded => write!(f, "more than {MAX_INFORMATIONAL} informational (1xx) responses"),
            ConnError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnError::Io(e) => Some(e),
            ConnError::Body(e) => Some(&**e),
            _ => None,
        }
    }
}

/// An upstream connection with no exchange on it (new, or idle in its pool).
pub struct Conn {
    io: UpstreamIo,
    pub addr: SocketAddr,
}

impl Conn {
    pub fn new(io: UpstreamIo) -> Conn {
        let addr = io.addr;
        Conn { io, addr }
    }

    fn stream(&mut self) -> &mut tls::Stream {
        self.io.io.inner_mut()
    }

    /// Whether an idle connection is still open: no task watches it, so this reads without waiting (a waker that
    /// does nothing). Nothing to read: open. The end of the stream, an error, or bytes the origin sent unasked:
    /// it can't carry a request.
    pub fn is_open(&mut self) -> bool {
        if let tls::Stream::Plain(tcp) = self.stream() {
            // The kernel itself: tokio's readiness may not have seen a close that has only just arrived (the
            // origin closed as its last response went out), and one peek (the socket is non-blocking) costs what
            // the read below costs when tokio thinks the socket readable, which is most of the time.
            let mut byte = [std::mem::MaybeUninit::uninit()];
            let peeked = socket2::SockRef::from(&*tcp).peek(&mut byte);
            return matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        Pin::new(self.stream()).poll_read(&mut cx, &mut rb).is_pending()
    }
}

/// `Sync` for a value only ever reached through `&mut` (the response body must be `Sync`; a TLS connection inside
/// a CONNECT tunnel is not).
struct Exclusive<T>(T);

// SAFETY: no `&Exclusive<T>` gives access to the T; only `&mut` does, which is exclusive.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    fn get(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A response head, and the connection and body state it came with.
pub enum Answer {
    /// A response whose body [`Reader`] reads (an empty one is over already).
    Response(Response<()>, Box<Reader>),
    /// A 101 or a CONNECT's 2xx: the connection is handed over through the response's `OnUpgrade`.
    Upgraded(Response<()>),
}

/// Sends `req` on `conn` and reads the response head; the body is the [`Reader`]'s. An error hands the request
/// back when none of it was written. `home`: the pool the connection returns to.
pub async fn send(
    mut conn: Conn,
    mut req: Request<Body>,
    home: Arc<HostPool>,
) -> Result<Answer, (ConnError, Option<Request<Body>>)> {
    let size = if req.body().is_end_stream() {
        RequestBody::Empty
    } else {
        match req.body().size_hint().exact() {
            Some(n) => RequestBody::Known(n),
            None => RequestBody::Unknown,
        }
    };
    let (method, version) = (req.method().clone(), req.version());
    let encoder = set_length(req.headers_mut(), &method, version, size);
    // A request that says `Connection: close` ends its connection, whatever the response says (hyper's rule).
    let close_asked = req.headers().get_all(header::CONNECTION).iter().any(|v| has_token(v, "close"));
    let mut out = Out::with_room(512);
    write_request_head(&mut out.pre, &method, req.uri(), version, req.headers());
    // A body already at hand goes out with the head; a stream is read once the head is on its way, so that a
    // connection that fails at once can hand the request back whole.
    let mut queued = false;
    if let (Encoder::Length(n), Body::Full(Some(b))) = (&encoder, req.body())
        && *n > 0
    {
        let len = usize::try_from(*n).unwrap_or(usize::MAX).min(b.len());
        queue(&mut out, b.slice(..len), b"");
        queued = true;
    }
    let first = poll_fn(|cx| out.poll_write_once(cx, conn.stream())).await;
    if let Err(e) = first {
        return Err((ConnError::Io(e), Some(req)));
    }
    let (mut parts, body) = req.into_parts();
    // The head is written: its fields go back to the pool for the next head read.
    give_map(std::mem::take(&mut parts.headers));
    let informational = parts.extensions.get::<OnInformational>().cloned();
    let mut upload = match (&encoder, queued) {
        (Encoder::Length(0), _) | (_, true) => Upload { body: None, encoder, out, ended: true },
        _ => Upload { body: Some(body), encoder, out, ended: false },
    };

    let mut rbuf = BytesMut::new();
    let mut uploading = true;
    let mut interim = 0u32;
    let head = poll_fn(|cx| {
        loop {
            if uploading {
                match upload.poll(cx, conn.stream()) {
                    Poll::Ready(Ok(())) => uploading = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !rbuf.is_empty() {
                match parse_response(&mut rbuf, &method, MAX_HEADERS) {
                    Ok(Some(head)) if head.is_interim() => {
                        interim += 1;
                        if interim > MAX_INFORMATIONAL {
                            return Poll::Ready(Err(ConnError::Flooded));
                        }
                        if let Some(OnInformational(f)) = &informational {
                            f(&head.response);
                        }
                        continue;
                    }
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) if rbuf.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(ConnError::Head(HeadError::TooLarge)));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(ConnError::Head(e))),
                }
            }
            match ready!(poll_fill(conn.stream(), &mut rbuf, READ_BUF, cx)) {
                Ok(0) => return Poll::Ready(Err(ConnError::Closed)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(ConnError::Io(e))),
            }
        }
    })
    .await
    .map_err(|e| (e, None))?;

    let ResponseHead { mut response, body, keep_alive } = head;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS || (method == Method::CONNECT && status.is_success()) {
        // The connection is the upgrade's now, with the bytes read past the head.
        let rest = Bytes::copy_from_slice(&rbuf);
        rbuf.clear();
        give_buf(rbuf);
        let (pending, on) = hyper::upgrade::pending();
        response.extensions_mut().insert(on);
        pending.fulfill(hyper::upgrade::Upgraded::new(conn.io, rest));
        return Ok(Answer::Upgraded(response));
    }
    let framing = match body {
        BodyLen::Zero => Framing::Done,
        BodyLen::Length(n) => Framing::Length(n),
        BodyLen::Chunked => Framing::Chunked(chunked::Decoder::new(MAX_HEADERS)),
        BodyLen::Close => Framing::Close,
    };
    let mut reader = Reader {
        conn: Some(Exclusive(conn)),
        rbuf,
        framing,
        upload: uploading.then_some(Exclusive(upload)),
        keep_alive: keep_alive && !close_asked,
        read_size: READ_BUF,
        home: Some(home),
        failed: None,
    };
    if matches!(reader.framing, Framing::Done) {
        reader.finish();
    }
    Ok(Answer::Response(response, Box::new(reader)))
}

/// A request body on its way up.
struct Upload {
    /// None once it has ended (or was never to be sent: its framing said no body).
    body: Option<Body>,
    encoder: Encoder,
    out: Out,
    /// Its end is queued in `out`.
    ended: bool,
}

impl Upload {
    /// Writes what the body has ready; Ready(Ok) once all of it is written and flushed.
    fn poll(&mut self, cx: &mut Context<'_>, io: &mut tls::Stream) -> Poll<Result<(), ConnError>> {
        loop {
            let mut waiting = false;
            while !self.ended && self.out.open() && self.out.pre.len() - self.out.pre_at < 64 * 1024 {
                let Some(b) = self.body.as_mut() else {
                    self.ended = true;
                    break;
                };
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.data(data),
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.end(Some(&trailers))?;
                            }
                        }
                    },
                    Poll::Ready(None) => self.end(None)?,
                    Poll::Ready(Some(Err(e))) => {
                        self.body = None;
                        return Poll::Ready(Err(ConnError::Body(e)));
                    }
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
            ready!(self.out.poll_write(cx, io)).map_err(ConnError::Io)?;
            ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(ConnError::Io)?;
            if waiting {
                return Poll::Pending;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn data(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut self.encoder {
            Encoder::Length(left) => {
                // More than the length said is cut off, and the body ends there (as hyper does).
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                if *left == 0 {
                    self.ended = true;
                    self.body = None;
                }
                queue(&mut self.out, data.slice(..n), b"");
            }
            Encoder::Chunked { .. } | Encoder::Close => {
                chunked::size_line(&mut self.out.pre, data.len());
                queue(&mut self.out, data, b"\r\n");
            }
        }
    }

    fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), ConnError> {
        self.ended = true;
        self.body = None;
        match &self.encoder {
            Encoder::Length(0) => Ok(()),
            Encoder::Length(n) => {
                Err(ConnError::Body(format!("the request body ended {n} bytes short of its Content-Length").into()))
            }
            Encoder::Chunked { trailers: allowed } => {
                write_last_chunk(&mut self.out.pre, allowed.as_deref(), trailers);
                Ok(())
            }
            Encoder::Close => Ok(()),
        }
    }
}

/// How the response body is framed on the connection.
enum Framing {
    Length(u64),
    Chunked(chunked::Decoder),
    Close,
    /// The body has been read.
    Done,
}

/// A response body read off its connection, which goes back to its pool when the body (and the request's
/// upload) has ended.
pub struct Reader {
    /// None once the body has ended or failed.
    conn: Option<Exclusive<Conn>>,
    rbuf: BytesMut,
    framing: Framing,
    /// An upload the origin answered before it ended.
    upload: Option<Exclusive<Upload>>,
    keep_alive: bool,
    /// The next read's size: doubled while reads fill the buffer, up to [`MAX_READ`].
    read_size: usize,
    home: Option<Arc<HostPool>>,
    /// The error the next poll reports (see [`Reader::fail`]).
    failed: Option<BoxError>,
}

/// A response body that can't be read to its end.
#[derive(Debug)]
pub struct BodyError(String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl Reader {
    /// The body has ended: the connection goes back to the pool when it may carry another request (now, or once
    /// the upload has ended); else it is closed.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let rbuf = std::mem::take(&mut self.rbuf);
        let Some(Exclusive(conn)) = self.conn.take() else { return };
        // Bytes past the response that nobody asked for: the connection is out of step.
        let reusable = self.keep_alive && rbuf.is_empty();
        give_buf(rbuf);
        let Some(home) = self.home.take().filter(|_| reusable) else { return };
        match self.upload.take() {
            None => home.put(conn),
            Some(Exclusive(mut upload)) => {
                // The origin answered before the upload ended: the connection is reused once it has.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let mut conn = conn;
                    rt.spawn(async move {
                        if poll_fn(|cx| upload.poll(cx, conn.stream())).await.is_ok() {
                            home.put(conn);
                        }
                    });
                }
            }
        }
    }

    /// The body can't be read on: the connection is closed, and the error reported on the next poll. Held back
    /// one poll (a wake-up, then Pending), as hyper's connection task delivered it: the relay's writer sends what
    /// it gathered of the body when the body waits, so the client gets the part that came (a truncated response
    /// is then visibly cut off, not a missing one).
    fn fail<T>(&mut self, why: String, cx: &mut Context<'_>) -> Poll<T> {
        self.conn = None;
        self.upload = None;
        self.framing = Framing::Done;
        self.rbuf = BytesMut::new();
        self.failed = Some(Box::new(BodyError(why)));
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The next piece of the body already in the buffer; None: read more.
    fn next_piece(&mut self) -> Result<Option<Frame<Bytes>>, chunked::ChunkError> {
        match &mut self.framing {
            Framing::Length(left) => {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(self.rbuf.len());
                *left -= n as u64;
                let data = self.rbuf.split_to(n).freeze();
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(Frame::data(data)))
            }
            Framing::Close => {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Frame::data(self.rbuf.split().freeze())))
            }
            Framing::Chunked(d) => match d.decode(&mut self.rbuf) {
                Ok(Decoded::Data(b)) => Ok(Some(Frame::data(b))),
                Ok(Decoded::End(t)) => {
                    self.finish();
                    Ok(Some(Frame::trailers(t.unwrap_or_default())))
                }
                Ok(Decoded::NeedMore) => Ok(None),
                Err(e) => Err(e),
            },
            Framing::Done => Ok(None),
        }
    }
}

impl http_body::Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            if let Some(upload) = this.upload.as_mut() {
                match upload.get().poll(cx, conn.get().stream()) {
                    Poll::Ready(Ok(())) => this.upload = None,
                    Poll::Ready(Err(e)) => {
                        let why = format!("the upstream connection failed while the request body was sent: {e}");
                        return this.fail(why, cx);
                    }
                    Poll::Pending => {}
                }
            }
            match this.next_piece() {
                Ok(Some(frame)) => {
                    // The last chunk without trailers is the end, not an empty trailer frame.
                    if frame.trailers_ref().is_some_and(HeaderMap::is_empty) {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if matches!(this.framing, Framing::Done) => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    return this.fail(format!("invalid response body from the upstream: {e}"), cx);
                }
            }
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let want = this.read_size;
            match ready!(poll_fill(conn.get().stream(), &mut this.rbuf, want, cx)) {
                Ok(0) if matches!(this.framing, Framing::Close) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    let why = "the upstream closed the connection before the response body was complete";
                    return this.fail(why.into(), cx);
                }
                Ok(_) => {
                    if this.rbuf.len() == this.rbuf.capacity() && this.read_size < MAX_READ {
                        this.read_size *= 2;
                    }
                }
                Err(e) => return this.fail(format!("reading the upstream response body failed: {e}"), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done) && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done if self.failed.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
