//! Upgrades (RFC 9110 §7.8) through the gateway and the forward proxy: only protocols on the `upgrades`
//! allow-list (default `["websocket"]`) are re-offered upstream; h2c never is; a 101 naming a protocol that was
//! not offered is a 502; an upgraded connection is logged when its tunnel ends, with its bytes.
//!
//! The origin here answers `101` to any upgrade it is offered and records every byte it receives afterwards: if
//! hopgate forwards an offer it should not, the bytes behind it (HTTP/2 frames, say) show up in that record.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::origin::raw;
use support::{Hopgate, Raw, bin, curl};

/// What the upgrading origin saw.
#[derive(Default)]
struct Record {
    /// Every request head, as received.
    heads: Vec<String>,
    /// Every byte received on a connection after it answered 101.
    after: Vec<u8>,
}

struct UpOrigin {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    /// 101s sent.
    upgrades: Arc<AtomicUsize>,
    /// Connections that ended (EOF or error) after a 101.
    closed_after_101: Arc<AtomicUsize>,
}

impl UpOrigin {
    /// Answers 101 to every request with `Connection: upgrade` and an Upgrade field, naming `answer` (or the first
    /// protocol offered) in its Upgrade field, then echoes and records every byte; other requests get 200
    /// `ordinary` on a kept-alive connection.
    fn start(answer: Option<&'static str>) -> UpOrigin {
        let record = Arc::new(Mutex::new(Record::default()));
        let upgrades = Arc::new(AtomicUsize::new(0));
        let closed_after_101 = Arc::new(AtomicUsize::new(0));
        let (r, u, c) = (record.clone(), upgrades.clone(), closed_after_101.clone());
        let addr = raw(move |mut s| {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = Vec::new();
            loop {
                let end = loop {
                    if let Some(i) = support::find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end);
                r.lock().unwrap().heads.push(head.clone());
                let connection_upgrade = field(&head, "connection")
                    .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
                let offered = field(&head, "upgrade");
                let Some(offered) = offered.filter(|_| connection_upgrade) else {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nordinary");
                    continue;
                };
                let proto = answer
                    .map(str::to_string)
                    .unwrap_or_else(|| offered.split(',').next().unwrap_or("").trim().to_string());
                let _ = s.write_all(
                    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: Upgrade\r\n\r\n")
                        .as_bytes(),
                );
                u.fetch_add(1, Ordering::SeqCst);
                r.lock().unwrap().after.extend_from_slice(&buf);
                let _ = s.write_all(&buf);
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            r.lock().unwrap().after.extend_from_slice(&chunk[..n]);
                            if s.write_all(&chunk[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                return;
            }
        });
        UpOrigin { addr, record, upgrades, closed_after_101 }
    }

    fn heads(&self) -> Vec<String> {
        self.record.lock().unwrap().heads.clone()
    }

    fn after(&self) -> Vec<u8> {
        self.record.lock().unwrap().after.clone()
    }

    fn last_head(&self) -> String {
        self.heads().last().cloned().expect("the origin received no request")
    }
}

/// A field of a raw head, lowercased name, value as sent.
fn field(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The head carries no upgrade offer at all: no Upgrade, no HTTP2-Settings, no `upgrade` connection option.
fn assert_no_offer(head: &str) {
    assert_eq!(field(head, "upgrade"), None, "{head}");
    assert_eq!(field(head, "http2-settings"), None, "{head}");
    assert!(!field(head, "connection").unwrap_or_default().to_ascii_lowercase().contains("upgrade"), "{head}");
}

/// The client connection preface and one HTTP/2 request (HEADERS, HPACK literals without Huffman coding, so
/// that the path is readable in the bytes) for `path` with a forged X-Forwarded-For.
fn h2_request(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    block.push(0x04); // :path, literal without indexing, indexed name 4
    block.push(path.len() as u8);
    block.extend_from_slice(path.as_bytes());
    block.push(0x01); // :authority
    block.push(6);
    block.extend_from_slice(b"public");
    block.push(0x00); // literal without indexing, new name
    block.push(15);
    block.extend_from_slice(b"x-forwarded-for");
    block.push(7);
    block.extend_from_slice(b"6.6.6.6");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let len = block.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

fn gateway_to(origin: SocketAddr, base: &str) -> Hopgate {
    Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", &format!("http://{origin}{base}")])
}

fn proxy() -> Hopgate {
    Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8"])
}

/// Reads a response head byte by byte (nothing after it is consumed).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the head: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Polls `hg`'s access log until a line containing `needle` is there.
fn log_line(hg: &Hopgate, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = hg.stdout_text();
        if let Some(line) = out.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no access log line with {needle:?} in {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The h2c smuggling of the issue: the offer reaches no origin, the client gets the origin's ordinary
/// answer, and HTTP/2 bytes sent behind it reach nothing.
fn h2c_is_refused(hg: &Hopgate, origin: &UpOrigin, target: &str, connection: &str) {
    let mut c = Raw::connect(hg.addr);
    c.send(format!(
        "GET {target} HTTP/1.1\r\nHost: public\r\nConnection: {connection}\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ordinary"), "{}", r.head);
    assert_eq!(r.header("upgrade"), None, "{}", r.head);
    assert_no_offer(&origin.last_head());
    // What an h2c client sends once it believes the upgrade happened: hopgate reads it as HTTP/1.1 and refuses.
    c.send(h2_request("/private/secret"));
    let rest = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 400"), "{rest}");
    assert_eq!(origin.upgrades.load(Ordering::SeqCst), 0);
    assert!(origin.after().is_empty(), "bytes reached the origin outside HTTP: {:?}", origin.after());
    assert!(origin.heads().iter().all(|h| !h.contains("/private")), "{:?}", origin.heads());
}

#[test]
fn h2c_is_never_upgraded_through_the_gateway() {
    let origin = UpOrigin::start(None);
    let hg = gateway_to(origin.addr, "/public");
    h2c_is_refused(&hg, &origin, "/up", "Upgrade, HTTP2-Settings");
    assert!(origin.last_head().starts_with("GET /public/up HTTP/1.1\r\n"), "{}", origin.last_head());
    // HTTP2-Settings not named in Connection is dropped too: it only ever belongs to an h2c offer.
    h2c_is_refused(&hg, &origin, "/up", "Upgrade");
    assert_eq!(origin.heads().len(), 2);
    // The access log shows two ordinary requests, no 101.
    let line = log_line(&hg, "\"GET /up HTTP/1.1\"");
    assert!(line.contains("\" 200 8 "), "{line}");
    assert!(!hg.stdout_text().contains(" 101 "), "{}", hg.stdout_text());

    // curl's own h2c upgrade (`--http2` on http://) falls back to HTTP/1.1: the origin answered normally.
    let (code, body, err) = curl(&["--http2", &format!("{}/curl", hg.url())]);
    assert_eq!((code, body.as_slice()), (200, &b"ordinary"[..]), "{err}");
    assert_no_offer(&origin.last_head());
    assert!(origin.last_head().starts_with("GET /public/curl HTTP/1.1\r\n"), "{}", origin.last_head());
    assert_eq!(origin.upgrades.load(Ordering::SeqCst), 0);
}

#[test]
fn h2c_is_never_upgraded_through_the_forward_proxy() {
    let origin = UpOrigin::start(None);
    let hg = proxy();
    let target = format!("http://{}/up", origin.addr);
    h2c_is_refused(&hg, &origin, &target, "Upgrade, HTTP2-Settings");
    h2c_is_refused(&hg, &origin, &target, "Upgrade");
    let (code, body, err) = curl(&["--http2", "-x", &hg.url(), &format!("http://{}/curl", origin.addr)]);
    assert_eq!((code, body.as_slice()), (200, &b"ordinary"[..]), "{err}");
    assert_no_offer(&origin.last_head());
    assert_eq!(origin.upgrades.load(Ordering::SeqCst), 0);
}

#[test]
fn protocols_off_the_list_are_not_offered_upstream() {
    let origin = UpOrigin::start(None);
    let gw = gateway_to(origin.addr, "");
    let px = proxy();
    for (hg, target) in [(&gw, "/foo".to_string()), (&px, format!("http://{}/foo", origin.addr))] {
        for offer in ["foo", "FOO/1", "h2c, foo", "HTTP/2.0", "h2"] {
            let mut c = Raw::connect(hg.addr);
            c.send(format!(
                "GET {target} HTTP/1.1\r\nHost: public\r\nConnection: keep-alive, Upgrade\r\nUpgrade: {offer}\r\n\r\n"
            ));
            let r = c.response();
            assert_eq!((r.status, r.text().as_str()), (200, "ordinary"), "{offer}: {}", r.head);
            assert_no_offer(&origin.last_head());
            // The connection stays an HTTP/1.1 connection.
            c.send(format!("GET {target} HTTP/1.1\r\nHost: public\r\n\r\n"));
            assert_eq!(c.response().status, 200, "{offer}");
        }
    }
    assert_eq!(origin.upgrades.load(Ordering::SeqCst), 0);
    assert!(origin.after().is_empty());
}

/// Upgrades to `offer` through `hg`, expects a 101 for `want`, and echoes a few bytes through the tunnel.
fn upgrade_and_echo(hg: &Hopgate, target: &str, offer: &str, want: &str) -> TcpStream {
    let mut c = connect(hg.addr);
    c.write_all(
        format!(
            "GET {target} HTTP/1.1\r\nHost: public\r\nUpgrade: {offer}\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101 "), "{offer}: {head}");
    assert_eq!(field(&head, "upgrade").as_deref(), Some(want), "{head}");
    assert_eq!(field(&head, "connection").map(|c| c.to_ascii_lowercase()).as_deref(), Some("upgrade"), "{head}");
    c.write_all(b"\x81\x05hello").unwrap();
    let mut got = [0u8; 7];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"\x81\x05hello");
    c
}

#[test]
fn websocket_is_upgraded_by_default_and_only_it_is_offered() {
    let origin = UpOrigin::start(None);
    let gw = gateway_to(origin.addr, "/public");
    let px = proxy();
    for (hg, target) in [(&gw, "/chat".to_string()), (&px, format!("http://{}/chat", origin.addr))] {
        let _c = upgrade_and_echo(hg, &target, "websocket", "websocket");
        let head = origin.last_head();
        assert_eq!(field(&head, "upgrade").as_deref(), Some("websocket"), "{head}");
        assert_eq!(field(&head, "connection").as_deref(), Some("upgrade"), "{head}");
        assert_eq!(field(&head, "sec-websocket-key").as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="), "{head}");
        // Several offered: only the allowed one goes on, and the origin picks it.
        let _c = upgrade_and_echo(hg, &target, "foo/2, h2c, WebSocket", "WebSocket");
        assert_eq!(field(&origin.last_head(), "upgrade").as_deref(), Some("WebSocket"), "{}", origin.last_head());
    }
    assert_eq!(origin.upgrades.load(Ordering::SeqCst), 4);
}

#[test]
fn the_allow_list_is_set_per_listener_and_per_route() {
    let origin = UpOrigin::start(None);
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nupgrades = [\"foo\", \"bar/2\"]\n\
         [listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         [[listener.route]]\npath = \"/none\"\nto = \"http://{o}\"\nupgrades = []\n\
         [[listener.route]]\npath = \"/ws\"\nto = \"http://{o}\"\nupgrades = [\"WebSocket\"]\n\
         [[listener.route]]\nto = \"http://{o}\"\n",
        o = origin.addr
    ));
    let absolute = format!("http://{}/p", origin.addr);
    // The listener's list: the forward proxy and the route without a list of its own.
    for target in [absolute.as_str(), "/default"] {
        let _c = upgrade_and_echo(&hg, target, "foo", "foo");
        let _c = upgrade_and_echo(&hg, target, "FOO/7", "FOO/7");
        let _c = upgrade_and_echo(&hg, target, "bar/2", "bar/2");
        for refused in ["websocket", "bar/1", "bar"] {
            let r = support::exchange(
                hg.addr,
                &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: {refused}\r\n\r\n"),
            );
            assert_eq!((r.status, r.text().as_str()), (200, "ordinary"), "{target} {refused}");
            assert_no_offer(&origin.last_head());
        }
    }
    // A route's own list replaces the listener's.
    let _c = upgrade_and_echo(&hg, "/ws/chat", "websocket", "websocket");
    for (target, refused) in [("/ws/x", "foo"), ("/none/x", "foo"), ("/none/x", "websocket")] {
        let r = support::exchange(
            hg.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: {refused}\r\n\r\n"),
        );
        assert_eq!((r.status, r.text().as_str()), (200, "ordinary"), "{target} {refused}");
        assert_no_offer(&origin.last_head());
    }
    assert_eq!(origin.upgrades.load(Ordering::SeqCst), 7);
}

#[test]
fn a_101_to_another_protocol_than_offered_is_a_502() {
    let origin = UpOrigin::start(Some("h2c"));
    let gw = gateway_to(origin.addr, "");
    let px = proxy();
    for (n, (hg, target)) in
        [(&gw, "/chat".to_string()), (&px, format!("http://{}/chat", origin.addr))].into_iter().enumerate()
    {
        let mut c = Raw::connect(hg.addr);
        c.send(format!("GET {target} HTTP/1.1\r\nHost: public\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"));
        let r = c.response();
        assert_eq!(r.status, 502, "{}", r.head);
        assert!(r.text().contains("\"h2c\"") && r.text().contains("\"websocket\""), "{}", r.text());
        // The upstream connection is dropped, never piped: the origin sees it close.
        let deadline = Instant::now() + Duration::from_secs(10);
        while origin.closed_after_101.load(Ordering::SeqCst) < n + 1 {
            assert!(Instant::now() < deadline, "the origin's upgraded connection was not closed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(origin.after().is_empty(), "{:?}", origin.after());
        // The client's connection is still an HTTP/1.1 connection.
        c.send(format!("GET {target} HTTP/1.1\r\nHost: public\r\n\r\n"));
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "ordinary"));
    }
    let line = log_line(&gw, "\"GET /chat HTTP/1.1\" 502");
    assert!(!line.contains("upgrade="), "{line}");
    assert!(gw.stderr_text().contains("switched to \"h2c\""), "{}", gw.stderr_text());
}

#[test]
fn a_101_without_upgrade_or_to_a_request_without_an_offer_is_a_502() {
    // An origin that switches protocols whatever it is asked, naming no protocol.
    let origin = raw(|mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n");
        let _ = s.read(&mut b);
    });
    let hg = gateway_to(origin, "");
    for offer in ["Connection: Upgrade\r\nUpgrade: websocket\r\n", "Connection: Upgrade\r\nUpgrade: foo\r\n", ""] {
        let r = support::exchange(hg.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\n{offer}\r\n"));
        assert_eq!(r.status, 502, "{offer:?}");
    }
}

#[test]
fn check_refuses_h2c_and_bad_tokens_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cgi = dir.path().join("cgi-bin");
    std::fs::create_dir(&cgi).unwrap();
    let head = "[[listener]]\nlisten = \"127.0.0.1:0\"\n";
    let cases = [
        ("upgrades = [\"websocket\",\n  \"h2c\"]\n[listener.proxy]\n", 4, "h2c can never be upgraded to"),
        ("upgrades = [\"H2C\"]\n[listener.proxy]\n", 3, "h2c can never be upgraded to"),
        ("[[listener.route]]\nto = \"http://127.0.0.1:1\"\nupgrades = [\"h2c/1\"]\n", 5, "RFC 9113"),
        ("upgrades = [\"h2\"]\n[listener.proxy]\n", 3, "ALPN"),
        ("upgrades = [\"HTTP/2.0\"]\n[listener.proxy]\n", 3, "HTTP"),
        ("upgrades = [\"web socket\"]\n[listener.proxy]\n", 3, "protocol token"),
        ("upgrades = [\"foo/\"]\n[listener.proxy]\n", 3, "protocol token"),
        ("upgrades = \"websocket\"\n[listener.proxy]\n", 3, ""),
        ("[[listener.route]]\nto = \"cgi:cgi-bin\"\nupgrades = [\"websocket\"]\n", 5, "upgrades only applies to http"),
    ];
    for (text, line, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{head}{text}")).unwrap();
        for cmd in ["check", "run"] {
            let out = Command::new(bin()).arg(cmd).arg(&path).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {text:?}: {err}");
            let want = format!("{}:{line}: ", path.display());
            assert!(err.starts_with(&want), "{cmd} {text:?}: expected {want:?} in {err:?}");
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
    let path = dir.path().join("good.toml");
    std::fs::write(
        &path,
        format!(
            "{head}upgrades = []\n[listener.proxy]\n[[listener.route]]\nto = \"http://127.0.0.1:1\"\n\
             upgrades = [\"websocket\", \"foo/1\"]\n"
        ),
    )
    .unwrap();
    let out = Command::new(bin()).arg("check").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_upgraded_connection_is_logged_when_its_tunnel_ends_with_its_bytes() {
    let origin = UpOrigin::start(None);
    let hg = gateway_to(origin.addr, "/public");
    let mut c = upgrade_and_echo(&hg, "/chat", "websocket", "websocket");
    c.write_all(b"0123456789").unwrap();
    let mut got = [0u8; 10];
    c.read_exact(&mut got).unwrap();
    // While the tunnel is open, there is no line for it yet.
    assert!(!hg.stdout_text().contains("/chat"), "{}", hg.stdout_text());
    // The client ends its side; the origin ends its side in turn (it echoes until EOF): the tunnel is closed.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let line = log_line(&hg, "\"GET /chat HTTP/1.1\"");
    assert!(line.contains("\" 101 17 "), "{line}");
    assert!(line.ends_with(&format!("{} upgrade=websocket up=17 down=17 closed", origin.addr)), "{line}");
    assert_eq!(hg.stdout_text().matches("/chat").count(), 1, "{}", hg.stdout_text());

    // CONNECT tunnels are logged the same way, when they end.
    let echo = support::origin::echo_server();
    let px = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.0/8",
        "--connect-port",
        &echo.port().to_string(),
    ]);
    let mut t = connect(px.addr);
    t.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nabc").as_bytes()).unwrap();
    let head = read_head(&mut t);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = [0u8; 3];
    t.read_exact(&mut got).unwrap();
    assert!(!px.stdout_text().contains("CONNECT"), "{}", px.stdout_text());
    t.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    t.read_to_end(&mut rest).unwrap();
    let line = log_line(&px, "\"CONNECT ");
    assert!(line.contains(&format!("\"CONNECT {echo} HTTP/1.1\" 200 3 ")), "{line}");
    assert!(line.ends_with(&format!("{echo} tunnel up=3 down=3 closed")), "{line}");
}

#[test]
fn a_tunnel_cut_at_the_end_of_the_drain_is_logged_with_its_bytes() {
    let origin = UpOrigin::start(None);
    let mut hg = Hopgate::start(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &format!("http://{}", origin.addr),
        "--drain",
        "1",
    ]);
    let _c = upgrade_and_echo(&hg, "/held", "websocket", "websocket");
    hg.signal("TERM");
    let status = hg.wait_exit(Duration::from_secs(10)).expect("exits after the drain time");
    assert_eq!(status.code(), Some(0));
    let line = log_line(&hg, "\"GET /held HTTP/1.1\"");
    assert!(line.contains("\" 101 7 "), "{line}");
    assert!(line.ends_with(&format!("{} upgrade=websocket up=7 down=7 cancelled", origin.addr)), "{line}");
}
