//! The relay: forwards an HTTP request to an origin over a pooled connection and streams the response back,
//! as a forward proxy (absolute-form `http://` and `https://` targets, RFC 9110 §7.6, RFC 9112 §3.2.2) and as a
//! gateway (`--to http(s)://HOST:PORT[/base]`, a reverse proxy). `https://` upstreams: upstream/tls.rs.
//!
//! The order of steps is the design: loop check -> Max-Forwards -> strip hop-by-hop, then Host, Via (and
//! Forwarded for gateways), in that order in one place (`http::forward_request_head`) -> send with the
//! response-head timeout -> strip the response, then Via (`http::forward_response_head`) -> stream.
//! Bodies are never buffered: hyper's `Incoming` goes straight through in both directions, with back-pressure.
//! Upgrades (http::upgrade): only the protocols on the `upgrades` list are re-offered upstream, and a 101 must
//! switch to one of them; the upgraded connections become a tunnel, logged when it ends.
//! Does not: cache, retry requests that reached the origin, or rewrite bodies.

mod exchange;
mod group;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::{Ctx, outside};
use crate::config::{self, HttpTarget, Prefix};
use crate::error::{Error, Kind, StartupError};
use crate::http::upgrade::Allowed;
use crate::http::{
    Body, ForwardedFor, MaxForwards, OwnFields, ViaName, append_via, is_sensitive, max_forwards, via_names,
};
use crate::proxy_protocol::Addresses;
use crate::upstream::tls::Origination;
use crate::upstream::{Dialer, HttpClient, Outbound, ParentProxy, ProxiedClient, gateway_client, http_client};
use exchange::{Leg, send};

/// How long a request with `Expect: 100-continue` waits for the upstream's `100 Continue` before its body is
/// read anyway (and hyper sends the client a 100 itself): curl's own wait.
pub const EXPECT_CONTINUE_WAIT_MILLIS: u64 = 1000;

/// More informational (1xx) responses than this to one request make it a 502 and close the upstream connection
/// (counted by the upstream connection: `upstream::MAX_INFORMATIONAL`).
pub use crate::upstream::MAX_INFORMATIONAL;

/// A gateway route's upstream: `http(s)://authority[/base]`, or a group of them (docs/upstreams.md).
pub struct Reverse {
    upstream: Upstream,
    scheme: Scheme,
    authority: Authority,
    /// `scheme://authority` of every member (and without the port when it is the scheme's default): a
    /// `Location` that names one of them is rewritten.
    origins: Vec<String>,
    /// Path prefix on the upstream, without a trailing slash ("" for none).
    base: String,
    /// The route's path prefix on hopgate, replaced by `base`.
    prefix: Prefix,
    /// The protocols requests may upgrade to (the route's `upgrades`, else the listener's).
    upgrades: Allowed,
}

impl Reverse {
    /// The relay room of a `http://` or `https://` route under `prefix`: a pool of connections to its one
    /// upstream, dialled without target policy (the operator chose it) but with the loop check; `https://`
    /// verified against the system roots plus the route's `ca`. `upgrades`: the listener's list, for a route
    /// without its own.
    pub fn new(t: &HttpTarget, prefix: &Prefix, upgrades: &Allowed, out: &Outbound) -> Result<Reverse, StartupError> {
        let (client, scheme, authority) = member_client(t, out)?;
        let upgrades = t.upgrades.clone().unwrap_or_else(|| upgrades.clone());
        Ok(Reverse {
            upstream: Upstream::One(client),
            origins: upstream_origins(&scheme, &authority),
            scheme,
            authority,
            base: t.base.clone(),
            prefix: prefix.clone(),
            upgrades,
        })
    }

    /// The relay room of a route whose `to` is a group of `http://` and `https://` members: a pool per member
    /// (each with the route's options), balanced and checked as the group says. `t`: the first member.
    pub fn group(
        t: &HttpTarget,
        g: &config::Group,
        prefix: &Prefix,
        upgrades: &Allowed,
        out: &Outbound,
    ) -> Result<Reverse, StartupError> {
        let mut r = Reverse::new(t, prefix, upgrades, out)?;
        let mut members = Vec::new();
        r.origins.clear();
        for m in &g.members {
            let config::Target::Http(mt) = &m.to else {
                return Err(StartupError::new(format!("{}: not an http:// or https:// member", m.to)));
            };
            let (client, scheme, authority) = member_client(mt, out)?;
            r.origins.extend(upstream_origins(&scheme, &authority));
            members.push((Arc::new(client), m.to.to_string(), m.weight));
        }
        let group = group::start(members, g, out);
        r.upstream = Upstream::Group(group);
        Ok(r)
    }
}

/// Where a gateway route's requests go: its one upstream, or a group. One per route, built once: the size of
/// the larger variant costs nothing, while boxing it would cost every request of a plain route a pointer hop.
#[allow(clippy::large_enum_variant)]
enum Upstream {
    One(HttpClient),
    Group(crate::upstream::group::Group<Arc<HttpClient>>),
}

/// The pooled client of one upstream of a route (its one upstream, or a member of its group), dialled without
/// target policy (the operator chose it) but with the loop check.
fn member_client(t: &HttpTarget, out: &Outbound) -> Result<(HttpClient, Scheme, Authority), StartupError> {
    let timeouts = out.timeouts;
    let origination =
        if t.tls { Some(Origination::new(t.ca.as_deref(), timeouts.connect, t.upstream_http)?) } else { None };
    let authority: Authority = t
        .authority
        .to_string()
        .parse()
        .map_err(|_| StartupError::new(format!("{}: invalid authority", t.authority)))?;
    let scheme = if t.tls { Scheme::HTTPS } else { Scheme::HTTP };
    let max_idle = config::DEFAULT_POOL_MAX_IDLE_PER_HOST;
    let client = gateway_client(
        out.dialer(None),
        origination,
        &scheme,
        &authority,
        t.send_proxy_protocol,
        timeouts.pool_idle,
        max_idle,
        (t.upstream_http, t.upstream_max_streams.unwrap_or(config::DEFAULT_UPSTREAM_MAX_STREAMS)),
    );
    Ok((client, scheme, authority))
}

/// The forward proxy's relay: absolute-form `http://` and `https://` targets over one pooled client.
pub struct Forward {
    client: HttpClient,
    parent: Option<Arc<ParentProxy>>,
    /// The protocols relayed requests may upgrade to (the listener's `upgrades`).
    upgrades: Allowed,
}

impl Forward {
    /// `dialer` applies the proxy's target policy; with `parent`, requests go through it; `https://` targets are
    /// verified against the system roots plus `ca`.
    pub fn new(
        ca: Option<&Path>,
        dialer: Dialer,
        parent: Option<Arc<ParentProxy>>,
        upgrades: Allowed,
        out: &Outbound,
    ) -> Result<Forward, StartupError> {
        let t = out.timeouts;
        let tls = Origination::new(ca, t.connect, config::UpstreamHttp::Http1)?;
        let client =
            http_client(dialer, parent.clone(), Some(tls), t.pool_idle, config::DEFAULT_POOL_MAX_IDLE_PER_HOST);
        Ok(Forward { client, parent, upgrades })
    }
}

impl Forward {
    /// The relay of one intercepted connection: its own client, which only ever reaches the connection's original
    /// destination (backend::intercept); no parent.
    pub(crate) fn fixed(client: HttpClient, upgrades: Allowed) -> Forward {
        Forward { client, parent: None, upgrades }
    }
}

/// An intercepted request (backend::intercept): relayed to `original`, the address its client connected to,
/// whatever its target or Host say, with its Host as sent (the origin serves that name) and every rule of the
/// forward proxy's relay: loop check, Max-Forwards, hop-by-hop fields, Via.
pub(crate) async fn intercepted(
    mut req: Request<Incoming>,
    ctx: &Ctx<'_>,
    relay: &Forward,
    original: std::net::SocketAddr,
) -> Result<Response<Body>, Error> {
    if req.uri() == "*" {
        // RFC 9112 §3.2.4: asterisk-form asks about the server itself, which is hopgate here.
        if req.method() == Method::OPTIONS {
            return Ok(answer_here(&req, &ctx.hop.via_name));
        }
        return Err(Error::bad_request("the asterisk-form request target is for OPTIONS only"));
    }
    if let Some(resp) = before_forwarding(&mut req, ctx)? {
        return Ok(resp);
    }
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = Authority::try_from(original.to_string())
        .map_err(|_| Error::local(Kind::Internal, format!("{original} is no authority")))?;
    *req.uri_mut() = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| Error::bad_request("invalid request target"))?;
    // The name the client asked for; an HTTP/1.0 request without Host gets the address it connected to.
    let host = match req.headers().get(header::HOST) {
        Some(h) if !h.is_empty() => h.clone(),
        _ => HeaderValue::from_str(authority.as_str()).map_err(|_| Error::bad_request("invalid host"))?,
    };
    let own = OwnFields { host, version: req.version(), via_name: &ctx.hop.via_name, forwarded: None };
    send(req, ctx, own, Leg::Forward { room: relay, parent_auth: None }).await
}

/// Forward proxy: `GET http://host/path HTTP/1.1` from a client configured to use hopgate; `https://` targets
/// go out over verified TLS (the proxy's `HttpClient` has TLS origination).
pub async fn forward(mut req: Request<Incoming>, ctx: &Ctx<'_>, proxy: &Forward) -> Result<Response<Body>, Error> {
    if req.method() == Method::OPTIONS && req.uri() == "*" {
        // `OPTIONS * HTTP/1.1` to the proxy itself (route::pick).
        return Ok(answer_here(&req, &ctx.hop.via_name));
    }
    let uri = req.uri().clone();
    let authority = uri.authority().ok_or_else(|| Error::bad_request("absolute request target without a host"))?;
    let host = authority.host();
    if host.is_empty() {
        return Err(Error::bad_request("absolute request target without a host"));
    }
    // A port that is no port (`:99999`, `:80a`) is refused rather than read as none (port 80).
    let port = config::authority_port(authority.as_str())
        .map_err(|e| Error::bad_request(format!("{e} in the request target")))?;
    // userinfo never travels: rebuild the authority from host and port alone.
    let authority: Authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
    .parse()
    .map_err(|_| Error::bad_request("invalid host in request target"))?;
    if let Some(resp) = before_forwarding(&mut req, ctx)? {
        return Ok(resp);
    }
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::builder()
        .scheme(uri.scheme().cloned().unwrap_or(Scheme::HTTP))
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| Error::bad_request("invalid request target"))?;
    // RFC 9112 §3.2.2: a proxy replaces Host with the target URI's authority.
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| Error::bad_request("invalid host"))?;
    let own = OwnFields { host, version: req.version(), via_name: &ctx.hop.via_name, forwarded: None };
    // https:// through a parent goes inside a CONNECT tunnel (upstream::Connector): the parent's credentials
    // belong to the CONNECT, never to a request the origin reads.
    let to_parent = uri.scheme() != Some(&Scheme::HTTPS);
    let parent_auth = proxy.parent.as_ref().filter(|_| to_parent).and_then(|p| p.auth.clone());
    let resp = send(req, ctx, own, Leg::Forward { room: proxy, parent_auth }).await?;
    if let Some(parent) = &proxy.parent
        && to_parent
        && resp.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
    {
        // The parent's challenge is for hopgate's hop, not the client's: passing it on would make the client
        // think hopgate wants credentials.
        return Err(Error::upstream(
            Kind::UpstreamRejected,
            format!("parent proxy {} refused the request: 407 Proxy Authentication Required", parent.authority),
        ));
    }
    Ok(resp)
}

/// Reverse: an origin-form request matched a route; map its path under the upstream base.
pub async fn reverse(mut req: Request<Incoming>, ctx: &Ctx<'_>, route: &Reverse) -> Result<Response<Body>, Error> {
    if let Some(resp) = before_forwarding(&mut req, ctx)? {
        return Ok(resp);
    }
    let path = req.uri().path();
    if path == "*" {
        // RFC 9112 §3.2.4: asterisk-form asks about the server itself, OPTIONS only. Mapped under the base it
        // would become `/base*`; hopgate is the server the client sees, so it answers.
        if req.method() == Method::OPTIONS {
            return Ok(answer_here(&req, &ctx.hop.via_name));
        }
        return Err(Error::bad_request(format!(
            "{} *: the asterisk-form request target is for OPTIONS only",
            req.method()
        )));
    }
    if has_dot_segment(path) {
        return Err(Error::bad_request("the request path has a . or .. segment"));
    }
    let rest = route.prefix.rest(path).ok_or_else(|| outside(&route.prefix, path))?;
    let mut mapped = format!("{}{}", route.base, rest);
    if mapped.is_empty() {
        mapped.push('/');
    }
    if let Some(q) = req.uri().query() {
        mapped.push('?');
        mapped.push_str(q);
    }
    // The authority the client addressed: route::settle_host made the Host field say it (the absolute-form
    // target's or HTTP/2's `:authority` when there is one), and the route was picked by it.
    let public_host = req.headers().get(header::HOST).cloned();
    *req.uri_mut() = Uri::builder()
        .scheme(route.scheme.clone())
        .authority(route.authority.clone())
        .path_and_query(mapped)
        .build()
        .map_err(|_| Error::bad_request("invalid request path"))?;
    // The client's Host is passed on: the origin sees the name the client used (an HTTP/1.0 client may send
    // none: then the upstream's own).
    let host = match &public_host {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(route.authority.as_str()).map_err(|_| Error::bad_request("invalid host"))?,
    };
    let proto = if ctx.hop.tls { "https" } else { "http" };
    let (sends_proxy_header, key) = match &route.upstream {
        Upstream::One(client) => (client.sends_proxy_header(), None),
        Upstream::Group(g) => {
            (g.members().iter().any(|m| m.client.sends_proxy_header()), g.key(req.headers(), ctx.client.ip()))
        }
    };
    if sends_proxy_header {
        // `send_proxy_protocol`: the upstream connection is this client's (upstream::pool keys by it).
        req.extensions_mut().insert(ProxiedClient(Addresses { src: ctx.client, dst: ctx.local }));
    }
    let own = OwnFields {
        host,
        version: req.version(),
        via_name: &ctx.hop.via_name,
        forwarded: Some(ForwardedFor { client: ctx.client, proto, host: public_host.as_ref() }),
    };
    send(req, ctx, own, Leg::Reverse { room: route, public: public_host.as_ref(), proto, key }).await
}

/// A `.` or `..` segment (RFC 3986 §3.3), also percent-encoded (`%2e%2e`, §2.3) or with a `;` parameter
/// (`..;`, which some origins strip): the origin would resolve it and the request could climb out of the
/// route's base and prefix, so a gateway refuses it instead of passing it on. Clients normalize such paths
/// before sending (RFC 3986 §5.2.4); only a hand-made request carries one.
// On every gateway request: a pass over the bytes, with no string made per segment (bench/profile callgrind).
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let name = segment.as_bytes().split(|&b| b == b';').next().unwrap_or_default();
        let mut dots = 0;
        let mut rest = name;
        while !rest.is_empty() {
            rest = match rest {
                [b'.', tail @ ..] => tail,
                [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
                _ => return false,
            };
            dots += 1;
            if dots > 2 {
                return false;
            }
        }
        dots > 0
    })
}

/// Loop check and Max-Forwards; `Some` when hopgate answers the request itself.
fn before_forwarding(req: &mut Request<Incoming>, ctx: &Ctx<'_>) -> Result<Option<Response<Body>>, Error> {
    let name = &ctx.hop.via_name;
    if via_names(req.headers(), name) {
        return Err(Error::client(Kind::Loop, format!("request already passed through {name} (Via): loop")));
    }
    let method = req.method().clone();
    if max_forwards(&method, req.headers_mut()) == MaxForwards::AnswerHere {
        return Ok(Some(answer_here(req, name)));
    }
    Ok(None)
}

/// Max-Forwards: 0 on TRACE or OPTIONS: this proxy is the final recipient (RFC 9110 §7.6.2).
fn answer_here(req: &Request<Incoming>, via_name: &ViaName) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    if req.method() == Method::TRACE {
        // RFC 9110 §9.3.8: reflect the request as received, minus fields likely to hold credentials.
        let mut echo = format!("TRACE {} {:?}\r\n", req.uri(), req.version());
        for (name, value) in req.headers() {
            if !is_sensitive(name) {
                let _ = write!(echo, "{}: {}\r\n", name, String::from_utf8_lossy(value.as_bytes()));
            }
        }
        echo.push_str("\r\n");
        *resp.body_mut() = Body::full(echo);
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("message/http"));
    } else {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("OPTIONS, GET, HEAD, POST, PUT, PATCH, DELETE, TRACE, CONNECT"),
        );
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    append_via(resp.headers_mut(), Version::HTTP_11, via_name);
    resp
}

impl Reverse {
    /// Turns a `Location` that points at the upstream into the address the client used: `proto://public`, the
    /// route's prefix, then the path below the upstream's base. Built only for a response that has the field.
    fn rewrite_location(&self, headers: &mut http::HeaderMap, public: &HeaderValue, proto: &str) {
        let Ok(public) = public.to_str() else { return };
        let rw = LocationRewrite {
            upstream: self.origins.clone(),
            base: self.base.clone(),
            public: format!("{proto}://{public}{}", self.prefix.mount_point()),
        };
        rewrite_location(headers, &rw);
    }
}

/// How `Location` values that point at the upstream are turned into the public address.
struct LocationRewrite {
    /// `scheme://host:port` of the upstream, and `scheme://host` too when the port is the scheme's default
    /// (what an origin on 443 writes).
    upstream: Vec<String>,
    /// The upstream base path ("" for none).
    base: String,
    public: String,
}

fn upstream_origins(scheme: &Scheme, authority: &Authority) -> Vec<String> {
    let mut out = vec![format!("{scheme}://{authority}")];
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    if authority.port_u16() == Some(default) {
        out.push(format!("{scheme}://{}", authority.host()));
    }
    out
}

fn rewrite_location(headers: &mut http::HeaderMap, rw: &LocationRewrite) {
    let Some(loc) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) else {
        return;
    };
    // RFC 3986 §6.2.2.1: scheme and host compare case-insensitively, the path exactly.
    let after_origin = rw.upstream.iter().find_map(|o| {
        let head = loc.get(..o.len())?;
        head.eq_ignore_ascii_case(o).then(|| &loc[o.len()..])
    });
    let Some(rest) = after_origin.and_then(|r| r.strip_prefix(rw.base.as_str())) else {
        return;
    };
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}{}", rw.public, if rest.is_empty() { "/" } else { rest })) {
        headers.insert(header::LOCATION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        for p in ["/..", "/a/../b", "/./a", "/a/%2e%2E/b", "/.%2e/x", "/%2e", "/..;x/y", "/a/.;/b", "/%2E%2e", ".."] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in
            ["/", "/a/b", "/a..b/", "/.hidden", "/...", "/a/%2e%2e%2f", "/a.b", "/%2e%2e%2e", "/%2", "/%2f", "/.%2"]
        {
            assert!(!has_dot_segment(p), "{p}");
        }
    }

    #[test]
    fn location_rewrite() {
        let rw = LocationRewrite {
            upstream: upstream_origins(&Scheme::HTTP, &"127.0.0.1:9000".parse().unwrap()),
            base: "/app".into(),
            public: "https://example.com/pub".into(),
        };
        let mut h = http::HeaderMap::new();
        h.insert(header::LOCATION, "http://127.0.0.1:9000/app/login?x=1".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "https://example.com/pub/login?x=1");
        h.insert(header::LOCATION, "http://127.0.0.1:9000/application".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:9000/application");
        h.insert(header::LOCATION, "/relative".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "/relative");
        h.insert(header::LOCATION, "HTTP://127.0.0.1:9000/app?x".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "https://example.com/pub?x");
        h.insert(header::LOCATION, "http://127.0.0.1:9000/App/x".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:9000/App/x", "the path is case-sensitive");
        // An origin on the scheme's default port writes no port.
        let rw = LocationRewrite {
            upstream: upstream_origins(&Scheme::HTTPS, &"origin.internal:443".parse().unwrap()),
            base: String::new(),
            public: "https://www.example.com".into(),
        };
        for loc in ["https://origin.internal/login", "https://Origin.Internal:443/login"] {
            h.insert(header::LOCATION, loc.parse().unwrap());
            rewrite_location(&mut h, &rw);
            assert_eq!(h[header::LOCATION], "https://www.example.com/login", "{loc}");
        }
        h.insert(header::LOCATION, "https://origin.internal:8443/login".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "https://origin.internal:8443/login");
        h.insert(header::LOCATION, "http://origin.internal/login".parse().unwrap());
        rewrite_location(&mut h, &rw);
        assert_eq!(h[header::LOCATION], "http://origin.internal/login", "another scheme is another origin");
    }
}
