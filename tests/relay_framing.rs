//! The relay's message framing in both directions, 1xx, and peers that stop moving: raw origins that send exact
//! bytes, raw clients that check exact bytes.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::origin::{Next, Origin, raw, respond};
use support::{Hopgate, Raw, exchange, read_head_bytes};

fn proxy() -> Hopgate {
    Hopgate::proxy(&[])
}

/// An origin that answers every request head on a connection with exactly `response` (bodies are not read).
fn scripted(response: &'static [u8]) -> std::net::SocketAddr {
    raw(move |mut s| {
        while read_head_bytes(&mut s).is_ok() {
            if s.write_all(response).is_err() {
                return;
            }
        }
    })
}

#[test]
fn an_origin_content_length_beside_chunked_is_not_forwarded() {
    // RFC 9112 §6.3: Transfer-Encoding wins, and an intermediary removes Content-Length before forwarding.
    let o =
        scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let hg = proxy();
    let r = exchange(hg.addr, &format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None, "{}", r.head);
    assert_eq!(r.body, b"hello", "the whole decoded body, not the 3 bytes the stale length claims");
    let mut c = Raw::connect(hg.addr);
    c.send(format!("GET http://{o}/ HTTP/1.0\r\n\r\n"));
    let all = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    assert!(!all.to_ascii_lowercase().contains("content-length"), "{all}");
    assert!(all.ends_with("\r\n\r\nhello"), "{all}");
}

#[test]
fn origin_transfer_codings_under_chunked_stay_named() {
    let o = scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n");
    let hg = proxy();
    let r = exchange(hg.addr, &format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("gzip, chunked"), "{}", r.head);
    assert_eq!(r.body, b"\x1f\x8b\x08\x00", "still gzip-coded, and says so");
    // An HTTP/1.0 client can't be sent a transfer coding: hopgate does not pass the bytes off as identity.
    let r = exchange(hg.addr, &format!("GET http://{o}/ HTTP/1.0\r\n\r\n"));
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(r.text().contains("gzip"), "{}", r.text());
}

#[test]
fn an_http10_keep_alive_client_is_not_promised_keep_alive_for_a_close_delimited_body() {
    let origin = Origin::start(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n");
        Next::KeepAlive
    });
    let hg = proxy();
    let mut c = Raw::connect(hg.addr);
    c.send(format!("GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", origin.url("/")));
    let all = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    assert!(all.starts_with("HTTP/1.0 200 OK\r\n"), "{all}");
    assert!(!all.to_ascii_lowercase().contains("keep-alive"), "the body ends with the connection: {all}");
    assert!(all.ends_with("\r\n\r\nbody"), "{all}");
}

#[test]
fn expect_100_continue_is_the_origins_to_answer() {
    // An origin that refuses the upload at once, without reading it: the client gets the 417 and no 100.
    let refusing = scripted(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 4\r\n\r\nnope");
    let hg = proxy();
    let mut c = Raw::connect(hg.addr);
    c.send(format!(
        "PUT http://{refusing}/up HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 417, "no 100 (Continue) the origin never sent: {}", r.head);
    assert_eq!(r.body, b"nope");

    // An origin that sends no 100 but reads the body (an HTTP/1.0 one would): after a moment hopgate lets the
    // client go on, and the body arrives in full.
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let silent = raw(move |mut s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while support::find(&got, b"\r\n\r\n").is_none_or(|i| got.len() < i + 4 + 11) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.lock().unwrap().send(String::from_utf8_lossy(&got).into_owned());
        let _ = s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    });
    let mut c = Raw::connect(hg.addr);
    c.send(format!("PUT http://{silent}/up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"));
    let started = Instant::now();
    let interim = c.response();
    assert_eq!(interim.status, 100, "{}", interim.head);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    c.send("hello world");
    assert_eq!(c.response().status, 201);
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(seen.to_ascii_lowercase().contains("expect: 100-continue"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nhello world"), "{seen}");

    // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored, not forwarded.
    let origin = Origin::echo();
    let r = exchange(
        hg.addr,
        &format!("PUT {} HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi", origin.url("/")),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]), "{}", r.head);
    assert!(!origin.last().has("expect"), "{}", origin.last().head);
}

#[test]
fn a_client_that_stops_reading_the_response_is_cut_off() {
    // The origin writes without end; the client never reads. Both connections are closed after the idle time.
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let o = raw(move |mut s| {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n");
        let chunk = vec![b'x'; 65536];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = tx.lock().unwrap().send(started.elapsed());
    });
    let hg = Hopgate::proxy_config("[timeouts]\nidle_secs = 1");
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    client.set_recv_buffer_size(4096).unwrap();
    client.connect(&hg.addr.into()).unwrap();
    let mut client: TcpStream = client.into();
    client.write_all(format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n").as_bytes()).unwrap();
    let held = rx.recv_timeout(Duration::from_secs(20)).expect("the origin connection is closed");
    assert!(held < Duration::from_secs(10), "held for {held:?}");
    // The client's connection is gone too: reading drains what was buffered, then EOF (or a reset).
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let (code, body, _) = support::curl(&["-x", &hg.url(), &Origin::fixed("served").url("/")]);
    assert_eq!((code, body.as_slice()), (200, &b"served"[..]));
}

#[test]
fn an_origin_that_stops_reading_the_upload_is_a_504() {
    let o = raw(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_secs(20));
    });
    let hg = Hopgate::proxy_config("[timeouts]\nresponse_head_secs = 1");
    let mut c = Raw::connect(hg.addr);
    c.send(format!("PUT http://{o}/up HTTP/1.1\r\nHost: {o}\r\nContent-Length: 100000000\r\n\r\n"));
    let mut writer = c.stream.try_clone().unwrap();
    let _ = writer.set_write_timeout(Some(Duration::from_secs(15)));
    std::thread::spawn(move || {
        let chunk = vec![b'u'; 65536];
        while writer.write_all(&chunk).is_ok() {}
        let _ = writer.shutdown(Shutdown::Write);
    });
    let started = Instant::now();
    let r = c.response();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("stopped reading the request body"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[test]
fn an_origin_204_and_304_and_head_keep_their_framing() {
    let origin = Origin::start(|seen, s| {
        let _ = match seen.target.as_str() {
            "/204" => s.write_all(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
            "/304" => s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"),
            _ if seen.method == "HEAD" => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
            _ => {
                respond(s, "HTTP/1.1 200 OK", &[], &[b'x'; 1234]);
                return Next::KeepAlive;
            }
        };
        Next::KeepAlive
    });
    let hg = proxy();
    let mut c = Raw::connect(hg.addr);
    let o = origin.addr;
    // HEAD: the origin's Content-Length (what GET would send) reaches the client, with no body.
    c.send(format!("HEAD http://{o}/h HTTP/1.1\r\nHost: {o}\r\n\r\n"));
    let r = c.response_to("HEAD");
    assert_eq!((r.status, r.header("content-length")), (200, Some("1234")), "{}", r.head);
    c.send(format!("GET http://{o}/204 HTTP/1.1\r\nHost: {o}\r\n\r\n"));
    let r = c.response();
    assert_eq!(r.status, 204);
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none(), "{}", r.head);
    c.send(format!("GET http://{o}/304 HTTP/1.1\r\nHost: {o}\r\n\r\n"));
    let r = c.response();
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
    assert!(r.header("transfer-encoding").is_none(), "{}", r.head);
    // The connection is still in step: a last request gets its own answer.
    c.send(format!("GET http://{o}/last HTTP/1.1\r\nHost: {o}\r\n\r\n"));
    assert_eq!(c.response().body.len(), 1234);
}
