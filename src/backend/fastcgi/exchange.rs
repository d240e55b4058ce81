//! One FastCGI request in flight after BEGIN_REQUEST + PARAMS: a task feeds STDIN records from
//! the request body while this stream decodes the application's records and hands out STDOUT.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::pool::{Conn, Pool};
use super::{REQUEST_ID, record};
use crate::backend::meta::{FeedError, GatewayError, GatewayErrorKind, feed_body};
use crate::h1::io::READ_BUF;
use crate::idle::{Stamp, Timer};

/// The application's side of one request, as a stream of STDOUT content.
pub(crate) struct Exchange {
    /// `None` once the connection went back to the pool.
    reader: Option<ReadHalf<Conn>>,
    /// The write half, or the task feeding STDIN that yields it once the body and the empty STDIN record are sent.
    stdin: Option<Stdin>,
    pool: Option<Arc<Pool>>,
    /// What was read and not decoded yet: a buffer from the thread's pool while bytes wait (h1::io::poll_fill),
    /// none in between (a per-request buffer of its own cost an allocation large enough to consolidate malloc's
    /// free lists, and zeroing it, on every request).
    buf: BytesMut,
    /// Shared with the task feeding STDIN; silence counts only while this stream waits.
    timer: Timer,
    upstream: String,
    done: bool,
    /// The route's connection slot (`max_connections`), given back when the connection goes back to the pool or
    /// is closed.
    permit: Option<OwnedSemaphorePermit>,
}

/// Where the request's STDIN stands.
enum Stdin {
    /// A task feeds the body; it yields the write half once the empty STDIN record is out.
    Feeding(JoinHandle<Option<WriteHalf<Conn>>>),
    /// A request without a body: its empty STDIN record went out with PARAMS ([`Exchange::bodiless`]), so the
    /// connection can go back to the pool as soon as END_REQUEST arrives, with no task to wait for.
    Sent(WriteHalf<Conn>),
}

/// Where a connection belongs while a request uses it: its slot of the route's `max_connections`, and the pool
/// it goes back to after a clean end (None: FCGI_KEEP_CONN is off).
pub(crate) struct Lease {
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) pool: Option<Arc<Pool>>,
}

impl Exchange {
    /// Whether a request of `limit` body bytes has no body: then the caller sends the empty STDIN record with
    /// PARAMS, and [`Exchange::start`] feeds nothing.
    pub(crate) fn bodiless(limit: Option<u64>) -> bool {
        limit.unwrap_or(0) == 0
    }

    pub(crate) fn start<S, E>(
        conn: Conn,
        body: S,
        limit: Option<u64>,
        progress: Arc<Stamp>,
        timeout: Duration,
        lease: Lease,
        upstream: String,
    ) -> Exchange
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let (reader, writer) = tokio::io::split(conn);
        let stdin = if Exchange::bodiless(limit) {
            Stdin::Sent(writer)
        } else {
            Stdin::Feeding(tokio::spawn(feed_stdin(writer, body, limit, progress.clone(), upstream.clone())))
        };
        Exchange {
            reader: Some(reader),
            stdin: Some(stdin),
            pool: lease.pool,
            buf: BytesMut::new(),
            timer: Timer::shared(progress, timeout),
            upstream,
            done: false,
            permit: Some(lease.permit),
        }
    }

    fn fail(&mut self, e: GatewayError) -> Poll<Option<Result<Bytes, GatewayError>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }

    /// END_REQUEST arrived: keep the connection if the request ended cleanly and all of STDIN
    /// went out (otherwise stray STDIN records would meet the next request).
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.done = true;
        let (Some(pool), Some(stdin)) = (self.pool.take(), self.stdin.take()) else {
            return;
        };
        let writer = match stdin {
            Stdin::Sent(writer) => Some(writer),
            Stdin::Feeding(mut feeder) => match Pin::new(&mut feeder).poll(cx) {
                Poll::Ready(Ok(Some(writer))) => Some(writer),
                _ => {
                    feeder.abort();
                    None
                }
            },
        };
        if let (Some(writer), Some(reader), true) = (writer, self.reader.take(), self.buf.is_empty()) {
            pool.checkin(reader.unsplit(writer));
            crate::h1::io::give_buf(std::mem::take(&mut self.buf));
        }
        // The connection is idle in the pool (or closed): another request may take it.
        self.permit = None;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(Stdin::Feeding(f)) = self.stdin.take() {
            f.abort();
        }
    }
}

impl Stream for Exchange {
    type Item = Result<Bytes, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let rec = match record::decode(&mut this.buf) {
                Ok(Some(rec)) => rec,
                Ok(None) => {
                    let Some(reader) = this.reader.as_mut() else {
                        return Poll::Ready(None);
                    };
                    match crate::h1::io::poll_fill(reader, &mut this.buf, READ_BUF, cx) {
                        Poll::Ready(Ok(0)) => {
                            let e = GatewayError::new(
                                GatewayErrorKind::Closed,
                                format!("{} closed the connection before END_REQUEST", this.upstream),
                            );
                            return this.fail(e);
                        }
                        Poll::Ready(Ok(_)) => {
                            this.timer.touch();
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            let e = GatewayError::closed(format!("reading from {}", this.upstream), e);
                            return this.fail(e);
                        }
                        Poll::Pending => {
                            if this.timer.poll_wait(cx).is_pending() {
                                return Poll::Pending;
                            }
                            let e = GatewayError::timeout(format!("{} silent", this.upstream));
                            return this.fail(e);
                        }
                    }
                }
                Err(e) => return this.fail(e),
            };
            if rec.request_id != REQUEST_ID {
                let e = GatewayError::bad_response(format!("record for request {}", rec.request_id));
                return this.fail(e);
            }
            match rec.kind {
                // An empty STDOUT record ends the stream; END_REQUEST follows.
                record::STDOUT if rec.content.is_empty() => continue,
                record::STDOUT => return Poll::Ready(Some(Ok(rec.content))),
                record::STDERR => {
                    log_stderr(&this.upstream, &rec.content);
                    continue;
                }
                record::END_REQUEST => {
                    let end = match record::parse_end_request(&rec.content) {
                        Ok(end) => end,
                        Err(e) => return this.fail(e),
                    };
                    match end.protocol_status {
                        record::REQUEST_COMPLETE => {
                            this.finish(cx);
                            return Poll::Ready(None);
                        }
                        record::CANT_MPX_CONN | record::OVERLOADED => {
                            let e = GatewayError::unavailable(format!("{} is overloaded", this.upstream));
                            return this.fail(e);
                        }
                        other => {
                            let e = GatewayError::bad_response(format!(
                                "{} ended the request with protocol status {other}",
                                this.upstream
                            ));
                            return this.fail(e);
                        }
                    }
                }
                other => {
                    let e = GatewayError::bad_response(format!("unexpected record type {other}"));
                    return this.fail(e);
                }
            }
        }
    }
}

fn log_stderr(upstream: &str, content: &[u8]) {
    let text = String::from_utf8_lossy(content);
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        tracing::warn!(upstream = %upstream, "{line}");
    }
}

async fn feed_stdin<S, E>(
    mut writer: WriteHalf<Conn>,
    body: S,
    limit: Option<u64>,
    progress: Arc<Stamp>,
    upstream: String,
) -> Option<WriteHalf<Conn>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let fed = feed_body(&mut writer, body, &progress, limit, |chunk, out| {
        record::put_stream(out, record::STDIN, REQUEST_ID, &chunk);
    })
    .await;
    match fed {
        Ok(()) => {}
        Err(FeedError::Client(e)) => {
            tracing::debug!(upstream = %upstream, error = %e, "request body failed");
            return None;
        }
        Err(FeedError::Upstream(e)) => {
            tracing::debug!(upstream = %upstream, error = %e, "application stopped reading");
            return None;
        }
    }
    let mut end = BytesMut::new();
    record::put_record(&mut end, record::STDIN, REQUEST_ID, &[]);
    writer.write_all(&end).await.ok()?;
    progress.touch();
    Some(writer)
}
