//! The SCGI gateway end to end: the real binary (`hopgate gateway --to scgi://ADDR`, or a config file) with curl and
//! raw clients, in front of an SCGI application written here in /usr/bin/python3 (socketserver, no libraries) that
//! checks the netstring, echoes its environment in arrival order and the body's sha256, streams a body back,
//! streams its output while it waits for the test, hangs, and answers garbage. Stopped by PID.

mod support;

use std::time::{Duration, Instant};
use support::pyapp::PyApp;

use support::{ClosedPort, DataFile, Hopgate, Raw, curl, env_of, exchange, pseudo_random, sha256_hex};

const APP: &str = r#"
import hashlib, os, socketserver, time

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
        if path.endswith(b'/slow'):
            # first, then wait (at most 10 s) for the file the query names: the test creates it once it has
            # received "first", so that line can only have come while the application was still running
            out.write(b'Content-Type: text/plain\n\nfirst\n'); out.flush()
            go = env[b'QUERY_STRING'].decode()
            for _ in range(200):
                if os.path.exists(go):
                    break
                time.sleep(0.05)
            out.write(b'second\n' if os.path.exists(go) else b'gave-up\n')
        elif path.endswith(b'/echo'):
            out.write(b'Content-Type: application/octet-stream\r\n\r\n')
            left = length
            while left:
                chunk = rf.read1(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
                out.write(chunk); out.flush()
        elif path.endswith(b'/hang'):
            time.sleep(30)
        elif path.endswith(b'/garbage'):
            out.write(b'garbage without a head\n')
        else:
            body = rf.read(length)
            out.write(b'Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n')
            out.write(b'ORDER=' + b','.join(k for k, _ in pairs[:2]) + b'\n')
            for k, v in sorted(pairs):
                out.write(k + b'=' + v + b'\n')
            out.write(b'BODY_LEN=%d\nBODY_SHA256=%s\n' % (len(body), hashlib.sha256(body).hexdigest().encode()))
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

fn gateway(app: &PyApp) -> Hopgate {
    Hopgate::gateway(&format!("scgi://{}", app.addr), &[])
}

#[test]
fn environment_and_body_reach_the_app() {
    let app = start_app();
    let h = gateway(&app);
    let data = pseudo_random(2 << 20, 9);
    let input = DataFile::new(&data);
    let url = format!("{}/app/env?x=1", h.url());
    let at = input.at();
    let digest = sha256_hex(&data);
    for chunked in [false, true] {
        let mut args =
            vec!["-H", "Proxy: http://evil:1", "-H", "X-Custom: yes", "-H", "Content-Type: application/x-test"];
        args.extend(["--data-binary", at.as_str()]);
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        args.push(&url);
        let (code, body, err) = curl(&args);
        assert_eq!(code, 201, "{err}");
        let text = String::from_utf8_lossy(&body).into_owned();
        let env = env_of(&text);
        assert_eq!(env["ORDER"], "CONTENT_LENGTH,SCGI", "netstring order");
        assert_eq!(env["SCGI"], "1");
        assert_eq!(env["CONTENT_LENGTH"], data.len().to_string(), "chunked: {chunked}");
        assert_eq!(env["BODY_LEN"], data.len().to_string());
        assert_eq!(env["BODY_SHA256"], digest);
        assert_eq!(env["REQUEST_METHOD"], "POST");
        assert_eq!(env["SCRIPT_NAME"], "");
        assert_eq!(env["PATH_INFO"], "/app/env");
        assert_eq!(env["QUERY_STRING"], "x=1");
        assert_eq!(env["CONTENT_TYPE"], "application/x-test");
        assert_eq!(env["HTTP_X_CUSTOM"], "yes");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["SERVER_PORT"], h.addr.port().to_string());
        assert!(!env.contains_key("HTTP_PROXY"), "httpoxy: {text}");
        assert!(!env.contains_key("HTTP_TRANSFER_ENCODING"), "{text}");
    }
    // The access log names the application.
    let line = h.stdout_line("/app/env");
    assert!(line.ends_with(&app.addr), "{line}");
}

#[test]
fn mounted_under_a_prefix() {
    let app = start_app();
    let h = Hopgate::route_config(&format!("scgi://{}", app.addr), "path = \"/scgi\"");
    let r = exchange(h.addr, "GET /scgi/a/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 201);
    let env = env_of(&r.text());
    assert_eq!((env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()), ("/scgi", "/a/b"));
    assert_eq!(env["CONTENT_LENGTH"], "0");
}

#[test]
fn a_body_streams_both_ways() {
    let app = start_app();
    let h = gateway(&app);
    let data = pseudo_random(8 << 20, 10);
    let input = DataFile::new(&data);
    let at = input.at();
    let r = support::curl_full(&["-H", "Expect:", "--data-binary", &at, &format!("{}/echo", h.url())]);
    assert_eq!(r.code, 200, "{}", r.stderr);
    assert_eq!((r.body.len(), sha256_hex(&r.body)), (data.len(), sha256_hex(&data)));
}

#[test]
fn output_streams_and_failures_map_to_502_and_504() {
    let app = start_app();
    let h = gateway(&app);
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let mut c = Raw::connect(h.addr);
    c.send(format!("GET /slow?{} HTTP/1.1\r\nHost: x\r\n\r\n", go.display()));
    // "first" arrives while the application waits for the test.
    c.read_until(b"first\n");
    std::fs::write(&go, "").unwrap();
    let got = c.read_until(b"0\r\n\r\n");
    assert!(got.contains("first\n") && got.contains("second\n") && !got.contains("gave-up"), "{got}");

    // A timeout of 1 s for what follows.
    let h = Hopgate::route_config(&format!("scgi://{}", app.addr), "script_timeout_secs = 1");
    let get = |h: &Hopgate, path: &str| {
        exchange(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    };
    let r = get(&h, "/garbage");
    assert_eq!(r.status, 502, "{}", r.text());
    let start = Instant::now();
    let r = get(&h, "/hang");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(5));
    // Nothing listens where the route points.
    let closed = ClosedPort::new();
    let down = Hopgate::route_config(&format!("scgi://{}", closed.addr), "script_timeout_secs = 1");
    let r = get(&down, "/env");
    assert_eq!(r.status, 502, "app down: {}", r.text());
    assert!(r.text().starts_with("hopgate: 502"));
    let (code, _, _) = curl(&[&format!("{}/env", down.url())]);
    assert_eq!(code, 502);
}

#[test]
fn a_route_to_hopgates_own_listener_is_508() {
    support::assert_own_listener_routes_are_508("scgi");
}
