//! Streamed bodies both ways: the response body handed to the HTTP side and the request body fed to the
//! upstream, both touching one idle timer (`crate::idle`) shared by the feeding task and the reader.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::error::GatewayError;
use crate::idle::{Stamp, Timer};

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send + Sync>>;

/// Bytes read from the upstream per chunk handed out.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A response body streamed from a script or application as it arrives. It is a `Stream` of
/// chunks and an `http_body::Body`. Dropping it early ends the upstream's work (kills the script's
/// process group, closes the connection). An `Err` item means the body was cut short: the HTTP side
/// aborts the response rather than ending it cleanly.
pub struct GatewayBody {
    first: Option<Bytes>,
    rest: Option<BoxStream>,
}

impl fmt::Debug for GatewayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBody")
            .field("first", &self.first.as_ref().map(Bytes::len))
            .field("ended", &self.rest.is_none())
            .finish()
    }
}

impl GatewayBody {
    pub(crate) fn new<S>(first: Bytes, rest: S) -> GatewayBody
    where
        S: Stream<Item = Result<Bytes, GatewayError>> + Send + Sync + 'static,
    {
        GatewayBody { first: (!first.is_empty()).then_some(first), rest: Some(Box::pin(rest)) }
    }

    pub fn empty() -> GatewayBody {
        GatewayBody { first: None, rest: None }
    }

    /// Reads the whole body into memory; for tests and small bodies only.
    pub async fn collect_bytes(mut self) -> Result<Bytes, GatewayError> {
        let mut all = BytesMut::new();
        while let Some(chunk) = self.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all.freeze())
    }
}

impl Stream for GatewayBody {
    type Item = Result<Bytes, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match ready!(rest.as_mut().poll_next(cx)) {
                Some(Ok(b)) if b.is_empty() => continue,
                Some(item) => return Poll::Ready(Some(item)),
                None => break,
            }
        }
        self.rest = None;
        Poll::Ready(None)
    }
}

impl http_body::Body for GatewayBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, GatewayError>>> {
        self.poll_next(cx).map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }
}

/// What an upstream reader's owner is told when reading stops.
pub(crate) trait ReadEnd: Send + Sync {
    /// `clean`: end of output reached; otherwise timeout or read error (the upstream is abandoned).
    fn end(&mut self, clean: bool);

    /// Why the output ended before its time, when its owner cut it (a CGI script killed past its total): its
    /// end is then an error, never the end of a complete response.
    fn cut(&self) -> Option<String> {
        None
    }
}

impl ReadEnd for () {
    fn end(&mut self, _clean: bool) {}
}

/// Raw bytes from an upstream (CGI stdout, an SCGI socket) as a stream of chunks, with the idle
/// timeout. `what` names the upstream in errors.
pub(crate) struct UpstreamReader<R, G> {
    reader: R,
    guard: G,
    /// Touched by the reader and by whoever feeds the request body: see [`UpstreamReader::new`].
    timer: Timer,
    buf: Vec<u8>,
    what: String,
    done: bool,
}

impl<R, G> UpstreamReader<R, G> {
    /// `timer`: shared with the task feeding the request body; silence counts only while this reader waits (time
    /// the HTTP side spends not asking for more is not the upstream's).
    pub(crate) fn new(reader: R, guard: G, timer: Timer, what: String) -> Self {
        UpstreamReader { reader, guard, timer, buf: vec![0; READ_CHUNK_BYTES], what, done: false }
    }
}

impl<R, G> Stream for UpstreamReader<R, G>
where
    R: AsyncRead + Unpin,
    G: ReadEnd + Unpin,
{
    type Item = Result<Bytes, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.reader).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    this.done = true;
                    if let Some(why) = this.guard.cut() {
                        this.guard.end(false);
                        return Poll::Ready(Some(Err(GatewayError::timeout(format!("{} {why}", this.what)))));
                    }
                    this.guard.end(true);
                    return Poll::Ready(None);
                }
                this.timer.touch();
                Poll::Ready(Some(Ok(Bytes::copy_from_slice(rb.filled()))))
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                this.guard.end(false);
                Poll::Ready(Some(Err(GatewayError::closed(format!("reading from {}", this.what), e))))
            }
            Poll::Pending => {
                ready!(this.timer.poll_wait(cx));
                this.done = true;
                this.guard.end(false);
                Poll::Ready(Some(Err(GatewayError::timeout(format!(
                    "{} silent for {:?}",
                    this.what,
                    this.timer.after()
                )))))
            }
        }
    }
}

/// Why feeding the request body stopped early.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// The request body stream failed (the client went away).
    Client(Box<dyn std::error::Error + Send + Sync>),
    /// Writing to the upstream failed (it stopped reading or closed).
    Upstream(std::io::Error),
}

/// Feeds the request body to the upstream as it comes, with back-pressure: one chunk is pulled
/// only after the previous one is written. `frame` turns a chunk into wire bytes (FastCGI wraps it
/// in STDIN records). At most `limit` body bytes are sent.
pub(crate) async fn feed_body<W, S, E>(
    w: &mut W,
    body: S,
    progress: &Stamp,
    limit: Option<u64>,
    mut frame: impl FnMut(Bytes, &mut BytesMut),
) -> Result<(), FeedError>
where
    W: AsyncWrite + Unpin,
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut left = limit.unwrap_or(u64::MAX);
    let mut out = BytesMut::new();
    while left > 0 {
        let Some(chunk) = body.next().await else {
            break;
        };
        let mut chunk = chunk.map_err(|e| FeedError::Client(e.into()))?;
        progress.touch();
        if chunk.is_empty() {
            continue;
        }
        if chunk.len() as u64 > left {
            chunk.truncate(usize::try_from(left).unwrap_or(usize::MAX));
        }
        left -= chunk.len() as u64;
        out.clear();
        frame(chunk, &mut out);
        w.write_all(&out).await.map_err(FeedError::Upstream)?;
        progress.touch();
    }
    Ok(())
}

/// Holds a request-body feeding task; dropping it aborts the task. Whatever the task returned
/// (e.g. an open write half) lives as long as the guard.
pub(crate) struct TaskGuard<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T: Send> ReadEnd for TaskGuard<T> {
    fn end(&mut self, _clean: bool) {}
}

impl<T> Drop for TaskGuard<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
