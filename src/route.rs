//! (listener, request) -> [`Route`]: the only place that picks a room.

use http::{Method, Request, header};

use crate::error::{Error, Kind};
use crate::server::listener::{ListenerState, ProxyState, RouteState};

/// Where a request goes.
pub enum Route<'a> {
    /// Absolute-form `http://` or `https://` through the forward proxy (the relay; TLS origination for https).
    Forward(&'a ProxyState),
    /// A CONNECT tunnel through the forward proxy.
    Connect(&'a ProxyState),
    /// Absolute-form `ftp://` through the forward proxy (the HTTP/FTP gateway).
    Ftp(&'a ProxyState),
    /// Origin-form matched a gateway route.
    Gateway(&'a RouteState),
}

/// Picks the room for `req`. Absolute-form and CONNECT go to the forward proxy (when this listener is one);
/// origin-form is matched against the routes by Host and path prefix, most specific first.
pub fn pick<'a, B>(req: &Request<B>, l: &'a ListenerState) -> Result<Route<'a>, Error> {
    if req.method() == Method::CONNECT {
        return match &l.proxy {
            Some(proxy) => Ok(Route::Connect(proxy)),
            None => Err(Error::client(Kind::MethodNotAllowed, "CONNECT is only served by a forward proxy listener")),
        };
    }
    // An HTTP/2 request always carries a scheme; only HTTP/1 absolute-form means "proxy this".
    let absolute = req.uri().scheme().is_some() && req.version() != http::Version::HTTP_2;
    if absolute && let Some(proxy) = &l.proxy {
        return match req.uri().scheme_str() {
            // https:// sent in plain HTTP: the relay with TLS origination (HTTP/HTTPS gateway).
            Some("http") | Some("https") => Ok(Route::Forward(proxy)),
            Some("ftp") => Ok(Route::Ftp(proxy)),
            Some(other) => {
                Err(Error::client(Kind::BadRequest, format!("the forward proxy does not serve {other}:// targets")))
            }
            None => Err(Error::bad_request("request target has no scheme")),
        };
    }
    let host = request_host(req);
    let path = req.uri().path();
    if let Some(r) = l.routes.iter().find(|r| r.matches(host.as_deref(), path)) {
        return Ok(Route::Gateway(r));
    }
    if let Some(proxy) = &l.proxy {
        // RFC 9110 §9.3.7: `OPTIONS *` asks about the server itself, here the proxy: it answers (relay::forward).
        if req.method() == Method::OPTIONS && path == "*" {
            return Ok(Route::Forward(proxy));
        }
        return Err(Error::bad_request(format!(
            "this is a forward proxy: send requests in absolute form, for example curl -x {} http://example.com/",
            l.public_addr()
        )));
    }
    Err(Error::client(Kind::NotFound, format!("no route for {path}")))
}

/// The host a request is for (no port, lowercase, an IPv6 address without brackets): from an absolute target,
/// else the Host field, read by the parser that validated it (`http::parse_host`).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(h) = req.uri().host() {
        return Some(h.to_ascii_lowercase());
    }
    let (host, _) = crate::http::parse_host(req.headers().get(header::HOST)?.as_bytes())?;
    Some(host.to_ascii_lowercase())
}

impl Route<'_> {
    /// The forward proxy this route goes through, if any: its users file guards it.
    pub fn proxy(&self) -> Option<&ProxyState> {
        match self {
            Route::Forward(p) | Route::Connect(p) | Route::Ftp(p) => Some(p),
            Route::Gateway(_) => None,
        }
    }
}

impl RouteState {
    /// Host equal (when the route names one) and path under the prefix on a segment boundary.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.cfg.host
            && host != Some(want.as_str())
        {
            return false;
        }
        let prefix = self.cfg.path.as_str();
        prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
    }
}
