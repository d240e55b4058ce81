//! CONNECT over HTTP/2 on an `https://` proxy listener (RFC 9113 §8.5, issue 17): many tunnels on one connection
//! with one stalled (per-stream flow control), a target's reset as RST_STREAM(CONNECT_ERROR), the proxy's rules
//! as statuses on the stream, and absolute-form requests (`:scheme`/`:authority` of the target) relayed as over
//! HTTP/1.1. The real binary; Python's `h2` (Debian package python3-h2) as the client, scripts in tests/h2py/.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use support::origin::{Origin, echo_server, raw};
use support::tls::{KeyType, Pair, Pki};
use support::{Hopgate, repo};

const PYTHON: &str = "/usr/bin/python3";

fn require_h2() {
    assert!(
        Path::new(PYTHON).exists()
            && Command::new(PYTHON).args(["-c", "import h2"]).status().is_ok_and(|s| s.success()),
        "python3's h2 is missing: install the Debian package python3-h2 (.ci/run does)"
    );
}

/// An `https://` forward proxy (certificate for proxy.test) that may reach loopback, with `proxy_keys` in its
/// `[listener.proxy]` and `top` above the listener; the access log on stdout.
fn h2_proxy(pki: &Pki, top: &str, proxy_keys: &str) -> (Hopgate, Pair) {
    let pair = pki.leaf("proxy", KeyType::EcdsaP256, &["proxy.test"]);
    let hg = Hopgate::start_config(&format!(
        "{top}\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\nvia_name = \"hg.test\"\n\
         [[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n{proxy_keys}\n",
        pair.cert(),
        pair.key(),
    ));
    (hg, pair)
}

fn script(name: &str) -> String {
    repo().join("tests/h2py").join(name).display().to_string()
}

fn python(name: &str, args: &[String]) -> Output {
    Command::new("timeout").args(["90", PYTHON, &script(name)]).args(args).output().expect("run python3")
}

fn lines(out: &Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(str::to_string).collect()
}

/// 100 CONNECT streams on one connection: the first to a target that never reads, fed until its window is used
/// up; the other 99 each move 10 MiB to a target that counts and answers. A stalled tunnel holds its own stream's
/// window, never the connection's: the others finish, with exact counts on both sides.
#[test]
fn one_stalled_stream_does_not_stall_99_others() {
    require_h2();
    const SIZE: usize = 10 * 1024 * 1024;
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let h = held.clone();
    let stall = raw(move |s| h.lock().unwrap().push(s));
    let counts: Arc<Mutex<Vec<usize>>> = Arc::default();
    let c = counts.clone();
    let sink = raw(move |mut s| {
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        c.lock().unwrap().push(total);
        let _ = s.write_all(format!("got {total}\n").as_bytes());
    });
    let pki = Pki::new();
    let ports = format!("connect_ports = [{}, {}]\nmax_tunnels = 200", stall.port(), sink.port());
    let (hg, _pair) = h2_proxy(&pki, "", &ports);
    let out = python(
        "connect_many.py",
        &[
            hg.addr.port().to_string(),
            pki.ca.cert().to_string(),
            stall.to_string(),
            sink.to_string(),
            "100".into(),
            SIZE.to_string(),
        ],
    );
    let got = lines(&out);
    assert_eq!(got.len(), 100, "{got:?}");
    for line in &got[..99] {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[..1], ["ok"], "{line}");
        assert_eq!(words[2..], ["200", "got", &SIZE.to_string()], "{line}");
    }
    assert_eq!(got[99], "stalled 1 200 open");
    let counts = counts.lock().unwrap();
    assert_eq!(counts.len(), 99);
    assert!(counts.iter().all(|&n| n == SIZE), "{counts:?}");
    assert_eq!(held.lock().unwrap().len(), 1);
    // The access log says the tunnels came over HTTP/2.
    assert!(hg.stdout_line("CONNECT 127.0.0.1:").contains("HTTP/2.0"), "{}", hg.stdout_text());
}

/// RFC 9113 §8.5: a TCP reset from the target is a stream error of type CONNECT_ERROR (0xa) on the tunnel's
/// stream; a target that closes normally (the echo, after the client's END_STREAM) ends the stream normally, and
/// the connection's other streams carry on.
#[test]
fn a_targets_reset_is_connect_error() {
    require_h2();
    let resets = raw(|mut s| {
        let mut ping = [0u8; 4];
        let _ = s.read_exact(&mut ping);
        // Reset (linger 0 sends RST on close) once the ping is in.
        let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
    });
    let echo = echo_server();
    let pki = Pki::new();
    let (hg, _pair) = h2_proxy(&pki, "", &format!("connect_ports = [{}, {}]", echo.port(), resets.port()));
    let out = python(
        "requests.py",
        &[
            hg.addr.port().to_string(),
            pki.ca.cert().to_string(),
            format!("CONNECT {echo} -"),
            format!("CONNECT {resets} -"),
            format!("CONNECT {echo} -"),
        ],
    );
    let got = lines(&out);
    assert_eq!(got, ["200 ping", "200 reset 10", "200 ping"], "the connection carries on after the reset");
}

/// RFC 9113 §8.5 the other way: a client that resets its CONNECT stream (CANCEL) gets the target's TCP connection
/// reset, not closed as if the client had finished.
#[test]
fn a_client_reset_resets_the_target() {
    require_h2();
    let ends: Arc<Mutex<Vec<String>>> = Arc::default();
    let e = ends.clone();
    let target = raw(move |mut s| {
        let mut buf = [0u8; 64];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break "eof".to_string(),
                Ok(n) => {
                    let _ = s.write_all(&buf[..n]);
                }
                Err(e) => break format!("{:?}", e.kind()),
            }
        };
        e.lock().unwrap().push(end);
    });
    let pki = Pki::new();
    let (hg, _pair) = h2_proxy(&pki, "access_log = \"off\"", &format!("connect_ports = [{}]", target.port()));
    let args = [hg.addr.port().to_string(), pki.ca.cert().to_string(), format!("CONNECT {target} -;cancel")];
    assert_eq!(lines(&python("requests.py", &args)), ["200 ping cancelled"]);
    let args = [hg.addr.port().to_string(), pki.ca.cert().to_string(), format!("CONNECT {target} -")];
    assert_eq!(lines(&python("requests.py", &args)), ["200 ping"]);
    assert!(support::wait_until(std::time::Duration::from_secs(10), || ends.lock().unwrap().len() == 2));
    assert_eq!(*ends.lock().unwrap(), ["ConnectionReset", "eof"]);
}

/// The proxy's rules hold on HTTP/2 CONNECT streams, each answered with its status on the stream: a port not
/// listed (403), a link-local target (403), a closed port (502), proxy authentication (407 with its challenge, then
/// 200), and `max_tunnels` (503 while the one allowed is open on another stream).
#[test]
fn the_proxy_rules_answer_on_the_stream() {
    require_h2();
    let echo = echo_server();
    let closed = support::ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    // alice:secret in {SHA}.
    std::fs::write(&users, "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
    let pki = Pki::new();
    let port = echo.port();
    let (hg, _pair) = h2_proxy(
        &pki,
        "",
        &format!("connect_ports = [{port}, {}]\nusers = \"{}\"\nmax_tunnels = 1", closed.port(), users.display()),
    );
    let auth = ";proxy-authorization=Basic YWxpY2U6c2VjcmV0";
    let out = python(
        "requests.py",
        &[
            hg.addr.port().to_string(),
            pki.ca.cert().to_string(),
            format!("CONNECT {echo} -"),
            format!("CONNECT 127.0.0.1:1 -{auth}"),
            format!("CONNECT 169.254.1.1:{port} -{auth}"),
            format!("CONNECT 127.0.0.1:{} -{auth}", closed.port()),
            format!("CONNECT {echo} -{auth};hold"),
            format!("CONNECT {echo} -{auth}"),
        ],
    );
    let got = lines(&out);
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got[0].starts_with("407 "), "{got:?}");
    assert!(got[1].starts_with("403 ") && got[1].contains("port 1"), "{got:?}");
    assert!(got[2].starts_with("403 "), "{got:?}");
    assert!(got[3].starts_with("502 "), "{got:?}");
    assert_eq!(got[4], "200 ping held");
    assert!(got[5].starts_with("503 ") && got[5].contains("too many tunnels open (limit 1)"), "{got:?}");
}

/// Absolute-form over HTTP/2: `:scheme http` with the target's `:authority` to the forward proxy is relayed as
/// `GET http://target/...` over HTTP/1.1 is, with this hop's Via.
#[test]
fn absolute_form_over_http2_is_relayed() {
    require_h2();
    let origin = Origin::fixed("from origin");
    let pki = Pki::new();
    let (hg, _pair) = h2_proxy(&pki, "access_log = \"off\"", "");
    let out = python(
        "requests.py",
        &[
            hg.addr.port().to_string(),
            pki.ca.cert().to_string(),
            format!("GET {} /a?b=c", origin.addr),
            format!("GET {} /second", origin.addr),
        ],
    );
    assert_eq!(lines(&out), ["200 from origin", "200 from origin"]);
    assert_eq!(origin.count(), 2);
    let seen = origin.last();
    assert_eq!(seen.target, "/second");
    assert_eq!(seen.header("host"), Some(origin.addr.to_string().as_str()));
    assert_eq!(seen.header("via"), Some("2 hg.test"));
}
