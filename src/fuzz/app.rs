//! Resource gateways: CGI response heads (also what FastCGI and SCGI applications answer, and nph- status
//! lines), FastCGI records and name-value pairs, SCGI netstrings.

use bytes::BytesMut;
use http::{HeaderMap, StatusCode, header};

use super::lines;
use crate::backend::app::{response_head, status_line};
use crate::backend::fastcgi::record::{self, NameValues};
use crate::backend::meta::{HeadKind, HeadParser, MetaVars, parse_head};
use crate::backend::scgi::{MAX_SCGI_HEAD_BYTES, decode_head, encode_head};

/// What a parser made of a whole response: the head's status, fields and kind and the body bytes after it, an
/// error's detail, or "incomplete".
#[derive(Debug, PartialEq)]
enum Outcome {
    Head { status: StatusCode, headers: HeaderMap, kind: HeadKind, body: Vec<u8> },
    Error(String),
    Incomplete,
}

/// Feeds `data` to a parser with `limit` in the pieces `cuts` makes; the body is what came after the head.
fn feed_in_pieces(data: &[u8], limit: usize, cuts: &[usize]) -> Outcome {
    let mut p = HeadParser::with_limit(limit);
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let end = end.clamp(start, data.len());
        match p.feed(&data[start..end]) {
            Ok(None) => {}
            Ok(Some((head, rest))) => {
                let mut body = rest.to_vec();
                body.extend_from_slice(&data[end..]);
                return Outcome::Head { status: head.status, headers: head.headers, kind: head.kind, body };
            }
            Err(e) => return Outcome::Error(e.detail().to_string()),
        }
        start = end;
    }
    Outcome::Incomplete
}

/// A CGI response head (RFC 3875 §6) as a script, FastCGI or SCGI application writes it, then its body. The
/// incremental parser must read the same head however the output is cut into reads (all at once, byte by
/// byte, at the input's own line ends), also with a small head limit; the parsed head keeps RFC 3875's rules;
/// the response made of it is framed by hopgate alone. The first line is also read as an nph- status line.
pub fn cgi_head(data: &[u8]) {
    let newlines: Vec<usize> = data.iter().enumerate().filter(|&(_, &b)| b == b'\n').map(|(i, _)| i + 1).collect();
    // A limit that inputs of a few hundred bytes reach, from the input itself: the limit's edge is exercised.
    let small = 1 + data.first().map_or(0, |&b| usize::from(b)) % 96;
    for limit in [meta_limit(), small] {
        let whole = feed_in_pieces(data, limit, &[]);
        let by_byte = feed_in_pieces(data, limit, &(1..data.len()).collect::<Vec<_>>());
        assert_eq!(whole, by_byte, "the head does not depend on reads (byte by byte, limit {limit})");
        let by_line = feed_in_pieces(data, limit, &newlines);
        assert_eq!(whole, by_line, "the head does not depend on reads (line by line, limit {limit})");
        let odd: Vec<usize> = newlines.iter().map(|n| n.saturating_sub(1)).collect();
        assert_eq!(whole, feed_in_pieces(data, limit, &odd), "reads cut before each LF, limit {limit}");
        if let Outcome::Head { status, headers, kind, .. } = whole {
            check_head(status, &headers, &kind);
        }
    }
    // The head block alone, as parse_head sees it.
    if let Ok(head) = parse_head(data) {
        check_head(head.status, &head.headers, &head.kind);
    }
    if let Some(first) = lines(data).next() {
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        if let Some((status, reason)) = status_line(first) {
            assert!(first.starts_with(b"HTTP/"));
            assert!((100..=599).contains(&status.as_u16()));
            if let Some(r) = reason {
                assert!(!r.as_bytes().is_empty());
                assert_ne!(Some(r.as_bytes()), status.canonical_reason().map(str::as_bytes));
            }
        }
    }
}

fn meta_limit() -> usize {
    crate::backend::meta::MAX_HEAD_BYTES
}

fn check_head(status: StatusCode, headers: &HeaderMap, kind: &HeadKind) {
    assert!((100..=599).contains(&status.as_u16()), "{status}");
    assert!(!headers.contains_key("status"), "Status is never passed on as a field");
    match kind {
        HeadKind::LocalRedirect(loc) => {
            assert!(loc.starts_with('/') && !loc.starts_with("//"), "{loc:?} is a local path");
            assert!(headers.is_empty() && status == StatusCode::OK);
        }
        HeadKind::ClientRedirect(loc) => {
            assert!(!loc.starts_with('/') || loc.starts_with("//"), "{loc:?} is not a local path");
            assert_eq!(headers.get(header::LOCATION).map(|v| v.as_bytes()), Some(loc.as_bytes()));
        }
        HeadKind::Document => {
            if let Some(loc) = headers.get(header::LOCATION) {
                assert!(loc.as_bytes().starts_with(b"/") && !loc.as_bytes().starts_with(b"//"));
            }
        }
    }
    assert!(headers.get_all(header::LOCATION).iter().count() <= 1);
    // The response hopgate makes of it: never a 1xx as the final status, framing fields its own.
    match response_head(status, headers.clone()) {
        Ok(resp) => {
            assert!(!resp.status().is_informational());
            for name in [header::TRANSFER_ENCODING, header::CONNECTION, header::UPGRADE, header::TRAILER] {
                assert!(!resp.headers().contains_key(&name), "{name} reaches the client");
            }
            let lengths: Vec<_> = resp.headers().get_all(header::CONTENT_LENGTH).iter().collect();
            assert!(lengths.len() <= 1);
            if let Some(v) = lengths.first() {
                assert!(!v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit), "{v:?}");
            }
        }
        Err(e) => assert!(
            status.is_informational() || headers.contains_key(header::CONTENT_LENGTH),
            "refused for no reason: {}",
            e.detail()
        ),
    }
}

/// The FastCGI records an application sends (FastCGI 1.0 §3.3): decoded one after another as the exchange
/// does, each taking exactly its header, content and padding; END_REQUEST/BEGIN_REQUEST bodies; the PARAMS
/// stream's name-value pairs (§3.4). Everything decoded encodes back to the same values; the params hopgate
/// sends (one value as large as the input asks, up to 256 KiB) split into records php-fpm accepts.
pub fn fastcgi_record(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut offset = 0;
    let mut params = Vec::new();
    loop {
        let before = buf.len();
        match record::decode(&mut buf) {
            Ok(Some(rec)) => {
                let head = &data[offset..offset + record::HEADER_BYTES];
                let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
                let padding = usize::from(head[6]);
                assert_eq!(before - buf.len(), record::HEADER_BYTES + len + padding, "a record takes its own bytes");
                assert_eq!((rec.kind, rec.request_id), (head[1], u16::from_be_bytes([head[2], head[3]])));
                let start = offset + record::HEADER_BYTES;
                assert_eq!(&rec.content[..], &data[start..start + len]);
                offset += before - buf.len();
                check_record_body(rec.kind, &rec.content);
                if rec.kind == record::PARAMS {
                    params.extend_from_slice(&rec.content);
                }
                // Encoded again (hopgate's own padding), it decodes to the same record.
                let mut out = BytesMut::new();
                record::put_record(&mut out, rec.kind, rec.request_id, &rec.content);
                assert_eq!(out.len() % 8, 0, "content and padding are a multiple of 8 bytes");
                let again = record::decode(&mut out).expect("own record").expect("complete");
                assert_eq!(again, rec);
                assert!(out.is_empty());
            }
            Ok(None) => {
                assert_eq!(&buf[..], &data[offset..], "an incomplete record is left untouched");
                break;
            }
            Err(_) => {
                assert_ne!(data[offset], record::VERSION_1);
                break;
            }
        }
    }
    check_name_values(&params);
    check_name_values(data);
    check_params_stream(data);
}

fn check_record_body(kind: u8, content: &[u8]) {
    match kind {
        record::END_REQUEST => match record::parse_end_request(content) {
            Ok(end) => {
                let mut out = BytesMut::new();
                record::put_end_request(&mut out, 1, end);
                let rec = record::decode(&mut out).expect("own record").expect("complete");
                assert_eq!(record::parse_end_request(&rec.content).expect("own body"), end);
            }
            Err(_) => assert_ne!(content.len(), 8),
        },
        record::BEGIN_REQUEST => match record::parse_begin_request(content) {
            Ok(begin) => {
                let mut out = BytesMut::new();
                record::put_begin_request(&mut out, 1, begin.role, begin.flags);
                let rec = record::decode(&mut out).expect("own record").expect("complete");
                assert_eq!(record::parse_begin_request(&rec.content).expect("own body"), begin);
            }
            Err(_) => assert_ne!(content.len(), 8),
        },
        _ => {}
    }
}

fn check_name_values(data: &[u8]) {
    let Ok(pairs) = record::parse_name_values(data) else { return };
    let total: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(total <= data.len());
    let mut out = BytesMut::new();
    for (n, v) in &pairs {
        record::put_name_value(&mut out, n, v);
    }
    assert_eq!(record::parse_name_values(&out).expect("own pairs"), pairs);
}

/// hopgate's PARAMS stream for variables made of the input: each record within 65535 bytes of content and
/// padding, a pair split across records only when it alone is larger than one, the empty record last, and the
/// pairs read back in order.
fn check_params_stream(data: &[u8]) {
    let mut vars = MetaVars::default();
    for (i, line) in lines(data).enumerate().take(64) {
        let (name, value) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (&line[..eq], &line[eq + 1..]),
            None => (line, &b""[..]),
        };
        let name: String = name.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '_' }).collect();
        vars.set(if name.is_empty() { format!("V{i}") } else { name }, value.to_vec());
    }
    // One large value, as long as the input's second byte asks (a header or a path near the limits).
    if let Some(&k) = data.get(1) {
        let big: Vec<u8> = data.iter().copied().cycle().take(usize::from(k) * 1024).collect();
        vars.set("HTTP_X_BIG", big);
    }
    let mut out = BytesMut::new();
    record::put_params(&mut out, 1, &vars);
    let mut stream = Vec::new();
    let mut records = 0;
    loop {
        let Some(rec) = record::decode(&mut out).expect("own record") else { break };
        assert_eq!(rec.kind, record::PARAMS);
        assert!(rec.content.len() <= record::CHUNK_BYTES);
        records += 1;
        if rec.content.is_empty() {
            break;
        }
        stream.extend_from_slice(&rec.content);
    }
    assert!(out.is_empty(), "the empty PARAMS record is the last");
    assert!(records >= 1);
    let pairs: NameValues = record::parse_name_values(&stream).expect("own stream");
    let want: NameValues = vars.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec())).collect();
    assert_eq!(pairs, want);
}

/// The SCGI request head (a netstring of NUL-separated pairs): read incrementally it is complete only once,
/// never an error on a prefix of a good one; the pairs encode back; hopgate's own heads (CONTENT_LENGTH first,
/// SCGI=1 second, NULs dropped from values) read back as sent.
pub fn scgi_netstring(data: &[u8]) {
    match decode_head(data) {
        Ok(Some((pairs, used))) => {
            assert!(used <= data.len() && data[used - 1] == b',');
            assert_eq!(decode_head(&data[..used]).ok().flatten(), Some((pairs.clone(), used)));
            for cut in [0, used / 2, used - 1] {
                assert!(matches!(decode_head(&data[..cut]), Ok(None)), "a {cut}-byte prefix is incomplete");
            }
            for (name, value) in &pairs {
                assert!(!name.contains('\0') && !value.contains(&0));
            }
            let mut body = Vec::new();
            for (name, value) in &pairs {
                body.extend_from_slice(name.as_bytes());
                body.push(0);
                body.extend_from_slice(value);
                body.push(0);
            }
            let mut again = format!("{}:", body.len()).into_bytes();
            again.extend_from_slice(&body);
            again.push(b',');
            assert_eq!(decode_head(&again).ok().flatten(), Some((pairs, again.len())));
        }
        Ok(None) => assert!(data.len() <= 9 + MAX_SCGI_HEAD_BYTES, "incomplete beyond the limit"),
        Err(e) => assert!(!e.detail().is_empty()),
    }
    let mut vars = MetaVars::default();
    for line in lines(data).take(64) {
        let (name, value) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (&line[..eq], &line[eq + 1..]),
            None => (line, &b""[..]),
        };
        // Names are CGI meta-variable names (RFC 3875 §4.1): never a NUL.
        let name: String = name.iter().filter(|&&b| b.is_ascii_graphic()).map(|&b| b as char).collect();
        if !name.is_empty() {
            vars.set(name, value.to_vec());
        }
    }
    let head = encode_head(&vars);
    let Ok(Some((pairs, used))) = decode_head(&head) else {
        panic!("hopgate's own SCGI head does not read back: {:?}", String::from_utf8_lossy(&head));
    };
    assert_eq!(used, head.len());
    assert_eq!(pairs[0].0, "CONTENT_LENGTH");
    assert_eq!((pairs[1].0.as_str(), pairs[1].1.as_slice()), ("SCGI", &b"1"[..]));
    let rest: Vec<(String, Vec<u8>)> = vars
        .iter()
        .filter(|(n, _)| *n != "CONTENT_LENGTH" && *n != "SCGI")
        .map(|(n, v)| (n.to_string(), v.iter().copied().filter(|&b| b != 0).collect()))
        .collect();
    assert_eq!(&pairs[2..], &rest[..]);
}
