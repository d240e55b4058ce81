//! FastCGI 1.0 records: the 8-byte header, padding, BEGIN_REQUEST/END_REQUEST bodies and
//! name-value pairs (FastCGI Specification §3, §4, §5). Pure codec, no I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::backend::meta::{GatewayError, MetaVars};

pub const VERSION_1: u8 = 1;
pub const HEADER_BYTES: usize = 8;
/// Largest content of one record (the length field is 16 bits).
pub const MAX_CONTENT_BYTES: usize = 65535;
/// Largest content hopgate puts in one record: a multiple of 8, so no padding is needed and
/// content + padding stays within 65535, which php-fpm checks for PARAMS records.
pub const CHUNK_BYTES: usize = 65528;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const ROLE_RESPONDER: u16 = 1;
/// BEGIN_REQUEST flag: keep the connection open after END_REQUEST.
pub const KEEP_CONN: u8 = 1;

pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

/// Name-value pairs as raw bytes, in stream order.
pub type NameValues = Vec<(Vec<u8>, Vec<u8>)>;

/// One decoded record; padding already dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub request_id: u16,
    pub content: Bytes,
}

/// The body of an END_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequest {
    pub app_status: u32,
    pub protocol_status: u8,
}

/// The body of a BEGIN_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequest {
    pub role: u16,
    pub flags: u8,
}

/// Appends one record; pads the content to a multiple of 8 bytes as the spec recommends, unless
/// content + padding would pass 65535. Content over `MAX_CONTENT_BYTES` is a caller bug (it is
/// cut): use `put_stream`.
pub fn put_record(out: &mut BytesMut, kind: u8, request_id: u16, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT_BYTES);
    let len = content.len().min(MAX_CONTENT_BYTES);
    let padding = match (8 - len % 8) % 8 {
        p if len + p <= MAX_CONTENT_BYTES => p,
        _ => 0,
    };
    out.reserve(HEADER_BYTES + len + padding);
    out.put_u8(VERSION_1);
    out.put_u8(kind);
    out.put_u16(request_id);
    out.put_u16(len as u16);
    out.put_u8(padding as u8);
    out.put_u8(0);
    out.put_slice(&content[..len]);
    out.put_bytes(0, padding);
}

/// Appends `data` as records of at most `CHUNK_BYTES` each; nothing for empty data (an empty
/// record ends a stream, so it is written only on purpose, with `put_record`).
pub fn put_stream(out: &mut BytesMut, kind: u8, request_id: u16, data: &[u8]) {
    for piece in data.chunks(CHUNK_BYTES) {
        put_record(out, kind, request_id, piece);
    }
}

pub fn put_begin_request(out: &mut BytesMut, request_id: u16, role: u16, flags: u8) {
    let mut body = [0u8; 8];
    body[..2].copy_from_slice(&role.to_be_bytes());
    body[2] = flags;
    put_record(out, BEGIN_REQUEST, request_id, &body);
}

pub fn put_end_request(out: &mut BytesMut, request_id: u16, end: EndRequest) {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&end.app_status.to_be_bytes());
    body[4] = end.protocol_status;
    put_record(out, END_REQUEST, request_id, &body);
}

/// Appends one name-value pair (§3.4): lengths under 128 take one byte, others four with the
/// high bit set. Lengths over 2^31-1 cannot be expressed; such values are cut there.
pub fn put_name_value(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    const MAX_LEN: usize = 0x7fff_ffff;
    let name = &name[..name.len().min(MAX_LEN)];
    let value = &value[..value.len().min(MAX_LEN)];
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.put_u8(len as u8);
        } else {
            out.put_u32(len as u32 | 0x8000_0000);
        }
    }
    out.put_slice(name);
    out.put_slice(value);
}

/// Appends the PARAMS stream for `vars`, ended by the empty PARAMS record. Pairs are not split
/// across records unless one alone exceeds a record (php-fpm parses each record on its own).
pub fn put_params(out: &mut BytesMut, request_id: u16, vars: &MetaVars) {
    let mut record = BytesMut::new();
    let mut pair = BytesMut::new();
    for (name, value) in vars.iter() {
        pair.clear();
        put_name_value(&mut pair, name.as_bytes(), value);
        if record.len() + pair.len() > CHUNK_BYTES && !record.is_empty() {
            put_record(out, PARAMS, request_id, &record);
            record.clear();
        }
        if pair.len() > CHUNK_BYTES {
            put_stream(out, PARAMS, request_id, &pair);
        } else {
            record.extend_from_slice(&pair);
        }
    }
    if !record.is_empty() {
        put_record(out, PARAMS, request_id, &record);
    }
    put_record(out, PARAMS, request_id, &[]);
}

/// Takes one complete record off the front of `buf`; `Ok(None)` until one has fully arrived.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Record>, GatewayError> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    if buf[0] != VERSION_1 {
        return Err(GatewayError::bad_response(format!("FastCGI record version {}", buf[0])));
    }
    let kind = buf[1];
    let request_id = u16::from_be_bytes([buf[2], buf[3]]);
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let padding = usize::from(buf[6]);
    if buf.len() < HEADER_BYTES + len + padding {
        buf.reserve(HEADER_BYTES + len + padding - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    let content = buf.split_to(len).freeze();
    buf.advance(padding);
    Ok(Some(Record { kind, request_id, content }))
}

pub fn parse_end_request(content: &[u8]) -> Result<EndRequest, GatewayError> {
    match content {
        [a, b, c, d, status, _, _, _] => {
            Ok(EndRequest { app_status: u32::from_be_bytes([*a, *b, *c, *d]), protocol_status: *status })
        }
        _ => Err(GatewayError::bad_response("END_REQUEST body is not 8 bytes")),
    }
}

pub fn parse_begin_request(content: &[u8]) -> Result<BeginRequest, GatewayError> {
    match content {
        [a, b, flags, _, _, _, _, _] => Ok(BeginRequest { role: u16::from_be_bytes([*a, *b]), flags: *flags }),
        _ => Err(GatewayError::bad_response("BEGIN_REQUEST body is not 8 bytes")),
    }
}

/// Splits a complete PARAMS stream (all records' content joined) into name-value pairs.
pub fn parse_name_values(mut data: &[u8]) -> Result<NameValues, GatewayError> {
    fn length(data: &mut &[u8]) -> Result<usize, GatewayError> {
        let short = || GatewayError::bad_response("truncated name-value pair");
        let first = *data.first().ok_or_else(short)?;
        if first < 128 {
            *data = &data[1..];
            return Ok(usize::from(first));
        }
        let four = data.get(..4).ok_or_else(short)?;
        let n = u32::from_be_bytes([four[0] & 0x7f, four[1], four[2], four[3]]);
        *data = &data[4..];
        usize::try_from(n).map_err(|_| short())
    }
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let name_len = length(&mut data)?;
        let value_len = length(&mut data)?;
        if data.len() < name_len.saturating_add(value_len) {
            return Err(GatewayError::bad_response("truncated name-value pair"));
        }
        let (name, rest) = data.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        pairs.push((name.to_vec(), value.to_vec()));
        data = rest;
    }
    Ok(pairs)
}
