//! In memory: the SCGI request head netstring (CONTENT_LENGTH first, SCGI=1 second).

use hopgate::backend::meta::{GatewayErrorKind, MetaVars};
use hopgate::backend::scgi::{decode_head, encode_head};

#[test]
fn exact_bytes_and_order() {
    let mut v = MetaVars::default();
    v.set("REQUEST_METHOD", "GET");
    v.set("CONTENT_LENGTH", "27");
    v.set("HTTP_X", "");
    let head = encode_head(&v);
    let expect = b"CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00HTTP_X\x00\x00";
    let mut wire = format!("{}:", expect.len()).into_bytes();
    wire.extend_from_slice(expect);
    wire.push(b',');
    assert_eq!(&head[..], &wire[..]);
}

#[test]
fn no_body_means_content_length_zero() {
    let mut v = MetaVars::default();
    v.set("SCGI", "1");
    v.set("PATH_INFO", "/x");
    let head = encode_head(&v);
    let (pairs, used) = decode_head(&head).unwrap().unwrap();
    assert_eq!(used, head.len());
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["CONTENT_LENGTH", "SCGI", "PATH_INFO"], "SCGI not repeated");
    assert_eq!(pairs[0].1, b"0");
}

#[test]
fn decode_waits_for_the_whole_netstring() {
    let mut v = MetaVars::default();
    v.set("CONTENT_LENGTH", "5");
    v.set("HTTP_LONG", vec![b'v'; 5000]);
    let mut wire = encode_head(&v).to_vec();
    wire.extend_from_slice(b"hello");
    let head_len = wire.len() - 5;
    for cut in [0, 1, 3, 5, head_len - 1] {
        assert!(decode_head(&wire[..cut]).unwrap().is_none(), "cut {cut}");
    }
    let (pairs, used) = decode_head(&wire).unwrap().unwrap();
    assert_eq!(used, head_len);
    assert_eq!(&wire[used..], b"hello");
    assert_eq!(pairs[2].1.len(), 5000);
}

#[test]
fn malformed_netstrings() {
    for bad in [&b"x:"[..], b"05:ab\x00c\x00,", b"4:ab\x00c\x00", b"5:ab\x00c\x00;", b"3:ab\x00,", b"123456789"] {
        let e = decode_head(bad).unwrap_err();
        assert_eq!(e.kind(), GatewayErrorKind::BadResponse, "{:?}", String::from_utf8_lossy(bad));
    }
}
