//! What both TLS directions share: the one crypto provider (rustls with ring), PEM certificate and key loading
//! (one loader for `run` and `check`, for listeners, CA bundles and `hopgate tunnel`), the system roots, and the
//! one rustls client configuration builder. The listener side (SNI, handshakes) is `server::tls`; origination to
//! upstreams is `upstream::tls`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider of every TLS config hopgate builds (client and server side).
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    return Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(not(feature = "aws-lc"))]
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
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    let cert_err = |reason: String| CertError { which: Which::Cert, path: cert.to_path_buf(), reason };
    let key_err = |reason: String| CertError { which: Which::Key, path: key.to_path_buf(), reason };
    let chain = read_certs(cert).map_err(cert_err)?;
    let key_pem = std::fs::read(key).map_err(|e| key_err(format!("cannot read: {e}")))?;
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
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
        .load_private_key(private)
        .map_err(|e| key_err(format!("unsupported or malformed private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(key_err(format!("does not match the certificate in {}", cert.display())));
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

/// The system's trusted roots, read once per process.
pub fn system_roots() -> &'static [CertificateDer<'static>] {
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

/// The trust anchors of every verified client connection: the system roots plus the certificates of `ca`.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(ca) = ca {
        for c in load_ca(ca)? {
            roots.add(c).map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
        }
    }
    Ok(roots)
}

/// The one rustls client configuration: TLS 1.3 and 1.2, verified against the system roots plus `ca`, offering
/// HTTP/1.1 by ALPN (hopgate speaks HTTP/1.1 to upstreams and proxies). A certificate of `ca` that the peer
/// presents as its own is pinned ([`PinningVerifier`]). Origination to `https://` upstreams and `hopgate tunnel`
/// to an `https://` proxy both build theirs here.
pub fn client_config(ca: Option<&Path>) -> Result<ClientConfig, String> {
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
    Ok(config)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn missing_files_name_the_file() {
        let dir = std::env::temp_dir();
        let e = load_pair(&dir.join("hopgate-no-such-cert.pem"), &dir.join("hopgate-no-such-key.pem")).unwrap_err();
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
