//! The SCGI gateway end to end: the real binary in front of an SCGI application written here in /usr/bin/python3
//! (socketserver, no libraries) that checks the netstring, echoes its environment in arrival order and the body's
//! sha256, streams slowly and hangs. Stopped by PID.

mod support;

use std::io::Read;
use std::time::{Duration, Instant};
use support::pyapp::PyApp;

use sha2::{Digest, Sha256};
use support::{Hopgate, Raw, curl, exchange};

const APP: &str = r#"
import hashlib, socketserver, time

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
            out.write(b'Content-Type: text/plain\n\nfirst\n'); out.flush()
            time.sleep(1)
            out.write(b'second\n')
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

fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

#[test]
fn environment_and_body_reach_the_app() {
    let app = start_app();
    let h = Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", &format!("scgi://{}", app.addr)]);
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).unwrap();
    let url = format!("{}/app/env?x=1", h.url());
    let at = format!("@{}", input.display());
    let digest: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.stdout_text().lines().any(|l| l.contains("/app/env") && l.ends_with(&app.addr)) {
        assert!(Instant::now() < deadline, "no access log line naming {}: {}", app.addr, h.stdout_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mounted_under_a_prefix() {
    let app = start_app();
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\npath = \"/scgi\"\n\
         to = \"scgi://{}\"\n",
        app.addr
    ));
    let r = exchange(h.addr, "GET /scgi/a/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 201);
    let env = env_of(&r.text());
    assert_eq!((env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()), ("/scgi", "/a/b"));
    assert_eq!(env["CONTENT_LENGTH"], "0");
}

#[test]
fn output_streams_and_failures_map_to_502_and_504() {
    let app = start_app();
    let h = Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", &format!("scgi://{}", app.addr)]);
    let mut c = Raw::connect(h.addr);
    let start = Instant::now();
    c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let mut first_at = None;
    while !got.ends_with(b"0\r\n\r\n") {
        let mut buf = [0u8; 4096];
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0 && start.elapsed() < Duration::from_secs(10));
        got.extend_from_slice(&buf[..n]);
        if first_at.is_none() && support::find(&got, b"first").is_some() {
            first_at = Some(start.elapsed());
        }
    }
    let first_at = first_at.unwrap();
    assert!(first_at < Duration::from_millis(900) && start.elapsed() >= Duration::from_millis(900), "{first_at:?}");

    // The app sleeps 1 s in /slow: only now a timeout of 1 s.
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"scgi://{}\"\n\
         script_timeout_secs = 1\n",
        app.addr
    ));
    let get = |path: &str| exchange(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let r = get("/garbage");
    assert_eq!(r.status, 502, "{}", r.text());
    let start = Instant::now();
    let r = get("/hang");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(app);
    let r = get("/env");
    assert_eq!(r.status, 502, "app down: {}", r.text());
    assert!(r.text().starts_with("hopgate: 502"));
    let (code, _, _) = curl(&[&format!("{}/env", h.url())]);
    assert_eq!(code, 502);
}
