//! `hopgate tunnel --h2` (issue 17): every local connection a CONNECT stream on one TLS connection to an https://
//! proxy (hopgate), counted at the proxy by its admin metrics (client connections accepted); `--max-streams N`
//! opens another connection for tunnel N+1; a proxy that restarted is reconnected to.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::origin::echo_server;
use support::tls::{KeyType, Pair, Pki};
use support::{Hopgate, curl_full, free_port, wait_until};

/// An https:// hopgate proxy on `port` (0: any) that may reach loopback (CONNECT to `to`), with an admin listener.
fn proxy(pair: &Pair, port: u16, to: SocketAddr) -> Hopgate {
    Hopgate::start_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"https://127.0.0.1:{port}\"\n\
         [[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n[listener.proxy]\nallow_targets = [\"127.0.0.1\"]\n\
         connect_ports = [{}]\n",
        pair.cert(),
        pair.key(),
        to.port()
    ))
}

/// Client connections the proxy's listener accepted (hopgate_connections_total).
fn accepted(h: &Hopgate) -> f64 {
    let line = h.wait_stderr_line(&["admin on http://"]);
    let admin = line[line.find("http://").unwrap()..].trim().to_string();
    let c = curl_full(&[&format!("{admin}/metrics")]);
    let m: HashMap<String, f64> = c
        .text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap_or(-1.0))))
        .collect();
    m.get(&format!("hopgate_connections_total{{listener=\"{}\"}}", h.listening[0])).copied().unwrap_or(0.0)
}

/// `hopgate tunnel --h2 --proxy https://127.0.0.1:PORT --ca CA --to TO --listen 127.0.0.1:0 EXTRA...`
fn tunnel(pki: &Pki, proxy_port: u16, to: SocketAddr, extra: &[&str]) -> Hopgate {
    let (proxy, to) = (format!("https://127.0.0.1:{proxy_port}"), to.to_string());
    let mut args =
        vec!["tunnel", "--h2", "--proxy", &proxy, "--ca", pki.ca.cert(), "--to", &to, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Hopgate::start(&args)
}

/// A local connection through the tunnel that has echoed `msg` once (left open).
fn echoed(tunnel: &Hopgate, msg: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(tunnel.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap_or_else(|e| panic!("{e}; tunnel stderr: {}", tunnel.stderr_text()));
    assert_eq!(got, msg);
    s
}

/// 40 local connections at once, each with 256 KiB each way: all on one TLS connection to the proxy, every
/// tunnel a CONNECT stream of it (HTTP/2.0 in the proxy's access log).
#[test]
fn many_local_connections_share_one_tls_connection() {
    let echo = echo_server();
    let pki = Pki::new();
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["proxy.test"]);
    let hg = proxy(&pair, 0, echo);
    let t = tunnel(&pki, hg.addr.port(), echo, &[]);
    let clients: Vec<_> = (0..40u8)
        .map(|i| {
            let addr = t.addr;
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..256 * 1024).map(|n: u32| (n as u8).wrapping_mul(i + 1)).collect();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut w = s.try_clone().unwrap();
                let sent = data.clone();
                let writer = std::thread::spawn(move || w.write_all(&sent));
                let mut got = vec![0u8; data.len()];
                s.read_exact(&mut got).unwrap();
                writer.join().unwrap().unwrap();
                got == data
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap(), "an echo differed; tunnel stderr: {}", t.stderr_text());
    }
    assert_eq!(accepted(&hg), 1.0, "one TLS connection for 40 tunnels");
    assert!(wait_until(Duration::from_secs(10), || hg.stdout_text().matches("HTTP/2.0").count() >= 40));
    assert_eq!(
        hg.stdout_text().lines().filter(|l| l.contains("CONNECT 127.0.0.1:") && l.contains("HTTP/2.0")).count(),
        40
    );
}

/// `--max-streams 2`: a third tunnel open at the same time goes on a second connection; once the first two end,
/// the next tunnel fits on a connection there is already.
#[test]
fn max_streams_opens_a_second_connection() {
    let echo = echo_server();
    let pki = Pki::new();
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["proxy.test"]);
    let hg = proxy(&pair, 0, echo);
    let t = tunnel(&pki, hg.addr.port(), echo, &["--max-streams", "2"]);
    let a = echoed(&t, b"a");
    let b = echoed(&t, b"b");
    assert_eq!(accepted(&hg), 1.0);
    let c = echoed(&t, b"c");
    assert_eq!(accepted(&hg), 2.0, "the third tunnel needs a second connection");
    drop((a, b));
    // The first connection's streams end when the proxy has seen both tunnels close.
    assert!(wait_until(Duration::from_secs(10), || hg
        .stdout_text()
        .lines()
        .filter(|l| l.contains("CONNECT "))
        .count()
        >= 2));
    let d = echoed(&t, b"d");
    assert_eq!(accepted(&hg), 2.0, "room again on a connection there is");
    drop((c, d));
}

/// The proxy stops and starts again on the same port: the next local connection gets a new HTTP/2 connection.
#[test]
fn reconnects_after_the_proxy_restarts() {
    let echo = echo_server();
    let pki = Pki::new();
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["proxy.test"]);
    let port = free_port();
    let hg = proxy(&pair, port, echo);
    let t = tunnel(&pki, port, echo, &[]);
    drop(echoed(&t, b"before"));
    drop(hg);
    let hg = proxy(&pair, port, echo);
    let s = echoed(&t, b"after");
    assert_eq!(accepted(&hg), 1.0);
    drop(s);
}

/// A reset reaches the other end as a reset, both ways: a target that resets is a CONNECT_ERROR on the stream
/// (hopgate, the proxy), and a reset of the local connection (the tunnel client); a local connection that resets
/// resets its stream, and the proxy resets the target.
#[test]
fn a_reset_reaches_the_other_end_both_ways() {
    let ends: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let e = ends.clone();
    let target = support::origin::raw(move |mut s| {
        let mut buf = [0u8; 64];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break "eof".to_string(),
                Ok(n) if buf[..n].starts_with(b"reset") => {
                    // Asked to reset: linger 0 sends RST on close.
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    break "reset by target".to_string();
                }
                Ok(n) => {
                    let _ = s.write_all(&buf[..n]);
                }
                Err(e) => break format!("{:?}", e.kind()),
            }
        };
        e.lock().unwrap().push(end);
    });
    let pki = Pki::new();
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["proxy.test"]);
    let hg = proxy(&pair, 0, target);
    let t = tunnel(&pki, hg.addr.port(), target, &[]);
    // The target resets: the local connection is reset.
    let mut s = echoed(&t, b"hello");
    s.write_all(b"reset").unwrap();
    let mut buf = [0u8; 16];
    let got = s.read(&mut buf);
    assert_eq!(
        got.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "tunnel stderr: {}",
        t.stderr_text()
    );
    // The local connection resets: the target is reset.
    let s = echoed(&t, b"hello");
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    assert!(wait_until(Duration::from_secs(10), || ends.lock().unwrap().len() == 2), "{:?}", ends.lock().unwrap());
    assert_eq!(*ends.lock().unwrap(), ["reset by target", "ConnectionReset"]);
}

/// Without `--h2`, or with an http:// proxy, nothing changes; `--h2` with an http:// proxy is refused, naming why.
#[test]
fn h2_needs_an_https_proxy() {
    let out = std::process::Command::new(support::bin())
        .args(["tunnel", "--h2", "--proxy", "http://127.0.0.1:1", "--to", "h:22", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--h2 needs an https:// proxy"), "{err}");
    let out = std::process::Command::new(support::bin())
        .args([
            "tunnel",
            "--h2",
            "--max-streams",
            "0",
            "--proxy",
            "https://127.0.0.1:1",
            "--to",
            "h:22",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
