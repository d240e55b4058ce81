//! The request head as hopgate writes it to an upstream (the pooled client connections, `upstream::h1`): hyper
//! 1.12's client choices (role.rs, `Client::set_length` and `Client::encode`), so that what an origin or a parent
//! proxy receives does not change: the request line with the URI as given (origin-form, or absolute-form for a
//! parent), the fields as the `HeaderMap` orders them with their lowercase names, a `content-length` from the
//! body's exact size when none is set, `transfer-encoding: chunked` for a body of unknown size (none for a GET,
//! HEAD or CONNECT, which hyper assumes have no body), `chunked` added to a coding list that does not end in it,
//! and no body framing at all for an empty body. tests/h1_differential.rs holds it to hyper's bytes.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};

use super::fields::last_coding_is_chunked;
use super::response::Encoder;

/// What is known about a request body before it is sent (hyper's `BodyLength`, None for an empty body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// The body is empty (`is_end_stream`): no framing fields, and a `Transfer-Encoding` is removed.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown until it ends.
    Unknown,
}

/// Sets the framing fields of a request head the way hyper's client does (`Client::set_length`), and returns how
/// its body is written. The fields are changed in place: sending the same head again gives the same result.
pub fn set_length(headers: &mut HeaderMap, method: &Method, version: Version, body: RequestBody) -> Encoder {
    let body = match body {
        RequestBody::Empty => {
            headers.remove(header::TRANSFER_ENCODING);
            return Encoder::Length(0);
        }
        other => other,
    };
    let existing_len = content_length(headers);
    if version == Version::HTTP_10 {
        // HTTP/1.0 knows no chunked coding: a body without a length can't be sent at all.
        headers.remove(header::TRANSFER_ENCODING);
        return match (existing_len, body) {
            (Some(len), _) => Encoder::Length(len),
            (None, RequestBody::Known(len)) => set_content_length(headers, len),
            _ => Encoder::Length(0),
        };
    }
    let encoder = match headers.entry(header::TRANSFER_ENCODING) {
        header::Entry::Occupied(mut te) => {
            if !te.iter().next_back().is_some_and(last_coding_is_chunked) {
                // A request's codings must end in chunked; hyper repairs the list by adding it.
                if let Some(last) = te.iter_mut().next_back() {
                    let mut v = Vec::with_capacity(last.len() + 9);
                    v.extend_from_slice(last.as_bytes());
                    v.extend_from_slice(b", chunked");
                    if let Ok(value) = HeaderValue::from_bytes(&v) {
                        *last = value;
                    }
                }
            }
            headers.remove(header::CONTENT_LENGTH);
            Some(chunked(headers))
        }
        header::Entry::Vacant(te) => match (existing_len, body) {
            (Some(len), _) => Some(Encoder::Length(len)),
            (None, RequestBody::Unknown) => match *method {
                // hyper assumes these have no body (the relay declares a body of theirs chunked itself).
                Method::GET | Method::HEAD | Method::CONNECT => Some(Encoder::Length(0)),
                _ => {
                    te.insert(HeaderValue::from_static("chunked"));
                    headers.remove(header::CONTENT_LENGTH);
                    Some(chunked(headers))
                }
            },
            _ => None,
        },
    };
    match (encoder, body) {
        (Some(encoder), _) => encoder,
        (None, RequestBody::Known(len)) => set_content_length(headers, len),
        // Unknown always chose an encoder above.
        (None, _) => Encoder::Length(0),
    }
}

/// A chunked encoder that sends the trailer fields the `Trailer` field names.
fn chunked(headers: &HeaderMap) -> Encoder {
    let allowed: Vec<HeaderName> = headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect();
    Encoder::Chunked { trailers: (!allowed.is_empty()).then_some(allowed) }
}

fn set_content_length(headers: &mut HeaderMap, len: u64) -> Encoder {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Encoder::Length(len)
}

/// hyper's `content_length_parse_all`: every value and list element the same decimal number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut len = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for v in value.to_str().ok()?.split(',') {
            let n = super::fields::digits(v.trim().as_bytes())?;
            if len.is_some_and(|l| l != n) {
                return None;
            }
            len = Some(n);
        }
    }
    len
}

/// Writes the request line and the fields (after [`set_length`]) into `dst`.
pub fn write_request_head(dst: &mut Vec<u8>, method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) {
    dst.reserve(30 + headers.len() * 30);
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    write_uri(dst, uri);
    dst.extend_from_slice(if version == Version::HTTP_10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    write_fields(dst, headers);
    dst.extend_from_slice(b"\r\n");
}

/// The URI as `Uri`'s Display writes it, without going through `fmt`.
fn write_uri(dst: &mut Vec<u8>, uri: &Uri) {
    if let Some(scheme) = uri.scheme() {
        dst.extend_from_slice(scheme.as_str().as_bytes());
        dst.extend_from_slice(b"://");
    }
    if let Some(authority) = uri.authority() {
        dst.extend_from_slice(authority.as_str().as_bytes());
    }
    dst.extend_from_slice(uri.path().as_bytes());
    if let Some(q) = uri.query() {
        dst.push(b'?');
        dst.extend_from_slice(q.as_bytes());
    }
}

fn write_fields(dst: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
}

/// The last chunk of a chunked request body with its trailer fields: those the `Trailer` field announced
/// (`allowed`), minus the ones hyper never sends as trailers (framing, routing, authentication...).
pub fn write_last_chunk(dst: &mut Vec<u8>, allowed: Option<&[HeaderName]>, trailers: Option<&HeaderMap>) {
    dst.extend_from_slice(b"0\r\n");
    if let (Some(allowed), Some(trailers)) = (allowed, trailers) {
        for (name, value) in trailers.iter().filter(|(n, _)| allowed.contains(n) && valid_trailer(n)) {
            dst.extend_from_slice(name.as_str().as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// hyper's `is_valid_trailer_field`.
fn valid_trailer(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, uri: &str, fields: &[(&str, &str)], body: RequestBody) -> (String, Encoder) {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let enc = set_length(&mut h, &method, Version::HTTP_11, body);
        let mut out = Vec::new();
        write_request_head(&mut out, &method, &uri.parse().unwrap(), Version::HTTP_11, &h);
        (String::from_utf8(out).unwrap(), enc)
    }

    #[test]
    fn framing() {
        let (h, e) = head(Method::GET, "/a?b", &[("host", "x")], RequestBody::Empty);
        assert_eq!((h.as_str(), e), ("GET /a?b HTTP/1.1\r\nhost: x\r\n\r\n", Encoder::Length(0)));
        let (h, e) = head(Method::POST, "/", &[("host", "x")], RequestBody::Known(5));
        assert_eq!((h.as_str(), e), ("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n", Encoder::Length(5)));
        let (h, e) = head(Method::POST, "/", &[("host", "x")], RequestBody::Unknown);
        assert_eq!(h, "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(e, Encoder::Chunked { trailers: None });
        let (h, e) = head(Method::GET, "http://o:81/", &[("host", "x")], RequestBody::Unknown);
        assert_eq!((h.as_str(), e), ("GET http://o:81/ HTTP/1.1\r\nhost: x\r\n\r\n", Encoder::Length(0)));
        let (h, _) =
            head(Method::PUT, "/", &[("transfer-encoding", "gzip"), ("content-length", "3")], RequestBody::Known(3));
        assert_eq!(h, "PUT / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
    }

    #[test]
    fn last_chunk() {
        let mut t = HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("1"));
        t.insert("x-no", HeaderValue::from_static("2"));
        t.insert("content-type", HeaderValue::from_static("a"));
        let allowed = [HeaderName::from_static("x-sum"), HeaderName::from_static("content-type")];
        let mut out = Vec::new();
        write_last_chunk(&mut out, Some(&allowed), Some(&t));
        assert_eq!(out, b"0\r\nx-sum: 1\r\n\r\n");
    }
}
