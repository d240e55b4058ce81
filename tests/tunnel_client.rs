//! `hopgate tunnel` (TunnelClient) against real proxies the tests start on loopback: Squid
//! (Debian package squid) and tinyproxy (package tinyproxy), with and without Basic auth, plus a
//! tiny proxy written here that sends bytes right behind its 200. Echo and refusing targets are
//! started here too. htpasswd files come from Apache's htpasswd (package apache2-utils).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;

use hopgate::tunnel_client::{TunnelClient, TunnelError};
use support::free_port;
use support::peers::{chown_nobody, htpasswd, squid, tinyproxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every await on the network gets this long at most.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("{what}: no progress in {DEADLINE:?}"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hopgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Echoes every byte back; at EOF shuts down writing (keeps half-close visible).
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn client(proxy: &str, to: SocketAddr, user: Option<(&str, &str)>) -> TunnelClient {
    let mut client = TunnelClient::new(proxy, &to.to_string()).unwrap();
    client.proxy_user = user.map(|(u, p)| (u.to_owned(), p.to_owned()));
    client
}

/// Starts `run_listen` on 127.0.0.1:0; returns the address it reported and its task.
async fn listen(client: TunnelClient) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let result = client
            .run_listen("127.0.0.1:0".parse().unwrap(), |addr| {
                let _ = tx.send(addr);
            })
            .await;
        panic!("run_listen returned: {result:?}");
    });
    (within("listening", rx).await.unwrap(), task)
}

/// Several connections at once through the local listener, each echoing its own data.
async fn echo_through(local: SocketAddr, connections: usize, bytes: usize) {
    let mut jobs = tokio::task::JoinSet::new();
    for i in 0..connections {
        jobs.spawn(async move {
            let data: Vec<u8> = (0..bytes).map(|j| (j * 31 + i * 7) as u8).collect();
            let stream = within("connect", TcpStream::connect(local)).await.unwrap();
            let (mut r, mut w) = stream.into_split();
            let expected = data.clone();
            let writer = tokio::spawn(async move { w.write_all(&data).await.map(|_| w) });
            let mut got = vec![0; bytes];
            within("echo", r.read_exact(&mut got)).await.unwrap();
            assert!(got == expected, "connection {i}: echo differs");
            drop(writer.await.unwrap().unwrap());
        });
    }
    while let Some(job) = within("echo jobs", jobs.join_next()).await {
        job.unwrap();
    }
}

async fn refused_status(client: TunnelClient) -> (u16, String) {
    let err = within("refusal", client.open()).await.unwrap_err();
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line:?}");
    let status = err.status().unwrap_or_else(|| panic!("expected a refusal, got: {line}"));
    eprintln!("{line}");
    (status.as_u16(), line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_without_auth() {
    let echo = echo_server().await;
    let closed = free_port();
    let squid = squid(&[echo.port(), closed], None, None);
    let proxy = format!("http://{}", squid.addr);

    let (local, task) = listen(client(&proxy, echo, None)).await;
    echo_through(local, 8, 256 * 1024).await;
    task.abort();

    // A target that refuses: Squid answers 503, named in the error.
    let target = SocketAddr::from(([127, 0, 0, 1], closed));
    let (status, line) = refused_status(client(&proxy, target, None)).await;
    assert_eq!(status, 503, "{line}");
    assert!(line.starts_with(&format!("proxy {} refused CONNECT {target}: 503 ", squid.addr)), "{line}");

    // A port outside Squid's CONNECT ACL: 403.
    let (status, line) = refused_status(client(&proxy, SocketAddr::from(([127, 0, 0, 1], 9)), None)).await;
    assert_eq!(status, 403, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_with_basic_auth() {
    let echo = echo_server().await;
    let dir = temp_dir("squid-users");
    let users = dir.join("users");
    htpasswd(&users, &["-B", "-C", "5"], "bee", "b-secret");
    htpasswd(&users, &["-m"], "apr", "a-secret");
    chown_nobody(&dir);
    let squid = squid(&[echo.port()], Some(&users), None);
    let proxy = format!("http://{}", squid.addr);

    for (user, pass) in [("bee", "b-secret"), ("apr", "a-secret")] {
        let (local, task) = listen(client(&proxy, echo, Some((user, pass)))).await;
        echo_through(local, 2, 64 * 1024).await;
        task.abort();
    }
    let (status, line) = refused_status(client(&proxy, echo, Some(("bee", "wrong")))).await;
    assert_eq!(status, 407);
    assert_eq!(line, format!("proxy {} refused CONNECT {echo}: 407 Proxy Authentication Required", squid.addr));
    let (status, _) = refused_status(client(&proxy, echo, None)).await;
    assert_eq!(status, 407);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tinyproxy_without_and_with_auth() {
    let echo = echo_server().await;
    let closed = free_port();
    let open = tinyproxy(&[echo.port(), closed], None);
    let proxy = format!("http://{}", open.addr);
    let (local, task) = listen(client(&proxy, echo, None)).await;
    echo_through(local, 8, 256 * 1024).await;
    task.abort();
    let target = SocketAddr::from(([127, 0, 0, 1], closed));
    let (status, line) = refused_status(client(&proxy, target, None)).await;
    assert!((500..600).contains(&status), "{line}");
    assert!(line.starts_with(&format!("proxy {} refused CONNECT {target}: {status} ", open.addr)), "{line}");

    let authed = tinyproxy(&[echo.port()], Some(("tim", "t-secret")));
    let proxy = format!("http://{}", authed.addr);
    let (local, task) = listen(client(&proxy, echo, Some(("tim", "t-secret")))).await;
    echo_through(local, 2, 64 * 1024).await;
    task.abort();
    // tinyproxy 1.11 answers a CONNECT with wrong credentials 401 (not 407); reported as sent.
    let (status, line) = refused_status(client(&proxy, echo, Some(("tim", "wrong")))).await;
    assert!(status == 401 || status == 407, "{line}");
    assert!(line.starts_with(&format!("proxy {} refused CONNECT {echo}: {status} ", authed.addr)), "{line}");
}

/// A proxy written here: records the CONNECT head, answers with `reply` in the same write as
/// `extra`, then relays to `target` (half-close kept).
async fn scripted_proxy(
    reply: &'static str,
    extra: &'static [u8],
    target: SocketAddr,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // One byte at a time, so nothing after the head is swallowed here.
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            if client.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        let mut first = reply.as_bytes().to_vec();
        first.extend_from_slice(extra);
        client.write_all(&first).await.unwrap();
        let upstream = TcpStream::connect(target).await.unwrap();
        let _ = hopgate::tunnel::pipe(client, upstream, DEADLINE).await;
    });
    (addr, rx)
}

#[tokio::test]
async fn bytes_right_after_the_200_are_kept() {
    let echo = echo_server().await;
    let (proxy, head) = scripted_proxy("HTTP/1.1 200 OK\r\n\r\n", b"EXTRA-BYTES", echo).await;
    let mut c = client(&format!("http://{proxy}"), echo, Some(("ann", "pa:ss")));
    c.idle = Some(DEADLINE);
    let mut tunnel = within("open", c.open()).await.unwrap();
    let mut got = [0u8; 11];
    within("extra", tunnel.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"EXTRA-BYTES");
    tunnel.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within("echo", tunnel.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");

    let head = within("head", head).await.unwrap();
    assert!(head.starts_with(&format!("CONNECT {echo} HTTP/1.1\r\n")), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains(&format!("\r\nhost: {echo}\r\n")), "{head}");
    // base64("ann:pa:ss")
    assert!(lower.contains("\r\nproxy-authorization: basic yw5uonbhonnz\r\n"), "{head}");
    // A client, not a proxy: no Via of its own.
    assert!(!lower.contains("\r\nvia:"), "{head}");
}

#[tokio::test]
async fn any_2xx_opens_the_tunnel() {
    let echo = echo_server().await;
    let reply = "HTTP/1.0 299 Fine By Me\r\nProxy-Agent: test\r\n\r\n";
    let (proxy, _head) = scripted_proxy(reply, b"", echo).await;
    let mut tunnel = within("open", client(&format!("http://{proxy}"), echo, None).open()).await.unwrap();
    tunnel.write_all(b"hi").await.unwrap();
    let mut got = [0u8; 2];
    within("echo", tunnel.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"hi");
}

/// The stdio mode over any stream: EOF from the local side half-closes the tunnel, and the run
/// ends only after the remote side has sent everything and finished.
#[tokio::test]
async fn local_eof_half_closes_and_waits_for_the_remote() {
    let echo = echo_server().await;
    let (proxy, _head) = scripted_proxy("HTTP/1.1 200 Connection established\r\n\r\n", b"", echo).await;
    let (local, mut user) = tokio::io::duplex(64 * 1024);
    let run = tokio::spawn(client(&format!("http://{proxy}"), echo, None).run_stream(local));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut user_r, mut user_w) = tokio::io::split(&mut user);
    let send = async {
        user_w.write_all(&data).await.unwrap();
        user_w.shutdown().await.unwrap(); // "stdin" EOF
    };
    let mut got = Vec::new();
    let (_, read) = within("echo to EOF", async { tokio::join!(send, user_r.read_to_end(&mut got)) }).await;
    read.unwrap();
    assert!(got == data, "echo after half-close: {} of {} bytes", got.len(), data.len());
    within("run_stream ends", run).await.unwrap().unwrap();
}

#[tokio::test]
async fn unreachable_proxy_and_bad_input_are_one_line_errors() {
    let port = free_port();
    let err = client(&format!("http://127.0.0.1:{port}"), "127.0.0.1:22".parse().unwrap(), None).open().await;
    let line = err.unwrap_err().to_string();
    assert!(line.starts_with(&format!("cannot connect to proxy 127.0.0.1:{port}: ")), "{line}");
    assert!(matches!(TunnelClient::new("ftp://h:1", "h:2"), Err(TunnelError::BadProxyUrl(_))));
    assert!(matches!(TunnelClient::new("http://h:1", "h"), Err(TunnelError::BadTarget(_))));
}

/// openssl CLI: a CA and a certificate for 127.0.0.1 it signed; returns (ca, cert, key).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output();
        let out = out.unwrap_or_else(|e| panic!("openssl not runnable ({e}): apt-get install -y openssl"));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=hopgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "req.csr"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_squid_with_extra_ca() {
    let echo = echo_server().await;
    let certs = temp_dir("squid-tls-certs");
    let (ca, cert, key) = make_certs(&certs);
    chown_nobody(&certs);
    let squid = squid(&[echo.port()], None, Some((&cert, &key)));
    let proxy = format!("https://{}", squid.addr);

    let mut trusted = client(&proxy, echo, None);
    trusted.ca = Some(ca);
    let (local, task) = listen(trusted).await;
    echo_through(local, 2, 256 * 1024).await;
    task.abort();

    // Without the CA the proxy's certificate is not trusted: a one-line TLS error.
    let line = within("untrusted", client(&proxy, echo, None).open()).await.unwrap_err().to_string();
    assert!(line.starts_with(&format!("TLS with proxy https://{} failed: ", squid.addr)), "{line}");
}
