//! The PROXY protocol reader and writer (`crate::proxy_protocol`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proxy_protocol::{Addresses, Header, Parsed, V1_MAX_BYTES, V2_MAX_BYTES, Version, encode, parse};

/// The input as the first bytes of a connection, read by both versions: a complete header ends within the input
/// and the limit, reads the same from its own bytes alone and with anything after it, and every proper prefix
/// of it is "incomplete" (so a reader may consume what it has seen and wait: it never reads past the header);
/// an incomplete input stays below the limit and its prefixes are incomplete too; an error stays an error
/// whatever follows. Addresses read, and addresses made of the input's bytes, are written in both versions and
/// read back the same.
pub fn proxy_protocol(data: &[u8]) {
    for version in [Version::V1, Version::V2] {
        check(version, data);
    }
    if let Some(addrs) = addresses(data) {
        round_trip(&addrs);
    }
}

fn check(version: Version, data: &[u8]) {
    let max = match version {
        Version::V1 => V1_MAX_BYTES,
        Version::V2 => V2_MAX_BYTES,
    };
    match parse(version, data) {
        Ok(Parsed::Complete { len, header }) => {
            assert!(len <= data.len() && len <= max, "{version}: {len} bytes of {}", data.len());
            let whole = Ok(Parsed::Complete { len, header });
            assert_eq!(parse(version, &data[..len]), whole, "{version}: the header alone");
            let mut more = data[..len].to_vec();
            more.extend_from_slice(b"\x16\x03\x01\x02\x00GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(version, &more), whole, "{version}: the header with what follows it");
            for cut in 0..len {
                assert_eq!(parse(version, &data[..cut]), Ok(Parsed::Incomplete), "{version}: a {cut}-byte prefix");
            }
            if let Header::Proxied(addrs) = header {
                round_trip(&addrs);
            }
        }
        Ok(Parsed::Incomplete) => {
            assert!(data.len() < max, "{version}: incomplete at {} bytes", data.len());
            for cut in 0..data.len() {
                assert_eq!(parse(version, &data[..cut]), Ok(Parsed::Incomplete), "{version}: a {cut}-byte prefix");
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty());
            for tail in [&b"\r\n"[..], &[0u8; 40], b" 1 2\r\n"] {
                let more = [data, tail].concat();
                assert!(parse(version, &more).is_err(), "{version}: an error became valid with {tail:?} after it");
            }
        }
    }
}

/// Addresses from the input's first 37 bytes: a flags byte (bit 0: source IPv4, bit 1: destination IPv4), two
/// 16-byte addresses (the first 4 bytes for IPv4) and two ports.
fn addresses(data: &[u8]) -> Option<Addresses> {
    let b = data.get(..37)?;
    let ip = |v4: bool, at: usize| -> IpAddr {
        if v4 {
            IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    Some(Addresses {
        src: SocketAddr::new(ip(b[0] & 1 == 1, 1), port(33)),
        dst: SocketAddr::new(ip(b[0] & 2 == 2, 17), port(35)),
    })
}

/// Written in either version, `addrs` reads back as the same client and destination (IPv4 ones mapped into
/// IPv6, when the other address is IPv6, read back as IPv4).
fn round_trip(addrs: &Addresses) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let want = (canonical(addrs.src), canonical(addrs.dst));
    for version in [Version::V1, Version::V2] {
        let h = encode(version, addrs);
        match parse(version, &h) {
            Ok(Parsed::Complete { len, header: Header::Proxied(got) }) if len == h.len() => {
                assert_eq!((canonical(got.src), canonical(got.dst)), want, "{version}: {h:02x?}");
            }
            other => panic!("{version}: hopgate's own header {h:02x?} reads as {other:?}"),
        }
    }
}
