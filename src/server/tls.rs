//! HTTPS/HTTP, TLS termination: certificate loading (one loader for `run` and `check`), the SNI resolver, and the
//! per-connection path of an `https://` listener: plain-HTTP guard -> handshake under `tls_handshake` -> HTTP/2
//! when ALPN chose `h2`, else HTTP/1.1 (`server::serve_http1`, the same loop plain listeners run).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1; rustls has neither).
//! Does not: ask for client certificates, staple OCSP, or reload certificates while running.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::conn::{ConnIo, ConnShared};
use super::listener::ListenerState;
use super::service::{self, ConnCtx};
use crate::config::CertPair;
use crate::http::pages;

/// ALPN protocols an `https://` listener offers, most preferred first.
const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1"];
/// The TLS record type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The crypto provider of every TLS config hopgate builds (client and server side).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which file of a certificate pair is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
}

/// A certificate pair that can't be used, naming the file at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    pub which: Which,
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.which {
            Which::Cert => "certificate",
            Which::Key => "key",
        };
        write!(f, "{what} {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for CertError {}

/// A loaded certificate chain with its key, and the DNS names SNI can pick it by.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the end-entity certificate's subjectAltName, lowercase (`*.example.com` for wildcards).
    pub names: Vec<String>,
}

/// Reads and checks one certificate pair: the chain is PEM with at least one certificate (end-entity first),
/// the key is PEM (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519) and matches the first certificate.
/// `hopgate check` and `run` both come through here.
pub fn load_pair(pair: &CertPair) -> Result<LoadedCert, CertError> {
    let cert_err = |reason: String| CertError { which: Which::Cert, path: pair.cert.clone(), reason };
    let key_err = |reason: String| CertError { which: Which::Key, path: pair.key.clone(), reason };
    let chain = read_certs(&pair.cert).map_err(cert_err)?;
    let key_pem = std::fs::read(&pair.key).map_err(|e| key_err(format!("cannot read: {e}")))?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(key_err(
                "no private key found (expected PEM 'BEGIN PRIVATE KEY', 'BEGIN RSA PRIVATE KEY' \
                                or 'BEGIN EC PRIVATE KEY')"
                    .into(),
            ));
        }
        Err(e) => return Err(key_err(format!("not a readable PEM private key: {e}"))),
    };
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unsupported or malformed private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(key_err(format!("does not match the certificate in {}", pair.cert.display())));
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(cert_err(format!("the first certificate can't be parsed: {e}"))),
    }
    let names = cert_names(&certified.cert[0]).map_err(cert_err)?;
    Ok(LoadedCert { key: Arc::new(certified), names })
}

/// Reads every certificate of a PEM file; an error when there is none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a readable PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found (expected PEM 'BEGIN CERTIFICATE')".into());
    }
    Ok(certs)
}

/// The DNS names of an end-entity certificate, lowercase.
fn cert_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(der).map_err(|e| format!("the first certificate can't be parsed: {e}"))?;
    Ok(ee.valid_dns_names().map(|n| n.to_ascii_lowercase()).collect())
}

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
    pub fn new(pairs: &[CertPair], handshake_timeout: Duration) -> Result<Acceptor, String> {
        let mut certs = Vec::new();
        for pair in pairs {
            certs.push(load_pair(pair).map_err(|e| e.to_string())?);
        }
        let resolver = SniResolver::new(certs).ok_or("an https:// listener needs a certificate and key")?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS settings: {e}"))?
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
/// task.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ListenerState>,
    acceptor: Acceptor,
    http: http1::Builder,
    tasks: TaskTracker,
    stop: watch::Receiver<bool>,
) {
    let limit = acceptor.handshake_timeout;
    let start = Instant::now();
    let tls = match tokio::time::timeout(limit, handshake(stream, peer, &acceptor, &state)).await {
        Err(_) => {
            tracing::info!(client = %peer, "TLS handshake not finished within {limit:?}: connection closed");
            return;
        }
        Ok(None) => return,
        Ok(Some(tls)) => tls,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    tracing::trace!(client = %peer, h2, "TLS handshake done in {:?}", start.elapsed());
    if h2 {
        serve_http2(tls, peer, state, tasks, stop).await;
    } else {
        super::serve_http1(tls, peer, state, http, tasks, stop).await;
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
            tracing::info!(client = %peer, "plain HTTP sent to the TLS listener {}: answered 400", state.public_addr());
            answer_plain_http(stream, state).await;
            return None;
        }
    }
    match acceptor.tls.accept(stream).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            tracing::info!(client = %peer, "TLS handshake failed: {e}");
            None
        }
    }
}

/// A client spoke plain HTTP to the TLS port: one 400 page in plain text that says so, then close.
async fn answer_plain_http(stream: TcpStream, state: &ListenerState) {
    let reason = format!("this port speaks TLS: plain HTTP was sent to {}; use https://", state.public_addr());
    let svc = service_fn(move |_req| {
        let reason = reason.clone();
        async move { Ok::<_, Infallible>(pages::render(http::StatusCode::BAD_REQUEST, &reason, true)) }
    });
    let mut b = http1::Builder::new();
    b.keep_alive(false).max_buf_size(16 * 1024);
    let _ = b.serve_connection(TokioIo::new(stream), svc).await;
}

/// Runs one HTTP/2 connection (ALPN `h2`) with the idle timer and the drain signal. HTTP/2 has no slow request
/// head to guard against at this level (hyper's h2 bounds the header list), so the head timer is the idle timer.
async fn serve_http2<S>(
    stream: S,
    peer: SocketAddr,
    state: Arc<ListenerState>,
    tasks: TaskTracker,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = ConnShared::new();
    let idle = state.timeouts.idle;
    let max_header_list = u32::try_from(state.limits.max_head_bytes * 2).unwrap_or(u32::MAX);
    let ctx = Arc::new(ConnCtx { listener: state, client: peer, shared: shared.clone(), tasks });
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(service::handle(req, ctx).await) }
    });
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new()).max_header_list_size(max_header_list);
    let conn = b.serve_connection(TokioIo::new(ConnIo::new(stream, shared.clone())), svc);
    tokio::pin!(conn);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        sleep.as_mut().reset(shared.next_check(idle, idle).into());
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %peer, "HTTP/2 connection ended: {e}");
                }
                return;
            }
            _ = &mut sleep => {
                if shared.deadline(idle, idle).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(client = %peer, "closing idle HTTP/2 connection");
                    return;
                }
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
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

    #[test]
    fn missing_files_name_the_file() {
        let dir = std::env::temp_dir();
        let pair = CertPair { cert: dir.join("hopgate-no-such-cert.pem"), key: dir.join("hopgate-no-such-key.pem") };
        let e = load_pair(&pair).unwrap_err();
        assert_eq!(e.which, Which::Cert);
        assert!(e.to_string().starts_with("certificate "), "{e}");
        assert!(e.to_string().contains("hopgate-no-such-cert.pem: cannot read"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("hopgate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("empty.pem");
        std::fs::write(&p, "not pem at all\n").unwrap();
        let e = read_certs(&p).unwrap_err();
        assert!(e.contains("no certificate found"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
