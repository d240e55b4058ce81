//! The response head as hopgate reads it from an upstream (the pooled client connections): httparse's status line
//! and fields, then the framing RFC 9112 §6.3 gives them, the way hyper 1.12's client decides it (role.rs, `impl
//! Http1Transaction for Client`: `parse` and `decoder`), with hyper's default client `ParserConfig` (no obs-fold,
//! no whitespace before a colon, no HTTP/0.9). tests/h1_differential.rs holds it to hyper.

use bytes::BytesMut;
use http::header;
use http::{HeaderMap, Method, Response, StatusCode, Version};

use super::fields::{KeepAlive, Span, digits, field, last_coding_is_chunked, scan_with_fields, spans};
use super::{BodyLen, HeadError};

/// A parsed response head and what the connection needs to know about it.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and fields; a reason phrase other than the status's canonical one is kept as a
    /// `hyper::ext::ReasonPhrase` extension (as hyper's client does).
    pub response: Response<()>,
    /// How the body is framed. Always `Zero` for 1xx, 204, 304, a response to HEAD and a 2xx to CONNECT.
    pub body: BodyLen,
    /// The connection may carry another request once this response's body is read: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`; never after a 101, a 2xx to CONNECT (the
    /// connection becomes a tunnel) or a body delimited by the connection's close.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// A 1xx other than 101: an interim response. The caller forwards (or counts) it and parses again for the
    /// final response, which follows on the same connection (hyper's client loops over them itself and hands
    /// each to its `on_informational` callback).
    pub fn is_interim(&self) -> bool {
        let s = self.response.status();
        s.is_informational() && s != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Parses the response head at the start of `buf`, the response to a request with `method`. Ok(None): the head
/// is not complete yet. On success the head's bytes are taken off `buf` (the field values share them); the body
/// and anything after it stay. Errors: `TooLarge` for more than `max_headers` fields, a field name of 64 KiB or a
/// Content-Length beyond hyper's largest; `Malformed` for everything else hyper's client refuses (an invalid
/// status line or field, Transfer-Encoding in HTTP/1.0, invalid or differing Content-Length values).
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    max_headers: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    match scan_with_fields!(scan, buf, max_headers)? {
        Some(s) => build(buf, s, method).map(Some),
        None => Ok(None),
    }
}

/// A complete head found by httparse, as positions in the buffer.
struct Scanned {
    len: usize,
    status: StatusCode,
    /// The reason phrase's position, when it is not the canonical one.
    reason: Option<(usize, usize)>,
    version: Version,
    spans: Vec<Span>,
}

fn scan<'b>(
    bytes: &'b [u8],
    fields: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<Scanned>, HeadError> {
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, bytes, fields) {
        Ok(httparse::Status::Complete(len)) => {
            let status = res
                .code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(HeadError::Malformed("invalid status code"))?;
            let base = bytes.as_ptr() as usize;
            let reason = res.reason.unwrap_or("");
            let reason = if Some(reason) == status.canonical_reason() {
                None
            } else if reason.is_empty() {
                // httparse's "" for a missing phrase (or one with obs-text) has no place in the buffer.
                Some((0, 0))
            } else {
                let at = reason.as_ptr() as usize - base;
                Some((at, at + reason.len()))
            };
            let spans = spans(bytes, res.headers)?;
            let version = if res.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
            Ok(Some(Scanned { len, status, reason, version, spans }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => Err(HeadError::Malformed("invalid HTTP version")),
        Err(httparse::Error::Status) => Err(HeadError::Malformed("invalid status code")),
        Err(_) => Err(HeadError::Malformed("invalid header field")),
    }
}

fn build(buf: &mut BytesMut, s: Scanned, method: &Method) -> Result<ResponseHead, HeadError> {
    let head = buf.split_to(s.len).freeze();
    let mut headers = super::io::take_map(s.spans.len());
    let mut keep_alive = KeepAlive::new(s.version == Version::HTTP_11);
    for &span in &s.spans {
        let (name, value) = field(&head, span)?;
        if name == header::CONNECTION {
            keep_alive.connection(&value);
        }
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = s.status;
    *response.version_mut() = s.version;
    if let Some((start, end)) = s.reason {
        let phrase = hyper::ext::ReasonPhrase::try_from(head.slice(start..end))
            .map_err(|_| HeadError::Malformed("invalid reason phrase"))?;
        response.extensions_mut().insert(phrase);
    }
    let (body, tunnel) = framing(s.status, s.version, &headers, method)?;
    *response.headers_mut() = headers;
    let keep_alive = keep_alive.keep && !tunnel && body != BodyLen::Close;
    Ok(ResponseHead { response, body, keep_alive })
}

/// The body's framing, and whether the connection becomes a tunnel after the head (hyper's `Client::decoder`,
/// in its order: the status and the method decide before any field does).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(BodyLen, bool), HeadError> {
    match status.as_u16() {
        101 => return Ok((BodyLen::Zero, true)),
        100..=199 | 204 | 304 => return Ok((BodyLen::Zero, false)),
        _ => {}
    }
    if *method == Method::HEAD {
        return Ok((BodyLen::Zero, false));
    }
    if *method == Method::CONNECT && status.is_success() {
        return Ok((BodyLen::Zero, true));
    }
    if let Some(last) = headers.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 response"));
        }
        // A coding list that does not end in chunked is read until the connection closes (RFC 9112 §6.3 item 4).
        return Ok((if last_coding_is_chunked(last) { BodyLen::Chunked } else { BodyLen::Close }, false));
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        let len = content_length(headers).ok_or(HeadError::Malformed("invalid Content-Length"))?;
        if len > u64::MAX - 2 {
            return Err(HeadError::TooLarge);
        }
        return Ok((if len == 0 { BodyLen::Zero } else { BodyLen::Length(len) }, false));
    }
    Ok((BodyLen::Close, false))
}

/// Every `Content-Length` value and every element of their comma-separated lists, when all are the same
/// decimal number (hyper's `content_length_parse_all`, RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut len = None;
    // Every length given must be the first one.
    let mut agrees = |n: u64| len.replace(n).is_none_or(|l| l == n);
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // The usual value: digits only, no list to split.
        if let Some(n) = digits(value.as_bytes()) {
            if !agrees(n) {
                return None;
            }
            continue;
        }
        for v in value.to_str().ok()?.split(',') {
            if !agrees(digits(v.trim().as_bytes())?) {
                return None;
            }
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, method: Method) -> Result<Option<ResponseHead>, HeadError> {
        parse_response(&mut BytesMut::from(s), &method, 100)
    }

    fn body(s: &str, method: Method) -> BodyLen {
        parse(s, method).unwrap().unwrap().body
    }

    #[test]
    fn a_simple_response() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let h = parse_response(&mut buf, &Method::GET, 100).unwrap().unwrap();
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.response.version(), Version::HTTP_11);
        assert_eq!(h.response.headers()["x-a"], "b");
        assert!(h.response.extensions().get::<hyper::ext::ReasonPhrase>().is_none(), "canonical reason");
        assert_eq!(h.body, BodyLen::Length(5));
        assert!(h.keep_alive);
        assert!(!h.is_interim());
        assert_eq!(&buf[..], b"hello", "the body stays");
    }

    #[test]
    fn partial_heads_wait() {
        assert!(parse("HTTP/1.1 200 OK\r\nA: b\r\n", Method::GET).unwrap().is_none());
        assert!(parse("HTT", Method::GET).unwrap().is_none());
    }

    #[test]
    fn reason_phrases() {
        let h = parse("HTTP/1.1 200 Connection Established\r\n\r\n", Method::CONNECT).unwrap().unwrap();
        let r = h.response.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(r.as_bytes(), b"Connection Established");
        let h = parse("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", Method::GET).unwrap().unwrap();
        let r = h.response.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(r.as_bytes(), b"", "a missing phrase differs from the canonical one");
        let h = parse("HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n", Method::GET).unwrap().unwrap();
        assert_eq!(h.response.status(), 299);
    }

    #[test]
    fn bodiless_statuses_and_methods() {
        let cl = "Content-Length: 10\r\n\r\n";
        assert_eq!(body(&format!("HTTP/1.1 204 No Content\r\n{cl}"), Method::GET), BodyLen::Zero);
        assert_eq!(body(&format!("HTTP/1.1 304 Not Modified\r\n{cl}"), Method::GET), BodyLen::Zero);
        assert_eq!(body(&format!("HTTP/1.1 200 OK\r\n{cl}"), Method::HEAD), BodyLen::Zero);
        assert_eq!(body(&format!("HTTP/1.1 404 Not Found\r\n{cl}"), Method::HEAD), BodyLen::Zero);
        let h = parse(&format!("HTTP/1.1 200 OK\r\n{cl}"), Method::CONNECT).unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyLen::Zero, false), "a tunnel follows");
        assert_eq!(body(&format!("HTTP/1.1 407 No\r\n{cl}"), Method::CONNECT), BodyLen::Length(10));
        let h = parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", Method::GET).unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive, h.is_interim()), (BodyLen::Zero, false, false));
        let h = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", Method::PUT).unwrap().unwrap();
        assert!(h.is_interim());
        assert_eq!(h.body, BodyLen::Zero);
        // Fields that would be errors don't matter where the status or method decides.
        assert_eq!(body("HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n", Method::GET), BodyLen::Zero);
        assert_eq!(body("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::HEAD), BodyLen::Zero);
    }

    #[test]
    fn framing_fields() {
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(body(&format!("{ok}Transfer-Encoding: chunked\r\n\r\n"), Method::GET), BodyLen::Chunked);
        assert_eq!(body(&format!("{ok}Transfer-Encoding: gzip, chunked\r\n\r\n"), Method::GET), BodyLen::Chunked);
        let h = parse(&format!("{ok}Transfer-Encoding: chunked, gzip\r\n\r\n"), Method::GET).unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyLen::Close, false), "not chunked last: read to the close");
        assert_eq!(
            body(&format!("{ok}Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), Method::GET),
            BodyLen::Close,
            "the last field's last coding decides"
        );
        assert_eq!(
            body(&format!("{ok}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), Method::GET),
            BodyLen::Chunked,
            "Transfer-Encoding wins over Content-Length"
        );
        assert_eq!(
            body(&format!("{ok}Content-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"), Method::GET),
            BodyLen::Length(5)
        );
        assert_eq!(body(&format!("{ok}Content-Length: 0\r\n\r\n"), Method::GET), BodyLen::Zero);
        let h = parse(&format!("{ok}\r\n"), Method::GET).unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyLen::Close, false));
        for bad in ["5, 6", "+5", "-1", "", "5x", "0x5", "18446744073709551616"] {
            assert_eq!(
                parse(&format!("{ok}Content-Length: {bad}\r\n\r\n"), Method::GET).unwrap_err(),
                HeadError::Malformed("invalid Content-Length"),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(&format!("{ok}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), Method::GET).unwrap_err(),
            HeadError::Malformed("invalid Content-Length")
        );
        assert_eq!(
            parse(&format!("{ok}Content-Length: 18446744073709551615\r\n\r\n"), Method::GET).unwrap_err(),
            HeadError::TooLarge
        );
        assert!(parse("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn keep_alive() {
        let cl = "Content-Length: 0\r\n";
        assert!(!parse(&format!("HTTP/1.0 200 OK\r\n{cl}\r\n"), Method::GET).unwrap().unwrap().keep_alive);
        assert!(
            parse(&format!("HTTP/1.0 200 OK\r\n{cl}Connection: keep-alive\r\n\r\n"), Method::GET)
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(&format!("HTTP/1.1 200 OK\r\n{cl}Connection: close\r\nConnection: keep-alive\r\n\r\n"), Method::GET)
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(&format!("HTTP/1.1 200 OK\r\n{cl}Connection: upgrade, Close\r\n\r\n"), Method::GET)
                .unwrap()
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", // obs-fold (hyper's default client refuses it)
            "HTTP/1.1 200 OK\r\nA : b\r\n\r\n",      // whitespace before the colon
            "HTTP/2.0 200 OK\r\n\r\n",               // no HTTP/1.x
            "HTTP/1.1 20 OK\r\n\r\n",                // two digits
            "HTTP/1.1 099 OK\r\n\r\n",               // below 100
            "HTTP/1.1 200 OK\r\nA: b\0c\r\n\r\n",    // NUL in a value
            "HTTP/1.1 200 OK\r\nA\x01: b\r\n\r\n",   // a control in a name
            "200 OK\r\n\r\n",                        // HTTP/0.9-like
        ] {
            assert!(matches!(parse(bad, Method::GET), Err(HeadError::Malformed(_))), "{bad:?}");
        }
        let many: String = (0..3).map(|i| format!("X-{i}: y\r\n")).collect();
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_str());
        assert_eq!(parse_response(&mut buf, &Method::GET, 2).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn many_fields_go_to_the_heap() {
        let many: String = (0..150).map(|i| format!("X-{i}: y\r\n")).collect();
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n").as_str());
        assert_eq!(parse_response(&mut buf, &Method::GET, 200).unwrap().unwrap().response.headers().len(), 151);
    }
}
