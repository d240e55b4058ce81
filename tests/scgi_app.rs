//! SCGI against an application written here in /usr/bin/python3 (socketserver, no libraries):
//! it checks the netstring, echoes its environment in arrival order and the body's sha256,
//! streams a body back, streams slowly, hangs, and answers garbage. Stopped by PID.

mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};
use support::pyapp::PyApp;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use hopgate::backend::meta::{ConnInfo, GatewayError, GatewayErrorKind, GatewayResponse};
use hopgate::backend::scgi::{Scgi, ScgiConfig};
use hopgate::error::Error;
use http::{Request, StatusCode};
use sha2::{Digest, Sha256};

const APP: &str = r#"
import hashlib, socket, socketserver, sys, time

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        rf = self.request.makefile('rb')
        out = self.request.makefile('wb')
        digits = b''
        while True:
            c = rf.read(1)
            if not c:
                return
            if c == b':':
                break
            digits += c
        head = rf.read(int(digits))
        if rf.read(1) != b',':
            out.write(b'Status: 500 Bad Netstring\r\n\r\n'); out.flush(); return
        items = head.split(b'\0')[:-1]
        pairs = list(zip(items[0::2], items[1::2]))
        env = dict(pairs)
        length = int(env[b'CONTENT_LENGTH'])
        path = env.get(b'PATH_INFO', b'')
        if path == b'/env':
            body = rf.read(length)
            out.write(b'Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n')
            out.write(b'ORDER=' + b','.join(k for k, _ in pairs[:2]) + b'\n')
            for k, v in sorted(pairs):
                out.write(k + b'=' + v + b'\n')
            out.write(b'BODY_LEN=%d\nBODY_SHA256=%s\n' % (len(body), hashlib.sha256(body).hexdigest().encode()))
        elif path == b'/echo':
            out.write(b'Content-Type: application/octet-stream\r\n\r\n')
            left = length
            while left:
                chunk = rf.read1(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
                out.write(chunk); out.flush()
        elif path == b'/slow':
            out.write(b'Content-Type: text/plain\n\nfirst\n'); out.flush()
            time.sleep(1)
            out.write(b'second\n')
        elif path == b'/hang':
            time.sleep(60)
        else:
            out.write(b'garbage without a head\n')
        out.flush()

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

srv = Server(('127.0.0.1', 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn start_app() -> PyApp {
    PyApp::start(APP)
}

/// A loopback port that refuses connections for as long as the socket lives: bound, never
/// listening, so nobody else can take it meanwhile.
fn refusing_port() -> (socket2::Socket, u16) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    (s, port)
}

fn gateway(addr: &str, timeout: Duration) -> Scgi {
    let mut cfg = ScgiConfig::new(addr);
    cfg.timeout = timeout;
    Scgi::new(cfg)
}

fn conn() -> ConnInfo {
    ConnInfo {
        remote: "127.0.0.1:41000".parse().unwrap(),
        local: "127.0.0.1:8080".parse().unwrap(),
        https: false,
        server_name: None,
        server_port: None,
        server_software: "hopgate/test".into(),
    }
}

type Body = stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>>;

fn body(chunks: Vec<Bytes>) -> Body {
    stream::iter(chunks.into_iter().map(Ok).collect::<Vec<_>>())
}

async fn call(gw: &Scgi, req: Request<()>, chunks: Vec<Bytes>) -> Result<GatewayResponse, GatewayError> {
    let (parts, ()) = req.into_parts();
    gw.serve(&parts, &conn(), body(chunks)).await
}

fn payload(mib: usize) -> Vec<Bytes> {
    (0..mib * 16)
        .map(|i| Bytes::from((0..65536usize).map(|j| ((i * 17 + j * 3) % 239) as u8).collect::<Vec<u8>>()))
        .collect()
}

#[tokio::test]
async fn environment_and_body_reach_the_application() {
    let app = start_app();
    let gw = gateway(&app.addr, Duration::from_secs(20));
    let chunks = payload(4);
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut sha = Sha256::new();
    chunks.iter().for_each(|c| sha.update(c));
    let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let req = Request::post("/env?a=b")
        .header("Host", "scgi.test")
        .header("Content-Length", total.to_string())
        .header("Content-Type", "application/octet-stream")
        .header("Proxy", "http://evil:1")
        .header("X-Thing", "thing")
        .body(())
        .unwrap();
    let r = call(&gw, req, chunks).await.unwrap();
    assert_eq!(r.head.status, StatusCode::CREATED);
    let text = String::from_utf8(r.body.collect_bytes().await.unwrap().to_vec()).unwrap();
    for line in [
        "ORDER=CONTENT_LENGTH,SCGI".to_string(),
        "SCGI=1".into(),
        format!("CONTENT_LENGTH={total}"),
        "CONTENT_TYPE=application/octet-stream".into(),
        "PATH_INFO=/env".into(),
        "SCRIPT_NAME=".into(),
        "QUERY_STRING=a=b".into(),
        "REQUEST_METHOD=POST".into(),
        "HTTP_X_THING=thing".into(),
        "SERVER_NAME=scgi.test".into(),
        format!("BODY_LEN={total}"),
        format!("BODY_SHA256={hex}"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("HTTP_PROXY"), "httpoxy");

    // GET: CONTENT_LENGTH 0, no body.
    let r = call(&gw, Request::get("/env").body(()).unwrap(), vec![]).await.unwrap();
    let text = String::from_utf8(r.body.collect_bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.lines().any(|l| l == "CONTENT_LENGTH=0"), "{text}");
}

#[tokio::test]
async fn body_streams_both_ways() {
    let app = start_app();
    let gw = gateway(&app.addr, Duration::from_secs(20));
    let chunks = payload(8);
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut sent = Sha256::new();
    chunks.iter().for_each(|c| sent.update(c));
    let req = Request::post("/echo").header("Content-Length", total.to_string()).body(()).unwrap();
    let r = call(&gw, req, chunks).await.unwrap();
    let mut got = Sha256::new();
    let mut len = 0;
    let mut b = r.body;
    while let Some(c) = tokio::time::timeout(Duration::from_secs(20), b.next()).await.unwrap() {
        let c = c.unwrap();
        len += c.len();
        got.update(&c);
    }
    assert_eq!(len, total);
    assert_eq!(got.finalize(), sent.finalize());

    let start = Instant::now();
    let r = call(&gw, Request::get("/slow").body(()).unwrap(), vec![]).await.unwrap();
    let mut b = r.body;
    assert_eq!(&b.next().await.unwrap().unwrap()[..], b"first\n");
    assert!(start.elapsed() < Duration::from_millis(800), "first chunk after {:?}", start.elapsed());
    assert_eq!(&b.next().await.unwrap().unwrap()[..], b"second\n");
    assert!(b.next().await.is_none());
}

#[tokio::test]
async fn hang_garbage_down_and_unknown_length() {
    let app = start_app();
    let gw = gateway(&app.addr, Duration::from_secs(1));
    let e = call(&gw, Request::get("/hang").body(()).unwrap(), vec![]).await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::Timeout, "{e}");
    assert_eq!(Error::from(e).status(), StatusCode::GATEWAY_TIMEOUT);

    let e = call(&gw, Request::get("/garbage").body(()).unwrap(), vec![]).await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::BadResponse, "{e}");
    assert_eq!(Error::from(e).status(), StatusCode::BAD_GATEWAY);

    let req = Request::post("/env").header("Transfer-Encoding", "chunked").body(()).unwrap();
    let e = call(&gw, req, vec![Bytes::from_static(b"x")]).await.unwrap_err();
    assert_eq!(Error::from(e).status(), StatusCode::LENGTH_REQUIRED);

    let (_refusing, port) = refusing_port();
    let down = gateway(&format!("127.0.0.1:{port}"), Duration::from_secs(2));
    let e = call(&down, Request::get("/env").body(()).unwrap(), vec![]).await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::ConnectRefused, "{e}");
    assert_eq!(Error::from(e).status(), StatusCode::BAD_GATEWAY);
}
