//! Issue 10: loops through parent chains (CONNECT, and https:// requests that go through a parent as
//! CONNECT), absolute-form targets with invalid ports, and the own-address loop check on the unspecified
//! addresses (0.0.0.0, ::) and on the host's own interface addresses.
//!
//! `cargo test --release --test connect_loop -- --nocapture` prints the RSS of both proxies of a loop.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::origin::{echo_server, raw};
use support::{Hopgate, RssWatch, exchange, held_port};

/// The most connections the forwarder passes on: on code that doesn't detect the loop, the chain of
/// tunnels stops here instead of running until memory or file descriptors run out.
const MAX_FORWARDED: usize = 25;

/// A TCP forwarder the test owns: every accepted connection goes to `to` (set once both proxies run), at
/// most MAX_FORWARDED of them; later ones are closed at once.
struct Forwarder {
    addr: SocketAddr,
    to: Arc<Mutex<Option<SocketAddr>>>,
    accepted: Arc<AtomicUsize>,
}

impl Forwarder {
    fn start() -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let to: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (t, n) = (to.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if n.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDED {
                    continue;
                }
                let Some(to) = *t.lock().unwrap() else { continue };
                let Ok(upstream) = TcpStream::connect(to) else { continue };
                for (mut from, mut into) in
                    [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Forwarder { addr, to, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Two forward proxies, each the other's parent: A's parent is the forwarder, which leads to B; B's parent
/// is A. Both ports are known before anything is connected, so there is no race.
struct Pair {
    a: Hopgate,
    b: Hopgate,
    fwd: Forwarder,
}

fn pair() -> Pair {
    let fwd = Forwarder::start();
    let a = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--parent", &format!("http://{}", fwd.addr)]);
    let b = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--parent", &format!("http://{}", a.addr)]);
    *fwd.to.lock().unwrap() = Some(b.addr);
    Pair { a, b, fwd }
}

/// Access-log lines of `hg` that contain `what`.
fn log_lines(hg: &Hopgate, what: &str) -> Vec<String> {
    hg.stdout_text().lines().filter(|l| l.contains(what)).map(str::to_owned).collect()
}

/// Waits (bounded) until `hg` logged at least `n` lines containing `what`; returns them all.
fn wait_log(hg: &Hopgate, what: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_lines(hg, what);
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{n} log lines with {what:?} expected:\n{}", hg.stdout_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_connect_loop_through_two_parents_is_508_with_three_connects() {
    let p = pair();
    let before = (p.a.rss_kib(), p.b.rss_kib());
    let (watch_a, watch_b) = (RssWatch::start(p.a.pid()), RssWatch::start(p.b.pid()));
    let r = exchange(p.a.addr, "CONNECT loop.invalid:443 HTTP/1.1\r\nHost: loop.invalid:443\r\n\r\n");
    let peak = (watch_a.finish(), watch_b.finish());
    let after = (p.a.rss_kib(), p.b.rss_kib());
    eprintln!(
        "CONNECT loop, RSS KiB: A before {} peak {} after {}; B before {} peak {} after {}; forwarded {}",
        before.0,
        peak.0,
        after.0,
        before.1,
        peak.1,
        after.1,
        p.fwd.accepted()
    );
    assert_eq!(r.status, 508, "{}{}", r.head, r.text());
    assert!(r.text().starts_with("hopgate: 508 Loop Detected\n"), "{}", r.text());
    assert!(r.text().contains("508 Loop Detected"), "the page names the parent's answer: {}", r.text());

    // The client's CONNECT and B's CONNECT back to A (refused there, by Via) on A; A's CONNECT on B.
    let a = wait_log(&p.a, "CONNECT loop.invalid:443", 2);
    let b = wait_log(&p.b, "CONNECT loop.invalid:443", 1);
    assert_eq!((a.len(), b.len()), (2, 1), "A:\n{}\nB:\n{}", a.join("\n"), b.join("\n"));
    assert!(a.iter().chain(&b).all(|l| l.contains("\" 508 ")), "A:\n{}\nB:\n{}", a.join("\n"), b.join("\n"));
    assert_eq!(p.fwd.accepted(), 1, "one connection from A to its parent");

    // curl -p sees the same answer to its CONNECT.
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "-p", "-x", &p.a.url(), "-o", "/dev/null", "-w", "%{http_connect}"])
        .arg("https://loop.invalid/")
        .output()
        .expect("curl (Debian package curl)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "508", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(wait_log(&p.a, "CONNECT loop.invalid:443", 4).len(), 4);
    assert_eq!(wait_log(&p.b, "CONNECT loop.invalid:443", 2).len(), 2);
    assert_eq!(p.fwd.accepted(), 2);
}

#[test]
fn get_and_https_loops_through_two_parents_are_508() {
    let p = pair();
    // Plain http:// goes to the parent in absolute form: Via already caught this one.
    let r = exchange(p.a.addr, "GET http://loop.invalid/x HTTP/1.1\r\nHost: loop.invalid\r\n\r\n");
    assert_eq!(r.status, 508, "{}{}", r.head, r.text());
    assert_eq!(wait_log(&p.a, "GET http://loop.invalid/x", 2).len(), 2);
    assert_eq!(wait_log(&p.b, "GET http://loop.invalid/x", 1).len(), 1);

    // https:// through a parent is a CONNECT to the parent, then TLS inside: that CONNECT carries Via too.
    let r = exchange(p.a.addr, "GET https://tls-loop.invalid/ HTTP/1.1\r\nHost: tls-loop.invalid\r\n\r\n");
    assert_eq!(r.status, 508, "{}{}", r.head, r.text());
    let a = wait_log(&p.a, "CONNECT tls-loop.invalid:443", 1);
    let b = wait_log(&p.b, "CONNECT tls-loop.invalid:443", 1);
    assert_eq!((a.len(), b.len()), (1, 1), "A:\n{}\nB:\n{}", a.join("\n"), b.join("\n"));
    assert_eq!(p.fwd.accepted(), 2, "one connection for each request");
}

/// A fake parent proxy: sends each CONNECT head it reads to the test, then answers 508 for targets named
/// `loop.*`, otherwise 200 and echoes.
fn recording_parent() -> (SocketAddr, Receiver<String>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let addr = raw(move |mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let looping = head.starts_with("CONNECT loop.");
        let _ = tx.lock().unwrap().send(head);
        if looping {
            let _ = s.write_all(b"HTTP/1.1 508 Loop Detected\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

/// The Via values of a head, in order (one field line or several).
fn via_values(head: &str) -> Vec<String> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("via")))
        .flat_map(|(_, v)| v.split(',').map(|hop| hop.trim().to_owned()).collect::<Vec<_>>())
        .collect()
}

fn proxy_config(parent: Option<SocketAddr>, connect_port: u16) -> Hopgate {
    let parent = parent.map(|p| format!("parent = \"http://{p}\"\n")).unwrap_or_default();
    Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nvia_name = \"hop-a\"\n[listener.proxy]\n\
         allow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [443, {connect_port}]\n{parent}"
    ))
}

#[test]
fn connect_to_a_parent_carries_via_and_its_508_stays_a_508() {
    let (parent, heads) = recording_parent();
    let hg = proxy_config(Some(parent), 443);
    let wait = Duration::from_secs(10);

    // The client's Via is forwarded, this listener's hop appended.
    let mut c = connect_head(
        hg.addr,
        "CONNECT echo.invalid:443 HTTP/1.1\r\nHost: echo.invalid:443\r\nVia: 1.0 client-side\r\n\r\n",
        "HTTP/1.1 200 ",
    );
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    let head = heads.recv_timeout(wait).unwrap();
    assert!(head.starts_with("CONNECT echo.invalid:443 HTTP/1.1\r\n"), "{head}");
    assert_eq!(via_values(&head), ["1.0 client-side", "1.1 hop-a"], "{head}");

    // The parent found a loop: the client learns that it is one.
    let r = exchange(hg.addr, "CONNECT loop.invalid:443 HTTP/1.1\r\nHost: loop.invalid:443\r\n\r\n");
    assert_eq!(r.status, 508, "{}{}", r.head, r.text());
    assert!(r.text().contains(&format!("parent proxy {parent}")), "{}", r.text());
    let head = heads.recv_timeout(wait).unwrap();
    assert_eq!(via_values(&head), ["1.1 hop-a"], "{head}");

    // https:// through the parent: the CONNECT hopgate opens for its own TLS carries its Via.
    let r = exchange(hg.addr, "GET https://loop.invalid/ HTTP/1.1\r\nHost: loop.invalid\r\n\r\n");
    assert_eq!(r.status, 508, "{}{}", r.head, r.text());
    let head = heads.recv_timeout(wait).unwrap();
    assert!(head.starts_with("CONNECT loop.invalid:443 HTTP/1.1\r\n"), "{head}");
    assert_eq!(via_values(&head), ["1.1 hop-a"], "{head}");
}

#[test]
fn a_connect_whose_via_names_this_listener_is_508_before_dialing() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    let target = raw(move |_| {
        n.fetch_add(1, Ordering::SeqCst);
    });
    let hg = proxy_config(None, target.port());
    for via in ["1.1 hop-a", "1.0 other, 1.1 HOP-A", "2 hop-a"] {
        let r = exchange(hg.addr, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nVia: {via}\r\n\r\n"));
        assert_eq!(r.status, 508, "{via}: {}{}", r.head, r.text());
        assert!(r.text().contains("hop-a"), "{}", r.text());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was dialed");
    // Another proxy's name is no loop.
    let echo = echo_server();
    let hg = proxy_config(None, echo.port());
    connect_head(
        hg.addr,
        &format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nVia: 1.1 hop-b\r\n\r\n"),
        "HTTP/1.1 200 ",
    );
}

/// Sends `request`, reads the response head byte by byte (nothing after it), checks its start.
fn connect_head(proxy: SocketAddr, request: &str, want: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the head: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with(want), "{head}");
    s
}

#[test]
fn invalid_ports_in_absolute_targets_are_400() {
    let hg = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8"]);
    for port in ["99999", "65536", "80a", "-80", "0", "+80", "0x50"] {
        for scheme in ["http", "https", "ftp"] {
            let r = exchange(hg.addr, &format!("GET {scheme}://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(r.status, 400, "{scheme} :{port}: {}{}", r.head, r.text());
            assert!(r.text().starts_with("hopgate: 400 Bad Request\n"), "{}", r.text());
            assert!(r.text().contains(&format!("invalid port \"{port}\"")), "{scheme} :{port}: {}", r.text());
        }
        let r = exchange(hg.addr, &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(r.status, 400, "CONNECT :{port}: {}{}", r.head, r.text());
        assert!(r.text().contains(&format!("invalid port \"{port}\"")), "CONNECT :{port}: {}", r.text());
    }
    // The access log is written by a thread of its own: wait for the line.
    hg.stdout_line("\"GET http://127.0.0.1:99999/ HTTP/1.1\" 400 ");
    // IPv6 literals: the last group is no port.
    let r = exchange(hg.addr, "GET http://[::1]:99999/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid port \"99999\""), "{}", r.text());
}

#[test]
fn an_invalid_port_in_host_is_400_on_a_gateway() {
    let origin = support::origin::Origin::fixed("origin");
    let hg = Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", &origin.url("/")]);
    for port in ["99999", "80a", "-80"] {
        let r = exchange(hg.addr, &format!("GET /x HTTP/1.1\r\nHost: example.com:{port}\r\n\r\n"));
        assert_eq!(r.status, 400, ":{port}: {}{}", r.head, r.text());
        assert!(r.text().contains(&format!("invalid port \"{port}\"")), "{}", r.text());
        assert!(r.text().contains("in Host"), "{}", r.text());
    }
    assert_eq!(origin.count(), 0);
    for host in ["example.com", "example.com:8080", "[::1]:8080", "[::1]"] {
        let r = exchange(hg.addr, &format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(r.status, 200, "{host}: {}{}", r.head, r.text());
    }
}

#[test]
fn unspecified_addresses_are_this_host_even_when_allowed() {
    let (port, reached) = held_port();
    let p = port.to_string();
    let listen = format!("127.0.0.2:{port}");
    let hg = Hopgate::start(&[
        "proxy",
        "--listen",
        &listen,
        "--allow-target",
        "0.0.0.0/32",
        "--allow-target",
        "::/128",
        "--connect-port",
        &p,
    ]);
    for target in [format!("0.0.0.0:{port}"), format!("[::]:{port}"), format!("[::ffff:0.0.0.0]:{port}")] {
        let r = exchange(hg.addr, &format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"));
        assert_eq!(r.status, 508, "GET {target}: {}{}", r.head, r.text());
        assert!(r.text().contains("is this proxy itself"), "{}", r.text());
        let r = exchange(hg.addr, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"));
        assert_eq!(r.status, 508, "CONNECT {target}: {}{}", r.head, r.text());
        assert!(r.text().contains("is this proxy itself"), "{}", r.text());
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0, "nothing connected to this host's port {port}");
    // The allow list still opens these addresses on other ports: only the own port is a loop.
    let other = held_port().0;
    let r = exchange(hg.addr, &format!("GET http://0.0.0.0:{other}/ HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 502, "{}{}", r.head, r.text());
}

/// This host's own non-loopback addresses (`hostname -I`), one IPv4 and one IPv6 at most.
fn interface_addrs() -> Vec<IpAddr> {
    let out = std::process::Command::new("hostname").arg("-I").output().expect("hostname");
    let all: Vec<IpAddr> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|a| a.parse().ok()).collect();
    let v4 = all.iter().find(|a| a.is_ipv4()).copied();
    let v6 = all.iter().find(|a| a.is_ipv6()).copied();
    v4.into_iter().chain(v6).collect()
}

#[test]
fn a_wildcard_listener_is_reached_on_the_hosts_interface_addresses() {
    let addrs = interface_addrs();
    if addrs.is_empty() {
        eprintln!("this host has no non-loopback address: nothing to test");
        return;
    }
    for ip in addrs {
        let listen = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let hg = Hopgate::start(&["proxy", "--listen", listen]);
        let target = SocketAddr::new(ip, hg.addr.port());
        let r = exchange(
            SocketAddr::new(if ip.is_ipv4() { "127.0.0.1" } else { "::1" }.parse().unwrap(), hg.addr.port()),
            &format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        );
        assert_eq!(r.status, 508, "GET {target}: {}{}", r.head, r.text());
        assert!(r.text().contains("is this proxy itself"), "{target}: {}", r.text());
        // Refused before connecting: one request, not a second one that came round.
        assert_eq!(wait_log(&hg, "GET http://", 1).len(), 1, "{}", hg.stdout_text());
    }
}
