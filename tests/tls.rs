//! The security gateways: HTTPS/HTTP (TLS termination on `https://` listeners) and HTTP/HTTPS (TLS origination),
//! with curl, `openssl s_client` and TLS origins using certificates each test makes with `openssl`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::origin::Origin;
use support::tls::{KeyType, Pair, Pki, TlsOrigin};
use support::{Hopgate, Raw, bin};

/// curl with `args`; returns (status, HTTP version, body, stderr).
fn curl(args: &[&str]) -> (u16, String, String, String) {
    let r = support::curl_full(args);
    (r.code, r.version.clone(), r.text(), r.stderr)
}

/// `openssl s_client -connect ADDR ARGS` with stdin closed: (handshake succeeded, everything it printed).
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("20")
        .args(["openssl", "s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (Debian package openssl)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("Cipher is (NONE)"), text)
}

/// The subject CN `s_client` printed, spaces removed: `CN=a.test`.
fn subject(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.replace(' ', ""))
        .unwrap_or_else(|| panic!("no subject in s_client output:\n{text}"))
}

/// `hopgate COMMAND --listen https://127.0.0.1:0 --tls-cert --tls-key [extra...]`.
fn https_listener(command: &str, pair: &Pair, extra: &[&str]) -> Hopgate {
    let mut args = vec![command, "--listen", "https://127.0.0.1:0", "--tls-cert", pair.cert(), "--tls-key", pair.key()];
    args.extend_from_slice(extra);
    Hopgate::start(&args)
}

/// `hopgate gateway --listen https://127.0.0.1:0 --tls-cert --tls-key --to TO [extra...]`.
fn https_gateway(pair: &Pair, to: &str, extra: &[&str]) -> Hopgate {
    https_listener("gateway", pair, &[&["--to", to], extra].concat())
}

/// `hopgate proxy --listen https://127.0.0.1:0 --tls-cert --tls-key --allow-target 127.0.0.0/8 [extra...]`.
fn https_proxy(pair: &Pair, extra: &[&str]) -> Hopgate {
    https_listener("proxy", pair, &[&["--allow-target", "127.0.0.0/8"], extra].concat())
}

/// curl to `url` resolving `name:PORT` to 127.0.0.1 and trusting the test CA, with `extra` arguments first.
fn curl_to(name: &str, hg: &Hopgate, pki: &Pki, extra: &[&str], url: &str) -> (u16, String, String, String) {
    let resolve = format!("{name}:{}:127.0.0.1", hg.addr.port());
    let mut args = vec!["--resolve", resolve.as_str(), "--cacert", pki.ca.cert()];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

#[test]
fn https_gateway_serves_http1_and_http2() {
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let origin = Origin::fixed("plain origin\n");
    let hg = https_gateway(&pair, &format!("http://{}", origin.addr), &[]);
    assert_eq!(hg.listening, vec![format!("https://{}", hg.addr)], "the listening line names https://");
    let url = format!("https://localhost:{}/page?q=1", hg.addr.port());
    let (code, version, body, err) = curl_to("localhost", &hg, &pki, &["--http1.1"], &url);
    assert_eq!((code, version.as_str(), body.as_str()), (200, "1.1", "plain origin\n"), "{err}");
    let seen = origin.last();
    assert_eq!(seen.target, "/page?q=1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("host"), Some(format!("localhost:{}", hg.addr.port()).as_str()));
    assert!(seen.header("via").is_some_and(|v| v.starts_with("1.1 ")), "{}", seen.head);

    let (code, version, body, err) = curl_to("localhost", &hg, &pki, &["--http2"], &url);
    assert_eq!((code, version.as_str(), body.as_str()), (200, "2", "plain origin\n"), "{err}");
    let seen = origin.last();
    assert_eq!(seen.version, "HTTP/1.1", "the origin is spoken to in HTTP/1.1");
    assert_eq!(seen.header("host"), Some(format!("localhost:{}", hg.addr.port()).as_str()), ":authority is the Host");
    assert!(seen.header("via").is_some_and(|v| v.starts_with("2 ")), "{}", seen.head);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // Without the test CA, curl refuses the certificate: the listener really serves the test chain.
    let (code, _, _, err) = curl(&["--resolve", &format!("localhost:{}:127.0.0.1", hg.addr.port()), &url]);
    assert_eq!(code, 0, "curl must not trust a certificate of the test CA by default: {err}");
}

#[test]
fn rsa_ecdsa_ed25519_keys_and_full_chains() {
    let pki = Pki::new();
    let origin = Origin::fixed("ok");
    let to = format!("http://{}", origin.addr);
    for (name, kind) in [("rsa", KeyType::Rsa), ("ecdsa", KeyType::EcdsaP256), ("ed25519", KeyType::Ed25519)] {
        let pair = pki.leaf(name, kind, &["localhost"]);
        let hg = https_gateway(&pair, &to, &[]);
        let url = format!("https://localhost:{}/", hg.addr.port());
        let (code, _, body, err) = curl_to("localhost", &hg, &pki, &[], &url);
        assert_eq!((code, body.as_str()), (200, "ok"), "{name}: {err}");
        let (ok, text) = s_client(hg.addr.port(), &["-CAfile", pki.ca.cert(), "-verify_return_error"]);
        assert!(ok, "{name}: {text}");
        let want = match kind {
            KeyType::Rsa => "RSA",
            KeyType::EcdsaP256 => "ECDSA",
            KeyType::Ed25519 => "ED25519",
        };
        assert!(
            text.lines().any(|l| l.contains("Peer signature type") && l.to_ascii_uppercase().contains(want)),
            "{name}: {text}"
        );
    }

    // A leaf issued by an intermediate: the listener sends the whole chain, so a client that trusts only the
    // root verifies it; the same leaf without its intermediate fails.
    let chained = pki.chained("chained", &["localhost"]);
    let hg = https_gateway(&chained, &to, &[]);
    let url = format!("https://localhost:{}/", hg.addr.port());
    let (code, _, body, err) = curl_to("localhost", &hg, &pki, &[], &url);
    assert_eq!((code, body.as_str()), (200, "ok"), "{err}");
    let leaf_only = Pair { cert: pki.path("chained-leaf-only.pem"), key: chained.key.clone() };
    let hg = https_gateway(&leaf_only, &to, &[]);
    let url = format!("https://localhost:{}/", hg.addr.port());
    let (code, _, _, err) = curl_to("localhost", &hg, &pki, &[], &url);
    assert_eq!(code, 0, "without the intermediate the chain can't be verified: {err}");
}

#[test]
fn tls_1_2_and_1_3_only() {
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let origin = Origin::fixed("ok");
    let hg = https_gateway(&pair, &format!("http://{}", origin.addr), &[]);
    let port = hg.addr.port();
    let (ok, text) = s_client(port, &["-tls1_3", "-CAfile", pki.ca.cert()]);
    assert!(ok && text.contains("New, TLSv1.3"), "{text}");
    let (ok, text) = s_client(port, &["-tls1_2", "-CAfile", pki.ca.cert()]);
    assert!(ok && text.contains("New, TLSv1.2"), "{text}");
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(port, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok, "{old} must be refused:\n{text}");
        assert!(text.contains("alert"), "{old}: the server answers with an alert:\n{text}");
    }
    // ALPN: h2 first, http/1.1 second.
    let (ok, text) = s_client(port, &["-alpn", "h2,http/1.1"]);
    assert!(ok && text.contains("ALPN protocol: h2"), "{text}");
    let (ok, text) = s_client(port, &["-alpn", "http/1.1"]);
    assert!(ok && text.contains("ALPN protocol: http/1.1"), "{text}");
}

#[test]
fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let pki = Pki::new();
    let a = pki.leaf("a", KeyType::EcdsaP256, &["a.test"]);
    let b = pki.leaf("b", KeyType::Rsa, &["b.test", "*.b.test"]);
    let origin = Origin::fixed("sni");
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\n\
         [[listener.tls]]\ncert = {:?}\nkey = {:?}\n[[listener.tls]]\ncert = {:?}\nkey = {:?}\n\
         [[listener.route]]\nto = \"http://{}\"\n",
        a.cert(),
        a.key(),
        b.cert(),
        b.key(),
        origin.addr
    ));
    assert_eq!(hg.listening, vec![format!("https://{}", hg.addr)]);
    let port = hg.addr.port();
    for (sni, want) in
        [("a.test", "CN=a.test"), ("b.test", "CN=b.test"), ("www.b.test", "CN=b.test"), ("other.test", "CN=a.test")]
    {
        let (ok, text) = s_client(port, &["-servername", sni]);
        assert!(ok, "{sni}: {text}");
        assert_eq!(subject(&text), want, "SNI {sni}");
    }
    let (ok, text) = s_client(port, &["-noservername"]);
    assert!(ok, "{text}");
    assert_eq!(subject(&text), "CN=a.test", "no SNI: the first certificate");
    for name in ["a.test", "b.test"] {
        let url = format!("https://{name}:{port}/");
        let (code, _, body, err) = curl_to(name, &hg, &pki, &[], &url);
        assert_eq!((code, body.as_str()), (200, "sni"), "{name}: {err}");
    }
}

#[test]
fn https_proxy_relays_absolute_form_inside_tls() {
    let pki = Pki::new();
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["localhost"]);
    let origin = Origin::fixed("through the https proxy\n");
    let hg = https_proxy(&pair, &[]);
    assert_eq!(hg.listening, vec![format!("https://{}", hg.addr)]);
    let proxy = format!("https://localhost:{}", hg.addr.port());
    let (code, version, body, err) = curl(&[
        "--proxy",
        &proxy,
        "--proxy-cacert",
        pki.ca.cert(),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", hg.addr.port()),
        &origin.url("/via-https-proxy"),
    ]);
    assert_eq!((code, version.as_str(), body.as_str()), (200, "1.1", "through the https proxy\n"), "{err}");
    assert_eq!(origin.last().target, "/via-https-proxy");

    // Absolute-form https:// inside TLS: TLS both ways, verified against the system roots only here, so the
    // test CA's origin is refused; a proxy started with --ca reaches it.
    let tls_origin = TlsOrigin::start(&pki.leaf("inner", KeyType::EcdsaP256, &["localhost"]), "tls inside tls");
    let request = format!(
        "GET https://localhost:{p}/inner HTTP/1.1\r\nHost: localhost:{p}\r\nConnection: close\r\n\r\n",
        p = tls_origin.port()
    );
    let reply = inside_tls(hg.addr.port(), &pki, &request);
    assert!(reply.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{reply}");
    assert!(reply.contains("untrusted issuer"), "{reply}");
    let trusting = https_proxy(&pair, &["--ca", pki.ca.cert()]);
    let reply = inside_tls(trusting.addr.port(), &pki, &request);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\ntls inside tls"), "{reply}");
    assert_eq!(tls_origin.last().target(), "/inner");
}

/// Sends `request` over TLS (openssl s_client, verifying the test CA) and returns everything that came back.
fn inside_tls(port: u16, pki: &Pki, request: &str) -> String {
    let mut child = Command::new("timeout")
        .arg("20")
        .args(["openssl", "s_client", "-quiet", "-verify_return_error", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-CAfile", pki.ca.cert()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed (Debian package openssl)");
    // Keep stdin open until the reply is complete: s_client quits on stdin EOF.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A gateway `--to https://localhost:PORT` trusting the test CA.
fn gateway_to(origin: &TlsOrigin, pki: &Pki) -> Hopgate {
    Hopgate::gateway(&format!("https://localhost:{}/base", origin.port()), &["--ca", pki.ca.cert()])
}

#[test]
fn origination_verifies_and_explains_failures() {
    let pki = Pki::new();
    let good = TlsOrigin::start(&pki.leaf("good", KeyType::EcdsaP256, &["localhost"]), "secure origin");
    let hg = gateway_to(&good, &pki);
    let r = support::exchange(hg.addr, "GET /x?y=1 HTTP/1.1\r\nHost: public.example\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "secure origin"));
    let seen = good.last();
    assert_eq!(seen.sni.as_deref(), Some("localhost"), "SNI names the target host");
    assert_eq!(seen.target(), "/base/x?y=1");
    assert_eq!(seen.header("host").as_deref(), Some("public.example"), "the client's Host is passed on");
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));

    let cases = [
        (
            TlsOrigin::start(&pki.self_signed("untrusted", "self-signed leaf", &["localhost"], true), "x"),
            "untrusted issuer",
        ),
        (
            TlsOrigin::start(&pki.self_signed("untrusted-ca", "self-signed CA", &["localhost"], false), "x"),
            "untrusted issuer",
        ),
        (TlsOrigin::start(&pki.leaf("wrong", KeyType::EcdsaP256, &["wrong.test"]), "x"), "name mismatch"),
        (TlsOrigin::start(&pki.expired("expired", &["localhost"]), "x"), "expired"),
    ];
    for (origin, why) in &cases {
        let hg = gateway_to(origin, &pki);
        let r = support::exchange(hg.addr, "GET / HTTP/1.1\r\nHost: public.example\r\n\r\n");
        assert_eq!(r.status, 502, "{why}: {}", r.text());
        let want = format!("hopgate: 502 Bad Gateway\nTLS to localhost:{} failed: {why}", origin.port());
        assert!(r.text().starts_with(&want), "{why}: {:?}", r.text());
        assert!(origin.seen.lock().unwrap().is_empty(), "{why}: no request reaches an unverified origin");
        let log = hg.stderr_with(why, 1);
        assert!(log.contains(&format!("502 Bad Gateway: TLS to localhost:{}", origin.port())), "logged: {log}");
    }
    // Self-signed with CN=localhost: on hosts whose system store holds a "CN=localhost" certificate (Debian's
    // ssl-cert snakeoil) webpki finds that anchor by name and the signature fails; elsewhere the issuer is unknown.
    // Both are an untrusted issuer.
    let snakeoil_like = TlsOrigin::start(&pki.self_signed("named-localhost", "localhost", &["localhost"], true), "x");
    let r = support::exchange(gateway_to(&snakeoil_like, &pki).addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("failed: untrusted issuer"), "{}", r.text());
    // The reasons name the details.
    let r = support::exchange(gateway_to(&cases[2].0, &pki).addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.text().contains("wrong.test") && r.text().contains("not localhost"), "{}", r.text());
    let r = support::exchange(gateway_to(&cases[3].0, &pki).addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.text().contains("notAfter is Sat, 01 Feb 2020 00:00:00 GMT"), "{}", r.text());

    // Without --ca the test CA is not trusted: no fallback.
    let hg = Hopgate::gateway(&format!("https://localhost:{}", good.port()), &[]);
    let r = support::exchange(hg.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("untrusted issuer"), "{}", r.text());
}

#[test]
fn origination_by_ip_checks_the_ip_san() {
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf("ip", KeyType::EcdsaP256, &["localhost"]), "by ip");
    let hg = Hopgate::gateway(&format!("https://127.0.0.1:{}", origin.port()), &["--ca", pki.ca.cert()]);
    let r = support::exchange(hg.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "by ip"));
    assert_eq!(origin.last().sni, None, "no SNI for an IP address (RFC 6066 §3)");
}

#[test]
fn upstream_tls_connections_are_pooled() {
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf("pool", KeyType::EcdsaP256, &["localhost"]), "pooled");
    let hg = gateway_to(&origin, &pki);
    for i in 0..5 {
        // A new client connection each time: the upstream connection is what is reused.
        let r = support::exchange(hg.addr, &format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert_eq!((r.status, r.text().as_str()), (200, "pooled"));
    }
    assert_eq!(origin.seen.lock().unwrap().len(), 5);
    assert_eq!(origin.accepted(), 1, "five requests, one TLS connection");
    assert!(origin.seen.lock().unwrap().iter().all(|s| s.conn == 0));

    // The forward proxy pools https:// targets the same way.
    let proxy = Hopgate::proxy(&["--ca", pki.ca.cert()]);
    let mut c = Raw::connect(proxy.addr);
    for i in 0..3 {
        c.send(format!(
            "GET https://localhost:{}/p{i} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            origin.port(),
            origin.port()
        ));
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "pooled"));
    }
    assert_eq!(origin.last().target(), "/p2");
    assert_eq!(origin.last().header("host"), Some(format!("localhost:{}", origin.port())));
    assert_eq!(origin.accepted(), 2, "the proxy's client opened one more connection, and reused it");
}

#[test]
fn forward_proxy_https_targets_are_verified_and_policed() {
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf("fwd", KeyType::EcdsaP256, &["localhost"]), "fwd");
    let req = format!("GET https://localhost:{p}/ HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n", p = origin.port());
    let trusting = Hopgate::proxy(&["--ca", pki.ca.cert()]);
    let r = support::exchange(trusting.addr, &req);
    assert_eq!((r.status, r.text().as_str()), (200, "fwd"));
    assert_eq!(origin.last().sni.as_deref(), Some("localhost"));

    let plain = Hopgate::proxy(&[]);
    let r = support::exchange(plain.addr, &req);
    assert_eq!(r.status, 502);
    assert!(r.text().contains("untrusted issuer"), "{}", r.text());

    // The target policy applies to https:// targets too: loopback is refused without --allow-target.
    let strict = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--ca", pki.ca.cert()]);
    let r = support::exchange(strict.addr, &req);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(origin.seen.lock().unwrap().len(), 1);
}

#[test]
fn https_to_https_gateway_with_curl_http2() {
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf("o", KeyType::EcdsaP256, &["localhost"]), "both ways");
    let front = pki.leaf("front", KeyType::EcdsaP256, &["front.test"]);
    let hg = https_gateway(&front, &format!("https://localhost:{}", origin.port()), &["--ca", pki.ca.cert()]);
    let url = format!("https://front.test:{}/deep/path", hg.addr.port());
    let (code, version, body, err) = curl_to("front.test", &hg, &pki, &["--http2"], &url);
    assert_eq!((code, version.as_str(), body.as_str()), (200, "2", "both ways"), "{err}");
    let seen = origin.last();
    assert_eq!(seen.target(), "/deep/path");
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

/// Reads until EOF or `wait`; whether the server closed.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn stalled_handshakes_and_plain_http_affect_nobody_else() {
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let origin = Origin::fixed("served");
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[timeouts]\ntls_handshake_secs = 3\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\n\
         [[listener.tls]]\ncert = {:?}\nkey = {:?}\n[[listener.route]]\nto = \"http://{}\"\n",
        pair.cert(),
        pair.key(),
        origin.addr
    ));
    // One client connects and says nothing; another sends the first bytes of a ClientHello and stops.
    let mut silent = TcpStream::connect(hg.addr).unwrap();
    let mut half = TcpStream::connect(hg.addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x11, 0x22]).unwrap();
    // Meanwhile others are served at once.
    let url = format!("https://localhost:{}/", hg.addr.port());
    let start = Instant::now();
    for _ in 0..3 {
        let (code, _, body, err) = curl_to("localhost", &hg, &pki, &[], &url);
        assert_eq!((code, body.as_str()), (200, "served"), "{err}");
    }
    assert!(start.elapsed() < Duration::from_millis(2500), "served while two handshakes stall: {:?}", start.elapsed());
    assert!(!closed_within(&mut silent, Duration::from_millis(50)), "the silent client is still waiting meanwhile");
    // Plain HTTP to the TLS port: a 400 in plain text that says why, then close.
    let mut plain = Raw::connect(hg.addr);
    plain.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = plain.response();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.text().starts_with("hopgate: 400 Bad Request\nthis port speaks TLS"), "{:?}", r.text());
    // The stalled handshakes are cut off by tls_handshake_secs.
    assert!(
        closed_within(&mut silent, Duration::from_secs(6)),
        "a silent client is closed after the handshake timeout"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(6)),
        "a half ClientHello is closed after the handshake timeout"
    );
    assert!(start.elapsed() >= Duration::from_millis(2900), "not before the timeout: {:?}", start.elapsed());
    let log = hg.stderr_with("TLS handshake not finished within 3s", 2);
    assert_eq!(log.matches("TLS handshake not finished within 3s").count(), 2, "{log}");
    assert!(log.contains("plain HTTP sent to the TLS listener"), "{log}");
    assert_eq!(curl_to("localhost", &hg, &pki, &[], &url).0, 200, "still serving");
}

fn check(toml: &str, dir: &std::path::Path) -> (Option<i32>, String, String) {
    let path = dir.join("t.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(bin()).arg("check").arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn check_validates_certificates_keys_and_ca_bundles() {
    let pki = Pki::new();
    let good = pki.leaf("good", KeyType::EcdsaP256, &["localhost"]);
    let other = pki.leaf("other", KeyType::Ed25519, &["localhost"]);
    let d = pki.dir.path();
    std::fs::write(d.join("notpem.pem"), "hello\n").unwrap();
    let listener = |cert: &str, key: &str| {
        format!(
            "[[listener]]\nlisten = \"https://127.0.0.1:0\"\n[[listener.tls]]\ncert = {cert:?}\nkey = {key:?}\n\
             [[listener.route]]\nto = \"http://127.0.0.1:9\"\n"
        )
    };
    let (code, out, err) = check(&listener(good.cert(), good.key()), d);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("listener https://127.0.0.1:0"), "{out}");

    let t = d.join("t.toml").display().to_string();
    let cases = [
        (listener("missing.pem", good.key()), 4, format!("certificate {}: ", d.join("missing.pem").display())),
        (listener("notpem.pem", good.key()), 4, "notpem.pem: no certificate found".to_string()),
        (listener(good.cert(), "notpem.pem"), 5, "notpem.pem: no private key found".to_string()),
        (listener(good.cert(), good.cert()), 5, "good.pem: no private key found".to_string()),
        (listener(good.cert(), other.key()), 5, format!("key {}: does not match the certificate", other.key())),
        (
            "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"https://h:1\"\nca = \"notpem.pem\"\n"
                .to_string(),
            5,
            "CA bundle".to_string(),
        ),
        (
            format!("[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nca = {:?}\n", good.key()),
            4,
            "no certificate found".to_string(),
        ),
    ];
    for (toml, line, needle) in cases {
        let (code, _, err) = check(&toml, d);
        assert_eq!(code, Some(2), "{toml}");
        assert!(err.starts_with(&format!("{t}:{line}: ")), "{toml}: expected line {line}: {err}");
        assert!(err.contains(&needle), "{toml}: expected {needle:?} in {err}");
    }
}

#[test]
fn command_line_tls_flags() {
    let pki = Pki::new();
    let good = pki.leaf("good", KeyType::EcdsaP256, &["localhost"]);
    let other = pki.leaf("other", KeyType::EcdsaP256, &["localhost"]);
    let run = |args: &[&str]| {
        let out = Command::new("timeout").arg("10").arg(bin()).args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["gateway", "--listen", "https://127.0.0.1:0", "--to", "http://127.0.0.1:9"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("needs --tls-cert PEM and --tls-key PEM"), "{err}");
    let (code, err) = run(&["proxy", "--listen", "127.0.0.1:0", "--tls-cert", good.cert(), "--tls-key", good.key()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("need --listen https://"), "{err}");
    let (code, err) =
        run(&["proxy", "--listen", "https://127.0.0.1:0", "--tls-cert", good.cert(), "--tls-key", other.key()]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("key {}: does not match the certificate in {}", other.key(), good.cert())), "{err}");
    let (code, err) = run(&["proxy", "--listen", "127.0.0.1:0", "--ca", "/nonexistent/ca.pem"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("CA bundle /nonexistent/ca.pem: cannot read"), "{err}");
}

#[test]
fn connect_inside_tls_to_the_https_proxy() {
    let pki = Pki::new();
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["localhost"]);
    let origin = TlsOrigin::start(&pki.leaf("origin", KeyType::EcdsaP256, &["localhost"]), "tls in a tunnel in tls");
    let hg = https_proxy(&pair, &["--connect-port", &origin.port().to_string()]);
    // curl sends CONNECT localhost:PORT inside its TLS connection to the proxy, then its own TLS to the origin.
    let (code, _, body, err) = curl(&[
        "--proxy",
        &format!("https://localhost:{}", hg.addr.port()),
        "--proxy-cacert",
        pki.ca.cert(),
        "--cacert",
        pki.ca.cert(),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", hg.addr.port()),
        &format!("https://localhost:{}/tunnelled", origin.port()),
    ]);
    assert_eq!((code, body.as_str()), (200, "tls in a tunnel in tls"), "{err}");
    let seen = origin.last();
    assert_eq!(seen.target(), "/tunnelled");
    assert_eq!(seen.sni.as_deref(), Some("localhost"), "the client's own TLS reached the origin");
    let line = hg.stdout_line("CONNECT");
    assert!(line.contains(&format!("\"CONNECT localhost:{} HTTP/1.1\" 200", origin.port())), "{line}");
}

#[test]
fn https_targets_through_a_parent_go_in_a_connect_tunnel() {
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf("origin", KeyType::EcdsaP256, &["localhost"]), "via the parent");
    let parent = Hopgate::proxy(&["--connect-port", &origin.port().to_string()]);
    let child = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--ca",
        pki.ca.cert(),
        "--parent",
        &format!("http://hop:secret@{}", parent.addr),
    ]);
    let mut c = Raw::connect(child.addr);
    for i in 0..2 {
        c.send(format!("GET https://localhost:{p}/p{i} HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n", p = origin.port()));
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "via the parent"));
    }
    let seen = origin.last();
    assert_eq!(seen.target(), "/p1", "origin-form inside the tunnel");
    assert_eq!(seen.sni.as_deref(), Some("localhost"), "TLS from the child, end to end");
    assert_eq!(seen.header("proxy-authorization"), None, "the parent's credentials stay with the parent");
    assert_eq!(origin.accepted(), 1, "the tunnelled TLS connection is pooled");
    // The parent logs its CONNECT when the tunnel ends: the child's pooled connection keeps it open until the
    // child goes away.
    drop(c);
    drop(child);
    parent.stdout_line("CONNECT");
    let log = parent.stdout_text();
    assert_eq!(log.matches(&format!("\"CONNECT localhost:{} HTTP/1.1\" 200", origin.port())).count(), 1, "{log}");
    assert_eq!(log.matches(" tunnel up=").count(), 1, "{log}");
    assert!(!log.contains("GET https://"), "the parent never sees the request itself: {log}");

    // Verification still applies inside the tunnel: without --ca the origin is refused.
    let untrusting =
        Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--parent", &format!("http://{}", parent.addr)]);
    let r = support::exchange(
        untrusting.addr,
        &format!("GET https://localhost:{p}/ HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n", p = origin.port()),
    );
    assert_eq!(r.status, 502);
    assert!(r.text().contains("untrusted issuer"), "{}", r.text());
}

#[test]
fn cgi_behind_an_https_listener_sees_https_on_over_http1_and_http2() {
    let pki = Pki::new();
    let pair = pki.leaf("cgi", KeyType::EcdsaP256, &["cgi.test"]);
    let scripts = support::cgi::Scripts::new();
    scripts.add(
        "env.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         for v in HTTPS SERVER_PROTOCOL SERVER_NAME SERVER_PORT HTTP_HOST REQUEST_URI; do\n\
         eval \"printf '%s=%s\\n' $v \\\"\\$$v\\\"\"\ndone\n",
    );
    let hg = https_gateway(&pair, &scripts.target(), &[]);
    assert_eq!(hg.listening[0], format!("https://{}", hg.addr));
    let port = hg.addr.port();
    let url = format!("https://cgi.test:{port}/env.sh?q=1");
    for (flag, version, protocol) in [("--http1.1", "1.1", "HTTP/1.1"), ("--http2", "2", "HTTP/2.0")] {
        let (code, got, body, err) = curl_to("cgi.test", &hg, &pki, &[flag], &url);
        assert_eq!((code, got.as_str()), (200, version), "{flag}: {err} {body}");
        let want = format!(
            "HTTPS=on\nSERVER_PROTOCOL={protocol}\nSERVER_NAME=cgi.test\nSERVER_PORT={port}\n\
             HTTP_HOST=cgi.test:{port}\nREQUEST_URI=/env.sh?q=1"
        );
        assert_eq!(body.trim_end(), want, "{flag}");
    }
}
