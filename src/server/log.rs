//! The access log: one line per request, written when its response body has been sent (or abandoned):
//! `TIME CLIENT "METHOD TARGET VERSION" STATUS BYTES DURATIONms UPSTREAM`. A request that became a tunnel
//! (CONNECT, an upgrade) is written when the tunnel ends, with ` tunnel` or ` upgrade=PROTOCOL`, then
//! ` up=BYTES down=BYTES END` after it (BYTES is then the tunnel's bytes to the client).

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};

use super::conn::ConnShared;
use crate::config::AccessLog;
use crate::error::BoxError;
use crate::http::Body;
use crate::tunnel;

/// Most lines waiting for the writer thread; past it lines are dropped (and counted), never waited for.
pub const ACCESS_LOG_QUEUE_LINES: usize = 16 * 1024;

enum Msg {
    Line(String),
    /// Write out everything queued so far, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where access-log lines go: a writer thread of its own, so that a slow or stalled reader of stdout (or a slow
/// disk) never stalls serving; a full queue drops lines and says how many.
pub struct AccessLogger {
    tx: Option<SyncSender<Msg>>,
    dropped: AtomicU64,
}

impl AccessLogger {
    pub fn open(cfg: &AccessLog) -> std::io::Result<AccessLogger> {
        let sink: Box<dyn Write + Send> = match cfg {
            AccessLog::Off => return Ok(AccessLogger { tx: None, dropped: AtomicU64::new(0) }),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(ACCESS_LOG_QUEUE_LINES);
        std::thread::Builder::new().name("access-log".into()).spawn(move || write_lines(sink, rx))?;
        Ok(AccessLogger { tx: Some(tx), dropped: AtomicU64::new(0) })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    fn write(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(line))
            && self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000)
        {
            tracing::warn!("access log: the writer can't keep up (is stdout read?); lines are being dropped");
        }
    }

    /// Waits (up to a second) until every line queued so far is written: at exit.
    pub fn flush(&self) {
        self.flush_within(std::time::Duration::from_secs(1));
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!("access log: {dropped} lines were dropped because the writer could not keep up");
        }
    }

    /// Queues a flush and waits for it, `wait` at most in all: a full queue (a stalled stdout) can't hold up exit.
    fn flush_within(&self, wait: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let deadline = Instant::now() + wait;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut msg = Msg::Flush(done_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

impl Drop for AccessLogger {
    /// The last holder is gone (at exit, when the runtime drops what the drain cut off): lines queued since the
    /// last flush, such as those of tunnels cut at the end of the drain, go out too (a second at most).
    fn drop(&mut self) {
        self.flush_within(std::time::Duration::from_secs(1));
    }
}

/// The writer thread: writes lines as they come and flushes whenever the queue runs empty. A full disk or a closed
/// stdout loses lines, never requests.
fn write_lines(mut sink: Box<dyn Write + Send>, rx: Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    let _ = sink.write_all(line.as_bytes());
                }
                Msg::Flush(done) => {
                    let _ = sink.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = sink.flush();
    }
}

/// What the log line says about one request, filled in as the request is handled.
pub struct Record {
    pub client: SocketAddr,
    pub method: Method,
    pub target: http::Uri,
    pub version: Version,
    pub status: StatusCode,
    pub upstream: Option<String>,
    pub start: Instant,
}

impl Record {
    fn line(&self, bytes: u64, complete: bool) -> String {
        let mut s = self.prefix(bytes);
        if !complete {
            s.push_str(" aborted");
        }
        s.push('\n');
        s
    }

    /// The line of a request that became a tunnel, once the tunnel has ended.
    fn tunnel_line(&self, upgrade: Option<&str>, t: tunnel::Summary) -> String {
        let mut s = self.prefix(t.down);
        match upgrade {
            Some(p) => {
                let _ = write!(s, " upgrade={p}");
            }
            None => s.push_str(" tunnel"),
        }
        let _ = writeln!(s, " up={} down={} {}", t.up, t.down, t.end.as_str());
        s
    }

    /// Everything up to UPSTREAM.
    fn prefix(&self, bytes: u64) -> String {
        let mut s = String::with_capacity(160);
        let _ = write!(
            s,
            "{} {} \"{} {} {:?}\" {} {} {}ms {}",
            crate::date::rfc3339(SystemTime::now()),
            self.client,
            self.method,
            super::service::loggable_target(&self.target),
            self.version,
            self.status.as_u16(),
            bytes,
            self.start.elapsed().as_millis(),
            self.upstream.as_deref().unwrap_or("-"),
        );
        s
    }
}

/// A response body that counts what it sends, writes the access-log line when it ends (or hands it to the
/// tunnel the response opened), and tells the connection that its request is finished.
pub struct LoggedBody {
    inner: Body,
    bytes: u64,
    record: Option<Box<Record>>,
    /// The response opened a tunnel: its line waits for the tunnel's end.
    tunnel: Option<tunnel::Watch>,
    log: Arc<AccessLogger>,
    conn: Arc<ConnShared>,
}

impl LoggedBody {
    pub fn new(
        inner: Body,
        record: Record,
        tunnel: Option<tunnel::Watch>,
        log: Arc<AccessLogger>,
        conn: Arc<ConnShared>,
    ) -> LoggedBody {
        LoggedBody { inner, bytes: 0, record: Some(Box::new(record)), tunnel, log, conn }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(r) = self.record.take() {
            match self.tunnel.take() {
                Some(watch) if self.log.enabled() => {
                    let log = self.log.clone();
                    let upgrade = watch.upgrade().map(str::to_string);
                    watch.on_end(move |summary| log.write(r.tunnel_line(upgrade.as_deref(), summary)));
                }
                _ if self.log.enabled() => self.log.write(r.line(self.bytes, complete)),
                _ => {}
            }
            // The HTTP exchange is over; the tunnel, if any, is the connection's now.
            self.conn.request_finished();
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // hyper drops an empty body it never needed to poll (CONNECT 200, HEAD): that is complete, not aborted.
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(complete);
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
