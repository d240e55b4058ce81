//! The FastCGI client against an application written here in tokio, for what php-fpm never does:
//! the peer records the records it got (BEGIN_REQUEST flags, PARAMS, STDIN record sizes) and
//! answers with garbage, a foreign request id, OVERLOADED, or a connection closed mid-body.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use hopgate::backend::fastcgi::record::{self, EndRequest};
use hopgate::backend::fastcgi::{FastCgi, FastCgiAddr, FastCgiConfig};
use hopgate::backend::meta::{GatewayErrorKind, MetaVars};
use hopgate::error::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
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
    begin_flags: Vec<u8>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    stdin_sizes: Vec<usize>,
    stdin: Vec<u8>,
}

/// Reads one request's records up to the empty STDIN record; `None` when the client closed.
async fn read_request(s: &mut TcpStream, buf: &mut BytesMut, seen: &Mutex<Seen>) -> Option<()> {
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
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn app(mode: Mode) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record_to = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = record_to.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while read_request(&mut s, &mut buf, &seen).await.is_some() {
                    let mut out = BytesMut::new();
                    match mode {
                        Mode::Echo => {
                            let body = std::mem::take(&mut seen.lock().unwrap().stdin);
                            record::put_record(&mut out, record::STDOUT, 1, b"Content-Type: text/plain\r\n");
                            record::put_record(&mut out, record::STDERR, 1, b"a warning\n");
                            record::put_record(&mut out, record::STDOUT, 1, b"\r\n");
                            record::put_stream(&mut out, record::STDOUT, 1, &body);
                            record::put_record(&mut out, record::STDOUT, 1, b"");
                            let end = EndRequest { app_status: 0, protocol_status: record::REQUEST_COMPLETE };
                            record::put_end_request(&mut out, 1, end);
                        }
                        Mode::Garbage => out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nnot fastcgi"),
                        Mode::Overloaded => {
                            let end = EndRequest { app_status: 0, protocol_status: record::OVERLOADED };
                            record::put_end_request(&mut out, 1, end);
                        }
                        Mode::ForeignId => record::put_record(&mut out, record::STDOUT, 2, b"X: y\r\n\r\n"),
                        Mode::CloseMidBody => {
                            record::put_record(&mut out, record::STDOUT, 1, b"Content-Type: text/plain\r\n\r\npartial");
                            let _ = s.write_all(&out).await;
                            return;
                        }
                        Mode::NoHead => {
                            record::put_record(&mut out, record::STDOUT, 1, b"just text");
                            record::put_record(&mut out, record::STDOUT, 1, b"");
                            let end = EndRequest { app_status: 0, protocol_status: record::REQUEST_COMPLETE };
                            record::put_end_request(&mut out, 1, end);
                        }
                    }
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn gateway(addr: String) -> FastCgi {
    let mut cfg = FastCgiConfig::new(FastCgiAddr::Tcp(addr));
    cfg.timeout = Duration::from_secs(5);
    FastCgi::new(cfg).unwrap()
}

fn vars(len: usize) -> MetaVars {
    let mut v = MetaVars::default();
    v.set("REQUEST_METHOD", "POST");
    v.set("CONTENT_LENGTH", len.to_string());
    v.set("HTTP_X_LONG", vec![b'l'; 300]);
    v
}

fn body(chunks: Vec<Bytes>) -> stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>> {
    stream::iter(chunks.into_iter().map(Ok).collect::<Vec<_>>())
}

#[tokio::test]
async fn records_on_the_wire_and_echo() {
    let (addr, seen) = app(Mode::Echo).await;
    let gw = gateway(addr);
    // One 200 000-byte chunk must go out as several STDIN records of at most 65528 bytes.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let chunks = vec![Bytes::from(data[..200].to_vec()), Bytes::from(data[200..].to_vec())];
    let r = gw.send(&vars(data.len()), body(chunks)).await.unwrap();
    assert_eq!(r.head.headers["content-type"], "text/plain");
    assert_eq!(&r.body.collect_bytes().await.unwrap()[..], &data[..]);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.begin_flags, [record::KEEP_CONN]);
        assert!(seen.params.contains(&(b"CONTENT_LENGTH".to_vec(), b"200000".to_vec())));
        assert!(seen.params.contains(&(b"HTTP_X_LONG".to_vec(), vec![b'l'; 300])));
        assert!(seen.stdin_sizes.iter().all(|&n| n <= record::CHUNK_BYTES));
        assert_eq!(seen.stdin_sizes.last(), Some(&0));
        assert_eq!(seen.stdin_sizes.iter().sum::<usize>(), 200_000);
    }
    // A second request on the kept connection.
    let r = gw.send(&vars(3), body(vec![Bytes::from_static(b"abc")])).await.unwrap();
    assert_eq!(&r.body.collect_bytes().await.unwrap()[..], b"abc");
    assert_eq!(seen.lock().unwrap().begin_flags.len(), 2);
    assert_eq!(gw.idle_connections(), 1);
}

#[tokio::test]
async fn misbehaving_applications() {
    for (mode, kind) in [
        (Mode::Garbage, GatewayErrorKind::BadResponse),
        (Mode::Overloaded, GatewayErrorKind::Unavailable),
        (Mode::ForeignId, GatewayErrorKind::BadResponse),
        (Mode::NoHead, GatewayErrorKind::BadResponse),
    ] {
        let (addr, _) = app(mode).await;
        let gw = gateway(addr);
        let e = gw.send(&vars(0), body(vec![])).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(Error::from(e).status().as_u16(), 502);
        // NoHead ended cleanly at the FastCGI level, so its connection may be kept.
        if !matches!(mode, Mode::NoHead) {
            assert_eq!(gw.idle_connections(), 0);
        }
    }
    // Closed after the head: the head is fine, the body ends in an error, nothing is kept.
    let (addr, _) = app(Mode::CloseMidBody).await;
    let gw = gateway(addr);
    let r = gw.send(&vars(0), body(vec![])).await.unwrap();
    let e = r.body.collect_bytes().await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::Closed, "{e}");
    assert_eq!(gw.idle_connections(), 0);
}
