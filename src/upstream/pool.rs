//! The relay's pooled upstream client: hopgate's own small pool of HTTP/1.1 connections on hopgate's own framing
//! ([`super::h1`]: no connection task, no dispatch channel) and of hyper's HTTP/2 connections (it replaced
//! hyper-util's legacy client, whose checkout, key hashing and hand-over machinery cost ~10,000 instructions per
//! request, and then hyper's HTTP/1.1 client connection: docs/benchmarks.md).
//!
//! - **Keys.** A gateway route talks to one upstream: one idle list, nothing to look up. The forward proxy keys
//!   by host (a `HashMap` lookup, once per request) and then by scheme and port (a scan of the few pools of that
//!   host); a request holds its pool by `Arc` from checkout to return, so returning looks nothing up. A route
//!   with `send_proxy_protocol` keys by client (the addresses its PROXY header names): a connection that
//!   started with one client's header never carries another client's request (the spec forbids it), and a
//!   client connection's requests reuse its own upstream connection.
//! - **Checkout** takes the most recently returned connection that is still open (LIFO: hot connections stay
//!   warm, cold ones expire), dropping expired ones and closed ones (no task watches an idle connection: checkout
//!   reads it once with a waker that does nothing; EOF, an error or bytes nobody asked for drop it); else it
//!   dials through the [`Connector`].
//! - **Return** happens when the response body has been read to its end after an exchange that keeps the
//!   connection (never after `Connection: close` either way, an HTTP/1.0 response without keep-alive, a
//!   close-delimited body, an error, bytes past the response or a 101). When the body ends before the request body
//!   has gone up (the origin answered early), a small task finishes the upload and then returns the connection.
//!   An unfinished body drops its connection.
//! - **Retry.** A request that failed on a reused connection before any of it was written (its first write
//!   failed) is sent once more on a fresh connection: the origin closed the idle connection as it was taken.
//!   Nothing is retried once it may have reached the origin.
//! - **Expiry.** An idle connection is closed after `pool_idle` by a reaper task per pool that sleeps until the
//!   oldest deadline (dropping the closed ones it finds) and ends when the pool is empty; at most `max_idle`
//!   connections are kept per pool.
//! - **HTTP/2** (a route's `upstream_http` "2" or "auto"): a pool also keeps a few `http2` connections, each
//!   shared by up to `max_streams` requests at once; a request takes the first with room (so one connection
//!   fills before the next opens), and only one request at a time opens a new one (the others wait for it
//!   rather than opening their own). A stream is counted from checkout until its response body ends or is
//!   dropped; dropping it before its end resets the stream (RST_STREAM CANCEL, hyper's h2). Closed connections
//!   are dropped at checkout; one without streams for `pool_idle` is closed by the reaper. "auto" speaks what
//!   ALPN chose for each new connection: an upstream that chose `http/1.1` gets the HTTP/1.1 pool above (and
//!   no more waiting for a shared connection).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http::uri::Authority;
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;

use super::h1::{self, Answer};
use super::{Connector, ProxiedClient, UpstreamIo, display_target};
use crate::config::UpstreamHttp;
use crate::error::{BoxError, Error, Kind};
use crate::http::Body;
use crate::proxy_protocol::Addresses;

/// Why a request got no response: the connector's own error (policy, loop, DNS, connect, TLS), what hyper saw
/// on an HTTP/2 connection, or what hopgate's own HTTP/1.1 connection saw.
#[derive(Debug)]
pub enum SendError {
    Connect(Error),
    Hyper(hyper::Error),
    Http1(h1::ConnError),
}

/// A request that got no response, and the request itself when none of it was written.
pub struct Failed {
    pub error: SendError,
    pub unsent: Option<Request<Body>>,
}

/// The pooled client of one forward proxy or one gateway route.
pub struct HttpClient {
    connector: Connector,
    /// A route that speaks HTTP/2 (`upstream_http` "2", or "auto" on https://).
    h2: Option<Box<H2>>,
    pools: Pools,
    idle_timeout: Duration,
    max_idle: usize,
}

/// How a client speaks HTTP/2.
struct H2 {
    builder: http2::Builder<TokioExecutor>,
    /// "2": every connection is HTTP/2 (over TLS the upstream must choose `h2`); "auto": what ALPN chose.
    only: bool,
    /// Requests at once on one connection before another opens.
    max_streams: usize,
}

enum Pools {
    /// A gateway route: its one upstream.
    One(Arc<HostPool>),
    /// The forward proxy: by host, then by scheme and port.
    Many(Mutex<ByHost>),
    /// A gateway route sending PROXY headers: its one upstream, by client.
    PerClient(Mutex<ByClient>),
}

struct ByClient {
    https: bool,
    host: Box<str>,
    port: u16,
    map: HashMap<Addresses, Arc<HostPool>>,
    /// Pools that hold nothing are removed when the map has grown to this many clients.
    sweep_at: usize,
}

struct ByHost {
    map: HashMap<Box<str>, Vec<Arc<HostPool>>>,
    /// Pools that hold nothing are removed when the map has grown to this many hosts.
    sweep_at: usize,
}

const SWEEP_MIN: usize = 64;

/// The idle connections to one upstream (`https`, `host`, `port`).
pub(super) struct HostPool {
    https: bool,
    /// As in the URI (an IPv6 literal keeps its brackets), lowercase.
    host: Box<str>,
    port: u16,
    /// Connections to a parent proxy: requests go in absolute form.
    proxied: bool,
    /// The client every connection of this pool names in its PROXY header.
    client: Option<Addresses>,
    idle_timeout: Duration,
    max_idle: usize,
    state: Mutex<Idle>,
    /// Held by the one request that opens an HTTP/2 connection; the others wait for it.
    opening: tokio::sync::Mutex<()>,
    /// "auto": the upstream chose `http/1.1` by ALPN on the last connection opened.
    chose_http1: AtomicBool,
}

#[derive(Default)]
struct Idle {
    /// Oldest first; checkout takes from the end.
    conns: Vec<(h1::Conn, Instant)>,
    /// HTTP/2 connections, busy or not, oldest first.
    h2: Vec<Arc<H2Conn>>,
    /// A reaper task is running for this pool.
    reaping: bool,
}

/// One HTTP/2 connection, shared by the requests on it.
struct H2Conn {
    sender: http2::SendRequest<Body>,
    addr: std::net::SocketAddr,
    /// Streams in use. Only ever increased under the pool's lock, so a checkout never overfills a connection.
    streams: AtomicUsize,
    /// When the last stream ended (or the connection opened).
    idle_since: Mutex<Instant>,
}

impl H2Conn {
    /// When it is due to be closed for idleness: None while streams are in use.
    fn due(&self, timeout: Duration) -> Option<Instant> {
        match self.streams.load(Ordering::Acquire) {
            0 => Some(*lock(&self.idle_since) + timeout),
            _ => None,
        }
    }
}

/// One stream of an [`H2Conn`], counted until dropped.
struct Stream(Arc<H2Conn>);

impl Drop for Stream {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.0.idle_since) = Instant::now();
        }
    }
}

/// A new connection: HTTP/2, or HTTP/1.1 when "auto"'s upstream chose it.
enum Opened {
    H1(h1::Conn),
    H2(Stream),
}

impl HttpClient {
    /// With `target` (`https`, host, port), the client only ever talks to that upstream (a gateway route).
    pub fn new(
        connector: Connector,
        target: Option<(bool, &str, u16)>,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> HttpClient {
        let pools = match target {
            Some((https, host, port)) if connector.proxy_header.is_some() => Pools::PerClient(Mutex::new(ByClient {
                https,
                host: host.into(),
                port,
                map: HashMap::new(),
                sweep_at: SWEEP_MIN,
            })),
            Some((https, host, port)) => {
                let proxied = connector.proxied(https);
                Pools::One(Arc::new(HostPool::new(https, host, port, proxied, None, idle_timeout, max_idle)))
            }
            None => Pools::Many(Mutex::new(ByHost { map: HashMap::new(), sweep_at: SWEEP_MIN })),
        };
        HttpClient { connector, h2: None, pools, idle_timeout, max_idle }
    }

    /// Speaks `http` (as it applies to this client's scheme: `UpstreamHttp::effective`) to the upstream, with at
    /// most `max_streams` requests at once on one HTTP/2 connection.
    pub fn speak(&mut self, http: UpstreamHttp, max_streams: usize) {
        self.h2 = match http {
            UpstreamHttp::Http1 => None,
            UpstreamHttp::Http2 | UpstreamHttp::Auto => Some(Box::new(H2 {
                builder: http2::Builder::new(TokioExecutor::new()),
                only: http == UpstreamHttp::Http2,
                max_streams: max_streams.max(1),
            })),
        };
    }

    /// Whether requests may go out over HTTP/2 (the relay then forwards `TE: trailers`).
    pub fn may_speak_h2(&self) -> bool {
        self.h2.is_some()
    }

    /// Sends `req` (absolute URI; `Host` already set) over a pooled connection or a new one. The response
    /// carries the address it came from ([`ResponseBody::upstream_addr`]); its body returns the connection to the pool when it ends.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<ResponseBody>, SendError> {
        self.try_request(req).await.map_err(|f| f.error)
    }

    /// [`HttpClient::request`], handing the request back when none of it was written (the connection could not
    /// be opened, or hyper returned it unsent): an upstream group sends it to another member.
    pub async fn try_request(&self, mut req: Request<Body>) -> Result<Response<ResponseBody>, Failed> {
        let home = match &self.pools {
            Pools::PerClient(by_client) => self.pool_of_client(by_client, req.extensions().get::<ProxiedClient>()),
            _ => self.pool_for(req.uri()),
        };
        let home = match home {
            Ok(home) => home,
            Err(error) => return Err(Failed { error, unsent: Some(req) }),
        };
        if let Some(h2) = &self.h2 {
            return self.request_h2(req, home, h2).await;
        }
        if !home.proxied {
            origin_form(req.uri_mut());
        }
        let (conn, reused) = match home.checkout() {
            Some(conn) => (conn, true),
            None => match self.connect(&home).await {
                Ok(conn) => (conn, false),
                Err(error) => return Err(Failed { error, unsent: Some(req) }),
            },
        };
        let req = match conn_send(conn, req, &home).await {
            Ok(resp) => {
                if reused && let Some(route) = self.connector.dialer.route() {
                    route.reused.inc();
                }
                return Ok(resp);
            }
            // Nothing of it was written: the origin closed the idle connection as it was taken.
            Err((e, Some(req))) if reused => {
                tracing::debug!("request not sent on a reused connection ({e:?}), sending it on a new one");
                req
            }
            Err((error, unsent)) => return Err(Failed { error, unsent }),
        };
        self.send_on_new(req, home).await
    }

    /// The one retry, on a new connection. Boxed, like [`HttpClient::connect`]: rare, and it would otherwise
    /// add a second request-sized state to every request's future.
    fn send_on_new(
        &self,
        req: Request<Body>,
        home: Arc<HostPool>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Failed>> + Send + '_>> {
        Box::pin(async move {
            let conn = match self.connect(&home).await {
                Ok(conn) => conn,
                Err(error) => return Err(Failed { error, unsent: Some(req) }),
            };
            conn_send(conn, req, &home).await.map_err(|(error, unsent)| Failed { error, unsent })
        })
    }

    /// A request over HTTP/2: a stream on a connection with room, else on a new connection that this request
    /// opens, or waits for while another request opens it. "auto" may find the upstream chose HTTP/1.1: the
    /// request then goes on that connection, and later ones take the HTTP/1.1 path. Boxed, as it is the
    /// HTTP/2 routes' alone.
    fn request_h2<'a>(
        &'a self,
        req: Request<Body>,
        home: Arc<HostPool>,
        h2: &'a H2,
    ) -> Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Failed>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(stream) = home.checkout_h2(h2.max_streams) {
                if let Some(route) = self.connector.dialer.route() {
                    route.reused.inc();
                }
                let req = match send_h2(req, &home, stream).await {
                    Ok(resp) => return Ok(resp),
                    // Not sent: the connection closed as it was taken.
                    Err((_, Some(req))) => req,
                    Err((error, None)) => return Err(Failed { error, unsent: None }),
                };
                return self.open_and_send(req, &home, h2, true).await;
            }
            let http1 = !h2.only && home.chose_http1.load(Ordering::Relaxed);
            if http1 && let Some(conn) = home.checkout() {
                // "auto", and the upstream chose HTTP/1.1: its idle connections, as on the HTTP/1.1 path.
                let mut req = req;
                for_http1(&mut req);
                let req = match conn_send(conn, req, &home).await {
                    Ok(resp) => {
                        if let Some(route) = self.connector.dialer.route() {
                            route.reused.inc();
                        }
                        return Ok(resp);
                    }
                    Err((_, Some(req))) => req,
                    Err((error, None)) => return Err(Failed { error, unsent: None }),
                };
                return self.open_and_send(req, &home, h2, false).await;
            }
            self.open_and_send(req, &home, h2, !http1).await
        })
    }

    /// Sends on a new connection, or (`shared`: the upstream speaks HTTP/2) on one another request opened
    /// meanwhile: only one request at a time opens a connection then.
    async fn open_and_send(
        &self,
        req: Request<Body>,
        home: &Arc<HostPool>,
        h2: &H2,
        shared: bool,
    ) -> Result<Response<ResponseBody>, Failed> {
        let opened = match shared {
            true => {
                let _opening = home.opening.lock().await;
                match home.checkout_h2(h2.max_streams) {
                    Some(stream) => Ok(Opened::H2(stream)),
                    None => self.open(home, h2).await,
                }
            }
            false => self.open(home, h2).await,
        };
        // Nothing of the request was written when no connection could be opened (an upstream group then sends
        // it to another member), nor when hyper hands it back.
        let opened = match opened {
            Ok(o) => o,
            Err(error) => return Err(Failed { error, unsent: Some(req) }),
        };
        let sent = match opened {
            Opened::H2(stream) => send_h2(req, home, stream).await,
            Opened::H1(conn) => {
                let mut req = req;
                for_http1(&mut req);
                conn_send(conn, req, home).await
            }
        };
        sent.map_err(|(error, unsent)| Failed { error, unsent })
    }

    /// Opens a connection for an HTTP/2 client: HTTP/2 with prior knowledge on http://, what ALPN chose on
    /// https:// ("2" insists on `h2`).
    async fn open(&self, home: &Arc<HostPool>, h2: &H2) -> Result<Opened, SendError> {
        let io: UpstreamIo = self
            .connector
            .connect(home.https, &home.host, home.port, home.client.as_ref())
            .await
            .map_err(SendError::Connect)?;
        let addr = io.addr;
        let speaks_h2 = if home.https { io.chose_h2() } else { h2.only };
        if !speaks_h2 {
            if h2.only {
                let chose = io.alpn().map_or("no protocol".to_string(), |p| format!("{p:?}"));
                return Err(SendError::Connect(Error::upstream(
                    Kind::UpstreamProtocol,
                    format!(
                        "{} did not choose h2 by ALPN (it chose {chose}); the route has upstream_http = \"2\"",
                        display_target(&home.host, home.port)
                    ),
                )));
            }
            home.chose_http1.store(true, Ordering::Relaxed);
            return Ok(Opened::H1(h1::Conn::new(io)));
        }
        home.chose_http1.store(false, Ordering::Relaxed);
        let (sender, conn) = h2.builder.handshake(io).await.map_err(SendError::Hyper)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP/2 upstream connection to {addr}: {e}");
            }
        });
        let conn =
            Arc::new(H2Conn { sender, addr, streams: AtomicUsize::new(1), idle_since: Mutex::new(Instant::now()) });
        home.add_h2(conn.clone());
        Ok(Opened::H2(Stream(conn)))
    }

    /// Whether every upstream connection starts with a PROXY header: each request then names its client in a
    /// [`ProxiedClient`] extension.
    pub fn sends_proxy_header(&self) -> bool {
        matches!(self.pools, Pools::PerClient(_))
    }

    /// The pool of one client's connections (a route sending PROXY headers).
    fn pool_of_client(
        &self,
        by_client: &Mutex<ByClient>,
        client: Option<&ProxiedClient>,
    ) -> Result<Arc<HostPool>, SendError> {
        let Some(ProxiedClient(client)) = client else {
            return Err(SendError::Connect(Error::local(Kind::Internal, "no client named for the PROXY header")));
        };
        let mut by_client = lock(by_client);
        if let Some(pool) = by_client.map.get(client) {
            return Ok(pool.clone());
        }
        if by_client.map.len() >= by_client.sweep_at {
            // Clients with no idle connection and no request in flight go (as the forward proxy's hosts do).
            by_client.map.retain(|_, p| Arc::strong_count(p) > 1 || !lock(&p.state).conns.is_empty());
            by_client.sweep_at = (by_client.map.len() * 2).max(SWEEP_MIN);
        }
        let (https, port) = (by_client.https, by_client.port);
        let pool = HostPool::new(https, &by_client.host, port, false, Some(*client), self.idle_timeout, self.max_idle);
        let pool = Arc::new(pool);
        by_client.map.insert(*client, pool.clone());
        Ok(pool)
    }

    /// The pool of the request's upstream.
    fn pool_for(&self, uri: &Uri) -> Result<Arc<HostPool>, SendError> {
        let by_host = match &self.pools {
            Pools::One(pool) => return Ok(pool.clone()),
            Pools::Many(m) => m,
            Pools::PerClient(_) => {
                return Err(SendError::Connect(Error::local(Kind::Internal, "a per-client pool looked up by host")));
            }
        };
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let (host, port) = uri.authority().map_or(("", None), |a| host_port(a.as_str()));
        if host.is_empty() {
            return Err(SendError::Connect(Error::bad_request("request target has no host")));
        }
        let port = port.unwrap_or(if https { 443 } else { 80 });
        // Names compare case-insensitively; almost every request already has a lowercase one.
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let mut by_host = lock(by_host);
        if let Some(pools) = by_host.map.get(host)
            && let Some(pool) = pools.iter().find(|p| p.https == https && p.port == port)
        {
            return Ok(pool.clone());
        }
        if by_host.map.len() >= by_host.sweep_at {
            // Hosts with no idle connection and no request in flight go, so the map stays as large as the
            // pools in use (amortised: the next sweep waits until the map has doubled).
            by_host.map.retain(|_, pools| {
                pools.retain(|p| Arc::strong_count(p) > 1 || !lock(&p.state).conns.is_empty());
                !pools.is_empty()
            });
            by_host.sweep_at = (by_host.map.len() * 2).max(SWEEP_MIN);
        }
        let proxied = self.connector.proxied(https);
        let pool = Arc::new(HostPool::new(https, host, port, proxied, None, self.idle_timeout, self.max_idle));
        by_host.map.entry(host.into()).or_default().push(pool.clone());
        Ok(pool)
    }

    /// A new connection (dial, TLS). Boxed: the dial and TLS states are large and only a request that opens a
    /// connection needs them.
    fn connect<'a>(
        &'a self,
        home: &'a HostPool,
    ) -> Pin<Box<dyn Future<Output = Result<h1::Conn, SendError>> + Send + 'a>> {
        Box::pin(async move {
            let io: UpstreamIo = self
                .connector
                .connect(home.https, &home.host, home.port, home.client.as_ref())
                .await
                .map_err(SendError::Connect)?;
            Ok(h1::Conn::new(io))
        })
    }

    /// How many idle connections the pools hold (tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        match &self.pools {
            Pools::One(p) => lock(&p.state).conns.len(),
            Pools::Many(m) => lock(m).map.values().flatten().map(|p| lock(&p.state).conns.len()).sum(),
            Pools::PerClient(m) => lock(m).map.values().map(|p| lock(&p.state).conns.len()).sum(),
        }
    }
}

impl HostPool {
    fn new(
        https: bool,
        host: &str,
        port: u16,
        proxied: bool,
        client: Option<Addresses>,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> HostPool {
        HostPool {
            https,
            host: host.to_ascii_lowercase().into(),
            port,
            proxied,
            client,
            idle_timeout,
            max_idle,
            state: Mutex::new(Idle::default()),
            opening: tokio::sync::Mutex::new(()),
            chose_http1: AtomicBool::new(false),
        }
    }

    /// A stream on the oldest HTTP/2 connection with room; closed connections are dropped on the way.
    fn checkout_h2(&self, max_streams: usize) -> Option<Stream> {
        let mut idle = lock(&self.state);
        if idle.h2.is_empty() {
            return None;
        }
        idle.h2.retain(|c| !c.sender.is_closed());
        let conn = idle.h2.iter().find(|c| c.streams.load(Ordering::Acquire) < max_streams)?;
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some(Stream(conn.clone()))
    }

    /// Keeps a new HTTP/2 connection for the requests after this one, and makes sure a reaper watches it.
    fn add_h2(self: &Arc<Self>, conn: Arc<H2Conn>) {
        let mut idle = lock(&self.state);
        idle.h2.push(conn);
        self.reap_later(&mut idle);
    }

    fn reap_later(self: &Arc<Self>, idle: &mut Idle) {
        if !idle.reaping
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            idle.reaping = true;
            rt.spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// The newest idle connection that is still open; closed and expired ones are dropped on the way.
    fn checkout(&self) -> Option<h1::Conn> {
        let mut idle = lock(&self.state);
        if idle.conns.is_empty() {
            return None;
        }
        let now = Instant::now();
        while let Some((mut conn, since)) = idle.conns.pop() {
            if now.saturating_duration_since(since) >= self.idle_timeout {
                // The newest has expired, so have all the others.
                idle.conns.clear();
                return None;
            }
            // No task watches an idle connection: one the origin closed (or sent bytes on) is noticed here.
            if conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection that is ready for its next request, unless the pool is full.
    pub(super) fn put(self: &Arc<Self>, conn: h1::Conn) {
        let mut idle = lock(&self.state);
        if idle.conns.len() >= self.max_idle {
            return;
        }
        idle.conns.push((conn, Instant::now()));
        self.reap_later(&mut idle);
    }
}

/// Closes the connections of `pool` that have been idle for `timeout`: sleeps until the oldest is due, and ends
/// when the pool is empty (the next return starts another) or gone.
async fn reap(pool: Weak<HostPool>, timeout: Duration) {
    loop {
        let due = {
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = lock(&pool.state);
            let now = Instant::now();
            idle.conns.retain_mut(|(c, since)| now.saturating_duration_since(*since) < timeout && c.is_open());
            // An HTTP/2 connection goes when it closed or had no stream for the timeout; a busy one is looked
            // at again a timeout later.
            idle.h2.retain(|c| !c.sender.is_closed() && c.due(timeout).is_none_or(|due| due > now));
            let h1 = idle.conns.first().map(|(_, since)| *since + timeout);
            let h2 = idle.h2.iter().map(|c| c.due(timeout).unwrap_or(now + timeout)).min();
            match h1.into_iter().chain(h2).min() {
                Some(due) => due,
                None => {
                    idle.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// An authority's host (an IPv6 literal with its brackets) and port, in one pass from the end (what
/// `Uri::host` and `Uri::port_u16` give, for a third of their cost).
fn host_port(authority: &str) -> (&str, Option<u16>) {
    let a = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let digits = a.bytes().rev().take_while(u8::is_ascii_digit).count();
    let colon = a.len() - digits;
    if colon == 0 || a.as_bytes()[colon - 1] != b':' {
        return (a, None);
    }
    let host = &a[..colon - 1];
    // `[::1]`'s last group is no port; `[::1]:80`'s is.
    if host.starts_with('[') && !host.ends_with(']') {
        return (a, None);
    }
    (host, a[colon..].parse().ok())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `req` as an HTTP/2 request on `stream`'s connection. The head is HTTP/2's: `Host` becomes the
/// `:authority` (the URI's), and what only framed or offered the HTTP/1.1 hop (`Transfer-Encoding`, an upgrade
/// offer's `Connection` and `Upgrade`) goes; `http::hop` removed the other connection-specific fields, and `TE`
/// is at most `trailers`. An error that hands the request back means nothing of it was sent.
async fn send_h2(
    mut req: Request<Body>,
    home: &Arc<HostPool>,
    stream: Stream,
) -> Result<Response<ResponseBody>, (SendError, Option<Request<Body>>)> {
    *req.version_mut() = Version::HTTP_2;
    // A WebSocket upgrade offer becomes an extended CONNECT (RFC 8441 §4): the origin answers 200 on the stream,
    // which is then the WebSocket; the relay gets the 101 (with the Accept for the offer's key) it expects.
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .then(|| req.headers_mut().remove(header::SEC_WEBSOCKET_KEY))
        .map(|key| key.map(|k| crate::http::upgrade::accept_for(k.as_bytes())));
    if websocket.is_some() {
        *req.method_mut() = Method::CONNECT;
        req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    }
    let headers = req.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    headers.remove(header::UPGRADE);
    let host = headers.remove(header::HOST);
    let authority = host.as_ref().and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let authority = match authority {
        Some(a) => a,
        None => Authority::try_from(display_target(&home.host, home.port).as_str())
            .map_err(|_| (SendError::Connect(Error::bad_request("the request's host is no valid :authority")), None))?,
    };
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let scheme = if home.https { Scheme::HTTPS } else { Scheme::HTTP };
    *req.uri_mut() = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| (SendError::Connect(Error::bad_request("invalid request target")), None))?;
    let mut sender = stream.0.sender.clone();
    let addr = stream.0.addr;
    match sender.try_send_request(req).await {
        Ok(mut resp) => {
            if let Some(accept) = websocket
                && resp.status().is_success()
            {
                // RFC 8441 §5: the 2xx is the switch.
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = resp.headers_mut();
                h.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
                h.insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
                if let Some(accept) = accept.and_then(|a| header::HeaderValue::from_str(&a).ok()) {
                    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                }
            }
            Ok(resp.map(|inner| ResponseBody::new_h2(inner, stream, addr)))
        }
        Err(mut e) => {
            let req = e.take_message();
            Err((SendError::Hyper(e.into_error()), req))
        }
    }
}

/// An HTTP/2 client's request for an HTTP/1.1 connection ("auto"): origin-form, and no `TE` (HTTP/1.1 would need
/// it named in `Connection`; hopgate offers trailers on HTTP/2 hops only).
fn for_http1(req: &mut Request<Body>) {
    req.headers_mut().remove(header::TE);
    origin_form(req.uri_mut());
}

/// Sends on an HTTP/1.1 connection; an error that hands the request back means nothing of it was sent. The
/// response carries the address it came from; its body returns the connection to `home` when it ends. Not boxed:
/// the request's whole future is boxed once, built in place (server::h1, `heap::pinned!`), and a box of this
/// exchange's own was a second large allocation per request (bench/profile callgrind: 500 instructions).
fn conn_send(conn: h1::Conn, req: Request<Body>, home: &Arc<HostPool>) -> impl Future<Output = Sent> + Send + use<> {
    send_on(conn, req, home.clone())
}

/// A response, or why there is none and the request when none of it was written.
type Sent = Result<Response<ResponseBody>, (SendError, Option<Request<Body>>)>;

async fn send_on(conn: h1::Conn, req: Request<Body>, home: Arc<HostPool>) -> Sent {
    let addr = conn.addr;
    match h1::send(conn, req, home).await {
        Ok(Answer::Response(resp, reader)) => Ok(resp.map(|()| ResponseBody { kind: BodyKind::H1(reader), addr })),
        // After a 101 the connection belongs to the upgrade.
        Ok(Answer::Upgraded(resp)) => Ok(resp.map(|()| ResponseBody { kind: BodyKind::Empty, addr })),
        Err((e, req)) => Err((SendError::Http1(e), req)),
    }
}

/// `/path?query` (what an origin is sent; `/` when empty).
fn origin_form(uri: &mut Uri) {
    let path = uri.path_and_query().filter(|p| p.as_str() != "/").cloned();
    *uri = match path {
        Some(p) => Uri::from(p),
        None => Uri::from(PathAndQuery::from_static("/")),
    };
}

/// An upstream response body: read off hopgate's own HTTP/1.1 connection (which it returns to the pool at its
/// end), or hyper's HTTP/2 stream (counted until the body ends or is dropped).
pub struct ResponseBody {
    kind: BodyKind,
    /// The address of the connection it came on (for the access log).
    addr: SocketAddr,
}

enum BodyKind {
    Empty,
    H1(Box<h1::Reader>),
    H2 { inner: Incoming, stream: Option<Stream> },
}

impl ResponseBody {
    fn new_h2(inner: Incoming, stream: Stream, addr: SocketAddr) -> ResponseBody {
        let end = http_body::Body::is_end_stream(&inner);
        // No body (HEAD, 204, 304, an empty DATA end): the stream is over already.
        ResponseBody { kind: BodyKind::H2 { inner, stream: (!end).then_some(stream) }, addr }
    }

    /// The address of the upstream connection the response came on. (Carried here rather than as a response
    /// extension: an extension costs three allocations on every relayed request.)
    pub fn upstream_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            BodyKind::Empty => Poll::Ready(None),
            BodyKind::H1(reader) => Pin::new(reader).poll_frame(cx),
            BodyKind::H2 { inner, stream } => {
                let r = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                match &r {
                    Some(Ok(_)) if !http_body::Body::is_end_stream(inner) => {}
                    _ => *stream = None,
                }
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Empty => true,
            BodyKind::H1(reader) => reader.is_end_stream(),
            BodyKind::H2 { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Empty => SizeHint::with_exact(0),
            BodyKind::H1(reader) => reader.size_hint(),
            BodyKind::H2 { inner, .. } => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::upstream::{Dialer, OwnAddrs};

    /// An origin answering every request with `ok` and keep-alive (or `extra` head fields), counting the
    /// connections it accepted and those the client closed.
    struct Origin {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    async fn origin(extra: &'static str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, closed, requests) = (Arc::default(), Arc::<AtomicUsize>::default(), Arc::default());
        let o = Origin {
            addr,
            accepted: Arc::clone(&accepted),
            closed: Arc::clone(&closed),
            requests: Arc::clone(&requests),
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (closed, requests) = (closed.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    closed.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        requests.fetch_add(1, Ordering::SeqCst);
                        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{extra}\r\nok");
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        o
    }

    fn client(to: SocketAddr, max_idle: usize) -> HttpClient {
        let dialer = Dialer::new(None, OwnAddrs::new(), Duration::from_secs(5));
        let connector = Connector { dialer, parent: None, tls: None, proxy_header: None };
        HttpClient::new(connector, Some((false, "127.0.0.1", to.port())), Duration::from_secs(30), max_idle)
    }

    fn get(to: SocketAddr) -> Request<Body> {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = format!("http://{to}/x").parse().unwrap();
        req.headers_mut().insert(http::header::HOST, "test".parse().unwrap());
        req
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[test]
    fn host_and_port() {
        for (a, want) in [
            ("example.com", ("example.com", None)),
            ("example.com:8080", ("example.com", Some(8080))),
            ("example.com:", ("example.com", None)),
            ("u:p@example.com:81", ("example.com", Some(81))),
            ("127.0.0.1:9", ("127.0.0.1", Some(9))),
            ("[::1]", ("[::1]", None)),
            ("[::1]:443", ("[::1]", Some(443))),
            ("[2001:db8::1]", ("[2001:db8::1]", None)),
            ("host:99999", ("host", None)),
        ] {
            assert_eq!(host_port(a), want, "{a}");
            let uri: Uri = format!("http://{a}/").parse().unwrap();
            assert_eq!((uri.host().unwrap(), uri.port_u16()), want, "{a}: as the http crate reads it");
        }
    }

    #[tokio::test]
    async fn a_connection_is_reused_after_its_body_ends() {
        let o = origin("").await;
        let c = client(o.addr, 4);
        for _ in 0..3 {
            let resp = c.request(get(o.addr)).await.unwrap();
            assert_eq!(resp.body().upstream_addr(), o.addr);
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(c.idle_count(), 1);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let o = origin("").await;
        let c = client(o.addr, 2);
        // Four exchanges at once: four connections; their bodies end one after another.
        let resps = futures_util::future::join_all((0..4).map(|_| c.request(get(o.addr)))).await;
        assert_eq!(o.accepted.load(Ordering::SeqCst), 4);
        for r in resps {
            r.unwrap().into_body().collect().await.unwrap();
        }
        assert_eq!(c.idle_count(), 2);
        eventually("the two over the limit are closed", || o.closed.load(Ordering::SeqCst) == 2).await;
        // The two kept are used again.
        let resps = futures_util::future::join_all((0..2).map(|_| c.request(get(o.addr)))).await;
        for r in resps {
            r.unwrap().into_body().collect().await.unwrap();
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_unfinished_body_or_connection_close_keeps_nothing() {
        let o = origin("").await;
        let c = client(o.addr, 4);
        let resp = c.request(get(o.addr)).await.unwrap();
        drop(resp);
        assert_eq!(c.idle_count(), 0);
        eventually("the unfinished exchange's connection is closed", || o.closed.load(Ordering::SeqCst) == 1).await;

        let o = origin("Connection: close\r\n").await;
        let c = client(o.addr, 4);
        for _ in 0..2 {
            let resp = c.request(get(o.addr)).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            assert_eq!(c.idle_count(), 0);
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2, "a new connection after Connection: close");
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let o = origin("").await;
        let dialer = Dialer::new(None, OwnAddrs::new(), Duration::from_secs(5));
        let connector = Connector { dialer, parent: None, tls: None, proxy_header: None };
        let c = HttpClient::new(connector, Some((false, "127.0.0.1", o.addr.port())), Duration::from_millis(200), 4);
        let resp = c.request(get(o.addr)).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(c.idle_count(), 1);
        // The reaper closes it without another request.
        eventually("the idle connection is closed", || o.closed.load(Ordering::SeqCst) == 1).await;
        assert_eq!(c.idle_count(), 0);
        let resp = c.request(get(o.addr)).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
    }

    /// A pooled connection to `to` whose own side can no longer write (a write fails with nothing written),
    /// while its peer keeps it open: it looks open at checkout.
    async fn unwritable(to: SocketAddr) -> h1::Conn {
        let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
        let std = tcp.into_std().unwrap();
        std.shutdown(std::net::Shutdown::Write).unwrap();
        let tcp = tokio::net::TcpStream::from_std(std).unwrap();
        let io = UpstreamIo { io: hyper_util::rt::TokioIo::new(super::super::tls::Stream::Plain(tcp)), addr: to };
        h1::Conn::new(io)
    }

    #[tokio::test]
    async fn a_request_not_sent_on_a_reused_connection_is_retried_once_on_a_new_one() {
        let o = origin("").await;
        let c = client(o.addr, 4);
        let Pools::One(home) = &c.pools else { unreachable!() };
        // A peer that accepts and holds its connections without a word.
        let holder = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stale_addr = holder.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (mut s, _) = holder.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            got
        });
        home.put(unwritable(stale_addr).await);
        let resp = c.request(get(o.addr)).await.unwrap();
        assert_eq!(resp.body().upstream_addr(), o.addr, "sent on a new connection");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(o.requests.load(Ordering::SeqCst), 1);
        assert_eq!(held.await.unwrap(), b"", "nothing reached the stale connection's peer");
    }

    #[tokio::test]
    async fn an_idle_connection_the_origin_closed_is_noticed_at_checkout() {
        // An origin that closes every connection after its response, without saying so.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                });
            }
        });
        let c = client(addr, 4);
        let resp = c.request(get(addr)).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(c.idle_count(), 1, "kept: nothing said it would close");
        let Pools::One(home) = &c.pools else { unreachable!() };
        // Wait until the close has arrived, as a later request would find it.
        let mut cx = 0;
        loop {
            let closed = {
                let mut idle = lock(&home.state);
                idle.conns.last_mut().is_some_and(|(conn, _)| !conn.is_open())
            };
            if closed {
                break;
            }
            cx += 1;
            assert!(cx < 200, "the origin's close never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let resp = c.request(get(addr)).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection for the second request");
    }
}
