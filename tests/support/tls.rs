//! TLS peers for the tests: a throw-away PKI made with the `openssl` CLI in a temp dir (a test CA, leaves with RSA,
//! ECDSA P-256 or Ed25519 keys, an intermediate, self-signed, wrong-name and expired certificates), and a TLS
//! origin (rustls, blocking, one thread per connection) that records SNI, connections and requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::find;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    EcdsaP256,
    Ed25519,
}

/// A certificate file (chain, end-entity first) and its key file.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }
    pub fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From yesterday for 30 days.
    Current,
    /// January 2020 only.
    Expired,
}

/// A test CA in a temp dir, issuing certificates with `openssl ca`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Pair,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

const CA_CNF: &str = "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = issued\n\
serial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n\
[any]\ncommonName = supplied\n";

impl Pki {
    /// A new root CA (ECDSA P-256): "hopgate test CA".
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("issued")).unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "1000\n").unwrap();
        std::fs::write(d.join("ca.cnf"), CA_CNF).unwrap();
        std::fs::write(
            d.join("ca-ext.cnf"),
            "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        )
        .unwrap();
        let pki = Pki { ca: Pair { cert: d.join("ca.pem"), key: d.join("ca.key") }, dir };
        pki.genkey("ca.key", KeyType::EcdsaP256);
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=hopgate test CA",
                "-days",
                "30",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            pki.dir.path(),
        );
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn genkey(&self, file: &str, kind: KeyType) {
        let args: &[&str] = match kind {
            KeyType::Rsa => &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", file],
            KeyType::EcdsaP256 => &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file],
            KeyType::Ed25519 => &["genpkey", "-algorithm", "ED25519", "-out", file],
        };
        openssl(args, self.dir.path());
    }

    /// Issues `name.pem`/`name.key` for `cn` with DNS SANs `dns` (and IP 127.0.0.1), signed by `issuer`.
    fn issue(&self, name: &str, kind: KeyType, cn: &str, dns: &[&str], validity: Validity, issuer: &Pair) -> Pair {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        self.genkey(&key, kind);
        openssl(&["req", "-new", "-key", &key, "-subj", &format!("/CN={cn}"), "-out", &csr], self.dir.path());
        let mut sans: Vec<String> =
            dns.iter().map(|d| if d.starts_with("IP:") { d.to_string() } else { format!("DNS:{d}") }).collect();
        sans.push("IP:127.0.0.1".into());
        std::fs::write(
            self.path(&ext),
            format!(
                "subjectAltName = {}\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n\
                 keyUsage = critical,digitalSignature,keyEncipherment\n",
                sans.join(",")
            ),
        )
        .unwrap();
        let (start, end) = match validity {
            Validity::Current => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                (gentime(now - 86_400), gentime(now + 30 * 86_400))
            }
            Validity::Expired => ("20200101000000Z".to_string(), "20200201000000Z".to_string()),
        };
        self.sign(issuer, &csr, &cert, &ext, &["-startdate", &start, "-enddate", &end]);
        Pair { cert: self.path(&cert), key: self.path(&key) }
    }

    /// `openssl ca`: `issuer` signs `csr` into `out` with the extensions in `ext` and `validity` (`-days N`, or
    /// `-startdate`/`-enddate`).
    fn sign(&self, issuer: &Pair, csr: &str, out: &str, ext: &str, validity: &[&str]) {
        let mut args = vec!["ca", "-batch", "-config", "ca.cnf", "-cert", issuer.cert(), "-keyfile", issuer.key()];
        args.extend(["-in", csr, "-out", out]);
        args.extend_from_slice(validity);
        args.extend(["-extfile", ext, "-notext"]);
        openssl(&args, self.dir.path());
    }

    /// A server certificate for `dns` and the addresses `ips` (besides 127.0.0.1), issued by the test CA.
    pub fn leaf_with_ips(&self, name: &str, dns: &[&str], ips: &[&str]) -> Pair {
        let mut sans: Vec<String> = dns.to_vec().iter().map(|d| d.to_string()).collect();
        sans.extend(ips.iter().map(|ip| format!("IP:{ip}")));
        let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
        self.issue(name, KeyType::EcdsaP256, dns[0], &sans, Validity::Current, &self.ca.clone())
    }

    /// A server certificate for `dns` (first name is the CN) issued by the test CA, valid now.
    pub fn leaf(&self, name: &str, kind: KeyType, dns: &[&str]) -> Pair {
        self.issue(name, kind, dns[0], dns, Validity::Current, &self.ca.clone())
    }

    /// Like [`leaf`](Self::leaf), but valid only in January 2020.
    pub fn expired(&self, name: &str, dns: &[&str]) -> Pair {
        self.issue(name, KeyType::EcdsaP256, dns[0], dns, Validity::Expired, &self.ca.clone())
    }

    /// A leaf issued by an intermediate CA; the returned cert file holds leaf + intermediate, and
    /// `NAME-leaf-only.pem` the leaf alone.
    pub fn chained(&self, name: &str, dns: &[&str]) -> Pair {
        let inter_key = format!("{name}-inter.key");
        let inter_csr = format!("{name}-inter.csr");
        let inter_pem = format!("{name}-inter.pem");
        self.genkey(&inter_key, KeyType::EcdsaP256);
        openssl(
            &["req", "-new", "-key", &inter_key, "-subj", "/CN=hopgate test intermediate", "-out", &inter_csr],
            self.dir.path(),
        );
        self.sign(&self.ca, &inter_csr, &inter_pem, "ca-ext.cnf", &["-days", "30"]);
        let inter = Pair { cert: self.path(&inter_pem), key: self.path(&inter_key) };
        let leaf = self.issue(&format!("{name}-leaf"), KeyType::EcdsaP256, dns[0], dns, Validity::Current, &inter);
        let chain = self.path(&format!("{name}.pem"));
        let mut text = std::fs::read_to_string(&leaf.cert).unwrap();
        text.push_str(&std::fs::read_to_string(&inter.cert).unwrap());
        std::fs::write(&chain, text).unwrap();
        std::fs::copy(&leaf.cert, self.path(&format!("{name}-leaf-only.pem"))).unwrap();
        Pair { cert: chain, key: leaf.key }
    }

    /// A self-signed certificate for `dns` that no CA vouches for: a CA certificate, as `openssl req -x509` makes
    /// by default, or (`leaf`) one marked `CA:FALSE`.
    pub fn self_signed(&self, name: &str, cn: &str, dns: &[&str], leaf: bool) -> Pair {
        let key = format!("{name}.key");
        let cert = format!("{name}.pem");
        self.genkey(&key, KeyType::EcdsaP256);
        let sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={cn}"),
                "-days",
                "30",
                "-out",
                &cert,
                "-addext",
                &format!("subjectAltName={},IP:127.0.0.1", sans.join(",")),
                "-addext",
                if leaf { "basicConstraints=critical,CA:FALSE" } else { "basicConstraints=critical,CA:TRUE" },
            ],
            self.dir.path(),
        );
        Pair { cert: self.path(&cert), key: self.path(&key) }
    }
}

impl Pki {
    /// A self-signed CA:TRUE certificate for `dns` (as `openssl req -x509` makes), valid only in January 2020.
    pub fn self_signed_expired(&self, name: &str, cn: &str, dns: &[&str]) -> Pair {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        self.genkey(&key, KeyType::EcdsaP256);
        openssl(&["req", "-new", "-key", &key, "-subj", &format!("/CN={cn}"), "-out", &csr], self.dir.path());
        let sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        std::fs::write(
            self.path(&ext),
            format!("subjectAltName = {},IP:127.0.0.1\nbasicConstraints = CA:TRUE\n", sans.join(",")),
        )
        .unwrap();
        openssl(
            &[
                "ca",
                "-batch",
                "-selfsign",
                "-config",
                "ca.cnf",
                "-keyfile",
                &key,
                "-in",
                &csr,
                "-out",
                &cert,
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
                "-extfile",
                &ext,
                "-notext",
            ],
            self.dir.path(),
        );
        Pair { cert: self.path(&cert), key: self.path(&key) }
    }
}

/// `YYYYMMDDHHMMSSZ` for a Unix time (what `openssl ca -startdate` takes).
fn gentime(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    let (y, m, d, h, mi, s) = hopgate::date::to_civil(t);
    format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{s:02}Z")
}

/// One request a TLS origin received.
#[derive(Debug, Clone)]
pub struct TlsSeen {
    pub sni: Option<String>,
    pub head: String,
    pub conn: usize,
}

impl TlsSeen {
    pub fn header(&self, name: &str) -> Option<String> {
        super::field(&super::parse_fields(self.head.split("\r\n").skip(1)), name).map(str::to_string)
    }
    pub fn target(&self) -> String {
        self.head.split(' ').nth(1).unwrap_or_default().to_string()
    }
}

/// An HTTPS origin on 127.0.0.1:0 answering every request with `200` and `body`, keeping connections alive.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<TlsSeen>>>,
}

impl TlsOrigin {
    pub fn start(pair: &Pair, body: &'static str) -> TlsOrigin {
        TlsOrigin::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), pair, body)
    }

    /// A TLS origin on a socket bound already (another address, another network namespace).
    pub fn start_on(listener: TcpListener, pair: &Pair, body: &'static str) -> TlsOrigin {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&pair.cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let config = config.clone();
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = find(&buf, b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 8192];
                            match tls.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        buf.drain(..head_end);
                        let sni = tls.conn.server_name().map(str::to_string);
                        let seen = TlsSeen { sni, head, conn: n };
                        let len: usize = seen.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        while buf.len() < len {
                            let mut chunk = [0u8; 8192];
                            match tls.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        buf.drain(..len);
                        s.lock().unwrap().push(seen);
                        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if tls.write_all(resp.as_bytes()).and_then(|_| tls.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsOrigin { addr, connections, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn last(&self) -> TlsSeen {
        self.seen.lock().unwrap().last().cloned().expect("the TLS origin received no request")
    }

    pub fn accepted(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
