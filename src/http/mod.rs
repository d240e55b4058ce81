//! HTTP rules shared by every room: hop-by-hop stripping, Via, Max-Forwards, Forwarded/X-Forwarded-*, and the
//! pages hopgate writes itself. [`forward_request_head`] and [`forward_response_head`] are the one order in which a
//! forwarded head loses its hop-by-hop fields and gets hopgate's own.

pub mod auth;
pub mod basic;
mod body;
pub mod file;
pub mod groups;
pub mod hop;
pub mod htpasswd;
pub mod listing;
pub mod pages;
pub mod representation;
pub mod upgrade;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Version, header};

pub use body::{Body, watch};

/// The Via `received-protocol` for a message of `version` (RFC 9110 §7.6.3; "HTTP/" is omitted).
fn via_protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// This hop's Via `received-by` name (a listener's `via_name`), with the Via values it writes made once: a relayed
/// request writes one on its way out and one on its way back (bench/profile callgrind: making them per message
/// was a string, an allocation and a check each time). Reads as the name (`&str`).
#[derive(Clone, Debug)]
pub struct ViaName {
    name: Box<str>,
    /// `PROTOCOL NAME` for each received protocol, in [`via_protocol`]'s order; None when the name can't be a
    /// field value (the configuration refuses such names).
    values: Option<[HeaderValue; 5]>,
}

/// The versions [`ViaName`] keeps a value for, in order.
const VIA_VERSIONS: [Version; 5] =
    [Version::HTTP_09, Version::HTTP_10, Version::HTTP_11, Version::HTTP_2, Version::HTTP_3];
/// HTTP/1.1's place in [`VIA_VERSIONS`].
const VIA_DEFAULT: usize = 2;

impl ViaName {
    pub fn new(name: &str) -> ViaName {
        let made: Option<Vec<HeaderValue>> =
            VIA_VERSIONS.iter().map(|v| HeaderValue::from_str(&format!("{} {name}", via_protocol(*v))).ok()).collect();
        let values = made.and_then(|v| v.try_into().ok());
        ViaName { name: name.into(), values }
    }

    /// The Via value for a message received as `version`.
    fn value(&self, version: Version) -> Option<&HeaderValue> {
        // Any other version is written as HTTP/1.1, as via_protocol does.
        let at = VIA_VERSIONS.iter().position(|v| *v == version).unwrap_or(VIA_DEFAULT);
        self.values.as_ref().map(|v| &v[at])
    }
}

impl std::fmt::Display for ViaName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::ops::Deref for ViaName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

/// Appends this hop to Via: `1.1 NAME`.
pub fn append_via(headers: &mut HeaderMap, version: Version, name: &ViaName) {
    if let Some(v) = name.value(version) {
        headers.append(header::VIA, v.clone());
    }
}

/// Whether a Via field already names this hopgate: the request went round in a loop.
pub fn via_names(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::VIA).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|hop| {
                let mut parts = hop.split_whitespace();
                let _protocol = parts.next();
                parts.next().is_some_and(|by| by.eq_ignore_ascii_case(name))
            })
        })
    })
}

/// A Host field value as RFC 9112 §3.2 has it, `uri-host [ ":" port ]` (RFC 3986 §3.2.2): the host as written (an
/// IP literal without its brackets) and the port (`host:` has none). None for anything else, including what
/// hyper's URI parser lets through (stray brackets, `:80x`). Stricter than RFC 3986 in one way: no
/// percent-encoding, so that a host has one spelling (hyper's parser refuses it too). An empty value is valid.
pub fn parse_host(value: &[u8]) -> Option<(&str, Option<u16>)> {
    let s = std::str::from_utf8(value).ok()?;
    let (host, rest) = match s.strip_prefix('[') {
        Some(literal) => {
            let (inner, rest) = literal.split_once(']')?;
            if inner.parse::<std::net::Ipv6Addr>().is_err() && !is_ip_future(inner) {
                return None;
            }
            (inner, rest)
        }
        None => {
            let end = s.find(':').unwrap_or(s.len());
            let name = &s[..end];
            // reg-name (or an IPv4 address): unreserved and sub-delims.
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)) {
                return None;
            }
            (name, &s[end..])
        }
    };
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some("") => None,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// The common Host: a name of letters, digits, `-` and `.`, and a port from 1 to 65535 or none. Every check a Host
/// goes through (`parse_host`, `config::authority_port`, http's `Authority`) accepts it, so they can be skipped.
pub fn is_plain_host(value: &[u8]) -> bool {
    let (name, port) = match value.iter().position(|&b| b == b':') {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let name_ok = !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = match port {
        None => true,
        Some(p) => {
            (1..=5).contains(&p.len())
                && p.iter().all(u8::is_ascii_digit)
                && (1..=65535).contains(&p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')))
        }
    };
    name_ok && port_ok
}

/// RFC 3986 `IPvFuture`: `v` 1*HEXDIG `.` 1*( unreserved / sub-delims / `:` ).
fn is_ip_future(s: &str) -> bool {
    let Some((version, rest)) = s.strip_prefix(['v', 'V']).and_then(|r| r.split_once('.')) else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_hexdigit())
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b))
}

/// What Max-Forwards says for this request (RFC 9110 §7.6.2): only TRACE and OPTIONS honour it.
#[derive(Debug, PartialEq, Eq)]
pub enum MaxForwards {
    /// Not applicable or absent: forward as is.
    Forward,
    /// 0: this proxy is the final recipient and answers itself.
    AnswerHere,
}

/// Applies Max-Forwards: decrements it in place, or says the proxy must answer.
pub fn max_forwards(method: &Method, headers: &mut HeaderMap) -> MaxForwards {
    if method != Method::TRACE && method != Method::OPTIONS {
        return MaxForwards::Forward;
    }
    let Some(v) = headers.get(header::MAX_FORWARDS) else {
        return MaxForwards::Forward;
    };
    // `Max-Forwards = 1*DIGIT`: anything else ("-1", "+3", "0x1", "1, 2") is ignored, as if absent.
    let digits = v.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return MaxForwards::Forward;
    }
    if digits.iter().all(|&d| d == b'0') {
        return MaxForwards::AnswerHere;
    }
    // The lesser of the value minus one and the largest hopgate supports: a value too long for a u32 is still
    // a valid one, and is forwarded as that largest value.
    let n = std::str::from_utf8(digits).ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(MAX_FORWARDS_SUPPORTED);
    headers.insert(header::MAX_FORWARDS, HeaderValue::from(n - 1));
    MaxForwards::Forward
}

/// The largest Max-Forwards value hopgate keeps (RFC 9110 §7.6.2 lets a recipient cap it); larger ones are
/// forwarded as this minus one.
pub const MAX_FORWARDS_SUPPORTED: u32 = u32::MAX;

/// Fields a TRACE echo leaves out: they likely carry credentials (RFC 9110 §9.3.8).
pub fn is_sensitive(name: &header::HeaderName) -> bool {
    name == header::AUTHORIZATION || name == header::PROXY_AUTHORIZATION || name == header::COOKIE
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The fields hopgate writes on a request it forwards. They are written by [`forward_request_head`] after the
/// hop-by-hop fields are gone, so that no `Connection` option of the client's can remove one of them.
pub struct OwnFields<'a> {
    /// `Host`: the authority the request is for (route::settle_host decided it).
    pub host: HeaderValue,
    /// The received protocol version of the request, for this hop's Via entry.
    pub version: Version,
    /// This hop's Via `received-by` name.
    pub via_name: &'a ViaName,
    /// Gateways: Forwarded and X-Forwarded-For/-Proto/-Host, replacing the client's.
    pub forwarded: Option<ForwardedFor<'a>>,
}

/// What a gateway tells its upstream about the request it received (RFC 7239).
pub struct ForwardedFor<'a> {
    /// Whoever connected to hopgate.
    pub client: SocketAddr,
    /// `http` or `https`: how the request reached hopgate.
    pub proto: &'a str,
    /// The Host the client addressed.
    pub host: Option<&'a HeaderValue>,
}

/// The one order of a forwarded request head: hop-by-hop fields go first ([`hop::strip`]: everything `Connection`
/// names, then the fixed list), then hopgate writes its own: Host, its Via entry (after the client's), and for
/// gateways Forwarded and X-Forwarded-*. Writing them before stripping let `Connection: X-Forwarded-For, ...`
/// delete them (CVE-2022-31813).
pub fn forward_request_head(headers: &mut HeaderMap, own: OwnFields<'_>) -> hop::Stripped {
    let stripped = hop::strip(headers);
    headers.insert(header::HOST, own.host);
    append_via(headers, own.version, own.via_name);
    if let Some(f) = own.forwarded {
        set_forwarded(headers, f.client, f.proto, f.host);
    }
    stripped
}

/// The same order for a response on its way back: hop-by-hop fields go, then this hop's Via entry is appended.
pub fn forward_response_head(headers: &mut HeaderMap, version: Version, via_name: &ViaName) {
    hop::strip(headers);
    append_via(headers, version, via_name);
}

/// Replaces whatever Forwarded/X-Forwarded-* the client sent with what hopgate saw (RFC 7239): hopgate is the
/// edge, so values from the client can't be trusted. Only [`forward_request_head`] calls it, after stripping.
// This runs on every gateway request: static names (a string key is parsed on every call) and one formatting
// of the address for both fields (bench/profile callgrind gateway).
fn set_forwarded(headers: &mut HeaderMap, client: SocketAddr, proto: &str, host_field: Option<&HeaderValue>) {
    let ip = client.ip().to_canonical();
    let mut text = [0u8; IP_TEXT_MAX];
    let ip_text = ip_text(ip, &mut text);
    let host = host_field.and_then(|h| h.to_str().ok());
    // Sized exactly (unless the host holds quotes to drop), so that the bytes become the value without another
    // allocation.
    let mut fwd = Vec::with_capacity(4 + ip_text.len() + 4 + 7 + proto.len() + host.map_or(0, |h| h.len() + 8));
    fwd.extend_from_slice(b"for=");
    if ip.is_ipv6() {
        fwd.extend_from_slice(b"\"[");
        fwd.extend_from_slice(ip_text);
        fwd.extend_from_slice(b"]\"");
    } else {
        fwd.extend_from_slice(ip_text);
    }
    fwd.extend_from_slice(b";proto=");
    fwd.extend_from_slice(proto.as_bytes());
    if let Some(h) = host {
        fwd.extend_from_slice(b";host=\"");
        // Quotes and backslashes dropped; a host has none, so it is usually copied whole.
        for part in h.split(['"', '\\']) {
            fwd.extend_from_slice(part.as_bytes());
        }
        fwd.push(b'"');
    }
    match HeaderValue::from_maybe_shared(Bytes::from(fwd)) {
        Ok(v) => headers.insert(header::FORWARDED, v),
        Err(_) => headers.remove(header::FORWARDED),
    };
    match HeaderValue::from_bytes(ip_text) {
        Ok(v) => headers.insert(X_FORWARDED_FOR.clone(), v),
        Err(_) => headers.remove(&X_FORWARDED_FOR),
    };
    headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if proto == "https" { "https" } else { "http" }));
    match host_field {
        Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// The longest address text [`ip_text`] writes (an IPv6 address with an embedded IPv4 one).
const IP_TEXT_MAX: usize = 45;

/// An address as text in `buf`, an IPv4 one without `fmt` (on every gateway request: `Display` took 1,300
/// instructions, and a `String` is one more allocation).
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    let std::net::IpAddr::V4(v4) = ip else {
        use std::io::Write as _;
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{ip}");
        let len = cursor.position() as usize;
        return &buf[..len];
    };
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "100.9.90.199",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut [0; IP_TEXT_MAX]), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn via_roundtrip() {
        let mut h = HeaderMap::new();
        h.insert(header::VIA, "1.0 fred, 1.1 p.example.net".parse().unwrap());
        append_via(&mut h, Version::HTTP_11, &ViaName::new("me:8080"));
        assert!(via_names(&h, "me:8080"));
        assert!(via_names(&h, "fred"));
        assert!(!via_names(&h, "me"));
        assert_eq!(h.get_all(header::VIA).iter().next_back().unwrap(), "1.1 me:8080");
    }

    #[test]
    fn host_fields() {
        for (value, host, port) in [
            ("", "", None),
            ("a.example", "a.example", None),
            ("A.Example:8080", "A.Example", Some(8080)),
            ("a.example:", "a.example", None),
            ("a.example:0080", "a.example", Some(80)),
            ("[::1]", "::1", None),
            ("[::1]:443", "::1", Some(443)),
            ("[v1.fe80::a+b]", "v1.fe80::a+b", None),
            ("192.0.2.1:1", "192.0.2.1", Some(1)),
            (":80", "", Some(80)),
        ] {
            assert_eq!(parse_host(value.as_bytes()), Some((host, port)), "{value:?}");
        }
        // Found by the fuzz target host: hyper's URI parser accepts all of these as an authority.
        for bad in [
            "1[]",
            "[::1]x",
            "a:80x",
            "[zz]",
            "a[b]:80",
            "a:65536",
            "[::1]:1:2",
            "a%41",
            "u@h",
            "a b",
            "[::1",
            "\u{e9}",
        ] {
            assert_eq!(parse_host(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn max_forwards_rules() {
        let mut h = HeaderMap::new();
        h.insert(header::MAX_FORWARDS, "0".parse().unwrap());
        assert_eq!(max_forwards(&Method::GET, &mut h), MaxForwards::Forward);
        assert_eq!(max_forwards(&Method::TRACE, &mut h), MaxForwards::AnswerHere);
        h.insert(header::MAX_FORWARDS, "3".parse().unwrap());
        assert_eq!(max_forwards(&Method::OPTIONS, &mut h), MaxForwards::Forward);
        assert_eq!(h[header::MAX_FORWARDS], "2");
        h.insert(header::MAX_FORWARDS, "000".parse().unwrap());
        assert_eq!(max_forwards(&Method::TRACE, &mut h), MaxForwards::AnswerHere);
        h.insert(header::MAX_FORWARDS, "99999999999999999999999".parse().unwrap());
        assert_eq!(max_forwards(&Method::TRACE, &mut h), MaxForwards::Forward);
        assert_eq!(h[header::MAX_FORWARDS], (u32::MAX - 1).to_string().as_str(), "a huge value is still decremented");
        for garbage in ["+3", "-1", "0x1", "1, 2", "abc"] {
            h.insert(header::MAX_FORWARDS, garbage.parse().unwrap());
            assert_eq!(max_forwards(&Method::OPTIONS, &mut h), MaxForwards::Forward, "{garbage}");
            assert_eq!(h[header::MAX_FORWARDS], garbage, "an invalid value is left alone");
        }
    }

    #[test]
    fn a_connection_option_removes_nothing_hopgate_writes() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "host, via, forwarded, x-forwarded-for".parse().unwrap());
        h.append(header::CONNECTION, "X-Forwarded-Host, X-Forwarded-Proto, x-own".parse().unwrap());
        h.insert(header::VIA, "1.0 fred".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-own", "1".parse().unwrap());
        let host = HeaderValue::from_static("public.example");
        let forwarded = ForwardedFor { client: "10.0.0.7:9".parse().unwrap(), proto: "http", host: Some(&host) };
        let me = ViaName::new("me");
        let own =
            OwnFields { host: host.clone(), version: Version::HTTP_10, via_name: &me, forwarded: Some(forwarded) };
        forward_request_head(&mut h, own);
        assert_eq!(h[header::HOST], "public.example");
        let via: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.0 fred", "1.0 me"]);
        assert_eq!(h[header::FORWARDED], "for=10.0.0.7;proto=http;host=\"public.example\"");
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-own") && !h.contains_key(header::CONNECTION));
        assert_eq!(h.len(), 7);
    }

    #[test]
    fn forwarded_replaces_client_values() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert(header::FORWARDED, "for=6.6.6.6".parse().unwrap());
        let host = HeaderValue::from_static("example.com");
        set_forwarded(&mut h, "[::1]:5".parse().unwrap(), "https", Some(&host));
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=https;host=\"example.com\"");
        assert_eq!(h["x-forwarded-proto"], "https");
        let odd = HeaderValue::from_static("a\"b\\c\"");
        set_forwarded(&mut h, "10.1.2.3:5".parse().unwrap(), "http", Some(&odd));
        assert_eq!(h[header::FORWARDED], "for=10.1.2.3;proto=http;host=\"abc\"");
    }
}
