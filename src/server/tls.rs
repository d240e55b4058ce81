//! HTTPS/HTTP, TLS termination: the SNI resolver over certificates loaded by `crate::tls`, and the
//! per-connection path of an `https://` listener: plain-HTTP guard -> handshake under `tls_handshake` -> HTTP/2
//! when ALPN chose `h2`, else HTTP/1.1 (`server::serve_http1`, the same loop plain listeners run).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1; rustls has neither).
//! Does not: ask for client certificates, staple OCSP, or reload certificates while running.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::conn::ConnIo;
use super::listener::ListenerState;
use super::service;
use crate::config::CertPair;
use crate::error::{Error, Kind, StartupError};
use crate::http::pages;
use crate::tls::{LoadedCert, load_pair, provider};

/// ALPN protocols an `https://` listener offers, most preferred first.
const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1"];
/// HTTP/2 flow control (RFC 9113 §5.2) on client connections: how much a client may send on one stream, and on
/// the whole connection, before hopgate has passed it on. A tunnel (CONNECT) releases its stream's window only
/// for bytes it has written to the target, so a tunnel whose target stops reading holds at most
/// [`H2_STREAM_WINDOW`] of the connection's window: with the connection's 16 times larger, 15 tunnels can stall
/// before the others on the connection must wait (tests/h2_connect.rs). It is also the most a client can make
/// hopgate hold, unread, per connection. hyper's defaults (1 MiB both) let one stalled tunnel take the whole
/// connection.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// See [`H2_STREAM_WINDOW`].
pub const H2_CONNECTION_WINDOW: u32 = 16 * H2_STREAM_WINDOW;
/// Streams a client may have open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS; hyper's
/// default). Tunnels count against `max_tunnels` too.
pub const H2_MAX_STREAMS: u32 = 200;
/// The TLS record type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Picks a certificate by the ClientHello's SNI: the first whose names match, else the first configured.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<LoadedCert>,
}

impl SniResolver {
    /// `certs` must not be empty: the first one is the default.
    pub fn new(certs: Vec<LoadedCert>) -> Option<SniResolver> {
        if certs.is_empty() { None } else { Some(SniResolver { certs }) }
    }

    /// The certificate served for `sni` (None: no SNI, as when a client connects by IP address).
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let found = sni.and_then(|sni| {
            let sni = sni.to_ascii_lowercase();
            self.certs.iter().find(|c| c.names.iter().any(|n| name_matches(n, &sni)))
        });
        &found.unwrap_or(&self.certs[0]).key
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

/// RFC 6125 §6.4.3: `*` stands for exactly one whole left-most label.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

/// The TLS side of an `https://` listener.
#[derive(Clone)]
pub struct Acceptor {
    tls: TlsAcceptor,
    handshake_timeout: Duration,
}

impl Acceptor {
    /// Loads every certificate pair (the first is the default) and builds the server config.
    pub fn new(pairs: &[CertPair], handshake_timeout: Duration) -> Result<Acceptor, StartupError> {
        let mut certs = Vec::new();
        for pair in pairs {
            certs.push(load_pair(&pair.cert, &pair.key).map_err(|e| StartupError::new(e.to_string()))?);
        }
        let resolver = SniResolver::new(certs)
            .ok_or_else(|| StartupError::new("an https:// listener needs a certificate and key"))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| StartupError::new(format!("TLS settings: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(Acceptor { tls: TlsAcceptor::from(Arc::new(config)), handshake_timeout })
    }
}

/// What arrived first on a TLS port.
enum Opening {
    Tls,
    /// Plain HTTP (an ASCII method name): answered with a 400 in plain text.
    PlainHttp,
    Closed,
}

async fn opening(stream: &TcpStream) -> std::io::Result<Opening> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(Opening::Closed);
    }
    Ok(match first[0] {
        TLS_HANDSHAKE_RECORD => Opening::Tls,
        b'A'..=b'Z' => Opening::PlainHttp,
        // Anything else goes to rustls, which rejects it with a clear error.
        _ => Opening::Tls,
    })
}

/// One client connection on an `https://` listener. Everything before the HTTP connection (the peek, the
/// handshake, the plain-HTTP answer) is bounded by `tls_handshake`, so a client that stalls holds only its own
/// task. `state` is an `https://` listener's (it has an acceptor).
pub async fn serve(stream: TcpStream, conn: super::Accepted) {
    // The certificates of the configuration running when the handshake starts (a reload serves renewed ones to
    // new handshakes).
    let state = conn.slot.load_full();
    let peer = conn.peer;
    let Some(acceptor) = state.acceptor.clone() else { return };
    let limit = acceptor.handshake_timeout;
    let start = Instant::now();
    let tls = match tokio::time::timeout(limit, handshake(stream, peer.client, &acceptor, &state)).await {
        Err(_) => {
            tracing::info!(client = %peer, "TLS handshake not finished within {limit:?}: connection closed");
            state.metrics.tls_error.inc();
            return;
        }
        Ok(None) => return,
        Ok(Some(tls)) => tls,
    };
    state.metrics.tls_ok.inc();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    tracing::trace!(client = %peer, h2, "TLS handshake done in {:?}", start.elapsed());
    drop(state);
    if h2 {
        serve_http2(tls, conn).await;
    } else {
        super::serve_http1(tls, conn, None, false).await;
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &Acceptor,
    state: &ListenerState,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match opening(&stream).await {
        Ok(Opening::Tls) => {}
        Ok(Opening::Closed) | Err(_) => return None,
        Ok(Opening::PlainHttp) => {
            tracing::info!(client = %peer, "plain HTTP sent to the TLS listener {}: answered 400", state.hop.public_addr());
            state.metrics.tls_error.inc();
            answer_plain_http(stream, state).await;
            return None;
        }
    }
    match acceptor.tls.accept(stream).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            tracing::info!(client = %peer, "TLS handshake failed: {e}");
            state.metrics.tls_error.inc();
            None
        }
    }
}

/// A client spoke plain HTTP to the TLS port: one 400 page in plain text that says so, then close.
async fn answer_plain_http(stream: TcpStream, state: &ListenerState) {
    let reason = format!("this port speaks TLS: plain HTTP was sent to {}; use https://", state.hop.public_addr());
    let svc = service_fn(move |_req| {
        let reason = reason.clone();
        async move { Ok::<_, Infallible>(pages::error(&Error::client(Kind::BadFraming, reason))) }
    });
    let mut b = http1::Builder::new();
    b.keep_alive(false).max_buf_size(16 * 1024);
    let _ = b.serve_connection(TokioIo::new(stream), svc).await;
}

/// Runs one HTTP/2 connection (ALPN `h2`) with the idle timer and the drain signal. HTTP/2 has no slow request
/// head to guard against at this level (hyper's h2 bounds the header list), so the head timer is the idle timer.
async fn serve_http2<S>(stream: S, conn: super::Accepted)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = conn.into_ctx(None);
    let idle = s.timeouts.idle;
    let max_header_list = u32::try_from(s.limits.max_head_bytes * 2).unwrap_or(u32::MAX);
    let ctx = s.ctx.clone();
    let svc = service_fn(move |req| service::call(req, ctx.clone()));
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(max_header_list)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_concurrent_streams(H2_MAX_STREAMS)
        // RFC 8441: extended CONNECT (`:protocol websocket`), served as a WebSocket upgrade (backend::relay).
        .enable_connect_protocol();
    let io = ConnIo::new(crate::limit::Throttled::new(stream, s.throttle.clone()), s.shared.clone());
    let hyper_conn = b.serve_connection(TokioIo::new(io), svc);
    let graceful = |c: std::pin::Pin<&mut _>| http2::Connection::graceful_shutdown(c);
    let hyper_conn = std::pin::pin!(hyper_conn);
    super::conn::drive(hyper_conn, graceful, &s.shared, idle, idle, s.client, s.stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("a.example", "a.example"));
        assert!(name_matches("*.example", "a.example"));
        assert!(!name_matches("*.example", "example"));
        assert!(!name_matches("*.example", "a.b.example"));
        assert!(!name_matches("*.example", ".example"));
        assert!(!name_matches("a.example", "b.example"));
    }
}
