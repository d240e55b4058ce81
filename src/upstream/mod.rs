//! Everything hopgate connects to: name resolution, the target policy, connect timeouts, and the connector of
//! the pooled HTTP client the relay uses (pool.rs). A name is resolved once; the policy checks every address; the connection goes to an
//! address that passed.

pub mod connect;
pub mod group;
mod h1;
pub mod parent;
pub mod policy;
pub mod pool;
pub mod tls;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{self, Timeouts};
use crate::error::{Error, Kind};
use crate::http::ViaName;
use crate::metrics::RouteMetrics;
use crate::proxy_protocol::{self, Addresses};
pub use connect::ConnectError;
pub use h1::{ConnError, MAX_INFORMATIONAL, OnInformational};
pub use parent::ParentProxy;
pub use policy::{OwnAddrs, TargetPolicy};
pub use pool::{Failed, HttpClient, ResponseBody, SendError};

/// What every room needs to open upstream connections: hopgate's own addresses (for the loop check) and the
/// timeouts. Rooms build their dialers, parent proxies and pools from it at start-up.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub own: Arc<OwnAddrs>,
    pub timeouts: Timeouts,
    /// The route the dialers made from here count for (connections opened and reused).
    pub route: Option<Arc<RouteMetrics>>,
}

impl Outbound {
    /// A dialer for client-chosen targets (`policy`: the forward proxy's) or for the operator's own choice
    /// (`None`: a gateway's `--to`, a parent proxy); the loop check applies to both.
    pub fn dialer(&self, policy: Option<TargetPolicy>) -> Dialer {
        let mut d = Dialer::new(policy, self.own.clone(), self.timeouts.connect);
        d.route = self.route.clone();
        d
    }

    /// The same, for the rooms of one route: what they dial and reuse is counted for it.
    pub fn for_route(&self, route: Arc<RouteMetrics>) -> Outbound {
        Outbound { own: self.own.clone(), timeouts: self.timeouts, route: Some(route) }
    }

    /// A parent proxy, dialled without target policy (the operator chose it) but with the loop check; its
    /// CONNECTs carry `via_name` (the listener's) in Via.
    pub fn parent(&self, cfg: &config::Parent, via_name: &ViaName) -> Arc<ParentProxy> {
        Arc::new(ParentProxy::new(cfg, self.dialer(None), self.timeouts.response_head, via_name))
    }
}

/// Resolves and connects, applying the target policy (when there is one) and the loop check.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// None for operator-chosen targets (a gateway's `--to`, a parent proxy).
    policy: Option<TargetPolicy>,
    own: Arc<OwnAddrs>,
    connect_timeout: Duration,
    /// The route whose `upstream_connections_opened` counts every connection this dialer makes, and whose
    /// `upstream_connections_reused` the pool over it counts.
    route: Option<Arc<RouteMetrics>>,
    /// Connect from this address (a tproxy listener's `spoof_source`: the client's own, bound with
    /// `IP_TRANSPARENT`); None: the kernel picks.
    source: Option<IpAddr>,
}

impl Dialer {
    pub fn new(policy: Option<TargetPolicy>, own: Arc<OwnAddrs>, connect_timeout: Duration) -> Dialer {
        Dialer { policy, own, connect_timeout, route: None, source: None }
    }

    /// The route this dialer counts for, if any.
    pub fn route(&self) -> Option<&Arc<RouteMetrics>> {
        self.route.as_ref()
    }

    /// This dialer connecting from `source`, an address that need not be this host's (`IP_TRANSPARENT`, which
    /// takes CAP_NET_ADMIN): a tproxy listener's upstream connections keep their client's address.
    pub fn with_source(mut self, source: IpAddr) -> Dialer {
        self.source = Some(source);
        self
    }

    /// This dialer with a connect timeout of its room's own (an FTP data connection's, a FastCGI or SCGI route's
    /// `script_timeout_secs`); policy and loop check stay.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Dialer {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Connects to `host:port` within the connect timeout; returns the stream and the address it reached.
    pub async fn dial(&self, host: &str, port: u16) -> Result<(TcpStream, SocketAddr), Error> {
        let target = display_target(host, port);
        match tokio::time::timeout(self.connect_timeout, self.dial_inner(host, port, &target)).await {
            Ok(r) => r,
            Err(_) => Err(Error::upstream(
                Kind::ConnectTimeout,
                format!("connecting to {target} timed out after {:?}", self.connect_timeout),
            )),
        }
    }

    async fn dial_inner(&self, host: &str, port: u16, target: &str) -> Result<(TcpStream, SocketAddr), Error> {
        let addrs = self.resolve(host, port, target).await?;
        let mut last: Option<(io::Error, SocketAddr)> = None;
        for addr in addrs {
            let connected = match self.source {
                None => TcpStream::connect(addr).await,
                Some(source) => connect_from(source, addr).await,
            };
            match connected {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    if let Some(r) = &self.route {
                        r.opened.inc();
                    }
                    return Ok((s, addr));
                }
                Err(e) => last = Some((e, addr)),
            }
        }
        let Some((e, addr)) = last else {
            return Err(Error::upstream(Kind::DnsFailed, format!("{target} resolved to no address")));
        };
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => Kind::ConnectRefused,
            io::ErrorKind::TimedOut => Kind::ConnectTimeout,
            _ => Kind::ConnectFailed,
        };
        let what = if kind == Kind::ConnectRefused { "connection refused by" } else { "cannot connect to" };
        Err(Error::upstream(kind, format!("{what} {}", describe(target, addr))).with_source(e))
    }

    /// Resolves once and keeps only the addresses the loop check and the policy allow.
    async fn resolve(&self, host: &str, port: u16, target: &str) -> Result<Vec<SocketAddr>, Error> {
        let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    return Err(Error::upstream(Kind::DnsFailed, format!("cannot resolve {host}")).with_source(e));
                }
            },
        };
        if resolved.is_empty() {
            return Err(Error::upstream(Kind::DnsFailed, format!("cannot resolve {host}: no addresses")));
        }
        if let Some(addr) = resolved.iter().find(|a| self.own.contains(**a)) {
            return Err(Error::client(Kind::Loop, format!("{} is this proxy itself", describe(target, *addr))));
        }
        let allowed: Vec<SocketAddr> = resolved.iter().copied().filter(|a| self.check(*a, target).is_ok()).collect();
        match self.check(resolved[0], target) {
            Err(e) if allowed.is_empty() => Err(e),
            _ => Ok(allowed),
        }
    }

    /// The loop check and the target policy for one address.
    pub fn check(&self, addr: SocketAddr, target: &str) -> Result<(), Error> {
        if self.own.contains(addr) {
            return Err(Error::client(Kind::Loop, format!("{} is this proxy itself", describe(target, addr))));
        }
        if let Some(policy) = &self.policy
            && !policy.permits(addr.ip())
        {
            return Err(Error::client(
                Kind::TargetForbidden,
                format!("target {target} resolves to {}, which the target policy refuses", addr.ip()),
            ));
        }
        Ok(())
    }
}

/// Connects to `addr` from `source` (any address, this host's or not: `IP_TRANSPARENT`), the port the kernel's.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match (source, addr) {
        (IpAddr::V4(_), SocketAddr::V4(_)) => tokio::net::TcpSocket::new_v4()?,
        (IpAddr::V6(_), SocketAddr::V6(_)) => tokio::net::TcpSocket::new_v6()?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the source address {source} is not of the family of {addr}"),
            ));
        }
    };
    let raw = socket2::SockRef::from(&socket);
    match source {
        IpAddr::V4(_) => raw.set_ip_transparent_v4(true)?,
        IpAddr::V6(_) => raw.set_ip_transparent_v6(true)?,
    }
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// `name:port (ip:port)`, or just `ip:port` when the target was an address already.
fn describe(target: &str, addr: SocketAddr) -> String {
    if target == addr.to_string() { target.to_string() } else { format!("{target} ({addr})") }
}

/// `host:port` with brackets around IPv6 literals.
pub fn display_target(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// An upstream connection as the pool's HTTP/1 handshake sees it: plain, TLS, or TLS inside a CONNECT tunnel.
pub struct UpstreamIo {
    io: TokioIo<tls::Stream>,
    /// The address the TCP connection reached (the origin's, or the parent proxy's).
    addr: SocketAddr,
}

impl UpstreamIo {
    /// Whether the upstream chose `h2` by ALPN.
    pub fn chose_h2(&self) -> bool {
        self.io.inner().chose_h2()
    }

    /// The protocol the upstream chose by ALPN, if any.
    pub fn alpn(&self) -> Option<String> {
        self.io.inner().alpn()
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The client a request is relayed for, as a PROXY protocol header names it (`send_proxy_protocol`): the
/// request extension a relay adds for a client whose pool sends the header (`HttpClient::sends_proxy_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxiedClient(pub Addresses);

/// Opens new upstream connections for the pool: direct, through a parent proxy (plain `http://`: the requests
/// go to the parent in absolute form), or TLS (`https://`; through a parent: a CONNECT tunnel, then TLS to the
/// origin inside it).
#[derive(Clone)]
pub struct Connector {
    dialer: Dialer,
    parent: Option<Arc<ParentProxy>>,
    /// None: `https://` targets are refused (a plain-HTTP-only client).
    tls: Option<tls::Origination>,
    /// Every new connection starts with a PROXY protocol header of this version (a gateway route's
    /// `send_proxy_protocol`; never through a parent).
    proxy_header: Option<proxy_protocol::Version>,
}

impl Connector {
    /// Requests on connections to `https`, `host`, `port` go to a parent proxy in absolute form.
    pub fn proxied(&self, https: bool) -> bool {
        self.parent.is_some() && !https
    }

    /// A new connection to `host:port` (`host` as in a URI: an IPv6 literal in brackets); with a PROXY header
    /// version, `client` is the one it names (and must be given).
    pub async fn connect(
        &self,
        https: bool,
        host: &str,
        port: u16,
        client: Option<&Addresses>,
    ) -> Result<UpstreamIo, Error> {
        // Brackets are part of the URI syntax, not of the address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls =
            || self.tls.clone().ok_or_else(|| Error::local(Kind::Internal, "no TLS settings for an https:// upstream"));
        if let Some(parent) = &self.parent {
            // The parent resolves names; an address literal can still be checked here.
            if let Ok(ip) = host.parse::<IpAddr>() {
                self.dialer.check(SocketAddr::new(ip, port), &display_target(host, port))?;
            }
            if https {
                // https:// through a parent: CONNECT, then TLS to the origin inside the tunnel, so the origin
                // is verified end to end and the request goes in origin-form (RFC 9110 §9.3.6).
                let o = tls()?;
                let (tunnel, addr) =
                    parent.tunnel(&display_target(host, port), &http::HeaderMap::new(), http::Version::HTTP_11).await?;
                let io = o.connect(host, port, tls::Stream::Tunnel(TokioIo::new(tunnel))).await?;
                return Ok(UpstreamIo { io: TokioIo::new(io), addr });
            }
            let (tcp, addr) = parent.dial().await?;
            return Ok(UpstreamIo { io: TokioIo::new(tls::Stream::Plain(tcp)), addr });
        }
        let (mut tcp, addr) = self.dialer.dial(host, port).await?;
        if let Some(version) = self.proxy_header {
            // Before anything else, TLS included (HAProxy's spec: sent at once, before any data).
            let client = client.ok_or_else(|| Error::local(Kind::Internal, "no client for the PROXY header"))?;
            tcp.write_all(&proxy_protocol::encode(version, client)).await.map_err(|e| {
                Error::upstream(Kind::ConnectFailed, format!("writing the PROXY header to {addr} failed"))
                    .with_source(e)
            })?;
        }
        let io =
            if https { tls()?.connect(host, port, tls::Stream::Plain(tcp)).await? } else { tls::Stream::Plain(tcp) };
        Ok(UpstreamIo { io: TokioIo::new(io), addr })
    }
}

/// Builds the pooled client of a forward proxy: any target, over `dialer`, or through `parent` when there is
/// one; with `tls`, it also reaches `https://` upstreams (pooled the same way).
pub fn http_client(
    dialer: Dialer,
    parent: Option<Arc<ParentProxy>>,
    tls: Option<tls::Origination>,
    pool_idle: Duration,
    max_idle_per_host: usize,
) -> HttpClient {
    HttpClient::new(Connector { dialer, parent, tls, proxy_header: None }, None, pool_idle, max_idle_per_host)
}

/// Builds the pooled client of a gateway route, which only ever talks to `scheme://authority`: one idle list,
/// no key to look up. With `proxy_header`, every connection starts with a PROXY protocol header and carries one
/// client's requests only: an idle list per client (requests name theirs in a [`ProxiedClient`] extension).
/// `http`: the version spoken (`upstream_http`; `tls` offers it by ALPN), HTTP/2 connections carrying up to
/// `max_streams` requests at once.
#[allow(clippy::too_many_arguments)]
pub fn gateway_client(
    dialer: Dialer,
    tls: Option<tls::Origination>,
    scheme: &Scheme,
    authority: &Authority,
    proxy_header: Option<proxy_protocol::Version>,
    pool_idle: Duration,
    max_idle_per_host: usize,
    http: (config::UpstreamHttp, usize),
) -> HttpClient {
    let https = *scheme == Scheme::HTTPS;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let target = Some((https, authority.host(), port));
    let connector = Connector { dialer, parent: None, tls, proxy_header };
    let mut client = HttpClient::new(connector, target, pool_idle, max_idle_per_host);
    client.speak(http.0.effective(https), http.1);
    client
}
