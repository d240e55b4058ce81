//! The response head as hopgate writes it to an HTTP/1.x client, and how its body is framed: hyper 1.12's
//! choices (lower-case names, `content-length` from the body's exact size, `transfer-encoding: chunked` for a body
//! of unknown size to HTTP/1.1, close-delimited to HTTP/1.0, a `date` unless one is given, `connection:
//! keep-alive` for an HTTP/1.0 client that keeps its connection), so that the bytes a client sees do not change.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::fields::{digits, has_token, last_coding_is_chunked};

/// How the body after a head is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoder {
    /// Exactly this many bytes (0: none).
    Length(u64),
    /// Chunks; trailers only for the fields the `Trailer` field announced.
    Chunked { trailers: Option<Vec<HeaderName>> },
    /// Until the connection closes.
    Close,
}

/// What is known about a response body's size before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// It is empty.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown until it ends.
    Unknown,
}

/// The written head: how its body goes out, and whether the connection ends after it.
#[derive(Debug)]
pub struct Written {
    pub encoder: Encoder,
    pub last: bool,
}

/// A response head that can't be written as it is (two differing lengths, an invalid length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHead(pub &'static str);

/// Writes the head of `parts` for a request with `method` into `dst`. `http10`: the client spoke HTTP/1.0;
/// `keep_alive`: the request lets the connection be kept. On error nothing is left in `dst`.
pub fn write_head(
    dst: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    body: BodySize,
    method: &Method,
    http10: bool,
    keep_alive: bool,
) -> Result<Written, InvalidHead> {
    let start = dst.len();
    let r = write(dst, parts, body, method, http10, keep_alive);
    if r.is_err() {
        dst.truncate(start);
    }
    r
}

fn write(
    dst: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    body: BodySize,
    method: &Method,
    http10: bool,
    mut keep_alive: bool,
) -> Result<Written, InvalidHead> {
    let status = parts.status;
    let connect_ok = *method == Method::CONNECT && status.is_success();
    if http10 {
        // An HTTP/1.0 client: kept only when the response says keep-alive or is HTTP/1.1 and may say it.
        let says_keep_alive = parts.headers.get(header::CONNECTION).is_some_and(|v| has_token(v, "keep-alive"));
        if !says_keep_alive {
            if parts.version == Version::HTTP_10 {
                keep_alive = false;
            } else if keep_alive {
                parts.headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            }
        }
    }
    if !http10 && !keep_alive && !parts.headers.get_all(header::CONNECTION).iter().any(|v| has_token(v, "close")) {
        // The request ends the connection: an HTTP/1.1 client is told so (hyper's `enforce_version`).
        parts.headers.append(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let version = if http10 { Version::HTTP_10 } else { parts.version };
    let mut last = if status == StatusCode::SWITCHING_PROTOCOLS || connect_ok { true } else { !keep_alive };
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if version != Version::HTTP_10 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(if version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }

    let can_chunk = can_chunk(method, status);
    let mut encoder = Encoder::Length(0);
    let mut wrote_len = connect_ok;
    let mut wrote_date = false;
    let mut trailers: Option<Vec<HeaderName>> = None;
    let mut prev_len: Option<u64> = None;
    let mut te_open: Option<bool> = None; // Some(must add ", chunked") while writing a transfer-encoding line
    let mut connection_open = false;
    let mut current: Option<HeaderName> = None;
    for (name, value) in parts.headers.drain() {
        if let Some(n) = name {
            // A new name ends a list line still open.
            close_lists(dst, &mut te_open, &mut connection_open);
            current = Some(n);
        }
        let Some(name) = current.as_ref() else { continue };
        match *name {
            header::CONTENT_LENGTH => {
                if wrote_len && prev_len.is_none() {
                    return Err(InvalidHead("a content-length beside another framing"));
                }
                match body {
                    BodySize::Known(_) | BodySize::Unknown => {
                        let len = digits(value.as_bytes()).ok_or(InvalidHead("an invalid content-length"))?;
                        if let Some(prev) = prev_len {
                            if prev != len {
                                return Err(InvalidHead("two differing content-lengths"));
                            }
                            continue;
                        }
                        let len = match body {
                            BodySize::Known(known) => known,
                            _ => len,
                        };
                        encoder = Encoder::Length(len);
                        // The length the body will have, which is what is written: a field that says
                        // otherwise would frame the next message wrongly (hyper writes the field as given).
                        dst.extend_from_slice(b"content-length: ");
                        dst.extend_from_slice(itoa(len, &mut [0; 20]));
                        dst.extend_from_slice(b"\r\n");
                        wrote_len = true;
                        prev_len = Some(len);
                        continue;
                    }
                    BodySize::Empty if *method == Method::HEAD => {
                        wrote_len = true;
                    }
                    BodySize::Empty => continue,
                }
            }
            header::TRANSFER_ENCODING => {
                if wrote_len && te_open.is_none() {
                    return Err(InvalidHead("a transfer-encoding beside a content-length"));
                }
                if version == Version::HTTP_10 || !can_chunk {
                    continue;
                }
                wrote_len = true;
                let not_chunked = !last_coding_is_chunked(&value);
                match te_open {
                    None => {
                        encoder = Encoder::Chunked { trailers: None };
                        dst.extend_from_slice(b"transfer-encoding: ");
                    }
                    Some(_) => dst.extend_from_slice(b", "),
                }
                dst.extend_from_slice(value.as_bytes());
                te_open = Some(not_chunked);
                continue;
            }
            header::CONNECTION => {
                if !last && has_token(&value, "close") {
                    last = true;
                }
                dst.extend_from_slice(if connection_open { b", " } else { b"connection: " });
                dst.extend_from_slice(value.as_bytes());
                connection_open = true;
                continue;
            }
            header::DATE => wrote_date = true,
            header::TRAILER => {
                if version == Version::HTTP_10 || !can_chunk {
                    continue;
                }
                if let Ok(list) = value.to_str() {
                    trailers
                        .get_or_insert_with(Vec::new)
                        .extend(list.split(',').filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok()));
                }
            }
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    close_lists(dst, &mut te_open, &mut connection_open);

    if !wrote_len {
        encoder = match body {
            BodySize::Unknown if version == Version::HTTP_10 || !can_chunk => Encoder::Close,
            BodySize::Unknown => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Encoder::Chunked { trailers: None }
            }
            BodySize::Empty | BodySize::Known(0) => {
                if can_have_length(method, status) && *method != Method::HEAD {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Encoder::Length(0)
            }
            BodySize::Known(len) if can_have_length(method, status) => {
                dst.extend_from_slice(b"content-length: ");
                dst.extend_from_slice(itoa(len, &mut [0; 20]));
                dst.extend_from_slice(b"\r\n");
                Encoder::Length(len)
            }
            BodySize::Known(_) => Encoder::Length(0),
        };
    }
    if !can_chunk {
        // HEAD, a CONNECT's 2xx, 1xx, 204 and 304 have no body, whatever their fields say.
        encoder = Encoder::Length(0);
    }
    if let Encoder::Chunked { trailers: t } = &mut encoder {
        *t = trailers;
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        with_date(|d| dst.extend_from_slice(d));
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    if encoder == Encoder::Close {
        last = true;
    }
    Ok(Written { encoder, last })
}

/// Ends a `transfer-encoding` or `connection` line still open (several fields of one name go on one line).
fn close_lists(dst: &mut Vec<u8>, te_open: &mut Option<bool>, connection_open: &mut bool) {
    if let Some(not_chunked) = te_open.take() {
        dst.extend_from_slice(if not_chunked { b", chunked\r\n" } else { b"\r\n" });
    }
    if std::mem::take(connection_open) {
        dst.extend_from_slice(b"\r\n");
    }
}

/// Whether a response to `method` with `status` has a body (hyper's `can_chunked`).
pub fn can_chunk(method: &Method, status: StatusCode) -> bool {
    !(*method == Method::HEAD
        || (*method == Method::CONNECT && status.is_success())
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn can_have_length(method: &Method, status: StatusCode) -> bool {
    !(status.is_informational()
        || (*method == Method::CONNECT && status.is_success())
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// `n` in decimal, in `buf`.
pub fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

thread_local! {
    /// The IMF-fixdate of the current second, made once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current date as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                d.1.copy_from_slice(text.as_bytes());
                d.0 = secs;
            }
        }
        f(&d.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(resp: http::Response<()>, body: BodySize, method: Method, http10: bool, keep: bool) -> (String, Written) {
        let (mut parts, ()) = resp.into_parts();
        let mut dst = Vec::new();
        let w = write_head(&mut dst, &mut parts, body, &method, http10, keep).unwrap();
        let text = String::from_utf8(dst).unwrap();
        let cut = text.find("date: ").map(|i| i + 6).unwrap();
        (format!("{}{}", &text[..cut], &text[cut + 29..]), w)
    }

    #[test]
    fn known_and_unknown_lengths() {
        let r = http::Response::builder().header("x-a", "1").body(()).unwrap();
        let (t, w) = head(r, BodySize::Known(5), Method::GET, false, true);
        assert_eq!(t, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: \r\n\r\n");
        assert_eq!((w.encoder, w.last), (Encoder::Length(5), false));
        let r = http::Response::builder().status(404).body(()).unwrap();
        let (t, w) = head(r, BodySize::Unknown, Method::GET, false, false);
        assert_eq!(t, "HTTP/1.1 404 Not Found\r\nconnection: close\r\ntransfer-encoding: chunked\r\ndate: \r\n\r\n");
        assert_eq!((w.encoder, w.last), (Encoder::Chunked { trailers: None }, true));
        let r = http::Response::builder().body(()).unwrap();
        let (t, w) = head(r, BodySize::Unknown, Method::GET, true, true);
        assert_eq!(t, "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ndate: \r\n\r\n");
        assert_eq!((w.encoder, w.last), (Encoder::Close, true));
        let r = http::Response::builder().body(()).unwrap();
        let (t, _) = head(r, BodySize::Empty, Method::GET, false, true);
        assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: \r\n\r\n");
    }

    #[test]
    fn bodiless_responses() {
        let r = http::Response::builder().status(304).header("etag", "\"a\"").body(()).unwrap();
        let (t, w) = head(r, BodySize::Known(10), Method::GET, false, true);
        assert_eq!(t, "HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\ndate: \r\n\r\n");
        assert_eq!(w.encoder, Encoder::Length(0));
        let r = http::Response::builder().header("content-length", "10").body(()).unwrap();
        let (t, w) = head(r, BodySize::Empty, Method::HEAD, false, true);
        assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 10\r\ndate: \r\n\r\n");
        assert_eq!(w.encoder, Encoder::Length(0));
        let mut r = http::Response::builder().body(()).unwrap();
        r.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Connection Established"));
        let (t, _) = head(r, BodySize::Empty, Method::CONNECT, false, true);
        assert_eq!(t, "HTTP/1.1 200 Connection Established\r\ndate: \r\n\r\n");
    }

    #[test]
    fn lists_and_close() {
        let r = http::Response::builder()
            .header("connection", "close")
            .header("transfer-encoding", "gzip")
            .header("trailer", "x-t")
            .body(())
            .unwrap();
        let (t, w) = head(r, BodySize::Unknown, Method::GET, false, true);
        assert_eq!(
            t,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: gzip, chunked\r\ntrailer: x-t\r\ndate: \r\n\r\n"
        );
        assert!(w.last);
        assert_eq!(w.encoder, Encoder::Chunked { trailers: Some(vec![HeaderName::from_static("x-t")]) });
    }

    #[test]
    fn a_closing_request_is_told_connection_close() {
        let r = http::Response::builder().body(()).unwrap();
        let (t, w) = head(r, BodySize::Known(2), Method::GET, false, false);
        assert_eq!(t, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\ndate: \r\n\r\n");
        assert!(w.last);
        let r = http::Response::builder().header("connection", "x-a").body(()).unwrap();
        let (t, _) = head(r, BodySize::Known(2), Method::GET, false, false);
        assert_eq!(t, "HTTP/1.1 200 OK\r\nconnection: x-a, close\r\ncontent-length: 2\r\ndate: \r\n\r\n");
        let r = http::Response::builder().header("connection", "Close").body(()).unwrap();
        let (t, _) = head(r, BodySize::Known(2), Method::GET, false, false);
        assert_eq!(t, "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 2\r\ndate: \r\n\r\n");
    }

    #[test]
    fn numbers() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }
}
