//! The relay (forward proxy) against origins written here, with curl and raw sockets.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::origin::{Next, Origin, respond};
use support::{ClosedPort, Hopgate, Raw, curl, exchange, refused, wait_until};

fn proxy() -> Hopgate {
    Hopgate::proxy(&[])
}

#[test]
fn curl_through_the_proxy() {
    let origin = Origin::fixed("hello from origin\n");
    let hg = proxy();
    let (code, body, err) = curl(&["-x", &hg.url(), &origin.url("/a/b?c=d")]);
    assert_eq!(code, 200, "{err}");
    assert_eq!(body, b"hello from origin\n");
    let seen = origin.last();
    assert_eq!(seen.target, "/a/b?c=d", "origin-form upstream");
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.header("host"), Some(origin.addr.to_string().as_str()));
    assert!(seen.header("via").is_some_and(|v| v.starts_with("1.1 ")), "{}", seen.head);
    assert!(!seen.has("proxy-connection"), "{}", seen.head);
}

#[test]
fn hop_by_hop_fields_are_removed_both_ways() {
    let origin = Origin::start(|_, s| {
        respond(
            s,
            "HTTP/1.1 200 OK",
            &[
                ("Connection", "X-Origin-Secret"),
                ("X-Origin-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("X-Kept", "yes"),
            ],
            b"ok",
        );
        Next::KeepAlive
    });
    let hg = proxy();
    let o = origin.addr;
    let resp = exchange(
        hg.addr,
        &format!(
            "GET http://{o}/ HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
             Proxy-Authorization: Basic dTpw\r\nUpgrade: h2c\r\nX-End-To-End: 1\r\n\r\n"
        ),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    let seen = origin.last();
    for gone in ["x-secret", "keep-alive", "proxy-connection", "te", "proxy-authorization", "upgrade", "connection"] {
        assert!(!seen.has(gone), "{gone} reached the origin:\n{}", seen.head);
    }
    assert_eq!(seen.header("x-end-to-end"), Some("1"));
    assert_eq!(seen.header("host"), Some(o.to_string().as_str()), "Host comes from the absolute URI");
    assert!(resp.header("x-origin-secret").is_none(), "{}", resp.head);
    assert!(resp.header("keep-alive").is_none(), "{}", resp.head);
    assert_eq!(resp.header("x-kept"), Some("yes"));
    assert!(resp.header("via").is_some());
}

/// The book's dumb-relay hang: a proxy that forwards `Connection: Keep-Alive` to an HTTP/1.0 origin that
/// honours it waits forever for the origin to close. hopgate frames the message itself.
#[test]
fn keep_alive_from_an_http10_client_does_not_hang() {
    let origin = Origin::start(|seen, s| {
        // An HTTP/1.0-style origin: keep-alive only when asked, and then it never closes.
        let ka = seen.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("keep-alive"));
        let body = format!("request {}", seen.target);
        if ka || seen.version == "HTTP/1.1" {
            respond(s, "HTTP/1.0 200 OK", &[("Connection", "Keep-Alive")], body.as_bytes());
            Next::KeepAlive
        } else {
            let _ = s.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{body}").as_bytes());
            Next::Close
        }
    });
    let hg = proxy();
    let o = origin.addr;
    let mut c = Raw::connect(hg.addr);
    let started = Instant::now();
    c.send(format!("GET http://{o}/one HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    let r1 = c.response();
    assert_eq!(r1.status, 200);
    assert_eq!(r1.body, b"request /one");
    assert!(started.elapsed() < Duration::from_secs(5), "the response came at once");
    assert!(origin.last().header("connection").is_none(), "Connection: Keep-Alive was not forwarded");
    // The client asked for keep-alive and gets it: the next request works on the same connection.
    assert!(r1.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")), "{}", r1.head);
    c.send(format!("GET http://{o}/two HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    let r2 = c.response();
    assert_eq!(r2.body, b"request /two");
}

#[test]
fn http10_client_gets_close_delimited_not_chunked() {
    let origin = Origin::start(|_, s| {
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        Next::KeepAlive
    });
    let hg = proxy();
    let mut c = Raw::connect(hg.addr);
    c.send(format!("GET http://{}/ HTTP/1.0\r\n\r\n", origin.addr));
    let all = c.read_to_close();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello world"), "{text}");
}

#[test]
fn close_delimited_origin_response_is_reframed_for_http11() {
    let origin = Origin::start(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
        Next::Close
    });
    let hg = proxy();
    let mut c = Raw::connect(hg.addr);
    c.send(format!("GET http://{}/ HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr));
    let r = c.response();
    assert_eq!(r.body, b"until the end");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{}", r.head);
    // The client connection is still usable.
    c.send(format!("GET http://{}/ HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr));
    assert_eq!(c.response().body, b"until the end");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(|seen, s| {
        if seen.target == "/slow" {
            std::thread::sleep(Duration::from_millis(300));
        }
        respond(s, "HTTP/1.1 200 OK", &[], seen.target.as_bytes());
        Next::KeepAlive
    });
    let hg = proxy();
    let o = origin.addr;
    let mut c = Raw::connect(hg.addr);
    c.send(format!(
        "GET http://{o}/slow HTTP/1.1\r\nHost: x\r\n\r\nGET http://{o}/fast HTTP/1.1\r\nHost: x\r\n\r\n\
         POST http://{o}/post HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    ));
    assert_eq!(c.response().body, b"/slow");
    assert_eq!(c.response().body, b"/fast");
    assert_eq!(c.response().body, b"/post");
}

#[test]
fn expect_100_continue() {
    let origin = Origin::echo();
    let hg = proxy();
    let mut c = Raw::connect(hg.addr);
    c.send(format!(
        "PUT http://{}/up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        origin.addr
    ));
    let interim = c.response();
    assert_eq!(interim.status, 100, "{}", interim.head);
    c.send("hello world");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
}

#[test]
fn max_forwards_on_trace_and_options() {
    let origin = Origin::start(|seen, s| {
        respond(s, "HTTP/1.1 200 OK", &[], seen.header("max-forwards").unwrap_or("none").as_bytes());
        Next::KeepAlive
    });
    let hg = proxy();
    let o = origin.addr;
    let r = exchange(
        hg.addr,
        &format!("TRACE http://{o}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nX-Mark: 7\r\nCookie: secret\r\n\r\n"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("message/http"));
    let echo = r.text();
    assert!(echo.starts_with(&format!("TRACE http://{o}/ HTTP/1.1\r\n")), "{echo}");
    assert!(echo.contains("x-mark: 7"), "{echo}");
    assert!(!echo.contains("secret"), "cookies are not reflected: {echo}");
    assert_eq!(origin.count(), 0, "Max-Forwards: 0 is answered by the proxy");

    let r = exchange(hg.addr, &format!("OPTIONS http://{o}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n"));
    assert_eq!(r.status, 200);
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "{}", r.head);
    assert_eq!(origin.count(), 0);

    let r = exchange(hg.addr, &format!("OPTIONS http://{o}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 3\r\n\r\n"));
    assert_eq!(r.body, b"2", "decremented on the way");
    let r = exchange(hg.addr, &format!("GET http://{o}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n"));
    assert_eq!(r.body, b"0", "GET ignores Max-Forwards");
}

#[test]
fn loops_get_508() {
    let hg = proxy();
    let r = exchange(hg.addr, &format!("GET http://{}/ HTTP/1.1\r\nHost: x\r\n\r\n", hg.addr));
    assert_eq!(r.status, 508, "{}", r.text());
    assert!(r.text().starts_with("hopgate: 508"), "{}", r.text());

    // A request that already carries this proxy's Via name came round in a loop.
    let origin = Origin::fixed("x");
    let first = exchange(hg.addr, &format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/")));
    let via = first.header("via").expect("via").to_string();
    let name = via.split_whitespace().nth(1).unwrap();
    let r = exchange(
        hg.addr,
        &format!("GET {} HTTP/1.1\r\nHost: x\r\nVia: 1.1 other, 1.1 {name}\r\n\r\n", origin.url("/")),
    );
    assert_eq!(r.status, 508);
}

#[test]
fn target_policy_refuses_loopback_unless_allowed() {
    let origin = Origin::fixed("secret admin page");
    let strict = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0"]);
    let (code, body, _) = curl(&["-x", &strict.url(), &origin.url("/")]);
    assert_eq!(code, 403);
    assert!(String::from_utf8_lossy(&body).contains("target policy"), "{}", String::from_utf8_lossy(&body));
    let (code, _, _) = curl(&["-x", &strict.url(), &format!("http://localhost:{}/", origin.addr.port())]);
    assert_eq!(code, 403, "names are checked after resolution");
    let (code, _, _) = curl(&["-x", &strict.url(), &format!("http://[::ffff:127.0.0.1]:{}/", origin.addr.port())]);
    assert_eq!(code, 403);
    let (code, _, _) = curl(&["-x", &strict.url(), "http://169.254.169.254/latest/meta-data/"]);
    assert_eq!(code, 403);
    assert_eq!(origin.count(), 0);

    let open = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.1/32"]);
    let (code, body, _) = curl(&["-x", &open.url(), &origin.url("/")]);
    assert_eq!(code, 200);
    assert_eq!(body, b"secret admin page");
}

#[test]
fn upstream_failures() {
    let hg = Hopgate::proxy_config("[timeouts]\nresponse_head_secs = 1\nconnect_secs = 1");
    // Refused: nothing listens there.
    let closed = ClosedPort::new();
    let (code, body, _) = curl(&["-x", &hg.url(), &format!("http://{}/", closed.addr)]);
    assert_eq!(code, 502);
    assert!(String::from_utf8_lossy(&body).contains("refused"), "{}", String::from_utf8_lossy(&body));
    // DNS failure.
    let (code, body, _) = curl(&["-x", &hg.url(), "http://no-such-host.invalid/"]);
    assert_eq!(code, 502);
    assert!(String::from_utf8_lossy(&body).contains("resolve"));
    // Accepts, never answers: response-head timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, _, _) = curl(&["-x", &hg.url(), &format!("http://{}/", silent.local_addr().unwrap())]);
    assert_eq!(code, 504);
    // Resets mid-response.
    let origin = Origin::start(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        Next::Close
    });
    let mut c = Raw::connect(hg.addr);
    c.send(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/")));
    let got = c.read_to_close();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.ends_with("\r\n\r\n"), "the truncated body is not passed off as complete: {text}");
    // An origin that answers garbage.
    let garbage = Origin::start(|_, s| {
        let _ = s.write_all(b"SMTP ready\r\n\r\n");
        Next::Close
    });
    let (code, _, _) = curl(&["-x", &hg.url(), &garbage.url("/")]);
    assert_eq!(code, 502);
    // The proxy still serves everyone else.
    let fine = Origin::fixed("still here");
    let (code, body, _) = curl(&["-x", &hg.url(), &fine.url("/")]);
    assert_eq!((code, body.as_slice()), (200, &b"still here"[..]));
}

#[test]
fn connect_timeout_is_504() {
    // A listener whose backlog is full drops further SYNs: connecting to it times out, on loopback.
    let full = ClosedPort::new();
    let _fill = full.listen_full();
    let hg = Hopgate::proxy_config("[timeouts]\nconnect_secs = 1");
    let started = Instant::now();
    let (code, body, _) = curl(&["-x", &hg.url(), &format!("http://{}/", full.addr)]);
    assert_eq!(code, 504, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn origin_form_to_the_proxy_gets_a_hint() {
    let hg = proxy();
    let r = exchange(hg.addr, "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("absolute form"), "{}", r.text());
    assert!(r.text().contains("curl -x"), "{}", r.text());
}

#[test]
fn upstream_connections_are_pooled() {
    let origin = Origin::fixed("pooled");
    let hg = proxy();
    for _ in 0..5 {
        let (code, _, _) = curl(&["-x", &hg.url(), &origin.url("/")]);
        assert_eq!(code, 200);
    }
    assert_eq!(origin.count(), 5);
    assert_eq!(origin.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one upstream connection reused");
}

/// An origin that serves keep-alive `ok` responses and counts the connections it accepted and those closed by
/// the other side.
fn counting_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    let addr = support::origin::raw(move |mut s| {
        a.fetch_add(1, Ordering::SeqCst);
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while support::find(&buf, b"\r\n\r\n").is_none() {
                match std::io::Read::read(&mut s, &mut chunk) {
                    Ok(0) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => return,
                }
            }
            buf.clear();
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    });
    (addr, accepted, closed)
}

#[test]
fn a_pooled_connection_the_origin_closed_while_idle_is_not_used() {
    // Every response comes with keep-alive, and then the origin closes the connection: it half-closes, and counts
    // the connection as closed once hopgate has closed its side too (it has seen the close and dropped it).
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    // Responses the origin has sent and closed its side after: the next request waits for it, so that the
    // origin's close has reached hopgate when hopgate next takes the connection.
    let shut = Arc::new(AtomicUsize::new(0));
    let sh = shut.clone();
    let addr = support::origin::raw(move |mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while support::find(&head, b"\r\n\r\n").is_none() {
            match std::io::Read::read(&mut s, &mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh");
        let _ = s.shutdown(std::net::Shutdown::Write);
        sh.fetch_add(1, Ordering::SeqCst);
        while matches!(std::io::Read::read(&mut s, &mut chunk), Ok(n) if n > 0) {}
        c.fetch_add(1, Ordering::SeqCst);
    });
    // No task watches an idle upstream connection: hopgate notices the close when it next takes the connection
    // from its pool, closes it, and opens a new one.
    let to = format!("http://{addr}");
    let gateway = Hopgate::gateway(&to, &[]);
    let mut before = 0;
    for (hg, target) in [(proxy(), format!("http://{addr}/")), (gateway, "/".to_string())] {
        for i in 0..3 {
            let r = exchange(hg.addr, &format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
            assert_eq!((r.status, r.body.as_slice()), (200, &b"fresh"[..]), "{}", r.text());
            let sent = wait_until(Duration::from_secs(10), || shut.load(Ordering::SeqCst) > before + i);
            assert!(sent, "the origin closed its side after its response");
            let gone = wait_until(Duration::from_secs(10), || closed.load(Ordering::SeqCst) >= before + i);
            assert!(gone, "hopgate closed the connection the origin closed when it next took it");
        }
        drop(hg);
        before += 3;
        let gone = wait_until(Duration::from_secs(10), || closed.load(Ordering::SeqCst) == before);
        assert!(gone, "the last connection closed with hopgate");
    }
    assert_eq!(closed.load(Ordering::SeqCst), 6, "a new connection for every request");
}

#[test]
fn idle_upstream_connections_expire_after_pool_idle() {
    let (addr, accepted, closed) = counting_origin();
    let hg = Hopgate::proxy_config("[timeouts]\npool_idle_secs = 1");
    let url = format!("http://{addr}/");
    for _ in 0..2 {
        let (code, body, _) = curl(&["-x", &hg.url(), &url]);
        assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused within pool_idle");
    // hopgate closes the idle connection itself, with no request to notice it.
    let gone = wait_until(Duration::from_secs(10), || closed.load(Ordering::SeqCst) == 1);
    assert!(gone, "the idle upstream connection is closed after pool_idle");
    let (code, _, _) = curl(&["-x", &hg.url(), &url]);
    assert_eq!(code, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new upstream connection after pool_idle");
}

#[test]
fn a_request_that_reached_the_origin_is_not_retried() {
    // Every connection answers its first request; the second is read and then the connection is closed.
    let per_conn = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<usize, usize>::new()));
    let origin = Origin::start(move |seen, s| {
        let n = {
            let mut m = per_conn.lock().unwrap();
            let n = m.entry(seen.conn).or_default();
            *n += 1;
            *n
        };
        if n > 1 {
            return Next::Close;
        }
        respond(s, "HTTP/1.1 200 OK", &[], b"first");
        Next::KeepAlive
    });
    let hg = proxy();
    let (code, _, _) = curl(&["-x", &hg.url(), &origin.url("/1")]);
    assert_eq!(code, 200);
    let (code, _, _) = curl(&["-x", &hg.url(), &origin.url("/2")]);
    assert_eq!(code, 502, "the origin closed with the request read: not sent again");
    assert_eq!(origin.count(), 2);
    let (code, _, _) = curl(&["-x", &hg.url(), &origin.url("/3")]);
    assert_eq!(code, 200);
    assert_eq!(origin.count(), 3);
}

#[test]
fn access_log_line_per_request() {
    let origin = Origin::fixed("0123456789");
    let hg = proxy();
    let (code, _, _) = curl(&["-x", &hg.url(), &origin.url("/logged")]);
    assert_eq!(code, 200);
    let line = hg.stdout_line("/logged");
    assert!(line.contains(&format!("\"GET {} HTTP/1.1\" 200 10 ", origin.url("/logged"))), "{line}");
    assert!(line.ends_with(&origin.addr.to_string()), "{line}");
}

/// An origin that answers `body` to each request only once the test lets it (`Gate::open`).
fn gated_origin(body: &'static [u8]) -> (Origin, std::sync::mpsc::Sender<()>) {
    let (open, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let origin = Origin::start(move |_, s| {
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
        respond(s, "HTTP/1.1 200 OK", &[], body);
        Next::KeepAlive
    });
    (origin, open)
}

#[test]
fn drain_finishes_in_flight_requests_then_exits_0() {
    let (origin, open) = gated_origin(b"finished");
    let mut hg = proxy();
    let addr = hg.addr;
    let url = origin.url("/slow");
    let client = std::thread::spawn(move || exchange(addr, &format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n")));
    assert!(wait_until(Duration::from_secs(10), || origin.count() == 1), "the request is in flight");
    hg.signal("TERM");
    assert!(wait_until(Duration::from_secs(5), || refused(addr)), "no new connections while draining");
    open.send(()).unwrap();
    let r = client.join().unwrap();
    assert_eq!(r.body, b"finished");
    let status = hg.wait_exit(Duration::from_secs(10)).expect("exits after the drain");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn drain_time_limit_is_honoured() {
    // The origin answers only after the test has seen hopgate exit: the request is in flight past the drain time.
    let (origin, _open) = gated_origin(b"too late");
    let mut hg = Hopgate::proxy(&["--drain", "1"]);
    let addr = hg.addr;
    let url = origin.url("/");
    let _client = std::thread::spawn(move || {
        let mut c = Raw::connect(addr);
        c.send(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n"));
        c.read_to_close()
    });
    assert!(wait_until(Duration::from_secs(10), || origin.count() == 1), "the request is in flight");
    let started = Instant::now();
    hg.signal("INT");
    let status = hg.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_connection_option_naming_host_does_not_remove_it() {
    let origin = Origin::fixed("ok");
    let hg = proxy();
    let o = origin.addr;
    let r =
        exchange(hg.addr, &format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nConnection: Host, X-A\r\nX-A: 1\r\n\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.last();
    assert_eq!(
        seen.header("host"),
        Some(o.to_string().as_str()),
        "an HTTP/1.1 request always has Host:\n{}",
        seen.head
    );
    assert!(!seen.has("x-a"), "{}", seen.head);
}

#[test]
fn max_forwards_garbage_is_ignored_and_huge_values_are_decremented() {
    let origin = Origin::start(|seen, s| {
        respond(s, "HTTP/1.1 200 OK", &[], seen.header("max-forwards").unwrap_or("none").as_bytes());
        Next::KeepAlive
    });
    let hg = proxy();
    let o = origin.addr;
    let ask = |method: &str, value: &str| {
        exchange(hg.addr, &format!("{method} http://{o}/ HTTP/1.1\r\nHost: {o}\r\nMax-Forwards: {value}\r\n\r\n"))
    };
    // 1*DIGIT, however long: a valid value, forwarded as the largest hopgate supports minus one.
    let r = ask("OPTIONS", "99999999999999999999999");
    assert_eq!((r.status, r.text().as_str()), (200, "4294967294"));
    let r = ask("TRACE", "00");
    assert_eq!(r.header("content-type"), Some("message/http"), "00 is zero: answered here");
    assert_eq!(origin.count(), 1);
    // Not 1*DIGIT: ignored, as if absent (forwarded untouched, never answered here).
    for garbage in ["+3", "-1", "0x0", "1, 0", "abc"] {
        let r = ask("TRACE", garbage);
        assert_eq!((r.status, r.text().as_str()), (200, garbage), "{garbage}");
    }
    assert_eq!(origin.count(), 6);
}

#[test]
fn options_asterisk_to_the_proxy_is_answered_by_the_proxy() {
    let hg = proxy();
    let r = exchange(hg.addr, &format!("OPTIONS * HTTP/1.1\r\nHost: {}\r\nMax-Forwards: 0\r\n\r\n", hg.addr));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("allow").is_some_and(|a| a.contains("CONNECT")), "{}", r.head);
    assert_eq!(r.header("content-length"), Some("0"), "{}", r.head);
    let r = exchange(hg.addr, &format!("GET * HTTP/1.1\r\nHost: {}\r\n\r\n", hg.addr));
    assert_eq!(r.status, 400, "only OPTIONS takes the asterisk form: {}", r.text());
}

/// An access-log reader that stops reading (a paused pager, a full pipe) must not stall serving.
#[test]
fn an_undrained_stdout_does_not_stall_serving() {
    use std::io::BufRead;
    let origin = Origin::fixed("ok");
    let mut child = std::process::Command::new(support::bin())
        .args(["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stdout is never read: its pipe (64 KiB) fills after a few hundred lines.
    let _stdout = child.stdout.take();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no listening line");
    }
    let addr: std::net::SocketAddr = line.split("http://").nth(1).unwrap().trim().parse().unwrap();
    let mut c = Raw::connect(addr);
    let target = origin.url(&format!("/{}", "long-path-segment/".repeat(8)));
    let started = Instant::now();
    for _ in 0..3000 {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(c.response().body, b"ok");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_origin_that_answers_before_the_upload_ends_gets_the_rest_and_its_connection_is_reused() {
    // The origin answers a POST as soon as its head arrives (a chunked response, its first chunk), reads the whole
    // request body after that, and only then ends its response; then it serves a GET on the same connection.
    let accepted = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let (a, b) = (accepted.clone(), bodies.clone());
    let addr = support::origin::raw(move |mut s| {
        a.fetch_add(1, Ordering::SeqCst);
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        fn read_head(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(at) = support::find(buf, b"\r\n\r\n") {
                    return Some(buf.drain(..at + 4).collect());
                }
                match std::io::Read::read(s, &mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        let Some(head) = read_head(&mut s, &mut buf) else { return };
        assert!(head.starts_with(b"POST "), "{}", String::from_utf8_lossy(&head));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n");
        while buf.len() < 10 {
            match std::io::Read::read(&mut s, &mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        b.lock().unwrap().push(buf.drain(..10).collect());
        let _ = s.write_all(b"0\r\n\r\n");
        while let Some(head) = read_head(&mut s, &mut buf) {
            assert!(head.starts_with(b"GET "), "{}", String::from_utf8_lossy(&head));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let hg = Hopgate::gateway(&format!("http://{addr}"), &[]);
    let mut c = Raw::connect(hg.addr);
    c.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
    // The response has begun before the client sends the rest of its body.
    c.read_until(b"early");
    c.send("world");
    let got = c.read_until(b"0\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.contains("5\r\nearly\r\n0\r\n\r\n"), "{got}");
    assert_eq!(bodies.lock().unwrap().as_slice(), [b"helloworld".to_vec()], "the whole upload reached the origin");
    let r = exchange(hg.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{}", r.text());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the connection was reused once the upload had ended");
}
