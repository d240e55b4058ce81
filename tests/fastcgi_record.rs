//! In memory: FastCGI 1.0 records (header, padding, BEGIN/END_REQUEST, name-value pairs with
//! 1- and 4-byte lengths, streams split into records, records split across reads).

use bytes::BytesMut;
use hopgate::backend::fastcgi::record::{self, EndRequest, Record};
use hopgate::backend::meta::{GatewayErrorKind, MetaVars};

#[test]
fn begin_request_bytes() {
    let mut out = BytesMut::new();
    record::put_begin_request(&mut out, 1, record::ROLE_RESPONDER, record::KEEP_CONN);
    assert_eq!(&out[..], &[1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    let rec = record::decode(&mut out).unwrap().unwrap();
    let begin = record::parse_begin_request(&rec.content).unwrap();
    assert_eq!(begin.role, record::ROLE_RESPONDER);
    assert_eq!(begin.flags, record::KEEP_CONN);
    assert!(out.is_empty());
}

#[test]
fn content_is_padded_to_eight() {
    for len in [0usize, 1, 5, 8, 9, 65528, 65529, 65535] {
        let mut out = BytesMut::new();
        record::put_record(&mut out, record::STDOUT, 7, &vec![b'x'; len]);
        let padding = usize::from(out[6]);
        // Aligned to 8, except where that would pass 65535 (php-fpm refuses such records).
        assert!(len + padding <= record::MAX_CONTENT_BYTES, "len {len}");
        assert!((len + padding) % 8 == 0 || len > record::CHUNK_BYTES, "len {len}");
        assert_eq!(out.len(), 8 + len + padding);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]) as usize, len);
        let rec = record::decode(&mut out).unwrap().unwrap();
        assert_eq!(rec.request_id, 7);
        assert_eq!(rec.content.len(), len);
        assert!(out.is_empty(), "padding consumed");
    }
}

#[test]
fn records_split_across_reads() {
    let mut wire = BytesMut::new();
    record::put_record(&mut wire, record::STDOUT, 1, b"Content-Type: text/plain\r\n\r\nhi");
    record::put_record(&mut wire, record::STDERR, 1, b"warning");
    record::put_record(&mut wire, record::STDOUT, 1, b"");
    record::put_end_request(&mut wire, 1, EndRequest { app_status: 3, protocol_status: record::REQUEST_COMPLETE });
    // Feed one byte at a time: nothing is decoded until a record is whole.
    let mut buf = BytesMut::new();
    let mut got: Vec<Record> = Vec::new();
    for b in wire.iter() {
        buf.extend_from_slice(&[*b]);
        while let Some(rec) = record::decode(&mut buf).unwrap() {
            got.push(rec);
        }
    }
    let kinds: Vec<u8> = got.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [record::STDOUT, record::STDERR, record::STDOUT, record::END_REQUEST]);
    assert_eq!(&got[1].content[..], b"warning");
    assert!(got[2].content.is_empty());
    let end = record::parse_end_request(&got[3].content).unwrap();
    assert_eq!(end.app_status, 3);
    assert_eq!(end.protocol_status, record::REQUEST_COMPLETE);
}

#[test]
fn name_value_lengths() {
    let long_name = vec![b'N'; 200];
    let long_value = vec![b'v'; 70_000];
    let mut out = BytesMut::new();
    record::put_name_value(&mut out, b"SHORT", b"v");
    record::put_name_value(&mut out, &long_name, b"");
    record::put_name_value(&mut out, b"K", &long_value);
    record::put_name_value(&mut out, &[b'x'; 127], &[b'y'; 128]);
    // 1-byte lengths below 128; 4-byte with the high bit set from 128 on.
    assert_eq!(&out[..2], &[5, 1]);
    assert_eq!(&out[8..13], &[0x80, 0, 0, 200, 0]);
    let pairs = record::parse_name_values(&out).unwrap();
    assert_eq!(pairs.len(), 4);
    assert_eq!(pairs[0], (b"SHORT".to_vec(), b"v".to_vec()));
    assert_eq!(pairs[1], (long_name, Vec::new()));
    assert_eq!(pairs[2].1.len(), 70_000);
    assert_eq!(pairs[3].0.len(), 127);
    assert_eq!(pairs[3].1.len(), 128);
    // Truncated input is an error, not a panic.
    for cut in [1, 3, 9, out.len() - 1] {
        let e = record::parse_name_values(&out[..cut]).unwrap_err();
        assert_eq!(e.kind(), GatewayErrorKind::BadResponse);
    }
}

#[test]
fn params_stream_spans_records_and_ends_empty() {
    let mut vars = MetaVars::default();
    vars.set("SCRIPT_FILENAME", "/srv/www/index.php");
    vars.set("HTTP_BIG", vec![b'b'; 100_000]);
    for i in 0..2000 {
        vars.set(format!("HTTP_X_{i}"), "value");
    }
    let mut wire = BytesMut::new();
    record::put_params(&mut wire, 1, &vars);
    let mut joined = Vec::new();
    let mut records = 0;
    let mut ended = false;
    while let Some(rec) = record::decode(&mut wire).unwrap() {
        assert_eq!(rec.kind, record::PARAMS);
        assert!(rec.content.len() <= record::CHUNK_BYTES);
        assert!(!ended, "nothing after the empty PARAMS record");
        ended = rec.content.is_empty();
        joined.extend_from_slice(&rec.content);
        records += 1;
    }
    assert!(ended);
    assert!(records >= 3);
    let pairs = record::parse_name_values(&joined).unwrap();
    assert_eq!(pairs.len(), vars.len());
    for ((n, v), (en, ev)) in pairs.iter().zip(vars.iter()) {
        assert_eq!(n, en.as_bytes());
        assert_eq!(v, ev);
    }
}

#[test]
fn stream_splits_at_65528_and_never_writes_empty_records() {
    let mut out = BytesMut::new();
    record::put_stream(&mut out, record::STDIN, 1, &vec![7u8; 150_000]);
    record::put_stream(&mut out, record::STDIN, 1, b"");
    let mut lens = Vec::new();
    while let Some(rec) = record::decode(&mut out).unwrap() {
        lens.push(rec.content.len());
    }
    assert_eq!(lens, [65528, 65528, 150_000 - 2 * 65528]);
}

#[test]
fn garbage_is_a_bad_response() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
    let e = record::decode(&mut buf).unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::BadResponse);
    assert!(record::parse_end_request(b"short").is_err());
    assert!(record::parse_begin_request(b"").is_err());
}
