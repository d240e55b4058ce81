//! HTTP/HTTPS, TLS origination: hopgate speaks TLS to `https://` upstreams (a gateway's `--to https://...`, and
//! absolute-form `https://` requests sent in plain HTTP to the forward proxy).
//!
//! The origin's certificate chain is verified against the system roots (rustls-native-certs) plus the extra CA
//! bundle (`--ca`, config `ca`), SNI is sent for host names, and the name the request was for must be in the
//! certificate. A certificate of the bundle that the origin presents as its own is pinned: trusted as that
//! server without a chain (`crate::tls::PinningVerifier`). A failure is an [`Error`] of kind `UpstreamTls` (502)
//! whose detail says why in a few words.
//! ALPN offers what the route speaks (`upstream_http`): `http/1.1` alone (the default), `h2` alone ("2"), or both
//! ("auto"); the pool reads the upstream's choice ([`Stream::chose_h2`]).
//! Does not: offer client certificates, check revocation, or ever fall back to an unverified connection.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::CertificateError;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::UpstreamHttp;
use crate::error::{Error, Kind, StartupError};

/// What hopgate needs to open verified TLS connections to upstreams.
#[derive(Clone)]
pub struct Origination {
    connector: TlsConnector,
    /// The TLS handshake gets as long as a TCP connect (`timeouts.connect_secs`), counted separately.
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination").field("handshake_timeout", &self.handshake_timeout).finish()
    }
}

impl Origination {
    /// System roots plus the certificates of `ca`; ALPN offers what `http` speaks (HTTP/1.1 alone, `h2` alone, or
    /// both, `h2` first).
    pub fn new(
        ca: Option<&Path>,
        handshake_timeout: Duration,
        http: UpstreamHttp,
    ) -> Result<Origination, StartupError> {
        let mut config = crate::tls::client_config(ca).map_err(StartupError::new)?;
        config.alpn_protocols = match http {
            UpstreamHttp::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamHttp::Http2 => vec![b"h2".to_vec()],
            UpstreamHttp::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        Ok(Origination { connector: TlsConnector::from(Arc::new(config)), handshake_timeout })
    }

    /// TLS over `io` (a TCP connection, or a tunnel through a parent proxy) to `host` (a name gets SNI; an IP
    /// address is checked against IP SANs).
    pub async fn connect(&self, host: &str, port: u16, io: Stream) -> Result<Stream, Error> {
        let target = super::display_target(host, port);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::bad_request(format!("{host:?} is not a valid TLS server name")))?;
        match tokio::time::timeout(self.handshake_timeout, self.connector.connect(name, io)).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
            Ok(Err(e)) => {
                let why = describe(&e);
                Err(Error::upstream(Kind::UpstreamTls, format!("TLS to {target} failed: {why}")).with_source(e))
            }
            Err(_) => Err(Error::upstream(
                Kind::ConnectTimeout,
                format!("TLS handshake with {target} not finished within {:?}", self.handshake_timeout),
            )),
        }
    }
}

/// A few words on why a handshake failed: what a client reads in the 502 page.
pub fn describe(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => "the upstream closed the connection during the handshake".into(),
            _ => format!("handshake failed: {e}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => describe_certificate(c),
        rustls::Error::AlertReceived(a) => format!("the upstream refused the handshake (alert {a:?})"),
        rustls::Error::NoApplicationProtocol => "no common application protocol (ALPN)".into(),
        rustls::Error::PeerIncompatible(p) => format!("the upstream's TLS is incompatible: {p:?}"),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the upstream does not speak TLS on this port".into()
        }
        other => format!("handshake failed: {other}"),
    }
}

fn describe_certificate(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => "untrusted issuer: the certificate chain does not lead to a trusted CA \
                                            (system roots or --ca)"
            .into(),
        CertificateError::NotValidForName => "name mismatch: the certificate is not valid for this host".into(),
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "name mismatch: the certificate is for {}, not {}",
            if presented.is_empty() { "no name".to_string() } else { presented.join(", ") },
            expected.to_str()
        ),
        CertificateError::Expired => "expired: the certificate is past its notAfter date".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("expired: the certificate's notAfter is {}", date(not_after.as_secs()))
        }
        CertificateError::NotValidYet => "not yet valid: the certificate is before its notBefore date".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("not yet valid: the certificate's notBefore is {}", date(not_before.as_secs()))
        }
        CertificateError::Revoked => "revoked certificate".into(),
        // webpki found a trusted CA with the issuer's name, but its key did not sign this certificate (a self-signed
        // certificate named like a trusted one, for example): the issuer is not the trusted one.
        CertificateError::BadSignature | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "untrusted issuer: the signature does not verify against the trusted CA of that name".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the certificate is not for server authentication".into()
        }
        CertificateError::BadEncoding => "malformed certificate".into(),
        CertificateError::Other(o) if matches!(o.0.downcast_ref(), Some(webpki::Error::CaUsedAsEndEntity)) => {
            // What `openssl req -x509` makes by default: a self-signed CA certificate presented as the server's.
            "untrusted issuer: the server presents a CA certificate as its own (self-signed)".into()
        }
        other => format!("invalid certificate: {other}"),
    }
}

fn date(unix_secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs))
}

/// An upstream connection: plain TCP, a CONNECT tunnel through a parent proxy, or TLS over either.
pub enum Stream {
    Plain(TcpStream),
    Tunnel(TokioIo<Upgraded>),
    Tls(Box<TlsStream<Stream>>),
}

impl Stream {
    /// Whether the upstream chose `h2` by ALPN (never on a connection without TLS).
    pub fn chose_h2(&self) -> bool {
        match self {
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
            Stream::Plain(_) | Stream::Tunnel(_) => false,
        }
    }

    /// The protocol the upstream chose by ALPN, for an error that names it.
    pub fn alpn(&self) -> Option<String> {
        match self {
            Stream::Tls(s) => s.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            Stream::Plain(_) | Stream::Tunnel(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tunnel(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tunnel(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tunnel(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tunnel(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tunnel(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tunnel(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn reasons_are_short_and_named() {
        let d = describe(&io_err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)));
        assert!(d.starts_with("untrusted issuer"), "{d}");
        let d = describe(&io_err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("localhost").unwrap(),
            presented: vec!["DnsName(\"wrong.test\")".into()],
        })));
        assert!(d.starts_with("name mismatch: the certificate is for"), "{d}");
        assert!(d.ends_with("not localhost"), "{d}");
        let d = describe(&io_err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(0)),
        })));
        assert_eq!(d, "expired: the certificate's notAfter is Thu, 01 Jan 1970 00:00:00 GMT");
        let d = describe(&io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(d.contains("closed"), "{d}");
    }
}
