//! Origin servers for the tests: blocking, one thread per connection, recording every request exactly as it
//! arrived (raw head bytes, parsed fields, body), answering through a handler the test writes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::find;

/// One request as the origin received it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub head: String,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted connection (0-based) carried it.
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::field(&self.headers, name)
    }
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// What the handler decides after answering.
pub enum Next {
    KeepAlive,
    Close,
}

type Handler = dyn Fn(&Seen, &mut TcpStream) -> Next + Send + Sync;

pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    /// Starts an origin on 127.0.0.1:0 answering with `handler`.
    pub fn start(handler: impl Fn(&Seen, &mut TcpStream) -> Next + Send + Sync + 'static) -> Origin {
        Origin::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), handler)
    }

    /// An origin on a socket bound already (another address, another network namespace).
    pub fn start_on(
        listener: TcpListener,
        handler: impl Fn(&Seen, &mut TcpStream) -> Next + Send + Sync + 'static,
    ) -> Origin {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, c) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (s, h) = (s.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, n, s, h));
            }
        });
        Origin { addr, seen, connections }
    }

    /// An origin answering every request 200 with `body` and Content-Length.
    pub fn fixed(body: &'static str) -> Origin {
        Origin::start(move |_, s| {
            respond(s, "HTTP/1.1 200 OK", &[("Content-Type", "text/plain")], body.as_bytes());
            Next::KeepAlive
        })
    }

    /// An origin echoing the request body back.
    pub fn echo() -> Origin {
        Origin::start(|seen, s| {
            respond(s, "HTTP/1.1 200 OK", &[], &seen.body);
            Next::KeepAlive
        })
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the origin received no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Writes a response with Content-Length.
pub fn respond(s: &mut TcpStream, status_line: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut out = format!("{status_line}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let _ = s.write_all(&bytes);
}

fn serve(mut stream: TcpStream, conn: usize, seen: Arc<Mutex<Vec<Seen>>>, handler: Arc<Handler>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf, conn) else {
            return;
        };
        seen.lock().unwrap().push(req.clone());
        match handler(&req, &mut stream) {
            Next::KeepAlive => {}
            Next::Close => return,
        }
    }
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads one request (head, then a Content-Length or chunked body).
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, conn: usize) -> Option<Seen> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(stream, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?.to_string(), parts.next()?.to_string(), parts.next()?.to_string());
    let headers = super::parse_fields(lines);
    let mut seen = Seen { head, method, target, version, headers, body: Vec::new(), conn };
    if seen.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let le = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(stream, buf) {
                    return None;
                }
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..le]).split(';').next()?.trim(), 16).ok()?;
            buf.drain(..le + 2);
            if size == 0 {
                while find(buf, b"\r\n").is_none() {
                    if !fill(stream, buf) {
                        return None;
                    }
                }
                let e = find(buf, b"\r\n")?;
                buf.drain(..e + 2);
                break;
            }
            while buf.len() < size + 2 {
                if !fill(stream, buf) {
                    return None;
                }
            }
            seen.body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    } else if let Some(n) = seen.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if seen.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        while buf.len() < n {
            if !fill(stream, buf) {
                return None;
            }
        }
        seen.body = buf.drain(..n).collect();
    }
    Some(seen)
}

/// An origin that hands each accepted connection to `f` untouched (for byte-level and streaming tests).
pub fn raw(f: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    raw_on(TcpListener::bind("127.0.0.1:0").unwrap(), f)
}

/// [`raw`] on a socket bound already.
pub fn raw_on(listener: TcpListener, f: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    let f = Arc::new(f);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let f = f.clone();
            std::thread::spawn(move || f(stream));
        }
    });
    addr
}

/// A TCP echo server: every byte back; when the client half-closes, it half-closes too.
pub fn echo_server() -> SocketAddr {
    raw(|mut s| {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
}
