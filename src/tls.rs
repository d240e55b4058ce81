//! What both TLS directions share: the one crypto provider (rustls with ring), PEM certificate and key loading
//! (one loader for `run` and `check`, for listeners, CA bundles and `hopgate tunnel`), the system roots, and the
//! one rustls client configuration builder. The listener side (SNI, handshakes) is `server::tls`; origination to
//! upstreams is `upstream::tls`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
/// HTTP/1.1 by ALPN (hopgate speaks HTTP/1.1 to upstreams and proxies). Origination to `https://` upstreams and
/// `hopgate tunnel` to an `https://` proxy both build theirs here.
pub fn client_config(ca: Option<&Path>) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

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
