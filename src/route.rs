//! A listener's rooms and the choice between them: [`Table`] is built once from a listener's config (every room
//! constructed by its own constructor), and [`Table::pick`] is the only place that picks a room for a request.

use http::{Method, Request, header};

use crate::backend::connect::Tunnels;
use crate::backend::ftp::FtpRoute;
use crate::backend::relay::{self, Forward};
use crate::backend::{Hop, app};
use crate::config::{self, Target};
use crate::error::{Error, Kind, StartupError};
use crate::http::htpasswd::Users;
use crate::upstream::{Outbound, TargetPolicy};

/// Everything one listener serves.
pub struct Table {
    /// Present: the listener is a forward proxy for absolute-form requests and CONNECT.
    pub proxy: Option<Proxy>,
    /// Origin-form requests are matched against these, most specific first.
    pub routes: Vec<Entry>,
}

/// The forward proxy's rooms. They share one dialer (the target policy) and the parent proxy.
pub struct Proxy {
    /// With a users file, proxy authentication is required.
    pub users: Option<Users>,
    pub relay: Forward,
    pub tunnels: Tunnels,
    /// Absolute-form `ftp://` targets (the HTTP/FTP gateway), dialled with the same policy.
    pub ftp: FtpRoute,
}

/// A gateway route: which requests it takes, and its room.
pub struct Entry {
    /// Exact host name (no port, lowercase) to match; None matches every host.
    host: Option<String>,
    /// Path prefix, always starting with `/`; matched on segment boundaries.
    path: String,
    pub room: Room,
}

/// A gateway route's room, ready to serve.
pub enum Room {
    /// `http://` and `https://`: the relay.
    Relay(relay::Gateway),
    /// `cgi:`, `fastcgi://`, `fastcgi+unix:` and `scgi://`: the resource gateways.
    App(app::Gateway),
    /// `ftp://`: the HTTP/FTP gateway.
    Ftp(FtpRoute),
}

/// Where a request goes.
pub enum Route<'a> {
    /// Absolute-form `http://` or `https://` through the forward proxy (the relay; TLS origination for https).
    Forward(&'a Proxy),
    /// A CONNECT tunnel through the forward proxy.
    Connect(&'a Proxy),
    /// Absolute-form `ftp://` through the forward proxy (the HTTP/FTP gateway).
    Ftp(&'a Proxy),
    /// Origin-form matched a gateway route.
    Gateway(&'a Entry),
}

impl Table {
    /// Builds every room of a listener; nothing connects here. Fails naming what can't be used (a users file,
    /// a CA bundle, a CGI directory...).
    pub fn build(cfg: &config::Listener, hop: &Hop, out: &Outbound) -> Result<Table, StartupError> {
        let proxy = cfg
            .proxy
            .as_ref()
            .map(|p| Proxy::build(p, hop, out).map_err(|e| e.or_at(cfg.at.as_ref())))
            .transpose()?;
        let routes = cfg
            .routes
            .iter()
            .map(|r| Entry::build(r, out).map_err(|e| e.or_at(r.at.as_ref())))
            .collect::<Result<_, _>>()?;
        Ok(Table { proxy, routes })
    }

    /// Picks the room for `req`. Absolute-form and CONNECT go to the forward proxy (when this listener is one);
    /// origin-form is matched against the routes by Host and path prefix, most specific first.
    pub fn pick<'a, B>(&'a self, req: &Request<B>, hop: &Hop) -> Result<Route<'a>, Error> {
        if req.method() == Method::CONNECT {
            return match &self.proxy {
                Some(proxy) => Ok(Route::Connect(proxy)),
                None => {
                    Err(Error::client(Kind::MethodNotAllowed, "CONNECT is only served by a forward proxy listener"))
                }
            };
        }
        // An HTTP/2 request always carries a scheme; only HTTP/1 absolute-form means "proxy this".
        let absolute = req.uri().scheme().is_some() && req.version() != http::Version::HTTP_2;
        if absolute && let Some(proxy) = &self.proxy {
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
        check_host_port(req)?;
        let host = request_host(req);
        let path = req.uri().path();
        if let Some(r) = self.routes.iter().find(|r| r.matches(host.as_deref(), path)) {
            return Ok(Route::Gateway(r));
        }
        if let Some(proxy) = &self.proxy {
            // RFC 9110 §9.3.7: `OPTIONS *` asks about the server itself, here the proxy: it answers (relay::forward).
            if req.method() == Method::OPTIONS && path == "*" {
                return Ok(Route::Forward(proxy));
            }
            return Err(Error::bad_request(format!(
                "this is a forward proxy: send requests in absolute form, for example curl -x {} http://example.com/",
                hop.public_addr()
            )));
        }
        Err(Error::client(Kind::NotFound, format!("no route for {path}")))
    }
}

impl Proxy {
    fn build(p: &config::Proxy, hop: &Hop, out: &Outbound) -> Result<Proxy, StartupError> {
        // Client-chosen targets: the target policy applies to every room of the proxy.
        let dialer = out.dialer(Some(TargetPolicy::new(p.allow_targets.clone())));
        // The parent's CONNECTs carry this listener's Via hop, so a chain of parents can't loop.
        let parent = p.parent.as_ref().map(|parent| out.parent(parent, &hop.via_name));
        let users = match &p.users {
            Some(path) => Some(Users::load(path).map_err(|e| StartupError::new(format!("users file {e}")))?),
            None => None,
        };
        let relay = Forward::new(p.ca.as_deref(), dialer.clone(), parent.clone(), out)?;
        let tunnels = Tunnels::new(p, dialer.clone(), parent);
        let ftp = FtpRoute::forward(dialer, p.parent.as_ref().map(|p| p.authority.to_string()), out);
        Ok(Proxy { users, relay, tunnels, ftp })
    }
}

impl Entry {
    fn build(r: &config::Route, out: &Outbound) -> Result<Entry, StartupError> {
        let room = match &r.to {
            Target::Http(t) => Room::Relay(relay::Gateway::new(t, &r.path, out)?),
            Target::Cgi(t) => Room::App(app::Gateway::cgi(t, &r.path)?),
            Target::FastCgi(t) => Room::App(app::Gateway::fastcgi(t, &r.path)?),
            Target::Scgi(t) => Room::App(app::Gateway::scgi(t, &r.path)),
            Target::Ftp(t) => Room::Ftp(FtpRoute::gateway(t, &r.path, out)?),
        };
        Ok(Entry { host: r.host.clone(), path: r.path.clone(), room })
    }

    /// Host equal (when the route names one) and path under the prefix on a segment boundary.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host
            && host != Some(want.as_str())
        {
            return false;
        }
        let prefix = self.path.as_str();
        prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
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
    config::authority_port(authority).map(|_| ()).map_err(|e| Error::bad_request(format!("{e} in Host")))
}

/// The host a request is for (no port, lowercase): from an absolute target, else the Host field.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(h) = req.uri().host() {
        return Some(h.to_ascii_lowercase());
    }
    let h = req.headers().get(header::HOST)?.to_str().ok()?;
    let host = match h.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => h.split(':').next().unwrap_or(h),
    };
    Some(host.to_ascii_lowercase())
}

impl Route<'_> {
    /// The forward proxy this route goes through, if any: its users file guards it.
    pub fn proxy(&self) -> Option<&Proxy> {
        match self {
            Route::Forward(p) | Route::Connect(p) | Route::Ftp(p) => Some(p),
            Route::Gateway(_) => None,
        }
    }
}
