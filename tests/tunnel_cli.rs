//! `hopgate tunnel` as a command, --listen and --stdio, through real proxies the tests start on loopback: hopgate,
//! Squid (Debian package squid, also as an https:// proxy) and tinyproxy (package tinyproxy), with and without
//! Basic auth, plus a proxy written here that sends bytes right behind its 200. Refusals are one line on stderr
//! naming the proxy and its answer. htpasswd files come from Apache's htpasswd (package apache2-utils).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::origin::echo_server;
use support::peers::{chown_nobody, htpasswd, squid, tinyproxy};
use support::tls::{KeyType, Pki};
use support::{ClosedPort, Hopgate, bin, pseudo_random, read_head, wait_child};

/// `hopgate tunnel --proxy PROXY --to TO --listen 127.0.0.1:0 EXTRA...`
fn listener(proxy: &str, to: SocketAddr, extra: &[&str]) -> Hopgate {
    let to = to.to_string();
    let mut args = vec!["tunnel", "--proxy", proxy, "--to", &to, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let tunnel = Hopgate::start(&args);
    assert!(tunnel.listening[0].starts_with("tcp://127.0.0.1:"), "{:?}", tunnel.listening);
    tunnel
}

/// `connections` clients at once through the tunnel listener, each sending `bytes` of its own to the echo target
/// and reading them back. (Squid and tinyproxy end a whole tunnel when one side half-closes: nobody does here.)
fn echo_through(tunnel: &Hopgate, connections: usize, bytes: usize) {
    let clients: Vec<_> = (0..connections)
        .map(|i| {
            let local = tunnel.addr;
            std::thread::spawn(move || {
                let data = pseudo_random(bytes, i as u64 + 1);
                let mut s = TcpStream::connect(local).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut w = s.try_clone().unwrap();
                let sent = data.clone();
                let writer = std::thread::spawn(move || w.write_all(&sent).map(|_| w));
                let mut got = vec![0u8; bytes];
                s.read_exact(&mut got).unwrap_or_else(|e| panic!("connection {i}: {e}"));
                assert!(got == data, "connection {i}: the echo differs");
                drop(writer.join().unwrap().unwrap());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap_or_else(|_| panic!("a client failed; tunnel stderr: {}", tunnel.stderr_text()));
    }
}

/// Runs `hopgate tunnel --stdio`, feeds `input`, returns (exit code, stdout, stderr).
/// With `hold`, stdin stays open until as many bytes as were sent came back (for proxies that end a tunnel on
/// half-close); without it, stdin closes right after the input (EOF half-closes the tunnel).
fn stdio(proxy: &str, to: &str, extra: &[&str], input: &[u8], hold: bool) -> (Option<i32>, Vec<u8>, String) {
    let mut child = Command::new(bin())
        .args(["tunnel", "--proxy", proxy, "--to", to, "--stdio"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (echoed_tx, echoed_rx) = mpsc::channel::<()>();
    let input = input.to_vec();
    let want = input.len();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        if hold {
            let _ = echoed_rx.recv_timeout(Duration::from_secs(15));
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() >= want {
                let _ = echoed_tx.send(());
            }
        }
        out
    });
    let Some(status) = wait_child(&mut child, Duration::from_secs(20)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("hopgate tunnel --stdio did not exit");
    };
    let out = reader.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

/// A refusal through `--stdio`: the exit is 1 and stderr one line; returns that line.
fn refusal(proxy: &str, to: &str, extra: &[&str]) -> String {
    let (code, out, err) = stdio(proxy, to, extra, b"x", false);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    err.trim_end().to_string()
}

#[test]
fn listen_mode_through_hopgate_squid_and_tinyproxy() {
    let target = echo_server();
    let port = target.port().to_string();
    let hg = Hopgate::proxy(&["--connect-port", &port]);
    echo_through(&listener(&hg.url(), target, &[]), 8, 256 * 1024);
    let sq = squid(&[target.port()], None, None);
    echo_through(&listener(&format!("http://{}", sq.addr), target, &[]), 8, 256 * 1024);
    let tp = tinyproxy(&[target.port()], None);
    echo_through(&listener(&format!("http://{}", tp.addr), target, &[]), 8, 256 * 1024);
    let tp = tinyproxy(&[target.port()], Some(("tim", "t-secret")));
    echo_through(&listener(&format!("http://{}", tp.addr), target, &["--proxy-user", "tim:t-secret"]), 2, 64 * 1024);
}

#[test]
fn stdio_mode_is_an_ssh_proxy_command() {
    let target = echo_server();
    let port = target.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    htpasswd(&users, &["-B", "-C", "5"], "ssh", "secret");
    let hg = Hopgate::proxy(&["--connect-port", &port, "--users", users.to_str().unwrap()]);
    let payload = pseudo_random(300_000, 3);
    let (code, out, err) = stdio(&hg.url(), &target.to_string(), &["--proxy-user", "ssh:secret"], &payload, false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out == payload, "stdin EOF half-closes; everything echoed comes back before exit ({} bytes)", out.len());

    let line = refusal(&hg.url(), &target.to_string(), &["--proxy-user", "ssh:wrong"]);
    assert_eq!(
        line,
        format!("hopgate tunnel: proxy {} refused CONNECT {target}: 407 Proxy Authentication Required", hg.addr)
    );
    let line = refusal(&hg.url(), "127.0.0.1:25", &[]);
    assert!(line.contains("407") || line.contains("403"), "{line}");
}

#[test]
fn squid_with_basic_auth_and_its_refusals() {
    let target = echo_server();
    let closed = ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    htpasswd(&users, &["-B", "-C", "5"], "bee", "b-secret");
    htpasswd(&users, &["-m"], "sq", "uid-pass");
    chown_nobody(dir.path());
    let sq = squid(&[target.port(), closed.port()], Some(&users), None);
    let proxy = format!("http://{}", sq.addr);
    for creds in ["bee:b-secret", "sq:uid-pass"] {
        // Squid ends a tunnel on half-close: stdin stays open until the echo is back.
        let (code, out, err) = stdio(&proxy, &target.to_string(), &["--proxy-user", creds], b"hello squid", true);
        assert_eq!((code, out.as_slice()), (Some(0), &b"hello squid"[..]), "{creds}: {err}");
        echo_through(&listener(&proxy, target, &["--proxy-user", creds]), 2, 64 * 1024);
    }
    let line = refusal(&proxy, &target.to_string(), &["--proxy-user", "bee:wrong"]);
    assert_eq!(
        line,
        format!("hopgate tunnel: proxy {} refused CONNECT {target}: 407 Proxy Authentication Required", sq.addr)
    );
    let line = refusal(&proxy, &target.to_string(), &[]);
    assert!(line.ends_with(": 407 Proxy Authentication Required"), "{line}");
    // A target that refuses: Squid's 503, named.
    let line = refusal(&proxy, &closed.addr.to_string(), &["--proxy-user", "bee:b-secret"]);
    assert!(
        line.starts_with(&format!("hopgate tunnel: proxy {} refused CONNECT {}: 503 ", sq.addr, closed.addr)),
        "{line}"
    );
    // A port outside Squid's CONNECT ACL: its 403.
    let line = refusal(&proxy, "127.0.0.1:25", &["--proxy-user", "bee:b-secret"]);
    assert!(line.contains(": 403 "), "{line}");
}

#[test]
fn tinyproxy_refusals() {
    let target = echo_server();
    let closed = ClosedPort::new();
    let open = tinyproxy(&[target.port(), closed.port()], None);
    let line = refusal(&format!("http://{}", open.addr), &closed.addr.to_string(), &[]);
    let prefix = format!("hopgate tunnel: proxy {} refused CONNECT {}: 5", open.addr, closed.addr);
    assert!(line.starts_with(&prefix), "{line}");
    let authed = tinyproxy(&[target.port()], Some(("tim", "t-secret")));
    // tinyproxy 1.11 answers a CONNECT with wrong credentials 401 (not 407); reported as sent.
    let line = refusal(&format!("http://{}", authed.addr), &target.to_string(), &["--proxy-user", "tim:wrong"]);
    let prefix = format!("hopgate tunnel: proxy {} refused CONNECT {target}: ", authed.addr);
    assert!(line.starts_with(&format!("{prefix}401 ")) || line.starts_with(&format!("{prefix}407 ")), "{line}");
}

/// A proxy written here for one client: records the CONNECT head, answers with `reply` in the same write as
/// `extra`, then relays to `target` (half-close kept).
fn scripted_proxy(
    reply: &'static str,
    extra: &'static [u8],
    target: SocketAddr,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut client, _)) = listener.accept() else { return };
        let _ = client.set_read_timeout(Some(Duration::from_secs(20)));
        // Byte by byte, so nothing after the head is swallowed here.
        let head = read_head(&mut client);
        let _ = tx.send(head);
        let mut first = reply.as_bytes().to_vec();
        first.extend_from_slice(extra);
        let Ok(upstream) = TcpStream::connect(target) else { return };
        if client.write_all(&first).is_err() {
            return;
        }
        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let back = std::thread::spawn(move || copy_then_half_close(u2, c2));
        copy_then_half_close(client, upstream);
        let _ = back.join();
    });
    (addr, rx)
}

fn copy_then_half_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn bytes_right_after_the_200_are_kept_and_the_connect_head_is_exact() {
    let echo = echo_server();
    let (proxy, head) = scripted_proxy("HTTP/1.1 200 OK\r\n\r\n", b"EXTRA-BYTES", echo);
    let (code, out, err) =
        stdio(&format!("http://{proxy}"), &echo.to_string(), &["--proxy-user", "ann:pa:ss"], b"ping", false);
    assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (Some(0), "EXTRA-BYTESping"), "{err}");
    let head = head.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(head.starts_with(&format!("CONNECT {echo} HTTP/1.1\r\n")), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains(&format!("\r\nhost: {echo}\r\n")), "{head}");
    // base64("ann:pa:ss"): the password keeps its colon
    assert!(lower.contains("\r\nproxy-authorization: basic yw5uonbhonnz\r\n"), "{head}");
    // A client, not a proxy: no Via of its own.
    assert!(!lower.contains("\r\nvia:"), "{head}");
}

#[test]
fn any_2xx_opens_the_tunnel() {
    let echo = echo_server();
    let (proxy, _head) = scripted_proxy("HTTP/1.0 299 Fine By Me\r\nProxy-Agent: test\r\n\r\n", b"", echo);
    let (code, out, err) = stdio(&format!("http://{proxy}"), &echo.to_string(), &[], b"hi", false);
    assert_eq!((code, out.as_slice()), (Some(0), &b"hi"[..]), "{err}");
}

#[test]
fn https_proxy_squid_with_an_extra_ca() {
    let target = echo_server();
    let pki = Pki::new();
    let pair = pki.leaf("squid", KeyType::Rsa, &["localhost"]);
    chown_nobody(pki.dir.path());
    let sq = squid(&[target.port()], None, Some((&pair.cert, &pair.key)));
    let proxy = format!("https://{}", sq.addr);
    echo_through(&listener(&proxy, target, &["--ca", pki.ca.cert()]), 2, 256 * 1024);
    // Without the CA the proxy's certificate is not trusted: a one-line TLS error.
    let line = refusal(&proxy, &target.to_string(), &[]);
    assert!(line.starts_with(&format!("hopgate tunnel: TLS with proxy {proxy} failed: ")), "{line}");
}

#[test]
fn bad_arguments_and_an_unreachable_proxy_are_clear() {
    let out = Command::new(bin()).args(["tunnel", "--proxy", "http://127.0.0.1:1", "--to", "h:22"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--listen or --stdio is required");
    for (proxy, to, what) in [("ftp://x:1", "h:22", "proxy"), ("http://h:1", "h", "h")] {
        let out = Command::new(bin())
            .args(["tunnel", "--proxy", proxy, "--to", to, "--stdio"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // non-zero (docs/tunnels.md); --stdio always leaves with 1 (src/main.rs), where --listen says 2
        assert!(!out.status.success(), "{proxy} {to}: {err}");
        assert!(err.starts_with("hopgate tunnel: ") && err.contains(what) && err.lines().count() == 1, "{err}");
    }
    let closed = ClosedPort::new();
    let line = refusal(&format!("http://{}", closed.addr), "127.0.0.1:22", &[]);
    assert!(line.starts_with(&format!("hopgate tunnel: cannot connect to proxy {}: ", closed.addr)), "{line}");
}
