//! The PROXY protocol, versions 1 (one text line) and 2 (binary), as HAProxy's doc/proxy-protocol.txt specifies
//! it: a balancer that relays a TCP connection writes, before anything else, where the connection really came
//! from. hopgate reads it on listeners with `proxy_protocol` (server/proxied.rs) and writes it on upstream
//! connections of routes with `send_proxy_protocol` (upstream::Connector).
//!
//! Written here rather than taken from a crate: the format is small and exactly specified, and hopgate needs a
//! reader that says "incomplete" for every proper prefix of a header and never consumes a byte past it (the rest
//! is the client's TLS or HTTP), plus checksum verification; the fuzz target `proxy_protocol` checks those promises.
//!
//! Strict, as the spec asks ("any sequence which does not exactly match the protocol must be discarded"): a
//! listener takes the version it is configured with and no other, v1 only with single spaces, canonical
//! addresses and ports without leading zeros, v2 only with known version, command, family and transport values,
//! TLVs that fit exactly, and a matching CRC32C when one is sent. TLVs are otherwise ignored. What the spec says
//! to treat as "use the connection's own endpoints" (v1 `UNKNOWN`, v2 `LOCAL`, and for v2 `PROXY` the UNSPEC,
//! UNIX and UDP forms) is [`Header::Local`].

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the spec's worst case, `PROXY UNKNOWN` with two full IPv6 addresses).
pub const V1_MAX_BYTES: usize = 107;
/// The largest v2 header hopgate reads: its 16-byte head, then addresses (at most 216 bytes) and TLVs. The
/// format allows 65,535 bytes after the head; what balancers send is far below this (HAProxy's TLVs with TLS
/// details and a unique ID, AWS's endpoint ID).
pub const V2_MAX_BYTES: usize = 16 + 4096;

/// The version a listener takes, or a route sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// `"v1"` or `"v2"`, as the config keys and flags spell it.
    pub fn parse(s: &str) -> Result<Version, String> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            other => Err(format!("PROXY protocol version {other:?}: expected \"v1\" or \"v2\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two ends of a relayed connection: the client and the address it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addresses {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was relayed for this client.
    Proxied(Addresses),
    /// The connection's own endpoints count (v1 `UNKNOWN`; v2 `LOCAL`, a balancer's health check; v2 `PROXY`
    /// over UNSPEC, AF_UNIX or UDP, which the spec lets a receiver treat as UNSPEC).
    Local,
}

/// The result of reading the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid start of a header: every byte given belongs to it, and more are needed.
    Incomplete,
    /// A whole header of `len` bytes; whatever follows belongs to the connection.
    Complete { len: usize, header: Header },
}

/// Why bytes are not a header of the expected version: a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid<T>(why: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(why.into()))
}

/// Reads a header of `version` from the start of `bytes`. `Incomplete` only for a proper prefix of a valid
/// header, so that every byte of it can be consumed while more are awaited; an error as soon as the bytes can't
/// start one.
pub fn parse(version: Version, bytes: &[u8]) -> Result<Parsed, Invalid> {
    match version {
        Version::V1 => parse_v1(bytes),
        Version::V2 => parse_v2(bytes),
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";

fn parse_v1(bytes: &[u8]) -> Result<Parsed, Invalid> {
    let head = &bytes[..bytes.len().min(V1_PREFIX.len())];
    if head != &V1_PREFIX[..head.len()] {
        return invalid("a v1 header starts with \"PROXY \"");
    }
    // The line ends at the first CRLF; before it only visible ASCII and spaces, and no lone CR or LF.
    let mut end = None;
    for (i, &b) in bytes.iter().enumerate().take(V1_MAX_BYTES) {
        match b {
            b'\r' => match bytes.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return invalid("a CR not followed by LF in the v1 header"),
                None => {}
            },
            b'\n' => return invalid("an LF without CR in the v1 header"),
            b' '..=b'~' => {}
            _ => return invalid(format!("byte 0x{b:02x} in the v1 header")),
        }
    }
    let Some(end) = end else {
        if bytes.len() >= V1_MAX_BYTES {
            return invalid(format!("no CRLF within the first {V1_MAX_BYTES} bytes of the v1 header"));
        }
        return Ok(Parsed::Incomplete);
    };
    let len = end + 2;
    // Visible ASCII only (checked above), so this is UTF-8.
    let line = std::str::from_utf8(&bytes[V1_PREFIX.len()..end]).map_err(|_| Invalid("not ASCII".into()))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or("");
    let family_v6 = match proto {
        // "the receiver must ignore anything presented before the CRLF"
        "UNKNOWN" => return Ok(Parsed::Complete { len, header: Header::Local }),
        "TCP4" => false,
        "TCP6" => true,
        other => return invalid(format!("v1 protocol {other:?}: TCP4, TCP6 or UNKNOWN expected")),
    };
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return invalid(format!("{proto} needs 4 fields separated by single spaces, found {}", parts.len()));
    };
    let ip = |s: &str| if family_v6 { v6_text(s) } else { v4_text(s).map(IpAddr::V4) };
    let (src, dst) = (ip(src)?, ip(dst)?);
    let (sport, dport) = (port_text(sport)?, port_text(dport)?);
    let addrs = Addresses { src: SocketAddr::new(src, sport), dst: SocketAddr::new(dst, dport) };
    Ok(Parsed::Complete { len, header: Header::Proxied(addrs) })
}

/// Four decimal numbers 0-255 without leading zeros, separated by single dots.
fn v4_text(s: &str) -> Result<Ipv4Addr, Invalid> {
    let bad = || Invalid(format!("{s:?} is not an IPv4 address in canonical form"));
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        *o = decimal(parts.next().ok_or_else(bad)?, 255).ok_or_else(bad)? as u8;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Ipv4Addr::from(octets))
}

/// Hexadecimal groups and colons (at most one `::`), as the spec writes IPv6 addresses.
fn v6_text(s: &str) -> Result<IpAddr, Invalid> {
    let bad = || Invalid(format!("{s:?} is not an IPv6 address"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
        return Err(bad());
    }
    s.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad())
}

fn port_text(s: &str) -> Result<u16, Invalid> {
    decimal(s, 65535)
        .map(|p| p as u16)
        .ok_or_else(|| Invalid(format!("{s:?} is not a port (0 to 65535, no leading zeros)")))
}

/// A decimal number up to `max`, digits only, no leading zeros (octal confusion, the spec says).
fn decimal(s: &str, max: u32) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n <= max)
}

const LOCAL: u8 = 0x0;
const PROXY: u8 = 0x1;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const STREAM: u8 = 0x1;
const PP2_TYPE_CRC32C: u8 = 0x03;

fn parse_v2(bytes: &[u8]) -> Result<Parsed, Invalid> {
    let sig = &bytes[..bytes.len().min(V2_SIGNATURE.len())];
    if sig != &V2_SIGNATURE[..sig.len()] {
        return invalid("a v2 header starts with its 12-byte signature");
    }
    if let Some(&ver_cmd) = bytes.get(12) {
        if ver_cmd >> 4 != 2 {
            return invalid(format!("v2 header of version {} (only 2 exists)", ver_cmd >> 4));
        }
        if ver_cmd & 0xf > PROXY {
            return invalid(format!("v2 command 0x{:x} (only LOCAL and PROXY exist)", ver_cmd & 0xf));
        }
    }
    if let Some(&fam) = bytes.get(13)
        && (fam >> 4 > 3 || fam & 0xf > 2)
    {
        return invalid(format!("v2 address family and transport 0x{fam:02x}"));
    }
    if bytes.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > V2_MAX_BYTES {
        return invalid(format!("v2 header of {len} bytes is larger than the {V2_MAX_BYTES} hopgate reads"));
    }
    if bytes.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let header = &bytes[..len];
    let (cmd, family, transport) = (header[12] & 0xf, header[13] >> 4, header[13] & 0xf);
    if cmd == LOCAL || family == 0 || transport == 0 {
        // The block is skipped as a whole: the spec has the receiver ignore its addresses (and the family).
        return Ok(Parsed::Complete { len, header: Header::Local });
    }
    let block = &header[16..];
    let (addrs, rest) = match (family, transport) {
        (AF_INET, STREAM) => {
            let Some((a, rest)) = block.split_first_chunk::<12>() else {
                return invalid(format!("v2 TCP over IPv4 needs 12 address bytes, the header has {}", block.len()));
            };
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            (endpoints(ip(0), ip(4), &a[8..]), rest)
        }
        (AF_INET6, STREAM) => {
            let Some((a, rest)) = block.split_first_chunk::<36>() else {
                return invalid(format!("v2 TCP over IPv6 needs 36 address bytes, the header has {}", block.len()));
            };
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            (endpoints(ip(0), ip(16), &a[32..]), rest)
        }
        // UDP, and AF_UNIX of either kind: valid, and to be treated as UNSPEC (the connection's endpoints).
        _ => return Ok(Parsed::Complete { len, header: Header::Local }),
    };
    check_tlvs(header, len - rest.len())?;
    Ok(Parsed::Complete { len, header: Header::Proxied(addrs) })
}

fn endpoints(src: IpAddr, dst: IpAddr, ports: &[u8]) -> Addresses {
    let port = |i: usize| u16::from_be_bytes([ports[i], ports[i + 1]]);
    Addresses { src: SocketAddr::new(src, port(0)), dst: SocketAddr::new(dst, port(2)) }
}

/// The TLVs of `header` from byte `at` on: each must fit exactly, and a CRC32C one must match the header.
fn check_tlvs(header: &[u8], mut at: usize) -> Result<(), Invalid> {
    while at < header.len() {
        let Some(&[kind, hi, lo]) = header.get(at..at + 3) else {
            return invalid(format!(
                "a v2 TLV cut short: {} bytes left for its 3-byte type and length",
                header.len() - at
            ));
        };
        let value = at + 3..at + 3 + usize::from(u16::from_be_bytes([hi, lo]));
        if value.end > header.len() {
            return invalid(format!(
                "v2 TLV of type 0x{kind:02x} runs {} bytes past the header",
                value.end - header.len()
            ));
        }
        if kind == PP2_TYPE_CRC32C {
            if value.len() != 4 {
                return invalid(format!("v2 CRC32C TLV of {} bytes (4 expected)", value.len()));
            }
            let sent = u32::from_be_bytes([
                header[value.start],
                header[value.start + 1],
                header[value.start + 2],
                header[value.start + 3],
            ]);
            let computed = crc32c_zeroed(header, value.clone());
            if sent != computed {
                return invalid(format!(
                    "v2 CRC32C checksum 0x{sent:08x} does not match the header's (0x{computed:08x})"
                ));
            }
        }
        at = value.end;
    }
    Ok(())
}

/// CRC-32C (Castagnoli, RFC 4960 appendix B) of `bytes` with the bytes at `zeroed` read as zeros.
fn crc32c_zeroed(bytes: &[u8], zeroed: std::ops::Range<usize>) -> u32 {
    let mut crc = !0u32;
    for (i, &b) in bytes.iter().enumerate() {
        crc ^= u32::from(if zeroed.contains(&i) { 0 } else { b });
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The header of `version` for `addrs`. Both addresses are written in one family: IPv4 when both are IPv4
/// (also as IPv4-mapped IPv6), else both IPv6 (an IPv4 one mapped).
pub fn encode(version: Version, addrs: &Addresses) -> Vec<u8> {
    let (src, dst) = match (addrs.src.ip().to_canonical(), addrs.dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(as_v6(s)), IpAddr::V6(as_v6(d))),
    };
    let (sport, dport) = (addrs.src.port(), addrs.dst.port());
    match version {
        Version::V1 => {
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {proto} {} {} {sport} {dport}\r\n", v1_ip(src), v1_ip(dst)).into_bytes()
        }
        Version::V2 => {
            let mut h = Vec::with_capacity(16 + 36);
            h.extend_from_slice(&V2_SIGNATURE);
            h.push(0x20 | PROXY);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    h.extend_from_slice(&[AF_INET << 4 | STREAM, 0, 12]);
                    h.extend_from_slice(&s.octets());
                    h.extend_from_slice(&d.octets());
                }
                _ => {
                    h.extend_from_slice(&[AF_INET6 << 4 | STREAM, 0, 36]);
                    h.extend_from_slice(&as_v6(src).octets());
                    h.extend_from_slice(&as_v6(dst).octets());
                }
            }
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// An address as v1 writes it: IPv6 in hexadecimal groups only (Rust writes an IPv4-mapped one with dots).
fn v1_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            v6.segments().iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":")
        }
        ip => ip.to_string(),
    }
}

/// Why a connection's header could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not a header of the version expected.
    Invalid(Invalid),
    /// The connection ended (or failed) before the header was complete.
    Closed(Option<io::Error>),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Invalid(why) => write!(f, "{why}"),
            ReadError::Closed(None) => f.write_str("the connection ended before the header was complete"),
            ReadError::Closed(Some(e)) => write!(f, "reading the header failed: {e}"),
        }
    }
}

/// Reads the header of `version` at the start of `stream`, consuming exactly its bytes: what the client sends
/// after it (a TLS ClientHello, an HTTP request) stays unread. The bytes are looked at with `peek` and only those
/// that belong to the header are read; a header that arrives in pieces is taken piece by piece. Unbounded in
/// time: the caller applies the header-read timeout.
pub async fn read(stream: &mut TcpStream, version: Version) -> Result<Header, ReadError> {
    let max = match version {
        Version::V1 => V1_MAX_BYTES,
        Version::V2 => V2_MAX_BYTES,
    };
    let mut got: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 536.min(max)];
    loop {
        // A v2 header says its length after 16 bytes: never look further than it (the rest is the client's).
        let want = match version {
            Version::V2 if got.len() >= 16 => 16 + usize::from(u16::from_be_bytes([got[14], got[15]])),
            _ => max,
        };
        let room = want.saturating_sub(got.len()).clamp(1, buf.len());
        let n = stream.peek(&mut buf[..room]).await.map_err(|e| ReadError::Closed(Some(e)))?;
        if n == 0 {
            return Err(ReadError::Closed(None));
        }
        let seen = got.len();
        got.extend_from_slice(&buf[..n]);
        let (take, done) = match parse(version, &got).map_err(ReadError::Invalid)? {
            // Every byte seen belongs to the header: consume them and wait for more.
            Parsed::Incomplete => (n, None),
            Parsed::Complete { len, header } => (len - seen, Some(header)),
        };
        stream.read_exact(&mut buf[..take]).await.map_err(|e| ReadError::Closed(Some(e)))?;
        if let Some(header) = done {
            return Ok(header);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        let want = Addresses { src: a("192.168.0.1:56324"), dst: a("192.168.0.11:443") };
        assert_eq!(parse(Version::V1, line), Ok(Parsed::Complete { len: 47, header: Header::Proxied(want) }));
        for n in 0..47 {
            assert_eq!(parse(Version::V1, &line[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        let six = b"PROXY TCP6 2001:db8::1 ffff::2 0 65535\r\n";
        let want = Addresses { src: a("[2001:db8::1]:0"), dst: a("[ffff::2]:65535") };
        assert_eq!(parse(Version::V1, six), Ok(Parsed::Complete { len: six.len(), header: Header::Proxied(want) }));
        assert_eq!(
            parse(Version::V1, b"PROXY UNKNOWN whatever\r\n"),
            Ok(Parsed::Complete { len: 24, header: Header::Local })
        );
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\rx",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80 \r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 80\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 80\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 80\r\n",
            b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\t\r\n",
        ] {
            assert!(parse(Version::V1, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [&b"PROXY UNKNOWN "[..], &[b'a'; 93]].concat();
        assert!(parse(Version::V1, &long).is_err());
        assert_eq!(parse(Version::V1, &long[..106]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn v2_round_trips_and_checksums() {
        for (src, dst) in [("1.2.3.4:5", "6.7.8.9:10"), ("[2001:db8::1]:1", "[::1]:2"), ("1.2.3.4:5", "[::1]:2")] {
            let addrs = Addresses { src: a(src), dst: a(dst) };
            for version in [Version::V1, Version::V2] {
                let h = encode(version, &addrs);
                let Ok(Parsed::Complete { len, header: Header::Proxied(got) }) = parse(version, &h) else {
                    panic!("{version} {src} {dst}: {:?}", parse(version, &h));
                };
                assert_eq!(len, h.len());
                // A mixed pair is written in IPv6: the client is the same, read back canonically.
                assert_eq!(
                    (SocketAddr::new(got.src.ip().to_canonical(), got.src.port()), got.dst.port()),
                    (addrs.src, addrs.dst.port())
                );
            }
        }
        // HAProxy's `send-proxy-v2 proxy-v2-options crc32c` (a capture): 127.0.0.5:40000 -> 127.0.0.1:8080.
        let mut h = encode(Version::V2, &Addresses { src: a("127.0.0.5:40000"), dst: a("127.0.0.1:8080") });
        h[15] += 7;
        h.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        let n = h.len();
        let crc = crc32c_zeroed(&h, n - 4..n);
        h[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(parse(Version::V2, &h), Ok(Parsed::Complete { header: Header::Proxied(_), .. })));
        h[n - 1] ^= 1;
        assert!(parse(Version::V2, &h).unwrap_err().0.contains("checksum"));
        // The check value of CRC-32C ("123456789").
        assert_eq!(crc32c_zeroed(b"123456789", 0..0), 0xE306_9283);
    }

    /// What HAProxy 2.6 sent (fuzz/seeds.py records it): send-proxy, send-proxy-v2 with its TLVs (TLS details,
    /// authority, unique ID, a CRC32C checksum), over IPv4 and IPv6, and its health check's LOCAL header.
    #[test]
    fn haproxy_captures_read_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/proxy_protocol");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("haproxy-") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let version = if data.starts_with(b"PROXY") { Version::V1 } else { Version::V2 };
            let Ok(Parsed::Complete { len, header }) = parse(version, &data) else {
                panic!("{name}: {:?}", parse(version, &data));
            };
            assert!(len <= data.len());
            match header {
                Header::Local => assert!(name.contains("local"), "{name}"),
                Header::Proxied(a) => assert!(a.src.ip().is_loopback() && a.dst.ip().is_loopback(), "{name}: {a:?}"),
            }
            seen += 1;
        }
        assert!(seen >= 6, "{seen} captures in {}", dir.display());
    }

    #[tokio::test]
    async fn read_consumes_the_header_only() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let header = encode(Version::V2, &Addresses { src: a("10.0.0.1:1"), dst: a("10.0.0.2:2") });
        let sent = header.clone();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for piece in sent.chunks(5) {
                c.write_all(piece).await.unwrap();
                c.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            c
        });
        let (mut s, _) = listener.accept().await.unwrap();
        let header = read(&mut s, Version::V2).await.unwrap();
        assert_eq!(header, Header::Proxied(Addresses { src: a("10.0.0.1:1"), dst: a("10.0.0.2:2") }));
        let _c = client.await.unwrap();
        let mut rest = [0u8; 16];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }
}
