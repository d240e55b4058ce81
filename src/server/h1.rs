//! One HTTP/1.1 client connection on hopgate's own framing (crate::h1), in place of hyper's server connection
//! (issue 14). A connection waiting for its next request holds its socket and a few hundred bytes: its read
//! buffer comes from a per-thread pool when bytes arrive and goes back when a request has been answered, and
//! each request's work (the service future, the response being written) is one allocation that lives as long
//! as the request.
//!
//! What it does is what hyper's connection did (the differential test and the integration tests hold it to
//! that): heads parsed with hyper's rules, bodies handed to the service through hyper's `Incoming` channel (its
//! `100 Continue` sent when the body is first read), the request body read while the response is written,
//! pipelined requests answered in order, `Connection` and HTTP/1.0 keep-alive rules, upgrades (101, a
//! CONNECT's 2xx) handed over as hyper `Upgraded` with the bytes read past the head, a request whose body is
//! not read to its end closing the connection after its response, and a head that can't be parsed answered
//! with hopgate's page naming why (400, 414, 431). Timers and the drain stay in `conn::drive`.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::Body as _;
use hyper::body::{Incoming, Sender};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{ConnIo, ConnShared};
use super::log::LoggedBody;
use super::service::{self, ConnCtx};
use crate::error::{Error, Kind};
use crate::h1::chunked::{self, Decoded};
use crate::h1::io::{COPY_FRAME, Out, READ_BUF, give_buf, give_map, poll_fill, poll_fill_stamped, queue};
use crate::h1::request::{RequestHead, parse_request};
use crate::h1::response::{BodySize, Encoder, write_head};
use crate::h1::{BodyLen, HeadError};
use crate::heap;
use crate::http::pages;
use crate::limit::Throttled;
use crate::tunnel;

/// What a connection's requests are read and answered with.
pub struct Settings {
    pub max_headers: usize,
    /// The most bytes a head may fill before it is complete (431 past it).
    pub max_buf: usize,
}

/// A client connection.
pub struct Conn<S> {
    io: ConnIo<Throttled<S>>,
    /// Bytes read and not used yet; empty (and holding no memory) between requests.
    rbuf: BytesMut,
    shared: Arc<ConnShared>,
    ctx: Arc<ConnCtx>,
    settings: Settings,
    /// The socket is stamped (`crate::arrival`): reads from it as a plain socket say when their bytes arrived.
    stamped: bool,
    /// When the bytes of the last read arrived, if it said (a read from a stamped plain socket).
    arrival: Option<SystemTime>,
}

/// How a request's exchange left the connection.
enum Next {
    KeepAlive,
    Close,
    /// The response was a 101 or a CONNECT's 2xx (`connect`): the connection is the tunnel's now.
    Upgrade {
        pending: hyper::upgrade::Pending,
        connect: bool,
    },
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// `stamped`: the socket was `arrival::enable`d.
    pub fn new(
        io: ConnIo<Throttled<S>>,
        shared: Arc<ConnShared>,
        ctx: Arc<ConnCtx>,
        settings: Settings,
        stamped: bool,
    ) -> Conn<S> {
        Conn { io, rbuf: BytesMut::new(), shared, ctx, settings, stamped, arrival: None }
    }

    /// Serves requests until the client closes, a response ends the connection, the drain asks it to close
    /// between two requests, or it becomes a tunnel. Not an `async fn`: one would keep the connection twice in its
    /// state (as passed and where it is moved to), and that state is most of what an idle connection holds.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run(mut self) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut bad_head = None;
            loop {
                let head = match self.read_head().await {
                    Ok(Some(head)) => head,
                    Ok(None) => break,
                    Err(Failed::Io(e)) => return Err(e),
                    Err(Failed::Head(e)) => {
                        bad_head = Some(e);
                        break;
                    }
                };
                // Boxed (in place, one allocation): the service's future and the response's state live only as long
                // as the request, not as long as the connection.
                match heap::pinned!(self.exchange(head)).await? {
                    Next::KeepAlive => {
                        if self.rbuf.is_empty() {
                            give_buf(std::mem::take(&mut self.rbuf));
                        }
                    }
                    Next::Close => break,
                    Next::Upgrade { pending, connect } => {
                        // Bytes read past the head go with the connection in a buffer of their own size: the read
                        // buffer would otherwise live as long as the tunnel.
                        let mut rbuf = std::mem::take(&mut self.rbuf);
                        let rest = Bytes::copy_from_slice(&rbuf);
                        rbuf.clear();
                        give_buf(rbuf);
                        pending.fulfill(upgraded(self.io, rest, connect));
                        return Ok(());
                    }
                }
            }
            if let Some(e) = bad_head {
                // Boxed: a connection carries the largest state of its loop for its whole life.
                Box::pin(self.answer_bad_head(&e)).await;
            }
            let _ = self.io.shutdown().await;
            Ok(())
        }
    }

    /// Reads until a whole head is in the buffer. None: the client closed (or the drain asked to close) with no
    /// request begun.
    async fn read_head(&mut self) -> Result<Option<RequestHead>, Failed> {
        loop {
            if !self.rbuf.is_empty() {
                match parse_request(&mut self.rbuf, self.settings.max_headers) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) if self.rbuf.len() >= self.settings.max_buf => {
                        return Err(Failed::Head(HeadError::TooLarge));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failed::Head(e)),
                }
            }
            let begun = !self.rbuf.is_empty();
            let n = poll_fn(|cx| {
                if !begun && self.shared.close_asked() {
                    return Poll::Ready(Ok(0));
                }
                if self.stamped
                    && let Some((tcp, shared)) = self.io.plain_tcp()
                {
                    let (buf, at) = (&mut self.rbuf, &mut self.arrival);
                    return poll_fill_stamped(tcp, buf, READ_BUF, cx, at, |b| shared.on_read(b));
                }
                self.arrival = None;
                poll_fill(&mut self.io, &mut self.rbuf, READ_BUF, cx)
            })
            .await
            .map_err(Failed::Io)?;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// hyper's answer to a head it can't parse, as hopgate's page naming the cause; the connection then closes.
    async fn answer_bad_head(&mut self, e: &HeadError) {
        if !e.answered() {
            tracing::debug!(client = %self.ctx.client, "closing: {e}");
            return;
        }
        let kind = match e {
            HeadError::Malformed(_) | HeadError::Http2Preface => Kind::BadFraming,
            HeadError::UriTooLong => Kind::UriTooLong,
            HeadError::TooLarge => Kind::HeadTooLarge,
        };
        let reason = match e {
            HeadError::Malformed(why) => format!("malformed request: {why}"),
            other => other.to_string(),
        };
        tracing::info!(client = %self.ctx.client, "{}: {reason}", e.status());
        let (mut parts, body) = pages::error(&Error::client(kind, reason)).into_parts();
        let mut out = Vec::with_capacity(256);
        let size = match http_body::Body::size_hint(&body).exact() {
            Some(n) => BodySize::Known(n),
            None => BodySize::Unknown,
        };
        if write_head(&mut out, &mut parts, size, &Method::GET, false, false).is_ok() {
            if let crate::http::Body::Full(Some(b)) = body {
                out.extend_from_slice(&b);
            }
            let _ = self.io.write_all(&out).await;
        }
    }

    /// One request: the service called, its body fed from the connection, its response written.
    async fn exchange(&mut self, head: RequestHead) -> io::Result<Next> {
        let RequestHead { request, body, keep_alive, expect_continue, wants_upgrade, te_trailers } = head;
        let (parts, ()) = request.into_parts();
        // The head's bytes arrived by then. What the buffer holds after a body was read may have come from reads
        // that did not say when: the next head read from it has no arrival.
        let arrived = self.arrival;
        if !matches!(body, BodyLen::Zero | BodyLen::Close) {
            self.arrival = None;
        }
        let http10 = parts.version == Version::HTTP_10;
        let method = parts.method.clone();
        let (incoming, mut body_in) = match body {
            BodyLen::Length(n) => {
                let (tx, rx) = Incoming::channel_for(Some(n), expect_continue);
                (rx, Some(BodyIn::new(tx, Framing::Length(n), expect_continue)))
            }
            BodyLen::Chunked => {
                let (tx, rx) = Incoming::channel_for(None, expect_continue);
                let decoder = chunked::Decoder::new(self.settings.max_headers);
                (rx, Some(BodyIn::new(tx, Framing::Chunked(decoder), expect_continue)))
            }
            BodyLen::Zero | BodyLen::Close => (Incoming::none(), None),
        };
        let mut req = Request::from_parts(parts, incoming);
        let mut pending = None;
        if wants_upgrade {
            let (p, on) = hyper::upgrade::pending();
            req.extensions_mut().insert(on);
            pending = Some(p);
        }

        // The service runs while the request body is read into its channel.
        // In this future's state, which is boxed in place (`run`): one allocation per request for all of it.
        let fut = service::handle(req, self.ctx.clone());
        let mut fut = std::pin::pin!(fut);
        let resp: Response<LoggedBody> = poll_fn(|cx| {
            if let Poll::Ready(resp) = crate::arrival::during(arrived, || fut.as_mut().poll(cx)) {
                return Poll::Ready(Ok::<_, io::Error>(resp));
            }
            if let Some(b) = body_in.as_mut() {
                b.poll(cx, &mut self.io, &mut self.rbuf, true)?;
            }
            Poll::Pending
        })
        .await?;

        let (mut parts, body) = resp.into_parts();
        let size = if body.is_end_stream() {
            BodySize::Empty
        } else {
            match body.size_hint().exact() {
                Some(n) => BodySize::Known(n),
                None => BodySize::Unknown,
            }
        };
        let upgrading = pending.is_some()
            && (parts.status == http::StatusCode::SWITCHING_PROTOCOLS
                || (method == Method::CONNECT && parts.status.is_success()));
        // Room for the head and a small body copied beside it.
        let small = match size {
            BodySize::Known(n) if n <= COPY_FRAME as u64 => n as usize,
            _ => 0,
        };
        let mut out = Out::with_room(1024 + small);
        let written = match write_head(&mut out.pre, &mut parts, size, &method, http10, keep_alive) {
            Ok(w) => {
                // The head is written (its fields drained): the map goes back to the pool.
                give_map(std::mem::take(&mut parts.headers));
                w
            }
            Err(e) => {
                tracing::warn!(client = %self.ctx.client, "response head not written: {}", e.0);
                return Ok(Next::Close);
            }
        };
        // A body the head says is empty (HEAD, 204, 304, a CONNECT's 2xx) is dropped unread, as hyper did.
        let mut body = match written.encoder {
            Encoder::Length(0) => {
                drop(body);
                None
            }
            _ => Some(body),
        };
        let mut writer =
            Writer { encoder: written.encoder, done: body.is_none(), trailers: te_trailers, corked: false };
        poll_fn(|cx| {
            if let Some(b) = body_in.as_mut() {
                b.poll(cx, &mut self.io, &mut self.rbuf, false)?;
            }
            writer.poll(cx, &mut self.io, &mut out, &mut body)
        })
        .await?;

        if upgrading {
            return Ok(match pending {
                Some(pending) => Next::Upgrade { pending, connect: method == Method::CONNECT },
                None => Next::Close,
            });
        }
        drop(pending);
        // A request body not read to its end: what is already here is skipped; else the connection can't be
        // read any further.
        let body_done = match body_in.as_mut() {
            Some(b) => b.finish_from(&mut self.rbuf),
            None => true,
        };
        if !keep_alive || written.last || !body_done || self.shared.close_asked() {
            return Ok(Next::Close);
        }
        Ok(Next::KeepAlive)
    }
}

/// The connection as its tunnel gets it. A CONNECT's client on a plain socket held to no byte rate is handed
/// over as that socket ([`tunnel::PlainClient`]), so that the tunnel can splice it; anything else goes as it is.
fn upgraded<S>(io: ConnIo<Throttled<S>>, rest: Bytes, connect: bool) -> hyper::upgrade::Upgraded
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !connect {
        return hyper::upgrade::Upgraded::new(TokioIo::new(io), rest);
    }
    let (throttled, shared) = io.into_parts();
    let stream = match throttled.into_unthrottled() {
        Ok(stream) => stream,
        Err(throttled) => return hyper::upgrade::Upgraded::new(TokioIo::new(ConnIo::new(throttled, shared)), rest),
    };
    let any: Box<dyn Any> = Box::new(stream);
    match any.downcast::<TcpStream>() {
        Ok(tcp) => hyper::upgrade::Upgraded::new(tunnel::PlainClient::new(*tcp, Box::new(shared)), rest),
        Err(any) => match any.downcast::<S>() {
            Ok(stream) => {
                let io = ConnIo::new(Throttled::new(*stream, None), shared);
                hyper::upgrade::Upgraded::new(TokioIo::new(io), rest)
            }
            // Not possible (it was an S); a closed stream rather than a panic.
            Err(_) => hyper::upgrade::Upgraded::new(TokioIo::new(tokio::io::duplex(1).0), rest),
        },
    }
}

enum Failed {
    Io(io::Error),
    Head(HeadError),
}

/// How a request body is framed on the connection.
enum Framing {
    Length(u64),
    Chunked(chunked::Decoder),
}

/// A request body being read from the connection into the service's channel.
struct BodyIn {
    tx: Option<Sender>,
    framing: Framing,
    /// `Expect: 100-continue` not answered yet: the `100 Continue` goes out when the body is first read.
    continue_due: bool,
    /// How much of the `100 Continue` is written.
    continue_written: usize,
    /// The whole body has been read off the connection.
    done: bool,
    /// The body broke off or was malformed: the connection can't be read any further.
    broken: bool,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl BodyIn {
    fn new(tx: Sender, framing: Framing, continue_due: bool) -> BodyIn {
        BodyIn { tx: Some(tx), framing, continue_due, continue_written: 0, done: false, broken: false }
    }

    /// Moves the body along: reads and hands over what the channel takes. `before_response`: the response head
    /// is not written yet, so a `100 Continue` may still go out. Err only for a failed write of the 100.
    fn poll<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
        rbuf: &mut BytesMut,
        before_response: bool,
    ) -> io::Result<()> {
        loop {
            let Some(tx) = self.tx.as_mut() else { return Ok(()) };
            match tx.poll_ready(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(_)) => {
                    // The service let go of the body: nobody reads on.
                    self.tx = None;
                    return Ok(());
                }
                Poll::Ready(Ok(())) => {}
            }
            if self.continue_due {
                if !before_response {
                    self.continue_due = false;
                } else {
                    while self.continue_written < CONTINUE.len() {
                        match Pin::new(&mut *io).poll_write(cx, &CONTINUE[self.continue_written..]) {
                            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                            Poll::Ready(Ok(n)) => self.continue_written += n,
                            Poll::Ready(Err(e)) => return Err(e),
                            Poll::Pending => return Ok(()),
                        }
                    }
                    if Pin::new(&mut *io).poll_flush(cx)?.is_pending() {
                        return Ok(());
                    }
                    self.continue_due = false;
                }
            }
            match self.next_piece(rbuf) {
                Ok(Some(Piece::Data(data))) => {
                    if let Some(tx) = self.tx.as_mut() {
                        let _ = tx.try_send_data(data);
                    }
                    if self.done {
                        self.tx = None;
                    }
                }
                Ok(Some(Piece::End(trailers))) => {
                    if let (Some(tx), Some(t)) = (self.tx.as_mut(), trailers) {
                        let _ = tx.try_send_trailers(t);
                    }
                    self.tx = None;
                }
                Ok(None) => match poll_fill(io, rbuf, READ_BUF, cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Ok(0)) => {
                        self.fail("the client closed the connection before the request body was complete".into());
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => self.fail(Box::new(e)),
                },
                Err(e) => self.fail(Box::new(e)),
            }
        }
    }

    fn fail(&mut self, cause: Box<dyn std::error::Error + Send + Sync>) {
        self.broken = true;
        if let Some(mut tx) = self.tx.take() {
            tx.fail(cause);
        }
    }

    /// The next piece of the body already in `rbuf`; None: read more.
    fn next_piece(&mut self, rbuf: &mut BytesMut) -> Result<Option<Piece>, chunked::ChunkError> {
        match &mut self.framing {
            Framing::Length(left) => {
                if rbuf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rbuf.len());
                *left -= n as u64;
                self.done = *left == 0;
                Ok(Some(Piece::Data(rbuf.split_to(n).freeze())))
            }
            Framing::Chunked(d) => match d.decode(rbuf)? {
                Decoded::Data(b) => Ok(Some(Piece::Data(b))),
                Decoded::End(t) => {
                    self.done = true;
                    Ok(Some(Piece::End(t)))
                }
                Decoded::NeedMore => Ok(None),
            },
        }
    }

    /// Whether the body has been read off the connection by now, skipping what of it is already in `rbuf` when
    /// its reader let go of it (hyper drained what was there the same way).
    fn finish_from(&mut self, rbuf: &mut BytesMut) -> bool {
        if self.broken {
            return false;
        }
        while !self.done {
            match self.next_piece(rbuf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
        self.tx = None;
        true
    }
}

enum Piece {
    Data(Bytes),
    End(Option<HeaderMap>),
}

/// Writes a response body through its encoder.
struct Writer {
    encoder: Encoder,
    /// The client accepts trailer fields (`TE: trailers`).
    trailers: bool,
    /// The body has ended and its end is queued.
    done: bool,
    /// TCP_CORK is set while a file goes out with sendfile, so that the head and the file leave in full segments
    /// (nginx's `tcp_nopush`): measured, a 1 GiB file costs a quarter less CPU with it.
    corked: bool,
}

impl Writer {
    /// Writes the head and the body; Ready(Ok) once all is written and flushed. A body that fails, or does not
    /// match its declared length, ends the connection (Err): the client can tell the response is incomplete.
    fn poll<I: AsyncWrite + Unpin + SendFile>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
        out: &mut Out,
        body: &mut Option<LoggedBody>,
    ) -> Poll<io::Result<()>> {
        loop {
            // Gather what the body has ready while the queue has room, then write.
            let mut waiting = false;
            let mut direct = false;
            while !self.done && out.open() && out.pre.len() - out.pre_at < 64 * 1024 {
                let Some(b) = body.as_mut() else {
                    self.done = true;
                    break;
                };
                // A file of known length: small parts read straight into the queue, large ones sent by the kernel
                // from the page cache on a plain socket (sendfile), else polled as frames.
                if let Encoder::Length(left) = &mut self.encoder
                    && let Some(file) = b.file()
                    && let Some((_, _, part)) = file.file_part()
                {
                    if part <= COPY_FRAME as u64 {
                        let n = file.read_into(&mut out.pre, part.min(*left) as usize).map_err(body_failed)?;
                        *left -= n as u64;
                        self.done = *left == 0;
                        b.count(n as u64);
                        continue;
                    }
                    if let Some((tcp, _)) = io.plain_tcp() {
                        if !self.corked {
                            self.corked = set_cork(tcp, true);
                        }
                        direct = true;
                        break;
                    }
                }
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.data(out, data)?,
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.end(out, Some(trailers))?;
                                *body = None;
                            }
                        }
                    },
                    Poll::Ready(None) => {
                        self.end(out, None)?;
                        *body = None;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        *body = None;
                        return Poll::Ready(Err(body_failed(e)));
                    }
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
            ready!(out.poll_write(cx, io))?;
            if direct {
                ready!(self.poll_sendfile(cx, io, body))?;
                continue;
            }
            if waiting || !self.done {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                if waiting {
                    return Poll::Pending;
                }
                continue;
            }
            if self.corked {
                // Sends what the cork held back.
                if let Some((tcp, _)) = io.plain_tcp() {
                    set_cork(tcp, false);
                }
                self.corked = false;
            }
            return Pin::new(&mut *io).poll_flush(cx);
        }
    }

    /// Sends the file part in front of a file body with sendfile(2) until it is done (Ready(Ok)), the socket is
    /// full (Pending) or the send fails. A file that ends before its part does (it shrank) is an error.
    fn poll_sendfile<I: SendFile>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
        body: &mut Option<LoggedBody>,
    ) -> Poll<io::Result<()>> {
        loop {
            let (Some(b), Encoder::Length(left)) = (body.as_mut(), &mut self.encoder) else {
                return Poll::Ready(Ok(()));
            };
            let (Some(file), Some((tcp, shared))) = (b.file(), io.plain_tcp()) else {
                return Poll::Ready(Ok(()));
            };
            let Some((f, offset, part)) = file.file_part() else {
                return Poll::Ready(Ok(()));
            };
            let r = sendfile(tcp, cx, f, offset, part.min(*left));
            shared.on_write(&r);
            let n = ready!(r)?;
            file.advance(n as u64);
            b.count(n as u64);
            *left -= n as u64;
            if *left == 0 {
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // A client that reads as fast as the file is sent never fills the socket: the other connections of
            // this thread get their turn between chunks.
            if n as u64 == SENDFILE_CHUNK {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    fn data(&mut self, out: &mut Out, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.encoder {
            Encoder::Length(left) => {
                if data.len() as u64 > *left {
                    return Err(io::Error::other("response body longer than its Content-Length"));
                }
                *left -= data.len() as u64;
                if *left == 0 {
                    self.done = true;
                }
                queue(out, data, b"");
            }
            Encoder::Chunked { .. } => {
                chunked::size_line(&mut out.pre, data.len());
                queue(out, data, b"\r\n");
            }
            Encoder::Close => queue(out, data, b""),
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Out, trailers: Option<HeaderMap>) -> io::Result<()> {
        self.done = true;
        match &self.encoder {
            Encoder::Length(0) | Encoder::Close => Ok(()),
            Encoder::Length(_) => Err(io::Error::other("response body shorter than its Content-Length")),
            Encoder::Chunked { trailers: allowed } => {
                out.pre.extend_from_slice(b"0\r\n");
                if let (Some(t), Some(allowed), true) = (trailers, allowed, self.trailers) {
                    for (name, value) in t.iter().filter(|(n, _)| allowed.contains(n)) {
                        out.pre.extend_from_slice(name.as_str().as_bytes());
                        out.pre.extend_from_slice(b": ");
                        out.pre.extend_from_slice(value.as_bytes());
                        out.pre.extend_from_slice(b"\r\n");
                    }
                }
                out.pre.extend_from_slice(b"\r\n");
                Ok(())
            }
        }
    }
}

fn body_failed(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("response body failed: {e}"))
}

/// A client socket a file can be sent to with sendfile(2): a plain TCP socket held to no byte rate.
trait SendFile {
    /// The socket and what its writes are reported to; None when it is TLS or throttled.
    fn plain_tcp(&mut self) -> Option<(&TcpStream, &ConnShared)>;
}

impl<S: 'static> SendFile for ConnIo<Throttled<S>> {
    fn plain_tcp(&mut self) -> Option<(&TcpStream, &ConnShared)> {
        let (throttled, shared) = self.parts_mut();
        let stream: &mut dyn Any = throttled.unthrottled_mut()?;
        Some((stream.downcast_mut::<TcpStream>()?, shared))
    }
}

/// The most one sendfile(2) moves before the connection lets the thread's other connections run (nginx's
/// `sendfile_max_chunk`, 2 MiB by default): one call moving a fast reader's gigabyte would hold the thread for
/// tens of milliseconds.
const SENDFILE_CHUNK: u64 = 2 << 20;

/// Sets or clears TCP_CORK on the socket; whether it is set now. A socket that refuses stays as it was: the
/// bytes still go out, in smaller segments.
fn set_cork(tcp: &TcpStream, on: bool) -> bool {
    socket2::SockRef::from(tcp).set_tcp_cork(on).is_ok() && on
}

/// One sendfile(2) of up to `len` bytes of `file` from `offset` once the socket is writable: how many went.
fn sendfile(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> Poll<io::Result<usize>> {
    use std::os::fd::AsRawFd;
    let Ok(mut off) = libc::off_t::try_from(offset) else {
        return Poll::Ready(Err(io::Error::other("file offset out of range")));
    };
    let count = len.min(SENDFILE_CHUNK) as usize;
    let (sock, fd) = (tcp.as_raw_fd(), file.as_raw_fd());
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        // SAFETY: both descriptors are open for the call (the socket and the file are borrowed); `off` is a valid
        // offset the kernel reads and updates.
        let r =
            tcp.try_io(tokio::io::Interest::WRITABLE, || match unsafe { libc::sendfile(sock, fd, &mut off, count) } {
                n if n < 0 => Err(io::Error::last_os_error()),
                n => Ok(n as usize),
            });
        match r {
            Ok(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "response body failed: the file shrank while it was sent",
                )));
            }
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
