//! Bodies stream with back-pressure: 1 GiB each way through the proxy, byte-exact, while hopgate's RSS stays
//! flat. Prints the measured numbers (no timed assertions).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::origin;
use support::{Hopgate, hex};

const GIB: u64 = 1 << 30;
const BLOCK: usize = 64 * 1024;

/// A deterministic, non-repeating-looking block (so that a shifted or dropped block changes the hash).
fn block(i: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    b
}

fn expected_hash(len: u64) -> String {
    let mut h = Sha256::new();
    for i in 0..len / BLOCK as u64 {
        h.update(block(i));
    }
    hex(&h.finalize())
}

fn proxy() -> Hopgate {
    Hopgate::proxy(&["--access-log", "off"])
}

/// Warms the proxy up (pool, buffers, allocator) so the baseline RSS is a fair one.
fn warm_up(hg: &Hopgate, target: std::net::SocketAddr) {
    for _ in 0..3 {
        let mut c = support::Raw::connect(hg.addr);
        c.send(format!("GET http://{target}/small HTTP/1.1\r\nHost: x\r\n\r\n"));
        let _ = c.response();
    }
}

#[test]
fn one_gib_download_streams_with_flat_rss() {
    let o = origin::raw(|mut s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let small = line.contains("/small");
            while line != "\r\n" {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
            }
            if small {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                continue;
            }
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {GIB}\r\n\r\n").as_bytes());
            for i in 0..GIB / BLOCK as u64 {
                if s.write_all(&block(i)).is_err() {
                    return;
                }
            }
        }
    });
    let hg = proxy();
    warm_up(&hg, o);
    let before = hg.rss_kib();
    let watch = support::RssWatch::start(hg.pid());
    let started = Instant::now();
    let mut c = TcpStream::connect(hg.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(format!("GET http://{o}/big HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut r = BufReader::with_capacity(1 << 20, c);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed in the head");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {GIB}")), "{head}");
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while got < GIB {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        h.update(&buf[..n]);
        got += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = watch.finish();
    assert_eq!(hex(&h.finalize()), expected_hash(GIB), "byte-exact");
    let growth = peak.saturating_sub(before);
    println!(
        "download: 1 GiB in {secs:.2}s ({:.0} MiB/s); RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB",
        1024.0 / secs
    );
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB during a 1 GiB download");
}

#[test]
fn one_gib_upload_streams_with_flat_rss() {
    let o = origin::raw(|mut s| {
        let mut r = BufReader::with_capacity(1 << 20, s.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut len = 0u64;
            let mut chunked = false;
            while line != "\r\n" {
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
            }
            assert!(!chunked, "a Content-Length body is forwarded with its length");
            let mut h = Sha256::new();
            let mut left = len;
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                let n = r.read(&mut buf[..(left.min(1 << 20)) as usize]).unwrap_or(0);
                if n == 0 {
                    return;
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
            let digest = hex(&h.finalize());
            let _ =
                s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{digest}", digest.len()).as_bytes());
        }
    });
    let hg = proxy();
    let before = hg.rss_kib();
    let watch = support::RssWatch::start(hg.pid());
    let started = Instant::now();
    let mut c = TcpStream::connect(hg.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(format!("POST http://{o}/up HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n").as_bytes()).unwrap();
    for i in 0..GIB / BLOCK as u64 {
        c.write_all(&block(i)).unwrap();
    }
    let mut raw = support::Raw::from_stream(c);
    let resp = raw.response();
    let secs = started.elapsed().as_secs_f64();
    let peak = watch.finish();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), expected_hash(GIB), "byte-exact");
    let growth = peak.saturating_sub(before);
    println!(
        "upload: 1 GiB in {secs:.2}s ({:.0} MiB/s); RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB",
        1024.0 / secs
    );
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB during a 1 GiB upload");
}
