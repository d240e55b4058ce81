//! HTTP/HTTPS, TLS origination: hopgate speaks TLS to `https://` upstreams (a gateway's `--to https://...`, and
//! absolute-form `https://` requests sent in plain HTTP to the forward proxy).
//!
//! The origin's certificate chain is verified against the system roots (rustls-native-certs) plus the extra CA
//! bundle (`--ca`, config `ca`), SNI is sent for host names, and the name the request was for must be in the
//! certificate. A certificate of the bundle that the origin presents as its own is pinned: trusted as that
//! server without a chain ([`PinningVerifier`]). A failure is an [`Error`] of kind `UpstreamTls` (502) whose
//! detail says why in a few words.
//! Does not: offer client certificates, check revocation, speak HTTP/2 upstream, or ever fall back to an
//! unverified connection.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Kind};
use crate::server::tls::{provider, read_certs};

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

/// The system's trusted roots, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("system CA store: {e}");
        }
        found.certs
    })
}

/// Reads a CA bundle (`--ca`): PEM, at least one certificate, each usable as a trust anchor.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_certs(path).map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store
            .add(c.clone())
            .map_err(|e| format!("CA bundle {}: certificate {} is not usable as a CA: {e}", path.display(), i + 1))?;
    }
    Ok(certs)
}

impl Origination {
    /// System roots plus the certificates of `ca`; offers only HTTP/1.1 by ALPN (the relay speaks HTTP/1.1).
    pub fn new(ca: Option<&Path>, handshake_timeout: Duration) -> Result<Origination, String> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        let mut pinned = Vec::new();
        if let Some(ca) = ca {
            for c in load_ca(ca)? {
                roots.add(c.clone()).map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
                pinned.push(c);
            }
        }
        let provider = provider();
        let supported = provider.signature_verification_algorithms;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS settings: {e}"))?;
        let mut config = match pinned.is_empty() {
            true => builder.with_root_certificates(roots).with_no_client_auth(),
            false => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("TLS settings: {e}"))?;
                let verifier = PinningVerifier { webpki, pinned, supported };
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
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

/// webpki's verification, plus pinning: an end-entity certificate byte-identical to one in the `--ca` bundle
/// is trusted as that server although no chain leads from it to a CA. That is what an operator means by putting
/// an origin's self-signed certificate into `--ca` (curl and OpenSSL-based clients accept it), and webpki alone
/// refuses it when the certificate says CA:TRUE, as `openssl req -x509` writes by default (a CA used as an
/// end entity), or when it is a leaf whose issuer is not in the bundle. A pinned certificate must still be
/// within its validity period, for server authentication if it names purposes, and for the target's name (as
/// curl checks); the handshake's signatures are verified with its key as for any other.
#[derive(Debug)]
struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of the `--ca` bundle.
    pinned: Vec<CertificateDer<'static>>,
    supported: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(ok) => return Ok(ok),
            Err(e) => e,
        };
        if !self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        verify_pinned(end_entity, server_name, now, self.supported.all)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The checks a pinned certificate still passes: webpki's checks of the certificate itself (validity period,
/// basic constraints, purposes), which it makes before it looks for an issuer, so that with no trust anchor
/// and no intermediate "unknown issuer" means they all passed; then the name. A CA:TRUE certificate stops
/// webpki at the basic constraints, before the purposes: those are read here.
fn verify_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
    algs: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm],
) -> Result<(), rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    match verify_server_cert_signed_by_trust_anchor(&parsed, &RootCertStore::empty(), &[], now, algs) {
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {}
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(o)))
            if matches!(o.0.downcast_ref(), Some(webpki::Error::CaUsedAsEndEntity)) =>
        {
            if !for_server_auth(cert.as_ref()) {
                return Err(CertificateError::InvalidPurpose.into());
            }
        }
        Err(e) => return Err(e),
        // Not reached: nothing is trusted here.
        Ok(()) => {}
    }
    verify_server_name(&parsed, server_name)
}

/// Whether a certificate may authenticate a server by its extendedKeyUsage (RFC 5280 §4.2.1.12): no such
/// extension, or one that lists id-kp-serverAuth (webpki's rule: anyExtendedKeyUsage is not enough, an empty
/// list is an error). False for DER this can't walk (webpki has parsed the certificate already).
fn for_server_auth(cert: &[u8]) -> bool {
    const EKU: &[u8] = &[0x55, 0x1d, 0x25];
    const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
    let find = || -> Option<bool> {
        let (_, cert, _) = der(cert, 0x30)?;
        let (_, mut tbs, _) = der(cert, 0x30)?;
        // TBSCertificate's fields in order; extensions are the last, [3] EXPLICIT.
        let extensions = loop {
            if tbs.is_empty() {
                return Some(true);
            }
            let (tag, value, rest) = der(tbs, 0)?;
            if tag == 0xa3 {
                break value;
            }
            tbs = rest;
        };
        let (_, mut list, _) = der(extensions, 0x30)?;
        while !list.is_empty() {
            let (_, ext, rest) = der(list, 0x30)?;
            list = rest;
            let (_, oid, mut ext) = der(ext, 0x06)?;
            if oid != EKU {
                continue;
            }
            if ext.first() == Some(&0x01) {
                ext = der(ext, 0x01)?.2;
            }
            let (_, octets, _) = der(ext, 0x04)?;
            let (_, mut purposes, _) = der(octets, 0x30)?;
            if purposes.is_empty() {
                return Some(false);
            }
            while !purposes.is_empty() {
                let (_, purpose, rest) = der(purposes, 0x06)?;
                if purpose == SERVER_AUTH {
                    return Some(true);
                }
                purposes = rest;
            }
            return Some(false);
        }
        Some(true)
    };
    find().unwrap_or(false)
}

/// One DER element at the start of `input`: (tag, contents, what follows). `want` is the expected tag, 0 for
/// any; None for a different tag, a multi-byte tag, or a length that does not fit.
fn der(input: &[u8], want: u8) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if (want != 0 && tag != want) || tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let bytes = rest.get(..n)?;
            (bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b)), &rest[n..])
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
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
    fn der_elements() {
        let (tag, value, rest) = der(&[0x30, 0x02, 1, 2, 9], 0x30).unwrap();
        assert_eq!((tag, value, rest), (0x30, &[1u8, 2][..], &[9u8][..]));
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(der(&long, 0).unwrap().1.len(), 0x80);
        let mut longer = vec![0x04, 0x82, 0x01, 0x00];
        longer.extend([7u8; 0x100]);
        assert_eq!(der(&longer, 0x04).unwrap().1.len(), 0x100);
        assert_eq!(der(&[0x30, 0x05, 1], 0x30), None, "shorter than its length");
        assert_eq!(der(&[0x31, 0x00], 0x30), None, "another tag");
        assert_eq!(der(&[0x1f, 0x01, 0x00], 0), None, "a multi-byte tag");
        assert_eq!(der(&[0x30, 0x80, 0x00, 0x00], 0), None, "indefinite length is not DER");
        assert_eq!(der(&[], 0), None);
        assert!(!for_server_auth(b"not a certificate"), "what can't be read authenticates nothing");
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
