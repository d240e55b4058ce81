//! CONNECT tunnels through `hopgate proxy`, with real clients (curl -p, nc -X connect, socat, Python's
//! http.client) against echo and line servers started here.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::origin::{Origin, echo_server, raw};
use support::{
    ClosedPort, Hopgate, Raw, curl, open_tunnel, read_head, read_head_bytes, refused, wait_child, wait_until,
};

fn proxy_for(port: u16, extra: &[&str]) -> Hopgate {
    let port = port.to_string();
    let mut args = vec!["--connect-port", port.as_str()];
    args.extend_from_slice(extra);
    Hopgate::proxy(&args)
}

#[test]
fn tens_of_mib_each_way_arrive_intact() {
    let target = echo_server();
    let hg = proxy_for(target.port(), &[]);
    let tunnel = open_tunnel(hg.addr, target, "");
    const LEN: usize = 32 << 20;
    let mut writer = tunnel.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut x: u32 = 12345;
        let mut sent = 0;
        let mut buf = vec![0u8; 65536];
        while sent < LEN {
            for b in buf.iter_mut() {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (x >> 16) as u8;
            }
            writer.write_all(&buf).unwrap();
            h.update(&buf);
            sent += buf.len();
        }
        writer.shutdown(Shutdown::Write).unwrap();
        h.finalize()
    });
    let mut reader = tunnel;
    let mut h = Sha256::new();
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n;
    }
    assert_eq!(got, LEN, "all bytes came back, then EOF");
    assert_eq!(h.finalize(), sender.join().unwrap());
}

#[test]
fn data_sent_with_the_connect_head_is_kept() {
    let target = echo_server();
    let hg = proxy_for(target.port(), &[]);
    let mut s = TcpStream::connect(hg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The head and the first bytes of the tunnelled protocol in one write, before reading the 200.
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nEARLY-BYTES").as_bytes()).unwrap();
    s.write_all(b"+more").unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = vec![0u8; 16];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"EARLY-BYTES+more");
}

#[test]
fn half_close_both_ways() {
    // Client half-closes first: the target reads to EOF, then answers; the client gets it all, then EOF.
    let target = raw(|mut s| {
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let _ = s.write_all(format!("got {} bytes", all.len()).as_bytes());
        let _ = s.shutdown(Shutdown::Write);
    });
    let hg = proxy_for(target.port(), &[]);
    let mut t = open_tunnel(hg.addr, target, "");
    t.write_all(&vec![b'x'; 100_000]).unwrap();
    t.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    t.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "got 100000 bytes");

    // The target half-closes first: the client still sends, and the target gets it.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Mutex::new(tx);
    let target = raw(move |mut s| {
        let _ = s.write_all(b"bye");
        let _ = s.shutdown(Shutdown::Write);
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let _ = tx.lock().unwrap().send(all);
    });
    let hg = proxy_for(target.port(), &[]);
    let mut t = open_tunnel(hg.addr, target, "");
    let mut first = Vec::new();
    t.read_to_end(&mut first).unwrap();
    assert_eq!(first, b"bye", "EOF after the target's data");
    t.write_all(b"still talking").unwrap();
    t.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"still talking");
}

#[test]
fn connect_refusals() {
    let target = echo_server();
    let hg = proxy_for(target.port(), &["--connect-port", "443"]);
    let ask = |authority: &str| {
        let mut c = Raw::connect(hg.addr);
        c.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"));
        c.response_to("CONNECT")
    };
    // A port not in --connect-port.
    let r = ask("127.0.0.1:25");
    assert_eq!(r.status, 403, "{}", r.head);
    assert!(r.text().contains("port 25"), "{}", r.text());
    // A port nothing listens on is not in the list either.
    let closed = ClosedPort::new();
    let r = ask(&closed.addr.to_string());
    assert_eq!(r.status, 403, "{}", r.text());
    let strict = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--connect-port", &target.port().to_string()]);
    let mut c = Raw::connect(strict.addr);
    c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"));
    let r = c.response_to("CONNECT");
    assert_eq!(r.status, 403, "loopback refused by the target policy: {}", r.text());
    // Bad authority.
    for bad in
        ["CONNECT nohost HTTP/1.1\r\n\r\n", "CONNECT /path HTTP/1.1\r\n\r\n", "CONNECT http://x:443/ HTTP/1.1\r\n\r\n"]
    {
        let r = support::exchange(hg.addr, bad);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.head);
    }
}

#[test]
fn connect_upstream_errors() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let hg = Hopgate::start_config(&format!(
        "[timeouts]\nconnect_secs = 1\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n\
         allow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [{port}, 443]\n"
    ));
    let ask = |authority: &str| {
        let mut c = Raw::connect(hg.addr);
        c.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"));
        c.response_to("CONNECT")
    };
    let r = ask(&format!("127.0.0.1:{port}"));
    assert_eq!(r.status, 502, "refused: {}", r.text());
    let r = ask("no-such-host.invalid:443");
    assert_eq!(r.status, 502, "DNS: {}", r.text());
    // Timeout: the same port becomes a listener with a full backlog.
    let _fill = closed.listen_full();
    let started = Instant::now();
    let r = ask(&format!("127.0.0.1:{port}"));
    assert_eq!(r.status, 504, "timeout: {}", r.text());
    assert!(started.elapsed() < Duration::from_secs(8));
    let log = hg.stderr_text();
    assert!(log.contains(&format!("127.0.0.1:{port}")), "errors are logged with the target: {log}");
}

#[test]
fn curl_proxytunnel() {
    let origin = Origin::fixed("through the tunnel");
    let hg = proxy_for(origin.addr.port(), &[]);
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20", "-p", "-x", &hg.url(), &origin.url("/t")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the tunnel", "{err}");
    assert!(err.contains("200 Connection Established"), "{err}");
    let seen = origin.last();
    assert!(seen.header("via").is_none(), "a tunnel is opaque: nothing is added inside it");
}

#[test]
fn nc_socat_and_python_clients() {
    let target = echo_server();
    let hg = proxy_for(target.port(), &[]);
    let proxy = hg.addr.to_string();
    // OpenBSD netcat: nc -X connect -x PROXY HOST PORT
    support::require("nc", "netcat-openbsd");
    let port = target.port().to_string();
    let out = through_client("nc", &["-X", "connect", "-x", &proxy, "-w", "5", "127.0.0.1", &port], b"hello via nc\n");
    assert_eq!(out, b"hello via nc\n");

    support::require("socat", "socat");
    let address = format!("PROXY:127.0.0.1:127.0.0.1:{},proxyport={}", target.port(), hg.addr.port());
    assert_eq!(through_client("socat", &["-T", "5", "-", &address], b"hello via socat\n"), b"hello via socat\n");

    let origin = Origin::fixed("python tunnel");
    let hg2 = proxy_for(origin.addr.port(), &[]);
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {}, timeout=10)\n\
         c.set_tunnel('127.0.0.1', {})\nc.request('GET', '/py')\nr = c.getresponse()\n\
         print(r.status, r.read().decode())\n",
        hg2.addr.port(),
        origin.addr.port()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 python tunnel",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a client program that connects through the proxy, writes `input` to its stdin (then EOF), and returns
/// what it printed once it exited (at most 15 s).
fn through_client(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    if wait_child(&mut child, Duration::from_secs(15)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn hundreds_of_concurrent_tunnels() {
    let target = echo_server();
    let hg = proxy_for(target.port(), &[]);
    let mut tunnels = Vec::new();
    for _ in 0..300 {
        tunnels.push(open_tunnel(hg.addr, target, ""));
    }
    for (i, t) in tunnels.iter_mut().enumerate() {
        t.write_all(format!("tunnel {i:03}\n").as_bytes()).unwrap();
    }
    for (i, t) in tunnels.iter_mut().enumerate() {
        let mut got = [0u8; 11];
        t.read_exact(&mut got).unwrap();
        assert_eq!(&got, format!("tunnel {i:03}\n").as_bytes());
    }
    let rss = hg.rss_kib();
    println!("300 open tunnels: hopgate RSS {rss} KiB");
}

#[test]
fn tunnel_cap_gives_503_and_idle_tunnels_close() {
    let target = echo_server();
    let hg = Hopgate::start_config(&format!(
        "[timeouts]\ntunnel_idle_secs = 1\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n\
         allow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [{}]\nmax_tunnels = 2\n",
        target.port()
    ));
    let mut a = open_tunnel(hg.addr, target, "");
    let _b = open_tunnel(hg.addr, target, "");
    let mut c = Raw::connect(hg.addr);
    c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"));
    let r = c.response_to("CONNECT");
    assert_eq!(r.status, 503, "{}", r.text());
    // Idle for over a second: the tunnels are closed, and their slots come back.
    let started = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(a.read(&mut buf).unwrap_or(0), 0, "idle tunnel closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Once the other idle tunnel has closed too, a new one may open.
    let mut again = None;
    let opened = wait_until(Duration::from_secs(5), || {
        let (s, head) = support::connect_request(hg.addr, target, "");
        again = head.starts_with("HTTP/1.1 200").then_some(s);
        again.is_some()
    });
    assert!(opened, "the slots of the closed tunnels came back");
}

#[test]
fn proxy_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    for (flag, user, pass) in [("-B", "bcrypt", "b-pass"), ("-s", "sha", "s-pass"), ("-m", "apr", "a-pass")] {
        support::peers::htpasswd(&users, &[flag], user, pass);
    }
    let origin = Origin::fixed("authorized");
    let hg = proxy_for(origin.addr.port(), &["--users", users.to_str().unwrap()]);
    // No credentials, wrong ones, malformed ones: 407 with the challenge.
    for extra in [
        "",
        "Proxy-Authorization: Basic YmNyeXB0Ondyb25n\r\n",
        "Proxy-Authorization: Basic !!!not-base64\r\n",
        "Proxy-Authorization: Bearer abc\r\n",
        "Proxy-Authorization: Basic bm9jb2xvbg==\r\n",
        "Proxy-Authorization: Basic\r\n",
        // RFC 7617 (http::basic): one or more spaces after the scheme, not a tab
        "Proxy-Authorization: Basic\tc2hhOnMtcGFzcw==\r\n",
    ] {
        let r = support::exchange(hg.addr, &format!("GET {} HTTP/1.1\r\nHost: x\r\n{extra}\r\n", origin.url("/")));
        assert_eq!(r.status, 407, "{extra:?}");
        assert_eq!(r.header("proxy-authenticate"), Some("Basic realm=\"hopgate\""));
        let mut c = Raw::connect(hg.addr);
        c.send(format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n{extra}\r\n", origin.addr));
        assert_eq!(c.response_to("CONNECT").status, 407, "CONNECT {extra:?}");
    }
    assert_eq!(origin.count(), 0);
    // The scheme in any case, more than one space, the padding left out: accepted.
    let r = support::exchange(
        hg.addr,
        &format!("GET {} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: bAsIc   c2hhOnMtcGFzcw\r\n\r\n", origin.url("/")),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    // Each hash format, with curl.
    for creds in ["bcrypt:b-pass", "sha:s-pass", "apr:a-pass"] {
        let (code, body, err) = curl(&["-x", &hg.url(), "--proxy-user", creds, &origin.url("/")]);
        assert_eq!((code, body.as_slice()), (200, &b"authorized"[..]), "{creds}: {err}");
        let (code, body, err) = curl(&["-p", "-x", &hg.url(), "--proxy-user", creds, &origin.url("/")]);
        assert_eq!((code, body.as_slice()), (200, &b"authorized"[..]), "tunnel {creds}: {err}");
    }
    assert!(origin.seen.lock().unwrap().iter().all(|s| !s.has("proxy-authorization")), "credentials never travel");
    let (code, _, _) = curl(&["-x", &hg.url(), "--proxy-user", "sha:wrong", &origin.url("/")]);
    assert_eq!(code, 407);
}

#[test]
fn websocket_upgrade_through_the_relay() {
    // An origin that accepts the upgrade and then echoes frames (bytes) back.
    let ws = raw(|mut s| {
        let Ok(head) = read_head_bytes(&mut s) else { return };
        let text = head.to_ascii_lowercase();
        if !text.contains("upgrade: websocket") || !text.contains("connection: upgrade") {
            let _ = s.write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno");
            return;
        }
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = s.write_all(&buf[..n]);
                }
            }
        }
    });
    let hg = proxy_for(443, &[]);
    let mut c = TcpStream::connect(hg.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        format!(
            "GET http://{ws}/chat HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    c.write_all(b"\x81\x05hello").unwrap();
    let mut got = [0u8; 7];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"\x81\x05hello");

    // An upgrade the origin refuses is an ordinary response.
    let r = support::exchange(
        hg.addr,
        &format!("GET http://{ws}/ HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
    );
    assert_eq!(r.status, 426);
    assert_eq!(r.body, b"no");
}

#[test]
fn ipv6_targets_and_listeners() {
    let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
        panic!("this machine has no IPv6 loopback (::1): the IPv6 tests need it");
    };
    let target = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let port = target.port().to_string();
    let hg = Hopgate::start(&["proxy", "--listen", "[::1]:0", "--allow-target", "::1/128", "--connect-port", &port]);
    assert!(hg.listening[0].starts_with("http://[::1]:"), "{:?}", hg.listening);
    let mut s = TcpStream::connect(hg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CONNECT [::1]:{port} HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\nv6 data").as_bytes()).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = [0u8; 7];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"v6 data");
    // Without the allowance, ::1 is refused like 127.0.0.1.
    let strict = Hopgate::start(&["proxy", "--listen", "[::1]:0", "--connect-port", &port]);
    let r = support::exchange(strict.addr, &format!("CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 403);
}

#[test]
fn websocket_upgrade_through_the_gateway() {
    let ws = raw(|mut s| {
        if read_head_bytes(&mut s).is_err() {
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let hg = Hopgate::gateway(&format!("http://{ws}"), &[]);
    let mut c = TcpStream::connect(hg.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /chat HTTP/1.1\r\nHost: public\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write_all(b"frame").unwrap();
    let mut got = [0u8; 5];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"frame");
}

#[test]
fn sigterm_lets_an_open_tunnel_finish_within_the_drain_time() {
    let target = echo_server();
    let port = target.port().to_string();
    let mut hg = Hopgate::proxy(&["--connect-port", &port, "--drain", "2"]);
    let mut t = open_tunnel(hg.addr, target, "");
    let started = Instant::now();
    hg.signal("TERM");
    assert!(wait_until(Duration::from_secs(5), || refused(hg.addr)), "no new connections while draining");
    // In-flight work goes on: the open tunnel still carries bytes both ways.
    t.write_all(b"during the drain").unwrap();
    let mut got = [0u8; 16];
    t.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"during the drain");
    // Past the drain time the tunnel is closed and hopgate exits 0.
    let status = hg.wait_exit(Duration::from_secs(10)).expect("exits after the drain time");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let mut rest = Vec::new();
    let closed = t.read_to_end(&mut rest).is_ok_and(|n| n == 0) || rest.is_empty();
    assert!(closed, "the tunnel ends with the process: {rest:?}");
}
