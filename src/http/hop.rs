//! Hop-by-hop fields (RFC 9110 §7.6.1): the one function that strips a message before it is forwarded.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Fields that only ever concern one connection, removed from every forwarded message. `Trailer` is not one
/// (RFC 9110 §6.6.2: it announces the trailer fields, which travel end to end): it passes, and an HTTP/1.1 hop
/// needs it, as hyper sends only the trailer fields a message announced.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    // Not standard, but sent by old clients to proxies; the book's dumb-relay hang in one header.
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    // What this hop's recipient accepts; its `trailers` member is remembered ([`Stripped::te_trailers`]).
    header::TE,
    // hopgate frames every message itself (chunked, Content-Length or close-delimited).
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // Only ever part of an h2c upgrade offer (RFC 7540 §3.2.1 makes it a connection option), which hopgate never
    // forwards: dropped even when a client forgets to name it in Connection.
    HeaderName::from_static("http2-settings"),
    // Credentials and challenges for this proxy hop; a parent proxy gets its own.
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// The lengths of the [`HOP_BY_HOP`] names, one bit each (2, 7, 10, 14, 16, 17, 18, 19).
const HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 14 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19;

/// What [`strip`] found out about a message before removing its hop-by-hop fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// The `Upgrade` value (its field lines joined) when `Connection` contained the `upgrade` token.
    pub upgrade: Option<http::HeaderValue>,
    /// `TE` had the `trailers` member: the sender accepts trailer fields (RFC 9110 §10.1.4).
    pub te_trailers: bool,
}

/// Removes every field named in `Connection`, then the fixed hop-by-hop list.
// Twice per relayed request, so it avoids work for what is absent: `close`, `keep-alive` and `upgrade` tokens
// need no name of their own (the fixed list covers them, and `close` names no field), and one pass over the
// names present replaces a hashed remove for each of the ten (bench/profile callgrind).
pub fn strip(headers: &mut HeaderMap) -> Stripped {
    let mut out = Stripped::default();
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("upgrade") {
                out.upgrade = upgrade_value(headers);
                continue;
            }
            // `TE` is on the fixed list, which reads its `trailers` member before removing it (an HTTP/1.1
            // sender names it in Connection: RFC 9110 §10.1.4).
            if token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("te")
            {
                continue;
            }
            // RFC 9110 §7.6.1: a sender never names a field meant for every recipient as a connection option,
            // so such a token is not one, and is ignored. Host is such a field (RFC 9112 §3.2: every HTTP/1.1
            // request carries it), and so is Via (RFC 9110 §7.6.3: each intermediary appends to the message's
            // path, which the next one reads for loops and protocol capabilities). The fields hopgate writes
            // itself (http::forward_request_head) are written after this in any case.
            if token.eq_ignore_ascii_case("host") || token.eq_ignore_ascii_case("via") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    let mut present = 0u16;
    for name in headers.keys() {
        // Most names have a length no hop-by-hop name has: one bit test instead of nine comparisons.
        let len = name.as_str().len();
        if len < 32
            && HOP_LENGTHS & (1 << len) != 0
            && let Some(i) = HOP_BY_HOP.iter().position(|h| h == name)
        {
            present |= 1 << i;
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            if *name == header::TE {
                out.te_trailers = has_trailers(headers);
            }
            headers.remove(name);
        }
    }
    out
}

/// Whether a `TE` field line lists `trailers` (a member without parameters: RFC 9110 §10.1.4).
fn has_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))))
}

/// Every `Upgrade` field line as one list (RFC 9110 §5.3).
fn upgrade_value(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let mut lines = headers.get_all(header::UPGRADE).iter();
    let first = lines.next()?;
    let mut joined = first.as_bytes().to_vec();
    for more in lines {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(more.as_bytes());
    }
    http::HeaderValue::from_bytes(&joined).ok()
}

/// What a message's `Transfer-Encoding` said, read before [`strip`] removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codings {
    /// The codings other than `chunked`, in order (`gzip`), which hyper does not decode; None when chunked
    /// was the only one.
    pub other: Option<http::HeaderValue>,
}

/// The transfer codings of a message (RFC 9112 §6.1), or None when it has no Transfer-Encoding field.
/// `identity` is no coding at all (RFC 2616 had it; RFC 7230 dropped it): it is left out, never forwarded.
pub fn transfer_codings(headers: &HeaderMap) -> Option<Codings> {
    let mut fields = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    fields.peek()?;
    let mut other: Vec<&str> = Vec::new();
    for value in fields {
        let text = value.to_str().unwrap_or("");
        other.extend(
            text.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked") && !c.eq_ignore_ascii_case("identity")),
        );
    }
    let other = match other.is_empty() {
        true => None,
        false => http::HeaderValue::from_str(&other.join(", ")).ok(),
    };
    Some(Codings { other })
}

/// Leaves a message with at most one `Content-Length` field holding one value: a list of equal values
/// (`5, 5`, or the field more than once, which RFC 9110 §8.6 lets a recipient take as one) becomes that value;
/// values that disagree or are not a length are removed (hyper has refused such a message already when the
/// length frames its body; a HEAD, 204 or 304 response has no body for it to frame).
pub fn one_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else { return };
    let plain = |v: &http::HeaderValue| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit);
    let more = values.next().is_some();
    if !more && plain(first) {
        // Almost every message: one field, one value.
        return;
    }
    let mut length: Option<u64> = None;
    let mut valid = true;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or(",").split(',') {
            let part = part.trim();
            let n = match part.bytes().all(|b| b.is_ascii_digit()) {
                true => part.parse::<u64>().ok(),
                false => None,
            };
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(l)) if n == l => {}
                _ => valid = false,
            }
        }
    }
    match length.filter(|_| valid) {
        Some(n) => headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(n)),
        None => headers.remove(header::CONTENT_LENGTH),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_lengths_cover_the_list() {
        let lengths = HOP_BY_HOP.iter().fold(0u32, |bits, n| bits | 1 << n.as_str().len());
        assert_eq!(lengths, HOP_LENGTHS);
    }

    #[test]
    fn strips_named_and_fixed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive, X-Secret".parse().unwrap());
        h.append("connection", "close".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("trailer", "x-sum".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        let s = strip(&mut h);
        assert_eq!(s.upgrade, None);
        assert!(s.te_trailers);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-kept"));
        assert!(h.contains_key("trailer"), "Trailer travels end to end");
    }

    #[test]
    fn te_trailers_is_remembered() {
        for (te, want) in [("trailers", true), ("gzip, Trailers", true), ("deflate;q=0.5", false), ("trailersx", false)]
        {
            let mut h = HeaderMap::new();
            h.insert("te", te.parse().unwrap());
            h.insert("connection", "TE".parse().unwrap());
            assert_eq!(strip(&mut h).te_trailers, want, "{te}");
            assert!(h.is_empty());
        }
    }

    #[test]
    fn host_is_never_a_connection_option() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Host, x-a".parse().unwrap());
        h.insert("host", "example.com".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        strip(&mut h);
        assert_eq!(h["host"], "example.com");
        assert!(!h.contains_key("x-a"));
    }

    #[test]
    fn via_is_never_a_connection_option() {
        let mut h = HeaderMap::new();
        h.insert("connection", "VIA, x-a".parse().unwrap());
        h.insert("via", "1.0 fred".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        strip(&mut h);
        assert_eq!(h["via"], "1.0 fred");
        assert!(!h.contains_key("x-a"));
    }

    #[test]
    fn transfer_codings_other_than_chunked() {
        let mut h = HeaderMap::new();
        assert_eq!(transfer_codings(&h), None);
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        assert_eq!(transfer_codings(&h), Some(Codings { other: None }));
        h.insert("transfer-encoding", "gzip, Chunked".parse().unwrap());
        assert_eq!(transfer_codings(&h).unwrap().other.unwrap(), "gzip");
        h.append("transfer-encoding", "br".parse().unwrap());
        assert_eq!(transfer_codings(&h).unwrap().other.unwrap(), "gzip, br");
        h.insert("transfer-encoding", "identity".parse().unwrap());
        assert_eq!(transfer_codings(&h), Some(Codings { other: None }));
        h.insert("transfer-encoding", "gzip, Identity, chunked".parse().unwrap());
        assert_eq!(transfer_codings(&h).unwrap().other.unwrap(), "gzip");
    }

    #[test]
    fn content_length_lists_become_one_value() {
        for (fields, want) in [
            (&["5"][..], Some("5")),
            (&["5, 5"], Some("5")),
            (&["5,5", "5"], Some("5")),
            (&["5", "5"], Some("5")),
            (&["0"], Some("0")),
            (&["5, 6"], None),
            (&["5", "6"], None),
            (&["+5"], None),
            (&["5, "], None),
            (&["x"], None),
        ] {
            let mut h = HeaderMap::new();
            for f in fields {
                h.append(header::CONTENT_LENGTH, f.parse().unwrap());
            }
            one_content_length(&mut h);
            let got: Vec<&str> = h.get_all(header::CONTENT_LENGTH).iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{fields:?}");
        }
        let mut h = HeaderMap::new();
        one_content_length(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn remembers_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert_eq!(strip(&mut h).upgrade.unwrap(), "websocket");
        assert!(h.is_empty());
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "foo".parse().unwrap());
        h.append("upgrade", "websocket".parse().unwrap());
        h.insert("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA".parse().unwrap());
        assert_eq!(strip(&mut h).upgrade.unwrap(), "foo, websocket");
        assert!(h.is_empty(), "{h:?}");
    }
}
