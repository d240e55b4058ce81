//! Operations II (docs/operations.md): SIGHUP reloads the configuration and every file it names without refusing
//! or resetting a connection, under wrk's keep-alive load; tunnels and kept-alive connections live through it; a
//! broken file changes nothing; a renewed certificate is served; and a new binary takes the listening sockets over
//! from a running one (`--upgrade-socket`) while wrk runs.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::origin::{Origin, echo_server};
use support::tls::{KeyType, Pki};
use support::{Hopgate, curl_full, require};

fn write(path: &Path, text: &str) {
    // Written beside and renamed: a reload never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn gateway_config(to: &str) -> String {
    format!("access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"{to}\"\n")
}

/// Starts `hopgate run FILE` on a config written to `dir`.
fn run(dir: &Path, toml: &str, extra: &[&str]) -> Hopgate {
    let file = dir.join("hopgate.toml");
    write(&file, toml);
    let mut args = vec!["run", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Hopgate::start(&args)
}

/// Sends SIGHUP and waits for the `reloaded` (or failure) line number `n`.
fn reload(h: &Hopgate, n: usize) -> String {
    h.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = h.stderr_text();
        let done: Vec<&str> =
            text.lines().filter(|l| l.contains("hopgate: reloaded ") || l.contains("failed; still serving")).collect();
        if done.len() >= n {
            return done[n - 1].to_string();
        }
        assert!(Instant::now() < deadline, "reload {n} not done after 10 s:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// wrk for `secs` against `url` (keep-alive, 8 connections), started now.
fn wrk(url: &str, secs: u32) -> Child {
    let wrk = require("wrk", "wrk");
    Command::new(wrk)
        .args(["-t1", "-c8", &format!("-d{secs}s"), "--timeout", "5s", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// wrk's totals: (requests, socket errors, non-2xx).
fn wrk_result(child: Child) -> (u64, String, String) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk: {text}{}", String::from_utf8_lossy(&out.stderr));
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("no total in {text}"));
    let socket = text.lines().find(|l| l.contains("Socket errors")).unwrap_or("").to_string();
    let non2xx = text.lines().find(|l| l.contains("Non-2xx")).unwrap_or("").to_string();
    (requests, socket, non2xx)
}

#[test]
fn twenty_reloads_under_keep_alive_load_refuse_and_reset_nothing() {
    let (one, two) = (Origin::fixed("one"), Origin::fixed("two"));
    let dir = tempfile::tempdir().unwrap();
    let h = run(dir.path(), &gateway_config(&one.url("")), &[]);
    let file = dir.path().join("hopgate.toml");
    let load = wrk(&format!("{}/", h.url()), 4);
    // Wait until wrk is sending before the first reload.
    let deadline = Instant::now() + Duration::from_secs(5);
    while one.count() == 0 {
        assert!(Instant::now() < deadline, "wrk sent nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    for n in 1..=20 {
        let to = if n % 2 == 1 { two.url("") } else { one.url("") };
        write(&file, &gateway_config(&to));
        let line = reload(&h, n);
        assert_eq!(line, format!("hopgate: reloaded {}", file.display()));
    }
    let (requests, socket, non2xx) = wrk_result(load);
    assert!(requests > 100, "{requests} requests");
    assert_eq!((socket.as_str(), non2xx.as_str()), ("", ""), "wrk saw errors over {requests} requests");
    // Both configurations served; the last one (the 20th reload: `one`) serves now, on a new connection too.
    assert!(two.count() > 0, "no request reached the second configuration's origin");
    assert_eq!(curl_full(&[&h.url()]).text(), "one");
}

#[test]
fn a_kept_alive_connection_uses_the_new_configuration_for_its_next_request() {
    let (one, two) = (Origin::fixed("one"), Origin::fixed("two"));
    let dir = tempfile::tempdir().unwrap();
    let h = run(dir.path(), &gateway_config(&one.url("")), &[]);
    let mut s = TcpStream::connect(h.addr).unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let read_body = |s: &mut TcpStream| {
        s.write_all(get).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.ends_with(b"one") && !got.ends_with(b"two") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&got[got.len() - 3..]).into_owned()
    };
    assert_eq!(read_body(&mut s), "one");
    write(&dir.path().join("hopgate.toml"), &gateway_config(&two.url("")));
    reload(&h, 1);
    assert_eq!(read_body(&mut s), "two", "the same connection, after the reload");
}

#[test]
fn a_tunnel_opened_before_a_reload_passes_bytes_both_ways_after_it() {
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let proxy = |via: &str| {
        format!(
            "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\nvia_name = \"{via}\"\n[listener.proxy]\n\
             allow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [{}]\n",
            echo.port()
        )
    };
    let h = run(dir.path(), &proxy("before"), &[]);
    let mut s = TcpStream::connect(h.addr).unwrap();
    write!(s, "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    s.write_all(b"before").unwrap();
    let mut back = [0u8; 6];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"before");
    write(&dir.path().join("hopgate.toml"), &proxy("after"));
    reload(&h, 1);
    s.write_all(b"after!").unwrap();
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"after!");
}

#[test]
fn a_file_that_does_not_load_changes_nothing_and_is_named_with_its_line() {
    let one = Origin::fixed("one");
    let dir = tempfile::tempdir().unwrap();
    let h = run(dir.path(), &gateway_config(&one.url("")), &[]);
    let file = dir.path().join("hopgate.toml");
    let name = file.display().to_string();
    // A syntax error on line 4.
    write(&file, "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]\n");
    reload(&h, 1);
    h.wait_stderr_line(&[&format!("{name}:4: ")]);
    assert_eq!(curl_full(&[&h.url()]).text(), "one");
    // A users file that does not exist, on line 5.
    write(
        &file,
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nusers = \"missing.htpasswd\"\n",
    );
    reload(&h, 2);
    h.wait_stderr_line(&[&format!("{name}:5: ")]);
    // A port in use, on the line of its `listen`.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    write(
        &file,
        &format!(
            "{}[[listener]]\nlisten = \"127.0.0.1:{port}\"\n[[listener.route]]\nto = \"{}\"\n",
            gateway_config(&one.url("")),
            one.url("")
        ),
    );
    reload(&h, 3);
    let line = h.wait_stderr_line(&[&format!("{name}:7: cannot listen on 127.0.0.1:{port}")]);
    assert!(line.contains("in use"), "{line}");
    assert_eq!(curl_full(&[&h.url()]).text(), "one", "still the running configuration");
    assert_eq!(h.stderr_text().matches("hopgate: reloaded").count(), 0);
}

/// The subject of the certificate a new handshake gets.
fn served_subject(addr: SocketAddr) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pem = String::new();
    s_client.stdout.take().unwrap().read_to_string(&mut pem).unwrap();
    let _ = s_client.wait();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).trim().to_string()
}

#[test]
fn a_renewed_certificate_is_served_to_new_handshakes_after_sighup() {
    let pki = Pki::new();
    let old = pki.leaf("old", KeyType::EcdsaP256, &["localhost", "old.test"]);
    let renewed = pki.leaf("renewed", KeyType::EcdsaP256, &["localhost", "renewed.test"]);
    let origin = Origin::fixed("tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(old.cert(), &cert).unwrap();
    std::fs::copy(old.key(), &key).unwrap();
    let h = Hopgate::start(&[
        "gateway",
        "--listen",
        "https://127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--to",
        &origin.url(""),
        "--access-log",
        "off",
    ]);
    assert_eq!(served_subject(h.addr), "subject=CN = localhost");
    let before = Command::new("openssl").args(["x509", "-noout", "-serial", "-in", old.cert()]).output().unwrap();
    let after = Command::new("openssl").args(["x509", "-noout", "-serial", "-in", renewed.cert()]).output().unwrap();
    assert_ne!(before.stdout, after.stdout);
    // certbot's deploy hook: new files in place, then SIGHUP.
    std::fs::copy(renewed.cert(), &cert).unwrap();
    std::fs::copy(renewed.key(), &key).unwrap();
    reload(&h, 1);
    let serial = |addr: SocketAddr| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
            ))
            .output()
            .unwrap();
        out.stdout
    };
    assert_eq!(serial(h.addr), after.stdout, "the renewed certificate is served");
    let resolve = format!("localhost:{}:127.0.0.1", h.addr.port());
    let c = curl_full(&[
        "--cacert",
        pki.ca.cert(),
        "--resolve",
        &resolve,
        &format!("https://localhost:{}/", h.addr.port()),
    ]);
    assert_eq!((c.code, c.text().as_str()), (200, "tls"), "{}", c.stderr);
}

#[test]
fn a_new_binary_takes_the_sockets_over_under_load_without_an_error() {
    let one = Origin::fixed("one");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("upgrade.sock");
    let file = dir.path().join("hopgate.toml");
    let config = format!("{}[admin]\nlisten = \"127.0.0.1:0\"\n", gateway_config(&one.url("")));
    let mut old = run(dir.path(), &config, &["--upgrade-socket", socket.to_str().unwrap()]);
    let old_admin = old.wait_stderr_line(&["admin on http://"]);
    let load = wrk(&format!("{}/", old.url()), 4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while one.count() == 0 {
        assert!(Instant::now() < deadline, "wrk sent nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut new = Hopgate::start(&["run", file.to_str().unwrap(), "--upgrade-socket", socket.to_str().unwrap()]);
    assert_eq!(new.addr, old.addr, "the same socket, handed over");
    assert_eq!(new.wait_stderr_line(&["admin on http://"]), old_admin, "the admin socket too");
    new.wait_stderr_line(&["took the listening sockets over"]);
    let status = old.wait_exit(Duration::from_secs(15)).expect("the old process drains and exits");
    assert!(status.success(), "{status:?}");
    let (requests, socket_errors, non2xx) = wrk_result(load);
    assert!(requests > 100, "{requests} requests");
    assert_eq!((socket_errors.as_str(), non2xx.as_str()), ("", ""), "wrk saw errors over {requests} requests");
    assert_eq!(curl_full(&[&new.url()]).text(), "one");
    // And the new one offers the sockets in turn: a third process takes over from it.
    let third = Hopgate::start(&["run", file.to_str().unwrap(), "--upgrade-socket", socket.to_str().unwrap()]);
    assert_eq!(third.addr, new.addr);
    assert!(new.wait_exit(Duration::from_secs(15)).expect("the second drains").success());
    assert_eq!(curl_full(&[&third.url()]).text(), "one");
}

#[test]
fn drain_grace_keeps_accepting_while_readyz_says_503() {
    let one = Origin::fixed("one");
    let mut h = Hopgate::start(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &one.url(""),
        "--access-log",
        "off",
        "--admin",
        "127.0.0.1:0",
        "--drain-grace",
        "3",
    ]);
    let line = h.wait_stderr_line(&["admin on http://"]);
    let admin = line[line.find("http://").unwrap()..].trim().to_string();
    h.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while curl_full(&[&format!("{admin}/readyz")]).code != 503 {
        assert!(Instant::now() < deadline, "readyz still 200");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Not ready, yet a new connection is still accepted and served during the grace.
    let c = curl_full(&[&h.url()]);
    assert_eq!((c.code, c.text().as_str()), (200, "one"));
    let status = h.wait_exit(Duration::from_secs(15)).expect("exits after the grace and the drain");
    assert!(status.success());
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let one = Origin::fixed("one");
    let file = dir.path().join("hopgate.toml");
    write(&file, &gateway_config(&one.url("")));
    let h = Hopgate::start_env(&["run", file.to_str().unwrap()], &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    reload(&h, 1);
    let reloading = next();
    let (first, usec) = reloading.split_once('\n').unwrap_or((&reloading, ""));
    assert_eq!(first, "RELOADING=1");
    assert!(usec.strip_prefix("MONOTONIC_USEC=").is_some_and(|v| v.parse::<u64>().is_ok()), "{reloading:?}");
    assert_eq!(next(), "READY=1");
    h.signal("TERM");
    assert_eq!(next(), "STOPPING=1");
}
