//! The CGI response head (RFC 3875 §6), parsed incrementally. Used by CGI, FastCGI and SCGI alike.
//!
//! Accepts LF or CRLF line ends. Does not: fold obs-fold continuation lines (rejected), keep the
//! reason phrase of `Status:` (hyper writes the canonical one), or touch the body.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};

use super::error::{GatewayError, GatewayErrorKind};

/// Largest response head accepted from a script or application.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How many local redirects (`Location: /path`) the HTTP side follows for one request before
/// answering 502: RFC 3875 §6.2.2 redirects can loop.
pub const MAX_LOCAL_REDIRECTS: usize = 10;

/// What the script asked for (RFC 3875 §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadKind {
    /// A document: send status, headers and body.
    Document,
    /// `Location: /path?query` alone: serve that path internally, as a GET, dropping this body.
    LocalRedirect(String),
    /// `Location:` with an absolute URL (or any reference that is not a local path); the status
    /// is 302 unless the script gave one, and a body may follow.
    ClientRedirect(String),
}

/// A parsed CGI response head. `headers` never contains `Status`; for client redirects it keeps
/// `Location`.
#[derive(Debug, Clone)]
pub struct CgiHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub kind: HeadKind,
}

/// Incremental parser: feed bytes as they come, get the head and the leftover body bytes once the
/// blank line arrives.
#[derive(Debug)]
pub struct HeadParser {
    buf: BytesMut,
    scanned: usize,
    limit: usize,
}

impl Default for HeadParser {
    fn default() -> Self {
        HeadParser::new()
    }
}

impl HeadParser {
    pub fn new() -> HeadParser {
        HeadParser::with_limit(MAX_HEAD_BYTES)
    }

    pub fn with_limit(limit: usize) -> HeadParser {
        HeadParser { buf: BytesMut::new(), scanned: 0, limit }
    }

    /// Feeds the next bytes of output. `Ok(None)`: the head is not complete yet.
    /// `Ok(Some((head, rest)))`: `rest` is the start of the body. The parser is done afterwards.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Option<(CgiHead, Bytes)>, GatewayError> {
        self.buf.extend_from_slice(chunk);
        // Resume the search one byte back so a "\n" + "\n" split across feeds is found.
        let from = self.scanned.saturating_sub(2);
        let Some((head_len, end)) = find_blank_line(&self.buf, from) else {
            self.scanned = self.buf.len();
            // Without its blank line yet, the head is at least all but the last byte (which may be the `\r` of
            // `\n\r\n`): refuse only what can no longer fit, so that the limit does not depend on the reads.
            if self.buf.len() > self.limit.saturating_add(1) {
                return Err(GatewayError::new(
                    GatewayErrorKind::TooLarge,
                    format!("response head over {} bytes", self.limit),
                ));
            }
            return Ok(None);
        };
        if head_len > self.limit {
            return Err(GatewayError::new(
                GatewayErrorKind::TooLarge,
                format!("response head over {} bytes", self.limit),
            ));
        }
        let mut all = std::mem::take(&mut self.buf);
        let rest = all.split_off(end).freeze();
        let head = parse_head(&all[..head_len])?;
        Ok(Some((head, rest)))
    }

    /// The error for output that ended before the head did.
    pub fn eof_error(&self) -> GatewayError {
        if self.buf.is_empty() {
            GatewayError::bad_response("no output")
        } else {
            GatewayError::bad_response("output ended inside the response head")
        }
    }
}

/// Finds the blank line ending a head: returns (length of the head without the blank line's
/// terminator, offset of the body). Handles `\n\n`, `\n\r\n`, and a head that is only a blank line.
/// `from` is where to resume a search that found nothing before.
fn find_blank_line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    // A first line that is empty (no fields at all) is also the end of the head.
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    let mut i = from;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        let after = &buf[nl + 1..];
        if after.starts_with(b"\n") {
            return Some((nl + 1, nl + 2));
        }
        if after.starts_with(b"\r\n") {
            return Some((nl + 1, nl + 3));
        }
        i = nl + 1;
    }
    None
}

/// Parses the header lines (each ending in LF or CRLF) of a complete head.
pub fn parse_head(block: &[u8]) -> Result<CgiHead, GatewayError> {
    let mut headers = HeaderMap::new();
    let mut status: Option<StatusCode> = None;
    let mut location: Option<String> = None;
    let mut fields = 0usize;
    for raw in block.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        fields += 1;
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(GatewayError::bad_response("folded header line"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(GatewayError::bad_response(format!(
                "malformed header line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(64)])
            )));
        };
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| {
            GatewayError::bad_response(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&line[..colon.min(64)])
            ))
        })?;
        let value = trim(&line[colon + 1..]);
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| GatewayError::bad_response(format!("invalid value for header {name}")))?;
        if name.as_str() == "status" {
            if status.is_some() {
                return Err(GatewayError::bad_response("more than one Status header"));
            }
            status = Some(parse_status(value.as_bytes())?);
            continue;
        }
        if name == LOCATION {
            if location.is_some() {
                return Err(GatewayError::bad_response("more than one Location header"));
            }
            let text = value.to_str().map_err(|_| GatewayError::bad_response("Location is not ASCII"))?;
            if text.is_empty() {
                return Err(GatewayError::bad_response("empty Location"));
            }
            location = Some(text.to_owned());
        }
        headers.append(name, value);
    }
    if fields == 0 {
        return Err(GatewayError::bad_response("empty response head"));
    }
    let kind = match location {
        None => HeadKind::Document,
        // RFC 3875 §6.2.2: a local redirect is a local path and nothing else. "//host" is a
        // network-path reference, not a local path.
        Some(loc) if is_local_path(&loc) && status.is_none() && headers.len() == 1 => {
            return Ok(CgiHead {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                kind: HeadKind::LocalRedirect(loc),
            });
        }
        Some(loc) if is_local_path(&loc) => HeadKind::Document,
        // RFC 3875 §6.2.3/§6.2.4; RFC 9110 §10.2.2 also allows relative references here.
        Some(loc) => {
            return Ok(CgiHead {
                status: status.unwrap_or(StatusCode::FOUND),
                headers,
                kind: HeadKind::ClientRedirect(loc),
            });
        }
    };
    Ok(CgiHead { status: status.unwrap_or(StatusCode::OK), headers, kind })
}

fn is_local_path(loc: &str) -> bool {
    loc.starts_with('/') && !loc.starts_with("//")
}

/// RFC 3875 §6.3.3: `Status: 3DIGIT SP reason-phrase`.
fn parse_status(value: &[u8]) -> Result<StatusCode, GatewayError> {
    let code = value.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
    // `Status: 20` or an empty `Status:` is too short for a code: malformed, not a panic.
    let rest_ok = matches!(value.get(3), None | Some(b' ' | b'\t'));
    match code {
        Some(code) if rest_ok => StatusCode::from_bytes(code)
            .ok()
            .filter(|s| (100..=599).contains(&s.as_u16()))
            .ok_or_else(|| GatewayError::bad_response("Status out of range")),
        _ => Err(GatewayError::bad_response(format!(
            "malformed Status {:?}",
            String::from_utf8_lossy(&value[..value.len().min(32)])
        ))),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `out` in pieces of `step` bytes; the head's status or the error's detail.
    fn feed(out: &[u8], limit: usize, step: usize) -> Result<Option<StatusCode>, String> {
        let mut p = HeadParser::with_limit(limit);
        for piece in out.chunks(step) {
            match p.feed(piece) {
                Ok(Some((head, _))) => return Ok(Some(head.status)),
                Ok(None) => {}
                Err(e) => return Err(e.detail().to_string()),
            }
        }
        Ok(None)
    }

    /// A head exactly at the limit is accepted however the output is cut into reads, and one byte over it is
    /// refused however it is cut (found by the fuzz target cgi_head).
    #[test]
    fn the_limit_does_not_depend_on_reads() {
        for end in ["\r\n\r\n", "\n\n", "\n\r\n", "\r\n\n"] {
            let line_end = &end[..end.find('\n').unwrap() + 1];
            let at_limit = format!("Status: 404{line_end}");
            let limit = at_limit.len();
            let out = format!("Status: 404{end}body");
            for step in [1, 2, 3, out.len()] {
                assert_eq!(feed(out.as_bytes(), limit, step), Ok(Some(StatusCode::NOT_FOUND)), "{end:?} step {step}");
                assert_eq!(
                    feed(out.as_bytes(), limit - 1, step),
                    Err(format!("response head over {} bytes", limit - 1)),
                    "{end:?} step {step}"
                );
            }
        }
    }
}
