//! A listener's rooms and the choice between them: [`Table`] is built once from a listener's config (every room
//! constructed by its own constructor), and [`Table::pick`] is the only place that picks a room for a request.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Version};

use crate::backend::connect::Tunnels;
use crate::backend::files::Files;
use crate::backend::ftp::Ftp;
use crate::backend::intercept::Intercept;
use crate::backend::relay::{self, Forward};
use crate::backend::{Hop, app};
use crate::config::{self, Prefix, Target, host_key};
use crate::error::{Error, Kind, StartupError};
use crate::http::auth;
use crate::http::htpasswd::Users;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::Policy;
use crate::upstream::{Outbound, TargetPolicy};

/// Everything one listener serves.
pub struct Table {
    /// Present: the listener is a forward proxy for absolute-form requests and CONNECT.
    pub proxy: Option<ProxyRooms>,
    /// Origin-form requests are matched against these, most specific first.
    pub routes: Vec<Mount>,
    /// Some route names a host: only then is a request's host read (and lowercased) to route it.
    by_host: bool,
}

/// The forward proxy's rooms. They share one dialer (the target policy) and the parent proxy.
pub struct ProxyRooms {
    /// With a users file, proxy authentication is required.
    pub users: Option<Users>,
    pub relay: Forward,
    pub tunnels: Tunnels,
    /// Absolute-form `ftp://` targets (the HTTP/FTP gateway), dialled with the same policy.
    pub ftp: Ftp,
    /// What the access log calls it: `proxy`.
    pub name: Arc<str>,
    /// What it counts (requests by status, durations, upstream errors and connections).
    pub metrics: Arc<RouteMetrics>,
    /// Which targets its requests may reach, and how fast (judged in server::service after authentication).
    pub policy: Policy,
    /// Present on an intercepting listener (`mode`): every connection goes to its original destination.
    pub intercept: Option<Intercept>,
}

/// A gateway route, built: which requests it takes (host and prefix), and the room mounted there.
pub struct Mount {
    /// Exact host name (no port, lowercase) to match; None matches every host.
    host: Option<String>,
    /// The path prefix requests must be under.
    path: Prefix,
    pub room: Room,
    /// What the access log calls it: the route's `name`, else its target.
    pub name: Arc<str>,
    /// What it counts (requests by status, durations, upstream errors and connections).
    pub metrics: Arc<RouteMetrics>,
}

/// A gateway route's room, ready to serve.
pub enum Room {
    /// `http://` and `https://`: the relay.
    Relay(relay::Reverse),
    /// `cgi:`, `fastcgi://`, `fastcgi+unix:` and `scgi://`: the resource gateways.
    App(app::Gateway),
    /// `ftp://`: the HTTP/FTP gateway.
    Ftp(Ftp),
    /// `file:DIR`: the static-file room.
    Files(Files),
}

/// Where a request goes.
pub enum Picked<'a> {
    /// Absolute-form `http://` or `https://` through the forward proxy (the relay; TLS origination for https).
    Forward(&'a ProxyRooms),
    /// A CONNECT tunnel through the forward proxy.
    Connect(&'a ProxyRooms),
    /// Absolute-form `ftp://` through the forward proxy (the HTTP/FTP gateway).
    Ftp(&'a ProxyRooms),
    /// Origin-form matched a gateway route (a `[[listener.route]]`).
    Route(&'a Mount),
    /// A request on an intercepting listener: to the connection's original destination.
    Intercept(&'a ProxyRooms),
}

impl Table {
    /// Some route may answer from the static room's directory notes (a `file:` room, or a resource gateway with
    /// a root): the listener's plain connections have their reads stamped (`crate::arrival`), so that requests
    /// that arrived before a look at a directory share it.
    pub fn notes_files(&self) -> bool {
        self.routes.iter().any(|m| matches!(m.room, Room::Files(_) | Room::App(_)))
    }

    /// Builds every room of a listener; nothing connects here. Fails naming what can't be used (a users file,
    /// a CA bundle, a CGI directory...).
    pub fn build(
        cfg: &config::Listener,
        hop: &Hop,
        out: &Outbound,
        auth: &Arc<auth::Guard>,
        metrics: &Arc<Metrics>,
        listener: &str,
    ) -> Result<Table, StartupError> {
        // Each route's label set is looked up here, once: its rooms count through the handles they are built with.
        let proxy = cfg
            .proxy
            .as_ref()
            .map(|p| {
                let name =
                    if cfg.intercept.is_some() { config::INTERCEPT_ROUTE_NAME } else { config::PROXY_ROUTE_NAME };
                let counted = metrics.route(listener, name);
                ProxyRooms::build(p, cfg, hop, out, auth, counted).map_err(|e| e.or_at(cfg.at.as_ref()))
            })
            .transpose()?;
        let routes = cfg
            .routes
            .iter()
            .map(|r| Mount::build(r, cfg, out, metrics.route(listener, &r.name())).map_err(|e| e.or_at(r.at.as_ref())))
            .collect::<Result<Vec<Mount>, _>>()?;
        let by_host = routes.iter().any(|r| r.host.is_some());
        Ok(Table { proxy, routes, by_host })
    }

    /// Picks the room for `req`. Absolute-form and CONNECT go to the forward proxy (when this listener is one);
    /// origin-form is matched against the routes by Host and path prefix, most specific first.
    pub fn pick<'a, B>(&'a self, req: &Request<B>, hop: &Hop) -> Result<Picked<'a>, Error> {
        if let Some(proxy) = self.proxy.as_ref().filter(|p| p.intercept.is_some()) {
            // Intercepted clients think they talk to the origin; whatever their target says, the connection's
            // original destination is where requests go. A CONNECT is only ever sent to a configured proxy.
            if req.method() == Method::CONNECT {
                return Err(Error::client(
                    Kind::MethodNotAllowed,
                    "CONNECT is not served on an intercepting listener: its connections go to their original destination",
                )
                .with_field(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE")));
            }
            return Ok(Picked::Intercept(proxy));
        }
        if req.method() == Method::CONNECT {
            return match &self.proxy {
                Some(proxy) => Ok(Picked::Connect(proxy)),
                None => {
                    Err(Error::client(Kind::MethodNotAllowed, "CONNECT is only served by a forward proxy listener"))
                }
            };
        }
        // An HTTP/2 request always carries a scheme; only HTTP/1 absolute-form means "proxy this".
        let absolute = req.uri().scheme().is_some() && req.version() != http::Version::HTTP_2;
        if absolute && let Some(proxy) = &self.proxy {
            return proxied(req, proxy);
        }
        check_host_port(req)?;
        let host = if self.by_host { request_host(req) } else { None };
        let path = req.uri().path();
        if let Some(r) = self.routes.iter().find(|r| r.matches(host.as_deref(), path)) {
            return Ok(Picked::Route(r));
        }
        if let Some(proxy) = &self.proxy {
            // RFC 9110 §9.3.7: `OPTIONS *` asks about the server itself, here the proxy: it answers (relay::forward).
            if req.method() == Method::OPTIONS && path == "*" {
                return Ok(Picked::Forward(proxy));
            }
            // HTTP/2 has no absolute form: every request names its target by `:scheme` and `:authority`
            // (RFC 9113 §8.3.1), as a browser sends `http://` URLs to an HTTPS proxy. On a forward proxy, one that
            // no gateway route takes is for the proxy, as the same request in absolute form over HTTP/1.1 is.
            if req.version() == Version::HTTP_2 && req.uri().scheme().is_some() {
                return proxied(req, proxy);
            }
            return Err(Error::bad_request(format!(
                "this is a forward proxy: send requests in absolute form, for example curl -x {} http://example.com/",
                hop.public_addr()
            )));
        }
        Err(Error::client(Kind::NotFound, format!("no route for {path}")))
    }
}

/// The forward proxy's room for a request naming its target's scheme: `http://`/`https://` the relay (https://
/// sent in plain HTTP: TLS origination, the HTTP/HTTPS gateway), `ftp://` the HTTP/FTP gateway.
fn proxied<'a, B>(req: &Request<B>, proxy: &'a ProxyRooms) -> Result<Picked<'a>, Error> {
    match req.uri().scheme_str() {
        Some("http") | Some("https") => Ok(Picked::Forward(proxy)),
        Some("ftp") => Ok(Picked::Ftp(proxy)),
        Some(other) => {
            Err(Error::client(Kind::BadRequest, format!("the forward proxy does not serve {other}:// targets")))
        }
        None => Err(Error::bad_request("request target has no scheme")),
    }
}

impl ProxyRooms {
    fn build(
        p: &config::Proxy,
        listener: &config::Listener,
        hop: &Hop,
        out: &Outbound,
        auth: &Arc<auth::Guard>,
        metrics: Arc<RouteMetrics>,
    ) -> Result<ProxyRooms, StartupError> {
        let out = &out.for_route(metrics.clone());
        // Client-chosen targets: the target policy applies to every room of the proxy.
        let dialer = out.dialer(Some(TargetPolicy::new(p.allow_targets.clone())));
        // The parent's CONNECTs carry this listener's Via hop, so a chain of parents can't loop.
        let parent = p.parent.as_ref().map(|parent| out.parent(parent, &hop.via_name));
        let users = match &p.users {
            Some(path) => {
                Some(Users::load_with(path, auth.clone()).map_err(|e| StartupError::new(format!("users file {e}")))?)
            }
            None => None,
        };
        let relay = Forward::new(p.ca.as_deref(), dialer.clone(), parent.clone(), listener.upgrades.clone(), out)?;
        let tunnels = Tunnels::new(p, dialer.clone(), parent);
        let intercept = listener
            .intercept
            .as_ref()
            .map(|i| Intercept::new(i, dialer.clone(), listener.upgrades.clone(), &out.timeouts));
        let ftp = Ftp::forward(dialer, p.parent.as_ref().map(|p| p.authority.to_string()));
        let policy = Policy::new(p)?;
        let name = Arc::from(metrics.route.as_str());
        Ok(ProxyRooms { users, relay, tunnels, ftp, name, policy, intercept, metrics })
    }
}

impl Mount {
    fn build(
        r: &config::Route,
        listener: &config::Listener,
        out: &Outbound,
        metrics: Arc<RouteMetrics>,
    ) -> Result<Mount, StartupError> {
        let out = &out.for_route(metrics.clone());
        let room = match (&r.to, &r.group) {
            (Target::Http(t), Some(g)) => Room::Relay(relay::Reverse::group(t, g, &r.path, &listener.upgrades, out)?),
            (Target::FastCgi(_) | Target::Scgi(_), Some(g)) => Room::App(app::Gateway::group(&r.to, g, &r.path, out)?),
            (Target::Http(t), _) => Room::Relay(relay::Reverse::new(t, &r.path, &listener.upgrades, out)?),
            (Target::Cgi(t), _) => Room::App(app::Gateway::cgi(t, &r.path, out)?),
            (Target::FastCgi(t), _) => Room::App(app::Gateway::fastcgi(t, &r.path, out)?),
            (Target::Scgi(t), _) => Room::App(app::Gateway::scgi(t, &r.path, out)),
            (Target::Ftp(t), _) => Room::Ftp(Ftp::gateway(t, &r.path, out)?),
            (Target::File(t), _) => Room::Files(Files::new(t, &r.path)?),
        };
        Ok(Mount { host: r.host.clone(), path: r.path.clone(), room, name: Arc::from(r.name()), metrics })
    }

    /// Host equal (when the route names one) and path under the prefix on a segment boundary.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host
            && host != Some(want.as_str())
        {
            return false;
        }
        self.path.matches(path)
    }
}

/// RFC 9112 §3.2: a request whose Host (or HTTP/2 `:authority`) is invalid gets 400; a port that is no port
/// (`:99999`, `:80a`) is one, found by the same check as in absolute-form targets (config::authority_port).
fn check_host_port<B>(req: &Request<B>) -> Result<(), Error> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => match req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(h) => h,
            None => return Ok(()),
        },
    };
    if crate::http::is_plain_host(authority.as_bytes()) {
        return Ok(());
    }
    config::authority_port(authority).map(|_| ()).map_err(|e| Error::bad_request(format!("{e} in Host")))
}

/// Decides the authority a request is for, once, before it is routed, and makes its Host field say it: routing
/// ([`request_host`]) and every backend (the relay's forwarded Host and Forwarded `host=`, CGI's HTTP_HOST and
/// SERVER_NAME) read that field, so they can't disagree.
/// - HTTP/1 absolute form: the target's authority (without userinfo) wins and replaces Host (RFC 9112 §3.2.2).
/// - HTTP/2: `:authority` is the authority; a `host` field naming another is malformed: 400 (RFC 9113 §8.3.1).
///   The field is then set to `:authority`, which an HTTP/1.1 upstream needs as Host.
/// - Origin form: the Host field as sent (service::admit has checked it).
///
/// CONNECT's authority-form target is the tunnel's, not a host to route by: left alone.
pub fn settle_host<B>(req: &mut Request<B>) -> Result<(), Error> {
    if req.method() == Method::CONNECT {
        return Ok(());
    }
    let Some(authority) = req.uri().authority() else { return Ok(()) };
    if authority.host().is_empty() {
        return Err(Error::bad_request("the request target has an empty host"));
    }
    // userinfo never becomes a Host (`http://user:pass@host/`).
    let addressed = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, host_port)| host_port);
    // The target's authority becomes the Host field: it passes what a Host field must (service::host_field). A
    // plain name and port passes both checks (on every forward-proxy request).
    if !crate::http::is_plain_host(addressed.as_bytes()) {
        if let Err(e) = crate::config::authority_port(addressed) {
            return Err(Error::bad_request(format!("invalid request target: {e}")));
        }
        if crate::http::parse_host(addressed.as_bytes()).is_none() {
            return Err(Error::bad_request(format!("invalid host in request target {addressed:?}")));
        }
    }
    if req.version() == Version::HTTP_2
        && let Some(field) = req.headers().get(header::HOST)
    {
        let default_port = if req.uri().scheme_str() == Some("http") { 80 } else { 443 };
        if !same_authority(field.as_bytes(), addressed, default_port) {
            return Err(Error::bad_request(format!(
                "the host field {:?} names another authority than :authority {addressed:?}",
                String::from_utf8_lossy(field.as_bytes())
            )));
        }
    }
    // Most clients already send the authority as Host (curl -x, browsers): nothing to replace then.
    if req.headers().get(header::HOST).is_some_and(|h| h.as_bytes() == addressed.as_bytes()) {
        return Ok(());
    }
    let value = HeaderValue::from_str(addressed).map_err(|_| Error::bad_request("invalid host in request target"))?;
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// Whether a Host field and an authority name the same host and port (RFC 3986 §6.2.2: the host compares
/// case-insensitively, here also without its trailing dot as routes compare it; an absent port is the scheme's).
fn same_authority(field: &[u8], authority: &str, default_port: u16) -> bool {
    let (Ok(a), Ok(b)) = (Authority::try_from(field), Authority::try_from(authority)) else { return false };
    host_key(a.host()) == host_key(b.host())
        && a.port_u16().unwrap_or(default_port) == b.port_u16().unwrap_or(default_port)
}

/// The host a request is for, as routes compare it ([`host_key`]; no port): from its Host field, which
/// [`settle_host`] has made the absolute-form or HTTP/2 authority when there is one. A request that was not
/// settled (HTTP/1.0 absolute form without Host) falls back to its target.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let Some(field) = req.headers().get(header::HOST) else {
        return req.uri().host().map(host_key);
    };
    // Read by the parser that validated it (service::host_field).
    let (host, _) = crate::http::parse_host(field.as_bytes())?;
    Some(host_key(host))
}

impl Picked<'_> {
    /// The forward proxy this route goes through, if any: its users file guards it.
    pub fn proxy(&self) -> Option<&ProxyRooms> {
        match self {
            Picked::Forward(p) | Picked::Connect(p) | Picked::Ftp(p) | Picked::Intercept(p) => Some(p),
            Picked::Route(_) => None,
        }
    }

    /// What the route counts.
    pub fn metrics(&self) -> &Arc<RouteMetrics> {
        match self {
            Picked::Forward(p) | Picked::Connect(p) | Picked::Ftp(p) | Picked::Intercept(p) => &p.metrics,
            Picked::Route(r) => &r.metrics,
        }
    }

    /// The route's name, for the access log.
    pub fn name(&self) -> &Arc<str> {
        match self {
            Picked::Forward(p) | Picked::Connect(p) | Picked::Ftp(p) | Picked::Intercept(p) => &p.name,
            Picked::Route(r) => &r.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, method: Method, uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().version(version).method(method).uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    fn settled(r: &mut Request<()>) -> Result<Option<String>, String> {
        settle_host(r).map_err(|e| e.detail().to_string())?;
        Ok(r.headers().get(header::HOST).map(|h| h.to_str().unwrap().to_string()))
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        let mut r = req(Version::HTTP_11, Method::GET, "http://a.example/x", Some("b.example"));
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("a.example"));
        assert_eq!(request_host(&r).as_deref(), Some("a.example"));
        let mut r = req(Version::HTTP_11, Method::GET, "http://u:p@A.Example.:81/x", Some("b.example"));
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("A.Example.:81"), "userinfo never becomes Host");
        assert_eq!(request_host(&r).as_deref(), Some("a.example"));
        let mut r = req(Version::HTTP_10, Method::GET, "http://a.example/x", None);
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("a.example"));
        // Origin form and CONNECT keep what they have.
        let mut r = req(Version::HTTP_11, Method::GET, "/x", Some("B.example."));
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("B.example."));
        assert_eq!(request_host(&r).as_deref(), Some("b.example"));
        let mut r = req(Version::HTTP_11, Method::CONNECT, "a.example:443", Some("b.example"));
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("b.example"));
    }

    #[test]
    fn an_http2_host_must_name_the_authority() {
        for same in ["a.example", "A.EXAMPLE.", "a.example:443"] {
            let mut r = req(Version::HTTP_2, Method::GET, "https://a.example/x", Some(same));
            assert_eq!(settled(&mut r).unwrap().as_deref(), Some("a.example"), "{same}");
        }
        let mut r = req(Version::HTTP_2, Method::GET, "http://a.example:80/x", Some("a.example"));
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("a.example:80"));
        for other in ["b.example", "a.example:8443", "a.example..", "", "a.example:80"] {
            let mut r = req(Version::HTTP_2, Method::GET, "https://a.example/x", Some(other));
            let e = settled(&mut r).unwrap_err();
            assert!(e.contains(":authority \"a.example\""), "{other}: {e}");
        }
        let mut r = req(Version::HTTP_2, Method::GET, "https://a.example:8443/x", None);
        assert_eq!(settled(&mut r).unwrap().as_deref(), Some("a.example:8443"), ":authority becomes Host");
    }

    #[test]
    fn a_plain_host_passes_every_host_check() {
        for h in ["example.com", "a", "127.0.0.1", "x-y.z:80", "h:1", "h:00080", "h:65535", "A.B:8080", "h.:1"] {
            assert!(crate::http::is_plain_host(h.as_bytes()), "{h}");
            assert!(crate::http::parse_host(h.as_bytes()).is_some(), "{h}");
            assert!(config::authority_port(h).is_ok(), "{h}");
            assert!(http::uri::Authority::try_from(h).is_ok(), "{h}");
        }
        for h in [
            "", ":80", "h:", "h:0", "h:00000", "h:65536", "h:123456", "h:8a", "[::1]", "u@h", "h_1", "h:80:80", "h/x",
            "h h",
        ] {
            assert!(!crate::http::is_plain_host(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn host_keys() {
        assert_eq!(host_key("A.Example."), "a.example");
        assert_eq!(host_key("a.example.."), "a.example.");
        assert_eq!(host_key("[::1]"), "::1");
        assert_eq!(host_key("."), "");
    }
}
