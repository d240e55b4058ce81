//! The HTTP/FTP gateway end to end (issue 5): curl and raw sockets against the real binary, both as
//! `hopgate proxy` (absolute-form ftp://) and as `hopgate gateway --to ftp://...`, in front of vsftpd,
//! pyftpdlib and the rogue server of tests/support/ftp_rogue.rs. Prints the download throughput through the
//! gateway and direct from the same server, and the gateway's RSS (no timed assertions).

#[path = "support/ftp_peers.rs"]
mod ftp_peers;
#[path = "support/ftp_rogue.rs"]
mod ftp_rogue;
mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ftp_peers::{hex, pseudo_random, pyftpdlib, sha256_hex, vsftpd};
use ftp_rogue::{Retr, Script, rogue_in_thread};
use sha2::{Digest, Sha256};
use support::{Hopgate, Raw, exchange};

const MIB: u64 = 1 << 20;

fn gateway(to: &str) -> Hopgate {
    Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", to])
}

/// A forward proxy that may reach loopback FTP servers.
fn proxy() -> Hopgate {
    Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8"])
}

/// What curl got: exit status, status code, response head(s) and body.
struct Curl {
    ok: bool,
    code: u16,
    head: String,
    body: Vec<u8>,
    stderr: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<String> {
        // the last response head (after a 100 Continue)
        let last = self.head.split("\r\n\r\n").filter(|h| !h.trim().is_empty()).last().unwrap_or("");
        last.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl (a 60 s limit) with `args`; the body comes back in memory (small responses only).
fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-o", "-", "-D"])
        .arg(&head)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (Debian package curl)");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[nl + 1..]).trim().parse().unwrap_or(0);
    body.truncate(nl);
    Curl {
        ok: out.status.success(),
        code,
        head: fs::read_to_string(&head).unwrap_or_default(),
        body,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Streams a download through curl into SHA-256 (never held in memory): (curl ok, bytes, sha256, seconds).
fn curl_sha(args: &[&str]) -> (bool, u64, String, f64) {
    let start = Instant::now();
    let mut child = Command::new("curl")
        .args(["-s", "-S", "--max-time", "300"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl is installed (Debian package curl)");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).expect("read curl output");
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    let ok = child.wait().expect("wait curl").success();
    (ok, total, hex(&hasher.finalize()), start.elapsed().as_secs_f64())
}

/// curl's own measure of a download to /dev/null, in MiB/s.
fn curl_speed(args: &[&str]) -> f64 {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "300", "-o", "/dev/null", "-w", "%{speed_download}"])
        .args(args)
        .output()
        .expect("curl is installed (Debian package curl)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap_or(0.0) / MIB as f64
}

/// Samples a process's RSS every 20 ms until finished; the peak, in KiB.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(support::proc_status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { stop, peak, handle: Some(handle) }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Writes `len` pseudo-random bytes to `path` in 1 MiB blocks; returns their SHA-256.
fn write_big(path: &Path, len: u64) -> String {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut left = len;
    let mut seed = 1;
    while left > 0 {
        let n = left.min(MIB);
        let block = pseudo_random(n as usize, seed);
        hasher.update(&block);
        f.write_all(&block).unwrap();
        left -= n;
        seed += 1;
    }
    f.flush().unwrap();
    hex(&hasher.finalize())
}

/// The tree most tests serve: odd names, a sub-directory, a text file.
fn fill_tree(root: &Path) {
    fs::write(root.join("hello.txt"), b"hello, ftp\n").unwrap();
    fs::write(root.join("<script>alert(1)&x.txt"), b"x").unwrap();
    fs::write(root.join("a file with spaces.txt"), b"spaces\n").unwrap();
    fs::write(root.join("über ☃.bin"), b"utf8 name").unwrap();
    fs::write(root.join("empty.dat"), b"").unwrap();
    fs::create_dir(root.join("sub dir")).unwrap();
    fs::write(root.join("sub dir/inner.txt"), b"inner").unwrap();
}

#[test]
fn a_large_file_streams_byte_exact_with_flat_rss_through_gateway_and_proxy() {
    // release (CI): 512 MiB; a debug build moves less so that `cargo test` stays quick
    let size: u64 = if cfg!(debug_assertions) { 64 * MIB } else { 512 * MIB };
    let mut want = String::new();
    let peer = vsftpd(|root| want = write_big(&root.join("big.bin"), size), "");
    let direct_url = format!("ftp://{}/big.bin", peer.addr);
    let gw = gateway(&format!("ftp://{}", peer.addr));
    let gw_url = format!("{}/big.bin", gw.url());

    // warm up (pool, allocator), then the baseline
    let warm = curl(&[&format!("{}/", gw.url())]);
    assert_eq!(warm.code, 200, "{}", warm.stderr);
    std::thread::sleep(Duration::from_millis(200));
    let base = gw.rss_kib();
    let watch = RssWatch::start(gw.pid());
    let (ok, n, sum, secs) = curl_sha(&[&gw_url]);
    let peak = watch.finish();
    assert!(ok && n == size, "gateway download: ok={ok}, {n} of {size} bytes\n{}", peer.log());
    assert_eq!(sum, want, "gateway download is not byte-exact");
    let growth_kib = peak.saturating_sub(base);
    println!(
        "gateway GET of {} MiB: sha256 ok, {:.0} MiB/s (hashed by the test); RSS {} KiB before, peak {} KiB, \
         growth {} KiB",
        size / MIB,
        size as f64 / MIB as f64 / secs,
        base,
        peak,
        growth_kib
    );
    assert!(growth_kib < 48 * 1024, "RSS grew by {growth_kib} KiB while streaming {} MiB", size / MIB);

    // throughput: the same file, curl to /dev/null, through the gateway and direct from vsftpd
    let via_gateway = curl_speed(&[&gw_url]);
    let direct = curl_speed(&[&direct_url]);
    println!(
        "throughput of {} MiB: through the gateway {via_gateway:.0} MiB/s (curl {gw_url}), direct {direct:.0} MiB/s \
         (curl {direct_url})",
        size / MIB
    );

    // the forward proxy: absolute-form ftp:// from curl -x, byte-exact too
    let px = proxy();
    let (ok, n, sum, secs) = curl_sha(&["-x", &px.url(), &direct_url]);
    assert!(ok && n == size && sum == want, "proxy download: ok={ok}, {n} of {size} bytes");
    println!("proxy GET (curl -x {} {direct_url}): sha256 ok, {:.0} MiB/s", px.url(), size as f64 / MIB as f64 / secs);
}

#[test]
fn vsftpd_head_range_listings_redirects_and_errors() {
    let peer = vsftpd(fill_tree, "");
    let gw = gateway(&format!("ftp://{}", peer.addr));
    let base = gw.url();

    // the first request has CR/LF in its path: 400, and vsftpd never sees a connection
    let r = exchange(gw.addr, "GET /a%0D%0ADELE%20hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = exchange(gw.addr, "GET /x%00y HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!peer.log().contains("FTP command"), "a command reached vsftpd:\n{}", peer.log());

    // HEAD: SIZE and MDTM only
    let head = curl(&["-I", &format!("{base}/hello.txt")]);
    assert_eq!(head.code, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("11"));
    assert_eq!(head.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(head.header("accept-ranges").as_deref(), Some("bytes"));
    let mtime = fs::metadata(peer.root.join("hello.txt")).unwrap().modified().unwrap();
    assert_eq!(head.header("last-modified"), Some(httpdate_of(mtime)));
    assert!(!peer.log().contains("RETR"), "HEAD sent RETR:\n{}", peer.log());

    let get = curl(&[&format!("{base}/hello.txt")]);
    assert_eq!((get.code, get.body.as_slice()), (200, &b"hello, ftp\n"[..]));

    // Range: bytes=N- is REST + 206; past the end 416; other forms the whole file
    let r = curl(&["-H", "Range: bytes=7-", &format!("{base}/hello.txt")]);
    assert_eq!((r.code, r.text().as_str()), (206, "ftp\n"));
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 7-10/11"));
    assert_eq!(r.header("content-length").as_deref(), Some("4"));
    assert!(peer.log().contains("REST 7"), "{}", peer.log());
    let r = curl(&["-H", "Range: bytes=11-", &format!("{base}/hello.txt")]);
    assert_eq!(r.code, 416);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */11"));
    let r = curl(&["-H", "Range: bytes=0-3", &format!("{base}/hello.txt")]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello, ftp\n"));

    // names with spaces and UTF-8 (percent-encoded UTF-8 in the URL)
    let r = curl(&[&format!("{base}/a%20file%20with%20spaces.txt")]);
    assert_eq!((r.code, r.text().as_str()), (200, "spaces\n"));
    let r = curl(&[&format!("{base}/%C3%BCber%20%E2%98%83.bin")]);
    assert_eq!((r.code, r.text().as_str()), (200, "utf8 name"));
    assert_eq!(r.header("content-type").as_deref(), Some("application/octet-stream"));
    let r = curl(&[&format!("{base}/empty.dat")]);
    assert_eq!((r.code, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length").as_deref(), Some("0"));

    // directories: HTML listing, JSON listing, redirect to the slash
    let page = curl(&[&format!("{base}/")]);
    assert_eq!(page.code, 200);
    assert_eq!(page.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let html = page.text();
    assert!(html.contains(">&lt;script&gt;alert(1)&amp;x.txt</a>"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("<a href=\"%3Cscript%3Ealert%281%29%26x.txt\">"), "{html}");
    assert!(html.contains("<a href=\"a%20file%20with%20spaces.txt\">a file with spaces.txt</a>"), "{html}");
    assert!(html.contains("<a href=\"%C3%BCber%20%E2%98%83.bin\">über ☃.bin</a>"), "{html}");
    assert!(html.contains("<a href=\"sub%20dir/\">sub dir/</a>"), "{html}");
    assert!(html.contains("<td align=\"right\">11</td>"), "sizes: {html}");
    assert!(!html.contains("../"), "no parent link at the top: {html}");
    let sub = curl(&[&format!("{base}/sub%20dir/")]);
    assert!(sub.text().contains("<a href=\"../\">../</a>"), "{}", sub.text());
    assert!(sub.text().contains("<a href=\"inner.txt\">inner.txt</a>"), "{}", sub.text());
    assert!(sub.text().contains("Index of /sub dir/"), "{}", sub.text());

    let head = curl(&["-I", &format!("{base}/")]);
    assert_eq!(head.code, 200);
    assert_eq!(head.header("content-length"), Some(page.body.len().to_string()));

    let json = curl(&["-H", "Accept: application/json", &format!("{base}/")]);
    assert_eq!(json.header("content-type").as_deref(), Some("application/json"));
    let j = json.text();
    assert!(j.starts_with('[') && j.trim_end().ends_with(']'), "{j}");
    assert!(j.contains("{\"name\":\"sub dir\",\"type\":\"dir\""), "{j}");
    assert!(j.contains("{\"name\":\"hello.txt\",\"type\":\"file\",\"size\":11,\"modified\":\""), "{j}");
    assert!(j.contains("\"name\":\"über ☃.bin\""), "{j}");
    assert!(j.contains("\"name\":\"<script>alert(1)&x.txt\""), "{j}");

    let r = curl(&[&format!("{base}/sub%20dir")]);
    assert_eq!(r.code, 301);
    assert_eq!(r.header("location").as_deref(), Some("/sub%20dir/"));
    let r = curl(&["-L", &format!("{base}/sub%20dir")]);
    assert_eq!(r.code, 200);
    assert!(r.text().contains("inner.txt"));

    // errors carry vsftpd's own reply
    let r = curl(&[&format!("{base}/nope.txt")]);
    assert_eq!(r.code, 404);
    assert!(r.text().contains("550 Could not get file size."), "{}", r.text());
    let r = curl(&["-T", "-", &format!("{base}/up.txt")]);
    assert_eq!(r.code, 403, "{}", r.text());
    assert!(r.text().contains("550 Permission denied."), "{}", r.text());
    let r = curl(&["-X", "DELETE", &format!("{base}/hello.txt")]);
    assert_eq!(r.code, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, PUT"));

    // the access log names the FTP server
    std::thread::sleep(Duration::from_millis(100));
    let log = gw.stdout_text();
    assert!(
        log.lines().any(|l| l.contains("\"GET /hello.txt HTTP/1.1\" 200 11") && l.ends_with(&peer.addr.to_string()))
    );

    // the server stops: 502 (vsftpd serves each session from a process of its own, so a gateway that still
    // holds a pooled session would go on talking to that one: ask a fresh gateway)
    let addr = peer.addr;
    drop(peer);
    let fresh = gateway(&format!("ftp://{addr}"));
    let r = curl(&[&format!("{}/hello.txt", fresh.url())]);
    assert_eq!(r.code, 502, "{}", r.text());
    assert!(r.text().contains("connection refused"), "{}", r.text());
}

fn httpdate_of(t: std::time::SystemTime) -> String {
    // the FTP side has one-second resolution, as does an HTTP-date
    httpdate::fmt_http_date(t)
}

#[test]
fn the_proxy_serves_ftp_urls_with_the_target_policy() {
    let peer = vsftpd(fill_tree, "");
    let px = proxy();
    let r = curl(&["-x", &px.url(), &format!("ftp://{}/hello.txt", peer.addr)]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello, ftp\n"), "{}", r.stderr);
    assert_eq!(r.header("content-length").as_deref(), Some("11"));

    // a directory without its slash redirects to the ftp:// URL with it
    let r = curl(&["-x", &px.url(), &format!("ftp://{}/sub%20dir", peer.addr)]);
    assert_eq!(r.code, 301);
    assert_eq!(r.header("location"), Some(format!("ftp://{}/sub%20dir/", peer.addr)));
    let r = curl(&["-x", &px.url(), &format!("ftp://{}/sub%20dir/", peer.addr)]);
    assert!(r.text().contains("<a href=\"../\">../</a>") && r.text().contains("inner.txt"), "{}", r.text());

    // CR/LF in the path: 400, nothing sent
    let before = peer.log().matches("FTP command").count();
    let mut c = Raw::connect(px.addr);
    c.send(format!("GET ftp://{}/x%0d%0aDELE%20hello.txt HTTP/1.1\r\nHost: {}\r\n\r\n", peer.addr, peer.addr));
    assert_eq!(c.response().status, 400);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(peer.log().matches("FTP command").count(), before, "{}", peer.log());
    assert!(!peer.log().contains("DELE"));

    // without --allow-target, a loopback FTP server is refused like any loopback target
    let strict = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0"]);
    let r = curl(&["-x", &strict.url(), &format!("ftp://{}/hello.txt", peer.addr)]);
    assert_eq!(r.code, 403, "{}", r.text());
}

#[test]
fn pyftpdlib_logins_uploads_and_the_uploads_switch() {
    let peer = pyftpdlib(fill_tree, "bob", "s3cret");
    let gw = gateway(&format!("ftp://{}", peer.addr));
    let base = gw.url();

    // anonymous by default (MLSD/MLST server)
    let r = curl(&[&format!("{base}/hello.txt")]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello, ftp\n"));
    let r = curl(&[&format!("{base}/")]);
    assert!(r.text().contains("&lt;script&gt;") && r.text().contains("sub%20dir/"), "{}", r.text());

    // a refused log-in: 401 with the challenge; the right Authorization: Basic works
    let r = curl(&["-u", "bob:wrong", &format!("{base}/hello.txt")]);
    assert_eq!(r.code, 401, "{}", r.text());
    let realm = "Basic realm=\"FTP 127.0.0.1\"";
    assert_eq!(r.header("www-authenticate").as_deref(), Some(realm));
    assert!(r.text().contains("530 "), "{}", r.text());
    let r = curl(&["-u", "bob:s3cret", &format!("{base}/hello.txt")]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello, ftp\n"));

    // a gateway whose --to names a user the server refuses answers 401 until the client logs in
    let as_bob = gateway(&format!("ftp://bob:nope@{}", peer.addr));
    let r = curl(&[&format!("{}/hello.txt", as_bob.url())]);
    assert_eq!(r.code, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some(realm));
    let r = curl(&["-u", "bob:s3cret", &format!("{}/hello.txt", as_bob.url())]);
    assert_eq!(r.code, 200);

    // PUT: anonymous may not (the server's own 550 text), bob may; streamed, then read back
    let src = tempfile::tempdir().unwrap();
    let upload = src.path().join("up.bin");
    let data = pseudo_random(5 * MIB as usize + 7, 42);
    fs::write(&upload, &data).unwrap();
    let up = upload.to_str().unwrap();
    let r = curl(&["-T", up, &format!("{base}/up.bin")]);
    assert_eq!(r.code, 403, "{}", r.text());
    assert!(r.text().contains("550 Not enough privileges."), "{}", r.text());
    let r = curl(&["-u", "bob:s3cret", "-T", up, &format!("{base}/new%20%C3%BC%20file.bin")]);
    assert_eq!(r.code, 201, "{}", r.text());
    let stored = peer.root.join("new ü file.bin");
    assert_eq!(sha256_hex(&fs::read(&stored).unwrap()), sha256_hex(&data), "the stored file differs");
    let r = curl(&["-u", "bob:s3cret", &format!("{base}/new%20%C3%BC%20file.bin")]);
    assert_eq!((r.code, sha256_hex(&r.body)), (200, sha256_hex(&data)));
    let listing = curl(&["-H", "Accept: application/json", &format!("{base}/")]).text();
    assert!(listing.contains("\"name\":\"new ü file.bin\",\"type\":\"file\",\"size\":5242887"), "{listing}");
    let r = curl(&[&format!("{base}/missing.txt")]);
    assert_eq!(r.code, 404);
    assert!(r.text().contains("550 No such file or directory."), "{}", r.text());

    // the forward proxy: credentials in the URL, or from Authorization
    let px = proxy();
    let r = curl(&["-x", &px.url(), &format!("ftp://bob:s3cret@{}/hello.txt", peer.addr)]);
    assert_eq!(r.code, 200);
    let r = curl(&["-x", &px.url(), &format!("ftp://bob:bad@{}/hello.txt", peer.addr)]);
    assert_eq!(r.code, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some(realm));
    let put = curl(&["-x", &px.url(), "-T", up, &format!("ftp://bob:s3cret@{}/via-proxy.bin", peer.addr)]);
    // curl uploads ftp:// through an HTTP proxy with PUT
    assert_eq!(put.code, 201, "{}", put.text());
    assert_eq!(fs::read(peer.root.join("via-proxy.bin")).unwrap().len(), data.len());

    // uploads = false in the config: PUT is 405 with Allow, GET still works
    let ro = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"ftp://{}\"\n\
         uploads = false\n",
        peer.addr
    ));
    let r = curl(&["-u", "bob:s3cret", "-T", up, &format!("{}/ro.bin", ro.url())]);
    assert_eq!(r.code, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    assert!(!peer.root.join("ro.bin").exists());
    assert_eq!(curl(&[&format!("{}/hello.txt", ro.url())]).code, 200);
}

#[test]
fn a_gateway_maps_paths_under_its_directory() {
    let peer = vsftpd(fill_tree, "");
    let gw = gateway(&format!("ftp://{}/sub%20dir", peer.addr));
    let r = curl(&[&format!("{}/inner.txt", gw.url())]);
    assert_eq!((r.code, r.text().as_str()), (200, "inner"));
    let r = curl(&[&format!("{}/", gw.url())]);
    assert!(r.text().contains("inner.txt") && !r.text().contains("../"), "{}", r.text());
    // the directory can't be left
    let r = exchange(gw.addr, "GET /../hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = exchange(gw.addr, "GET /%2E%2E/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = exchange(gw.addr, "GET /%2Fhello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);

    // a route with a path prefix: the prefix is the directory
    let routed = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\npath = \"/files\"\n\
         to = \"ftp://{}/sub%20dir\"\n",
        peer.addr
    ));
    let r = curl(&[&format!("{}/files", routed.url())]);
    assert_eq!(r.code, 301);
    assert_eq!(r.header("location").as_deref(), Some("/files/"));
    let r = curl(&[&format!("{}/files/", routed.url())]);
    assert!(r.text().contains("Index of /files/") && r.text().contains("<a href=\"inner.txt\">"), "{}", r.text());
    let r = curl(&[&format!("{}/files/inner.txt", routed.url())]);
    assert_eq!((r.code, r.text().as_str()), (200, "inner"));
    assert_eq!(curl(&[&format!("{}/other", routed.url())]).code, 404);
}

#[test]
fn rogue_pasv_address_is_ignored_and_sessions_are_reused() {
    let script = Script { epsv: false, pasv_names: Ipv4Addr::new(127, 0, 0, 2), ..Script::default() };
    let file = script.file.clone();
    let (addr, seen) = rogue_in_thread(script);
    let gw = gateway(&format!("ftp://{addr}"));
    for _ in 0..3 {
        let r = curl(&[&format!("{}/f.bin", gw.url())]);
        assert_eq!(r.code, 200, "{}", r.text());
        assert_eq!(r.body, file);
    }
    assert_eq!(seen.decoy_hits.load(Ordering::SeqCst), 0, "a data connection went to the PASV address");
    assert!(seen.count("PASV") >= 3, "{:?}", seen.commands());
    assert_eq!(seen.logins.load(Ordering::SeqCst), 1, "control connection not reused: {:?}", seen.commands());

    // the server's reply text reaches the page as the server sent it: the page is text/plain (and nosniff), so
    // markup in it is inert, and escaping it would only garble the reply
    let r = curl(&[&format!("{}/missing.bin", gw.url())]);
    assert_eq!(r.code, 404);
    assert!(r.text().contains("answered: 550 <missing> & gone\n"), "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
}

#[test]
fn a_dropped_data_connection_cuts_the_http_response() {
    for retr in [Retr::DropThen426, Retr::DropAndHangUp, Retr::ShortThen226] {
        let (addr, _) = rogue_in_thread(Script { retr, ..Script::default() });
        let full = Script::default().file.len();
        let gw = gateway(&format!("ftp://{addr}"));
        // curl sees a response shorter than its Content-Length and fails (exit 18)
        let r = curl(&[&format!("{}/f.bin", gw.url())]);
        assert!(!r.ok, "curl took a cut file as complete ({} bytes)", r.body.len());
        assert!(r.body.len() < full, "{} bytes", r.body.len());
        assert!(r.stderr.contains("(18)"), "{}", r.stderr);
        // the same on the wire: the head promised the full length, the connection closes short of it
        let mut c = Raw::connect(gw.addr);
        c.send("GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        let got = c.read_to_close();
        let head_end = support::find(&got, b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&got[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 200") && head.contains(&format!("content-length: {full}")), "{head}");
        assert!(got.len() - head_end < full, "{retr:?}: the whole body arrived");
    }
    // and through the proxy, for a 426 after half the file
    let (addr, _) = rogue_in_thread(Script { retr: Retr::DropThen426, ..Script::default() });
    let px = proxy();
    let r = curl(&["-x", &px.url(), &format!("ftp://{addr}/f.bin")]);
    assert!(!r.ok && r.stderr.contains("(18)"), "{}", r.stderr);
}

#[test]
fn the_proxys_users_guard_ftp_urls_and_a_parent_is_not_bypassed() {
    let (addr, seen) = rogue_in_thread(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    support::peers::htpasswd(&users, &["-B", "-C", "5"], "pat", "pat-secret");
    let px = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.0/8",
        "--users",
        users.to_str().unwrap(),
    ]);
    let url = format!("ftp://{addr}/f.bin");
    let r = curl(&["-x", &px.url(), &url]);
    assert_eq!(r.code, 407);
    assert!(seen.commands().is_empty(), "{:?}", seen.commands());
    let r = curl(&["-x", &px.url(), "--proxy-user", "pat:pat-secret", &url]);
    assert_eq!((r.code, r.body.len()), (200, Script::default().file.len()));

    // with a parent proxy every request must go through it: ftp:// is refused rather than sent around it
    let chained = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.0/8",
        "--parent",
        "http://127.0.0.1:9",
    ]);
    let before = seen.commands().len();
    let r = curl(&["-x", &chained.url(), &url]);
    assert_eq!(r.code, 501, "{}", r.text());
    assert_eq!(seen.commands().len(), before);
}

#[test]
fn an_oversized_listing_is_502() {
    // the listing cap (16 MiB) holds against a server that sends more
    let (addr, _) = rogue_in_thread(Script { list: vec![b'x'; 17 << 20], ..Script::default() });
    let gw = gateway(&format!("ftp://{addr}"));
    let r = curl(&[&format!("{}/", gw.url())]);
    assert_eq!(r.code, 502);
    assert!(r.text().contains("listing larger than"), "{}", r.text());
}

#[test]
fn unreachable_or_refusing_servers_are_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let gw = gateway(&format!("ftp://{gone}"));
    let r = curl(&[&format!("{}/x", gw.url())]);
    assert_eq!(r.code, 502, "{}", r.text());
    gw.wait_stderr_line(&["502 Bad Gateway: connection refused by", "reason=refused"]);

    // 421: the server refuses service. Not a refused connection: its own reason, its reply kept word for word.
    let (addr, _) = rogue_in_thread(Script { greeting: "421 Too many <users>", ..Script::default() });
    let gw = gateway(&format!("ftp://{addr}"));
    let r = curl(&[&format!("{}/x", gw.url())]);
    assert_eq!(r.code, 502);
    assert!(r.text().contains(&format!("ftp server {addr} answered: 421 Too many <users>\n")), "{}", r.text());
    let line = gw.wait_stderr_line(&["421 Too many <users>"]);
    assert!(line.contains("reason=unavailable"), "{line}");
}

#[test]
fn a_rejected_command_keeps_its_reply_code_and_text() {
    // 451 to SIZE, CWD and RETR: not a protocol error, a refusal, with the server's words on the page and in the log
    let (addr, _) = rogue_in_thread(Script { missing: "451 <b>busy</b> & try later", ..Script::default() });
    let gw = gateway(&format!("ftp://{addr}"));
    let r = curl(&[&format!("{}/missing.bin", gw.url())]);
    assert_eq!(r.code, 502, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("hopgate: 502 Bad Gateway\nftp server {addr} answered RETR with: 451 <b>busy</b> & try later\n")
    );
    let line = gw.wait_stderr_line(&["answered RETR with: 451 <b>busy</b>"]);
    assert!(line.contains("reason=rejected"), "{line}");
}
