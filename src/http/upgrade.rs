//! Upgrade (RFC 9110 §7.8): which of a client's offered protocols go on to the upstream, and whether a
//! `101 Switching Protocols` switched to one of them.
//!
//! An upgraded connection is a tunnel: hopgate sees none of what goes through it, so no route, path check or
//! forwarding field applies there. Only the protocols on a listener's or route's `upgrades` list (default
//! `["websocket"]`) are re-offered upstream; `h2c` (and any HTTP) can never be on it, because what follows such an
//! upgrade is more HTTP requests, which would reach the origin around hopgate.
//!
//! HTTP/2 has no Upgrade: a WebSocket is opened with an extended CONNECT (RFC 8441, `:protocol websocket`,
//! offered by SETTINGS_ENABLE_CONNECT_PROTOCOL on hopgate's HTTP/2 listeners). [`extended_connect`] turns one
//! into the HTTP/1.1 upgrade request it stands for (RFC 8441 §5), so that routing, the policy and the relay treat
//! both alike; the relay maps the origin's 101 back to the 200 the HTTP/2 client waits for ([`ExtendedConnect`]).

use std::fmt;

use base64::Engine as _;
use http::{HeaderValue, Method, Request, header};
use sha1::{Digest as _, Sha1};

use crate::error::{Error, Kind};

/// A protocol as `Upgrade` names it: `protocol-name ["/" protocol-version]`, both tokens. Compared
/// case-insensitively; kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    name: String,
    version: Option<String>,
}

impl Protocol {
    /// `name` or `name/version` where both are tokens (RFC 9110 §5.6.2); None for anything else.
    pub fn parse(s: &str) -> Option<Protocol> {
        let (name, version) = match s.split_once('/') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        if !is_token(name) || !version.is_none_or(is_token) {
            return None;
        }
        Some(Protocol { name: name.to_string(), version: version.map(str::to_string) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why this protocol can never be upgraded to through hopgate, if it can't.
    pub fn never_allowed(&self) -> Option<&'static str> {
        let name = self.name.to_ascii_lowercase();
        match name.as_str() {
            "h2c" => Some(
                "h2c can never be upgraded to: RFC 9113 removed it, and the HTTP/2 requests inside the upgraded \
                 connection would reach the origin around hopgate's routes, path checks and forwarding fields",
            ),
            "h2" => {
                Some("h2 can never be upgraded to: HTTP/2 over TLS is chosen by ALPN, never by Upgrade (RFC 9113 §3.2)")
            }
            "http" => Some(
                "HTTP can never be upgraded to: the requests inside the upgraded connection would reach the origin \
                 around hopgate's routes, path checks and forwarding fields",
            ),
            _ => None,
        }
    }

    /// An allow-list entry permits an offer of the same name; an entry with a version only that version.
    fn permits(&self, offer: &Protocol) -> bool {
        self.name.eq_ignore_ascii_case(&offer.name)
            && match (&self.version, &offer.version) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            }
    }

    /// A protocol a 101 names matches an offered one of the same name, with the same version unless one of them
    /// gave none.
    fn answers(&self, offered: &Protocol) -> bool {
        self.name.eq_ignore_ascii_case(&offered.name)
            && match (&self.version, &offered.version) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}/{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// tchar (RFC 9110 §5.6.2), at least one.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The elements of an `Upgrade` field value: empty list elements are skipped, invalid ones kept as None.
fn elements(value: &HeaderValue) -> impl Iterator<Item = (&str, Option<Protocol>)> {
    value.to_str().unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()).map(|e| (e, Protocol::parse(e)))
}

/// The protocols a listener or route lets clients upgrade to (config `upgrades`). Empty: none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed(Vec<Protocol>);

impl Default for Allowed {
    /// `["websocket"]`.
    fn default() -> Allowed {
        Allowed(vec![Protocol { name: "websocket".into(), version: None }])
    }
}

impl Allowed {
    /// The list as configured; [`Protocol::never_allowed`] is the loader's to check.
    pub fn new(list: Vec<Protocol>) -> Allowed {
        Allowed(list)
    }

    pub fn protocols(&self) -> &[Protocol] {
        &self.0
    }

    /// What of a client's `Upgrade` offer is re-offered upstream: the allowed protocols, in the client's order and
    /// spelling; None when none is allowed (the request then goes on as an ordinary one).
    pub fn filter(&self, offer: &HeaderValue) -> Option<HeaderValue> {
        let kept: Vec<&str> = elements(offer)
            .filter(|(_, p)| {
                p.as_ref().is_some_and(|p| p.never_allowed().is_none() && self.0.iter().any(|a| a.permits(p)))
            })
            .map(|(text, _)| text)
            .collect();
        if kept.is_empty() {
            return None;
        }
        HeaderValue::from_str(&kept.join(", ")).ok()
    }
}

/// Checks a 101's `Upgrade` field against what hopgate offered: every protocol it names must have been offered
/// (RFC 9110 §7.8: a server must not switch to a protocol the client did not indicate). Ok: the protocols
/// switched to, joined by commas without spaces (for the access log); Err: why not.
pub fn check_switch(offered: &HeaderValue, answer: Option<&HeaderValue>) -> Result<String, String> {
    let offered_text = String::from_utf8_lossy(offered.as_bytes());
    let Some(answer) = answer else {
        return Err(format!("switched protocols without naming one in Upgrade (hopgate offered {offered_text:?})"));
    };
    let offers: Vec<Protocol> = elements(offered).filter_map(|(_, p)| p).collect();
    let mut switched = Vec::new();
    for (text, p) in elements(answer) {
        if !p.is_some_and(|p| offers.iter().any(|o| p.answers(o))) {
            return Err(format!("switched to {text:?}, which hopgate did not offer (it offered {offered_text:?})"));
        }
        switched.push(text);
    }
    if switched.is_empty() {
        return Err(format!("switched protocols without naming one in Upgrade (hopgate offered {offered_text:?})"));
    }
    Ok(switched.join(","))
}

/// RFC 6455 §1.3: the GUID the server appends to `Sec-WebSocket-Key` to make `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Marks a request that arrived as an RFC 8441 extended CONNECT (an extension of the request): the client waits
/// for a 2xx, not a 101, and the key is the one hopgate sent upstream in its name.
#[derive(Debug, Clone)]
pub struct ExtendedConnect {
    key: HeaderValue,
}

impl ExtendedConnect {
    /// Checks a 101's `Sec-WebSocket-Accept` against the key hopgate sent (RFC 6455 §4.1: a client fails the
    /// connection on a wrong one, and hopgate is that client towards the origin).
    pub fn check_accept(&self, accept: Option<&HeaderValue>) -> Result<(), String> {
        let want = accept_for(self.key.as_bytes());
        match accept {
            Some(a) if a.as_bytes() == want.as_bytes() => Ok(()),
            Some(a) => Err(format!(
                "answered the WebSocket key with Sec-WebSocket-Accept {:?} (RFC 6455 wants {want:?})",
                String::from_utf8_lossy(a.as_bytes())
            )),
            None => Err("switched to websocket without Sec-WebSocket-Accept".into()),
        }
    }

    /// The 101's fields that mean nothing to the HTTP/2 client, which gets a 200 (RFC 8441 §5): the
    /// connection-specific `Upgrade`/`Connection` and `Sec-WebSocket-Accept`.
    pub fn strip_response(headers: &mut http::HeaderMap) {
        headers.remove(header::UPGRADE);
        headers.remove(header::CONNECTION);
        headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    }
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2).
pub fn accept_for(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 bytes, base64 (RFC 6455 §4.1). A nonce, not a secret: std's randomly keyed
/// hashers over the clock make it.
fn websocket_key() -> HeaderValue {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// RFC 8441 §5: an extended CONNECT with `:protocol websocket` is the HTTP/2 form of a `GET` with
/// `Upgrade: websocket`; this makes `req` that request (a fresh `Sec-WebSocket-Key`, the client's
/// `Sec-WebSocket-Version`, `-Protocol` and `-Extensions` kept) and marks it [`ExtendedConnect`]. An extended
/// CONNECT for another protocol is 501 naming it. Ok(false): not an extended CONNECT.
pub fn extended_connect<B>(req: &mut Request<B>) -> Result<bool, Error> {
    if req.method() != Method::CONNECT {
        return Ok(false);
    }
    let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else { return Ok(false) };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Err(Error::client(
            Kind::NotImplemented,
            format!("extended CONNECT for {:?} is not served: only websocket (RFC 8441)", protocol.as_str()),
        ));
    }
    let key = websocket_key();
    *req.method_mut() = Method::GET;
    let headers = req.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
    req.extensions_mut().insert(ExtendedConnect { key });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept() {
        // RFC 6455 §1.3's example.
        assert_eq!(accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let x = ExtendedConnect { key: HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==") };
        assert!(x.check_accept(Some(&HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))).is_ok());
        assert!(x.check_accept(Some(&HeaderValue::from_static("nope"))).is_err());
        assert!(x.check_accept(None).is_err());
        let (a, b) = (websocket_key(), websocket_key());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }

    fn v(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn list(items: &[&str]) -> Allowed {
        Allowed::new(items.iter().map(|i| Protocol::parse(i).unwrap()).collect())
    }

    #[test]
    fn tokens() {
        assert_eq!(Protocol::parse("websocket").unwrap().to_string(), "websocket");
        assert_eq!(Protocol::parse("foo/1.2").unwrap().to_string(), "foo/1.2");
        for bad in ["", "a b", "foo/", "/1", "a/b/c", "caf\u{e9}", "a,b", "x\"y"] {
            assert!(Protocol::parse(bad).is_none(), "{bad:?}");
        }
        for never in ["h2c", "H2C", "h2c/1", "h2", "HTTP/2.0", "http"] {
            assert!(Protocol::parse(never).unwrap().never_allowed().is_some(), "{never}");
        }
        assert!(Protocol::parse("websocket").unwrap().never_allowed().is_none());
    }

    #[test]
    fn filter_keeps_allowed_offers_in_order() {
        let ws = Allowed::default();
        assert_eq!(ws.filter(&v("websocket")).unwrap(), "websocket");
        assert_eq!(ws.filter(&v("WebSocket")).unwrap(), "WebSocket");
        assert_eq!(ws.filter(&v("foo, h2c,,  websocket ")).unwrap(), "websocket");
        assert_eq!(ws.filter(&v("websocket/13")).unwrap(), "websocket/13", "an unversioned entry allows any version");
        for refused in ["h2c", "foo", "HTTP/2.0", "", " , ", "web socket"] {
            assert_eq!(ws.filter(&v(refused)), None, "{refused:?}");
        }
        assert_eq!(Allowed::new(Vec::new()).filter(&v("websocket")), None);
        let l = list(&["foo/1", "bar"]);
        assert_eq!(l.filter(&v("foo/2, FOO/1, bar/9, baz")).unwrap(), "FOO/1, bar/9");
        assert_eq!(l.filter(&v("foo")), None, "a versioned entry needs that version");
        // Even a list that somehow held h2c never offers it.
        assert_eq!(list(&["h2c"]).filter(&v("h2c")), None);
    }

    #[test]
    fn a_101_must_name_an_offered_protocol() {
        assert_eq!(check_switch(&v("websocket"), Some(&v("WebSocket"))).unwrap(), "WebSocket");
        assert_eq!(check_switch(&v("foo/1, bar"), Some(&v("bar/2"))).unwrap(), "bar/2");
        assert_eq!(check_switch(&v("foo/1"), Some(&v("foo"))).unwrap(), "foo");
        assert_eq!(check_switch(&v("a, b"), Some(&v("a, b"))).unwrap(), "a,b");
        let e = check_switch(&v("websocket"), Some(&v("h2c"))).unwrap_err();
        assert!(e.contains("\"h2c\"") && e.contains("\"websocket\""), "{e}");
        assert!(check_switch(&v("foo/1"), Some(&v("foo/2"))).is_err());
        assert!(check_switch(&v("websocket"), Some(&v("websocket, h2c"))).is_err());
        assert!(check_switch(&v("websocket"), None).is_err());
        assert!(check_switch(&v("websocket"), Some(&v(" , "))).is_err());
    }
}
