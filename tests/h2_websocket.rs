//! WebSockets over HTTP/2 (RFC 8441, issue 17): hopgate's HTTP/2 listeners offer SETTINGS_ENABLE_CONNECT_PROTOCOL,
//! and an extended CONNECT with `:protocol websocket` reaches an HTTP/1.1 WebSocket origin as a `GET` with
//! `Upgrade: websocket` (a key of hopgate's own; the origin's 101 back as a 200 without Sec-WebSocket-Accept),
//! through a gateway route and through the forward proxy. Python's `h2` (python3-h2) and headless Chromium as
//! clients; Chromium also uses hopgate as its HTTPS proxy over HTTP/2 (CONNECT on HTTP/2 streams).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use support::origin::raw;
use support::tls::{KeyType, Pki, TlsOrigin};
use support::{Hopgate, read_head, repo, require};

const PYTHON: &str = "/usr/bin/python3";

/// An HTTP/1.1 WebSocket origin (RFC 6455): checks the upgrade request, answers 101 with the right
/// Sec-WebSocket-Accept, then answers each text frame with `echo: TEXT` until a close frame or the end.
/// `heads` gets every request head it was sent.
fn ws_origin(heads: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    raw(move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = read_head(&mut s);
        heads.lock().unwrap().push(head.clone());
        let key = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key")))
            .map(|(_, v)| v.trim().to_string());
        let Some(key) = key else {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nno key");
            return;
        };
        if head.starts_with("GET /page") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
            return;
        }
        let mut h = Sha1::new();
        h.update(key.as_bytes());
        h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        let _ = s.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        );
        while let Some((opcode, payload)) = read_frame(&mut s) {
            if opcode == 8 {
                let _ = s.write_all(&[0x88, 0]);
                break;
            }
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&payload);
            let mut frame = vec![0x81];
            if reply.len() < 126 {
                frame.push(reply.len() as u8);
            } else {
                frame.push(126);
                frame.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            }
            frame.extend_from_slice(&reply);
            if s.write_all(&frame).is_err() {
                break;
            }
        }
    })
}

/// One client frame (masked, as RFC 6455 requires of clients): (opcode, unmasked payload).
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).ok()?;
        len = u64::from(u16::from_be_bytes(l));
    } else if len == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l).ok()?;
        len = u64::from_be_bytes(l);
    }
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    s.read_exact(&mut payload).ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Some((h[0] & 0x0f, payload))
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn python_ws(port: u16, ca: &str, scheme: &str, authority: &str, path: &str, message: &str) -> Vec<String> {
    assert!(
        Path::new(PYTHON).exists()
            && Command::new(PYTHON).args(["-c", "import h2"]).status().is_ok_and(|s| s.success()),
        "python3's h2 is missing: install the Debian package python3-h2 (.ci/run does)"
    );
    let script = repo().join("tests/h2py/websocket.py");
    let out = Command::new("timeout")
        .args(["30", PYTHON, &script.display().to_string(), &port.to_string(), ca, scheme, authority, path, message])
        .output()
        .expect("run python3");
    lines(&out)
}

fn lines(out: &Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(str::to_string).collect()
}

/// One `https://` listener (certificate for gw.test and 127.0.0.1) with `body` below its `[[listener]]`.
fn h2_listener(pki: &Pki, body: &str) -> Hopgate {
    let pair = pki.leaf("gw", KeyType::EcdsaP256, &["gw.test"]);
    Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"https://127.0.0.1:0\"\nvia_name = \"hg.test\"\n\
         [[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n{body}\n",
        pair.cert(),
        pair.key(),
    ))
}

/// RFC 8441 through a gateway route and through the forward proxy on one listener: the origin sees an HTTP/1.1
/// upgrade (hopgate's key, the client's version), the client a 200 without Sec-WebSocket-Accept, and a frame
/// goes each way.
#[test]
fn an_http2_websocket_reaches_an_http11_origin() {
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let origin = ws_origin(heads.clone());
    let pki = Pki::new();
    let hg = h2_listener(
        &pki,
        &format!(
            "[[listener.route]]\nhost = \"gw.test\"\nto = \"http://{origin}\"\n\
             [listener.proxy]\nallow_targets = [\"127.0.0.1\"]\n"
        ),
    );
    let port = hg.addr.port();
    let ca = pki.ca.cert();
    let got = python_ws(port, ca, "https", &format!("gw.test:{port}"), "/chat?room=1", "hello");
    assert_eq!(got[0], "enable_connect_protocol 1", "{got:?}");
    assert_eq!(got[1], "200", "{got:?}");
    assert!(!got.iter().any(|l| l.starts_with("sec-websocket-accept") || l.starts_with("upgrade")), "{got:?}");
    assert_eq!(got.last().unwrap(), "frame echo: hello", "{got:?}");
    {
        let heads = heads.lock().unwrap();
        let head = &heads[0];
        assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
        assert_eq!(field(head, "upgrade"), Some("websocket"), "{head}");
        assert_eq!(field(head, "connection"), Some("upgrade"), "{head}");
        assert_eq!(field(head, "sec-websocket-version"), Some("13"), "{head}");
        assert_eq!(field(head, "sec-websocket-key").map(str::len), Some(24), "{head}");
        assert_eq!(field(head, "host"), Some(format!("gw.test:{port}").as_str()), "{head}");
        assert_eq!(field(head, "via"), Some("2 hg.test"), "{head}");
    }
    // The forward proxy: the target's :authority, as a browser's ws:// through an HTTPS proxy.
    let got = python_ws(port, ca, "http", &origin.to_string(), "/proxied", "through the proxy");
    assert_eq!(got[1], "200", "{got:?}");
    assert_eq!(got.last().unwrap(), "frame echo: through the proxy", "{got:?}");
    assert!(heads.lock().unwrap()[1].starts_with("GET /proxied HTTP/1.1\r\n"));
    // An origin that answers without switching: no tunnel (502), never a 200.
    let got = python_ws(port, ca, "https", &format!("gw.test:{port}"), "/page", "x");
    assert_eq!(got[1], "502", "{got:?}");
    // Both WebSockets are in the access log as the CONNECTs they came as.
    let line = hg.stdout_line("/chat?room=1");
    assert!(line.contains("CONNECT") && line.contains("HTTP/2.0") && line.contains(" 200 "), "{line}");
}

/// Headless Chromium with a throwaway profile trusting the test CA (an NSS database in its HOME).
struct Chromium {
    home: tempfile::TempDir,
}

impl Chromium {
    fn new(pki: &Pki) -> Chromium {
        require("chromium", "chromium");
        let certutil = require("certutil", "libnss3-tools");
        let home = tempfile::tempdir().unwrap();
        let db = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&db).unwrap();
        let db = format!("sql:{}", db.display());
        let ok = Command::new(&certutil).args(["-N", "-d", &db, "--empty-password"]).status().unwrap();
        assert!(ok.success(), "certutil -N");
        let ok = Command::new(&certutil)
            .args(["-A", "-d", &db, "-n", "hopgate-test-ca", "-t", "C,,", "-i", pki.ca.cert()])
            .status()
            .unwrap();
        assert!(ok.success(), "certutil -A");
        Chromium { home }
    }

    /// The DOM of `url` after its scripts ran (`extra`: more flags).
    fn dump_dom(&self, url: &str, extra: &[String]) -> String {
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", self.home.path().join("profile").display()),
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
        ];
        args.extend(extra.iter().cloned());
        args.push(url.to_string());
        let out = Command::new("timeout")
            .arg("60")
            .arg("chromium")
            .args(&args)
            .env("HOME", self.home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Chromium loads a page from hopgate over HTTP/2 and opens a WebSocket to the same host: over the same HTTP/2
/// connection (RFC 8441), through the gateway route to the HTTP/1.1 origin; a message each way ends in the DOM.
#[test]
fn chromium_opens_a_websocket_over_http2() {
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let origin = ws_origin(heads.clone());
    let pki = Pki::new();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<html><body><p id=out>waiting</p><script>\n\
         const out = document.getElementById('out');\n\
         const ws = new WebSocket('wss://' + location.host + '/ws/chat');\n\
         ws.onopen = () => ws.send('hello from chromium');\n\
         ws.onmessage = (m) => { out.textContent = 'got ' + m.data; ws.close(); };\n\
         ws.onerror = () => { out.textContent = 'error'; };\n\
         </script></body></html>\n",
    )
    .unwrap();
    let hg = h2_listener(
        &pki,
        &format!(
            "[[listener.route]]\npath = \"/ws\"\nto = \"http://{origin}\"\n\
             [[listener.route]]\nto = \"file:{}\"\n",
            site.path().display()
        ),
    );
    let chromium = Chromium::new(&pki);
    // Headless Chromium's virtual time can run out while the WebSocket is still opening (the page then still says
    // `waiting`; it also cancels the stream itself now and then): up to three page loads, each a new connection.
    let want = "<p id=\"out\">got echo: hello from chromium</p>";
    let url = format!("https://127.0.0.1:{}/index.html", hg.addr.port());
    let mut dom = chromium.dump_dom(&url, &[]);
    for _ in 0..2 {
        if dom.contains(want) || dom.contains("<p id=\"out\">error</p>") {
            break;
        }
        dom = chromium.dump_dom(&url, &[]);
    }
    assert!(dom.contains(want), "{dom}");
    let head = heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /chat HTTP/1.1\r\n"), "the route's prefix is replaced: {head}");
    // The WebSocket came as an extended CONNECT on the page's HTTP/2 connection.
    let line = hg.stdout_line("/ws/chat");
    assert!(line.contains("\"CONNECT ") && line.contains("HTTP/2.0"), "{line}");
}

/// Chromium with hopgate as its HTTPS proxy speaks HTTP/2 to it: a page and two more HTTPS sites (iframes), each
/// on its own loopback port, all load through CONNECT streams on HTTP/2, as the access log shows.
#[test]
fn chromium_uses_hopgate_as_an_https_proxy_over_http2() {
    let pki = Pki::new();
    let pair = pki.leaf("sites", KeyType::EcdsaP256, &["site.test"]);
    let b = TlsOrigin::start(&pair, "<html><body><p id=b>site b</p></body></html>");
    let c = TlsOrigin::start(&pair, "<html><body><p id=c>site c</p></body></html>");
    let page: &'static str = Box::leak(
        format!(
            "<html><body><p id=a>site a</p><iframe src=\"https://127.0.0.1:{}/\"></iframe>\
             <iframe src=\"https://127.0.0.1:{}/\"></iframe></body></html>",
            b.port(),
            c.port()
        )
        .into_boxed_str(),
    );
    let a = TlsOrigin::start(&pair, page);
    let proxy = pki.leaf("proxy", KeyType::EcdsaP256, &["proxy.test"]);
    let ports = format!("{}, {}, {}", a.port(), b.port(), c.port());
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"https://127.0.0.1:0\"\n[[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [listener.proxy]\nallow_targets = [\"127.0.0.1\"]\nconnect_ports = [{ports}]\n",
        proxy.cert(),
        proxy.key()
    ));
    let chromium = Chromium::new(&pki);
    let dom = chromium.dump_dom(
        &format!("https://127.0.0.1:{}/", a.port()),
        &[format!("--proxy-server=https://127.0.0.1:{}", hg.addr.port()), "--proxy-bypass-list=<-loopback>".into()],
    );
    assert!(dom.contains("site a"), "{dom}");
    for origin in [&a, &b, &c] {
        let line = hg.stdout_line(&format!("CONNECT 127.0.0.1:{}", origin.port()));
        assert!(line.contains("HTTP/2.0"), "{line}");
        assert!(origin.accepted() >= 1);
    }
}

/// The whole chain over HTTP/2: an HTTP/2 client's extended CONNECT, through a gateway route that speaks HTTP/2 to
/// its origin, reaches the origin as an extended CONNECT of hopgate's own (RFC 8441 both ways), and a frame goes
/// each way.
#[test]
fn an_http2_websocket_reaches_an_http2_origin_as_an_extended_connect() {
    let o = support::h2origin::H2Origin::plain();
    let pki = Pki::new();
    let hg = h2_listener(
        &pki,
        &format!(
            "[[listener.route]]\nhost = \"gw.test\"\nto = \"http://127.0.0.1:{}\"\nupstream_http = \"2\"\n",
            o.port
        ),
    );
    let port = hg.addr.port();
    let got = python_ws(port, pki.ca.cert(), "https", &format!("gw.test:{port}"), "/chat", "over two hops");
    assert_eq!(got[1], "200", "{got:?}");
    assert!(!got.iter().any(|l| l.starts_with("sec-websocket-accept") || l.starts_with("upgrade")), "{got:?}");
    assert_eq!(got.last().unwrap(), "frame over two hops", "{got:?}");
    let req = &o.wait_requests(1)[0];
    let fields = |name: &str| support::h2origin::fields(req, name).into_iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(fields(":method"), ["CONNECT"], "{req}");
    assert_eq!(fields(":protocol"), ["websocket"], "{req}");
    assert_eq!(fields(":path"), ["/chat"], "{req}");
    assert!(fields("sec-websocket-key").is_empty() && fields("upgrade").is_empty(), "{req}");
}
