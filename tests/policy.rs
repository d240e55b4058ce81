//! The forward proxy's policy (issue 18): `allow_domains` / `deny_domains` on absolute-form targets, CONNECT
//! authorities and ftp:// URLs; per-user rules with a users file and an Apache groups file; 429 past
//! `max_requests_per_second`; transfers slowed to `max_bytes_per_second`. Each test runs in network and mount
//! namespaces of its own (support::netns), where an /etc/hosts of its own names the loopback origins.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::netns::{hosts, isolated};
use support::origin::{Next, Origin, echo_server, raw, respond};
use support::peers::htpasswd;
use support::{Hopgate, Raw, connect_request, curl_full, wait_until};

const NAMES: &str = "www.allowed.test allowed.test x.bad.allowed.test www.blocked.test other.test";

/// `curl -x PROXY URL` (with `-U USER:PASS` when given): status and body.
fn via(hg: &Hopgate, url: &str, user: Option<&str>) -> (u16, String) {
    let proxy = hg.url();
    let mut args = vec!["-x", proxy.as_str()];
    if let Some(u) = user {
        args.extend(["--proxy-user", u]);
    }
    args.push(url);
    let r = curl_full(&args);
    (r.code, r.text())
}

fn page(status: &str, reason: &str) -> String {
    format!("hopgate: {status}\n{reason}\n")
}

#[test]
fn domain_lists_judge_every_kind_of_target() {
    if !isolated("domain_lists_judge_every_kind_of_target") {
        return;
    }
    let _hosts = hosts(&[("127.0.0.1", NAMES)]);
    let origin = Origin::fixed("hello");
    let echo = echo_server();
    let (o, e) = (origin.addr.port(), echo.port());
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         connect_ports = [{e}]\nallow_domains = [\"*.allowed.test\", \"other.test\"]\n\
         deny_domains = [\"www.blocked.test\", \"*.bad.allowed.test\"]\n"
    ));
    assert_eq!(via(&hg, &format!("http://www.allowed.test:{o}/"), None), (200, "hello".into()));
    assert_eq!(via(&hg, &format!("http://WWW.Allowed.Test:{o}/"), None), (200, "hello".into()), "lowercased");
    assert_eq!(
        via(&hg, &format!("http://www.Blocked.test.:{o}/"), None),
        (
            403,
            page(
                "403 Forbidden",
                "www.blocked.test is refused by deny_domains \"www.blocked.test\" of [listener.proxy]"
            )
        ),
        "lowercase, without the trailing dot"
    );
    assert_eq!(via(&hg, &format!("http://other.test:{o}/"), None), (200, "hello".into()));
    // `*.allowed.test` is for names under allowed.test, not allowed.test itself.
    let allow = "(\"*.allowed.test\", \"other.test\")";
    assert_eq!(
        via(&hg, &format!("http://allowed.test:{o}/"), None),
        (
            403,
            page(
                "403 Forbidden",
                &format!("allowed.test matches no allow_domains pattern {allow} of [listener.proxy]")
            )
        )
    );
    // Deny wins over allow.
    assert_eq!(
        via(&hg, &format!("http://x.bad.allowed.test:{o}/"), None),
        (
            403,
            page(
                "403 Forbidden",
                "x.bad.allowed.test is refused by deny_domains \"*.bad.allowed.test\" of [listener.proxy]"
            )
        )
    );
    // An address is judged as what it is: no name of the allow list.
    assert_eq!(via(&hg, &format!("http://127.0.0.1:{o}/"), None).0, 403);
    // ftp:// targets are judged before anything is dialled.
    assert_eq!(
        via(&hg, "ftp://www.blocked.test/file", None),
        (
            403,
            page(
                "403 Forbidden",
                "www.blocked.test is refused by deny_domains \"www.blocked.test\" of [listener.proxy]"
            )
        )
    );
    // CONNECT authorities.
    let (_, head) = connect_request(hg.addr, format!("www.blocked.test:{e}"), "");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (mut tunnel, head) = connect_request(hg.addr, format!("www.allowed.test:{e}"), "");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    tunnel.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    tunnel.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(origin.count(), 3, "refused requests never reached the origin");
    let line = hg.wait_stderr_line(&["403", "x.bad.allowed.test is refused by deny_domains"]);
    assert!(line.contains("reason=target_forbidden"), "{line}");
}

/// A users file with `{SHA}` entries (Apache's htpasswd -s), password `USER-pw`.
fn users(dir: &Path, names: &[&str]) -> PathBuf {
    let file = dir.join("users");
    for n in names {
        htpasswd(&file, &["-s"], n, &format!("{n}-pw"));
    }
    file
}

#[test]
fn the_first_matching_rule_replaces_the_listeners_lists() {
    if !isolated("the_first_matching_rule_replaces_the_listeners_lists") {
        return;
    }
    let _hosts = hosts(&[("127.0.0.1", NAMES)]);
    let origin = Origin::fixed("hello");
    let echo = echo_server();
    let (o, e) = (origin.addr.port(), echo.port());
    let dir = tempfile::tempdir().unwrap();
    let users = users(dir.path(), &["alice", "bob", "carol", "dave"]);
    let groups = dir.path().join("groups");
    std::fs::write(&groups, "# Apache AuthGroupFile\nstaff: bob\nstaff: carol\nothers: dave\n").unwrap();
    let config = format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         users = \"{}\"\ngroups = \"{}\"\ndeny_domains = [\"other.test\"]\nconnect_ports = [{e}]\n\
         [[listener.proxy.rule]]\nusers = [\"alice\"]\nallow_domains = [\"*.allowed.test\"]\n\
         [[listener.proxy.rule]]\ngroups = [\"staff\"]\ndeny_domains = [\"*.allowed.test\"]\nconnect_ports = [{e}]\n",
        users.display(),
        groups.display()
    );
    let hg = Hopgate::start_config(&config);
    let toml = hg.dir.as_ref().unwrap().path().join("hopgate.toml").display().to_string();
    let www = format!("http://www.allowed.test:{o}/");
    let other = format!("http://other.test:{o}/");
    // alice: rule 1's allow list, and no CONNECT port but the default 443.
    assert_eq!(via(&hg, &www, Some("alice:alice-pw")), (200, "hello".into()));
    assert_eq!(
        via(&hg, &other, Some("alice:alice-pw")),
        (
            403,
            page(
                "403 Forbidden",
                &format!(
                    "other.test matches no allow_domains pattern (\"*.allowed.test\") of [[listener.proxy.rule]] 1 ({toml}:9)"
                )
            )
        )
    );
    assert_eq!(via(&hg, &format!("http://allowed.test:{o}/"), Some("alice:alice-pw")).0, 403, "not the suffix itself");
    let auth = |u: &str| {
        let b64 = base64(&format!("{u}:{u}-pw"));
        format!("Proxy-Authorization: Basic {b64}\r\n")
    };
    let (_, head) = connect_request(hg.addr, format!("www.allowed.test:{e}"), &auth("alice"));
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let mut r = Raw::connect(hg.addr);
    r.send(format!("CONNECT www.allowed.test:{e} HTTP/1.1\r\nHost: x\r\n{}\r\n", auth("alice")));
    let resp = r.response_to("CONNECT");
    assert_eq!(
        resp.text(),
        page(
            "403 Forbidden",
            &format!("CONNECT to port {e} is not allowed (allowed: 443) by [[listener.proxy.rule]] 1 ({toml}:9)")
        )
    );
    // bob and carol (group staff, on two lines of the groups file): rule 2 replaces the listener's deny list.
    for who in ["bob", "carol"] {
        let creds = format!("{who}:{who}-pw");
        assert_eq!(via(&hg, &other, Some(&creds)), (200, "hello".into()), "{who}");
        assert_eq!(
            via(&hg, &www, Some(&creds)),
            (
                403,
                page(
                    "403 Forbidden",
                    &format!(
                        "www.allowed.test is refused by deny_domains \"*.allowed.test\" of [[listener.proxy.rule]] 2 ({toml}:12)"
                    )
                )
            ),
            "{who}"
        );
        let (_, head) = connect_request(hg.addr, format!("other.test:{e}"), &auth(who));
        assert!(head.starts_with("HTTP/1.1 200 "), "{who}: {head}");
    }
    // dave matches no rule: the listener's lists.
    assert_eq!(via(&hg, &www, Some("dave:dave-pw")), (200, "hello".into()));
    assert_eq!(
        via(&hg, &other, Some("dave:dave-pw")),
        (403, page("403 Forbidden", "other.test is refused by deny_domains \"other.test\" of [listener.proxy]"))
    );
    // Credentials come first: without them 407, whatever the target.
    assert_eq!(via(&hg, &other, None).0, 407);
}

fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive connection sending `n` requests for `url` through the proxy; the statuses, and the first 429.
fn burst(proxy: SocketAddr, url: &str, extra: &str, n: usize) -> (Vec<u16>, Option<support::Resp>) {
    let mut c = Raw::connect(proxy);
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..n {
        c.send(format!("GET {url} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"));
        let r = c.response_to("GET");
        if r.status == 429 && refused.is_none() {
            refused = Some(r.clone());
        }
        statuses.push(r.status);
    }
    (statuses, refused)
}

/// A connection from `source` (a loopback address of its own).
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source.parse().unwrap(), 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

#[test]
fn past_the_request_rate_429_with_retry_after() {
    if !isolated("past_the_request_rate_429_with_retry_after") {
        return;
    }
    let _hosts = hosts(&[("127.0.0.1", NAMES)]);
    let origin = Origin::fixed("hello");
    let url = format!("http://www.allowed.test:{}/", origin.addr.port());
    let hg = Hopgate::start_config(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         max_requests_per_second = 5\n",
    );
    let start = Instant::now();
    let (statuses, refused) = burst(hg.addr, &url, "", 30);
    let took = start.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!(statuses.iter().all(|&s| s == 200 || s == 429), "{statuses:?}");
    assert_eq!(&statuses[..5], &[200; 5], "the bucket starts with one second of the rate");
    // At most the first second's five, plus what refilled meanwhile.
    assert!(ok <= 5 + (took * 5.0).ceil() as usize, "{ok} passed in {took:.2} s: {statuses:?}");
    let refused = refused.expect("a 429 past the rate");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.text(),
        page(
            "429 Too Many Requests",
            "more than 5 requests per second from 127.0.0.1 (max_requests_per_second of [listener.proxy]): retry in 1 s"
        )
    );
    assert_eq!(origin.count(), ok, "a refused request never reaches the origin");
    // Past Retry-After, requests pass again.
    let again = wait_until(Duration::from_secs(3), || burst(hg.addr, &url, "", 1).0 == [200]);
    assert!(again, "a request passes again after Retry-After");
    hg.wait_stderr_line(&["429", "reason=rate_limited"]);
}

#[test]
fn a_rules_request_rate_counts_its_user_from_every_address() {
    if !isolated("a_rules_request_rate_counts_its_user_from_every_address") {
        return;
    }
    sh_addr("127.0.0.2");
    let origin = Origin::fixed("hello");
    let url = origin.url("/");
    let dir = tempfile::tempdir().unwrap();
    let users = users(dir.path(), &["alice", "bob"]);
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         users = \"{}\"\nmax_requests_per_second = 100\n[[listener.proxy.rule]]\nusers = [\"alice\"]\n\
         max_requests_per_second = 1\n",
        users.display()
    ));
    let toml = hg.dir.as_ref().unwrap().path().join("hopgate.toml").display().to_string();
    let alice = format!("Proxy-Authorization: Basic {}\r\n", base64("alice:alice-pw"));
    let bob = format!("Proxy-Authorization: Basic {}\r\n", base64("bob:bob-pw"));
    let (statuses, refused) = burst(hg.addr, &url, &alice, 2);
    assert_eq!(statuses, [200, 429]);
    assert_eq!(
        refused.unwrap().text(),
        page(
            "429 Too Many Requests",
            &format!(
                "more than 1 request per second of user alice (max_requests_per_second of [[listener.proxy.rule]] 1 ({toml}:7)): retry in 1 s"
            )
        )
    );
    assert_eq!(burst(hg.addr, &url, &bob, 3).0, [200, 200, 200], "bob has a bucket of his own");
    // alice from another address: her user's bucket is still empty.
    let mut from_2 = Raw::from_stream(connect_from("127.0.0.2", hg.addr));
    from_2.send(format!("GET {url} HTTP/1.1\r\nHost: x\r\n{alice}\r\n"));
    assert_eq!(from_2.response_to("GET").status, 429);
}

fn sh_addr(addr: &str) {
    support::netns::sh(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
}

/// Reads to the end, returning the bytes and the seconds from `start` to the last one.
fn read_all_timed(s: &mut impl Read, start: Instant) -> (Vec<u8>, f64) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut last = start;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                last = Instant::now();
            }
            Err(e) => panic!("read: {e} after {} bytes", all.len()),
        }
    }
    (all, last.duration_since(start).as_secs_f64())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_bandwidth_limit_slows_transfers_each_way_to_its_rate() {
    if !isolated("a_bandwidth_limit_slows_transfers_each_way_to_its_rate") {
        return;
    }
    const RATE: f64 = 256_000.0;
    const RELAYED: usize = 1_024_000;
    const TUNNELLED: usize = 512_000;
    const UPLOADED: usize = 512_000;
    let body = pattern(RELAYED);
    let origin = Origin::start(move |_, s| {
        respond(s, "HTTP/1.1 200 OK", &[], &body);
        Next::Close
    });
    let sink = Origin::start(|seen, s| {
        respond(s, "HTTP/1.1 200 OK", &[], seen.body.len().to_string().as_bytes());
        Next::Close
    });
    let source = raw(|mut s| {
        let _ = s.write_all(&pattern(TUNNELLED));
    });
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         connect_ports = [{}]\nmax_bytes_per_second = {RATE}\n",
        source.port()
    ));
    // Relayed: an absolute-form GET, the response read to its end.
    let mut c = TcpStream::connect(hg.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    c.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", origin.url("/")).as_bytes())
        .unwrap();
    let (got, secs) = read_all_timed(&mut c, start);
    let head_end = support::find(&got, b"\r\n\r\n").expect("a response head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&got[..head_end]));
    assert!(got[head_end..] == pattern(RELAYED), "the whole body, slowed but not cut");
    let relayed = got.len() as f64 / secs;
    // Tunnelled: CONNECT, then the source's bytes to EOF.
    let start = Instant::now();
    let (mut tunnel, head) = connect_request(hg.addr, source, "");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let (got, secs) = read_all_timed(&mut tunnel, start);
    assert!(got == pattern(TUNNELLED), "the whole stream: {} bytes", got.len());
    let tunnelled = (got.len() + head.len()) as f64 / secs;
    // Uploaded: a request body read from the client at the rate. From another address: 127.0.0.1's bucket for
    // this direction has been unused for seconds and holds one second of the rate, which would pass at once.
    sh_addr("127.0.0.2");
    let mut c = connect_from("127.0.0.2", hg.addr);
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOADED}\r\nConnection: close\r\n\r\n",
        sink.url("/")
    );
    let start = Instant::now();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&pattern(UPLOADED)).unwrap();
    let (got, secs) = read_all_timed(&mut c, start);
    assert!(got.ends_with(format!("\r\n\r\n{UPLOADED}").as_bytes()), "{}", String::from_utf8_lossy(&got));
    assert!(sink.last().body == pattern(UPLOADED), "the whole body reached the origin");
    let uploaded = (UPLOADED + head.len()) as f64 / secs;
    println!(
        "max_bytes_per_second = {RATE}: relayed {RELAYED} bytes at {relayed:.0} B/s ({:+.1}%), tunnelled {TUNNELLED} at \
         {tunnelled:.0} B/s ({:+.1}%), uploaded {UPLOADED} at {uploaded:.0} B/s ({:+.1}%)",
        (relayed / RATE - 1.0) * 100.0,
        (tunnelled / RATE - 1.0) * 100.0,
        (uploaded / RATE - 1.0) * 100.0
    );
    for (what, rate) in [("relayed", relayed), ("tunnelled", tunnelled), ("uploaded", uploaded)] {
        assert!((rate / RATE - 1.0).abs() < 0.10, "{what}: {rate:.0} B/s is not within 10% of {RATE}");
    }
}
