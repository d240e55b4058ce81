//! hopgate's own HTTP/1 framing (src/h1, issue 14): request heads, chunked bodies, response heads, and written
//! heads read back. Each input is the raw bytes of a message (tests/corpus/h1 seeds them); where the input is
//! cut into reads and which method or limit applies is derived from a hash of the input, so a saved input
//! replays the same way.

use bytes::BytesMut;
use http::{HeaderName, Method, StatusCode};

use super::header_map;
use super::mutate::{Rng, fnv1a};
use crate::h1::chunked::{Decoded, Decoder};
use crate::h1::request::parse_request;
use crate::h1::response::{BodySize, Encoder, write_head};
use crate::h1::response_head::parse_response;
use crate::h1::{BodyLen, HeadError};

/// A field limit for the input: both the stack (<= 100) and the heap path of the parsers.
fn max_headers(data: &[u8]) -> usize {
    1 + (fnv1a(data) >> 40) as usize % 130
}

/// Where the input is cut in two.
fn cut(data: &[u8]) -> usize {
    (fnv1a(data) as usize) % (data.len() + 1)
}

/// A parse outcome as a comparable value: the head's facts or the error, and what is left in the buffer.
type Outcome = (Result<Option<String>, HeadError>, Vec<u8>);

/// Parses `data` whole and cut in two reads (the first read parsed alone, then both), and asserts the parser's
/// promises: never more consumed than given, what is left is the input after the head, the two-read parse is the
/// one-read parse, an error in a first read stays an error.
fn two_reads(data: &[u8], parse: impl Fn(&mut BytesMut) -> Result<Option<String>, HeadError>) {
    let mut whole = BytesMut::from(data);
    let one = parse(&mut whole);
    let consumed = data.len() - whole.len();
    assert_eq!(&whole[..], &data[consumed..], "what is left is the input after the head");
    match &one {
        Ok(Some(_)) => assert!(consumed > 0, "a head takes bytes"),
        Ok(None) => assert_eq!(consumed, 0, "nothing is taken from a partial head"),
        Err(_) => {} // the connection ends
    }
    let one: Outcome = (one, whole.to_vec());

    let at = cut(data);
    let mut buf = BytesMut::from(&data[..at]);
    match parse(&mut buf) {
        Ok(None) => {
            assert_eq!(&buf[..], &data[..at], "a partial head leaves the buffer alone");
            buf.extend_from_slice(&data[at..]);
            let two = parse(&mut buf);
            assert_eq!((two, buf.to_vec()), one, "read in two pieces (cut at {at}) = read at once");
        }
        Ok(Some(head)) => {
            buf.extend_from_slice(&data[at..]);
            assert_eq!((Ok(Some(head)), buf.to_vec()), one, "a head complete in the first read (cut at {at})");
        }
        Err(e) => assert!(one.0.is_err(), "an error in the first {at} bytes ({e}) but not in all of them"),
    }
}

/// Request heads: arbitrary bytes, any split.
pub fn h1_request_head(data: &[u8]) {
    let max = max_headers(data);
    two_reads(data, |buf| {
        parse_request(buf, max).map(|h| {
            h.map(|h| {
                let r = &h.request;
                assert!(r.headers().len() <= max, "no more fields than the limit");
                if h.body == BodyLen::Chunked {
                    assert_eq!(r.headers().get("content-length"), None, "chunked drops Content-Length");
                }
                assert_ne!(h.body, BodyLen::Close, "requests are never close-delimited");
                format!("{:?} {:?} {:?} {:?}", r, h.body, h.keep_alive, (h.expect_continue, h.wants_upgrade))
            })
        })
    });
}

/// Response heads: arbitrary bytes, any split, for a method the input picks.
pub fn h1_response_head(data: &[u8]) {
    let max = max_headers(data);
    let method = [Method::GET, Method::HEAD, Method::CONNECT, Method::POST][(fnv1a(data) >> 20) as usize % 4].clone();
    two_reads(data, |buf| {
        parse_response(buf, &method, max).map(|h| {
            h.map(|h| {
                let status = h.response.status();
                if status.is_informational()
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED
                    || method == Method::HEAD
                    || (method == Method::CONNECT && status.is_success())
                {
                    assert_eq!(h.body, BodyLen::Zero, "{status} to {method} has no body");
                }
                if h.body == BodyLen::Close {
                    assert!(!h.keep_alive, "a close-delimited body ends the connection");
                }
                let reason = h.response.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes().to_vec());
                format!("{:?} {:?} {:?} {:?}", h.response, reason, h.body, h.keep_alive)
            })
        })
    });
}

/// Decodes a chunked body fed in `pieces`; the data, the trailers or the error, and what is left after the end.
/// A decoded body: its data and trailers, or the error; then the bytes left after it.
type Body = (Result<(Vec<u8>, Option<String>), String>, Vec<u8>);

fn decode(pieces: &[&[u8]]) -> Body {
    let mut d = Decoder::new(100);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut next = pieces.iter();
    let result = loop {
        match d.decode(&mut buf) {
            Ok(Decoded::Data(b)) => {
                assert!(!b.is_empty(), "no empty data");
                data.extend_from_slice(&b);
            }
            Ok(Decoded::End(t)) => {
                assert!(d.is_done());
                break Ok((std::mem::take(&mut data), t.map(|t| format!("{t:?}"))));
            }
            Ok(Decoded::NeedMore) => match next.next() {
                Some(p) => buf.extend_from_slice(p),
                None => break Err("incomplete".to_string()),
            },
            Err(e) => break Err(e.to_string()),
        }
    };
    let mut left = buf.to_vec();
    for p in next {
        left.extend_from_slice(p);
    }
    (result, left)
}

/// Chunked bodies: decoded in random pieces = decoded in one; the data is never more than the input. An input
/// that starts with a request head announcing a chunked body is decoded after that head (the corpus's requests).
pub fn h1_chunked(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let body = match parse_request(&mut buf, 100) {
        Ok(Some(h)) if h.body == BodyLen::Chunked => &data[data.len() - buf.len()..],
        _ => data,
    };
    let one = decode(&[body]);
    if let Ok((d, _)) = &one.0 {
        assert!(d.len() <= body.len(), "more data than input");
    }
    let mut rng = Rng::new(fnv1a(data));
    let mut pieces = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let most = if rng.chance(2) { 4 } else { 64 };
        let n = (1 + rng.below(most)).min(rest.len());
        let (p, r) = rest.split_at(n);
        pieces.push(p);
        rest = r;
    }
    let many = decode(&pieces);
    assert_eq!(many, one, "decoded in {} pieces = decoded at once", pieces.len());
}

/// Written heads read back: a response made from the input (status, fields, body size, the request's method,
/// version and keep-alive), written by `write_head` and parsed by `parse_response`, gives back its status, every
/// field that is not framing, and the framing the writer chose.
pub fn h1_round_trip(data: &[u8]) {
    let [a, b, c, d, rest @ ..] = data else { return };
    let status = StatusCode::from_u16(200 + (u16::from(*a) << 8 | u16::from(*b)) % 400).unwrap_or(StatusCode::OK);
    let method = [Method::GET, Method::HEAD, Method::CONNECT, Method::POST][usize::from(*c) % 4].clone();
    let body = match d % 3 {
        0 => BodySize::Empty,
        1 => BodySize::Known(u64::from(*d)),
        _ => BodySize::Unknown,
    };
    let (http10, keep_alive) = (d & 0x40 != 0, d & 0x80 != 0);
    let fields = header_map(rest);
    if let BodySize::Known(n) = body {
        // A Content-Length field that differs from the body's known size is written as given while the body's
        // size is sent, as hyper does ("trust that the values match"): the caller's promise, not framing's.
        if fields.get_all(http::header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != n.to_string().as_bytes()) {
            return;
        }
    }
    if fields
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .any(|v| crate::h1::fields::digits(v.as_bytes()).is_some_and(|n| n > u64::MAX - 2))
    {
        return; // written as given; every reader (and hyper's) refuses a length that large
    }
    if fields.get_all(http::header::TRANSFER_ENCODING).iter().any(|v| v.to_str().is_err()) {
        // Open (docs/fuzzing.md): a Transfer-Encoding value with obs-text gets ", chunked" and a chunked body from
        // the writer, but readers that take codings through `to_str` (parse_response, hyper's client) read it
        // to the close. hyper's server writes the same bytes.
        return;
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = fields.clone();
    let (mut parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let Ok(w) = write_head(&mut out, &mut parts, body, &method, http10, keep_alive) else { return };

    let mut buf = BytesMut::from(&out[..]);
    let h = parse_response(&mut buf, &method, 10_000)
        .unwrap_or_else(|e| panic!("written head does not parse: {e}: {:?}", String::from_utf8_lossy(&out)))
        .unwrap_or_else(|| panic!("written head is incomplete: {:?}", String::from_utf8_lossy(&out)));
    assert!(buf.is_empty(), "the head is all that was written");
    assert_eq!(h.response.status(), status);
    let framing =
        |n: &HeaderName| ["content-length", "transfer-encoding", "connection", "date", "trailer"].contains(&n.as_str());
    for name in fields.keys().filter(|n| !framing(n)) {
        let sent: Vec<_> = fields.get_all(name).iter().collect();
        let got: Vec<_> = h.response.headers().get_all(name).iter().collect();
        assert_eq!(got, sent, "field {name}");
    }
    let expected = match &w.encoder {
        Encoder::Length(0) => BodyLen::Zero,
        Encoder::Length(n) => BodyLen::Length(*n),
        Encoder::Chunked { .. } => BodyLen::Chunked,
        Encoder::Close => BodyLen::Close,
    };
    assert_eq!(h.body, expected, "framing read back: {:?}", String::from_utf8_lossy(&out));
    // A Connection value that is not text (obs-text) hides the tokens of its line from the reader, as it does
    // from hyper's (both read tokens through `to_str`), and the writer joins the fields of one name on a line.
    // A 204 or 304 to CONNECT: the writer ends the connection (a 2xx to CONNECT is a tunnel), the readers (and
    // hyper's client) take the status first and keep it; hyper's two sides differ the same way.
    // A response's own `Connection: keep-alive` is written as given even when the request ends the connection
    // (hyper's server does the same); the reader then keeps it.
    let connect_bodiless = method == Method::CONNECT && matches!(status.as_u16(), 204 | 304);
    let says_keep_alive =
        fields.get_all(http::header::CONNECTION).iter().any(|v| crate::h1::fields::has_token(v, "keep-alive"));
    if !connect_bodiless
        && !says_keep_alive
        && fields.get_all(http::header::CONNECTION).iter().all(|v| v.to_str().is_ok())
    {
        assert_eq!(h.keep_alive, !w.last, "keep-alive read back: {:?}", String::from_utf8_lossy(&out));
    }
}
