//! `hopgate tunnel`: the client side of a web tunnel. Opens `CONNECT HOST:PORT` through an
//! HTTP or HTTPS proxy (RFC 9110 §9.3.6) and pumps bytes between the tunnel and a local
//! connection (`--listen`, one tunnel per accepted connection) or stdin/stdout (`--stdio`, one
//! tunnel, as an ssh ProxyCommand).
//!
//! Any 2xx opens the tunnel; bytes the proxy sent after its blank line are kept (hyper's
//! `Upgraded` hands them out first). Anything else is a [`TunnelError`] whose Display is one
//! line naming the proxy and its status.
//!
//! With `--h2` (an https:// proxy that chooses `h2` by ALPN), every tunnel is a CONNECT stream (RFC 9113 §8.5)
//! on one TLS connection ([`H2Pool`]): no TCP or TLS handshake per tunnel, at most `--max-streams` tunnels per
//! connection before another is opened, and a connection that died replaced by the next tunnel that needs one.
//! A proxy that chooses HTTP/1.1 gets one connection per tunnel, as without `--h2`.
//!
//! A tunnel that fails (the proxy's connection or stream reset, say) resets the local connection (SO_LINGER 0)
//! rather than closing it as if it had ended.
//! Does not: follow proxy redirects, retry, or answer a 407 challenge other than with the `--proxy-user` it was
//! given.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use ::http::uri::{Authority, Scheme};
use ::http::{HeaderMap, StatusCode, Uri, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::error::Error;
use crate::http::basic;
use crate::tunnel;
use crate::upstream::{self, ConnectError, Dialer, OwnAddrs};

/// Dialing the proxy, TLS with it and its answer to CONNECT must all fit in this.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 30;
/// Pause after a failed accept (out of file descriptors, say) before accepting again.
const ACCEPT_BACKOFF_MILLIS: u64 = 100;
/// `--max-streams`: tunnels on one HTTP/2 connection to the proxy before a second one is opened (hopgate's
/// listeners allow 200 streams per connection).
pub const DEFAULT_MAX_STREAMS: usize = 100;

/// `http://HOST[:PORT]` or `https://HOST[:PORT]` (default ports 80 and 443).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    pub tls: bool,
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl FromStr for ProxyUrl {
    type Err = TunnelError;

    fn from_str(s: &str) -> Result<ProxyUrl, TunnelError> {
        let bad = |why: &str| TunnelError::BadProxyUrl(format!("{s:?}: {why}"));
        let uri: Uri = s.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => false,
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            _ => return Err(bad("expected http://HOST:PORT or https://HOST:PORT")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials go in --proxy-user, not in the URL"));
        }
        if !matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/") | Some("")) {
            return Err(bad("a proxy URL has no path"));
        }
        let default = if tls { 443 } else { 80 };
        let port = crate::config::authority_port(authority.as_str()).map_err(|e| bad(&e))?.unwrap_or(default);
        // hyper's URI parser lets stray brackets and the like through: the host must be RFC 3986's.
        let (host, _) = crate::http::parse_host(authority.as_str().as_bytes()).ok_or_else(|| bad("bad host"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ProxyUrl { tls, host: host.to_owned(), port })
    }
}

impl fmt::Display for ProxyUrl {
    /// `HOST:PORT` (`[IPv6]:PORT`), with `https://` in front for TLS proxies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https://" } else { "" };
        if self.host.contains(':') {
            write!(f, "{scheme}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}{}:{}", self.host, self.port)
        }
    }
}

/// What `hopgate tunnel` was asked to do. The CLI fills it and calls [`TunnelClient::run_listen`]
/// or [`TunnelClient::run_stdio`].
#[derive(Clone)]
pub struct TunnelClient {
    pub proxy: ProxyUrl,
    /// `HOST:PORT` (or `[IPv6]:PORT`) the proxy should connect to.
    pub to: String,
    /// `--proxy-user USER:PASS`: sent as `Proxy-Authorization: Basic`.
    pub proxy_user: Option<(String, String)>,
    /// Extra CA certificates (PEM) trusted for an https:// proxy, besides the system roots.
    pub ca: Option<PathBuf>,
    /// `--h2`: offer HTTP/2 to an https:// proxy and carry every tunnel as a stream of one connection.
    pub h2: bool,
    /// `--max-streams`: tunnels per HTTP/2 connection (at least 1).
    pub max_streams: usize,
}

impl fmt::Debug for TunnelClient {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelClient")
            .field("proxy", &self.proxy)
            .field("to", &self.to)
            .field("proxy_user", &self.proxy_user.as_ref().map(|(user, _)| user))
            .field("ca", &self.ca)
            .field("h2", &self.h2)
            .field("max_streams", &self.max_streams)
            .finish()
    }
}

/// Splits `--proxy-user USER:PASS` at the first colon (RFC 7617: the user-id has none).
pub fn parse_proxy_user(s: &str) -> Result<(String, String), TunnelError> {
    s.split_once(':')
        .map(|(user, pass)| (user.to_owned(), pass.to_owned()))
        .ok_or_else(|| TunnelError::BadProxyUser("expected USER:PASS".into()))
}

impl TunnelClient {
    /// Checks both addresses now, so that a typo fails before anything listens.
    pub fn new(proxy: &str, to: &str) -> Result<TunnelClient, TunnelError> {
        let proxy = proxy.parse()?;
        parse_target(to)?;
        Ok(TunnelClient {
            proxy,
            to: to.to_owned(),
            proxy_user: None,
            ca: None,
            h2: false,
            max_streams: DEFAULT_MAX_STREAMS,
        })
    }

    /// Checks the options together: `--h2` needs an https:// proxy, `--max-streams` at least 1.
    pub fn check(&self) -> Result<(), TunnelError> {
        if self.h2 && !self.proxy.tls {
            return Err(TunnelError::BadProxyUrl(format!(
                "{}: --h2 needs an https:// proxy (HTTP/2 is chosen by ALPN in the TLS handshake)",
                self.proxy
            )));
        }
        if self.max_streams == 0 {
            return Err(TunnelError::BadProxyUrl("--max-streams must be at least 1".into()));
        }
        Ok(())
    }

    /// Listens on `listen` and gives each accepted connection its own CONNECT tunnel. Calls
    /// `ready` with the bound address once listening (the CLI prints `listening on
    /// tcp://IP:PORT`). Runs until dropped, which also ends the open tunnels; returns only when
    /// the set-up fails (bad target, CA file, bind).
    pub async fn run_listen(self, listen: SocketAddr, ready: impl FnOnce(SocketAddr)) -> Result<(), TunnelError> {
        let opener = Arc::new(Opener::new(&self)?);
        let listener =
            TcpListener::bind(listen).await.map_err(|source| TunnelError::Listen { addr: listen, source })?;
        let local = listener.local_addr().map_err(|source| TunnelError::Listen { addr: listen, source })?;
        ready(local);
        let mut tunnels = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((mut client, peer)) => {
                        let opener = Arc::clone(&opener);
                        tunnels.spawn(async move {
                            match opener.open().await {
                                Ok(upstream) => match opener.pump_tcp(&mut client, upstream).await {
                                    Ok((up, down)) => tracing::debug!(%peer, up, down, "tunnel closed"),
                                    Err(e) => {
                                        tracing::info!(%peer, "{e}");
                                        // A tunnel that failed is no tunnel that ended: the local side sees a
                                        // reset, as it would from the target itself.
                                        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                                    }
                                },
                                Err(e) => {
                                    tracing::warn!(%peer, "{e}");
                                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("accept on {local} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MILLIS)).await;
                    }
                },
                Some(_) = tunnels.join_next(), if !tunnels.is_empty() => {}
            }
        }
    }

    /// One tunnel over stdin/stdout (an ssh ProxyCommand). EOF on stdin half-closes the tunnel;
    /// this returns once the remote side has finished too. Tokio reads stdin on a blocking
    /// thread that may still sit in read(2) afterwards: the caller should exit the process
    /// (`std::process::exit`) rather than wait for the runtime to shut down.
    pub async fn run_stdio(self) -> Result<(), TunnelError> {
        self.run_stream(tokio::io::join(tokio::io::stdin(), tokio::io::stdout())).await
    }

    /// One tunnel between `local` and the target: what [`TunnelClient::run_stdio`] does over
    /// stdin/stdout, for any stream.
    async fn run_stream<S: AsyncRead + AsyncWrite + Unpin>(self, local: S) -> Result<(), TunnelError> {
        let opener = Opener::new(&self)?;
        let upstream = opener.open().await?;
        opener.pump(local, upstream).await.map(|_| ())
    }
}

/// Everything needed per tunnel, prepared once: the dialer to the proxy, target, credentials, TLS configuration.
struct Opener {
    /// hopgate's one dialer: the proxy's name resolved once, each address tried in turn, TCP_NODELAY. No target
    /// policy (the user named the proxy) and no own listeners to loop to; bounded by the handshake's timeout.
    dialer: Dialer,
    proxy: ProxyUrl,
    target: Authority,
    /// `Proxy-Authorization` when `--proxy-user` was given; nothing else (no Via: this is a client).
    fields: HeaderMap,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `--h2`: the HTTP/2 connections to the proxy.
    h2: Option<H2Pool>,
}

impl Opener {
    fn new(client: &TunnelClient) -> Result<Opener, TunnelError> {
        let target = parse_target(&client.to)?;
        let mut fields = HeaderMap::new();
        if let Some((user, pass)) = &client.proxy_user {
            fields.insert(header::PROXY_AUTHORIZATION, basic::encode(user, pass));
        }
        client.check()?;
        let tls = if client.proxy.tls {
            let name = ServerName::try_from(client.proxy.host.clone())
                .map_err(|_| TunnelError::BadProxyUrl(format!("{:?}: not a TLS server name", client.proxy.host)))?;
            let mut config = tls_config(client.ca.as_deref())?;
            if client.h2 {
                Arc::make_mut(&mut config).alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            }
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        let dialer = Dialer::new(None, OwnAddrs::new(), Duration::from_secs(HANDSHAKE_TIMEOUT_SECS));
        let h2 = client.h2.then(|| H2Pool::new(client.max_streams));
        Ok(Opener { dialer, proxy: client.proxy.clone(), target, fields, tls, h2 })
    }

    async fn open(&self) -> Result<Tunnel, TunnelError> {
        let deadline = Duration::from_secs(HANDSHAKE_TIMEOUT_SECS);
        let opening = async {
            match &self.h2 {
                Some(pool) => pool.open(self).await,
                None => self.open_now().await.map(|io| Tunnel { io, _slot: None }),
            }
        };
        match tokio::time::timeout(deadline, opening).await {
            Ok(result) => result,
            Err(_) => Err(TunnelError::Timeout {
                proxy: self.proxy.to_string(),
                target: self.target.to_string(),
                secs: HANDSHAKE_TIMEOUT_SECS,
            }),
        }
    }

    async fn open_now(&self) -> Result<TokioIo<Upgraded>, TunnelError> {
        let proxy = self.proxy.to_string();
        let upgraded = match self.connect().await? {
            ProxyConn::Tcp(tcp) => self.handshake(tcp, &proxy).await?,
            ProxyConn::Tls(tls) => self.handshake(tls, &proxy).await?,
        };
        Ok(TokioIo::new(upgraded))
    }

    /// A connection to the proxy: TCP, then TLS for an https:// proxy.
    async fn connect(&self) -> Result<ProxyConn, TunnelError> {
        let proxy = self.proxy.to_string();
        let unreachable = |source| TunnelError::ProxyUnreachable { proxy: proxy.clone(), source: Box::new(source) };
        let (tcp, _) = self.dialer.dial(&self.proxy.host, self.proxy.port).await.map_err(unreachable)?;
        match &self.tls {
            None => Ok(ProxyConn::Tcp(tcp)),
            Some((connector, name)) => connector
                .connect(name.clone(), tcp)
                .await
                .map(|tls| ProxyConn::Tls(Box::new(tls)))
                .map_err(|source| TunnelError::Tls { proxy: proxy.clone(), source }),
        }
    }

    /// CONNECT over a connection to the proxy; a refusal names the proxy and its status.
    async fn handshake<S>(&self, io: S, proxy: &str) -> Result<Upgraded, TunnelError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        upstream::connect::connect(io, &self.target, self.fields.clone()).await.map_err(|e| {
            let (proxy, target) = (proxy.to_owned(), self.target.to_string());
            match e {
                ConnectError::Handshake(source) => TunnelError::Handshake { proxy, target, source },
                ConnectError::Refused { status, reason } => TunnelError::Refused { proxy, target, status, reason },
            }
        })
    }

    /// [`Opener::pump`] for a local TCP connection: spliced (tunnel::splice) when the connection to the proxy is
    /// plain TCP too (an http:// proxy, HTTP/1.1), pumped otherwise.
    async fn pump_tcp(&self, local: &mut TcpStream, upstream: Tunnel) -> Result<(u64, u64), TunnelError> {
        let Tunnel { io, _slot } = upstream;
        match tunnel::tcp_of(io.into_inner()) {
            Ok((mut tcp, early, _)) => {
                let outcome = tunnel::splice(local, Bytes::new(), &mut tcp, early, Duration::MAX).await;
                let piped = match outcome.ended {
                    tunnel::Ended::Closed => Ok((outcome.a_to_b, outcome.b_to_a)),
                    tunnel::Ended::Idle => Err(io::Error::new(io::ErrorKind::TimedOut, "tunnel idle")),
                    tunnel::Ended::Failed(e) => Err(e),
                };
                piped.map_err(|source| TunnelError::Tunnel {
                    proxy: self.proxy.to_string(),
                    target: self.target.to_string(),
                    source,
                })
            }
            Err(up) => self.pump(local, Tunnel { io: TokioIo::new(up), _slot }).await,
        }
    }

    async fn pump<S>(&self, local: S, upstream: Tunnel) -> Result<(u64, u64), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // No idle timeout (the proxy has its own): a time too large to add to a clock reading (see tunnel::pump).
        // The stream's slot on its HTTP/2 connection is given back when the tunnel ends.
        let Tunnel { mut io, _slot } = upstream;
        let piped = tunnel::pipe(local, &mut io, Duration::MAX).await;
        if piped.is_err() {
            // The local connection failed (a reset, say): its HTTP/2 stream is reset too, so that the proxy
            // resets the target's connection (RFC 9113 §8.5) rather than closing it as ended.
            io.inner_mut().reset_h2_stream(tunnel::H2_CONNECT_ERROR);
        }
        piped.map_err(|source| TunnelError::Tunnel {
            proxy: self.proxy.to_string(),
            target: self.target.to_string(),
            source,
        })
    }
}

/// A connection to the proxy.
enum ProxyConn {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// An open tunnel: the upgraded connection (or HTTP/2 stream), and its place on an HTTP/2 connection.
struct Tunnel {
    io: TokioIo<Upgraded>,
    _slot: Option<StreamSlot>,
}

/// One tunnel counted on its HTTP/2 connection, until dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One HTTP/2 connection to the proxy and how many tunnels it carries.
struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    streams: Arc<AtomicUsize>,
}

/// `--h2`: the HTTP/2 connections to the proxy, each carrying up to `max_streams` tunnels. Opening a tunnel takes
/// the first live connection with room, else makes a new one; a connection the proxy closed (or that failed) is
/// dropped from the list by the next tunnel that looks. Opens are one at a time (a lock), so a burst of local
/// connections fills one HTTP/2 connection rather than racing to open many.
struct H2Pool {
    conns: tokio::sync::Mutex<Vec<H2Conn>>,
    max_streams: usize,
}

impl H2Pool {
    fn new(max_streams: usize) -> H2Pool {
        H2Pool { conns: tokio::sync::Mutex::new(Vec::new()), max_streams }
    }

    /// A tunnel on a connection with room. A stream refused because its connection had just died (the proxy
    /// restarted, say, before the connection's task noticed) is tried once more on a new connection.
    async fn open(&self, opener: &Opener) -> Result<Tunnel, TunnelError> {
        let mut fresh_only = false;
        loop {
            let (send, slot, reused) = {
                let mut conns = self.conns.lock().await;
                conns.retain(|c| !c.send.is_closed());
                let found = match fresh_only {
                    true => None,
                    false => conns.iter().position(|c| c.streams.load(Ordering::Acquire) < self.max_streams),
                };
                let (conn, reused) = match found {
                    Some(i) => (&conns[i], true),
                    None => match self.connect(opener).await? {
                        Some(conn) => {
                            conns.push(conn);
                            (&conns[conns.len() - 1], false)
                        }
                        // The proxy chose HTTP/1.1: one connection per tunnel after all.
                        None => return opener.open_now().await.map(|io| Tunnel { io, _slot: None }),
                    },
                };
                conn.streams.fetch_add(1, Ordering::AcqRel);
                (conn.send.clone(), StreamSlot(conn.streams.clone()), reused)
            };
            match opener.connect_stream(send).await {
                Ok(io) => return Ok(Tunnel { io, _slot: Some(slot) }),
                Err(TunnelError::Handshake { source, .. })
                    if reused && !fresh_only && (source.is_closed() || source.is_canceled()) =>
                {
                    tracing::debug!(proxy = %opener.proxy, "HTTP/2 connection to the proxy was gone: a new one");
                    fresh_only = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A new HTTP/2 connection to the proxy; None when its ALPN chose HTTP/1.1.
    async fn connect(&self, opener: &Opener) -> Result<Option<H2Conn>, TunnelError> {
        let proxy = opener.proxy.to_string();
        let ProxyConn::Tls(tls) = opener.connect().await? else { return Ok(None) };
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(None);
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|source| TunnelError::Handshake {
                proxy: proxy.clone(),
                target: opener.target.to_string(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::info!(%proxy, "HTTP/2 connection to the proxy ended: {e}");
            }
        });
        tracing::debug!(proxy = %opener.proxy, "new HTTP/2 connection to the proxy");
        Ok(Some(H2Conn { send, streams: Arc::new(AtomicUsize::new(0)) }))
    }
}

impl Opener {
    /// CONNECT on a new stream of an HTTP/2 connection to the proxy.
    async fn connect_stream(
        &self,
        mut send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    ) -> Result<TokioIo<Upgraded>, TunnelError> {
        let (proxy, target) = (self.proxy.to_string(), self.target.to_string());
        let mut request = ::http::Request::new(Empty::<Bytes>::new());
        *request.method_mut() = ::http::Method::CONNECT;
        *request.uri_mut() = Uri::from(self.target.clone());
        *request.version_mut() = ::http::Version::HTTP_2;
        request.headers_mut().extend(self.fields.clone());
        if let Some(auth) = request.headers_mut().get_mut(header::PROXY_AUTHORIZATION) {
            auth.set_sensitive(true);
        }
        let handshake = |source| TunnelError::Handshake { proxy: proxy.clone(), target: target.clone(), source };
        let mut response = send.send_request(request).await.map_err(handshake)?;
        let status = response.status();
        if !status.is_success() {
            let reason = status.canonical_reason().unwrap_or("").to_string();
            return Err(TunnelError::Refused { proxy, target, status, reason });
        }
        let upgraded = hyper::upgrade::on(&mut response).await.map_err(handshake)?;
        Ok(TokioIo::new(upgraded))
    }
}

/// `HOST:PORT` with a port and nothing else.
fn parse_target(to: &str) -> Result<Authority, TunnelError> {
    let bad = || TunnelError::BadTarget(to.to_owned());
    let authority: Authority = to.parse().map_err(|_| bad())?;
    if !matches!(crate::config::authority_port(to), Ok(Some(_))) || to.contains('@') {
        return Err(bad());
    }
    // RFC 3986's host (hyper's URI parser is more lenient), a port, and no userinfo.
    match crate::http::parse_host(to.as_bytes()) {
        Some((host, Some(port))) if !host.is_empty() && port != 0 => Ok(authority),
        _ => Err(bad()),
    }
}

/// The system roots plus the PEM certificates of `ca`, for TLS with an https:// proxy.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    crate::tls::client_config(ca)
        .map(Arc::new)
        .map_err(|reason| TunnelError::Ca { path: ca.map(Path::to_path_buf).unwrap_or_default(), reason })
}

/// Why a tunnel could not be opened or ended badly. Display: one line, naming the proxy.
#[derive(Debug)]
pub enum TunnelError {
    BadProxyUrl(String),
    BadTarget(String),
    BadProxyUser(String),
    Ca {
        path: PathBuf,
        reason: String,
    },
    Listen {
        addr: SocketAddr,
        source: io::Error,
    },
    /// The dialer could not connect to the proxy (its name, refused, its timeout).
    ProxyUnreachable {
        proxy: String,
        source: Box<Error>,
    },
    Tls {
        proxy: String,
        source: io::Error,
    },
    /// The proxy closed or spoke something that is not an HTTP/1 response.
    Handshake {
        proxy: String,
        target: String,
        source: hyper::Error,
    },
    /// The proxy answered CONNECT with a non-2xx status.
    Refused {
        proxy: String,
        target: String,
        status: StatusCode,
        reason: String,
    },
    Timeout {
        proxy: String,
        target: String,
        secs: u64,
    },
    /// The tunnel was open, then a read or write failed or it sat idle.
    Tunnel {
        proxy: String,
        target: String,
        source: io::Error,
    },
}

impl TunnelError {
    /// The proxy's status, when it answered CONNECT with a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            TunnelError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::BadProxyUrl(why) => write!(f, "bad proxy URL {why}"),
            TunnelError::BadTarget(to) => write!(f, "bad tunnel target {to:?}: expected HOST:PORT"),
            TunnelError::BadProxyUser(why) => write!(f, "bad proxy user: {why}"),
            TunnelError::Ca { path, reason } => write!(f, "CA file {}: {reason}", path.display()),
            TunnelError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            TunnelError::ProxyUnreachable { proxy, source } => {
                // The OS's words (refused, no such name) when there are any, else the dialer's (its timeout).
                let mut cause: &dyn std::error::Error = &**source;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                write!(f, "cannot connect to proxy {proxy}: {cause}")
            }
            TunnelError::Tls { proxy, source } => {
                write!(f, "TLS with proxy {proxy} failed: {source}")
            }
            TunnelError::Handshake { proxy, target, source } => {
                write!(f, "proxy {proxy} gave no answer to CONNECT {target}: {source}")?;
                if let Some(cause) = std::error::Error::source(source) {
                    write!(f, ": {cause}")?;
                }
                Ok(())
            }
            TunnelError::Refused { proxy, target, status, reason } => {
                let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
                write!(f, "proxy {proxy} refused CONNECT {target}: {} {reason}", status.as_u16())
            }
            TunnelError::Timeout { proxy, target, secs } => {
                write!(f, "proxy {proxy} did not open a tunnel to {target} within {secs}s")
            }
            TunnelError::Tunnel { proxy, target, source } => {
                write!(f, "tunnel to {target} via proxy {proxy} ended: {source}")
            }
        }
    }
}

impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TunnelError::Listen { source, .. }
            | TunnelError::Tls { source, .. }
            | TunnelError::Tunnel { source, .. } => Some(source),
            TunnelError::ProxyUnreachable { source, .. } => Some(&**source),
            TunnelError::Handshake { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p: ProxyUrl = "http://127.0.0.1:3128".parse().unwrap();
        assert_eq!(p, ProxyUrl { tls: false, host: "127.0.0.1".into(), port: 3128 });
        assert_eq!(p.to_string(), "127.0.0.1:3128");
        let p: ProxyUrl = "https://proxy.example/".parse().unwrap();
        assert_eq!((p.tls, p.port, p.to_string().as_str()), (true, 443, "https://proxy.example:443"));
        let p: ProxyUrl = "http://[::1]:8080".parse().unwrap();
        assert_eq!((p.host.as_str(), p.to_string().as_str()), ("::1", "[::1]:8080"));
        // Hosts hyper's URI parser lets through (found by the fuzz target config_values), and port 0.
        for bad in [
            "127.0.0.1:3128",
            "socks5://h:1",
            "http://u:p@h:1",
            "http://h:1/path",
            "http://",
            "",
            "http://h:99999",
            "http://h:80a",
            "http://i[]",
            "http://[zz]:1",
            "http://a[b]:8080",
            "http://h:0",
        ] {
            assert!(bad.parse::<ProxyUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn targets() {
        for good in ["example.com:22", "127.0.0.1:443", "[::1]:22"] {
            assert!(parse_target(good).is_ok(), "{good}");
        }
        let bad_targets = ["example.com", "u@example.com:22", ":22", "example.com:x", "a b:1", "", "h:99999", "h:+22"];
        for bad in bad_targets.into_iter().chain(["h:0", "1[]:22", "[zz]:22"]) {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_proxy_user("ann:pa:ss").unwrap(), ("ann".into(), "pa:ss".into()));
        assert!(parse_proxy_user("ann").is_err());
    }

    #[test]
    fn refusal_is_one_line() {
        let e = TunnelError::Refused {
            proxy: "127.0.0.1:3128".into(),
            target: "example.com:22".into(),
            status: StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            reason: "Proxy Authentication Required\r\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy 127.0.0.1:3128 refused CONNECT example.com:22: 407 Proxy Authentication Required"
        );
    }
}
