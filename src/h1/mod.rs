//! hopgate's own HTTP/1.1 framing (issue 14): the request head (`request`), chunked bodies (`chunked`) and the
//! response head and body framing (`response`), the upstream's response head (`response_head`) and the request
//! head hopgate sends upstream (`request_head`), each a plain function or state machine over bytes, with no IO.
//! The client connection loop that drives them is `server::h1`, the pooled upstream connections `upstream::h1`;
//! HTTP/2 stays on hyper.
//!
//! The rules are hyper 1.12's (its parser is httparse, as here), so that moving off hyper changes no answer;
//! where hopgate was already stricter (duplicate `Content-Length`, transfer codings) the stricter check stays
//! where it was (`server::service::admit`). `tests/h1_differential.rs` feeds the same bytes to both and fails on
//! any other disagreement; `src/fuzz/h1.rs` fuzzes every parser here.

pub mod chunked;
pub mod fields;
pub mod io;
pub mod request;
pub mod request_head;
pub mod response;
pub mod response_head;

use std::fmt;

/// A request head hopgate can't take, and the status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not a valid HTTP/1.1 request line or header field, or its framing fields contradict each other: 400.
    Malformed(&'static str),
    /// The request target is longer than [`MAX_URI_LEN`]: 414.
    UriTooLong,
    /// More header fields than the listener allows, or a head larger than its buffer: 431.
    TooLarge,
    /// The HTTP/2 connection preface (h2c with prior knowledge) on an HTTP/1.1 connection: closed without an
    /// answer, as hyper does ([`HeadError::answered`] is false).
    Http2Preface,
}

impl HeadError {
    /// The status the client is answered with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            HeadError::Malformed(_) | HeadError::Http2Preface => http::StatusCode::BAD_REQUEST,
            HeadError::UriTooLong => http::StatusCode::URI_TOO_LONG,
            HeadError::TooLarge => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

impl HeadError {
    /// Whether the client is answered with [`HeadError::status`] before the connection closes (hyper answers
    /// every head error but the HTTP/2 preface).
    pub fn answered(&self) -> bool {
        *self != HeadError::Http2Preface
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(why) => f.write_str(why),
            HeadError::UriTooLong => f.write_str("request target too long"),
            HeadError::TooLarge => f.write_str("request header section too large"),
            HeadError::Http2Preface => f.write_str("HTTP/2 connection preface on an HTTP/1.1 connection"),
        }
    }
}

impl std::error::Error for HeadError {}

/// The longest request target the parser takes (hyper's limit); the listener's `max_uri_bytes` is checked later,
/// with a page naming it.
pub const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// How a message's body is framed (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Zero,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}
