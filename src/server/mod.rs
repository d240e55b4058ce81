//! Listeners, client connections and the drain: binds every listener, accepts, runs one hyper connection per
//! client, and on shutdown stops accepting and lets in-flight work finish for up to the drain time.

pub mod conn;
pub mod intercept;
pub mod listener;
pub mod log;
pub mod service;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::StartupError;
use crate::limit::Throttled;
use crate::upstream::{Outbound, OwnAddrs};
use conn::{ConnIo, ConnShared};
use listener::ListenerState;
use service::ConnCtx;

/// Bound listeners, ready to serve.
pub struct Server {
    bound: Vec<(TcpListener, Arc<ListenerState>)>,
    drain: Duration,
    connections: Arc<Semaphore>,
    log: Arc<log::AccessLogger>,
}

/// A listener as bound: what the `listening on` line says.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub scheme: &'static str,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.addr)
    }
}

impl Server {
    /// Binds every listener and builds its state. Errors name the listener and the cause.
    pub async fn bind(config: &Config) -> Result<Server, StartupError> {
        let own = OwnAddrs::new();
        let log = log::AccessLogger::open(&config.access_log, config.access_log_format)
            .map_err(|e| StartupError::new(format!("access log: {e}")))?;
        let log = Arc::new(log);
        let out = Outbound { own: own.clone(), timeouts: config.timeouts };
        let auth = listener::Shared::auth_guard(&config.limits);
        let shared = listener::Shared { out, log: log.clone(), limits: config.limits, auth };
        let mut bound = Vec::new();
        for l in &config.listeners {
            // TPROXY hands over connections for any address: the listener must be IP_TRANSPARENT.
            let transparent = l.intercept.is_some_and(|i| i.mode == crate::config::InterceptMode::Tproxy);
            let cannot = |e: io::Error| {
                let hint = if transparent { " (mode = \"tproxy\" needs CAP_NET_ADMIN for IP_TRANSPARENT)" } else { "" };
                StartupError::at(l.at.as_ref(), format!("cannot listen on {}: {e}{hint}", l.listen.addr))
            };
            let tcp = bind_tcp(l.listen.addr, transparent).map_err(cannot)?;
            let local = tcp.local_addr().map_err(cannot)?;
            own.add(local);
            let state = listener::build(l, local, &shared).map_err(|e| e.context(format_args!("listener {local}")))?;
            bound.push((tcp, Arc::new(state)));
        }
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        Ok(Server { bound, drain: config.drain, connections, log })
    }

    /// The access log, for SIGUSR1 (reopen its file).
    pub fn access_log(&self) -> Arc<log::AccessLogger> {
        self.log.clone()
    }

    pub fn bound(&self) -> Vec<Bound> {
        self.bound.iter().map(|(_, s)| Bound { scheme: s.hop.scheme(), addr: s.hop.local }).collect()
    }

    /// Serves until `shutdown` completes, then drains for up to the drain time.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = TaskTracker::new();
        let mut accepters = Vec::new();
        for (tcp, state) in self.bound {
            let accept = accept_loop(tcp, state, tasks.clone(), stop_rx.clone(), self.connections.clone());
            accepters.push(tokio::spawn(accept));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining for up to {:?}", self.drain);
        let _ = stop_tx.send(true);
        for a in accepters {
            let _ = a.await;
        }
        tasks.close();
        if tokio::time::timeout(self.drain, tasks.wait()).await.is_err() {
            tracing::warn!("drain time over with {} connections or tunnels still open; closing them", tasks.len());
        }
        self.log.flush();
    }
}

fn bind_tcp(addr: SocketAddr, transparent: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if transparent {
        match addr {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    tcp: TcpListener,
    state: Arc<ListenerState>,
    tasks: TaskTracker,
    mut stop: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
) {
    let http = http1_builder(&state);
    let mut errors = AcceptErrors::default();
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(s) => {
                    errors.recovered(state.hop.local);
                    s
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays up.
                    errors.failed(state.hop.local, &e);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        let http = http.clone();
        let stop = stop.clone();
        let conn_tasks = tasks.clone();
        tasks.spawn(async move {
            let _permit = permit;
            serve_tcp(stream, peer, state, http, conn_tasks, stop).await;
        });
    }
}

/// How long a listener waits after a failed accept (EMFILE, ENFILE, ENOBUFS...) before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// At most one warning per listener in this time about failed accepts; the others are counted into the next.
pub const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The failed accepts of one listener, warned about at most once per [`ACCEPT_WARN_INTERVAL`].
#[derive(Default)]
struct AcceptErrors {
    /// When the last warning was written.
    warned: Option<Instant>,
    /// Failures since then, not in any warning yet.
    unreported: u64,
    /// Failures since accept last worked.
    total: u64,
}

impl AcceptErrors {
    fn failed(&mut self, local: SocketAddr, e: &io::Error) {
        self.unreported += 1;
        self.total += 1;
        let now = Instant::now();
        let since = self.warned.map(|w| now.saturating_duration_since(w));
        if since.is_some_and(|s| s < ACCEPT_WARN_INTERVAL) {
            return;
        }
        let n = std::mem::take(&mut self.unreported);
        match since {
            None => tracing::warn!("accept on {local}: {e} (1 error; retrying every {ACCEPT_RETRY:?})"),
            Some(s) => tracing::warn!(
                "accept on {local}: {e} ({n} error{} in the last {:.1}s; retrying every {ACCEPT_RETRY:?})",
                if n == 1 { "" } else { "s" },
                s.as_secs_f64()
            ),
        }
        self.warned = Some(now);
    }

    /// Accept works again: says how many failures there were in all, those not warned about included.
    fn recovered(&mut self, local: SocketAddr) {
        if self.total == 0 {
            return;
        }
        tracing::warn!("accept on {local} works again after {} failed accepts", self.total);
        *self = AcceptErrors::default();
    }
}

fn http1_builder(state: &ListenerState) -> http1::Builder {
    let limits = state.limits;
    let mut b = http1::Builder::new();
    // hopgate enforces its head-size limits itself, with a page naming the limit (service::admit); hyper's
    // buffer limit sits above them as a hard backstop. The header count is hyper's to enforce: it sizes the
    // parser's per-request header array, so a larger backstop costs every request (measured: 6% instructions);
    // its bodyless 431 becomes hopgate's page in server::conn.
    b.max_buf_size((limits.max_head_bytes * 2).max(16 * 1024))
        .max_headers(limits.max_headers)
        // The idle and head timers live in the connection loop below, not in hyper.
        .header_read_timeout(None)
        // A client may shut down its sending side after the request and still get the response.
        .half_close(true)
        .keep_alive(true);
    b
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ListenerState>,
    http: http1::Builder,
    tasks: TaskTracker,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    if intercept::intercepting(&state) {
        // Boxed, like TLS: the splice's state is for intercepting listeners only.
        return Box::pin(intercept::serve(stream, peer, state, http, tasks, stop)).await;
    }
    if let Some(acceptor) = state.acceptor.clone() {
        // Boxed: a task is as large as its largest state, and every plain connection would otherwise carry
        // the TLS and HTTP/2 states too (bench/profile massif).
        return Box::pin(tls::serve(stream, peer, state, acceptor, http, tasks, stop)).await;
    }
    serve_http1(stream, peer, state, http, tasks, stop).await;
}

/// Runs one HTTP/1.1 connection with its idle and header-read timers and the drain signal.
pub async fn serve_http1<S>(
    stream: S,
    peer: SocketAddr,
    state: Arc<ListenerState>,
    http: http1::Builder,
    tasks: TaskTracker,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_http1_with(stream, peer, state, http, tasks, stop, None).await
}

/// [`serve_http1`] for a connection whose requests go to an intercepted connection's original destination.
async fn serve_http1_with<S>(
    stream: S,
    peer: SocketAddr,
    state: Arc<ListenerState>,
    http: http1::Builder,
    tasks: TaskTracker,
    stop: watch::Receiver<bool>,
    intercepted: Option<Arc<crate::backend::intercept::Intercepted>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = ConnShared::new();
    let timeouts = state.hop.timeouts;
    let throttle = state.throttle();
    let ctx = Arc::new(ConnCtx {
        listener: state,
        client: peer,
        shared: shared.clone(),
        tasks,
        throttle: throttle.clone(),
        intercepted,
    });
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(service::handle(req, ctx).await) }
    });
    let io = ConnIo::new(Throttled::new(stream, throttle), shared.clone());
    let conn = http.serve_connection(TokioIo::new(io), svc).with_upgrades();
    let graceful = |c: std::pin::Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
    conn::drive(conn, graceful, &shared, timeouts.header_read, timeouts.idle, peer, stop).await;
}

impl Server {
    /// Builds every listener's state without binding: what `hopgate check` runs, so that a config that checks
    /// is a config that runs (certificates, users files, targets).
    pub fn check(config: &Config) -> Result<(), StartupError> {
        let log = log::AccessLogger::open(&crate::config::AccessLog::Off, config.access_log_format)
            .map_err(|e| StartupError::new(e.to_string()))?;
        let shared = listener::Shared {
            out: Outbound { own: OwnAddrs::new(), timeouts: config.timeouts },
            log: Arc::new(log),
            limits: config.limits,
            auth: listener::Shared::auth_guard(&config.limits),
        };
        for l in &config.listeners {
            listener::build(l, l.listen.addr, &shared)
                .map_err(|e| e.context(format_args!("listener {}", l.listen.addr)))?;
        }
        Ok(())
    }
}
