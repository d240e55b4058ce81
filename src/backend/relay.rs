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

use std::error::Error as _;
use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::{Ctx, outside};
use crate::config::{self, HttpTarget, Prefix};
use crate::error::{Error, Kind, Side, StartupError};
use crate::http::upgrade::{self, Allowed};
use crate::http::{
    Body, ForwardedFor, MaxForwards, OwnFields, append_via, forward_request_head, forward_response_head, hop,
    is_sensitive, max_forwards, via_names,
};
use crate::upstream::tls::Origination;
use crate::upstream::{Dialer, HttpClient, Outbound, ParentProxy, SendError, gateway_client, http_client};

/// How long a request with `Expect: 100-continue` waits for the upstream's `100 Continue` before its body is
/// read anyway (and hyper sends the client a 100 itself): curl's own wait.
pub const EXPECT_CONTINUE_WAIT_MILLIS: u64 = 1000;

/// More informational (1xx) responses than this to one request make it a 502 and close the upstream connection:
/// an origin that sends them without end would otherwise keep hopgate reading for the whole response-head time.
/// Go's HTTP client allows 5; a 100 (Continue), 102 (Processing) or 103 (Early Hints) come once or a few times.
pub const MAX_INFORMATIONAL: u32 = 10;

/// A gateway route's upstream: `http(s)://authority[/base]`.
pub struct Gateway {
    client: HttpClient,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix on the upstream, without a trailing slash ("" for none).
    base: String,
    /// The route's path prefix on hopgate, replaced by `base`.
    prefix: Prefix,
    /// The protocols requests may upgrade to (the route's `upgrades`, else the listener's).
    upgrades: Allowed,
}

impl Gateway {
    /// The relay room of a `http://` or `https://` route under `prefix`: a pool of connections to its one
    /// upstream, dialled without target policy (the operator chose it) but with the loop check; `https://`
    /// verified against the system roots plus the route's `ca`. `upgrades`: the listener's list, for a route
    /// without its own.
    pub fn new(t: &HttpTarget, prefix: &Prefix, upgrades: &Allowed, out: &Outbound) -> Result<Gateway, StartupError> {
        let timeouts = out.timeouts;
        let origination = if t.tls { Some(Origination::new(t.ca.as_deref(), timeouts.connect)?) } else { None };
        let authority: Authority = t
            .authority
            .to_string()
            .parse()
            .map_err(|_| StartupError::new(format!("{}: invalid authority", t.authority)))?;
        let scheme = if t.tls { Scheme::HTTPS } else { Scheme::HTTP };
        let max_idle = config::DEFAULT_POOL_MAX_IDLE_PER_HOST;
        let client = gateway_client(out.dialer(None), origination, &scheme, &authority, timeouts.pool_idle, max_idle);
        let upgrades = t.upgrades.clone().unwrap_or_else(|| upgrades.clone());
        Ok(Gateway { client, scheme, authority, base: t.base.clone(), prefix: prefix.clone(), upgrades })
    }
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
        let tls = Origination::new(ca, t.connect)?;
        let client =
            http_client(dialer, parent.clone(), Some(tls), t.pool_idle, config::DEFAULT_POOL_MAX_IDLE_PER_HOST);
        Ok(Forward { client, parent, upgrades })
    }
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
    let resp = send(req, ctx, &proxy.client, own, &proxy.upgrades, None, parent_auth).await?;
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

/// Gateway: an origin-form request matched a route; map its path under the upstream base.
pub async fn gateway(mut req: Request<Incoming>, ctx: &Ctx<'_>, gw: &Gateway) -> Result<Response<Body>, Error> {
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
    let rest = gw.prefix.rest(path).ok_or_else(|| outside(&gw.prefix, path))?;
    let mut mapped = format!("{}{}", gw.base, rest);
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
        .scheme(gw.scheme.clone())
        .authority(gw.authority.clone())
        .path_and_query(mapped)
        .build()
        .map_err(|_| Error::bad_request("invalid request path"))?;
    // The client's Host is passed on: the origin sees the name the client used (an HTTP/1.0 client may send
    // none: then the upstream's own).
    let host = match &public_host {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(gw.authority.as_str()).map_err(|_| Error::bad_request("invalid host"))?,
    };
    let proto = if ctx.hop.tls { "https" } else { "http" };
    let own = OwnFields {
        host,
        version: req.version(),
        via_name: &ctx.hop.via_name,
        forwarded: Some(ForwardedFor { client: ctx.client, proto, host: public_host.as_ref() }),
    };
    // Built only for a response that has a Location field: most have none.
    let rewrite = || {
        public_host.as_ref().and_then(|h| h.to_str().ok()).map(|h| LocationRewrite {
            upstream: upstream_origins(&gw.scheme, &gw.authority),
            base: gw.base.clone(),
            public: format!("{proto}://{h}{}", gw.prefix.mount_point()),
        })
    };
    send(req, ctx, &gw.client, own, &gw.upgrades, Some(&rewrite), None).await
}

/// A `.` or `..` segment (RFC 3986 §3.3), also percent-encoded (`%2e%2e`, §2.3) or with a `;` parameter
/// (`..;`, which some origins strip): the origin would resolve it and the request could climb out of the
/// route's base and prefix, so a gateway refuses it instead of passing it on. Clients normalize such paths
/// before sending (RFC 3986 §5.2.4); only a hand-made request carries one.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or("").to_ascii_lowercase().replace("%2e", ".");
        name == "." || name == ".."
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
fn answer_here(req: &Request<Incoming>, via_name: &str) -> Response<Body> {
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

/// Strips, writes hopgate's own fields (`own`), sends with the response-head timeout, and prepares the response
/// for the client.
async fn send(
    mut req: Request<Incoming>,
    ctx: &Ctx<'_>,
    client: &HttpClient,
    own: OwnFields<'_>,
    upgrades: &Allowed,
    rewrite: Option<&(dyn Fn() -> Option<LocationRewrite> + Sync)>,
    parent_auth: Option<HeaderValue>,
) -> Result<Response<Body>, Error> {
    let target = req.uri().clone();
    let name = &ctx.hop.via_name;
    let version = req.version();
    let stripped = forward_request_head(req.headers_mut(), own);
    if let Some(auth) = parent_auth {
        // The parent proxy's own credentials, for its hop only.
        req.headers_mut().insert(header::PROXY_AUTHORIZATION, auth);
    }
    // A body of unknown length (the client sent it chunked, or as HTTP/2 DATA without a length) goes up chunked:
    // hyper's client sends a GET, HEAD or CONNECT that does not say so with no body at all (it assumes such a
    // method has none), and the body would be lost. A body with a length keeps its Content-Length.
    if !req.body().is_end_stream()
        && req.body().size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        req.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    // RFC 9110 §7.8: an upgrade is hop-by-hop, so hopgate re-offers it on its own hop (HTTP/1.1 only), and only
    // the protocols on the list: with none left the request goes on as an ordinary one (Upgrade, Connection and
    // what it named are gone already).
    let offer = match &stripped.upgrade {
        Some(offer) if req.version() == Version::HTTP_11 => upgrades.filter(offer),
        _ => None,
    };
    let client_upgrade = match &offer {
        Some(offer) => {
            req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            req.headers_mut().insert(header::UPGRADE, offer.clone());
            Some(hyper::upgrade::on(&mut req))
        }
        None => None,
    };
    // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is to be ignored; forwarded in an
    // HTTP/1.1 request it would mean something the client never asked.
    let expects_continue =
        req.headers().get(header::EXPECT).is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if version == Version::HTTP_10 {
        req.headers_mut().remove(header::EXPECT);
    }
    // The client's 100 (Continue) is the upstream's to give (RFC 9110 §15.2: a proxy forwards 1xx): the body
    // is held back, so hyper does not promise it, until the upstream sends its 100, or says nothing for a
    // moment (an HTTP/1.0 upstream never will). An upstream that answers 417 or 401 at once is answered as is,
    // and the client never sends its body.
    let (continue_tx, continue_gate) = match expects_continue && version == Version::HTTP_11 {
        true => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    // Every 1xx is counted; one too many ends the exchange (MAX_INFORMATIONAL).
    let informational = Arc::new(Informational::default());
    let counter = informational.clone();
    let on_continue = std::sync::Mutex::new(continue_tx);
    hyper::ext::on_informational(&mut req, move |res| {
        counter.seen();
        if res.status() == StatusCode::CONTINUE
            && let Some(tx) = on_continue.lock().ok().and_then(|mut t| t.take())
        {
            let _ = tx.send(());
        }
    });
    *req.version_mut() = Version::HTTP_11;
    let (parts, body) = req.into_parts();
    // The response-head timeout starts once the request body is sent: a long upload is not a slow origin. A
    // client that stops sending its body for the idle time is cut off; so is an upstream that stops taking it
    // for the response-head time.
    let (body, watch) = Body::from(body).watched(ctx.hop.timeouts.idle, "the request body from the client");
    let body = match continue_gate {
        Some(open) => body.gated(open, Duration::from_millis(EXPECT_CONTINUE_WAIT_MILLIS)),
        None => body,
    };
    let req = Request::from_parts(parts, body);

    let timeout = ctx.hop.timeouts.response_head;
    let head_timeout = || {
        Error::upstream(
            Kind::ResponseTimeout,
            format!("no response head from {} within {:?}", display_authority(&target), timeout),
        )
    };
    // Dropping the request on a flood of 1xx drops hyper's response receiver: hyper then closes the connection.
    let response = UntilFlood { inner: client.request(req), informational };
    tokio::pin!(response);
    let waited = match watch {
        None => tokio::time::timeout(timeout, response).await.map_err(|_| head_timeout()),
        Some(watch) => {
            let stalled = watch.stalled(timeout);
            tokio::select! {
                r = &mut response => Ok(r),
                _ = watch.ended => tokio::time::timeout(timeout, response).await.map_err(|_| head_timeout()),
                () = stalled => Err(Error::upstream(
                    Kind::ResponseTimeout,
                    format!("{} stopped reading the request body for {:?}", display_authority(&target), timeout),
                )),
            }
        }
    };
    let mut resp = match waited {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => return Err(client_error(e, &target)),
        Ok(Err(Flooded)) => {
            return Err(Error::upstream(
                Kind::UpstreamProtocol,
                format!(
                    "{} sent more than {MAX_INFORMATIONAL} informational (1xx) responses to one request",
                    display_authority(&target)
                ),
            ));
        }
        Err(e) => return Err(e),
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_upgrade), Some(offer)) = (client_upgrade, offer) else {
            return Err(Error::upstream(
                Kind::UpstreamProtocol,
                format!("{} switched protocols without being asked", display_authority(&target)),
            ));
        };
        // Returning here drops the response and with it the upstream connection: it is never piped.
        let proto = resp.headers().get(header::UPGRADE).cloned();
        let switched = upgrade::check_switch(&offer, proto.as_ref())
            .map_err(|why| Error::upstream(Kind::UpstreamProtocol, format!("{} {why}", display_authority(&target))))?;
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let idle = ctx.hop.timeouts.tunnel_idle;
        let (report, watch) = crate::tunnel::report(Some(switched));
        let client = ctx.client;
        ctx.tasks.spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((c, u)) => {
                    let c = hyper_util::rt::TokioIo::new(c);
                    let u = hyper_util::rt::TokioIo::new(u);
                    let outcome = report.pump(c, u, idle).await;
                    let (up, down) = (outcome.a_to_b, outcome.b_to_a);
                    tracing::debug!(%client, up, down, "upgraded connection ended: {:?}", outcome.ended);
                    report.outcome(&outcome);
                }
                Err(e) => {
                    tracing::debug!(%client, "upgrade failed: {e}");
                    report.not_established();
                }
            }
        });
        let (mut parts, _) = resp.into_parts();
        forward_response_head(&mut parts.headers, parts.version, name);
        if let Some(p) = proto {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, p);
        }
        parts.extensions.insert(watch);
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    let codings = hop::transfer_codings(&parts.headers);
    forward_response_head(&mut parts.headers, parts.version, name);
    if codings.is_none() {
        // hyper accepts a list of equal lengths (`Content-Length: 5, 5`, or the field twice) and checks it for a
        // response with a body; the client is sent the one value.
        hop::one_content_length(&mut parts.headers);
    }
    if let Some(codings) = codings {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an intermediary removes the latter
        // before forwarding: kept, it would frame the decoded body with a length it does not have.
        parts.headers.remove(header::CONTENT_LENGTH);
        // hyper decoded the chunks only. Codings under them (gzip...) stay named for an HTTP/1.1 client (hyper
        // adds chunked back); an HTTP/1.0 client can't be sent a transfer coding at all.
        if let Some(other) = codings.other
            && !body.is_end_stream()
        {
            if version != Version::HTTP_11 {
                return Err(Error::upstream(
                    Kind::UpstreamProtocol,
                    format!(
                        "{} answered with transfer coding {other:?}, which an HTTP/1.0 client can't be sent",
                        display_authority(&target)
                    ),
                ));
            }
            parts.headers.insert(header::TRANSFER_ENCODING, other);
        }
    }
    if parts.headers.contains_key(header::LOCATION)
        && let Some(rw) = rewrite.and_then(|make| make())
    {
        rewrite_location(&mut parts.headers, &rw);
    }
    parts.version = Version::HTTP_11;
    // An origin that stops sending mid-body for the response-head time is cut off (the client sees the
    // response end early, never a complete-looking one). The body returns its connection to the pool when it
    // ends; an empty one has done so already.
    let body = if http_body::Body::is_end_stream(&body) {
        Body::empty()
    } else {
        crate::http::watch(body, timeout, "the response body from the upstream").0
    };
    Ok(Response::from_parts(parts, body))
}

/// How many informational responses one request has had, shared by hyper's 1xx callback and the request
/// waiting for its response ([`UntilFlood`]), which the callback wakes when there are too many.
#[derive(Default)]
struct Informational {
    seen: AtomicU32,
    waiting: AtomicWaker,
}

impl Informational {
    fn seen(&self) {
        if self.seen.fetch_add(1, Ordering::AcqRel) == MAX_INFORMATIONAL {
            self.waiting.wake();
        }
    }

    fn flooded(&self) -> bool {
        self.seen.load(Ordering::Acquire) > MAX_INFORMATIONAL
    }
}

/// The upstream sent more than [`MAX_INFORMATIONAL`] 1xx responses.
struct Flooded;

pin_project_lite::pin_project! {
    /// A response future that ends early, with [`Flooded`], once its request has had too many 1xx responses.
    /// (Hand-made rather than a `select!`: it is on every relayed request, and a 1xx-free one costs a load.)
    struct UntilFlood<F> {
        #[pin]
        inner: F,
        informational: Arc<Informational>,
    }
}

impl<F: Future> Future for UntilFlood<F> {
    type Output = Result<F::Output, Flooded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if this.informational.flooded() {
            return Poll::Ready(Err(Flooded));
        }
        this.informational.waiting.register(cx.waker());
        // A flood counted between the first look and the registration has woken nobody.
        match this.informational.flooded() {
            true => Poll::Ready(Err(Flooded)),
            false => Poll::Pending,
        }
    }
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

fn display_authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}

/// Turns the pooled client's error into hopgate's: the connector's own error when it has one, else what
/// hyper saw on the connection.
fn client_error(e: SendError, target: &Uri) -> Error {
    let upstream = display_authority(target);
    let e = match e {
        SendError::Connect(ours) => return ours,
        SendError::Hyper(h) => h,
    };
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(ours) = s.downcast_ref::<Error>() {
            return Error::new(ours.kind(), ours.side(), ours.detail().to_string());
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                // Our side of the request failed: the client's body stream broke off or stalled.
                let why = h.source().map(|c| c.to_string()).unwrap_or_else(|| "it ended early".into());
                return Error::client(Kind::BadRequest, format!("the request body could not be forwarded: {why}"));
            }
            if h.is_parse() {
                return Error::upstream(Kind::UpstreamProtocol, format!("invalid response from {upstream}"))
                    .with_source(h.to_string());
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Error::upstream(
                    Kind::UpstreamClosedEarly,
                    format!("{upstream} closed the connection before a complete response"),
                );
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Error::upstream(
                Kind::UpstreamClosedEarly,
                format!("connection to {upstream} failed: {}", io.kind()),
            )
            .with_source(io.to_string());
        }
        src = s.source();
    }
    Error::new(Kind::UpstreamClosedEarly, Side::Upstream, format!("request to {upstream} failed")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        for p in ["/..", "/a/../b", "/./a", "/a/%2e%2E/b", "/.%2e/x", "/%2e", "/..;x/y", "/a/.;/b"] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in ["/", "/a/b", "/a..b/", "/.hidden", "/...", "/a/%2e%2e%2f", "/a.b"] {
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
