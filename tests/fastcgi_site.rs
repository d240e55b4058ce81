//! A PHP application's whole root through one `fastcgi` route with `root` (issue 15), in front of a real php-fpm:
//! static files beside the scripts (the static-file room's rules: types, validators, ranges), directories (301,
//! their index), `static = false`, `.php` never sent as text (not even with php-fpm down), a non-PHP file never
//! sent to php-fpm, the front controller (REQUEST_URI, SCRIPT_NAME, the `/uploads/evil.jpg/x.php` trap), its
//! config errors, and `max_connections` (a counting relay between hopgate and php-fpm sees the connections).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::phpfpm::Fpm;
use support::{Hopgate, env_of, exchange};

const APP: &[(&str, &str)] = &[
    (
        "index.php",
        "<?php foreach (['REQUEST_URI','SCRIPT_NAME','SCRIPT_FILENAME','PATH_INFO'] as $k) \
                   echo \"$k=\" . ($_SERVER[$k] ?? '') . \"\\n\";",
    ),
    ("hello.php", "<?php echo 'hello from php';"),
    ("style.css", "body { background: url(img/logo.png) }\n"),
    ("img/logo.png", "\u{89}PNG-not-really"),
    ("uploads/evil.jpg", "<?php echo 'must never run';"),
    ("Shout.PHP", "<?php echo 'secret source';"),
    ("docs/index.php", "<?php echo 'docs index';"),
    ("docs/guide.txt", "0123456789"),
    ("empty/readme.txt", "r"),
];

fn site(fpm: &Fpm, keys: &str) -> Hopgate {
    Hopgate::route_config(&fpm.target(), &format!("root = \"{}\"\n{keys}", fpm.www.display()))
}

fn get(h: &Hopgate, path: &str, fields: &str) -> support::Resp {
    exchange(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{fields}Connection: close\r\n\r\n"))
}

#[test]
fn static_files_beside_scripts_and_what_never_crosses_over() {
    let mut fpm = Fpm::start(APP, true);
    let h = site(&fpm, "");
    assert_eq!(get(&h, "/hello.php", "").text(), "hello from php");
    let r = get(&h, "/style.css", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body { background: url(img/logo.png) }\n");
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(get(&h, "/style.css", &format!("If-None-Match: {etag}\r\n")).status, 304);
    let r = get(&h, "/docs/guide.txt", "Range: bytes=3-5\r\n");
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (206, "345", Some("bytes 3-5/10")));
    assert_eq!(get(&h, "/img/logo.png", "").header("content-type"), Some("image/png"));
    // A file that is not PHP is served as what it is, never run.
    let r = get(&h, "/uploads/evil.jpg", "");
    assert_eq!((r.status, r.text().as_str()), (200, "<?php echo 'must never run';"));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    // The fix_pathinfo trap without a front controller: 404 from hopgate.
    let r = get(&h, "/uploads/evil.jpg/x.php", "");
    assert_eq!(r.status, 404);
    assert!(r.text().starts_with("hopgate: 404"), "{}", r.text());
    // A script in another case is neither run nor sent as text.
    let r = get(&h, "/Shout.PHP", "");
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("secret source"));
    // Directories: 301 to add the slash, then their index; one without an index is 404.
    let r = get(&h, "/docs?x=1", "");
    assert_eq!((r.status, r.header("location")), (301, Some("/docs/?x=1")));
    assert_eq!(get(&h, "/docs/", "").text(), "docs index");
    assert_eq!(get(&h, "/empty/", "").status, 404);
    assert_eq!(get(&h, "/nothing-here", "").status, 404);
    // Static files answer only GET, HEAD and OPTIONS.
    let r = exchange(h.addr, "POST /style.css HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, OPTIONS")));

    let off = site(&fpm, "static = false");
    assert_eq!(get(&off, "/style.css", "").status, 404);
    assert_eq!(get(&off, "/hello.php", "").text(), "hello from php");

    // php-fpm down: scripts are 502, and still never sent as text.
    fpm.stop();
    let r = get(&h, "/hello.php", "");
    assert_eq!(r.status, 502);
    assert!(!r.text().contains("hello from php") && !r.text().contains("<?php"), "{}", r.text());
    assert_eq!(get(&h, "/style.css", "").status, 200, "static files need no php-fpm");
}

#[test]
fn a_front_controller_runs_for_paths_that_name_nothing() {
    let fpm = Fpm::start(APP, true);
    let h = site(&fpm, "front_controller = \"index.php\"");
    let root = std::fs::canonicalize(&fpm.www).unwrap();
    let env = env_of(&get(&h, "/blog/2024/hello-world?page=2", "").text());
    assert_eq!(env["REQUEST_URI"], "/blog/2024/hello-world?page=2");
    assert_eq!(env["SCRIPT_NAME"], "/index.php");
    assert_eq!(env["SCRIPT_FILENAME"], root.join("index.php").display().to_string());
    assert_eq!(env["PATH_INFO"], "");
    // The trap: the front controller may run, the file itself never.
    let r = get(&h, "/uploads/evil.jpg/x.php", "");
    assert_eq!(r.status, 200);
    let env = env_of(&r.text());
    assert_eq!((env["SCRIPT_NAME"].as_str(), env["REQUEST_URI"].as_str()), ("/index.php", "/uploads/evil.jpg/x.php"));
    assert!(!r.text().contains("must never run"));
    // What exists is still itself: static files, scripts, directories.
    assert_eq!(get(&h, "/style.css", "").header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(get(&h, "/hello.php", "").text(), "hello from php");
    assert_eq!(get(&h, "/docs/", "").text(), "docs index");
    assert_eq!(env_of(&get(&h, "/empty/", "").text())["SCRIPT_NAME"], "/index.php");
    // Under a route prefix, SCRIPT_NAME is mounted there.
    let p = Hopgate::route_config(
        &fpm.target(),
        &format!("path = \"/shop\"\nroot = \"{}\"\nfront_controller = \"/index.php\"", fpm.www.display()),
    );
    let env = env_of(&get(&p, "/shop/cart/add?id=3", "").text());
    assert_eq!((env["SCRIPT_NAME"].as_str(), env["REQUEST_URI"].as_str()), ("/shop/index.php", "/shop/cart/add?id=3"));
}

#[test]
fn front_controller_config_errors_name_the_line() {
    let fpm = Fpm::start(&[("index.php", "<?php"), ("app.js", "x")], true);
    for (key, want) in [
        ("front_controller = \"app.js\"", "does not end in \".php\""),
        ("front_controller = \"missing.php\"", "is no file under the root"),
        ("front_controller = \"../index.php\"", "a script path under the root is expected"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("h.toml");
        std::fs::write(
            &path,
            format!(
                "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"{}\"\nroot = \"{}\"\n{key}\n",
                fpm.target(),
                fpm.www.display()
            ),
        )
        .unwrap();
        let out = Command::new(support::bin()).arg("check").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(want) && err.contains("h.toml:"), "{key}: want {want:?} in {err}");
    }
}

/// A TCP relay in front of php-fpm that counts the connections open through it at once.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (open, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, p, a) = (open.clone(), peak.clone(), accepted.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let Ok(up) = TcpStream::connect(to) else { continue };
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                let o = o.clone();
                let (c2, up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, up2));
                std::thread::spawn(move || {
                    pump(up, c);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Relay { addr, open, peak, accepted }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn max_connections_bounds_the_connections_to_php_fpm() {
    let scripts = &[(
        "slow.php",
        "<?php for ($i = 0; $i < 8; $i++) { echo '.'; flush(); usleep((int)($_GET['ms'] ?? 100) * 1000); }",
    )];
    let fpm = Fpm::start(scripts, false);
    let support::phpfpm::Listen::Tcp(fpm_addr) = &fpm.listen else { unreachable!() };
    let relay = Relay::start(fpm_addr.parse().unwrap());
    let h = Hopgate::route_config(
        &format!("fastcgi://{}", relay.addr),
        &format!("root = \"{}\"\nmax_connections = 1\nscript_timeout_secs = 30", fpm.www.display()),
    );
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let addr = h.addr;
            std::thread::spawn(move || get_at(addr, "/slow.php"))
        })
        .collect();
    let bodies: Vec<(u16, String)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(bodies.iter().all(|(s, b)| *s == 200 && b == "........"), "{bodies:?}");
    assert_eq!(relay.peak.load(Ordering::SeqCst), 1, "one connection at a time");
    drop(h);
    assert!(support::wait_until(Duration::from_secs(5), || relay.open.load(Ordering::SeqCst) == 0));

    // Waiting for a connection is bounded by script_timeout_secs: the first request holds the only one for
    // about 3.2 s (writing every 0.4 s), the second gives up after 1 s with a 504 that names the limit.
    let h = Hopgate::route_config(
        &format!("fastcgi://{}", relay.addr),
        &format!("root = \"{}\"\nmax_connections = 1\nscript_timeout_secs = 1", fpm.www.display()),
    );
    let first = {
        let addr = h.addr;
        std::thread::spawn(move || get_at(addr, "/slow.php?ms=400"))
    };
    assert!(support::wait_until(Duration::from_secs(5), || relay.open.load(Ordering::SeqCst) == 1));
    let r = get(&h, "/slow.php", "");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("max_connections 1"), "{}", r.text());
    assert_eq!(first.join().unwrap(), (200, "........".to_string()));
}

/// With `max_connections` set (to php-fpm's 4 workers, as docs/cgi.md advises), every connection is kept: eight
/// busy keep-alive clients are served over the same four connections, none opened again. Left to its default,
/// only two are kept, and the others are closed and opened again as requests come.
#[test]
fn an_explicit_max_connections_keeps_every_connection() {
    let fpm = Fpm::start(&[("hi.php", "<?php echo 'hi';")], false);
    let support::phpfpm::Listen::Tcp(fpm_addr) = &fpm.listen else { unreachable!() };
    let load = |keys: &str| {
        let relay = Relay::start(fpm_addr.parse().unwrap());
        let h = Hopgate::route_config(
            &format!("fastcgi://{}", relay.addr),
            &format!("root = \"{}\"\n{keys}", fpm.www.display()),
        );
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let addr = h.addr;
                std::thread::spawn(move || {
                    let mut raw = support::Raw::connect(addr);
                    for _ in 0..50 {
                        let r = raw.send("GET /hi.php HTTP/1.1\r\nHost: a\r\n\r\n").response();
                        assert_eq!((r.status, r.text()), (200, "hi".to_string()));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let (accepted, peak) = (relay.accepted.load(Ordering::SeqCst), relay.peak.load(Ordering::SeqCst));
        drop(h);
        (accepted, peak)
    };
    let (accepted, peak) = load("max_connections = 4");
    assert!(peak <= 4 && accepted == peak, "400 requests over {accepted} connections (at most {peak} at once)");
    // The default (4 per core: 8 here) is more than php-fpm's workers: with only two kept, the connections waiting
    // in php-fpm's backlog are accepted as others close, and every request is served.
    let (accepted, _) = load("script_timeout_secs = 20");
    assert!(accepted > 4, "the default keeps two: {accepted} connections");
}

fn get_at(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    (r.status, r.text())
}
