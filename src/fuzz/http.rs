//! HTTP fields hopgate reads or writes itself: Via, Max-Forwards, Forwarded/X-Forwarded-*, hop-by-hop stripping,
//! Host (routing and validation), and htpasswd files with `Proxy-Authorization: Basic`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::{HeaderValue, Method, Request, Uri, Version, header};
use sha1::{Digest as _, Sha1};

use super::ftp::base64_encode;
use super::{header_map, lines, text};
use crate::http::auth::{AuthLimits, Guard};
use crate::http::basic::{MAX_CREDENTIALS_BYTES, decode as parse_basic};
use crate::http::groups::Groups;
use crate::http::htpasswd::Users;
use crate::http::{
    ForwardedFor, MaxForwards, OwnFields, ViaName, append_via, forward_request_head, hop, max_forwards, via_names,
};
use crate::server::log::loggable_target;
use crate::server::service::{host_field, transfer_codings};

/// Request fields as `name: value` lines: Via loop detection (a hop appended is always found again), Max-Forwards
/// (RFC 9110 §7.6.2: decremented, or answered here at 0; anything but 1*DIGIT left alone), Forwarded and
/// X-Forwarded-* (RFC 7239: replaced by what hopgate saw, always well-formed), hop-by-hop stripping (RFC 9110
/// §7.6.1: nothing named by Connection, nothing on the fixed list survives; Host always does).
pub fn http_fields(data: &[u8]) {
    let headers = header_map(data);

    // Via: the first line's visible characters (a via_name is one word without commas) as this hop's name.
    let name: String = lines(data)
        .next()
        .map(|l| l.iter().filter(|&&b| b.is_ascii_graphic() && b != b',').map(|&b| b as char).collect())
        .unwrap_or_default();
    let _ = via_names(&headers, "hopgate:8080");
    if !name.is_empty() {
        let via = ViaName::new(&name);
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            let mut h = headers.clone();
            append_via(&mut h, version, &via);
            assert!(via_names(&h, &name), "the hop just appended ({name:?}) is found");
            assert_eq!(h.get_all(header::VIA).iter().count(), headers.get_all(header::VIA).iter().count() + 1);
        }
    }

    // Max-Forwards.
    for method in [Method::TRACE, Method::OPTIONS, Method::GET] {
        let mut h = headers.clone();
        let before = h.get(header::MAX_FORWARDS).cloned();
        let answer = max_forwards(&method, &mut h);
        let after = h.get(header::MAX_FORWARDS).cloned();
        let digits = before
            .as_ref()
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit));
        match (method == Method::GET, digits) {
            (false, Some(d)) if d.iter().all(|&b| b == b'0') => {
                assert_eq!(answer, MaxForwards::AnswerHere);
                assert_eq!(after, before);
            }
            (false, Some(d)) => {
                assert_eq!(answer, MaxForwards::Forward);
                let n: u32 = std::str::from_utf8(d).ok().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
                assert_eq!(after, Some(HeaderValue::from(n - 1)), "decremented");
            }
            _ => {
                assert_eq!(answer, MaxForwards::Forward);
                assert_eq!(after, before, "left alone");
            }
        }
    }

    // Forwarded and X-Forwarded-*: for a client address and the request's Host, whatever the client sent.
    let seed = super::mutate::fnv1a(data);
    let client = match seed % 3 {
        0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::from((seed >> 8) as u32)), 40000),
        1 => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u128::from(seed) << 64 | u128::from(seed))), 40000),
        _ => SocketAddr::new(IpAddr::V6(Ipv4Addr::from((seed >> 8) as u32).to_ipv6_mapped()), 40000),
    };
    for proto in ["http", "https"] {
        let mut h = headers.clone();
        let host = h.get(header::HOST).cloned();
        let forwarded = Some(ForwardedFor { client, proto, host: host.as_ref() });
        let own_host = host.clone().unwrap_or(HeaderValue::from_static("fuzz.example"));
        let own =
            OwnFields { host: own_host, version: http::Version::HTTP_11, via_name: &ViaName::new("fuzz"), forwarded };
        forward_request_head(&mut h, own);
        let ip = client.ip().to_canonical();
        let fwd = h.get(header::FORWARDED).expect("Forwarded is always set").to_str().expect("ASCII");
        let pairs = forwarded_pairs(fwd).unwrap_or_else(|e| panic!("Forwarded {fwd:?}: {e}"));
        let want_for = if ip.is_ipv6() { format!("\"[{ip}]\"") } else { ip.to_string() };
        assert_eq!(pairs[0], ("for".to_string(), want_for));
        assert_eq!(pairs[1], ("proto".to_string(), proto.to_string()));
        let host_text = host.as_ref().and_then(|v| v.to_str().ok());
        assert_eq!(pairs.len(), 2 + usize::from(host_text.is_some()), "{fwd:?}");
        assert_eq!(h.get("x-forwarded-for").map(|v| v.as_bytes()), Some(ip.to_string().as_bytes()));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(proto.as_bytes()));
        assert_eq!(h.get("x-forwarded-host"), host.as_ref());
    }

    // Hop-by-hop stripping.
    let mut h = headers.clone();
    let _ = hop::transfer_codings(&h);
    let _ = hop::strip(&mut h);
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ] {
        assert!(!h.contains_key(name), "{name} survives stripping");
    }
    // Fields named by a Connection value that is text (see docs/fuzzing.md on obs-text values).
    for value in headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()) {
        for token in value.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("host") {
                continue;
            }
            if let Ok(n) = header::HeaderName::from_bytes(token.as_bytes()) {
                assert!(!h.contains_key(&n), "{n} was named by Connection and survives");
            }
        }
    }
    assert_eq!(h.get_all(header::HOST).iter().count(), headers.get_all(header::HOST).iter().count(), "Host stays");
    for (n, v) in h.iter() {
        assert!(headers.get_all(n).iter().any(|o| o == v), "stripping only removes");
    }
}

/// RFC 7239 §4 `forwarded-element`: `token=(token|quoted-string)` pairs separated by `;`, no duplicates.
fn forwarded_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = s;
    loop {
        let eq = rest.find('=').ok_or("pair without =")?;
        let name = &rest[..eq];
        if name.is_empty() || !name.chars().all(is_tchar) {
            return Err(format!("bad name {name:?}"));
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, c) if c == '\t' || (' '..='~').contains(&c) => {}
                    (false, c) => return Err(format!("{c:?} in a quoted-string")),
                }
            }
            let end = end.ok_or("unterminated quoted-string")?;
            value = format!("\"{}\"", &q[..end]);
            rest = &q[end + 1..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            value = rest[..end].to_string();
            if value.is_empty() || !value.chars().all(is_tchar) {
                return Err(format!("bad token {value:?}"));
            }
            rest = &rest[end..];
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("{name} twice"));
        }
        out.push((name.to_ascii_lowercase(), value));
        match rest.strip_prefix(';') {
            Some(r) => rest = r,
            None if rest.is_empty() => return Ok(out),
            None => return Err(format!("{rest:?} after a pair")),
        }
    }
}

/// The request target and Host fields (first line the target, each further line one Host field): the two places
/// that read Host agree (the one that validates it, RFC 9112 §3.2, and the one that routes by it), and what the
/// fast path calls a plain Host every full check accepts; a target
/// with a password never reaches a log line.
pub fn host(data: &[u8]) {
    let mut it = lines(data);
    let target = it.next().unwrap_or(b"/");
    let hosts: Vec<HeaderValue> = it.filter_map(|l| HeaderValue::from_bytes(l).ok()).take(4).collect();
    let uri: Uri = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
    // The fast path for a plain Host skips the full checks: it may only ever take what all of them take.
    for h in &hosts {
        if crate::http::is_plain_host(h.as_bytes()) {
            let text = h.to_str().expect("a plain host is ASCII");
            assert!(crate::http::parse_host(h.as_bytes()).is_some(), "{text:?}: parse_host refuses a plain host");
            assert!(crate::config::authority_port(text).is_ok(), "{text:?}: authority_port refuses a plain host");
            assert!(http::uri::Authority::try_from(text).is_ok(), "{text:?}: Authority refuses a plain host");
        }
    }
    for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
        let mut b = Request::builder().uri(uri.clone()).version(version);
        for h in &hosts {
            b = b.header(header::HOST, h.clone());
        }
        let Ok(mut req) = b.body(()) else { continue };
        let valid = host_field(&req).is_ok();
        let _ = transfer_codings(&req);
        // As service::serve does: the head checks, then the one decision of the host (route::settle_host), then
        // routing reads it.
        if !valid || crate::route::settle_host(&mut req).is_err() {
            continue;
        }
        let routed = crate::route::request_host(&req);
        if let Some(h) = uri.host() {
            assert_eq!(routed.as_deref(), Some(crate::config::host_key(h).as_str()), "the target's host wins");
        } else if let [one] = hosts.as_slice() {
            if one.is_empty() {
                assert_eq!(routed.as_deref(), Some(""));
            } else {
                let a = http::uri::Authority::try_from(one.as_bytes()).expect("host_field checked it");
                let want = crate::config::host_key(a.host());
                assert_eq!(routed.as_deref(), Some(want.as_str()), "routing and validation read Host {one:?} alike");
            }
        }
        if valid {
            assert!(hosts.len() <= 1);
            assert!(!hosts.is_empty() || version != Version::HTTP_11);
        }
    }
    let logged = loggable_target(&uri);
    assert!(logged.len() <= 1024 + 3);
    if let Some(authority) = uri.authority().map(|a| a.as_str())
        && let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        // Where the authority is in the target (a scheme never holds an `@`), the log has `user:***@`.
        let at = uri.to_string().find(authority).expect("the authority is in the target");
        let masked = format!("{user}:***@");
        if logged.len() <= 1024 {
            assert!(logged[at..].starts_with(&masked), "the password of {uri} is logged: {logged}");
        }
    }
}

/// An htpasswd file (`--users`): loaded, or refused naming a line that exists; a `{SHA}` entry made from the
/// input checks with its password and no other; `Proxy-Authorization: Basic` values read back as encoded.
pub fn htpasswd(data: &[u8]) {
    let line_count = data.split(|&b| b == b'\n').count();
    // The same bytes as an Apache groups file: members are words, an error names a line the input has.
    match Groups::parse(data) {
        Ok(groups) => {
            for line in lines(data) {
                let t = text(line);
                if let Some((name, _)) = t.split_once(':')
                    && !name.trim().is_empty()
                    && !name.trim_start().starts_with('#')
                {
                    assert!(groups.contains(name.trim()), "{name:?}");
                    assert!(groups.members(name.trim()).all(|m| !m.is_empty() && !m.contains(char::is_whitespace)));
                }
            }
        }
        Err(e) => assert!((1..=line_count).contains(&e.line), "line {} of {line_count}", e.line),
    }
    static GUARD: std::sync::OnceLock<std::sync::Arc<Guard>> = std::sync::OnceLock::new();
    let guard = GUARD.get_or_init(|| std::sync::Arc::new(Guard::new(AuthLimits { max_verifying: 1, max_queued: 1 })));
    match Users::parse_bytes(data, guard.clone()) {
        Ok(users) => {
            assert!(users.len() <= line_count);
            // bcrypt runs for its cost (up to 2^31 rounds): only files without bcrypt entries are checked here.
            if !data.windows(2).any(|w| w == b"$2") {
                for line in lines(data).take(8) {
                    if let Ok(v) = HeaderValue::from_bytes(line) {
                        let _ = users.check_basic_blocking(&v);
                    }
                    let t = text(line);
                    if let Some((u, p)) = t.split_once(':') {
                        let _ = users.check(u, p);
                    }
                }
            }
        }
        Err(e) => {
            assert!((1..=line_count).contains(&e.line), "line {} of {line_count}", e.line);
            assert!(!e.reason.is_empty());
            assert!(e.to_string().starts_with(&format!("line {}: ", e.line)));
        }
    }
    // A user and password from the input (split at the first NUL, else the middle).
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len() / 2);
    let user = text(&data[..split]).replace([':', '\n', '\r'], "");
    let pass = text(&data[(split + 1).min(data.len())..]).into_owned();
    if !user.trim().is_empty() && !user.trim_start().starts_with('#') {
        let digest = Sha1::digest(pass.as_bytes());
        let file = format!("{user}:{{SHA}}{}\n", base64_encode(&digest));
        let users = Users::parse(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert_eq!(users.len(), 1);
        assert!(users.check(&user, &pass), "{user:?} with its password");
        assert!(!users.check(&user, &format!("{pass}x")));
        let value = format!("Basic {}", base64_encode(format!("{user}:{pass}").as_bytes()));
        if let Ok(v) = HeaderValue::from_str(&value) {
            let fits = value.trim_ascii().len() <= MAX_CREDENTIALS_BYTES;
            assert_eq!(users.check_basic_blocking(&v), fits);
            assert_eq!(parse_basic(&v), fits.then(|| (user.clone(), pass.clone())));
        }
    }
    if let Ok(v) = HeaderValue::from_bytes(data)
        && let Some((u, p)) = parse_basic(&v)
    {
        assert!(!u.contains(':'));
        let again = HeaderValue::from_str(&format!("Basic {}", base64_encode(format!("{u}:{p}").as_bytes())));
        assert_eq!(again.ok().and_then(|v| parse_basic(&v)), Some((u, p)));
    }
}
