//! HTTP/2 to upstreams (`upstream_http = "1.1" | "2" | "auto"`, issue 17): multiplexed connections with
//! `upstream_max_streams` streams each, trailers both ways, the framing between an HTTP/1.1 client and an HTTP/2
//! origin (and back), ALPN's choice for "auto" and "2", h2c with prior knowledge, and a client that goes away
//! resetting its upstream stream. The origin is tests/support/h2origin.rs (Python h2), which records every field
//! and counts connections; clients are raw sockets (exact bytes) and curl (HTTP/2 to an https:// listener).

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use support::h2origin::{H2Origin, fields};
use support::origin::{Next, Origin};
use support::tls::{KeyType, Pki};
use support::{Hopgate, Raw, curl_full, wait_until};

/// A gateway to `to` with the route keys `keys`, on a plain listener.
fn gateway(to: &str, keys: &str) -> Hopgate {
    Hopgate::route_config(to, keys)
}

/// A raw HTTP/1.1 request with `Connection: close`; everything the client received, as text.
fn raw(hg: &Hopgate, request: &str) -> String {
    let mut c = Raw::connect(hg.addr);
    c.send(request);
    String::from_utf8_lossy(&c.read_to_close()).into_owned()
}

#[test]
fn h2c_with_prior_knowledge_maps_the_http11_head() {
    let o = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}/base", o.port), "upstream_http = \"2\"");
    let body = "a=1&b=2";
    let text = raw(
        &hg,
        &format!(
            "POST /x?q=1 HTTP/1.1\r\nHost: public.example\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\n\
             TE: gzip\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("proto=2 conn=1 path=/base/x?q=1"), "{text}");
    let req = &o.wait_requests(1)[0];
    assert_eq!(req["proto"], "2");
    assert_eq!(fields(req, ":authority"), ["public.example"], "Host becomes :authority: {req}");
    assert_eq!(fields(req, ":scheme"), ["http"]);
    assert_eq!(fields(req, ":method"), ["POST"]);
    assert_eq!(fields(req, ":path"), ["/base/x?q=1"]);
    for gone in ["host", "connection", "x-drop", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"]
    {
        assert!(fields(req, gone).is_empty(), "{gone} reached the HTTP/2 origin: {req}");
    }
    assert_eq!(fields(req, "x-kept"), ["yes"]);
    assert_eq!(fields(req, "via").len(), 1, "{req}");
    assert_eq!(req["body"], body);
    assert_eq!(o.connection(1)["preface"], true, "prior knowledge: the connection starts with the preface");
}

#[test]
fn a_connection_carries_upstream_max_streams_then_another_opens() {
    let o = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}", o.port), "upstream_http = \"2\"\nupstream_max_streams = 3");
    // Five requests at once; the origin answers none until all five have arrived.
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let addr = hg.addr;
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                c.send("GET /hold/5 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
                String::from_utf8_lossy(&c.read_to_close()).into_owned()
            })
        })
        .collect();
    let bodies: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for b in &bodies {
        assert!(b.starts_with("HTTP/1.1 200 OK\r\n"), "{b}");
    }
    let reqs = o.wait_requests(5);
    let on = |cid: u64| reqs.iter().filter(|r| r["conn"] == cid).count();
    assert_eq!(o.connections().len(), 2, "{:?}", o.lines());
    assert_eq!((on(1), on(2)), (3, 2), "three streams on the first connection, then a second: {reqs:?}");
    // Idle again: the next requests, one after another, take the open connections (no third).
    for _ in 0..4 {
        let text = raw(&hg, "GET /seq HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    }
    // Every line up to the last request has been read: a third connection's would be among them.
    o.wait_requests(9);
    assert_eq!(o.connections().len(), 2, "{:?}", o.lines());
}

#[test]
fn trailers_reach_an_http11_client_only_when_it_sent_te_trailers() {
    let o = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}", o.port), "upstream_http = \"2\"");
    let get =
        |path: &str, te: &str| raw(&hg, &format!("GET {path} HTTP/1.1\r\nHost: h\r\n{te}Connection: close\r\n\r\n"));
    // Announced by the origin (Trailer passes end to end): chunked trailers for a client that accepts them.
    let with = get("/trailers?announce", "TE: trailers\r\n");
    assert!(with.starts_with("HTTP/1.1 200 OK\r\n"), "{with}");
    assert!(with.contains("\r\ntransfer-encoding: chunked\r\n"), "{with}");
    assert!(with.contains("\r\ntrailer: x-checksum\r\n"), "{with}");
    assert!(with.ends_with("\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"), "{with}");
    // RFC 9110 §6.5.1: a client that did not send TE: trailers gets none.
    let without = get("/trailers?announce", "");
    assert!(without.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{without}");
    // gRPC's trailers need no announcement from the origin: hopgate announces gRPC's own.
    let grpc = get("/trailers?grpc", "TE: trailers\r\n");
    assert!(grpc.contains("\r\ntrailer: grpc-status, grpc-message, grpc-status-details-bin\r\n"), "{grpc}");
    assert!(grpc.ends_with("\r\n\r\n5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n"), "{grpc}");
    // Unannounced trailer fields of another kind can't be sent to HTTP/1.1 (the head went out before them).
    let other = get("/trailers", "TE: trailers\r\n");
    assert!(other.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{other}");
    // TE: trailers is what HTTP/2 allows of TE, and it goes up only when the client sent it.
    let reqs = o.wait_requests(4);
    assert_eq!(fields(&reqs[0], "te"), ["trailers"], "{:?}", reqs[0]);
    assert!(fields(&reqs[1], "te").is_empty(), "{:?}", reqs[1]);
}

#[test]
fn request_trailers_from_an_http11_client_reach_the_http2_origin() {
    let o = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}", o.port), "upstream_http = \"2\"");
    let text = raw(
        &hg,
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nConnection: close\r\n\r\n\
         3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let req = &o.wait_requests(1)[0];
    assert_eq!(req["body"], "abc");
    assert_eq!(req["trailers"], serde_json::json!([["x-sum", "42"]]), "{req}");
}

#[test]
fn trailers_pass_between_http2_clients_and_http11_origins_both_ways() {
    // An HTTP/1.1 origin that announces and sends a trailer, and records the request's.
    let origin = Origin::start(|seen, s| {
        use std::io::Write;
        let _ = seen;
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-origin-sum\r\n\r\n2\r\nok\r\n0\r\n\
              x-origin-sum: 7\r\n\r\n",
        );
        Next::KeepAlive
    });
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let hg = Hopgate::start(&[
        "gateway",
        "--listen",
        "https://127.0.0.1:0",
        "--tls-cert",
        pair.cert(),
        "--tls-key",
        pair.key(),
        "--to",
        &format!("http://{}", origin.addr),
    ]);
    let url = format!("https://localhost:{}/t", hg.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", hg.addr.port());
    let c = curl_full(&["--http2", "--cacert", pki.ca.cert(), "--resolve", &resolve, &url]);
    assert_eq!((c.code, c.version.as_str(), c.text().as_str()), (200, "2", "ok"), "{c:?}");
    // curl writes trailers into the header dump, after the head.
    assert!(c.head.contains("x-origin-sum: 7"), "the HTTP/2 client got the trailer: {}", c.head);
    // The HTTP/1.1 origin got an HTTP/1.1 request with Host from :authority.
    let seen = origin.last();
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.header("host"), Some(format!("localhost:{}", hg.addr.port()).as_str()), "{}", seen.head);
}

#[test]
fn an_http2_client_of_an_http2_origin_gets_its_trailers() {
    let o = H2Origin::plain();
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\n[[listener.tls]]\ncert = \"{}\"\n\
         key = \"{}\"\n[[listener.route]]\nto = \"http://127.0.0.1:{}\"\nupstream_http = \"2\"\n",
        pair.cert(),
        pair.key(),
        o.port
    ));
    let url = format!("https://localhost:{}/trailers", hg.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", hg.addr.port());
    let c = curl_full(&["--http2", "--cacert", pki.ca.cert(), "--resolve", &resolve, &url]);
    assert_eq!((c.code, c.version.as_str(), c.text().as_str()), (200, "2", "hello"), "{c:?}");
    assert!(c.head.contains("x-checksum: abc"), "{}", c.head);
    let req = &o.wait_requests(1)[0];
    assert_eq!(fields(req, ":authority"), [format!("localhost:{}", hg.addr.port()).as_str()]);
    assert_eq!(fields(req, ":scheme"), ["http"]);
}

#[test]
fn auto_takes_what_alpn_chose_and_2_insists_on_h2() {
    let pki = Pki::new();
    let pair = pki.leaf("origin", KeyType::EcdsaP256, &["localhost"]);
    let both = H2Origin::tls("h2,http/1.1", pair.cert(), pair.key());
    let h1_only = H2Origin::tls("http/1.1", pair.cert(), pair.key());
    let ca = pki.ca.cert();
    let get = |port: u16, mode: &str| {
        let hg = gateway(&format!("https://localhost:{port}"), &format!("ca = \"{ca}\"\nupstream_http = \"{mode}\""));
        raw(&hg, "GET /p HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    };
    let text = get(both.port, "auto");
    assert!(text.ends_with("proto=2 conn=1 path=/p"), "{text}");
    assert_eq!(both.connection(1)["alpn"], "h2");
    let text = get(h1_only.port, "auto");
    assert!(text.ends_with("proto=1.1 conn=1"), "{text}");
    assert_eq!(h1_only.connection(1)["alpn"], "http/1.1");
    let text = get(both.port, "1.1");
    assert!(text.ends_with("proto=1.1 conn=2"), "\"1.1\" offers http/1.1 only: {text}");
    let text = get(both.port, "2");
    assert!(text.ends_with("proto=2 conn=3 path=/p"), "{text}");
    let text = get(h1_only.port, "2");
    assert!(text.starts_with("HTTP/1.1 502 "), "{text}");
    assert!(text.contains("h2"), "the page names ALPN's refusal: {text}");
    // The plain origin: "auto" on http:// is HTTP/1.1 (h2c can't be negotiated).
    let plain = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}", plain.port), "upstream_http = \"auto\"");
    let text = raw(&hg, "GET /p HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(text.ends_with("proto=1.1 conn=1"), "{text}");
    assert_eq!(plain.connection(1)["preface"], false);
}

#[test]
fn a_client_that_goes_away_resets_its_upstream_stream() {
    let o = H2Origin::plain();
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\n[[listener.tls]]\ncert = \"{}\"\n\
         key = \"{}\"\n[[listener.route]]\nto = \"http://127.0.0.1:{}\"\nupstream_http = \"2\"\n\
         [[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://127.0.0.1:{}\"\n\
         upstream_http = \"2\"\n",
        pair.cert(),
        pair.key(),
        o.port,
        o.port
    ));
    // An HTTP/2 client gives up while the response head is awaited: its stream's reset reaches the origin.
    let resolve = format!("localhost:{}:127.0.0.1", hg.addr.port());
    let url = format!("https://localhost:{}/never", hg.addr.port());
    let c = curl_full(&["--http2", "--cacert", pki.ca.cert(), "--resolve", &resolve, "--max-time", "1", &url]);
    assert!(!c.ok, "{c:?}");
    let reset = wait_until(Duration::from_secs(10), || o.resets().len() == 1);
    assert!(reset, "no RST_STREAM reached the origin: {:?}", o.lines());
    assert_eq!(o.resets()[0]["code"], 8, "CANCEL: {:?}", o.resets());
    // An HTTP/1.1 client that closes in the middle of the body: hopgate's next write fails, and the stream ends.
    let plain: std::net::SocketAddr = hg.listening[1].trim_start_matches("http://").parse().unwrap();
    let mut c = Raw::connect(plain);
    c.send("GET /drip HTTP/1.1\r\nHost: h\r\n\r\n");
    c.read_until(b"xxxx");
    drop(c);
    let reset = wait_until(Duration::from_secs(10), || o.resets().len() == 2);
    assert!(reset, "no RST_STREAM reached the origin: {:?}", o.lines());
    assert_eq!(o.resets()[1]["code"], 8, "CANCEL: {:?}", o.resets());
    // The connection stays for the next request.
    let mut c = Raw::connect(plain);
    c.send("GET /after HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    // Each listener's route has its own pool: the plain one's connection is the second.
    assert!(text.ends_with("proto=2 conn=2 path=/after"), "{text}");
}

#[test]
fn upstream_http_keys_and_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let check = |keys: &str| {
        let path = dir.path().join("h.toml");
        std::fs::write(
            &path,
            format!("[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://a:1\"\n{keys}\n"),
        )
        .unwrap();
        let out = Command::new(support::bin()).args(["check", path.to_str().unwrap()]).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for ok in
        ["upstream_http = \"1.1\"", "upstream_http = \"2\"", "upstream_http = \"auto\"", "upstream_max_streams = 1"]
    {
        assert!(check(ok).0, "{ok}: {}", check(ok).1);
    }
    let (ok, err) = check("upstream_http = \"3\"");
    assert!(!ok && err.contains(":5:") && err.contains("\"1.1\", \"2\" or \"auto\""), "{err}");
    let (ok, err) = check("upstream_max_streams = 0");
    assert!(!ok && err.contains(":5:") && err.contains("at least 1"), "{err}");
    let out = Command::new(support::bin())
        .args(["gateway", "--listen", "127.0.0.1:0", "--to", "file:/tmp", "--upstream-http", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--upstream-http only applies to http:// and https://"), "{err}");
    // The flag on a gateway that runs.
    let o = H2Origin::plain();
    let hg = Hopgate::gateway(&format!("http://127.0.0.1:{}", o.port), &["--upstream-http", "2"]);
    let text = raw(&hg, "GET /cli HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(text.ends_with("proto=2 conn=1 path=/cli"), "{text}");
}

/// An upstream group over HTTP/2: a member that refuses connections never costs a request, even a POST (nothing
/// of it was written), and the group's retry rules hold on the HTTP/2 path too.
#[test]
fn an_http2_group_sends_what_a_dead_member_refused_to_the_live_one() {
    let o = H2Origin::plain();
    let dead = support::free_port();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\n\
         to = [\"http://127.0.0.1:{dead}\", \"http://127.0.0.1:{}\"]\nupstream_http = \"2\"\n",
        o.port
    ));
    for i in 0..6 {
        let body = format!("n={i}");
        let text = raw(
            &hg,
            &format!(
                "POST /p{i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "request {i}: {text}");
        assert!(text.ends_with(&format!("proto=2 conn=1 path=/p{i}")), "request {i}: {text}");
    }
    let reqs = o.wait_requests(6);
    assert_eq!(reqs.len(), 6, "each POST reached the live member once");
    let bodies: Vec<_> = reqs.iter().map(|r| r["body"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(bodies, (0..6).map(|i| format!("n={i}")).collect::<Vec<_>>());
    assert_eq!(o.connections().len(), 1, "one multiplexed connection to the live member");
}

/// A WebSocket upgrade through a route that speaks HTTP/2 to its origin goes up as an extended CONNECT (RFC 8441
/// §4: `:protocol websocket`, no Sec-WebSocket-Key, no Upgrade/Connection), and the origin's 200 comes back to
/// the HTTP/1.1 client as a 101 with the Accept for its own key; then bytes flow both ways on the stream.
#[test]
fn a_websocket_upgrade_to_an_http2_origin_is_an_extended_connect() {
    let o = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}", o.port), "upstream_http = \"2\"");
    let mut c = std::net::TcpStream::connect(hg.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let head = support::read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    // RFC 6455's own example: this key is answered with this Accept.
    assert!(lower.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");
    let req = &o.wait_requests(1)[0];
    assert_eq!(fields(req, ":method"), ["CONNECT"], "{req}");
    assert_eq!(fields(req, ":protocol"), ["websocket"], "{req}");
    assert_eq!(fields(req, ":path"), ["/chat"], "{req}");
    assert_eq!(fields(req, ":authority"), ["ws.example"], "{req}");
    assert_eq!(fields(req, "sec-websocket-version"), ["13"], "{req}");
    for gone in ["sec-websocket-key", "upgrade", "connection", "host"] {
        assert!(fields(req, gone).is_empty(), "{gone} went to the HTTP/2 origin: {req}");
    }
    for word in ["ping", "pong!"] {
        c.write_all(word.as_bytes()).unwrap();
        let mut echo = vec![0u8; 5 + word.len()];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(String::from_utf8_lossy(&echo), format!("echo:{word}"));
    }
}

/// Interim (103) responses from an HTTP/2 origin do not disturb the final response (the h2 crate drops them;
/// hyper's HTTP/2 client has no callback for them, so the relay's limit of ten counts HTTP/1.1 upstreams only).
#[test]
fn interim_responses_from_an_http2_origin_leave_the_final_one_intact() {
    let o = H2Origin::plain();
    let hg = gateway(&format!("http://127.0.0.1:{}", o.port), "upstream_http = \"2\"");
    for n in [3, 12] {
        let text = raw(&hg, &format!("GET /hints/{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhints"), "{text}");
        assert!(!text.contains("103"), "{text}");
    }
}
