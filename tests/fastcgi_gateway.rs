//! The FastCGI gateway end to end: the real binary (`hopgate gateway --to fastcgi://ADDR` or `fastcgi+unix:SOCK`,
//! `--root DIR`) with curl and raw clients, in front of
//! - a real php-fpm (Debian package php-fpm) that each test starts in the foreground and stops by PID: hello world
//!   over TCP and a unix socket, the index for directory paths, PATH_INFO after `.php` and the environment, PARAMS
//!   over several records, the cgi.fix_pathinfo trap (404), POST bodies by sha256, Status and Location, PHP's
//!   stderr in the log, php-fpm down (502), a slow script (504), the access log naming the app, and kept
//!   connections counted by a relay in front of php-fpm;
//! - an application written here, for what php-fpm never does: it records the records it got (BEGIN_REQUEST
//!   flags, PARAMS, STDIN record sizes) and answers with garbage, a foreign request id, OVERLOADED, or a connection
//!   closed mid-body.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hopgate::backend::fastcgi::record::{self, EndRequest};
use support::phpfpm::Fpm;
use support::{ClosedPort, DataFile, Hopgate, Raw, curl, exchange, pseudo_random, sha256_hex, wait_until};

const SCRIPTS: &[(&str, &str)] = &[
    ("hello.php", "<?php echo \"hello world\\n\";"),
    ("index.php", "<?php echo 'root index';"),
    (
        "server.php",
        "<?php header('Content-Type: text/plain'); ksort($_SERVER);\n\
         foreach ($_SERVER as $k => $v) { if (is_string($v)) echo \"$k=$v\\n\"; }",
    ),
    (
        "echo.php",
        "<?php header('Content-Type: application/octet-stream');\n\
         header('X-Length: ' . ($_SERVER['CONTENT_LENGTH'] ?? 'none'));\n\
         stream_copy_to_stream(fopen('php://input', 'rb'), fopen('php://output', 'wb'));",
    ),
    ("teapot.php", "<?php http_response_code(418); echo 'short and stout';"),
    ("away.php", "<?php header('Location: http://elsewhere.test/x');"),
    ("complain.php", "<?php error_log('complaint from php'); echo 'done';"),
    ("pid.php", "<?php echo getmypid();"),
    ("sleep.php", "<?php usleep((int)($_GET['ms'] ?? 200) * 1000); echo 'slept';"),
    ("big.php", "<?php echo str_repeat('x', 4 << 20);"),
    ("app/home.php", "<?php echo 'home of app';"),
    ("app/index.php", "<?php echo 'index of app';"),
    ("uploads/evil.jpg", "<?php echo 'must never run';"),
];

fn start_fpm(unix: bool) -> Fpm {
    Fpm::start(SCRIPTS, unix)
}

/// `hopgate gateway --to TARGET --root WWW EXTRA...` in front of `fpm`.
fn gateway(fpm: &Fpm, extra: &[&str]) -> Hopgate {
    let root = fpm.www.display().to_string();
    let mut args = vec!["--root", root.as_str()];
    args.extend_from_slice(extra);
    Hopgate::gateway(&fpm.target(), &args)
}

fn get(h: &Hopgate, path: &str) -> support::Resp {
    exchange(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: php.test\r\nConnection: close\r\n\r\n"))
}

#[test]
fn hello_world_over_tcp_names_the_app_in_the_access_log() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let (code, body, err) = curl(&[&format!("{}/hello.php", h.url())]);
    assert_eq!((code, body.as_slice()), (200, &b"hello world\n"[..]), "{err}");
    let line = h.stdout_line("/hello.php");
    let app = fpm.target();
    let app = app.strip_prefix("fastcgi://").unwrap();
    assert!(line.contains("\"GET /hello.php HTTP/1.1\" 200 12 ") && line.ends_with(app), "{line}");
}

#[test]
fn over_a_unix_socket_one_kept_connection_is_one_worker() {
    let fpm = start_fpm(true);
    let h = gateway(&fpm, &[]);
    for _ in 0..3 {
        let (code, body, err) = curl(&[&format!("{}/hello.php", h.url())]);
        assert_eq!((code, body.as_slice()), (200, &b"hello world\n"[..]), "{err}");
    }
    // Requests one after another go over the one kept connection: the same php-fpm worker answers every time.
    let pids: Vec<String> = (0..3).map(|_| get(&h, "/pid.php").text()).collect();
    assert!(pids[0].parse::<u32>().is_ok() && pids.windows(2).all(|w| w[0] == w[1]), "pids {pids:?}");
}

#[test]
fn index_for_directory_paths() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &["--index", "index.php"]);
    assert_eq!(get(&h, "/").text(), "root index");
    assert_eq!(get(&h, "/app/").text(), "index of app");
    let h = gateway(&fpm, &["--index", "home.php"]);
    assert_eq!(get(&h, "/app/").text(), "home of app");
    assert_eq!(get(&h, "/").status, 404, "no home.php at the root");
}

#[test]
fn path_info_after_dot_php_and_the_environment() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let r = exchange(
        h.addr,
        "GET /server.php/extra/x?q=1 HTTP/1.1\r\nHost: php.test\r\nProxy: http://evil.test:3128\r\n\
         Authorization: Basic c2VjcmV0\r\nX-Custom: custom value\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain;charset=UTF-8"));
    let text = r.text();
    let root = std::fs::canonicalize(&fpm.www).unwrap();
    for want in [
        "SCRIPT_NAME=/server.php".to_string(),
        "PATH_INFO=/extra/x".into(),
        "PHP_SELF=/server.php/extra/x".into(),
        format!("SCRIPT_FILENAME={}/server.php", root.display()),
        format!("DOCUMENT_ROOT={}", root.display()),
        "QUERY_STRING=q=1".into(),
        "REQUEST_URI=/server.php/extra/x?q=1".into(),
        "REQUEST_METHOD=GET".into(),
        "REMOTE_ADDR=127.0.0.1".into(),
        format!("SERVER_PORT={}", h.addr.port()),
        "SERVER_NAME=php.test".into(),
        "HTTP_X_CUSTOM=custom value".into(),
        "GATEWAY_INTERFACE=CGI/1.1".into(),
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want} in\n{text}");
    }
    for absent in ["HTTP_PROXY=", "HTTP_AUTHORIZATION=", "HTTP_X_SECRET=", "HTTP_CONNECTION=", "PHP_AUTH_PW="] {
        assert!(!text.lines().any(|l| l.starts_with(absent)), "{absent} passed:\n{text}");
    }
}

#[test]
fn params_longer_than_one_record_reach_php() {
    // Two 40,000-byte fields: PARAMS spans several records, and php-fpm parses each record on its own.
    let fpm = start_fpm(false);
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[limits]\nmax_head_bytes = 131072\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\nto = \"{}\"\nroot = \"{}\"\n",
        fpm.target(),
        fpm.www.display()
    ));
    let big = "b".repeat(40_000);
    let r = exchange(
        h.addr,
        &format!(
            "GET /server.php HTTP/1.1\r\nHost: php.test\r\nX-Big-A: {big}\r\nX-Big-B: {big}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let dump = r.text();
    assert!(dump.lines().any(|l| l == format!("HTTP_X_BIG_A={big}")), "{}", &dump[..dump.len().min(400)]);
    assert!(dump.lines().any(|l| l == format!("HTTP_X_BIG_B={big}")));
}

#[test]
fn fix_pathinfo_trap_is_404() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    for path in [
        "/uploads/evil.jpg/x.php",
        "/uploads/evil.jpg/.php",
        "/uploads/evil.jpg%2fx.php",
        "/nope.php",
        "/../www/hello.php",
        "/%2e%2e/www/hello.php",
        "/%2e%2e/fpm.conf",
    ] {
        let r = get(&h, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("must never run"), "{path}");
        assert!(r.text().starts_with("hopgate: 404"), "{path}: answered by hopgate, not php-fpm: {}", r.text());
    }
    // The file itself is a static file of the root (issue 15): sent as what it is, never run.
    let r = get(&h, "/uploads/evil.jpg");
    assert_eq!((r.status, r.text().as_str()), (200, "<?php echo 'must never run';"));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
}

#[test]
fn post_bodies_by_sha256_with_and_without_content_length() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let url = format!("{}/echo.php", h.url());
    for (size, chunked) in [(8usize << 20, false), (1 << 20, true)] {
        let data = pseudo_random(size, 11);
        let input = DataFile::new(&data);
        let at = input.at();
        // Not the default form type: PHP would parse the bytes as form fields.
        let mut args = vec![
            "-D",
            "-",
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            at.as_str(),
        ];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        args.push(&url);
        let (code, out, err) = curl(&args);
        assert_eq!(code, 200, "{err}");
        let end = support::find(&out, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
        assert!(
            head.contains(&format!("x-length: {size}\r\n")),
            "{head}{}",
            String::from_utf8_lossy(&out[end..end + 400.min(out.len() - end)])
        );
        assert_eq!(out.len() - end, size);
        assert_eq!(sha256_hex(&out[end..]), sha256_hex(&data), "chunked: {chunked}");
    }
}

#[test]
fn status_and_location_pass_through() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let r = get(&h, "/teapot.php");
    assert_eq!((r.status, r.text().as_str()), (418, "short and stout"));
    let r = get(&h, "/away.php");
    assert_eq!((r.status, r.header("location")), (302, Some("http://elsewhere.test/x")), "{}", r.head);
}

#[test]
fn php_stderr_reaches_the_log() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    assert_eq!(get(&h, "/complain.php").text(), "done");
    let log = h.stderr_with("complaint from php", 1);
    let line = log.lines().find(|l| l.contains("complaint from php")).unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn fpm_down_is_502() {
    let mut fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    assert_eq!(get(&h, "/hello.php").status, 200);
    fpm.stop();
    let r = get(&h, "/hello.php");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().starts_with("hopgate: 502"), "{}", r.text());
    let mut fpm = start_fpm(true);
    let h = gateway(&fpm, &[]);
    fpm.stop();
    let r = get(&h, "/hello.php");
    assert_eq!(r.status, 502, "unix socket gone: {}", r.text());
    // Nothing ever listened: refused.
    let closed = ClosedPort::new();
    let h = Hopgate::gateway(&format!("fastcgi://{}", closed.addr), &["--root", fpm.www.to_str().unwrap()]);
    let r = get(&h, "/hello.php");
    assert_eq!(r.status, 502, "refused: {}", r.text());
}

#[test]
fn slow_script_is_504_after_script_timeout() {
    let fpm = start_fpm(false);
    let h = Hopgate::route_config(&fpm.target(), &format!("root = \"{}\"\nscript_timeout_secs = 1", fpm.www.display()));
    assert_eq!(get(&h, "/sleep.php?ms=100").text(), "slept");
    let start = Instant::now();
    let r = get(&h, "/sleep.php?ms=4000");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "answered after {took:?}");
}

/// A TCP relay in front of php-fpm that counts the connections it accepted and those still open, and can cut them
/// all.
struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (a, o, l) = (accepted.clone(), open.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(up) = TcpStream::connect(to) else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                l.lock().unwrap().extend([client.try_clone().unwrap(), up.try_clone().unwrap()]);
                let o = o.clone();
                std::thread::spawn(move || {
                    let (c2, u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                    let back = std::thread::spawn(move || pump(u2, c2));
                    pump(client, up);
                    let _ = back.join();
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Relay { addr, accepted, open, live }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every relayed connection, as a restarted php-fpm would, and waits until both sides are gone.
    fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        assert!(wait_until(Duration::from_secs(5), || self.open() == 0), "{} still open", self.open());
    }
}

/// Copies `from` to `to` until EOF or an error, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 65536];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn kept_connections_are_reused_only_after_a_clean_end() {
    let fpm = start_fpm(false);
    let fpm_addr: SocketAddr = fpm.target().strip_prefix("fastcgi://").unwrap().parse().unwrap();
    let relay = Relay::start(fpm_addr);
    let root = fpm.www.display().to_string();
    let h = Hopgate::gateway(&format!("fastcgi://{}", relay.addr), &["--root", &root]);
    for _ in 0..5 {
        assert_eq!(get(&h, "/hello.php").text(), "hello world\n");
    }
    assert_eq!(relay.accepted(), 1, "five requests, one kept connection");

    // The kept connection dies while idle: detected, and the request goes out on a fresh one.
    relay.cut();
    assert_eq!(get(&h, "/hello.php").text(), "hello world\n");
    assert_eq!(relay.accepted(), 2);

    // The client goes away mid-body: that connection is closed, never reused.
    let mut c = Raw::connect(h.addr);
    c.send("GET /big.php HTTP/1.1\r\nHost: php.test\r\n\r\n");
    c.read_until(b"\r\n\r\n");
    drop(c);
    assert!(wait_until(Duration::from_secs(10), || relay.open() == 0), "the cut-off connection is closed");
    assert_eq!(get(&h, "/hello.php").text(), "hello world\n");
    assert_eq!(relay.accepted(), 3);

    // More requests at once than php-fpm has workers: all are served, and the connections kept afterwards stay
    // below pm.max_children (2 kept at most), so none waits behind an idle one.
    let addr = h.addr;
    let all: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                exchange(addr, "GET /sleep.php?ms=100 HTTP/1.1\r\nHost: php.test\r\nConnection: close\r\n\r\n").text()
            })
        })
        .collect();
    for t in all {
        assert_eq!(t.join().unwrap(), "slept");
    }
    assert!(wait_until(Duration::from_secs(10), || relay.open() <= 2), "{} connections kept", relay.open());
}

// ---- an application written here ----

#[derive(Clone, Copy, Debug)]
enum Mode {
    Echo,
    Garbage,
    Overloaded,
    ForeignId,
    CloseMidBody,
    NoHead,
}

#[derive(Default, Debug)]
struct Seen {
    connections: usize,
    begin_flags: Vec<u8>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    stdin_sizes: Vec<usize>,
    stdin: Vec<u8>,
}

/// Reads one request's records up to the empty STDIN record; `None` when the client closed.
fn read_request(s: &mut TcpStream, buf: &mut BytesMut, seen: &Mutex<Seen>) -> Option<()> {
    let mut params = Vec::new();
    loop {
        while let Some(rec) = record::decode(buf).ok()? {
            let mut seen = seen.lock().unwrap();
            match rec.kind {
                record::BEGIN_REQUEST => seen.begin_flags.push(record::parse_begin_request(&rec.content).ok()?.flags),
                record::PARAMS if rec.content.is_empty() => seen.params = record::parse_name_values(&params).ok()?,
                record::PARAMS => params.extend_from_slice(&rec.content),
                record::STDIN => {
                    seen.stdin_sizes.push(rec.content.len());
                    if rec.content.is_empty() {
                        return Some(());
                    }
                    seen.stdin.extend_from_slice(&rec.content);
                }
                _ => return None,
            }
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What the application answers to one request in `mode`, and whether it keeps the connection afterwards.
fn answer(mode: Mode, seen: &Mutex<Seen>) -> (BytesMut, bool) {
    let mut out = BytesMut::new();
    let complete = EndRequest { app_status: 0, protocol_status: record::REQUEST_COMPLETE };
    match mode {
        Mode::Echo => {
            let body = std::mem::take(&mut seen.lock().unwrap().stdin);
            record::put_record(&mut out, record::STDOUT, 1, b"Content-Type: text/plain\r\n");
            record::put_record(&mut out, record::STDERR, 1, b"a warning from the app\n");
            record::put_record(&mut out, record::STDOUT, 1, b"\r\n");
            record::put_stream(&mut out, record::STDOUT, 1, &body);
            record::put_record(&mut out, record::STDOUT, 1, b"");
            record::put_end_request(&mut out, 1, complete);
        }
        Mode::Garbage => out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nnot fastcgi"),
        Mode::Overloaded => {
            record::put_end_request(&mut out, 1, EndRequest { app_status: 0, protocol_status: record::OVERLOADED })
        }
        Mode::ForeignId => record::put_record(&mut out, record::STDOUT, 2, b"X: y\r\n\r\n"),
        Mode::CloseMidBody => {
            record::put_record(&mut out, record::STDOUT, 1, b"Content-Type: text/plain\r\n\r\npartial");
            return (out, false);
        }
        Mode::NoHead => {
            record::put_record(&mut out, record::STDOUT, 1, b"just text");
            record::put_record(&mut out, record::STDOUT, 1, b"");
            record::put_end_request(&mut out, 1, complete);
        }
    }
    (out, true)
}

/// The application on 127.0.0.1:0, answering in `mode`; it records what it got in the returned `Seen`.
fn app(mode: Mode) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record_to = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            record_to.lock().unwrap().connections += 1;
            let seen = record_to.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = BytesMut::new();
                while read_request(&mut s, &mut buf, &seen).is_some() {
                    let (out, keep) = answer(mode, &seen);
                    if s.write_all(&out).is_err() || !keep {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn records_on_the_wire_and_a_kept_connection() {
    let (addr, seen) = app(Mode::Echo);
    let h = Hopgate::gateway(&format!("fastcgi://{addr}"), &[]);
    let data = pseudo_random(200_000, 5);
    let mut c = Raw::connect(h.addr);
    c.send(format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Long: {}\r\n\r\n",
        data.len(),
        "l".repeat(300)
    ));
    c.send(&data);
    let r = c.response();
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/plain")), "{}", r.head);
    assert!(r.body == data, "the body echoed through STDIN and STDOUT records ({} bytes)", r.body.len());
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.begin_flags, [record::KEEP_CONN]);
        assert!(seen.params.contains(&(b"CONTENT_LENGTH".to_vec(), b"200000".to_vec())), "{:?}", seen.params);
        assert!(seen.params.contains(&(b"HTTP_X_LONG".to_vec(), vec![b'l'; 300])));
        // 200,000 bytes go out as several STDIN records of at most 65,528 bytes, then the empty one.
        assert!(seen.stdin_sizes.iter().all(|&n| n <= record::CHUNK_BYTES), "{:?}", seen.stdin_sizes);
        assert!(seen.stdin_sizes.len() >= 4, "{:?}", seen.stdin_sizes);
        assert_eq!(seen.stdin_sizes.last(), Some(&0));
        assert_eq!(seen.stdin_sizes.iter().sum::<usize>(), 200_000);
    }
    // The app's STDERR record is logged.
    h.stderr_with("a warning from the app", 1);
    // A second request, from another client, goes out on the kept connection.
    let r = exchange(h.addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.body, b"abc");
    let seen = seen.lock().unwrap();
    assert_eq!((seen.begin_flags.len(), seen.connections), (2, 1), "two requests, one connection");
}

#[test]
fn misbehaving_applications_are_502_and_their_connections_not_kept() {
    for mode in [Mode::Garbage, Mode::Overloaded, Mode::ForeignId, Mode::NoHead] {
        let (addr, seen) = app(mode);
        let h = Hopgate::gateway(&format!("fastcgi://{addr}"), &[]);
        for _ in 0..2 {
            let r = exchange(h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(r.status, 502, "{mode:?}: {}", r.text());
            assert!(r.text().starts_with("hopgate: 502 Bad Gateway\n"), "{mode:?}: {}", r.text());
        }
        // NoHead ended cleanly at the FastCGI level, so its connection may be kept.
        if !matches!(mode, Mode::NoHead) {
            assert_eq!(seen.lock().unwrap().connections, 2, "{mode:?}: a connection in doubt is not reused");
        }
    }
    // Closed after the head: the head is fine but the body fails, so the client connection is closed without a
    // complete response (before or after hyper wrote the head: the head, the body and the close arrive together),
    // and nothing is kept.
    let (addr, seen) = app(Mode::CloseMidBody);
    let h = Hopgate::gateway(&format!("fastcgi://{addr}"), &[]);
    for _ in 0..2 {
        let mut c = Raw::connect(h.addr);
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let all = String::from_utf8_lossy(&c.read_to_close()).into_owned();
        assert!(all.is_empty() || all.starts_with("HTTP/1.1 200 OK\r\n"), "{all:?}");
        assert!(!all.ends_with("0\r\n\r\n"), "a cut body is not passed off as complete: {all:?}");
    }
    assert_eq!(seen.lock().unwrap().connections, 2);
}

/// A FastCGI application that reads one request (up to its empty FCGI_STDIN record), then answers in HTTP instead
/// of FastCGI records. Accepts one connection within 10 s.
fn http_speaking_app() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return,
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 8];
        loop {
            if conn.read_exact(&mut head).is_err() {
                return;
            }
            let len = u16::from_be_bytes([head[4], head[5]]) as usize + head[6] as usize;
            let mut content = vec![0u8; len];
            if conn.read_exact(&mut content).is_err() {
                return;
            }
            if head[1] == 5 && head[4] == 0 && head[5] == 0 {
                break;
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        let _ = conn.read(&mut head);
    });
    addr
}

#[test]
fn a_fastcgi_protocol_error_keeps_its_words_on_the_page_and_in_the_log() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.php"), "<?php echo 'x';").unwrap();
    let app = http_speaking_app();
    let to = format!("fastcgi://{app}");
    let h = Hopgate::start(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--to",
        to.as_str(),
        "--root",
        root.path().to_str().unwrap(),
    ]);
    let r = get(&h, "/index.php");
    assert_eq!(r.status, 502, "{}", r.text());
    // 'H' (72) where the version byte of a record belongs
    assert_eq!(r.text(), "hopgate: 502 Bad Gateway\nbad upstream response: FastCGI record version 72\n");
    let line = h.wait_stderr_line(&["FastCGI record version 72"]);
    assert!(line.contains("reason=protocol"), "{line}");
}

#[test]
fn a_route_to_hopgates_own_listener_is_508() {
    support::assert_own_listener_routes_are_508("fastcgi");
}
