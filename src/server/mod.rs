//! Listeners, client connections and the drain: binds every listener, accepts, runs one hyper connection per
//! client, and on shutdown stops accepting and lets in-flight work finish for up to the drain time.

pub mod admin;
pub mod conn;
pub mod h1;
pub mod intercept;
pub mod listener;
pub mod log;
pub mod notify;
pub mod proxied;
pub mod service;
pub mod stats;
pub mod tls;
pub mod upgrade;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::backend::intercept::Intercepted;
use crate::config::Config;
use crate::config::{Limits, Timeouts};
use crate::error::StartupError;
use crate::limit::{Throttle, Throttled};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::upstream::{Outbound, OwnAddrs};
use admin::Admin;
use arc_swap::ArcSwap;
use conn::{ConnIo, ConnShared};
use listener::{ListenerState, Slot};
use proxied::Peer;
use service::ConnCtx;

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<Running>,
    drain: Duration,
    drain_grace: Duration,
    connections: Arc<Semaphore>,
    /// What every listener's state is built with; a reload builds the new states with the same process-wide
    /// pieces (own addresses, the verification pool, the metrics).
    own: Arc<OwnAddrs>,
    auth: Arc<crate::http::auth::Guard>,
    log: Arc<log::AccessLogger>,
    log_cfg: (crate::config::AccessLog, crate::config::AccessLogFormat),
    metrics: Arc<Metrics>,
    /// The admin listener, when one is configured: bound with the others, served until the process ends.
    admin: Option<Arc<Admin>>,
    /// The admin listener's configured address and socket.
    admin_socket: Option<(SocketAddr, Arc<TcpListener>)>,
    /// What a binary upgrade hands over, kept up to date by reloads.
    offered: Offered,
}

/// The listening sockets a binary upgrade hands over: kind (`listener` or `admin`), configured address, socket.
pub type Offered = Arc<std::sync::Mutex<Vec<(&'static str, SocketAddr, Arc<TcpListener>)>>>;

/// One listener: the address it was configured with (what a reload matches), its socket until it is served,
/// its current state, and how to stop it.
struct Running {
    configured: SocketAddr,
    /// Shared with the accept loop, and offered to a newer hopgate (binary upgrade) while it is listed here.
    tcp: Arc<TcpListener>,
    started: bool,
    slot: Slot,
    stop: watch::Sender<bool>,
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

/// Where a reload gets its configuration: the file (or the command line) read again; None when it does not load
/// (the loader has already printed why, FILE:LINE as `check` does).
pub type Reload = Box<dyn Fn() -> Option<Config> + Send + Sync>;

impl Server {
    /// Binds every listener and builds its state. Errors name the listener and the cause. `inherited`: listening
    /// sockets handed over by a running hopgate (binary upgrade), by the address they were configured with.
    pub async fn bind(config: &Config, inherited: &mut upgrade::Inherited) -> Result<Server, StartupError> {
        let own = OwnAddrs::new();
        let log = log::AccessLogger::open(&config.access_log, config.access_log_format)
            .map_err(|e| StartupError::new(format!("access log: {e}")))?;
        let log = Arc::new(log);
        let auth = listener::Shared::auth_guard(&config.limits);
        let metrics = Metrics::new();
        let shared = shared_for(config, &own, &log, &auth, &metrics);
        let admin = match &config.admin {
            Some(a) => Some(bind_admin(a, &shared, inherited)?),
            None => None,
        };
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let (tcp, state) = open_listener(l, &shared, inherited)?;
            listeners.push(Running {
                configured: l.listen.addr,
                tcp: Arc::new(tcp),
                started: false,
                slot: Arc::new(ArcSwap::from_pointee(state)),
                stop: watch::channel(false).0,
            });
        }
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let admin_socket = admin.as_ref().zip(config.admin.as_ref()).map(|((tcp, _), a)| (a.listen, tcp.clone()));
        let admin = admin.map(|(_, a)| a);
        Ok(Server {
            listeners,
            drain: config.drain,
            drain_grace: config.drain_grace,
            connections,
            own,
            auth,
            log,
            log_cfg: (config.access_log.clone(), config.access_log_format),
            metrics,
            admin,
            admin_socket,
            offered: Offered::default(),
        }
        .published())
    }

    /// The admin listener's address, when there is one (`admin on http://IP:PORT`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_socket.as_ref().and_then(|(_, tcp)| tcp.local_addr().ok())
    }

    /// The process's metrics (configuration reloads count into it).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The access log, for SIGUSR1 (reopen its file).
    pub fn access_log(&self) -> Arc<log::AccessLogger> {
        self.log.clone()
    }

    pub fn bound(&self) -> Vec<Bound> {
        self.listeners
            .iter()
            .map(|r| {
                let s = r.slot.load();
                Bound { scheme: s.hop.scheme(), addr: s.hop.local }
            })
            .collect()
    }

    /// The listening sockets as a binary upgrade hands them over (kept up to date by reloads).
    pub fn offered(&self) -> Offered {
        self.offered.clone()
    }

    fn published(self) -> Server {
        self.publish();
        self
    }

    fn publish(&self) {
        let mut now: Vec<(&'static str, SocketAddr, Arc<TcpListener>)> =
            self.listeners.iter().map(|r| ("listener", r.configured, r.tcp.clone())).collect();
        if let Some((addr, tcp)) = &self.admin_socket {
            now.push(("admin", *addr, tcp.clone()));
        }
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Serves until `shutdown` completes, then drains for up to the drain time. Each message on `reloads` reads
    /// the configuration again through `reload` and, when it loads and builds, swaps it in (see [`Server::reload`]).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut reloads: tokio::sync::mpsc::Receiver<()>,
        reload: Reload,
        what: String,
    ) {
        // The admin listener outlives the drain (a load balancer reads /readyz's 503 meanwhile): it stops with
        // the process.
        let (admin_stop, admin_rx) = watch::channel(false);
        let admin = match (&self.admin, &self.admin_socket) {
            (Some(admin), Some((_, tcp))) => Some(tokio::spawn(admin.clone().serve(tcp.clone(), admin_rx))),
            _ => None,
        };
        let tasks = TaskTracker::new();
        let mut accepters = Vec::new();
        for r in &mut self.listeners {
            accepters.extend(start(r, &tasks, &self.connections));
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = reloads.recv() => {
                    notify::send(&[notify::RELOADING]);
                    let started = self.reload(reload(), &what, &tasks);
                    accepters.extend(started);
                    notify::send(&[notify::READY]);
                }
            }
        }
        notify::send(&[notify::STOPPING]);
        if let Some(admin) = &self.admin {
            admin.draining();
        }
        if !self.drain_grace.is_zero() {
            tracing::info!("draining: /readyz says 503; still accepting for {:?}", self.drain_grace);
            tokio::time::sleep(self.drain_grace).await;
        }
        tracing::info!("shutting down: no new connections, draining for up to {:?}", self.drain);
        // The listening sockets close once the accept loops have stopped: every other holder lets go first, so
        // that a socket closes right after its loop has taken what waits in its accept queue.
        let stops: Vec<_> = self.listeners.drain(..).map(|r| r.stop).collect();
        self.offered.lock().unwrap_or_else(|e| e.into_inner()).clear();
        for stop in &stops {
            let _ = stop.send(true);
        }
        for a in accepters {
            let _ = a.await;
        }
        tasks.close();
        if tokio::time::timeout(self.drain, tasks.wait()).await.is_err() {
            tracing::warn!("drain time over with {} connections or tunnels still open; closing them", tasks.len());
        }
        self.log.flush();
        let _ = admin_stop.send(true);
        if let Some(serving) = admin {
            let _ = serving.await;
        }
    }

    /// A reload with `config` (None: it did not load; the loader said why). Listeners whose configured address is
    /// unchanged keep their socket and get a new state; new ones are bound; removed ones stop accepting and their
    /// connections drain. Nothing changes unless every listener builds and binds. Returns the new accept loops.
    fn reload(&mut self, config: Option<Config>, what: &str, tasks: &TaskTracker) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(config) = config else {
            self.metrics.reload(false);
            eprintln!("hopgate: reload of {what} failed; still serving the running configuration");
            return Vec::new();
        };
        match self.prepare(&config) {
            Ok(next) => self.commit(next, &config, what, tasks),
            Err(e) => {
                self.metrics.reload(false);
                match e.at {
                    Some(_) => eprintln!("{e}"),
                    None => eprintln!("hopgate: {e}"),
                }
                eprintln!("hopgate: reload of {what} failed; still serving the running configuration");
                Vec::new()
            }
        }
    }

    /// Builds every listener of `config` (binding the new ones) without touching the running ones.
    fn prepare(&self, config: &Config) -> Result<Prepared, StartupError> {
        let log = if self.log_cfg == (config.access_log.clone(), config.access_log_format) {
            self.log.clone()
        } else {
            let log = log::AccessLogger::open(&config.access_log, config.access_log_format)
                .map_err(|e| StartupError::new(format!("access log: {e}")))?;
            Arc::new(log)
        };
        let shared = shared_for(config, &self.own, &log, &self.auth, &self.metrics);
        let mut states = Vec::new();
        for l in &config.listeners {
            match self.listeners.iter().position(|r| r.configured == l.listen.addr) {
                Some(i) => {
                    let local = self.listeners[i].slot.load().hop.local;
                    let state =
                        listener::build(l, local, &shared).map_err(|e| e.context(format_args!("listener {local}")))?;
                    states.push((l.listen.addr, Next::Keep(i, state)));
                }
                None => {
                    let (tcp, state) = open_listener(l, &shared, &mut upgrade::Inherited::default())?;
                    states.push((l.listen.addr, Next::New(tcp, state)));
                }
            }
        }
        Ok(Prepared { states, log })
    }

    fn commit(
        &mut self,
        next: Prepared,
        config: &Config,
        what: &str,
        tasks: &TaskTracker,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut kept = vec![false; self.listeners.len()];
        let mut added = Vec::new();
        for (configured, n) in next.states {
            match n {
                Next::Keep(i, state) => {
                    self.listeners[i].slot.store(Arc::new(state));
                    kept[i] = true;
                }
                Next::New(tcp, state) => {
                    let b = Bound { scheme: state.hop.scheme(), addr: state.hop.local };
                    eprintln!("hopgate: listening on {b}");
                    added.push(Running {
                        configured,
                        tcp: Arc::new(tcp),
                        started: false,
                        slot: Arc::new(ArcSwap::from_pointee(state)),
                        stop: watch::channel(false).0,
                    });
                }
            }
        }
        let mut remaining = Vec::new();
        for (r, keep) in std::mem::take(&mut self.listeners).into_iter().zip(kept) {
            if keep {
                remaining.push(r);
            } else {
                // Removed: stop accepting; its connections finish as in a drain (they hold their own state).
                let _ = r.stop.send(true);
                eprintln!("hopgate: stopped listening on {}", r.slot.load().hop.local);
            }
        }
        let mut started = Vec::new();
        for mut r in added {
            started.extend(start(&mut r, tasks, &self.connections));
            remaining.push(r);
        }
        self.listeners = remaining;
        self.publish();
        self.log = next.log;
        self.log_cfg = (config.access_log.clone(), config.access_log_format);
        self.drain = config.drain;
        self.drain_grace = config.drain_grace;
        self.metrics.reload(true);
        eprintln!("hopgate: reloaded {what}");
        started
    }
}

/// Starts accepting on a listener (once).
fn start(r: &mut Running, tasks: &TaskTracker, connections: &Arc<Semaphore>) -> Option<tokio::task::JoinHandle<()>> {
    if std::mem::replace(&mut r.started, true) {
        return None;
    }
    let accept = accept_loop(r.tcp.clone(), r.slot.clone(), tasks.clone(), r.stop.subscribe(), connections.clone());
    Some(tokio::spawn(accept))
}

/// A reload's listeners, built and bound, not yet serving.
struct Prepared {
    states: Vec<(SocketAddr, Next)>,
    log: Arc<log::AccessLogger>,
}

enum Next {
    /// The running listener at this index keeps its socket and gets this state.
    Keep(usize, ListenerState),
    New(TcpListener, ListenerState),
}

fn shared_for(
    config: &Config,
    own: &Arc<OwnAddrs>,
    log: &Arc<log::AccessLogger>,
    auth: &Arc<crate::http::auth::Guard>,
    metrics: &Arc<Metrics>,
) -> listener::Shared {
    let out = Outbound { own: own.clone(), timeouts: config.timeouts, route: None };
    listener::Shared { out, log: log.clone(), limits: config.limits, auth: auth.clone(), metrics: metrics.clone() }
}

/// Binds (or takes over) one listener's socket and builds its state.
fn open_listener(
    l: &crate::config::Listener,
    shared: &listener::Shared,
    inherited: &mut upgrade::Inherited,
) -> Result<(TcpListener, ListenerState), StartupError> {
    // TPROXY hands over connections for any address: the listener must be IP_TRANSPARENT.
    let transparent = l.intercept.is_some_and(|i| i.mode == crate::config::InterceptMode::Tproxy);
    let cannot = |e: io::Error| {
        let hint = if transparent { " (mode = \"tproxy\" needs CAP_NET_ADMIN for IP_TRANSPARENT)" } else { "" };
        StartupError::at(l.at.as_ref(), format!("cannot listen on {}: {e}{hint}", l.listen.addr))
    };
    let tcp = match inherited.take(l.listen.addr) {
        Some(tcp) => tcp,
        None => bind_tcp(l.listen.addr, l.reuse_port, transparent).map_err(cannot)?,
    };
    let local = tcp.local_addr().map_err(cannot)?;
    shared.out.own.add(local);
    let state = listener::build(l, local, shared).map_err(|e| e.context(format_args!("listener {local}")))?;
    Ok((tcp, state))
}

/// Binds the admin listener and loads its users file (checked with the same limits as proxy authentication).
fn bind_admin(
    a: &crate::config::Admin,
    shared: &listener::Shared,
    inherited: &mut upgrade::Inherited,
) -> Result<(Arc<TcpListener>, Arc<Admin>), StartupError> {
    a.check().map_err(|e| StartupError::at(a.at.as_ref(), e))?;
    let users = match &a.users {
        Some(path) => Some(
            crate::http::htpasswd::Users::load_with(path, shared.auth.clone())
                .map_err(|e| StartupError::at(a.at.as_ref(), format!("admin users file {e}")))?,
        ),
        None => None,
    };
    let tcp = match inherited.take_admin(a.listen) {
        Some(tcp) => tcp,
        None => bind_tcp(a.listen, false, false)
            .map_err(|e| StartupError::at(a.at.as_ref(), format!("cannot listen on {} (admin): {e}", a.listen)))?,
    };
    Ok((Arc::new(tcp), Admin::new(shared.metrics.clone(), users)))
}

/// A client connection counted open (`connections_open`, `connections_total`) until dropped: it goes from the
/// accept to the connection's [`ConnShared`], which an upgraded connection or a CONNECT tunnel keeps alive.
#[derive(Debug)]
pub struct OpenConnection(Arc<ListenerMetrics>);

impl OpenConnection {
    fn new(m: &Arc<ListenerMetrics>) -> OpenConnection {
        m.connections.inc();
        m.connections_open.inc();
        OpenConnection(m.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// A listening socket on `addr`; with `reuse_port` (SO_REUSEPORT), other sockets may bind the same address and
/// the kernel spreads new connections over them (several processes on one port); `transparent` (IP_TRANSPARENT)
/// takes connections for any address (a TPROXY listener).
fn bind_tcp(addr: SocketAddr, reuse_port: bool, transparent: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
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
    tcp: Arc<TcpListener>,
    slot: Slot,
    tasks: TaskTracker,
    mut stop: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
) {
    let mut errors = AcceptErrors::default();
    let local = slot.load().hop.local;
    let conn_stop = stop.clone();
    let spawn = |stream: TcpStream, peer: SocketAddr, permit: Option<OwnedSemaphorePermit>| {
        // The state current at the accept counts the connection; each request loads the then current one.
        let slot = slot.clone();
        let stop = conn_stop.clone();
        let conn_tasks = tasks.clone();
        let open = OpenConnection::new(&slot.load().metrics);
        tasks.spawn(async move {
            let _permit = permit;
            serve_tcp(stream, peer, slot, conn_tasks, stop, open).await;
        });
    };
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(s) => {
                    errors.recovered(local);
                    s
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays up.
                    errors.failed(local, &e);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        spawn(stream, peer, Some(permit));
    }
    for (stream, peer) in accept_queued(&tcp) {
        spawn(stream, peer, connections.clone().try_acquire_owned().ok());
    }
}

/// The connections the kernel completed that still wait in the listener's accept queue when it stops accepting,
/// taken without waiting. Closing the socket would reset them, and a balancer in TCP mode that already sent a
/// request on one cannot retry it elsewhere; taken, each has its first request answered under the drain's rules
/// (with `Connection: close`). They are served even past `max_connections` (the queue is bounded by the
/// listen backlog); the first failed accept (the queue is empty, or no descriptor is left) ends the taking.
fn accept_queued(tcp: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut taken = Vec::new();
    while taken.len() < ACCEPT_QUEUE_MAX {
        let Ok((socket, addr)) = socket2::SockRef::from(tcp).accept() else { break };
        let Some(peer) = addr.as_socket() else { continue };
        let stream = std::net::TcpStream::from(socket);
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        match TcpStream::from_std(stream) {
            Ok(stream) => taken.push((stream, peer)),
            Err(_) => break,
        }
    }
    if !taken.is_empty() {
        tracing::info!("took {} connections from the accept queue of {} as it stopped", taken.len(), addr_of(tcp));
    }
    taken
}

/// At most this many connections are taken from a stopping listener's accept queue (the kernel's largest backlog).
const ACCEPT_QUEUE_MAX: usize = 65_535;

fn addr_of(tcp: &TcpListener) -> String {
    tcp.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "a listener".into())
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

/// An accepted client connection on its way to the protocol it speaks: everything but its stream.
pub struct Accepted {
    /// The client (the socket's peer, or the one a PROXY header named) and the address it connected to.
    pub peer: Peer,
    /// The listener's state; the connection and each request load it when they need it.
    pub slot: Slot,
    pub tasks: TaskTracker,
    pub stop: watch::Receiver<bool>,
    /// Counts the connection open until it ends (a tunnel or an upgrade it became keeps it).
    pub open: OpenConnection,
}

impl Accepted {
    /// What every request of the connection shares, made from the listener's state current now (requests load
    /// their own): the shared counters and drain flag, the byte throttle when its policy limits bytes, and the
    /// intercepted destination. Hands back what the connection loop needs beside it.
    fn into_ctx(self, intercepted: Option<Arc<Intercepted>>) -> Serving {
        let (metrics, timeouts, limits, throttle) = {
            let state = self.slot.load();
            (state.metrics.clone(), state.hop.timeouts, state.limits, state.throttle())
        };
        let shared = ConnShared::new(Some(metrics), Some(self.open));
        let ctx = Arc::new(ConnCtx {
            slot: self.slot,
            client: self.peer.client,
            local: self.peer.local,
            shared: shared.clone(),
            tasks: self.tasks,
            throttle: throttle.clone(),
            intercepted,
        });
        Serving { ctx, shared, throttle, timeouts, limits, stop: self.stop, client: self.peer.client }
    }
}

/// A connection's request context and what its loop needs ([`Accepted::into_ctx`]).
struct Serving {
    ctx: Arc<ConnCtx>,
    shared: Arc<ConnShared>,
    throttle: Option<Arc<Throttle>>,
    timeouts: Timeouts,
    limits: Limits,
    stop: watch::Receiver<bool>,
    client: SocketAddr,
}

async fn serve_tcp(
    mut stream: TcpStream,
    from: SocketAddr,
    slot: Slot,
    tasks: TaskTracker,
    stop: watch::Receiver<bool>,
    open: OpenConnection,
) {
    let _ = stream.set_nodelay(true);
    // Behind a balancer the client is the one its PROXY header names; without a valid one the connection ends here.
    // Boxed, like the TLS and intercepting paths below: only what an HTTP/1.1 connection needs for its whole life
    // stays in its task.
    let Some(peer) = Box::pin(proxied::peer(&mut stream, from, &slot.load_full())).await else { return };
    let (intercepting, tls, notes) = {
        let state = slot.load();
        (intercept::intercepting(&state), state.acceptor.is_some(), state.table.notes_files())
    };
    let conn = Accepted { peer, slot, tasks, stop, open };
    if intercepting {
        // Boxed, like TLS: the splice's state is for intercepting listeners only.
        return Box::pin(intercept::serve(stream, conn)).await;
    }
    if tls {
        // Boxed: a task is as large as its largest state, and every plain connection would otherwise carry
        // the TLS and HTTP/2 states too (bench/profile massif).
        return Box::pin(tls::serve(stream, conn)).await;
    }
    let stamped = notes && crate::arrival::enable(std::os::fd::AsRawFd::as_raw_fd(&stream));
    serve_http1(stream, conn, None, stamped).await;
}

/// Runs one HTTP/1.1 connection with its idle and header-read timers and the drain signal; `intercepted`: the
/// original destination of a connection on an intercepting listener, where its requests go; `stamped`: the socket
/// is a plain one whose reads say when their bytes arrived (`crate::arrival`).
pub async fn serve_http1<S>(stream: S, conn: Accepted, intercepted: Option<Arc<Intercepted>>, stamped: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Taken apart here so that only what the loop needs lives as long as the connection (bench/run E).
    let Serving { ctx, shared, throttle, timeouts, limits, stop, client } = conn.into_ctx(intercepted);
    let io = ConnIo::new(Throttled::new(stream, throttle), shared.clone());
    // hopgate enforces its head-size limits itself, with a page naming the limit (service::admit); the read
    // buffer's limit sits above them as a hard backstop (431).
    let settings =
        h1::Settings { max_headers: limits.max_headers, max_buf: (limits.max_head_bytes * 2).max(16 * 1024) };
    let conn = std::pin::pin!(h1::Conn::new(io, shared.clone(), ctx, settings, stamped).run());
    let asked = shared.clone();
    let graceful = move |_: std::pin::Pin<&mut _>| asked.ask_close();
    let (header_read, idle) = (timeouts.header_read, timeouts.idle);
    conn::drive(conn, graceful, &shared, header_read, idle, client, stop).await;
}

impl Server {
    /// Builds every listener's state without binding: what `hopgate check` runs, so that a config that checks
    /// is a config that runs (certificates, users files, targets).
    pub fn check(config: &Config) -> Result<(), StartupError> {
        let log = log::AccessLogger::open(&crate::config::AccessLog::Off, config.access_log_format)
            .map_err(|e| StartupError::new(e.to_string()))?;
        let shared = listener::Shared {
            out: Outbound { own: OwnAddrs::new(), timeouts: config.timeouts, route: None },
            log: Arc::new(log),
            limits: config.limits,
            auth: listener::Shared::auth_guard(&config.limits),
            metrics: Metrics::new(),
        };
        if let Some(a) = &config.admin {
            a.check().map_err(|e| StartupError::at(a.at.as_ref(), e))?;
            if let Some(path) = &a.users {
                crate::http::htpasswd::Users::load_with(path, shared.auth.clone())
                    .map_err(|e| StartupError::at(a.at.as_ref(), format!("admin users file {e}")))?;
            }
        }
        for l in &config.listeners {
            listener::build(l, l.listen.addr, &shared)
                .map_err(|e| e.context(format_args!("listener {}", l.listen.addr)))?;
        }
        Ok(())
    }
}
