//! The request head: httparse's request line and fields, then the framing RFC 9112 §6 gives them, the way hyper
//! 1.12 decides it (every rule here is one of hyper's; tests/h1_differential.rs holds them to it).

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use super::fields::{KeepAlive, Span, digits, field, has_token, last_coding_is_chunked, scan_with_fields, spans};
use super::{BodyLen, HeadError, MAX_URI_LEN};

/// A parsed request head and what the connection needs to know about it.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request<()>,
    pub body: BodyLen,
    /// The client may send another request after this one (HTTP/1.1 without `Connection: close`, or HTTP/1.0
    /// with `Connection: keep-alive`; never when both framing fields were sent).
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request.
    pub expect_continue: bool,
    /// A CONNECT, or an HTTP/1.1 request with `Upgrade`: the connection may become a tunnel after the response.
    pub wants_upgrade: bool,
    /// `TE` lists `trailers`: the client accepts trailer fields in a chunked response (hyper sends none otherwise).
    pub te_trailers: bool,
}

/// Parses the request head at the start of `buf`. Ok(None): the head is not complete yet (read more, unless
/// `buf` is already at the connection's limit). On success the head's bytes are taken off `buf` (the field
/// values share them), and what follows (a body, a pipelined request) stays. Empty lines before the request
/// line are skipped (RFC 9112 §2.2).
pub fn parse_request(buf: &mut BytesMut, max_headers: usize) -> Result<Option<RequestHead>, HeadError> {
    match scan_with_fields!(scan, buf, max_headers)? {
        Some(s) => build(buf, s).map(Some),
        None => Ok(None),
    }
}

/// A complete head found by httparse, as positions in the buffer.
struct Scanned {
    len: usize,
    method: Method,
    path: (usize, usize),
    version: Version,
    spans: Vec<Span>,
}

fn scan<'b>(
    bytes: &'b [u8],
    fields: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<Scanned>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, bytes, fields) {
        Ok(httparse::Status::Complete(len)) => {
            let path = req.path.unwrap_or("");
            if path.len() > MAX_URI_LEN {
                return Err(HeadError::UriTooLong);
            }
            let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
                .map_err(|_| HeadError::Malformed("invalid request method"))?;
            let at = path.as_ptr() as usize - bytes.as_ptr() as usize;
            let spans = spans(bytes, req.headers)?;
            let version = if req.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
            Ok(Some(Scanned { len, method, path: (at, at + path.len()), version, spans }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::Token) if req.method.is_none() => Err(HeadError::Malformed("invalid request method")),
        Err(httparse::Error::Token) => Err(HeadError::Malformed("invalid request target")),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(httparse::Error::Version) if H2_PREFACE.starts_with(bytes) => Ok(None),
        Err(httparse::Error::Version) if bytes.starts_with(H2_PREFACE) => Err(HeadError::Http2Preface),
        Err(httparse::Error::Version) => Err(HeadError::Malformed("invalid HTTP version")),
        Err(_) => Err(HeadError::Malformed("invalid header field")),
    }
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4). hyper closes a connection that starts with it without an
/// answer once all 24 bytes are read; here a part of it waits for the rest, whatever the reads were.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How many fields a forwarded request gains at most (http::forward_request_head): Via, Forwarded,
/// X-Forwarded-For, -Proto and -Host.
const RELAY_ADDS: usize = 5;

fn build(buf: &mut BytesMut, s: Scanned) -> Result<RequestHead, HeadError> {
    let head = buf.split_to(s.len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(s.path.0..s.path.1))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let is_11 = s.version == Version::HTTP_11;
    let mut framing = Framing::new(is_11, s.method == Method::CONNECT);
    // Room for the fields a relay adds (Via, Forwarded, X-Forwarded-*): growing the map on the way out rehashed
    // it up to three times per relayed request (bench/profile callgrind gateway).
    let mut headers = super::io::take_map(s.spans.len() + RELAY_ADDS);
    for &span in &s.spans {
        let (name, value) = field(&head, span)?;
        if framing.field(&name, &value, &mut headers)? {
            headers.append(name, value);
        }
    }
    let (body, keep_alive) = framing.finish()?;
    let mut request = Request::new(());
    *request.method_mut() = s.method;
    *request.uri_mut() = uri;
    *request.version_mut() = s.version;
    *request.headers_mut() = headers;
    Ok(RequestHead {
        request,
        body,
        keep_alive,
        // hyper answers an expectation in HTTP/1.1 only (RFC 9110 §10.1.1: HTTP/1.0 ones are ignored).
        expect_continue: framing.expect_continue && is_11,
        wants_upgrade: framing.wants_upgrade,
        te_trailers: framing.te_trailers,
    })
}

/// The framing facts of a head, field by field (hyper's rules, RFC 9112 §6.3).
struct Framing {
    is_11: bool,
    body: BodyLen,
    content_length: Option<u64>,
    saw_content_length: bool,
    saw_te: bool,
    te_chunked: bool,
    keep_alive: KeepAlive,
    expect_continue: bool,
    wants_upgrade: bool,
    te_trailers: bool,
}

impl Framing {
    fn new(is_11: bool, connect: bool) -> Framing {
        Framing {
            is_11,
            body: BodyLen::Zero,
            content_length: None,
            saw_content_length: false,
            saw_te: false,
            te_chunked: false,
            keep_alive: KeepAlive::new(is_11),
            expect_continue: false,
            wants_upgrade: connect,
            te_trailers: false,
        }
    }

    /// Looks at one field; false: the field is left out of the request (a repeated `Content-Length` equal to
    /// the first is kept, so that hopgate's admit step can refuse it with a page naming it).
    fn field(&mut self, name: &HeaderName, value: &HeaderValue, headers: &mut HeaderMap) -> Result<bool, HeadError> {
        match *name {
            header::TRANSFER_ENCODING => {
                if !self.is_11 {
                    return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
                }
                self.saw_te = true;
                if self.saw_content_length && self.content_length.take().is_some() {
                    headers.remove(header::CONTENT_LENGTH);
                }
                self.te_chunked = last_coding_is_chunked(value);
                if self.te_chunked {
                    self.body = BodyLen::Chunked;
                }
            }
            header::CONTENT_LENGTH => {
                self.saw_content_length = true;
                if self.saw_te {
                    return Ok(false);
                }
                let len = digits(value.as_bytes()).ok_or(HeadError::Malformed("invalid Content-Length"))?;
                match self.content_length {
                    Some(prev) if prev != len => return Err(HeadError::Malformed("differing Content-Length fields")),
                    Some(_) => {}
                    None => {
                        if len > u64::MAX - 2 {
                            return Err(HeadError::TooLarge);
                        }
                        self.body = if len == 0 { BodyLen::Zero } else { BodyLen::Length(len) };
                        self.content_length = Some(len);
                    }
                }
            }
            header::CONNECTION => self.keep_alive.connection(value),
            header::EXPECT => self.expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue"),
            header::UPGRADE => self.wants_upgrade = self.is_11,
            header::TE => self.te_trailers |= has_token(value, "trailers"),
            _ => {}
        }
        Ok(true)
    }

    /// The body's framing and whether the connection may be kept.
    fn finish(&self) -> Result<(BodyLen, bool), HeadError> {
        if self.saw_te && !self.te_chunked {
            return Err(HeadError::Malformed("Transfer-Encoding whose last coding is not chunked"));
        }
        let keep_alive = self.keep_alive.keep && !(self.saw_te && self.saw_content_length);
        Ok((self.body, keep_alive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(s), 100)
    }

    #[test]
    fn a_simple_get() {
        let mut buf = BytesMut::from("GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nGET /next");
        let h = parse_request(&mut buf, 100).unwrap().unwrap();
        assert_eq!(h.request.method(), Method::GET);
        assert_eq!(h.request.uri(), "/a?b");
        assert_eq!(h.request.headers()["host"], "x");
        assert_eq!(h.body, BodyLen::Zero);
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"GET /next", "what follows the head stays");
    }

    #[test]
    fn field_values_take_what_header_value_takes() {
        // Every byte HeaderValue accepts (HTAB, SP, VCHAR, obs-text) arrives as it was sent; the bytes it refuses
        // (controls, DEL) make the head malformed, whichever of httparse's scanners (SIMD or not) read them. A
        // value starts after optional whitespace, so each starts with `a`s.
        let mut value: Vec<u8> = (0x20..0x7f).chain(0x80..=0xff).collect();
        value.insert(10, b'\t');
        for pad in [1, 7, 31, 40] {
            let mut head = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', pad));
            head.extend(&value);
            head.extend(b"\r\n\r\n");
            let h = parse_request(&mut BytesMut::from(&head[..]), 100).unwrap().unwrap();
            let got = h.request.headers()["x-a"].as_bytes();
            assert_eq!(&got[pad..], &value[..], "pad {pad}");
            for bad in [0x7f, 0x01, 0x1f, 0x00] {
                let mut head = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
                head.extend(std::iter::repeat_n(b'a', pad));
                head.push(bad);
                head.extend(b"zz\r\n\r\n");
                let e = parse_request(&mut BytesMut::from(&head[..]), 100).err();
                assert!(matches!(e, Some(HeadError::Malformed(_))), "byte {bad:#x} after {pad}: {e:?}");
            }
        }
    }

    #[test]
    fn partial_heads_wait() {
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(parse("GE").unwrap().is_none());
    }

    #[test]
    fn framing() {
        let h = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyLen::Length(5));
        let h = parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyLen::Chunked);
        let h = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyLen::Chunked);
        assert!(h.request.headers().get("content-length").is_none());
        assert!(!h.keep_alive, "both framing fields: the connection ends after this request");
        let h = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.request.headers().get_all("content-length").iter().count(), 2, "admit refuses it");
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").unwrap_err(),
            HeadError::Malformed("differing Content-Length fields")
        );
        assert!(parse("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n").is_err());
        assert!(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").is_err());
        assert!(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn connection_and_versions() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap().wants_upgrade);
        assert!(!parse("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap().wants_upgrade);
        assert!(parse("CONNECT a:443 HTTP/1.1\r\n\r\n").unwrap().unwrap().wants_upgrade);
        assert!(parse("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").unwrap().unwrap().expect_continue);
    }

    #[test]
    fn errors_and_limits() {
        assert_eq!(parse("G@T / HTTP/1.1\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(parse("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(parse("GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 400);
        let many: String = (0..3).map(|i| format!("X-{i}: y\r\n")).collect();
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        assert_eq!(parse_request(&mut buf, 2).unwrap_err().status(), 431);
        let long = "a".repeat(MAX_URI_LEN + 1);
        assert_eq!(parse(&format!("GET /{long} HTTP/1.1\r\n\r\n")).unwrap_err().status(), 414);
        assert!(parse("\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap().is_some(), "leading empty lines are skipped");
    }

    #[test]
    fn the_http2_preface_is_closed_unanswered() {
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for n in 1..preface.len() {
            assert!(parse(&preface[..n]).unwrap().is_none(), "a part of the preface waits: {n}");
        }
        let e = parse(&format!("{preface}\0\0\0\x04")).unwrap_err();
        assert_eq!(e, HeadError::Http2Preface);
        assert!(!e.answered());
        assert!(parse("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap_err().answered());
        assert!(parse("GET / HTTP/2.0\r\n\r\n").unwrap_err().answered());
    }

    #[test]
    fn many_fields_go_to_the_heap() {
        let many: String = (0..150).map(|i| format!("X-{i}: y\r\n")).collect();
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        assert_eq!(parse_request(&mut buf, 200).unwrap().unwrap().request.headers().len(), 150);
    }
}
