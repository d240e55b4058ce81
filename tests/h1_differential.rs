//! hopgate's own HTTP/1 framing (src/h1) against hyper 1.12's, on the same bytes (issue 14).
//!
//! - Requests: every file of tests/corpus/h1/requests/ is one client connection's bytes. hopgate's side is
//!   `parse_request` + the chunked `Decoder` in a loop that does what a connection does (next request while the
//!   connection is kept, stop at an error); hyper's side is `hyper::server::conn::http1` over an in-memory duplex
//!   pipe with a service that records every request (method, URI, version, fields, body, trailers) and the bytes
//!   hyper writes back (its error status: 400/414/431..., `100 Continue`, whether it keeps the connection).
//! - Responses: every file of tests/corpus/h1/responses/METHOD-NAME.http is what an upstream answers to a request
//!   with METHOD. hopgate's side is `parse_response` + `Decoder`; hyper's is `hyper::client::conn::http1`.
//! - Head writer: `write_head` against what hyper's server writes for the same response (the date's value masked).
//! - Request writer: `h1::request_head` (and the body framing upstream::h1 writes) against the bytes hyper's client
//!   writes for the same request (fields, lengths, streamed bodies, trailers, HTTP/1.0) on an in-memory pipe.
//!
//! A few files are also fed one byte per read to both (hyper reads from a pipe of one byte), and to hopgate cut in
//! two at every byte. Any disagreement fails, except the documented stricter choices in [`REQUEST_EXCEPTIONS`] and
//! [`RESPONSE_EXCEPTIONS`], which must still disagree (an exception that no longer applies fails too).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use hopgate::h1::chunked::{Decoded, Decoder};
use hopgate::h1::request::parse_request;
use hopgate::h1::response::{BodySize, write_head};
use hopgate::h1::response_head::parse_response;
use hopgate::h1::{BodyLen, HeadError};

/// Requests on which hopgate is knowingly stricter than hyper: (file, reason). Each must still disagree.
const REQUEST_EXCEPTIONS: &[(&str, &str)] = &[(
    "smuggle-cl-duplicate-same",
    "two equal Content-Length fields: hyper drops the second and takes the request; parse_request keeps both so \
     that server::service::admit refuses the request with a 400 page naming the field (issue 10, docs/relay.md)",
)];

/// Responses on which hopgate is knowingly stricter than hyper: (file, reason). Each must still disagree.
const RESPONSE_EXCEPTIONS: &[(&str, &str)] = &[];

/// Files also fed one byte per read (to both) and cut in two at every byte (to hopgate).
const SPLIT_REQUESTS: &[&str] = &[
    "pipelined",
    "chunked-extensions-trailers",
    "expect-100-continue",
    "http10-keep-alive",
    "smuggle-te-cl",
    "leading-empty-lines",
    "bare-lf",
];
const SPLIT_RESPONSES: &[&str] =
    &["GET-200-chunked-trailers", "GET-1xx-many", "PUT-100-then-200", "GET-200-close-delimited", "GET-bare-lf"];

/// The longest any one exchange with hyper may take (it is in memory; this only bounds a hang).
const DEADLINE: Duration = Duration::from_secs(10);

type Fields = Vec<(String, Vec<u8>)>;

fn fields(h: &HeaderMap) -> Fields {
    h.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect()
}

/// One request as the connection saw it.
#[derive(Debug, Clone, PartialEq)]
struct Req {
    method: String,
    uri: String,
    version: Version,
    fields: Fields,
    /// The body, or None when it was cut short or malformed.
    body: Option<Vec<u8>>,
    trailers: Option<Fields>,
}

/// Everything observable about one client connection.
#[derive(Debug, Clone, PartialEq, Default)]
struct ServerSide {
    requests: Vec<Req>,
    /// Per answered request: whether the connection stays open after it.
    kept: Vec<bool>,
    /// `100 Continue` responses sent.
    continues: usize,
    /// The error status the connection ended with.
    refused: Option<u16>,
}

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/h1").join(kind);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .map(|p| {
            let name = p.file_stem().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read corpus file"))
        })
        .collect();
    files.sort();
    assert!(files.len() > 20, "{} holds the corpus", dir.display());
    files
}

/// Reads `input` piece by piece, as a connection's reads would deliver it.
struct Feed<'a> {
    pieces: std::vec::IntoIter<&'a [u8]>,
}

impl Feed<'_> {
    /// Appends the next read to `buf`; false at the end of the input.
    fn more(&mut self, buf: &mut BytesMut) -> bool {
        match self.pieces.next() {
            Some(p) => {
                buf.extend_from_slice(p);
                true
            }
            None => false,
        }
    }
}

/// A chunked body through hopgate's decoder: data and trailers, or None.
fn decode_chunked(buf: &mut BytesMut, feed: &mut Feed<'_>) -> (Option<Vec<u8>>, Option<Fields>) {
    let mut d = Decoder::new(100);
    let mut data = Vec::new();
    loop {
        match d.decode(buf) {
            Ok(Decoded::Data(b)) => data.extend_from_slice(&b),
            Ok(Decoded::End(t)) => return (Some(data), t.as_ref().map(fields)),
            Ok(Decoded::NeedMore) => {
                if !feed.more(buf) {
                    return (None, None);
                }
            }
            Err(_) => return (None, None),
        }
    }
}

/// A body of `n` bytes, or None when the input ends first.
fn take_len(buf: &mut BytesMut, feed: &mut Feed<'_>, n: u64) -> Option<Vec<u8>> {
    while (buf.len() as u64) < n {
        if !feed.more(buf) {
            return None;
        }
    }
    Some(buf.split_to(n as usize).to_vec())
}

/// hopgate's side of a client connection: what a connection loop over src/h1 does with these reads.
fn hopgate_server(pieces: Vec<&[u8]>) -> ServerSide {
    let mut feed = Feed { pieces: pieces.into_iter() };
    let mut buf = BytesMut::new();
    let mut out = ServerSide::default();
    loop {
        let head = loop {
            match parse_request(&mut buf, 100) {
                Ok(Some(h)) => break Some(h),
                Ok(None) if feed.more(&mut buf) => {}
                Ok(None) => break None,
                Err(e) => {
                    out.refused = e.answered().then(|| e.status().as_u16());
                    break None;
                }
            }
        };
        let Some(head) = head else { return out };
        let (body, trailers) = match head.body {
            BodyLen::Zero => (Some(Vec::new()), None),
            BodyLen::Length(n) => (take_len(&mut buf, &mut feed, n), None),
            BodyLen::Chunked => decode_chunked(&mut buf, &mut feed),
            BodyLen::Close => unreachable!("requests are never close-delimited"),
        };
        let r = &head.request;
        if head.expect_continue && r.version() == Version::HTTP_11 && head.body != BodyLen::Zero {
            out.continues += 1;
        }
        let complete = body.is_some();
        out.requests.push(Req {
            method: r.method().to_string(),
            uri: r.uri().to_string(),
            version: r.version(),
            fields: fields(r.headers()),
            body,
            trailers,
        });
        if !complete {
            return out;
        }
        out.kept.push(head.keep_alive);
        if !head.keep_alive {
            return out;
        }
    }
}

type Records = Arc<Mutex<Vec<Req>>>;

/// The recording service: every request with its body; 200 (409 to a CONNECT, so that no tunnel opens).
async fn record(req: Request<Incoming>, seen: Records) -> Result<Response<Empty<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().map(fields);
            (Some(c.to_bytes().to_vec()), trailers)
        }
        Err(_) => (None, None),
    };
    let connect = parts.method == Method::CONNECT;
    seen.lock().expect("records").push(Req {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        fields: fields(&parts.headers),
        body,
        trailers,
    });
    let status = if connect { StatusCode::CONFLICT } else { StatusCode::OK };
    Ok(Response::builder().status(status).body(Empty::new()).expect("response"))
}

/// The response heads in what a server wrote: (status, header block).
fn heads(out: &[u8]) -> Vec<(u16, String)> {
    let text = String::from_utf8_lossy(out).into_owned();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("HTTP/1.") {
        let start = at + i;
        let Some(end) = text[start..].find("\r\n\r\n") else { break };
        let head = &text[start..start + end];
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        found.push((status, head.to_ascii_lowercase()));
        at = start + end + 4;
    }
    found
}

/// hyper's side of a client connection: the same bytes through hyper's HTTP/1 server, `pipe` bytes per read.
async fn hyper_server(input: &[u8], pipe: usize) -> ServerSide {
    let (client, server) = tokio::io::duplex(pipe);
    let (mut client_read, client_write) = tokio::io::split(client);
    let seen: Records = Arc::default();
    let s = seen.clone();
    let conn = tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| record(req, s.clone()));
        // half_close: requests already read are answered after the client's end of input.
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(server), svc)
            .await;
    });
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let mut w = client_write;
        let _ = w.write_all(&input).await;
        let _ = w.shutdown().await;
    });
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, client_read.read_to_end(&mut out)).await.expect("hyper ends the connection").ok();
    let _ = tokio::time::timeout(DEADLINE, conn).await;
    writer.abort();
    let mut side = ServerSide { requests: seen.lock().expect("records").clone(), ..ServerSide::default() };
    for (status, head) in heads(&out) {
        match status {
            100 => side.continues += 1,
            200 | 409 => {
                let kept = if head.contains("connection: close") {
                    false
                } else if head.starts_with("http/1.0") {
                    head.contains("connection: keep-alive")
                } else {
                    true
                };
                side.kept.push(kept);
            }
            other => side.refused = Some(other),
        }
    }
    // A request whose body failed is answered by the recording service all the same; what a connection does
    // after a broken body is the connection loop's business, not the framing's.
    side.kept.truncate(side.requests.iter().filter(|r| r.body.is_some()).count());
    side
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Compares the two sides; Err(description) on a disagreement.
fn compare<T: PartialEq + std::fmt::Debug>(name: &str, hopgate: &T, hyper: &T) -> Result<(), String> {
    if hopgate == hyper { Ok(()) } else { Err(format!("{name}:\n  hopgate: {hopgate:?}\n  hyper:   {hyper:?}")) }
}

/// Checks every file against the exceptions: agreement, or a listed and still present disagreement.
fn judge(results: Vec<(String, Result<(), String>)>, exceptions: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (name, r) in &results {
        let excepted = exceptions.iter().find(|(f, _)| f == name);
        match (r, excepted) {
            (Ok(()), None) | (Err(_), Some(_)) => {}
            (Err(e), None) => failures.push(format!("DISAGREEMENT {e}")),
            (Ok(()), Some((_, why))) => {
                failures.push(format!("{name}: listed as a stricter choice ({why}) but both agree now: remove it"))
            }
        }
    }
    for (f, _) in exceptions {
        assert!(results.iter().any(|(n, _)| n == f), "exception {f} names no corpus file");
    }
    assert!(failures.is_empty(), "{} of {} files:\n{}", failures.len(), results.len(), failures.join("\n"));
}

#[test]
fn requests_agree_with_hyper() {
    let rt = runtime();
    let files = corpus("requests");
    let mut results = Vec::new();
    let (mut requests, mut refused) = (0, 0);
    for (name, input) in &files {
        let ours = hopgate_server(vec![input.as_slice()]);
        let theirs = rt.block_on(hyper_server(input, 64 * 1024));
        requests += theirs.requests.len();
        refused += usize::from(theirs.refused.is_some());
        results.push((name.clone(), compare(name, &ours, &theirs)));
    }
    // The comparison is not vacuous: hyper took and refused many of them.
    assert!(requests > 80 && refused > 30, "hyper took {requests} requests and refused {refused} connections");
    judge(results, REQUEST_EXCEPTIONS);
}

#[test]
fn requests_split_at_every_byte() {
    let rt = runtime();
    let files = corpus("requests");
    for want in SPLIT_REQUESTS {
        let (name, input) = files.iter().find(|(n, _)| n == want).unwrap_or_else(|| panic!("no file {want}"));
        let whole = hopgate_server(vec![input.as_slice()]);
        let bytewise = hopgate_server(input.chunks(1).collect());
        let hyper_bytewise = rt.block_on(hyper_server(input, 1));
        compare(name, &bytewise, &hyper_bytewise).unwrap_or_else(|e| panic!("one byte per read: {e}"));
        compare(name, &whole, &bytewise).unwrap_or_else(|e| panic!("hopgate, whole and bytewise: {e}"));
        for cut in 1..input.len() {
            let two = hopgate_server(vec![&input[..cut], &input[cut..]]);
            compare(name, &whole, &two).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        }
    }
}

/// How a response exchange ended without a final response.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failed {
    /// hyper: a parse error; hopgate: `HeadError::Malformed`.
    Malformed,
    /// hyper: a parse error "too large"; hopgate: `HeadError::TooLarge`.
    TooLarge,
    /// The connection closed before the head was complete.
    Incomplete,
}

#[derive(Debug, Clone, PartialEq)]
struct Resp {
    status: u16,
    version: Version,
    reason: Option<Vec<u8>>,
    fields: Fields,
    body: Option<Vec<u8>>,
    trailers: Option<Fields>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct ClientSide {
    /// 1xx responses before the final one: status and fields.
    interim: Vec<(u16, Fields)>,
    last: Option<Result<Resp, Failed>>,
}

/// hopgate's side of an upstream connection.
fn hopgate_client(method: &Method, pieces: Vec<&[u8]>) -> ClientSide {
    let mut feed = Feed { pieces: pieces.into_iter() };
    let mut buf = BytesMut::new();
    let mut out = ClientSide::default();
    loop {
        let head = match parse_response(&mut buf, method, 100) {
            Ok(Some(h)) => h,
            Ok(None) if feed.more(&mut buf) => continue,
            Ok(None) => {
                out.last = Some(Err(Failed::Incomplete));
                return out;
            }
            Err(HeadError::TooLarge) => {
                out.last = Some(Err(Failed::TooLarge));
                return out;
            }
            Err(_) => {
                out.last = Some(Err(Failed::Malformed));
                return out;
            }
        };
        let r = &head.response;
        if head.is_interim() {
            out.interim.push((r.status().as_u16(), fields(r.headers())));
            continue;
        }
        let (body, trailers) = match head.body {
            BodyLen::Zero => (Some(Vec::new()), None),
            BodyLen::Length(n) => (take_len(&mut buf, &mut feed, n), None),
            BodyLen::Chunked => decode_chunked(&mut buf, &mut feed),
            BodyLen::Close => {
                while feed.more(&mut buf) {}
                (Some(buf.split().to_vec()), None)
            }
        };
        out.last = Some(Ok(Resp {
            status: r.status().as_u16(),
            version: r.version(),
            reason: r.extensions().get::<hyper::ext::ReasonPhrase>().map(|p| p.as_bytes().to_vec()),
            fields: fields(r.headers()),
            body,
            trailers,
        }));
        return out;
    }
}

/// hyper's side: its HTTP/1 client sends a `method` request and reads `input` as the answer.
async fn hyper_client(method: &Method, input: &[u8], pipe: usize) -> ClientSide {
    let (client, server) = tokio::io::duplex(pipe);
    let input = input.to_vec();
    let upstream = tokio::spawn(async move {
        let (mut r, w) = tokio::io::split(server);
        // Read the request head, then answer with the corpus bytes and close.
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            match r.read(&mut byte).await {
                Ok(1) => got.push(byte[0]),
                _ => return,
            }
        }
        let mut w = w;
        let _ = w.write_all(&input).await;
        let _ = w.shutdown().await;
        let mut sink = [0u8; 1024];
        while let Ok(n) = r.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let mut out = ClientSide::default();
    let run = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client)).await.expect("handshake");
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let uri = if *method == Method::CONNECT { "a:443" } else { "/" };
        let mut req = Request::builder().method(method.clone()).uri(uri).header("host", "a").body(Empty::new());
        let req = req.as_mut().expect("request");
        let interim: Arc<Mutex<Vec<(u16, Fields)>>> = Arc::default();
        let i = interim.clone();
        hyper::ext::on_informational(req, move |res| {
            i.lock().expect("interim").push((res.status().as_u16(), fields(res.headers())));
        });
        let req = std::mem::replace(req, Request::new(Empty::new()));
        let last = match sender.send_request(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let (body, trailers) = match body.collect().await {
                    Ok(c) => {
                        let t = c.trailers().map(fields);
                        (Some(c.to_bytes().to_vec()), t)
                    }
                    Err(_) => (None, None),
                };
                Ok(Resp {
                    status: parts.status.as_u16(),
                    version: parts.version,
                    reason: parts.extensions.get::<hyper::ext::ReasonPhrase>().map(|p| p.as_bytes().to_vec()),
                    fields: fields(&parts.headers),
                    body,
                    trailers,
                })
            }
            Err(e) if e.is_parse_too_large() => Err(Failed::TooLarge),
            Err(e) if e.is_parse() || e.is_parse_status() => Err(Failed::Malformed),
            Err(e) if e.is_incomplete_message() => Err(Failed::Incomplete),
            Err(e) => panic!("hyper's client failed otherwise: {e:?}"),
        };
        out.interim = interim.lock().expect("interim").clone();
        out.last = Some(last);
    };
    tokio::time::timeout(DEADLINE, run).await.expect("hyper's client finishes");
    upstream.abort();
    out
}

/// The method a response file answers (its name's first word).
fn method_of(name: &str) -> Method {
    let m = name.split('-').next().unwrap_or("GET");
    Method::from_bytes(m.as_bytes()).unwrap_or_else(|_| panic!("{name}: no method"))
}

#[test]
fn responses_agree_with_hyper() {
    let rt = runtime();
    let mut results = Vec::new();
    let (mut bodies, mut failed) = (0, 0);
    for (name, input) in &corpus("responses") {
        let method = method_of(name);
        let ours = hopgate_client(&method, vec![input.as_slice()]);
        let theirs = rt.block_on(hyper_client(&method, input, 64 * 1024));
        match &theirs.last {
            Some(Ok(r)) if r.body.as_ref().is_some_and(|b| !b.is_empty()) => bodies += 1,
            Some(Err(_)) => failed += 1,
            _ => {}
        }
        results.push((name.clone(), compare(name, &ours, &theirs)));
    }
    assert!(bodies > 10 && failed > 10, "hyper read {bodies} bodies and failed {failed} responses");
    judge(results, RESPONSE_EXCEPTIONS);
}

#[test]
fn responses_split_at_every_byte() {
    let rt = runtime();
    let files = corpus("responses");
    for want in SPLIT_RESPONSES {
        let (name, input) = files.iter().find(|(n, _)| n == want).unwrap_or_else(|| panic!("no file {want}"));
        let method = method_of(name);
        let whole = hopgate_client(&method, vec![input.as_slice()]);
        let bytewise = hopgate_client(&method, input.chunks(1).collect());
        let hyper_bytewise = rt.block_on(hyper_client(&method, input, 1));
        compare(name, &bytewise, &hyper_bytewise).unwrap_or_else(|e| panic!("one byte per read: {e}"));
        compare(name, &whole, &bytewise).unwrap_or_else(|e| panic!("hopgate, whole and bytewise: {e}"));
        for cut in 1..input.len() {
            let two = hopgate_client(&method, vec![&input[..cut], &input[cut..]]);
            compare(name, &whole, &two).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        }
    }
}

/// One response for the head writer: built fresh for each side.
#[derive(Clone)]
struct WriteCase {
    label: &'static str,
    /// The request line and fields the client sent.
    request: &'static str,
    status: u16,
    fields: &'static [(&'static str, &'static str)],
    reason: Option<&'static str>,
    body: BodySize,
}

fn build_response(c: &WriteCase) -> Response<()> {
    let mut r = Response::builder().status(c.status);
    for (n, v) in c.fields {
        r = r.header(*n, *v);
    }
    let mut r = r.body(()).expect("response");
    if let Some(p) = c.reason {
        r.extensions_mut().insert(hyper::ext::ReasonPhrase::try_from(p.as_bytes().to_vec()).expect("reason"));
    }
    r
}

fn body_of(size: BodySize) -> BoxBody<Bytes, Infallible> {
    match size {
        BodySize::Empty => Empty::new().boxed(),
        BodySize::Known(n) => Full::new(Bytes::from(vec![b'x'; n as usize])).boxed(),
        BodySize::Unknown => StreamBody::new(futures_util::stream::iter(vec![Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"hello"),
        ))]))
        .boxed(),
    }
}

/// The head with the date's value cut out.
fn mask_date(head: &str) -> String {
    match head.find("date: ") {
        Some(i) => format!("{}date: <date>{}", &head[..i], &head[i + 6 + 29..]),
        None => head.to_string(),
    }
}

/// What hyper's server writes for the case: its first response head (date masked) and whether it answered the
/// pipelined request that followed (false: it closed the connection after the first).
async fn hyper_writes(c: &WriteCase) -> (String, bool) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let case = c.clone();
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let case = case.clone();
            async move {
                let first = req.uri().path() == "/1";
                let _ = req.into_body().collect().await;
                let resp = if first {
                    build_response(&case).map(|()| body_of(case.body))
                } else {
                    Response::new(body_of(BodySize::Known(2)))
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), svc).await;
    });
    let (mut r, mut w) = tokio::io::split(client);
    let second = c.request.replacen("/1", "/2", 1);
    w.write_all(format!("{}{}", c.request, second).as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let read = async {
        let mut piece = [0u8; 4096];
        loop {
            let n = r.read(&mut piece).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            out.extend_from_slice(&piece[..n]);
            if heads(&out).len() >= 2 {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("hyper answers or closes");
    let text = String::from_utf8_lossy(&out).into_owned();
    let first = &text[..text.find("\r\n\r\n").expect("a head") + 4];
    (mask_date(first), heads(&out).len() >= 2)
}

/// What `write_head` writes for the case: the head (date masked) and whether the connection is kept.
fn hopgate_writes(c: &WriteCase) -> (String, bool) {
    let mut req = BytesMut::from(c.request);
    let head = parse_request(&mut req, 100).expect("valid request").expect("complete request");
    let (mut parts, ()) = build_response(c).into_parts();
    let mut dst = Vec::new();
    let http10 = head.request.version() == Version::HTTP_10;
    let w = write_head(&mut dst, &mut parts, c.body, head.request.method(), http10, head.keep_alive)
        .expect("a writable head");
    (mask_date(&String::from_utf8(dst).expect("ASCII head")), !w.last)
}

fn write_cases() -> Vec<WriteCase> {
    const GET11: &str = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    const GET10: &str = "GET /1 HTTP/1.0\r\n\r\n";
    const GET10_KA: &str = "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    const CLOSE11: &str = "GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    const HEAD11: &str = "HEAD /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    const CONNECT: &str = "CONNECT /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    let c = |label, request, status, fields, body| WriteCase { label, request, status, fields, reason: None, body };
    let mut cases = vec![
        c("200 known", GET11, 200, &[("x-a", "1")][..], BodySize::Known(5)),
        c("200 empty", GET11, 200, &[], BodySize::Empty),
        c("200 unknown: chunked", GET11, 200, &[], BodySize::Unknown),
        c("404 unknown", GET11, 404, &[("content-type", "text/html")], BodySize::Unknown),
        c("HTTP/1.0 unknown: close-delimited", GET10, 200, &[], BodySize::Unknown),
        c("HTTP/1.0 known", GET10, 200, &[], BodySize::Known(3)),
        c("HTTP/1.0 keep-alive known", GET10_KA, 200, &[], BodySize::Known(3)),
        c("HTTP/1.0 keep-alive unknown", GET10_KA, 200, &[], BodySize::Unknown),
        c("close requested", CLOSE11, 200, &[], BodySize::Known(2)),
        c("response says close", GET11, 200, &[("connection", "close")], BodySize::Known(2)),
        c("two connection fields", GET11, 200, &[("connection", "x-a"), ("connection", "close")], BodySize::Known(2)),
        c("given content-length", GET11, 200, &[("content-length", "4")], BodySize::Unknown),
        c("given content-length, known", GET11, 200, &[("content-length", "4")], BodySize::Known(4)),
        c("given transfer-encoding gzip", GET11, 200, &[("transfer-encoding", "gzip")], BodySize::Unknown),
        c("given chunked", GET11, 200, &[("transfer-encoding", "chunked")], BodySize::Unknown),
        c("trailer announced", GET11, 200, &[("trailer", "x-t")], BodySize::Unknown),
        c("given date", GET11, 200, &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")], BodySize::Known(1)),
        c("204", GET11, 204, &[], BodySize::Empty),
        c("204 with length", GET11, 204, &[("content-length", "0")], BodySize::Empty),
        c("304", GET11, 304, &[("etag", "\"e\"")], BodySize::Empty),
        c("HEAD known", HEAD11, 200, &[], BodySize::Known(0)),
        c("HEAD given length", HEAD11, 200, &[("content-length", "100")], BodySize::Empty),
        c("HEAD unknown", HEAD11, 200, &[], BodySize::Unknown),
        c("CONNECT 200", CONNECT, 200, &[], BodySize::Empty),
        c("CONNECT 407", CONNECT, 407, &[("proxy-authenticate", "Basic realm=\"x\"")], BodySize::Known(4)),
        c("many fields", GET11, 200, &[("b", "1"), ("a", "2"), ("b", "3"), ("set-cookie", "x=1")], BodySize::Known(1)),
        c("unknown status", GET11, 599, &[], BodySize::Known(1)),
    ];
    cases.push(WriteCase {
        label: "reason phrase",
        request: GET11,
        status: 200,
        fields: &[],
        reason: Some("Fine"),
        body: BodySize::Known(1),
    });
    cases.push(WriteCase {
        label: "reason phrase, HTTP/1.0",
        request: GET10,
        status: 404,
        fields: &[],
        reason: Some("Gone Fishing"),
        body: BodySize::Known(1),
    });
    cases
}

#[test]
fn written_heads_agree_with_hyper() {
    let rt = runtime();
    let mut failures = Vec::new();
    for c in write_cases() {
        let ours = hopgate_writes(&c);
        let theirs = rt.block_on(hyper_writes(&c));
        if let Err(e) = compare(c.label, &ours, &theirs) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}

// ---- The request head and body hopgate sends upstream (h1::request_head), against hyper's client. ----

/// One request for both clients: method, URI, version, fields, the body's frames (data, then trailers) and
/// whether its size is known ahead (a full body) or not (a stream).
struct SendCase {
    label: &'static str,
    method: Method,
    uri: &'static str,
    version: Version,
    fields: &'static [(&'static str, &'static str)],
    data: &'static [&'static str],
    trailers: &'static [(&'static str, &'static str)],
    known_size: bool,
}

fn send_cases() -> Vec<SendCase> {
    let case = |label, method, uri, fields, data, known_size| SendCase {
        label,
        method,
        uri,
        version: Version::HTTP_11,
        fields,
        data,
        trailers: &[],
        known_size,
    };
    let host: &'static [(&str, &str)] = &[("host", "example.com"), ("user-agent", "t"), ("accept", "*/*")];
    let mut cases = vec![
        case("get origin-form", Method::GET, "/a/b?c=d&e", host, &[], true),
        case("get absolute-form", Method::GET, "http://example.com:8080/x?y", host, &[], true),
        case("get root", Method::GET, "/", host, &[], true),
        case("head", Method::HEAD, "/h", host, &[], true),
        case("delete", Method::DELETE, "/d", host, &[], true),
        case("options star", Method::OPTIONS, "*", host, &[], true),
        case("post known", Method::POST, "/p", host, &["hello ", "world"], true),
        case("post stream", Method::POST, "/p", host, &["hello ", "world", ""], false),
        case("put stream empty frames", Method::PUT, "/p", host, &["", "abc"], false),
        case("get stream (no framing, as hyper)", Method::GET, "/g", host, &["abc"], false),
        case(
            "post content-length given",
            Method::POST,
            "/p",
            &[("host", "h"), ("content-length", "5")],
            &["hello"],
            false,
        ),
        case(
            "post invalid content-length, stream",
            Method::POST,
            "/p",
            &[("content-length", "x"), ("host", "h")],
            &["ab"],
            false,
        ),
        case(
            "post invalid content-length, known",
            Method::POST,
            "/p",
            &[("content-length", "x"), ("host", "h")],
            &["ab"],
            true,
        ),
        case(
            "post chunked given",
            Method::POST,
            "/p",
            &[("transfer-encoding", "chunked"), ("host", "h")],
            &["ab"],
            false,
        ),
        case(
            "post chunked given, with a length",
            Method::POST,
            "/p",
            &[("content-length", "2"), ("transfer-encoding", "chunked"), ("host", "h")],
            &["ab"],
            false,
        ),
        case("post gzip given", Method::POST, "/p", &[("transfer-encoding", "gzip"), ("host", "h")], &["ab"], false),
        case(
            "get empty with transfer-encoding",
            Method::GET,
            "/p",
            &[("transfer-encoding", "chunked"), ("host", "h"), ("x-a", "1")],
            &[],
            true,
        ),
        case(
            "repeated fields",
            Method::GET,
            "/",
            &[("x-a", "1"), ("host", "h"), ("x-a", "2"), ("cookie", "a=b"), ("x-a", "3")],
            &[],
            true,
        ),
        case(
            "upgrade offer",
            Method::GET,
            "/ws",
            &[
                ("host", "h"),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            &[],
            true,
        ),
        case("connection close", Method::GET, "/", &[("host", "h"), ("connection", "close")], &[], true),
        case(
            "patch known large",
            Method::PATCH,
            "/big",
            host,
            &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
            true,
        ),
    ];
    cases.push(SendCase {
        label: "post stream with announced trailers",
        trailers: &[("x-sum", "abc"), ("x-not-announced", "1"), ("content-type", "no")],
        ..case("", Method::POST, "/t", &[("host", "h"), ("trailer", "x-sum, content-type")], &["abc"], false)
    });
    cases.push(SendCase {
        label: "post stream with unannounced trailers",
        trailers: &[("x-sum", "abc")],
        ..case("", Method::POST, "/t", &[("host", "h")], &["abc"], false)
    });
    cases.push(SendCase {
        label: "http/1.0 known",
        version: Version::HTTP_10,
        ..case("", Method::POST, "/p", host, &["ab"], true)
    });
    cases.push(SendCase {
        label: "http/1.0 stream",
        version: Version::HTTP_10,
        ..case("", Method::POST, "/p", host, &["ab"], false)
    });
    cases.push(SendCase {
        label: "http/1.0 chunked given",
        version: Version::HTTP_10,
        ..case("", Method::POST, "/p", &[("transfer-encoding", "chunked"), ("content-length", "2")], &["ab"], false)
    });
    cases
}

fn send_request(c: &SendCase) -> Request<BoxBody<Bytes, Infallible>> {
    let mut req = Request::new(());
    *req.method_mut() = c.method.clone();
    *req.uri_mut() = c.uri.parse().unwrap();
    *req.version_mut() = c.version;
    for (n, v) in c.fields {
        req.headers_mut().append(http::header::HeaderName::from_static(n), v.parse().unwrap());
    }
    let all: Vec<u8> = c.data.iter().flat_map(|d| d.bytes()).collect();
    let body = if c.known_size {
        if all.is_empty() { Empty::new().boxed() } else { Full::new(Bytes::from(all)).boxed() }
    } else {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
            c.data.iter().map(|d| Ok(Frame::data(Bytes::from_static(d.as_bytes())))).collect();
        if !c.trailers.is_empty() {
            let mut t = HeaderMap::new();
            for (n, v) in c.trailers {
                t.append(http::header::HeaderName::from_static(n), v.parse().unwrap());
            }
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    };
    req.map(|()| body)
}

/// What hyper's client writes for the request: everything read off the pipe until `expect` bytes came (hopgate's
/// length) and then nothing more for a moment, or the deadline.
async fn hyper_sends(c: &SendCase, expect: usize) -> Vec<u8> {
    let (near, mut far) = tokio::io::duplex(1 << 16);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near)).await.unwrap();
    tokio::spawn(conn);
    let req = send_request(c);
    tokio::spawn(async move { sender.send_request(req).await });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let quiet = if got.len() >= expect { Duration::from_millis(50) } else { DEADLINE };
        let until = deadline.min(tokio::time::Instant::now() + quiet);
        match tokio::time::timeout_at(until, far.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// What hopgate's upstream connection writes: the head from `request_head`, the body through its encoder.
fn hopgate_sends(c: &SendCase) -> Vec<u8> {
    use hopgate::h1::request_head::{RequestBody, set_length, write_last_chunk, write_request_head};
    use hopgate::h1::response::Encoder;
    let (mut parts, body) = send_request(c).into_parts();
    let size = if http_body::Body::is_end_stream(&body) {
        RequestBody::Empty
    } else {
        match http_body::Body::size_hint(&body).exact() {
            Some(n) => RequestBody::Known(n),
            None => RequestBody::Unknown,
        }
    };
    let encoder = set_length(&mut parts.headers, &parts.method, parts.version, size);
    let mut out = Vec::new();
    write_request_head(&mut out, &parts.method, &parts.uri, parts.version, &parts.headers);
    let mut left = match &encoder {
        Encoder::Length(n) => *n,
        _ => u64::MAX,
    };
    if left == 0 {
        return out;
    }
    for d in c.data.iter().filter(|d| !d.is_empty()) {
        match &encoder {
            Encoder::Chunked { .. } => {
                hopgate::h1::chunked::size_line(&mut out, d.len());
                out.extend_from_slice(d.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            _ => {
                let n = (d.len() as u64).min(left) as usize;
                out.extend_from_slice(&d.as_bytes()[..n]);
                left -= n as u64;
            }
        }
    }
    if let Encoder::Chunked { trailers } = &encoder {
        let mut t = HeaderMap::new();
        for (n, v) in c.trailers {
            t.append(http::header::HeaderName::from_static(n), v.parse().unwrap());
        }
        write_last_chunk(&mut out, trailers.as_deref(), (!c.trailers.is_empty()).then_some(&t));
    }
    out
}

#[test]
fn sent_requests_agree_with_hyper() {
    let rt = runtime();
    let mut failures = Vec::new();
    for c in send_cases() {
        let ours = hopgate_sends(&c);
        let theirs = rt.block_on(hyper_sends(&c, ours.len()));
        assert!(theirs.starts_with(c.method.as_str().as_bytes()), "{}: hyper wrote {theirs:?}", c.label);
        if let Err(e) =
            compare(c.label, &String::from_utf8_lossy(&ours).to_string(), &String::from_utf8_lossy(&theirs).to_string())
        {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}
