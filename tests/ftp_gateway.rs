//! The HTTP/FTP gateway end to end (issue 5): curl and raw sockets against the real binary, both as
//! `hopgate proxy` (absolute-form ftp://) and as `hopgate gateway --to ftp://...`, in front of vsftpd (LIST, EPSV,
//! anonymous, its protocol log showing every command), pyftpdlib (MLSD/MLST, a user with write rights) and the
//! rogue server of tests/support/ftp_rogue.rs (PASV naming another address, dropped data connections, short
//! transfers, 421, silence, odd and oversized listings, control connections it closes; it records every command).
//! Prints the gateway's RSS while it streams a large file (bench/run F measures the throughput).

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::ftp_peers::{Peer, pyftpdlib, vsftpd};
use support::ftp_rogue::{Retr, Script, rogue_in_thread};
use support::{
    ClosedPort, Curl, DataFile, Hopgate, Raw, RssWatch, exchange, hex, pseudo_random, sha256_hex, wait_until,
};

const MIB: u64 = 1 << 20;

fn gateway(to: &str) -> Hopgate {
    Hopgate::gateway(to, &[])
}

/// A forward proxy that may reach loopback FTP servers.
fn proxy() -> Hopgate {
    Hopgate::proxy(&[])
}

fn curl(args: &[&str]) -> Curl {
    support::curl_full(args)
}

/// Streams a download through curl into SHA-256 (never held in memory): (curl ok, bytes, sha256).
fn curl_sha(args: &[&str]) -> (bool, u64, String) {
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
    (ok, total, hex(&hasher.finalize()))
}

/// The FTP commands vsftpd logged (`log_ftp_protocol`), once it has logged `until`: the log is written as
/// commands arrive, and what a test asserts about earlier commands holds once a later one is in.
fn commands_until(peer: &Peer, until: &str) -> Vec<String> {
    let commands = || -> Vec<String> {
        peer.log()
            .lines()
            .filter_map(|l| l.split_once("FTP command: ").map(|(_, c)| c.split_once(", ").map_or(c, |(_, c)| c)))
            .map(|c| c.trim_matches('"').to_string())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || commands().iter().any(|c| c == until)),
        "no {until:?} in:\n{}",
        peer.log()
    );
    commands()
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

/// The size of `big.bin` in the tree most tests serve: more than a few transfer buffers, an odd number of bytes.
const BIG: usize = 8 * 1024 * 1024 + 12_345;

/// The tree most tests serve: odd names, a sub-directory, a text file, an empty one, a symlink, a larger file.
fn fill_tree(root: &Path) {
    fs::write(root.join("hello.txt"), b"hello, ftp\n").unwrap();
    fs::write(root.join("<script>alert(1)&x.txt"), b"x").unwrap();
    fs::write(root.join("a file with spaces.txt"), b"spaces\n").unwrap();
    fs::write(root.join("über ☃.bin"), b"utf8 name").unwrap();
    fs::write(root.join("empty.dat"), b"").unwrap();
    fs::create_dir(root.join("sub dir")).unwrap();
    fs::write(root.join("sub dir/inner.txt"), b"inner").unwrap();
    fs::write(root.join("big.bin"), pseudo_random(BIG, 1)).unwrap();
    symlink("hello.txt", root.join("link")).unwrap();
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
    let base = gw.rss_kib();
    let watch = RssWatch::start(gw.pid());
    let (ok, n, sum) = curl_sha(&[&gw_url]);
    let peak = watch.finish();
    assert!(ok && n == size, "gateway download: ok={ok}, {n} of {size} bytes\n{}", peer.log());
    assert_eq!(sum, want, "gateway download is not byte-exact");
    let growth_kib = peak.saturating_sub(base);
    println!(
        "gateway GET of {} MiB: sha256 ok; RSS {base} KiB before, peak {peak} KiB, growth {growth_kib} KiB",
        size / MIB
    );
    assert!(growth_kib < 48 * 1024, "RSS grew by {growth_kib} KiB while streaming {} MiB", size / MIB);

    // the forward proxy: absolute-form ftp:// from curl -x, byte-exact too
    let px = proxy();
    let (ok, n, sum) = curl_sha(&["-x", &px.url(), &direct_url]);
    assert!(ok && n == size && sum == want, "proxy download: ok={ok}, {n} of {size} bytes");
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
    // Once vsftpd logged this request's RETR, it would have logged anything the two refused requests sent before.
    let commands = commands_until(&peer, "RETR hello.txt");
    let paths: Vec<&String> = commands.iter().filter(|c| !c.starts_with("USER") && !c.starts_with("PASS")).collect();
    assert!(
        !paths.iter().any(|c| c.contains("DELE") || c.ends_with(" a") || c.contains(" x")),
        "a command of a refused request reached vsftpd: {commands:?}"
    );
    assert!(commands.iter().any(|c| c == "EPSV"), "EPSV was not used: {commands:?}");

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
    // a larger file: HEAD has its size, and the rest of it from an odd offset is byte-exact
    let head = curl(&["-I", &format!("{base}/big.bin")]);
    assert_eq!(head.header("content-length"), Some(BIG.to_string()));
    let offset = 3_000_001;
    let r = curl(&["-H", &format!("Range: bytes={offset}-"), &format!("{base}/big.bin")]);
    assert_eq!(r.code, 206);
    assert_eq!(r.header("content-range"), Some(format!("bytes {offset}-{}/{BIG}", BIG - 1)));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&pseudo_random(BIG, 1)[offset..]));
    assert!(commands_until(&peer, &format!("REST {offset}")).contains(&"RETR big.bin".to_string()));

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
    assert!(j.contains("{\"name\":\"link\",\"type\":\"link\""), "a symlink: {j}");
    assert!(j.contains("{\"name\":\"empty.dat\",\"type\":\"file\",\"size\":0,"), "{j}");
    assert_eq!(j.matches("\"name\":").count(), 8, "every entry, no . or ..: {j}");

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
    assert_eq!(curl(&[&format!("{base}/no%20dir/")]).code, 404);
    let r = curl(&["-T", "-", &format!("{base}/up.txt")]);
    assert_eq!(r.code, 403, "{}", r.text());
    assert!(r.text().contains("550 Permission denied."), "{}", r.text());
    let r = curl(&["-X", "DELETE", &format!("{base}/hello.txt")]);
    assert_eq!(r.code, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, PUT"));

    // the access log names the FTP server
    let line = gw.stdout_line("\"GET /hello.txt HTTP/1.1\" 200 11");
    assert!(line.ends_with(&peer.addr.to_string()), "{line}");

    // one session served all of it, sub-directories and errors included: each request left it in the log-in
    // directory, ready for the next
    let commands = commands_until(&peer, "RETR hello.txt");
    assert_eq!(commands.iter().filter(|c| c.starts_with("USER")).count(), 1, "{commands:?}");

    // the server stops: 502 (vsftpd serves each session from a process of its own, so a gateway that still
    // holds a pooled session would go on talking to that one: ask a fresh gateway)
    let addr = peer.addr;
    drop(peer);
    let fresh = gateway(&format!("ftp://{addr}"));
    let r = curl(&[&format!("{}/hello.txt", fresh.url())]);
    assert_eq!(r.code, 502, "{}", r.text());
    assert!(r.text().contains("connection refused"), "{}", r.text());
}

#[test]
fn vsftpd_refuses_a_log_in_401_and_an_abandoned_download_is_not_pooled() {
    let peer = vsftpd(fill_tree, "");
    let gw = gateway(&format!("ftp://{}", peer.addr));
    // vsftpd is anonymous only: a user is refused with 530, the client asked for credentials
    let r = curl(&["-u", "bob:secret", &format!("{}/hello.txt", gw.url())]);
    assert_eq!(r.code, 401, "{}", r.text());
    assert!(r.text().contains("530 "), "{}", r.text());
    assert!(r.header("www-authenticate").is_some());

    // anonymous: a client reads the head of big.bin and goes away
    assert_eq!(curl(&[&format!("{}/hello.txt", gw.url())]).code, 200);
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    client.set_recv_buffer_size(4096).unwrap();
    client.connect(&gw.addr.into()).unwrap();
    let mut c = Raw::from_stream(client.into());
    c.send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    c.read_until(b"\r\n\r\n");
    drop(c);
    assert!(wait_until(Duration::from_secs(10), || peer.log().contains("FAIL DOWNLOAD")), "{}", peer.log());
    // the session that carried it is not reused: the next request logs in afresh
    assert_eq!(curl(&[&format!("{}/hello.txt", gw.url())]).code, 200);
    let commands = commands_until(&peer, "RETR hello.txt");
    let logins = commands.iter().filter(|c| c.starts_with("USER anonymous")).count();
    assert_eq!(logins, 2, "{commands:?}");
}

#[test]
fn vsftpd_anonymous_upload_and_read_back() {
    let peer = vsftpd(
        |root| {
            fill_tree(root);
            fs::create_dir(root.join("incoming")).unwrap();
            let ok = Command::new("chown").arg("ftp").arg(root.join("incoming")).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown ftp incoming");
        },
        "write_enable=YES\nanon_upload_enable=YES\nanon_umask=022",
    );
    let gw = gateway(&format!("ftp://{}", peer.addr));
    let data = pseudo_random(2 * 1024 * 1024 + 7, 2);
    let upload = DataFile::new(&data);
    let url = format!("{}/incoming/up%20load%20%C3%BC.bin", gw.url());
    let r = curl(&["-T", upload.as_str(), &url]);
    assert_eq!(r.code, 201, "{}", r.text());
    assert_eq!(sha256_hex(&fs::read(peer.root.join("incoming/up load ü.bin")).unwrap()), sha256_hex(&data));
    let r = curl(&[&url]);
    assert_eq!((r.code, r.body.len(), sha256_hex(&r.body)), (200, data.len(), sha256_hex(&data)));
    // the root is not writable: 553 Could not create file -> 403
    let r = curl(&["-T", upload.as_str(), &format!("{}/top.bin", gw.url())]);
    assert_eq!(r.code, 403, "{}", r.text());
    assert!(r.text().contains("553 "), "{}", r.text());
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

    // CR/LF in the path: 400, nothing sent (once the next request's RETR is logged, anything sent before would be)
    let mut c = Raw::connect(px.addr);
    c.send(format!("GET ftp://{}/x%0d%0aDELE%20hello.txt HTTP/1.1\r\nHost: {}\r\n\r\n", peer.addr, peer.addr));
    assert_eq!(c.response().status, 400);
    let r = curl(&["-x", &px.url(), &format!("ftp://{}/empty.dat", peer.addr)]);
    assert_eq!(r.code, 200);
    let commands = commands_until(&peer, "RETR empty.dat");
    assert!(!commands.iter().any(|c| c.contains("DELE") || c.contains(" x")), "{commands:?}");

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
    let data = pseudo_random(5 * MIB as usize + 7, 42);
    let upload = DataFile::new(&data);
    let up = upload.as_str();
    let r = curl(&["-T", up, &format!("{base}/up.bin")]);
    assert_eq!(r.code, 403, "{}", r.text());
    assert!(r.text().contains("550 Not enough privileges."), "{}", r.text());
    let r = curl(&["-u", "bob:s3cret", "-T", up, &format!("{base}/new%20%C3%BC%20file.bin")]);
    assert_eq!(r.code, 201, "{}", r.text());
    let stored = peer.root.join("new ü file.bin");
    assert_eq!(sha256_hex(&fs::read(&stored).unwrap()), sha256_hex(&data), "the stored file differs");
    let r = curl(&["-u", "bob:s3cret", &format!("{base}/new%20%C3%BC%20file.bin")]);
    assert_eq!((r.code, sha256_hex(&r.body)), (200, sha256_hex(&data)));
    // REST on an MLSD server: the rest of the upload from an odd offset
    let offset = 1_234_567;
    let r = curl(&[
        "-u",
        "bob:s3cret",
        "-H",
        &format!("Range: bytes={offset}-"),
        &format!("{base}/new%20%C3%BC%20file.bin"),
    ]);
    assert_eq!((r.code, sha256_hex(&r.body)), (206, sha256_hex(&data[offset..])));
    let listing = curl(&["-H", "Accept: application/json", &format!("{base}/")]).text();
    assert!(listing.contains("\"name\":\"new ü file.bin\",\"type\":\"file\",\"size\":5242887"), "{listing}");
    assert!(!listing.contains("\"name\":\".\"") && !listing.contains("\"name\":\"..\""), "{listing}");
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
    let ro = Hopgate::route_config(&format!("ftp://{}", peer.addr), "uploads = false");
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
    let routed = Hopgate::route_config(&format!("ftp://{}/sub%20dir", peer.addr), "path = \"/files\"");
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
    for _ in 0..20 {
        let r = curl(&[&format!("{}/f.bin", gw.url())]);
        assert_eq!(r.code, 200, "{}", r.text());
        assert!(r.body == file, "{} bytes", r.body.len());
    }
    assert_eq!(seen.decoy_hits.load(Ordering::SeqCst), 0, "a data connection went to the PASV address");
    // one logged-in session for all twenty; after EPSV failed once, it goes straight to PASV
    assert_eq!(seen.logins(), 1, "control connection not reused: {:?}", seen.commands());
    assert_eq!((seen.count("EPSV"), seen.count("PASV")), (1, 20), "{:?}", seen.commands());

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
        let (addr, seen) = rogue_in_thread(Script { retr, ..Script::default() });
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
        // a session whose transfer failed is never reused: each request logged in anew
        assert_eq!(seen.logins(), 2, "{retr:?}: {:?}", seen.commands());
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
    let px = Hopgate::proxy(&["--users", users.to_str().unwrap()]);
    let url = format!("ftp://{addr}/f.bin");
    let r = curl(&["-x", &px.url(), &url]);
    assert_eq!(r.code, 407);
    assert!(seen.commands().is_empty(), "{:?}", seen.commands());
    let r = curl(&["-x", &px.url(), "--proxy-user", "pat:pat-secret", &url]);
    assert_eq!((r.code, r.body.len()), (200, Script::default().file.len()));

    // with a parent proxy every request must go through it: ftp:// is refused rather than sent around it
    let chained = Hopgate::proxy(&["--parent", "http://127.0.0.1:9"]);
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
fn a_data_connection_to_hopgates_own_listener_is_508() {
    // The server names hopgate's own port in its EPSV reply: the data connection goes through the same dialer as
    // every other connection, whose loop check refuses it before anything is sent there.
    let script = Script::default();
    let names = script.epsv_port.clone();
    let (addr, seen) = rogue_in_thread(script);
    let gw = gateway(&format!("ftp://{addr}"));
    names.store(gw.addr.port(), Ordering::SeqCst);
    let r = curl(&[&format!("{}/f.bin", gw.url())]);
    assert_eq!(r.code, 508, "{}", r.text());
    assert_eq!(r.text(), format!("hopgate: 508 Loop Detected\n{} is this proxy itself\n", gw.addr));
    assert_eq!(seen.count("RETR"), 0, "{:?}", seen.commands());
}

#[test]
fn authorization_basic_is_read_as_proxy_authorization_is() {
    // One reading of RFC 7617 for every Basic value hopgate takes (http::basic): the scheme in any case, one or
    // more spaces, the padding optional; a tab, or a value without a colon, is no credentials (anonymous).
    let (addr, seen) = rogue_in_thread(Script::default());
    let gw = gateway(&format!("ftp://{addr}"));
    for (value, user) in [
        ("Basic Ym9iOnA=", "bob"),
        ("bAsIc   Ym9iOnA", "bob"),
        ("Basic\tYm9iOnA=", "anonymous"),
        ("Basic Ym9i", "anonymous"),
    ] {
        let r = exchange(gw.addr, &format!("HEAD /f.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n\r\n"));
        assert_eq!(r.status, 200, "{value:?}: {}", r.head);
        let users: Vec<String> = seen.commands().into_iter().filter(|c| c.starts_with("USER ")).collect();
        assert_eq!(users.last().map(String::as_str), Some(format!("USER {user}").as_str()), "{value:?}: {users:?}");
    }
}

#[test]
fn unreachable_refusing_and_silent_servers_are_502_and_504() {
    let closed = ClosedPort::new();
    let gw = gateway(&format!("ftp://{}", closed.addr));
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

    // A server that accepts and never greets: 504 after the FTP reply timeout, a fixed 30 s (docs/ftp.md).
    let (addr, _) = rogue_in_thread(Script { greeting: "", ..Script::default() });
    let gw = gateway(&format!("ftp://{addr}"));
    let r = curl(&[&format!("{}/x", gw.url())]);
    assert_eq!(r.code, 504, "{}", r.text());
}

#[test]
fn bad_paths_and_log_ins_send_no_command() {
    let (addr, seen) = rogue_in_thread(Script::default());
    let gw = gateway(&format!("ftp://{addr}"));
    for path in ["/a%0D%0ADELE%20b", "/a%0Ab", "/a%00b", "/dir%0D%0ADELE%20b/"] {
        let r = exchange(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    // base64("bob\r\nDELE x:p"): a user name with CR/LF in it
    let r = exchange(gw.addr, "GET /f.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Ym9iDQpERUxFIHg6cA==\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(seen.commands().is_empty(), "{:?}", seen.commands());
    // the next request is served, and nothing of the refused ones came before it
    assert_eq!(curl(&[&format!("{}/f.bin", gw.url())]).code, 200);
    let commands = seen.commands();
    assert!(!commands.iter().any(|c| c.contains("DELE") || c.contains("bob")), "{commands:?}");
}

#[test]
fn dos_listings_are_read_and_odd_lines_skipped() {
    let list = "01-31-23  12:00PM       <DIR>          sub dir\r\n\
                garbage line\r\n\
                02-01-2023  09:05AM                 1234 a file.txt\r\n"
        .as_bytes()
        .to_vec();
    let (addr, _) = rogue_in_thread(Script { list, ..Script::default() });
    let gw = gateway(&format!("ftp://{addr}"));
    let j = curl(&["-H", "Accept: application/json", &format!("{}/", gw.url())]).text();
    assert_eq!(j.matches("\"name\":").count(), 2, "{j}");
    assert!(j.contains("{\"name\":\"sub dir\",\"type\":\"dir\""), "{j}");
    assert!(j.contains("{\"name\":\"a file.txt\",\"type\":\"file\",\"size\":1234,"), "{j}");
}

#[test]
fn the_pool_replaces_a_session_the_server_closed() {
    let (addr, seen) = rogue_in_thread(Script::default());
    let gw = gateway(&format!("ftp://{addr}"));
    let get = |args: &[&str]| {
        let mut all = args.to_vec();
        let url = format!("{}/f.bin", gw.url());
        all.push(&url);
        let r = curl(&all);
        assert_eq!(r.code, 200, "{}", r.text());
    };
    get(&[]);
    get(&[]);
    assert_eq!(seen.logins(), 1);

    // the server hangs up on the idle session: the next request notices and logs in again
    seen.hang_up.notify_waiters();
    assert!(wait_until(Duration::from_secs(10), || seen.ended() == 1), "the server closed the control connection");
    get(&[]);
    assert_eq!(seen.logins(), 2, "{:?}", seen.commands());

    // other credentials get a session of their own; anonymous requests go on using theirs
    get(&["-u", "bob:pw"]);
    assert_eq!(seen.logins(), 3);
    get(&[]);
    get(&["-u", "bob:pw"]);
    assert_eq!(seen.logins(), 3, "{:?}", seen.commands());
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
