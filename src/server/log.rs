//! The access log: one line per request, written when its response body has been sent (or abandoned). The request
//! path fills in a [`Record`]; when the request ends, its task formats the line into the logger's buffer, in one
//! of four formats (docs/operations.md), and the writer thread writes the buffer out in blocks:
//! - `hopgate`: `TIME CLIENT "METHOD TARGET VERSION" STATUS BYTES DURATIONms UPSTREAM`; a request that became a
//!   tunnel (CONNECT, an upgrade) is written when the tunnel ends, with ` tunnel` or ` upgrade=PROTOCOL`, then
//!   ` up=BYTES down=BYTES END` after it (BYTES is then the tunnel's bytes to the client); ` aborted` ends the line
//!   of a response that was cut off.
//! - `common` and `combined`: Apache's formats, escaped as Apache escapes them.
//! - `json`: one object per line.
//!
//! A log file is reopened at its path when [`AccessLogger::reopen`] is called (SIGUSR1, after logrotate renamed
//! it): between two lines, so that none is lost or written twice.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Version, header};
use http_body::{Frame, SizeHint};

use super::conn::ConnShared;
use crate::config::{AccessLog, AccessLogFormat};
use crate::error::BoxError;
use crate::http::Body;
use crate::http::file::FileBody;
use crate::metrics::{ListenerMetrics, RouteMetrics, TunnelEntry};
use crate::tunnel;

/// Most bytes of formatted lines waiting for the writer thread (about 16,000 lines); past it lines are dropped (and
/// counted), never waited for.
pub const ACCESS_LOG_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Longest request target a log line carries; longer ones are cut (on a character boundary) and marked `...`.
pub const MAX_LOGGED_TARGET_BYTES: usize = 1024;

/// The writer wakes up as soon as this much is waiting...
const WRITE_OUT_BYTES: usize = 64 * 1024;

/// ...and otherwise this long after the first line of a batch: no line waits longer to be written.
pub const ACCESS_LOG_FLUSH: Duration = Duration::from_millis(100);

/// Where access-log lines go. A request's line is formatted by the task that finished it, straight into one shared
/// buffer (a lock held for the formatting only); a writer thread of its own takes the whole buffer and writes it
/// in one call when 64 KiB have collected or 0.1 s after the first line of a batch. So a line costs its formatting
/// and no thread hop, and a slow or stalled reader of stdout (or a slow disk) never stalls serving: past 4 MiB
/// waiting, lines are dropped and a warning says how many.
pub struct AccessLogger {
    shared: Option<Arc<Pending>>,
    dropped: AtomicU64,
    format: AccessLogFormat,
    /// A log file (that can be reopened at its path), not stdout.
    file: bool,
}

/// The lines waiting, and what the writer is asked to do.
struct Pending {
    state: Mutex<Queue>,
    /// The writer waits on it: the first line of a batch, a full batch, a flush or reopen, the end.
    wake: Condvar,
    /// Flushers wait on it for `written` to reach their ticket.
    written: Condvar,
}

#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    clock: Clock,
    /// When the oldest line waiting was added.
    since: Option<Instant>,
    /// Flush tickets: asked for, and done (every line queued before a ticket is written when it is done).
    asked: u64,
    done: u64,
    reopen: bool,
    closed: bool,
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // A panic while formatting leaves whole lines behind; the queue stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AccessLogger {
    pub fn open(cfg: &AccessLog, format: AccessLogFormat) -> std::io::Result<AccessLogger> {
        let sink = match cfg {
            AccessLog::Off => {
                return Ok(AccessLogger { shared: None, dropped: AtomicU64::new(0), format, file: false });
            }
            AccessLog::Stdout => Sink::Stdout(std::io::stdout()),
            AccessLog::File(p) => Sink::File { file: open_append(p)?, path: p.clone() },
        };
        let file = matches!(sink, Sink::File { .. });
        let shared = Arc::new(Pending {
            state: Mutex::new(Queue { buf: Vec::with_capacity(WRITE_OUT_BYTES), ..Queue::default() }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new().name("access-log".into()).spawn(move || write_lines(sink, &writer))?;
        Ok(AccessLogger { shared: Some(shared), dropped: AtomicU64::new(0), format, file })
    }

    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether lines need the request's Referer and User-Agent (`combined`).
    fn wants_agent(&self) -> bool {
        self.enabled() && self.format == AccessLogFormat::Combined
    }

    fn write(&self, record: Box<Record>) {
        let Some(shared) = &self.shared else { return };
        let mut q = lock(&shared.state);
        if q.buf.len() >= ACCESS_LOG_PENDING_BYTES {
            drop(q);
            if self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000) {
                tracing::warn!("access log: the writer can't keep up (is stdout read?); lines are being dropped");
            }
            return;
        }
        let before = q.buf.len();
        let q = &mut *q;
        record.format(self.format, &mut q.clock, &mut q.buf);
        if before == 0 {
            // The writer sleeps until a batch begins, then gives it ACCESS_LOG_FLUSH to fill.
            q.since = Some(Instant::now());
            shared.wake.notify_one();
        } else if before < WRITE_OUT_BYTES && q.buf.len() >= WRITE_OUT_BYTES {
            // The line that fills a batch wakes the writer early (once).
            shared.wake.notify_one();
        }
    }

    /// The line of a connection that was no HTTP request (an intercepted TLS connection, spliced or refused):
    /// written when `tunnel` ends, with its bytes each way, or now without one. It counts as its route's request
    /// (`record.metrics`) and, while `tunnel` is open, as one of `listener`'s tunnels.
    pub fn connection(
        self: &Arc<Self>,
        mut record: Record,
        tunnel: Option<tunnel::Watch>,
        listener: &Arc<ListenerMetrics>,
    ) {
        if let Some(m) = &record.metrics {
            m.request_done(record.status.as_u16(), record.start.elapsed());
        }
        match tunnel {
            Some(watch) => {
                let counted = count_tunnel(listener, &record, &watch);
                let log = self.enabled().then(|| self.clone());
                watch.on_end(move |summary| {
                    drop(counted);
                    if let Some(log) = log {
                        record.tunnel = Some(TunnelEnd { upgrade: None, summary });
                        record.end(summary.down, true);
                        log.write(Box::new(record));
                    }
                });
            }
            None if self.enabled() => {
                record.end(0, true);
                self.write(Box::new(record));
            }
            None => {}
        }
    }

    /// Has the writer close and reopen the log file at its path (create, append) between two lines: lines written
    /// until then stay in the file as it was (renamed by logrotate, say), the next ones go to the new one. False
    /// when the log is no file (stdout, off): nothing to do.
    pub fn reopen(&self) -> bool {
        let Some(shared) = self.shared.as_ref().filter(|_| self.file) else { return false };
        lock(&shared.state).reopen = true;
        shared.wake.notify_one();
        true
    }

    /// Waits (up to a second) until every line queued so far is written: at exit.
    pub fn flush(&self) {
        self.flush_within(Duration::from_secs(1));
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!("access log: {dropped} lines were dropped because the writer could not keep up");
        }
    }

    /// Asks the writer to write out everything queued so far and waits for it, `wait` at most: a stalled stdout
    /// can't hold up exit.
    fn flush_within(&self, wait: Duration) {
        let Some(shared) = &self.shared else { return };
        let deadline = Instant::now() + wait;
        let mut q = lock(&shared.state);
        q.asked += 1;
        let ticket = q.asked;
        shared.wake.notify_one();
        while q.done < ticket && !q.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            q = shared.written.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for AccessLogger {
    /// The last holder is gone (at exit, when the runtime drops what the drain cut off): lines queued since the
    /// last flush, such as those of tunnels cut at the end of the drain, go out too (a second at most); then the
    /// writer thread ends.
    fn drop(&mut self) {
        self.flush_within(Duration::from_secs(1));
        if let Some(shared) = &self.shared {
            lock(&shared.state).closed = true;
            shared.wake.notify_one();
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

enum Sink {
    Stdout(std::io::Stdout),
    File { file: std::fs::File, path: PathBuf },
}

impl Sink {
    /// Writes out the lines collected in `buf` (whole lines only). A full disk or a closed stdout loses lines,
    /// never requests.
    fn write_out(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let _ = match self {
            Sink::Stdout(out) => out.lock().write_all(buf),
            Sink::File { file, .. } => file.write_all(buf),
        };
        buf.clear();
    }

    fn flush(&mut self) {
        if let Sink::Stdout(out) = self {
            let _ = out.flush();
        }
    }

    /// Opens the path again; the file open until now is closed. If it can't be opened, lines go on to the file
    /// open until now (it may have been renamed) rather than nowhere.
    fn reopen(&mut self) {
        let Sink::File { file, path } = self else { return };
        match open_append(path) {
            Ok(f) => {
                *file = f;
                tracing::info!("access log: reopened {}", path.display());
            }
            Err(e) => tracing::warn!(
                "access log: cannot reopen {}: {e}; lines go on to the file open until now",
                path.display()
            ),
        }
    }
}

/// The writer thread: sleeps until a batch of lines begins, lets it collect for ACCESS_LOG_FLUSH (or until 64 KiB,
/// a flush or a reopen), then takes the whole buffer and writes it in one call; reopens the file between two
/// batches when asked to.
fn write_lines(mut sink: Sink, shared: &Pending) {
    let mut out = Vec::with_capacity(WRITE_OUT_BYTES);
    let mut q = lock(&shared.state);
    loop {
        let due = q.since.map(|t| t + ACCESS_LOG_FLUSH);
        let now = Instant::now();
        let ready =
            q.asked > q.done || q.reopen || q.closed || q.buf.len() >= WRITE_OUT_BYTES || due.is_some_and(|d| d <= now);
        if !ready {
            q = match due {
                Some(d) => shared.wake.wait_timeout(q, d - now).unwrap_or_else(|e| e.into_inner()).0,
                None => shared.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
            };
            continue;
        }
        std::mem::swap(&mut q.buf, &mut out);
        q.since = None;
        let (ticket, reopen, closed) = (q.asked, std::mem::take(&mut q.reopen), q.closed);
        drop(q);
        // Lines queued before a reopen go to the file open until now.
        sink.write_out(&mut out);
        sink.flush();
        if reopen {
            sink.reopen();
        }
        // A burst can grow the buffer; don't keep more than a batch's worth once it is written.
        if out.capacity() > 4 * WRITE_OUT_BYTES {
            out = Vec::with_capacity(WRITE_OUT_BYTES);
        }
        q = lock(&shared.state);
        q.done = q.done.max(ticket);
        shared.written.notify_all();
        if closed && q.buf.is_empty() {
            return;
        }
    }
}

/// Timestamps as text, made once per second.
#[derive(Default)]
struct Clock {
    rfc3339: Option<(u64, String)>,
    clf: Option<(u64, String)>,
}

impl Clock {
    fn cached(slot: &mut Option<(u64, String)>, t: SystemTime, make: fn(SystemTime) -> String) -> &str {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if slot.as_ref().is_none_or(|(s, _)| *s != secs) {
            *slot = Some((secs, make(t)));
        }
        slot.as_ref().map_or("", |(_, text)| text.as_str())
    }

    fn rfc3339(&mut self, t: SystemTime) -> &str {
        Clock::cached(&mut self.rfc3339, t, crate::date::rfc3339)
    }

    fn clf(&mut self, t: SystemTime) -> &str {
        Clock::cached(&mut self.clf, t, crate::date::clf)
    }
}

/// What the log line says about one request, filled in as the request is handled and formatted when it ends.
pub struct Record {
    pub client: SocketAddr,
    pub method: Method,
    /// Formatted (passwords masked) only when a line is written: cloning a Uri shares its bytes.
    pub target: http::Uri,
    pub version: Version,
    pub status: StatusCode,
    pub upstream: Option<SocketAddr>,
    /// The name of the route that took the request (None: refused before one was picked).
    pub route: Option<Arc<str>>,
    /// The user a `Proxy-Authorization: Basic` check accepted.
    pub user: Option<Box<str>>,
    /// What the request counts for: its route's (or the listener's unrouted) metrics.
    pub metrics: Option<Arc<RouteMetrics>>,
    /// `combined` only: the request's Referer and User-Agent.
    referer: Option<HeaderValue>,
    agent: Option<HeaderValue>,
    start: Instant,
    // What the end of the response (or of its tunnel) adds:
    bytes: u64,
    complete: bool,
    tunnel: Option<TunnelEnd>,
    ended: SystemTime,
    elapsed: Duration,
}

/// How the tunnel a response opened ended.
struct TunnelEnd {
    upgrade: Option<String>,
    summary: tunnel::Summary,
}

impl Record {
    /// The record of `req`, received now from `client`.
    pub fn new<B>(client: SocketAddr, req: &Request<B>, log: &AccessLogger) -> Record {
        let agent = log.wants_agent();
        let field = |name| if agent { req.headers().get(name).cloned() } else { None };
        Record {
            client,
            method: req.method().clone(),
            target: req.uri().clone(),
            version: req.version(),
            status: StatusCode::OK,
            upstream: None,
            route: None,
            user: None,
            metrics: None,
            referer: field(header::REFERER),
            agent: field(header::USER_AGENT),
            start: Instant::now(),
            bytes: 0,
            complete: true,
            tunnel: None,
            ended: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
        }
    }

    /// The response (or its tunnel) is over: `bytes` went to the client.
    fn end(&mut self, bytes: u64, complete: bool) {
        self.bytes = bytes;
        self.complete = complete;
        self.elapsed = self.start.elapsed();
        self.ended = SystemTime::now();
    }

    /// When the request was received (Apache's `%t`, JSON's `time`).
    fn received(&self) -> SystemTime {
        self.ended.checked_sub(self.elapsed).unwrap_or(self.ended)
    }

    fn format(&self, format: AccessLogFormat, clock: &mut Clock, out: &mut Vec<u8>) {
        match format {
            AccessLogFormat::Hopgate => self.hopgate(clock, out),
            AccessLogFormat::Common => self.apache(clock, out, false),
            AccessLogFormat::Combined => self.apache(clock, out, true),
            AccessLogFormat::Json => self.json(clock, out),
        }
    }

    /// `TIME CLIENT "METHOD TARGET VERSION" STATUS BYTES DURATIONms UPSTREAM`, then the tunnel or ` aborted`.
    fn hopgate(&self, clock: &mut Clock, out: &mut Vec<u8>) {
        out.extend_from_slice(clock.rfc3339(self.ended).as_bytes());
        out.push(b' ');
        push_socket_addr(out, self.client);
        out.extend_from_slice(b" \"");
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        push_target(out, &self.target);
        out.push(b' ');
        push_version(out, self.version);
        out.extend_from_slice(b"\" ");
        push_u64(out, u64::from(self.status.as_u16()));
        out.push(b' ');
        push_u64(out, self.bytes);
        out.push(b' ');
        push_u64(out, self.elapsed.as_millis() as u64);
        out.extend_from_slice(b"ms ");
        match self.upstream {
            Some(a) => push_socket_addr(out, a),
            None => out.push(b'-'),
        }
        match &self.tunnel {
            Some(t) => {
                match &t.upgrade {
                    Some(p) => {
                        out.extend_from_slice(b" upgrade=");
                        out.extend_from_slice(p.as_bytes());
                    }
                    None => out.extend_from_slice(b" tunnel"),
                }
                out.extend_from_slice(b" up=");
                push_u64(out, t.summary.up);
                out.extend_from_slice(b" down=");
                push_u64(out, t.summary.down);
                out.push(b' ');
                out.extend_from_slice(t.summary.end.as_str().as_bytes());
            }
            None if !self.complete => out.extend_from_slice(b" aborted"),
            None => {}
        }
        if let Some(user) = &self.user {
            // The proxy-authenticated user, last: bare when it is one visible word, else quoted and escaped.
            out.extend_from_slice(b" user=");
            let bare = !user.is_empty() && user.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if bare {
                out.extend_from_slice(user.as_bytes());
            } else {
                out.push(b'"');
                push_apache_escaped(out, user.as_bytes());
                out.push(b'"');
            }
        }
        out.push(b'\n');
    }

    /// Apache's `%h %l %u %t "%r" %>s %b`, and for `combined` ` "%{Referer}i" "%{User-agent}i"`.
    fn apache(&self, clock: &mut Clock, out: &mut Vec<u8>, combined: bool) {
        push_ip(out, self.client.ip());
        out.extend_from_slice(b" - ");
        match self.user.as_deref() {
            None => out.push(b'-'),
            // What Apache writes for an empty user (an htpasswd file has none, so this does not happen).
            Some("") => out.extend_from_slice(b"\"\""),
            Some(u) => push_apache_escaped(out, u.as_bytes()),
        }
        out.extend_from_slice(b" [");
        out.extend_from_slice(clock.clf(self.received()).as_bytes());
        out.extend_from_slice(b"] \"");
        push_apache_escaped(out, self.method.as_str().as_bytes());
        out.push(b' ');
        let mut target = Vec::new();
        self.push_target_as_sent(&mut target);
        push_apache_escaped(out, &target);
        out.push(b' ');
        push_version(out, self.version);
        out.extend_from_slice(b"\" ");
        push_u64(out, u64::from(self.status.as_u16()));
        out.push(b' ');
        match self.bytes {
            0 => out.push(b'-'),
            n => push_u64(out, n),
        }
        if combined {
            for field in [&self.referer, &self.agent] {
                out.extend_from_slice(b" \"");
                match field {
                    Some(v) => push_apache_escaped(out, v.as_bytes()),
                    None => out.push(b'-'),
                }
                out.push(b'"');
            }
        }
        out.push(b'\n');
    }

    /// One JSON object: the documented keys in a fixed order; a tunnel adds `up`, `down`, `end` (and `upgrade`).
    fn json(&self, clock: &mut Clock, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(clock.rfc3339(self.received()).as_bytes());
        out.extend_from_slice(b"\",\"client\":\"");
        push_ip(out, self.client.ip());
        out.extend_from_slice(b"\",\"user\":");
        push_json_or_null(out, self.user.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"method\":");
        push_json_string(out, self.method.as_str().as_bytes());
        out.extend_from_slice(b",\"target\":");
        let mut target = Vec::new();
        self.push_target_as_sent(&mut target);
        push_json_string(out, &target);
        out.extend_from_slice(b",\"version\":\"");
        push_version(out, self.version);
        out.extend_from_slice(b"\",\"status\":");
        push_u64(out, u64::from(self.status.as_u16()));
        out.extend_from_slice(b",\"bytes\":");
        push_u64(out, self.bytes);
        out.extend_from_slice(b",\"duration_ms\":");
        push_u64(out, self.elapsed.as_millis() as u64);
        out.extend_from_slice(b",\"upstream\":");
        match self.upstream {
            Some(a) => {
                out.push(b'"');
                push_socket_addr(out, a);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"route\":");
        push_json_or_null(out, self.route.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"aborted\":");
        let aborted = match &self.tunnel {
            // A tunnel that ended by itself (both sides closed) or sat idle is complete.
            Some(t) => !matches!(t.summary.end, tunnel::End::Closed | tunnel::End::Idle),
            None => !self.complete,
        };
        out.extend_from_slice(if aborted { b"true" } else { b"false" });
        if let Some(t) = &self.tunnel {
            out.extend_from_slice(b",\"up\":");
            push_u64(out, t.summary.up);
            out.extend_from_slice(b",\"down\":");
            push_u64(out, t.summary.down);
            out.extend_from_slice(b",\"end\":\"");
            out.extend_from_slice(t.summary.end.as_str().as_bytes());
            out.push(b'"');
            if let Some(p) = &t.upgrade {
                out.extend_from_slice(b",\"upgrade\":");
                push_json_string(out, p.as_bytes());
            }
        }
        out.extend_from_slice(b"}\n");
    }

    /// The request target as the client sent it (Apache's `%r`): HTTP/1 requests their target (absolute-form
    /// through the proxy, origin-form to a gateway), HTTP/2 requests their `:path` (CONNECT: `:authority`).
    /// Passwords masked, cut at [`MAX_LOGGED_TARGET_BYTES`].
    fn push_target_as_sent(&self, out: &mut Vec<u8>) {
        if self.version != Version::HTTP_2 {
            return push_target(out, &self.target);
        }
        let start = out.len();
        match (&self.method, self.target.authority()) {
            (&Method::CONNECT, Some(a)) => push_masked_authority(out, a.as_str()),
            _ => out.extend_from_slice(self.target.path_and_query().map_or("/", |p| p.as_str()).as_bytes()),
        }
        cut(out, start);
    }
}

/// The request target for logs: as the URI reads (`uri.to_string()`), with a password in the userinfo
/// (`ftp://user:pass@host/`) replaced by `***` and a huge target cut to [`MAX_LOGGED_TARGET_BYTES`] plus `...`.
pub fn push_target(out: &mut Vec<u8>, uri: &http::Uri) {
    let start = out.len();
    if let Some(scheme) = uri.scheme_str() {
        out.extend_from_slice(scheme.as_bytes());
        out.extend_from_slice(b"://");
    }
    if let Some(a) = uri.authority() {
        push_masked_authority(out, a.as_str());
    }
    out.extend_from_slice(uri.path().as_bytes());
    if let Some(q) = uri.query() {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    cut(out, start);
}

/// [`push_target`] as text, for diagnostics.
pub fn loggable_target(uri: &http::Uri) -> String {
    let mut out = Vec::with_capacity(64);
    push_target(&mut out, uri);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `user:***@host`: a password never reaches a log.
fn push_masked_authority(out: &mut Vec<u8>, authority: &str) {
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            out.extend_from_slice(user.as_bytes());
            out.extend_from_slice(b":***@");
            out.extend_from_slice(host.as_bytes());
        }
        _ => out.extend_from_slice(authority.as_bytes()),
    }
}

/// Cuts what was written since `start` to [`MAX_LOGGED_TARGET_BYTES`], on a UTF-8 character boundary (a path may
/// hold UTF-8), and marks the cut with `...`.
fn cut(out: &mut Vec<u8>, start: usize) {
    if out.len() - start <= MAX_LOGGED_TARGET_BYTES {
        return;
    }
    let mut end = start + MAX_LOGGED_TARGET_BYTES;
    while end > start && out[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    out.truncate(end);
    out.extend_from_slice(b"...");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `IP:PORT` or `[IPv6]:PORT`, as `SocketAddr` displays it.
fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `HTTP/1.1`, `HTTP/2.0` (as Apache writes HTTP/2)...
fn push_version(out: &mut Vec<u8>, v: Version) {
    let text = match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        other => {
            let _ = write!(out, "{other:?}");
            return;
        }
    };
    out.extend_from_slice(text.as_bytes());
}

/// Apache's escaping of a log item (`ap_escape_logitem`): `"` and `\` get a backslash, `\b \n \r \t \v` their
/// C escapes, every other control character and every byte above 126 `\xhh` (lowercase); so no client-sent
/// byte can end a field or a line.
fn push_apache_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            8 => out.extend_from_slice(b"\\b"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            11 => out.extend_from_slice(b"\\v"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

/// A JSON string (RFC 8259 §7): `"` and `\` escaped, control characters as `\n`, `\t`... or `\u00hh`, DEL as
/// `\u007f`; UTF-8 kept as it is; bytes that are not UTF-8 become U+FFFD, so the line stays valid JSON.
fn push_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                8 => out.extend_from_slice(b"\\b"),
                12 => out.extend_from_slice(b"\\f"),
                0..0x20 | 0x7f => {
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                }
                _ => out.push(b),
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

fn push_json_or_null(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(s) => push_json_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A response body that counts what it sends, queues the access-log record when it ends (or hands it to the
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

    /// The file a file body sends from, for a connection that writes it without polling frames (sendfile, or
    /// reads straight into its write queue); what it writes so is counted with [`LoggedBody::count`].
    pub fn file(&mut self) -> Option<&mut FileBody> {
        match &mut self.inner {
            Body::File(f) => Some(f),
            _ => None,
        }
    }

    /// `n` bytes of the body went out without a frame.
    pub fn count(&mut self, n: u64) {
        self.bytes += n;
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut r) = self.record.take() {
            if let Some(m) = &r.metrics {
                m.request_done(r.status.as_u16(), r.start.elapsed());
            }
            match self.tunnel.take() {
                Some(watch) => {
                    let counted = self.conn.metrics().map(|m| count_tunnel(m, &r, &watch));
                    let log = self.log.enabled().then(|| self.log.clone());
                    let upgrade = watch.upgrade().map(str::to_string);
                    watch.on_end(move |summary| {
                        drop(counted);
                        if let Some(log) = log {
                            r.tunnel = Some(TunnelEnd { upgrade, summary });
                            r.end(summary.down, true);
                            log.write(r);
                        }
                    });
                }
                _ if self.log.enabled() => {
                    r.end(self.bytes, complete);
                    self.log.write(r);
                }
                _ => {}
            }
            // The HTTP exchange is over; the tunnel, if any, is the connection's now.
            self.conn.request_finished();
        }
    }
}

/// A tunnel counted open (`tunnels_open`, the stats page's table) until dropped; its bytes count into
/// `tunnel_bytes_total` as they move.
struct CountedTunnel {
    open: prometheus_client::metrics::gauge::Gauge,
    _listed: TunnelEntry,
}

impl Drop for CountedTunnel {
    fn drop(&mut self) {
        self.open.dec();
    }
}

fn count_tunnel(m: &Arc<ListenerMetrics>, r: &Record, watch: &tunnel::Watch) -> CountedTunnel {
    let target = match watch.upgrade() {
        Some(protocol) => format!("{} ({protocol})", loggable_target(&r.target)),
        None => loggable_target(&r.target),
    };
    let listed = m.tunnels.open(&m.name, r.client, target);
    let (info, up, down) = (listed.info.clone(), m.tunnel_up.clone(), m.tunnel_down.clone());
    watch.on_progress(move |u, d| {
        up.inc_by(u);
        down.inc_by(d);
        info.up.fetch_add(u, Ordering::Relaxed);
        info.down.fetch_add(d, Ordering::Relaxed);
    });
    m.tunnels_open.inc();
    CountedTunnel { open: m.tunnels_open.clone(), _listed: listed }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(method: Method, uri: &str, version: Version) -> Record {
        let req = Request::builder().method(method).uri(uri).version(version).body(()).unwrap();
        let log = AccessLogger::open(&AccessLog::Off, AccessLogFormat::Hopgate).unwrap();
        let mut r = Record::new("127.0.0.1:5000".parse().unwrap(), &req, &log);
        r.ended = SystemTime::UNIX_EPOCH + Duration::from_secs(971_211_336);
        r.elapsed = Duration::from_millis(1500);
        r
    }

    fn line(r: &Record, format: AccessLogFormat) -> String {
        let mut out = Vec::new();
        r.format(format, &mut Clock::default(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        let uri: http::Uri = "ftp://bob:s3cret@ftp.example.org/pub/".parse().unwrap();
        assert_eq!(loggable_target(&uri), "ftp://bob:***@ftp.example.org/pub/");
        let uri: http::Uri = "http://p:@example.org/".parse().unwrap();
        assert_eq!(loggable_target(&uri), "http://p:***@example.org/");
        // The mask goes where the userinfo is, not where its text first occurs (`p:` is also in `ftp:`; found by
        // the fuzz target host).
        let uri: http::Uri = "ftp://p:@ftp.example.org/".parse().unwrap();
        assert_eq!(loggable_target(&uri), "ftp://p:***@ftp.example.org/");
        let uri: http::Uri = "http://example.org/a?b".parse().unwrap();
        assert_eq!(loggable_target(&uri), "http://example.org/a?b");
        let uri: http::Uri = "example.org:443".parse().unwrap();
        assert_eq!(loggable_target(&uri), "example.org:443");
        let uri: http::Uri = format!("http://example.org/{}", "x".repeat(5000)).parse().unwrap();
        assert_eq!(loggable_target(&uri).len(), MAX_LOGGED_TARGET_BYTES + 3);
        // Cut before a character that does not fit whole.
        let uri: http::Uri = format!("/{}\u{e9}", "x".repeat(MAX_LOGGED_TARGET_BYTES - 1)).parse().unwrap();
        assert_eq!(loggable_target(&uri), format!("/{}...", "x".repeat(MAX_LOGGED_TARGET_BYTES - 1)));
    }

    #[test]
    fn each_format() {
        let mut r = record(Method::GET, "/a\"b?c=1", Version::HTTP_11);
        r.bytes = 6;
        r.upstream = Some("10.0.0.1:80".parse().unwrap());
        r.route = Some(Arc::from("app"));
        assert_eq!(
            line(&r, AccessLogFormat::Hopgate),
            "2000-10-10T20:55:36Z 127.0.0.1:5000 \"GET /a\"b?c=1 HTTP/1.1\" 200 6 1500ms 10.0.0.1:80\n"
        );
        assert_eq!(
            line(&r, AccessLogFormat::Common),
            "127.0.0.1 - - [10/Oct/2000:20:55:34 +0000] \"GET /a\\\"b?c=1 HTTP/1.1\" 200 6\n"
        );
        r.agent = Some(HeaderValue::from_bytes(b"a\tb\xe9\\").unwrap());
        r.user = Some("ann".into());
        r.bytes = 0;
        assert_eq!(
            line(&r, AccessLogFormat::Combined),
            "127.0.0.1 - ann [10/Oct/2000:20:55:34 +0000] \"GET /a\\\"b?c=1 HTTP/1.1\" 200 - \"-\" \"a\\tb\\xe9\\\\\"\n"
        );
        assert_eq!(
            line(&r, AccessLogFormat::Json),
            "{\"time\":\"2000-10-10T20:55:34Z\",\"client\":\"127.0.0.1\",\"user\":\"ann\",\"method\":\"GET\",\
             \"target\":\"/a\\\"b?c=1\",\"version\":\"HTTP/1.1\",\"status\":200,\"bytes\":0,\"duration_ms\":1500,\
             \"upstream\":\"10.0.0.1:80\",\"route\":\"app\",\"aborted\":false}\n"
        );
    }

    #[test]
    fn http2_targets_are_the_path() {
        let r = record(Method::GET, "https://a.example/x?y", Version::HTTP_2);
        assert!(line(&r, AccessLogFormat::Common).contains("\"GET /x?y HTTP/2.0\""));
        assert!(line(&r, AccessLogFormat::Hopgate).contains("\"GET https://a.example/x?y HTTP/2.0\""));
        let r = record(Method::CONNECT, "a.example:443", Version::HTTP_2);
        assert!(line(&r, AccessLogFormat::Json).contains("\"target\":\"a.example:443\""));
    }

    #[test]
    fn tunnels() {
        let mut r = record(Method::CONNECT, "a.example:443", Version::HTTP_11);
        let summary = tunnel::Summary { up: 3, down: 4, end: tunnel::End::Failed };
        r.tunnel = Some(TunnelEnd { upgrade: None, summary });
        r.bytes = 4;
        assert!(line(&r, AccessLogFormat::Hopgate).ends_with(" - tunnel up=3 down=4 failed\n"));
        assert!(
            line(&r, AccessLogFormat::Json).ends_with(",\"aborted\":true,\"up\":3,\"down\":4,\"end\":\"failed\"}\n")
        );
        r.tunnel = Some(TunnelEnd { upgrade: Some("websocket".into()), summary });
        assert!(line(&r, AccessLogFormat::Hopgate).ends_with(" - upgrade=websocket up=3 down=4 failed\n"));
        assert!(line(&r, AccessLogFormat::Json).ends_with(",\"end\":\"failed\",\"upgrade\":\"websocket\"}\n"));
    }

    #[test]
    fn escapes() {
        let mut out = Vec::new();
        push_json_string(&mut out, b"a\"\\\n\x01\x7f\xc3\xa9\xff z");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"\\\\\\n\\u0001\\u007f\u{e9}\u{fffd} z\"");
        let mut out = Vec::new();
        push_apache_escaped(&mut out, b"a\"\\\n\x01\x7f\xc3\xa9\x0b\x08 z");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"\\\\\\n\\x01\\x7f\\xc3\\xa9\\v\\b z");
        let mut out = Vec::new();
        for n in [0, 7, 10, 65_535, u64::MAX] {
            push_u64(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(String::from_utf8(out).unwrap(), format!("0 7 10 65535 {} ", u64::MAX));
    }
}
