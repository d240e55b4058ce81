//! Intercepting listeners (issue 18): clients with no proxy configured, whose connections nftables rules send to
//! hopgate. Each test builds its own network: the test runs in namespaces of its own (support::netns), the
//! gateway's, with a client namespace and a server namespace joined to it by veth pairs:
//!
//! ```text
//!   client 10.18.0.2 --cl1==cl0-- 10.18.0.1 gateway (hopgate, nftables) 10.18.2.1 --sv0==sv1-- 10.18.2.2 server
//! ```
//!
//! The client's default route is the gateway; its /etc/hosts (the test's own) names origin.test and
//! www.blocked.test 10.18.2.2, other.test 10.18.2.3 (where nothing is). On the gateway, NAT REDIRECT sends ports
//! 80/443 to an `intercept` listener (deny list), 81/444 to one with `host_verify = false` and an allow list, and
//! TPROXY sends 82/445 to a `tproxy` listener with `spoof_source`; on the gateway itself, connections of user 65534
//! to ports 80/443 are REDIRECTed to the `intercept` listener (hopgate, root, is left alone). curl verifies the origin's certificate itself
//! (`--cacert`, never `-k`): hopgate splices TLS and never decrypts it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use hopgate::clienthello;
use support::netns::{Netns, hosts, isolated, nft, sh};
use support::origin::{Next, Origin, raw_on, respond};
use support::tls::{Pki, TlsOrigin};
use support::{Curl, Hopgate, curl_full_with, find, wait_until};

const GATEWAY: &str = "10.18.0.1";
const CLIENT: &str = "10.18.0.2";
const SERVER: &str = "10.18.2.2";
const CLIENT6: &str = "fd18::2";
const SERVER6: &str = "fd18:2::2";

const CONFIG: &str = "\
access_log = \"stdout\"
[[listener]]
listen = \"0.0.0.0:3129\"
mode = \"intercept\"
via_name = \"gw\"
[listener.proxy]
deny_domains = [\"*.blocked.test\"]

[[listener]]
listen = \"[::]:3129\"
mode = \"intercept\"
via_name = \"gw\"
[listener.proxy]
deny_domains = [\"*.blocked.test\"]

[[listener]]
listen = \"0.0.0.0:3131\"
mode = \"intercept\"
host_verify = false
[listener.proxy]
allow_domains = [\"origin.test\", \"other.test\"]

[[listener]]
listen = \"0.0.0.0:3130\"
mode = \"tproxy\"
spoof_source = true
[listener.proxy]
";

const RULES: &str = "\
table ip hopgate_test {
  chain nat_prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"cl0\" tcp dport { 80, 443 } redirect to :3129
    iifname \"cl0\" tcp dport { 81, 444 } redirect to :3131
  }
  chain nat_output {
    type nat hook output priority -100; policy accept;
    meta skuid 65534 tcp dport { 80, 443 } redirect to :3129
  }
  chain mangle_prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    iifname \"cl0\" tcp dport { 82, 445 } tproxy to :3130 meta mark set 1 accept
  }
}
table ip6 hopgate_test6 {
  chain nat_prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"cl0\" tcp dport { 80, 443 } redirect to :3129
  }
}
";

/// The three namespaces, the origins in the server's, and hopgate on the gateway.
struct Lab {
    client: Netns,
    _server: Netns,
    _hosts: tempfile::TempDir,
    pki: Pki,
    /// HTTP on 10.18.2.2:80 and :81.
    http: Origin,
    /// TLS on 10.18.2.2:443, :444 and :445 (origin.test, www.blocked.test and 10.18.2.2 in its certificate).
    tls: Vec<TlsOrigin>,
    hg: Hopgate,
}

impl Lab {
    fn new() -> Lab {
        let hosts =
            hosts(&[(SERVER, "origin.test www.blocked.test"), ("10.18.2.3", "other.test"), (SERVER6, "origin6.test")]);
        let client = Netns::new();
        let server = Netns::new();
        sh(&["ip", "link", "add", "cl0", "type", "veth", "peer", "name", "cl1"]);
        sh(&["ip", "link", "add", "sv0", "type", "veth", "peer", "name", "sv1"]);
        client.take("cl1");
        server.take("sv1");
        sh(&["ip", "addr", "add", &format!("{GATEWAY}/24"), "dev", "cl0"]);
        sh(&["ip", "addr", "add", "10.18.2.1/24", "dev", "sv0"]);
        // IPv6 beside IPv4 (nodad: usable at once).
        sh(&["ip", "-6", "addr", "add", "fd18::1/64", "dev", "cl0", "nodad"]);
        sh(&["ip", "-6", "addr", "add", "fd18:2::1/64", "dev", "sv0", "nodad"]);
        sh(&["ip", "link", "set", "cl0", "up"]);
        sh(&["ip", "link", "set", "sv0", "up"]);
        client.run(&["ip", "addr", "add", &format!("{CLIENT}/24"), "dev", "cl1"]);
        client.run(&["ip", "link", "set", "cl1", "up"]);
        client.run(&["ip", "route", "add", "default", "via", GATEWAY]);
        client.run(&["ip", "-6", "addr", "add", &format!("{CLIENT6}/64"), "dev", "cl1", "nodad"]);
        client.run(&["ip", "-6", "route", "add", "default", "via", "fd18::1"]);
        server.run(&["ip", "addr", "add", &format!("{SERVER}/24"), "dev", "sv1"]);
        server.run(&["ip", "link", "set", "sv1", "up"]);
        server.run(&["ip", "route", "add", "default", "via", "10.18.2.1"]);
        server.run(&["ip", "-6", "addr", "add", &format!("{SERVER6}/64"), "dev", "sv1", "nodad"]);
        server.run(&["ip", "-6", "route", "add", "default", "via", "fd18:2::1"]);
        // TPROXY: marked packets (for a transparent socket) are delivered here, whatever their destination.
        sh(&["ip", "rule", "add", "fwmark", "1", "lookup", "100"]);
        sh(&["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"]);
        nft(RULES);

        let pki = Pki::new();
        let pair =
            pki.leaf_with_ips("origin", &["origin.test", "www.blocked.test", "origin6.test"], &[SERVER, SERVER6]);
        let at = |port: u16| SocketAddr::new(SERVER.parse().unwrap(), port);
        let http_listener = server.bind(at(80));
        let second = server.bind(at(81));
        let http = Origin::start_on(http_listener, |_, s| {
            respond(s, "HTTP/1.1 200 OK", &[("Content-Type", "text/plain")], b"hello from the origin\n");
            Next::KeepAlive
        });
        // Port 81 answers the same way and records into the same list.
        let seen = http.seen.clone();
        raw_on(second, move |mut s| {
            if let Some(head) = read_head(&mut s) {
                seen.lock().unwrap().push(support::origin::Seen {
                    head: head.clone(),
                    headers: support::parse_fields(head.split("\r\n").skip(1)),
                    ..Default::default()
                });
                respond(&mut s, "HTTP/1.1 200 OK", &[], b"hello from port 81\n");
            }
        });
        // Port 82 (TPROXY) says whom it sees connecting.
        raw_on(server.bind(at(82)), |mut s| {
            if read_head(&mut s).is_some() {
                let peer = s.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                respond(&mut s, "HTTP/1.1 200 OK", &[], format!("connected from {peer}\n").as_bytes());
            }
        });
        let mut tls: Vec<TlsOrigin> =
            [443, 444, 445].map(|port| TlsOrigin::start_on(server.bind(at(port)), &pair, "hello over TLS\n")).into();
        // Over IPv6: port 80 answers as port 80 does, 443 is the fourth TLS origin.
        let seen = http.seen.clone();
        raw_on(server.bind(SocketAddr::new(SERVER6.parse().unwrap(), 80)), move |mut s| {
            if let Some(head) = read_head(&mut s) {
                seen.lock().unwrap().push(support::origin::Seen {
                    head: head.clone(),
                    headers: support::parse_fields(head.split("\r\n").skip(1)),
                    ..Default::default()
                });
                respond(&mut s, "HTTP/1.1 200 OK", &[], b"hello over IPv6\n");
            }
        });
        let six = server.bind(SocketAddr::new(SERVER6.parse().unwrap(), 443));
        tls.push(TlsOrigin::start_on(six, &pair, "hello over TLS\n"));
        let hg = Hopgate::start_config(CONFIG);
        Lab { client, _server: server, _hosts: hosts, pki, http, tls, hg }
    }

    /// curl in the client's namespace, trusting the test CA.
    fn curl(&self, args: &[&str]) -> Curl {
        let ca = self.pki.ca.cert();
        let mut all = vec!["--cacert", ca, "--noproxy", "*"];
        all.extend_from_slice(args);
        curl_full_with(self.client.command("curl"), &all)
    }

    fn tls_accepted(&self) -> usize {
        self.tls.iter().map(TlsOrigin::accepted).sum()
    }
}

/// A request head, read byte by byte.
fn read_head(s: &mut TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    support::read_head_bytes(s).ok()
}

#[test]
fn curl_without_a_proxy_reaches_origins_over_http_and_https() {
    if !isolated("curl_without_a_proxy_reaches_origins_over_http_and_https") {
        return;
    }
    let lab = Lab::new();
    // HTTP: relayed with the relay's rules, to where the client connected.
    let r = lab.curl(&["-H", "Connection: x-secret", "-H", "X-Secret: 1", "http://origin.test/hello?x=1"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello from the origin\n"), "{}", r.stderr);
    assert_eq!(r.header("via").as_deref(), Some("1.1 gw"));
    let seen = lab.http.last();
    assert_eq!(seen.target, "/hello?x=1");
    assert_eq!(seen.header("host"), Some("origin.test"), "the Host as the client sent it");
    assert_eq!(seen.header("via"), Some("1.1 gw"));
    assert!(!seen.has("x-secret") && !seen.has("connection"), "hop-by-hop fields stripped: {}", seen.head);
    let line = lab.hg.stdout_line("\"GET /hello?x=1 HTTP/1.1\" 200");
    assert!(line.contains(&format!(" {CLIENT}:")) && line.ends_with(&format!(" {SERVER}:80")), "{line}");
    // HTTPS: spliced; curl checked the origin's own certificate for origin.test.
    let r = lab.curl(&["https://origin.test/"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello over TLS\n"), "{}", r.stderr);
    assert_eq!(lab.tls[0].last().sni.as_deref(), Some("origin.test"), "the origin saw the client's own handshake");
    let line = lab.hg.stdout_line("\"CONNECT origin.test:443 HTTP/1.1\" 200");
    assert!(line.contains(&format!(" {SERVER}:443 tunnel up=")) && line.ends_with(" closed"), "{line}");
    // No SNI (an address in the URL) under a deny-only policy: spliced too.
    let r = lab.curl(&[&format!("https://{SERVER}/")]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello over TLS\n"), "{}", r.stderr);
    assert_eq!(lab.tls[0].last().sni, None);
    lab.hg.stdout_line(&format!("\"CONNECT {SERVER}:443 HTTP/1.1\" 200"));
}

#[test]
fn a_forged_host_is_refused_unless_host_verify_is_off() {
    if !isolated("a_forged_host_is_refused_unless_host_verify_is_off") {
        return;
    }
    let lab = Lab::new();
    let before = lab.http.count();
    let r = lab.curl(&["-H", "Host: other.test", "http://origin.test/"]);
    assert_eq!(r.code, 409);
    assert_eq!(
        r.text(),
        format!(
            "hopgate: 409 Conflict\nHost other.test resolves to 10.18.2.3, not to {SERVER}, where the client connected (host_verify)\n"
        )
    );
    let r = lab.curl(&["-H", "Host: origin.test:8080", "http://origin.test/"]);
    assert_eq!(r.code, 409);
    assert!(r.text().contains("names port 8080, not 10.18.2.2:80"), "{}", r.text());
    assert_eq!(lab.http.count(), before, "nothing reached an origin");
    let line = lab.hg.wait_stderr_line(&["409", "reason=host_forgery"]);
    assert!(line.contains("other.test"), "{line}");
    // host_verify = false: the forged Host goes along, to the original destination all the same.
    let r = lab.curl(&["-H", "Host: other.test", "http://origin.test:81/"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello from port 81\n"), "{}", r.stderr);
    assert_eq!(lab.http.last().header("host"), Some("other.test"));
}

#[test]
fn sni_rules_refuse_with_an_alert_and_the_name_in_the_log() {
    if !isolated("sni_rules_refuse_with_an_alert_and_the_name_in_the_log") {
        return;
    }
    let lab = Lab::new();
    let r = lab.curl(&["https://www.blocked.test/"]);
    assert!(!r.ok && r.code == 0, "{r:?}");
    assert!(r.stderr.contains("alert access denied"), "curl was told by a TLS alert: {}", r.stderr);
    let line = lab.hg.wait_stderr_line(&["403", "www.blocked.test is refused by deny_domains \"*.blocked.test\""]);
    assert!(line.contains("sni=www.blocked.test") && line.contains("reason=target_forbidden"), "{line}");
    lab.hg.stdout_line("\"CONNECT www.blocked.test:443 HTTP/1.1\" 403 0 ");
    // The same name over plain HTTP: a 403 page.
    let r = lab.curl(&["http://www.blocked.test/"]);
    assert_eq!(r.code, 403);
    assert_eq!(
        r.text(),
        "hopgate: 403 Forbidden\nwww.blocked.test is refused by deny_domains \"*.blocked.test\" of [listener.proxy]\n"
    );
    // An allow list (port 444): its name is spliced, another name and no name at all are refused.
    let r = lab.curl(&["https://origin.test:444/"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello over TLS\n"), "{}", r.stderr);
    let accepted = lab.tls_accepted();
    let r = lab.curl(&["https://www.blocked.test:444/"]);
    assert!(r.stderr.contains("alert access denied"), "{}", r.stderr);
    let r = lab.curl(&[&format!("https://{SERVER}:444/")]);
    assert!(r.stderr.contains("alert access denied"), "{}", r.stderr);
    let line = lab.hg.wait_stderr_line(&["403", "a connection that names no host (no SNI, no Host)"]);
    assert!(line.contains("sni=-"), "{line}");
    assert_eq!(lab.tls_accepted(), accepted, "refused connections never reached the origin");
}

/// Sends the first thing written (rustls's ClientHello record) as two records, in two TCP segments cut inside
/// the second record's header; everything else as it comes.
struct SplitHello {
    inner: TcpStream,
    first: bool,
}

impl Read for SplitHello {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for SplitHello {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !std::mem::take(&mut self.first) {
            return self.inner.write(buf);
        }
        assert!(
            matches!(clienthello::read(buf), clienthello::Read::Hello(h) if h.len == buf.len()),
            "one hello record"
        );
        let message = &buf[5..];
        let two = clienthello::frame(message, message.len().div_ceil(2), 0x0303);
        let cut = 5 + message.len().div_ceil(2) + 3;
        self.inner.set_nodelay(true)?;
        self.inner.write_all(&two[..cut])?;
        // A gap between the segments, so that they arrive apart (no assertion depends on its length).
        std::thread::sleep(Duration::from_millis(100));
        self.inner.write_all(&two[cut..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn a_client_hello_split_over_two_segments_and_records_is_reassembled() {
    if !isolated("a_client_hello_split_over_two_segments_and_records_is_reassembled") {
        return;
    }
    let lab = Lab::new();
    let target: SocketAddr = format!("{SERVER}:443").parse().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&lab.pki.ca.cert).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("origin.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let stream = lab.client.connect(target);
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, SplitHello { inner: stream, first: true });
    tls.write_all(b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"hello over TLS\n").is_none() {
        let n = tls.read(&mut buf).expect("the response over the verified TLS session");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&got));
    assert_eq!(lab.tls[0].last().sni.as_deref(), Some("origin.test"));

    // Over 16 KiB: a decode_error alert, and nothing reaches the origin.
    let accepted = lab.tls_accepted();
    let big = clienthello::hello_message(Some("origin.test"), clienthello::MAX_HELLO_BYTES);
    let mut s = lab.client.connect(target);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&clienthello::frame(&big, 16 * 1024, 0x0303)).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer, [21, 3, 3, 0, 2, 2, 50], "a fatal decode_error alert, then the end");
    let line = lab.hg.wait_stderr_line(&["400", "over the limit of 16384"]);
    assert!(line.contains(&format!("target={SERVER}:443")), "{line}");
    assert_eq!(lab.tls_accepted(), accepted);
}

#[test]
fn tproxy_keeps_the_clients_address_upstream() {
    if !isolated("tproxy_keeps_the_clients_address_upstream") {
        return;
    }
    let lab = Lab::new();
    let r = lab.curl(&["http://origin.test:82/"]);
    assert_eq!((r.code, r.text()), (200, format!("connected from {CLIENT}\n")), "{}", r.stderr);
    let line = lab.hg.stdout_line("\"GET / HTTP/1.1\" 200");
    assert!(line.ends_with(&format!(" {SERVER}:82")), "{line}");
    let r = lab.curl(&["https://origin.test:445/"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello over TLS\n"), "{}", r.stderr);
    lab.hg.stdout_line("\"CONNECT origin.test:445 HTTP/1.1\" 200");
}

#[test]
fn a_connection_to_the_listener_itself_is_a_loop() {
    if !isolated("a_connection_to_the_listener_itself_is_a_loop") {
        return;
    }
    let lab = Lab::new();
    // Not redirected: the original destination is the listener itself.
    let r = lab.curl(&[&format!("http://{GATEWAY}:3129/")]);
    assert_eq!(r.code, 508, "{r:?}");
    assert_eq!(r.text(), format!("hopgate: 508 Loop Detected\n{GATEWAY}:3129 is this proxy itself\n"));
    let r = lab.curl(&["--resolve", &format!("origin.test:3129:{GATEWAY}"), "https://origin.test:3129/"]);
    assert!(r.stderr.contains("alert access denied"), "{}", r.stderr);
    let line = lab.hg.wait_stderr_line(&["508", "sni=origin.test"]);
    assert!(line.contains("is this proxy itself"), "{line}");
    let stdout = lab.hg.stdout_text();
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .hg
            .stdout_text()
            .contains("\"CONNECT origin.test:3129 HTTP/1.1\" 508")),
        "{stdout}"
    );
}

#[test]
fn this_hosts_own_traffic_is_intercepted_for_its_user() {
    if !isolated("this_hosts_own_traffic_is_intercepted_for_its_user") {
        return;
    }
    let lab = Lab::new();
    // curl as user 65534 on the gateway: the output hook's rule sends it to hopgate, whose own upstream
    // connection (root's) goes out untouched.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s", "-S", "-i", "--noproxy", "*"])
        .args(["--max-time", "20", "http://origin.test/local"])
        .output()
        .expect("setpriv (util-linux) runs curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\r\nvia: 1.1 gw\r\n") && text.ends_with("hello from the origin\n"), "{text}");
    assert_eq!(lab.http.last().target, "/local");
    assert_eq!(lab.http.last().header("via"), Some("1.1 gw"));
}

#[test]
fn ipv6_connections_are_intercepted_too() {
    if !isolated("ipv6_connections_are_intercepted_too") {
        return;
    }
    let lab = Lab::new();
    // IP6T_SO_ORIGINAL_DST names the original destination.
    let r = lab.curl(&["-6", "http://origin6.test/six"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello over IPv6\n"), "{}", r.stderr);
    assert_eq!(r.header("via").as_deref(), Some("1.1 gw"));
    assert_eq!(lab.http.last().header("host"), Some("origin6.test"));
    let line = lab.hg.stdout_line("\"GET /six HTTP/1.1\" 200");
    assert!(line.contains(&format!(" [{CLIENT6}]:")) && line.ends_with(&format!(" [{SERVER6}]:80")), "{line}");
    let r = lab.curl(&["-6", "https://origin6.test/"]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello over TLS\n"), "{}", r.stderr);
    assert_eq!(lab.tls[3].last().sni.as_deref(), Some("origin6.test"));
    lab.hg.stdout_line("\"CONNECT origin6.test:443 HTTP/1.1\" 200");
    let r = lab.curl(&["-6", "--resolve", &format!("www.blocked.test:443:[{SERVER6}]"), "https://www.blocked.test/"]);
    assert!(r.stderr.contains("alert access denied"), "{}", r.stderr);
}
