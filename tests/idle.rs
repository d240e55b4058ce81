//! Every idle timeout is idle time, not a total: traffic that trickles in under the limit keeps a tunnel, a
//! relayed body, a CGI script's output and a spooled request body alive for longer than the limit, and silence
//! ends each of them with its own status and text. One timer type (src/idle.rs) serves them all; these tests pin
//! what each place counts as activity. The pace (a byte every 0.5 s against 2 s limits) leaves wide margins on a
//! loaded machine.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::cgi::Scripts;
use support::origin::{echo_server, raw};
use support::{Hopgate, Raw, open_tunnel};

/// Between two pieces of a trickle; six pieces take 3 s, more than the 2 s limits below.
const PACE: Duration = Duration::from_millis(500);
const PIECES: usize = 6;

#[test]
fn a_trickling_tunnel_outlives_its_idle_time_and_a_silent_one_is_closed() {
    let target = echo_server();
    let hg = Hopgate::start_config(&format!(
        "[timeouts]\ntunnel_idle_secs = 2\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n\
         allow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [{}]\n",
        target.port()
    ));
    let mut t = open_tunnel(hg.addr, target, "");
    for i in 0..PIECES {
        t.write_all(&[b'a' + i as u8]).unwrap();
        let mut got = [0u8; 1];
        t.read_exact(&mut got).expect("the tunnel is still open while bytes move");
        assert_eq!(got[0], b'a' + i as u8);
        std::thread::sleep(PACE);
    }
    // Now silence: the tunnel is closed after its idle time (the read deadline is 20 s).
    let mut buf = [0u8; 1];
    assert_eq!(t.read(&mut buf).unwrap_or(0), 0, "an idle tunnel is closed");
    let line = hg.stdout_line("CONNECT");
    assert!(line.contains(&format!("up={PIECES}")) && line.contains("idle"), "{line}");
}

#[test]
fn a_trickling_upload_and_a_trickling_response_outlive_their_idle_times() {
    // The origin reads the body byte by byte as it comes, then answers one byte every PACE.
    let origin = raw(|mut s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let body_at = loop {
            if let Some(i) = support::find(&got, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        };
        while got.len() < body_at + 10 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        for b in got[body_at..].iter().copied() {
            std::thread::sleep(PACE / 2);
            if s.write_all(&[b]).is_err() {
                return;
            }
        }
    });
    let hg = Hopgate::proxy_config("[timeouts]\nidle_secs = 2\nresponse_head_secs = 2");
    let mut c = Raw::connect(hg.addr);
    c.send(format!("POST http://{origin}/up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"));
    for piece in "0123456789".as_bytes() {
        std::thread::sleep(PACE / 2);
        c.send([*piece]);
    }
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "0123456789"), "{}", r.text());
}

#[test]
fn cgi_output_that_trickles_outlives_the_script_timeout() {
    let s = Scripts::new();
    s.add(
        "trickle.py",
        &format!(
            "#!/usr/bin/python3\nimport sys, time\nsys.stdout.write('Content-Type: text/plain\\r\\n\\r\\n')\n\
             for i in range({PIECES}):\n    sys.stdout.write('%d\\n' % i)\n    sys.stdout.flush()\n    \
             time.sleep({})\n",
            PACE.as_secs_f64()
        ),
    );
    s.add("silent.py", "#!/usr/bin/python3\nimport sys, time\nsys.stdout.write('Content-Type: text/plain\\r\\n\\r\\nfirst\\n')\nsys.stdout.flush()\ntime.sleep(30)\n");
    let h = s.config("script_timeout_secs = 2");
    let r = support::exchange(h.addr, "GET /trickle.py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "0\n1\n2\n3\n4\n5\n"), "{}", r.text());
    // A script that goes silent after its head: the body is cut (never a complete-looking response).
    let mut c = Raw::connect(h.addr);
    c.send("GET /silent.py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let got = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.contains("first\n"), "{got}");
    assert!(!got.ends_with("\r\n0\r\n\r\n"), "the chunked body is not ended cleanly: {got:?}");
}

#[test]
fn a_spooled_request_body_may_trickle_but_not_stall() {
    let s = Scripts::new();
    s.add(
        "len.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$CONTENT_LENGTH\"\ncat >/dev/null\n",
    );
    let h = s.config("script_timeout_secs = 2");
    let mut c = Raw::connect(h.addr);
    c.send("POST /len.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..PIECES {
        std::thread::sleep(PACE);
        c.send("1\r\nx\r\n");
    }
    c.send("0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "6\n"), "{}", r.text());
    let mut c = Raw::connect(h.addr);
    c.send("POST /len.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n");
    let r = c.response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text(), "hopgate: 400 Bad Request\nrequest body stalled for 2s\n");
}

#[test]
fn an_ftp_download_whose_request_body_stalls_is_400() {
    // GET takes no body; one that was announced and never comes stalls for the listener's idle time. This is
    // decided before any FTP connection, so the route's server need not exist.
    let closed = support::ClosedPort::new();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[timeouts]\nidle_secs = 2\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\nto = \"ftp://127.0.0.1:{}/\"\n",
        closed.port()
    ));
    let mut c = Raw::connect(hg.addr);
    c.send("GET /file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text(), "hopgate: 400 Bad Request\nthe request body stalled for 2s\n");
    let _ = TcpStream::connect(hg.addr).expect("still serving");
}
