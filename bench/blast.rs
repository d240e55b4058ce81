//! bench/run C's client and sender: N bytes over one TCP connection, as fast as plain sockets move them.
//!
//! `blast serve PORT`: listens on 127.0.0.1:PORT; on each connection reads an 8-byte length (u64, little
//! endian), writes that many bytes (from one buffer, --buf bytes per write) and closes. A connection that starts
//! with `CONNECT ` gets `200` to its head first (the sender acts as its own proxy for `hopgate tunnel`).
//! `blast get ADDR BYTES [--proxy HOST:PORT] [--buf N]`: connects to ADDR (or sends `CONNECT ADDR` to the proxy
//! and reads its 2xx head), then times from sending the length to the sender's EOF, reading into one buffer
//! of N bytes. Prints `bytes=B secs=S mbps=M` (MB = 10^6 bytes); exits 1 unless exactly BYTES arrived.
//!
//! Standard library only: bench/run builds it with `rustc -O`. Both rows of scenario C (direct and through a
//! tunnel) run this same client against this same sender, so the ratio is the tunnel's cost alone.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

const DEFAULT_BUF: usize = 256 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("serve") => serve(&args[2..]),
        Some("get") => get(&args[2..]),
        _ => Err(io::Error::other("usage: blast serve PORT [--buf N] | blast get ADDR BYTES [--proxy HOST:PORT] [--buf N]")),
    };
    if let Err(e) = result {
        eprintln!("blast: {e}");
        std::process::exit(1);
    }
}

/// The value after `--name` in `args`, parsed; `default` without one.
fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> io::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{name} needs a value"))),
    }
}

fn serve(args: &[String]) -> io::Result<()> {
    let port: u16 = args.first().and_then(|p| p.parse().ok()).ok_or_else(|| io::Error::other("serve PORT"))?;
    let buf_len: usize = opt(args, "--buf", 1 << 20)?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut len = [0u8; 8];
            // A probe (bench/peers.py's wait_listening) connects and closes without a length.
            if conn.read_exact(&mut len).is_err() {
                return;
            }
            // A tunnel client (`hopgate tunnel --proxy http://THIS`) asks with CONNECT first: the sender is its
            // own proxy, so that hopgate's end of such a tunnel is the only relay in the path.
            if &len == b"CONNECT " {
                let mut head = len.to_vec();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut b).unwrap_or(0) == 0 || head.len() > 16 * 1024 {
                        return;
                    }
                    head.push(b[0]);
                }
                if conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").is_err()
                    || conn.read_exact(&mut len).is_err()
                {
                    return;
                }
            }
            let mut left = u64::from_le_bytes(len);
            let buf = vec![b'x'; buf_len];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = conn.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

fn get(args: &[String]) -> io::Result<()> {
    let addr = args.first().ok_or_else(|| io::Error::other("get ADDR BYTES"))?;
    let want: u64 = args.get(1).and_then(|b| b.parse().ok()).ok_or_else(|| io::Error::other("get ADDR BYTES"))?;
    let proxy: String = opt(args, "--proxy", String::new())?;
    let buf_len: usize = opt(args, "--buf", DEFAULT_BUF)?;
    let mut conn = if proxy.is_empty() {
        TcpStream::connect(addr)?
    } else {
        let mut c = TcpStream::connect(&proxy)?;
        c.write_all(format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        // Byte by byte, so that nothing after the head is taken (the sender has sent nothing yet anyway).
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if c.read(&mut b)? == 0 || head.len() > 16 * 1024 {
                return Err(io::Error::other(format!("no CONNECT answer: {:?}", String::from_utf8_lossy(&head))));
            }
            head.push(b[0]);
        }
        if !(head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2")) {
            return Err(io::Error::other(format!("CONNECT refused: {:?}", String::from_utf8_lossy(&head))));
        }
        c
    };
    let mut buf = vec![0u8; buf_len];
    let t0 = Instant::now();
    conn.write_all(&want.to_le_bytes())?;
    let mut got = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("bytes={got} secs={secs:.6} mbps={:.1}", got as f64 / secs / 1e6);
    if got != want {
        return Err(io::Error::other(format!("{got} bytes arrived, {want} were sent")));
    }
    Ok(())
}
