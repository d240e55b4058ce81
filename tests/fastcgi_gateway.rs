//! The FastCGI gateway end to end: the real binary in front of a real php-fpm (Debian package php-fpm) that each
//! test starts in the foreground on a loopback port or a unix socket and stops by PID. Hello world over TCP and a
//! unix socket, the index for directory paths, PATH_INFO after `.php`, the cgi.fix_pathinfo trap (404), POST bodies
//! by sha256, Status passthrough, php-fpm down (502), a slow script (504), the access log naming the app.

mod support;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::phpfpm::Fpm;
use support::{Hopgate, curl, exchange};

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
    ("sleep.php", "<?php usleep((int)($_GET['ms'] ?? 200) * 1000); echo 'slept';"),
    ("app/home.php", "<?php echo 'home of app';"),
    ("app/index.php", "<?php echo 'index of app';"),
    ("uploads/evil.jpg", "<?php echo 'must never run';"),
];

fn start_fpm(unix: bool) -> Fpm {
    Fpm::start(SCRIPTS, unix)
}

fn gateway(fpm: &Fpm, extra: &[&str]) -> Hopgate {
    let root = fpm.www.display().to_string();
    let target = fpm.target();
    let mut args = vec!["gateway", "--listen", "127.0.0.1:0", "--to", target.as_str(), "--root", root.as_str()];
    args.extend_from_slice(extra);
    Hopgate::start(&args)
}

fn get(h: &Hopgate, path: &str) -> support::Resp {
    exchange(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: php.test\r\nConnection: close\r\n\r\n"))
}

fn wait_log_line(h: &Hopgate, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = h.stdout_text();
        if let Some(line) = out.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no access log line with {needle:?} in {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hello_world_over_tcp_names_the_app_in_the_access_log() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let (code, body, err) = curl(&[&format!("{}/hello.php", h.url())]);
    assert_eq!((code, body.as_slice()), (200, &b"hello world\n"[..]), "{err}");
    let line = wait_log_line(&h, "/hello.php");
    let app = fpm.target();
    let app = app.strip_prefix("fastcgi://").unwrap();
    assert!(line.contains("\"GET /hello.php HTTP/1.1\" 200 12 ") && line.ends_with(app), "{line}");
}

#[test]
fn hello_world_over_a_unix_socket() {
    let fpm = start_fpm(true);
    let h = gateway(&fpm, &[]);
    for _ in 0..3 {
        let (code, body, err) = curl(&[&format!("{}/hello.php", h.url())]);
        assert_eq!((code, body.as_slice()), (200, &b"hello world\n"[..]), "{err}");
    }
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
    let text = r.text();
    let root = std::fs::canonicalize(&fpm.www).unwrap();
    for want in [
        "SCRIPT_NAME=/server.php".to_string(),
        "PATH_INFO=/extra/x".into(),
        format!("SCRIPT_FILENAME={}/server.php", root.display()),
        format!("DOCUMENT_ROOT={}", root.display()),
        "QUERY_STRING=q=1".into(),
        "REQUEST_URI=/server.php/extra/x?q=1".into(),
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
fn fix_pathinfo_trap_is_404() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    for path in [
        "/uploads/evil.jpg/x.php",
        "/uploads/evil.jpg/.php",
        "/uploads/evil.jpg",
        "/uploads/evil.jpg%2fx.php",
        "/nope.php",
        "/../www/hello.php",
        "/%2e%2e/www/hello.php",
    ] {
        let r = get(&h, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("must never run"), "{path}");
        assert!(r.text().starts_with("hopgate: 404"), "{path}: answered by hopgate, not php-fpm: {}", r.text());
    }
}

#[test]
fn post_bodies_by_sha256_with_and_without_content_length() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let url = format!("{}/echo.php", h.url());
    for (size, chunked) in [(4usize << 20, false), (1 << 20, true)] {
        let data: Vec<u8> = (0..size as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        let input = fpm.dir().join("in.bin");
        std::fs::write(&input, &data).unwrap();
        let at = format!("@{}", input.display());
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
        assert!(Sha256::digest(&out[end..]) == Sha256::digest(&data), "chunked: {chunked}");
    }
}

#[test]
fn status_passes_through() {
    let fpm = start_fpm(false);
    let h = gateway(&fpm, &[]);
    let r = get(&h, "/teapot.php");
    assert_eq!((r.status, r.text().as_str()), (418, "short and stout"));
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
}

#[test]
fn slow_script_is_504_after_script_timeout() {
    let fpm = start_fpm(false);
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"{}\"\n\
         root = \"{}\"\nscript_timeout_secs = 1\n",
        fpm.target(),
        fpm.www.display()
    ));
    assert_eq!(get(&h, "/sleep.php?ms=100").text(), "slept");
    let start = Instant::now();
    let r = get(&h, "/sleep.php?ms=4000");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "answered after {took:?}");
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
