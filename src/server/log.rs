//! The access log: one line per request, written when its response body has been sent (or abandoned):
//! `TIME CLIENT "METHOD TARGET VERSION" STATUS BYTES DURATIONms UPSTREAM`.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};

use super::conn::ConnShared;
use crate::config::AccessLog;
use crate::error::BoxError;
use crate::http::Body;

/// Where access-log lines go.
pub struct AccessLogger {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
}

impl AccessLogger {
    pub fn open(cfg: &AccessLog) -> std::io::Result<AccessLogger> {
        let sink: Option<Box<dyn Write + Send>> = match cfg {
            AccessLog::Off => None,
            AccessLog::Stdout => Some(Box::new(std::io::stdout())),
            AccessLog::File(p) => Some(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
        };
        Ok(AccessLogger { sink: sink.map(Mutex::new) })
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    fn write(&self, line: &str) {
        if let Some(sink) = &self.sink
            && let Ok(mut w) = sink.lock()
        {
            // A full disk or a closed stdout must not take requests down with it.
            let _ = w.write_all(line.as_bytes());
            let _ = w.flush();
        }
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
        if !complete {
            s.push_str(" aborted");
        }
        s.push('\n');
        s
    }
}

/// A response body that counts what it sends, writes the access-log line when it ends, and tells the
/// connection that its request is finished.
pub struct LoggedBody {
    inner: Body,
    bytes: u64,
    record: Option<Box<Record>>,
    log: Arc<AccessLogger>,
    conn: Arc<ConnShared>,
}

impl LoggedBody {
    pub fn new(inner: Body, record: Record, log: Arc<AccessLogger>, conn: Arc<ConnShared>) -> LoggedBody {
        LoggedBody { inner, bytes: 0, record: Some(Box::new(record)), log, conn }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(r) = self.record.take() {
            if self.log.enabled() {
                self.log.write(&r.line(self.bytes, complete));
            }
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
