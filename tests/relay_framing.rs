//! The relay's message framing in both directions, 1xx, and peers that stop moving: raw origins that send exact
//! bytes, raw clients that check exact bytes.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::origin::{Next, Origin, raw, respond};
use support::{Hopgate, Raw, exchange};

fn proxy() -> Hopgate {
    Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8"])
}

/// An origin that reads one request head and answers with exactly `response`, then holds the connection.
fn scripted(response: &'static [u8]) -> std::net::SocketAddr {
    raw(move |mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let _ = s.write_all(response);
        std::thread::sleep(Duration::from_secs(3));
    })
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
