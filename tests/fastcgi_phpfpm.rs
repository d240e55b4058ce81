//! FastCGI against a real php-fpm (Debian package php-fpm) that each test starts in the
//! foreground on a port or unix socket it picked, and stops by PID: hello world, $_SERVER dump,
//! POST body echo by sha256, Status/Location, STDERR to the log, FCGI_KEEP_CONN reuse counted by
//! a relay in front of php-fpm, dead kept connections, 404 before php-fpm, 502 and 504.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use hopgate::backend::fastcgi::{FastCgi, FastCgiAddr, FastCgiConfig};
use hopgate::backend::meta::{ConnInfo, GatewayError, GatewayErrorKind, GatewayResponse, HeadKind};
use hopgate::error::Error;
use http::{Request, StatusCode};
use sha2::{Digest, Sha256};
use support::phpfpm::{Fpm, Listen};

const SCRIPTS: &[(&str, &str)] = &[
    ("hello.php", "<?php echo \"hello world\\n\";"),
    (
        "server.php",
        "<?php header('Content-Type: text/plain'); ksort($_SERVER);\n\
         foreach ($_SERVER as $k => $v) { if (is_string($v)) echo \"$k=$v\\n\"; }",
    ),
    (
        "echo.php",
        "<?php header('Content-Type: application/octet-stream');\n\
         stream_copy_to_stream(fopen('php://input', 'rb'), fopen('php://output', 'wb'));",
    ),
    ("teapot.php", "<?php http_response_code(418); echo 'short and stout';"),
    ("away.php", "<?php header('Location: http://elsewhere.test/x');"),
    ("complain.php", "<?php error_log('complaint from php'); echo 'done';"),
    ("pid.php", "<?php echo getmypid();"),
    ("sleep.php", "<?php usleep((int)($_GET['ms'] ?? 200) * 1000); echo 'slept';"),
    ("big.php", "<?php echo str_repeat('x', 4 << 20);"),
    ("app/index.php", "<?php echo 'index of app';"),
    ("uploads/evil.jpg", "<?php echo 'must never run';"),
];

/// A loopback port that refuses connections for as long as the socket lives: bound, never
/// listening, so nobody else can take it meanwhile.
fn refusing_port() -> (socket2::Socket, u16) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    (s, port)
}

/// php-fpm with this file's scripts, and the address the protocol layer dials.
fn start_fpm(unix: bool) -> (Fpm, FastCgiAddr) {
    let fpm = Fpm::start(SCRIPTS, unix);
    let addr = match &fpm.listen {
        Listen::Tcp(a) => FastCgiAddr::Tcp(a.clone()),
        Listen::Unix(p) => FastCgiAddr::Unix(p.clone()),
    };
    (fpm, addr)
}

fn gateway(addr: FastCgiAddr, www: &Path, timeout: Duration) -> FastCgi {
    let mut cfg = FastCgiConfig::new(addr);
    cfg.root = Some(www.to_path_buf());
    cfg.timeout = timeout;
    FastCgi::new(cfg).unwrap()
}

fn conn(https: bool) -> ConnInfo {
    ConnInfo {
        remote: "127.0.0.1:50123".parse().unwrap(),
        local: "127.0.0.1:8443".parse().unwrap(),
        https,
        server_name: None,
        server_port: None,
        server_software: "hopgate/test".into(),
    }
}

async fn get(gw: &FastCgi, uri: &str) -> Result<GatewayResponse, GatewayError> {
    let (parts, ()) = Request::get(uri).header("Host", "php.test").body(()).unwrap().into_parts();
    gw.serve(&parts, &conn(false), stream::iter(Vec::<Result<Bytes, Infallible>>::new())).await
}

async fn text(gw: &FastCgi, uri: &str) -> String {
    let r = get(gw, uri).await.unwrap_or_else(|e| panic!("{uri}: {e} ({:?})", std::error::Error::source(&e)));
    assert_eq!(r.head.status, StatusCode::OK, "{uri}");
    String::from_utf8(r.body.collect_bytes().await.unwrap().to_vec()).unwrap()
}

async fn server_dump_checks(gw: &FastCgi, www: &Path) {
    let (parts, ()) = Request::get("/server.php/extra/x?q=1")
        .header("Host", "php.test")
        .header("Proxy", "http://evil.test:3128")
        .header("X-Custom", "custom value")
        .body(())
        .unwrap()
        .into_parts();
    let r = gw.serve(&parts, &conn(true), stream::iter(Vec::<Result<Bytes, Infallible>>::new())).await.unwrap();
    assert_eq!(r.head.headers["content-type"], "text/plain;charset=UTF-8");
    let dump = String::from_utf8(r.body.collect_bytes().await.unwrap().to_vec()).unwrap();
    let root = std::fs::canonicalize(www).unwrap();
    for line in [
        format!("SCRIPT_FILENAME={}/server.php", root.display()),
        format!("DOCUMENT_ROOT={}", root.display()),
        "SCRIPT_NAME=/server.php".into(),
        "PATH_INFO=/extra/x".into(),
        "PHP_SELF=/server.php/extra/x".into(),
        "QUERY_STRING=q=1".into(),
        "REQUEST_URI=/server.php/extra/x?q=1".into(),
        "REQUEST_METHOD=GET".into(),
        "HTTP_X_CUSTOM=custom value".into(),
        "HTTPS=on".into(),
        "SERVER_NAME=php.test".into(),
        "REMOTE_ADDR=127.0.0.1".into(),
        "GATEWAY_INTERFACE=CGI/1.1".into(),
    ] {
        assert!(dump.lines().any(|l| l == line), "missing {line} in\n{dump}");
    }
    assert!(!dump.contains("HTTP_PROXY="), "httpoxy");
}

async fn echo_checks(gw: &FastCgi, mib: usize) {
    let chunks: Vec<Bytes> = (0..mib * 16)
        .map(|i| Bytes::from((0..65536usize).map(|j| ((i * 13 + j * 5) % 253) as u8).collect::<Vec<u8>>()))
        .collect();
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut sent = Sha256::new();
    chunks.iter().for_each(|c| sent.update(c));
    let (parts, ()) = Request::post("/echo.php")
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", total.to_string())
        .body(())
        .unwrap()
        .into_parts();
    let body = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let r = gw.serve(&parts, &conn(false), body).await.unwrap();
    assert_eq!(r.head.status, StatusCode::OK);
    let mut got = Sha256::new();
    let mut len = 0;
    let mut b = r.body;
    while let Some(c) = tokio::time::timeout(Duration::from_secs(30), b.next()).await.unwrap() {
        let c = c.unwrap();
        len += c.len();
        got.update(&c);
    }
    assert_eq!(len, total);
    assert_eq!(got.finalize(), sent.finalize());
}

#[tokio::test]
async fn php_fpm_over_tcp() {
    let (fpm, fpm_addr) = start_fpm(false);
    let gw = gateway(fpm_addr.clone(), &fpm.www, Duration::from_secs(20));
    assert_eq!(text(&gw, "/hello.php").await, "hello world\n");
    server_dump_checks(&gw, &fpm.www).await;
    echo_checks(&gw, 8).await;
    assert_eq!(text(&gw, "/app/").await, "index of app");

    let r = get(&gw, "/teapot.php").await.unwrap();
    assert_eq!(r.head.status.as_u16(), 418);
    assert_eq!(&r.body.collect_bytes().await.unwrap()[..], b"short and stout");
    let r = get(&gw, "/away.php").await.unwrap();
    assert_eq!(r.head.status, StatusCode::FOUND);
    assert_eq!(r.head.kind, HeadKind::ClientRedirect("http://elsewhere.test/x".into()));

    // PARAMS over several records: php-fpm parses each record on its own.
    let big = "b".repeat(40_000);
    let (parts, ()) = Request::get("/server.php")
        .header("X-Big-A", big.as_str())
        .header("X-Big-B", big.as_str())
        .body(())
        .unwrap()
        .into_parts();
    let r = gw.serve(&parts, &conn(false), stream::iter(Vec::<Result<Bytes, Infallible>>::new())).await.unwrap();
    let dump = String::from_utf8(r.body.collect_bytes().await.unwrap().to_vec()).unwrap();
    assert!(dump.lines().any(|l| l == format!("HTTP_X_BIG_A={big}")));
    assert!(dump.lines().any(|l| l == format!("HTTP_X_BIG_B={big}")));

    // Refused before php-fpm is asked: the cgi.fix_pathinfo trap is unreachable.
    for uri in ["/missing.php", "/uploads/evil.jpg/x.php", "/uploads/evil.jpg", "/%2e%2e/fpm.conf"] {
        let e = get(&gw, uri).await.unwrap_err();
        assert_eq!(Error::from(e).status(), StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn php_fpm_over_unix_socket_keeps_the_connection() {
    let (fpm, fpm_addr) = start_fpm(true);
    let gw = gateway(fpm_addr.clone(), &fpm.www, Duration::from_secs(20));
    assert_eq!(text(&gw, "/hello.php").await, "hello world\n");
    server_dump_checks(&gw, &fpm.www).await;
    echo_checks(&gw, 2).await;
    // One kept connection is one php-fpm worker: the same pid answers every time.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(text(&gw, "/pid.php").await);
        assert_eq!(gw.idle_connections(), 1);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "pids {seen:?}");
}

/// A TCP relay in front of php-fpm that counts connections and can cut them all.
struct Relay {
    addr: String,
    accepted: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let live: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (count, tasks) = (accepted.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let to = to.clone();
                tasks.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                }));
            }
        });
        Relay { addr, accepted, live }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every relayed connection, as a restarted php-fpm would.
    async fn cut(&self) {
        let tasks: Vec<_> = self.live.lock().unwrap().drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kept_connections_are_reused_only_after_a_clean_end() {
    let (fpm, fpm_addr) = start_fpm(false);
    let FastCgiAddr::Tcp(fpm_addr) = fpm_addr.clone() else { unreachable!() };
    let relay = Relay::start(fpm_addr).await;
    let gw = gateway(FastCgiAddr::Tcp(relay.addr.clone()), &fpm.www, Duration::from_secs(20));
    for _ in 0..5 {
        assert_eq!(text(&gw, "/hello.php").await, "hello world\n");
    }
    assert_eq!(relay.accepted(), 1, "five requests, one kept connection");
    assert_eq!(gw.idle_connections(), 1);

    // The kept connection dies while idle: detected, and the request goes out on a fresh one.
    relay.cut().await;
    assert_eq!(text(&gw, "/hello.php").await, "hello world\n");
    assert_eq!(relay.accepted(), 2);

    // The client goes away mid-body: that connection is closed, never reused.
    let r = get(&gw, "/big.php").await.unwrap();
    drop(r);
    assert_eq!(gw.idle_connections(), 0);
    assert_eq!(text(&gw, "/hello.php").await, "hello world\n");
    assert_eq!(relay.accepted(), 3);

    // More requests at once than php-fpm has workers: all are served (kept connections stay
    // below pm.max_children, so none waits behind an idle one).
    let gw = Arc::new(gw);
    let mut all = Vec::new();
    for _ in 0..10 {
        let gw = gw.clone();
        all.push(tokio::spawn(async move { text(&gw, "/sleep.php?ms=100").await }));
    }
    for t in all {
        let out = tokio::time::timeout(Duration::from_secs(20), t).await.unwrap().unwrap();
        assert_eq!(out, "slept");
    }
    assert!(gw.idle_connections() <= 2);
}

#[tokio::test]
async fn stderr_timeout_and_unavailable() {
    let (fpm, fpm_addr) = start_fpm(false);
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || LogWriter(sink.clone())).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let gw = gateway(fpm_addr.clone(), &fpm.www, Duration::from_secs(1));
    assert_eq!(text(&gw, "/complain.php").await, "done");
    let log = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line =
        log.lines().find(|l| l.contains("complaint from php")).unwrap_or_else(|| panic!("no stderr in log:\n{log}"));
    assert!(line.contains("WARN"), "{line}");

    let e = get(&gw, "/sleep.php?ms=3000").await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::Timeout, "{e}");
    assert_eq!(Error::from(e).status(), StatusCode::GATEWAY_TIMEOUT);

    let (_refusing, port) = refusing_port();
    let down = gateway(FastCgiAddr::Tcp(format!("127.0.0.1:{port}")), &fpm.www, Duration::from_secs(2));
    let e = get(&down, "/hello.php").await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::ConnectRefused, "{e}");
    assert_eq!(Error::from(e).status(), StatusCode::BAD_GATEWAY);
    let missing = gateway(FastCgiAddr::Unix(fpm.www.join("no.sock")), &fpm.www, Duration::from_secs(2));
    let e = get(&missing, "/hello.php").await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::ConnectFailed, "{e}");
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
