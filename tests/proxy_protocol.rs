//! The PROXY protocol (HAProxy's doc/proxy-protocol.txt, v1 text and v2 binary), both ways (issue 13):
//! a listener with `proxy_protocol` takes the client's address from the header a balancer sends, for the access
//! log, Forwarded/X-Forwarded-For and CGI's REMOTE_ADDR, and closes, before answering a byte, connections from
//! outside `proxy_protocol_from` or without a valid header; a route with `send_proxy_protocol` writes one on each
//! upstream connection, which then carries that client only. The real binary, raw clients that write the headers
//! byte for byte, curl's `--haproxy-protocol`, and nginx (Debian package nginx) reading what hopgate sends.
//! HAProxy in front of two hopgates is tests/scale_out.rs.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::cgi::{ENV_PY, Scripts};
use support::origin::{Origin, Seen};
use support::tls::{KeyType, Pki};
use support::{Hopgate, Raw, env_of, require, wait_until};

const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: signature, version/command, family/transport, length, then `body`.
fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[ver_cmd, fam]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// The address block of TCP over IPv4 or IPv6, then `tlvs`.
fn addrs(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for ip in [src.ip(), dst.ip()] {
        match ip {
            IpAddr::V4(v4) => b.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b.extend_from_slice(&v6.octets()),
        }
    }
    b.extend_from_slice(&src.port().to_be_bytes());
    b.extend_from_slice(&dst.port().to_be_bytes());
    b.extend_from_slice(tlvs);
    b
}

/// A v2 PROXY header (TCP) for `src` -> `dst`, with `tlvs` after the addresses.
fn v2_proxy(src: &str, dst: &str, tlvs: &[u8]) -> Vec<u8> {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let fam = if src.is_ipv4() { 0x11 } else { 0x21 };
    v2(0x21, fam, &addrs(src, dst, tlvs))
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&(value.len() as u16).to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// CRC-32C (Castagnoli, RFC 4960 appendix B), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// `header` with a PP2_TYPE_CRC32C TLV appended and filled in as the spec says (computed with the field zeroed);
/// `corrupt` flips a bit of the checksum.
fn with_crc(src: &str, dst: &str, tlvs: &[u8], corrupt: bool) -> Vec<u8> {
    let mut all = tlvs.to_vec();
    all.extend_from_slice(&tlv(0x03, &[0, 0, 0, 0]));
    let mut h = v2_proxy(src, dst, &all);
    let mut crc = crc32c(&h);
    if corrupt {
        crc ^= 1;
    }
    let at = h.len() - 4;
    h[at..].copy_from_slice(&crc.to_be_bytes());
    h
}

/// A TCP connection to `to` from the loopback address `src` (127.0.0.5...): the address a PROXY header of the
/// connection must not be confused with.
fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(src.parse().unwrap(), 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Sends `bytes` on a new connection and returns what came back before the connection ended (a close or a reset);
/// a connection still open after 15 s fails the test.
fn answer_to(to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // hopgate may close while the rest is being written: a failed write is part of the answer.
    let _ = s.write_all(bytes);
    read_to_end(&mut s, bytes)
}

fn read_to_end(s: &mut TcpStream, sent: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed after {:?}: {e}; got {:?}", String::from_utf8_lossy(sent), got),
        }
    }
}

fn all<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

/// A listener that takes `proxy_protocol = VERSION` from `from` (a TOML list's items) with `tables` below it; the
/// access log on stdout.
fn behind(version: &str, from: &str, top: &str, tables: &str) -> Hopgate {
    Hopgate::start_config(&format!(
        "{top}\n[[listener]]\nlisten = \"127.0.0.1:0\"\nvia_name = \"hg.test\"\nproxy_protocol = \"{version}\"\n\
         proxy_protocol_from = [{from}]\n{tables}"
    ))
}

const GET: &str = "GET /app/x HTTP/1.1\r\nHost: pub.example\r\n\r\n";

/// One request after `header` on a new connection; the response and what the origin saw.
fn through(hg: &Hopgate, header: &[u8], origin: &Origin) -> (u16, Seen) {
    let mut c = Raw::connect(hg.addr);
    c.send(header).send(GET);
    let r = c.response();
    assert_eq!(r.status, 200, "{}{}", r.head, r.text());
    (r.status, origin.last())
}

#[test]
fn v1_makes_the_carried_address_the_client_everywhere() {
    let origin = Origin::fixed("ok");
    let scripts = Scripts::new();
    scripts.add("env.py", ENV_PY);
    let hg = behind(
        "v1",
        "\"127.0.0.0/8\"",
        "",
        &format!(
            "[[listener.route]]\npath = \"/app\"\nto = \"http://{}\"\n\
             [[listener.route]]\npath = \"/cgi\"\nto = \"{}\"\n",
            origin.addr,
            scripts.target()
        ),
    );
    // Forwarded / X-Forwarded-For, on two requests of one connection.
    let mut c = Raw::connect(hg.addr);
    c.send("PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n").send(GET);
    assert_eq!(c.response().status, 200);
    let seen = origin.last();
    assert_eq!(all(&seen, "forwarded"), ["for=203.0.113.7;proto=http;host=\"pub.example\""], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-for"), ["203.0.113.7"], "{}", seen.head);
    c.send("GET /app/y HTTP/1.1\r\nHost: pub.example\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!((origin.last().target.as_str(), all(&origin.last(), "x-forwarded-for")), ("/y", vec!["203.0.113.7"]));
    // The access log: hopgate's format writes the client's address and port.
    let line = hg.stdout_line("\"GET /app/x HTTP/1.1\"");
    assert_eq!(line.split(' ').nth(1), Some("203.0.113.7:51234"), "{line}");

    // CGI's REMOTE_ADDR and REMOTE_PORT.
    let mut c = Raw::connect(hg.addr);
    c.send("PROXY TCP4 198.51.100.9 192.0.2.1 4000 80\r\nGET /cgi/env.py HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let env = env_of(&r.text());
    assert_eq!((env["REMOTE_ADDR"].as_str(), env["REMOTE_PORT"].as_str()), ("198.51.100.9", "4000"));
    // The port the client connected to is the balancer's, as the header names it.
    assert_eq!(env["SERVER_PORT"], "80");

    // IPv6, and a header that arrives a byte at a time.
    let mut c = Raw::connect(hg.addr);
    for b in b"PROXY TCP6 2001:db8::7 2001:db8::1 1000 80\r\n" {
        c.send([*b]);
    }
    c.send(GET);
    assert_eq!(c.response().status, 200);
    let seen = origin.last();
    assert_eq!(all(&seen, "forwarded"), ["for=\"[2001:db8::7]\";proto=http;host=\"pub.example\""]);
    assert_eq!(all(&seen, "x-forwarded-for"), ["2001:db8::7"]);

    // UNKNOWN: the connection's own address (the spec's "as if there were no PROXY header").
    let (_, seen) = through(&hg, b"PROXY UNKNOWN\r\n", &origin);
    assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    let (_, seen) = through(&hg, b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n", &origin);
    assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn v2_with_tlvs_makes_the_carried_address_the_client() {
    let origin = Origin::fixed("ok");
    let hg = behind("v2", "\"127.0.0.1\"", "", &format!("[[listener.route]]\nto = \"http://{}\"\n", origin.addr));

    let (_, seen) = through(&hg, &v2_proxy("203.0.113.8:1234", "192.0.2.1:80", &[]), &origin);
    assert_eq!(all(&seen, "x-forwarded-for"), ["203.0.113.8"]);
    let line = hg.stdout_line("203.0.113.8:1234");
    assert!(line.contains("\"GET /app/x HTTP/1.1\" 200"), "{line}");

    // Every registered TLV kind, custom and experimental ones, an SSL TLV with sub-TLVs, and a checksum that
    // matches: all parsed and ignored.
    let mut tlvs = Vec::new();
    tlvs.extend(tlv(0x01, b"h2"));
    tlvs.extend(tlv(0x02, b"pub.example"));
    tlvs.extend(tlv(0x04, &[0; 7]));
    tlvs.extend(tlv(0x05, &[0xab; 128]));
    let mut ssl = vec![0x01, 0, 0, 0, 0];
    ssl.extend(tlv(0x21, b"TLSv1.3"));
    ssl.extend(tlv(0x22, b"client.example"));
    tlvs.extend(tlv(0x20, &ssl));
    tlvs.extend(tlv(0x30, b"ns"));
    tlvs.extend(tlv(0xe0, &[]));
    tlvs.extend(tlv(0xf7, b"x"));
    let (_, seen) = through(&hg, &with_crc("[2001:db8::9]:443", "[2001:db8::1]:80", &tlvs, false), &origin);
    assert_eq!(all(&seen, "forwarded"), ["for=\"[2001:db8::9]\";proto=http;host=\"pub.example\""]);

    // LOCAL (a balancer's own health check), and what the spec lets a receiver treat as UNSPEC (UNSPEC itself,
    // AF_UNIX, UDP): the connection's own address.
    for header in [
        v2(0x20, 0x00, &[]),
        v2(0x20, 0x11, &addrs("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), &[])),
        v2(0x21, 0x00, &[]),
        v2(0x21, 0x31, &[0x41; 216]),
        v2(0x21, 0x12, &addrs("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), &[])),
    ] {
        let (_, seen) = through(&hg, &header, &origin);
        assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.1"], "{header:02x?}");
    }
    assert_eq!(origin.count(), 7);
}

/// Whatever is not exactly a header of the listener's version is closed before a byte is answered, and logged
/// with the reason; the next good connection is served.
#[test]
fn connections_without_a_valid_header_are_closed_unanswered() {
    let origin = Origin::fixed("ok");
    let route = format!("[[listener.route]]\nto = \"http://{}\"\n", origin.addr);
    let v1 = behind("v1", "\"127.0.0.0/8\"", "", &route);
    let v2_listener = behind("v2", "\"127.0.0.0/8\"", "", &route);
    let v2_good = v2_proxy("203.0.113.1:1", "192.0.2.1:2", &[]);

    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.extend_from_slice(&[b'f'; 100]);
    long.extend_from_slice(b"\r\n");
    for bad in [
        GET.as_bytes().to_vec(),
        v2_good.clone(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 80\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.04 5.6.7.8 1 80\r\n".to_vec(),
        b"PROXY TCP4 ::1 ::1 1 80\r\n".to_vec(),
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 80\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80 \r\n".to_vec(),
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 80\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 80\r\n".to_vec(),
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 80\r\n".to_vec(),
        long,
    ] {
        let got = answer_to(v1.addr, &[&bad[..], GET.as_bytes()].concat());
        assert!(got.is_empty(), "v1 listener answered {:?} to {:?}", String::from_utf8_lossy(&got), bad);
    }
    v1.wait_stderr_line(&["invalid PROXY header", "closed"]);

    let mut overrun = v2_proxy("203.0.113.1:1", "192.0.2.1:2", &tlv(0x04, &[0; 8]));
    let n = overrun.len();
    overrun[n - 9] = 9; // the NOOP TLV claims one byte more than the header has
    let mut huge = v2(0x21, 0x11, &addrs("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), &[]));
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    for bad in [
        GET.as_bytes().to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\r\n".to_vec(),
        v2(0x11, 0x11, &addrs("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), &[])),
        v2(0x22, 0x11, &addrs("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), &[])),
        v2(0x21, 0x41, &[0; 12]),
        v2(0x21, 0x13, &[0; 12]),
        v2(0x21, 0x11, &[0; 11]),
        v2(0x21, 0x21, &[0; 35]),
        v2(0x21, 0x11, &addrs("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), &[0x04, 0x00])),
        overrun,
        with_crc("203.0.113.1:1", "192.0.2.1:2", &[], true),
        huge,
    ] {
        let got = answer_to(v2_listener.addr, &[&bad[..], GET.as_bytes()].concat());
        assert!(got.is_empty(), "v2 listener answered {:?} to {:02x?}", String::from_utf8_lossy(&got), bad);
    }
    v2_listener.wait_stderr_line(&["invalid PROXY header", "checksum"]);
    v2_listener.wait_stderr_line(&["invalid PROXY header", "larger than"]);
    assert_eq!(origin.count(), 0);
    through(&v1, b"PROXY TCP4 203.0.113.2 192.0.2.1 1 80\r\n", &origin);
    through(&v2_listener, &v2_good, &origin);
    assert_eq!(all(&origin.last(), "x-forwarded-for"), ["203.0.113.1"]);
}

/// Only the balancers in `proxy_protocol_from` may speak: a valid header from any other address is closed
/// unanswered (it could claim any client address).
#[test]
fn headers_from_outside_the_sources_are_closed_unanswered() {
    let origin = Origin::fixed("ok");
    let hg = behind(
        "v1",
        "\"10.0.0.0/8\", \"127.0.0.5/32\"",
        "",
        &format!("[[listener.route]]\nto = \"http://{}\"\n", origin.addr),
    );
    let header = "PROXY TCP4 203.0.113.3 192.0.2.1 1 80\r\n";
    let got = answer_to(hg.addr, format!("{header}{GET}").as_bytes());
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    hg.wait_stderr_line(&["127.0.0.1", "not in proxy_protocol_from", "closed"]);
    assert_eq!(origin.count(), 0);

    let mut s = connect_from("127.0.0.5", hg.addr);
    s.write_all(format!("{header}{GET}").as_bytes()).unwrap();
    let mut c = Raw::from_stream(s);
    assert_eq!(c.response().status, 200);
    assert_eq!(all(&origin.last(), "x-forwarded-for"), ["203.0.113.3"]);
}

/// A header that arrives slowly (or not at all) is bounded by `header_read_secs`.
#[test]
fn a_slow_header_falls_under_the_header_read_timeout() {
    let origin = Origin::fixed("ok");
    let hg = behind(
        "v2",
        "\"127.0.0.1\"",
        "[timeouts]\nheader_read_secs = 1\nidle_secs = 600\n",
        &format!("[[listener.route]]\nto = \"http://{}\"\n", origin.addr),
    );
    let header = v2_proxy("203.0.113.4:1", "192.0.2.1:2", &[]);
    let mut part = Raw::connect(hg.addr);
    part.send(&header[..20]);
    let mut silent = Raw::connect(hg.addr);
    assert!(part.closed_within(Duration::from_secs(10)), "a header stopping half-way is cut off");
    assert!(silent.closed_within(Duration::from_secs(10)), "a connection sending nothing is cut off");
    hg.wait_stderr_line(&["PROXY header", "not complete within 1s"]);
    assert_eq!(origin.count(), 0);
}

/// On an https:// listener the header comes before the TLS handshake (curl's `--haproxy-protocol` sends a v1
/// header with the addresses of its own connection).
#[test]
fn an_https_listener_reads_the_header_before_the_handshake() {
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let origin = Origin::fixed("ok");
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"https://127.0.0.1:0\"\nproxy_protocol = \"v1\"\nproxy_protocol_from = [\"127.0.0.0/8\"]\n\
         [[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n[[listener.route]]\nto = \"http://{}\"\n",
        pair.cert(),
        pair.key(),
        origin.addr
    ));
    let url = format!("https://localhost:{}/p", hg.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", hg.addr.port());
    let cacert = pki.ca.cert();
    let (code, body, err) = support::curl(&[
        "--haproxy-protocol",
        "--interface",
        "127.0.0.5",
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!((code, body.as_slice()), (200, &b"ok"[..]), "{err}");
    let seen = origin.last();
    assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.5"]);
    assert_eq!(all(&seen, "x-forwarded-proto"), ["https"]);
    // Without the header: nothing, not even a TLS alert.
    let (code, _, _) = support::curl(&["--cacert", cacert, "--resolve", &resolve, &url]);
    assert_eq!(code, 0);
    assert_eq!(origin.count(), 1);
}

#[test]
fn command_line_flags() {
    let origin = Origin::fixed("ok");
    let hg = Hopgate::gateway(
        &format!("http://{}", origin.addr),
        &["--proxy-protocol", "v2", "--proxy-protocol-from", "127.0.0.1/32", "--proxy-protocol-from", "10.0.0.0/8"],
    );
    let (_, seen) = through(&hg, &v2_proxy("[2001:db8::5]:9", "[2001:db8::1]:80", &[]), &origin);
    assert_eq!(all(&seen, "x-forwarded-for"), ["2001:db8::5"]);
    assert!(answer_to(hg.addr, GET.as_bytes()).is_empty());

    for (args, says) in [
        (vec!["--proxy-protocol", "v3"], "v3"),
        (vec!["--proxy-protocol-from", "127.0.0.1"], "--proxy-protocol-from needs --proxy-protocol"),
        (vec!["--proxy-protocol", "v1", "--proxy-protocol-from", "127.0.0.300"], "127.0.0.300"),
    ] {
        let out = Command::new(support::bin())
            .args(["gateway", "--listen", "127.0.0.1:0", "--to", "http://127.0.0.1:1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Every new key is checked where it is written: `hopgate check` names the file and line.
#[test]
fn config_mistakes_name_their_line() {
    for (keys, line, says) in [
        ("proxy_protocol = \"v3\"\n", 3, "\"v3\""),
        ("proxy_protocol = \"v1\"\nproxy_protocol_from = [\"10.0.0.0/33\"]\n", 4, "10.0.0.0/33"),
        ("proxy_protocol_from = [\"10.0.0.0/8\"]\n", 3, "proxy_protocol_from needs proxy_protocol"),
        ("reuse_port = \"yes\"\n", 3, "bool"),
    ] {
        let dir = support::temp_files(&[(
            "h.toml",
            &format!("[[listener]]\nlisten = \"127.0.0.1:0\"\n{keys}[listener.proxy]\n"),
        )]);
        let file = dir.path().join("h.toml");
        let out = Command::new(support::bin()).arg("check").arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{keys}: {err}");
        assert!(err.starts_with(&format!("{}:{line}: ", file.display())) && err.contains(says), "{keys}: {err}");
    }
    for (to, value, says) in [
        ("cgi:.", "\"v1\"", "send_proxy_protocol only applies to http:// and https:// routes"),
        ("http://127.0.0.1:1", "\"v9\"", "\"v9\""),
        ("http://127.0.0.1:1", "2", "\"v1\" or \"v2\""),
    ] {
        let dir = support::temp_files(&[(
            "h.toml",
            &format!(
                "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"{to}\"\nsend_proxy_protocol = {value}\n"
            ),
        )]);
        let file = dir.path().join("h.toml");
        let out = Command::new(support::bin()).arg("check").arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to} {value}: {err}");
        assert!(err.starts_with(&format!("{}:5: ", file.display())) && err.contains(says), "{to} {value}: {err}");
    }
}

/// What an origin that speaks the PROXY protocol received: per connection, its header and the request lines.
#[derive(Default)]
struct Received {
    conns: Vec<(Vec<u8>, Vec<String>)>,
}

/// An origin that reads a PROXY header (either version) at the start of every connection, then answers each
/// request `200 ok`.
fn proxy_origin() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let i = {
                let mut g = g.lock().unwrap();
                g.conns.push((Vec::new(), Vec::new()));
                g.conns.len() - 1
            };
            let g = g.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut header_done = false;
                loop {
                    if !header_done {
                        let end = if buf.starts_with(SIG) && buf.len() >= 16 {
                            Some(16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]))).filter(|&n| buf.len() >= n)
                        } else if buf.starts_with(b"PROXY ") {
                            support::find(&buf, b"\r\n").map(|i| i + 2)
                        } else if buf.len() >= 16 {
                            Some(0)
                        } else {
                            None
                        };
                        if let Some(end) = end {
                            g.lock().unwrap().conns[i].0 = buf.drain(..end).collect();
                            header_done = true;
                        }
                    }
                    if header_done && let Some(end) = support::find(&buf, b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
                        g.lock().unwrap().conns[i].1.push(line);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                            return;
                        }
                        continue;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, got)
}

/// `send_proxy_protocol`: the header goes first on every new upstream connection, exactly as the spec writes
/// it, naming the client and the address it connected to; a kept connection carries only requests of that same
/// client connection, and another client gets a connection (and a header) of its own.
#[test]
fn send_proxy_protocol_writes_one_header_per_upstream_connection_of_one_client() {
    for version in ["v1", "v2"] {
        let (origin, got) = proxy_origin();
        let hg = Hopgate::start_config(&format!(
            "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://{origin}\"\n\
             send_proxy_protocol = \"{version}\"\n"
        ));
        let a = connect_from("127.0.0.5", hg.addr);
        let a_port = a.local_addr().unwrap().port();
        let mut a = Raw::from_stream(a);
        for path in ["/1", "/2"] {
            a.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(a.response().text(), "ok");
        }
        let b = connect_from("127.0.0.6", hg.addr);
        let b_port = b.local_addr().unwrap().port();
        let mut b = Raw::from_stream(b);
        b.send("GET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(b.response().text(), "ok");
        // The first client again: back on its own connection.
        a.send("GET /4 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.response().text(), "ok");

        let hp = hg.addr.port();
        let want = |src: &str, sport: u16| -> Vec<u8> {
            match version {
                "v1" => format!("PROXY TCP4 {src} 127.0.0.1 {sport} {hp}\r\n").into_bytes(),
                _ => v2_proxy(&format!("{src}:{sport}"), &format!("127.0.0.1:{hp}"), &[]),
            }
        };
        let got = got.lock().unwrap();
        assert_eq!(got.conns.len(), 2, "{version}: one upstream connection per client connection");
        assert_eq!(
            got.conns[0].0,
            want("127.0.0.5", a_port),
            "{version}: {:?}",
            String::from_utf8_lossy(&got.conns[0].0)
        );
        assert_eq!(got.conns[0].1, ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "GET /4 HTTP/1.1"], "{version}");
        assert_eq!(got.conns[1].0, want("127.0.0.6", b_port), "{version}");
        assert_eq!(got.conns[1].1, ["GET /3 HTTP/1.1"], "{version}");
    }
}

/// A hopgate that sends the header in front of one that takes it: the client's address crosses both.
#[test]
fn a_chain_of_two_hopgates_passes_the_client_on() {
    let origin = Origin::fixed("ok");
    let back = behind(
        "v2",
        "\"127.0.0.1\"",
        "access_log = \"off\"",
        &format!("[[listener.route]]\nto = \"http://{}\"\n", origin.addr),
    );
    let front = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://{}\"\n\
         send_proxy_protocol = \"v2\"\n",
        back.addr
    ));
    let mut c = Raw::from_stream(connect_from("127.0.0.7", front.addr));
    c.send(GET);
    assert_eq!(c.response().status, 200);
    let seen = origin.last();
    // The back hopgate writes X-Forwarded-For from its own client (it replaces what came): the front's header.
    assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.7"], "{}", seen.head);
    assert_eq!(all(&seen, "forwarded")[0].split(';').next(), Some("for=127.0.0.7"), "{}", seen.head);
    assert_eq!(all(&seen, "via").len(), 2, "both hops: {}", seen.head);
}

/// nginx, a PROXY-aware server that is not hopgate, reads what `send_proxy_protocol` writes (`listen ...
/// proxy_protocol`, `$proxy_protocol_addr`), on plain and TLS upstream connections (the header before the
/// ClientHello).
#[test]
fn nginx_reads_the_header_hopgate_sends() {
    require("nginx", "nginx");
    let pki = Pki::new();
    let pair = pki.leaf("nginx", KeyType::EcdsaP256, &["localhost"]);
    let nginx = Nginx::start(pair.cert(), pair.key());
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\npath = \"/v1\"\nto = \"http://127.0.0.1:{plain}\"\nsend_proxy_protocol = \"v1\"\n\
         [[listener.route]]\npath = \"/v2\"\nto = \"http://127.0.0.1:{plain}\"\nsend_proxy_protocol = \"v2\"\n\
         [[listener.route]]\npath = \"/tls\"\nto = \"https://localhost:{tls}\"\nca = \"{ca}\"\nsend_proxy_protocol = \"v2\"\n",
        plain = nginx.plain,
        tls = nginx.tls,
        ca = pki.ca.cert(),
    ));
    for path in ["/v1/a", "/v2/a", "/tls/a"] {
        let mut s = connect_from("127.0.0.5", hg.addr);
        let port = s.local_addr().unwrap().port();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let r = Raw::from_stream(s).response();
        assert_eq!(r.status, 200, "{path}: {}{}", r.head, r.text());
        assert_eq!(r.text(), format!("proxy_protocol_addr=127.0.0.5 port={port} remote_addr=127.0.0.1\n"), "{path}");
    }
}

/// nginx in the foreground on two ports it was told (plain and TLS, both `proxy_protocol`), answering with the
/// address the header named.
struct Nginx {
    child: Child,
    plain: u16,
    tls: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(cert: &str, key: &str) -> Nginx {
        support::start_on_a_free_port("nginx", |plain| {
            let tls = plain + 1;
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
                 server {{\n  listen 127.0.0.1:{plain} proxy_protocol;\n  listen 127.0.0.1:{tls} ssl proxy_protocol;\n\
                 ssl_certificate {cert};\n  ssl_certificate_key {key};\n\
                 location / {{ default_type text/plain; return 200 \"proxy_protocol_addr=$proxy_protocol_addr \
                 port=$proxy_protocol_port remote_addr=$remote_addr\\n\"; }}\n }}\n}}\n"
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
            let mut child = Command::new("nginx")
                .args(["-c", &format!("{d}/nginx.conf"), "-p", &d.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("nginx");
            let mut exited = None;
            let up = wait_until(Duration::from_secs(20), || {
                exited = child.try_wait().ok().flatten();
                exited.is_some() || [plain, tls].iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            });
            if exited.is_some() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                let err = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
                if format!("{log}{err}").contains("in use") {
                    return support::PortTry::InUse;
                }
                panic!("nginx exited: {log}{err}");
            }
            assert!(up, "nginx did not listen on {plain} and {tls}");
            support::PortTry::Started(Nginx { child, plain, tls, _dir: dir })
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
