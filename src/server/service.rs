//! The per-request path through hopgate: admit (limits, framing) -> route::pick -> backend -> one page for any
//! error -> one access-log line when the response is done.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, header};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::conn::ConnShared;
use super::listener::{ListenerState, Slot};
use super::log::{LoggedBody, Record, loggable_target};
use crate::backend::intercept::{self, Intercepted};
use crate::backend::{Ctx, app, connect, files, ftp, relay};
use crate::error::{Error, Kind, Side};
use crate::heap;
use crate::http::auth::{Busy, ClientKey};
use crate::http::htpasswd::Outcome;
use crate::http::{Body, pages};
use crate::limit::Throttle;
use crate::policy;
use crate::route::{self, Picked, Room};
use prometheus_client::metrics::counter::Counter;

/// Everything a request on one connection shares.
pub struct ConnCtx {
    /// The listener's current state; each request loads it once and keeps it to its end.
    pub slot: Slot,
    /// The client: the connection's peer, or the one its PROXY header names.
    pub client: SocketAddr,
    /// The address the client connected to (the listener's, or the destination a PROXY header names).
    pub local: SocketAddr,
    pub shared: Arc<ConnShared>,
    pub tasks: TaskTracker,
    /// The byte limits the connection is under, when its listener's policy has any: set per proxied request.
    pub throttle: Option<Arc<Throttle>>,
    /// On an intercepting listener: where the client was going, and its relay there.
    pub intercepted: Option<Arc<Intercepted>>,
}

/// [`handle`] as hyper's service calls it (a request never fails: an error is a page).
pub async fn call(req: Request<Incoming>, conn: Arc<ConnCtx>) -> Result<Response<LoggedBody>, Infallible> {
    Ok(handle(req, conn).await)
}

pub async fn handle(req: Request<Incoming>, conn: Arc<ConnCtx>) -> Response<LoggedBody> {
    conn.shared.request_started();
    let listener = conn.slot.load_full();
    let mut record = Record::new(conn.client, &req, &listener.log);
    let upstream = std::sync::OnceLock::new();
    let ctx =
        Ctx { client: conn.client, local: conn.local, hop: &listener.hop, tasks: &conn.tasks, upstream: &upstream };
    let mut resp = match serve(req, &ctx, &listener, &conn, &mut record).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.side() == Side::Upstream
                && let Some(m) = &record.metrics
            {
                m.upstream_error(e.kind().reason());
            }
            let (target, reason) = (loggable_target(&record.target), e.kind().reason());
            match e.side() {
                Side::Client => {
                    tracing::info!(client = %conn.client, %target, %reason, "{}: {}", e.status(), e.chain())
                }
                _ => tracing::warn!(client = %conn.client, %target, %reason, "{}: {}", e.status(), e.chain()),
            }
            pages::error(&e)
        }
    };
    // A request no route took counts as the listener's route `-` (only those pay for this clone).
    if record.metrics.is_none() {
        record.metrics = Some(listener.unrouted.clone());
    }
    if record.version == http::Version::HTTP_10 && http_body::Body::size_hint(resp.body()).exact().is_none() {
        // A body of unknown length reaches an HTTP/1.0 client close-delimited (RFC 9112 §6.3), so this response
        // ends the connection: answered as HTTP/1.0, hyper neither offers keep-alive nor keeps it.
        *resp.version_mut() = http::Version::HTTP_10;
    }
    record.status = resp.status();
    if listener.log.enabled() {
        record.upstream = upstream.get().copied();
    }
    // Only a 101 or a CONNECT's 2xx opens a tunnel: other responses skip the look-up.
    let opens_tunnel = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
        || (record.method == http::Method::CONNECT && resp.status().is_success());
    let tunnel = opens_tunnel.then(|| resp.extensions_mut().remove::<crate::tunnel::Watch>()).flatten();
    if !opens_tunnel && record.version != http::Version::HTTP_2 && conn.shared.draining() {
        // The drain has begun (a request that arrived on a connection accepted just before it): this is the
        // connection's last response, and the client is told so.
        resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    let log = listener.log.clone();
    resp.map(|b| LoggedBody::new(b, record, tunnel, log, conn.shared.clone()))
}

async fn serve(
    mut req: Request<Incoming>,
    ctx: &Ctx<'_>,
    listener: &ListenerState,
    conn: &ConnCtx,
    record: &mut Record,
) -> Result<Response<Body>, Error> {
    admit(&req, listener)?;
    // An HTTP/2 WebSocket (RFC 8441) is routed, judged and relayed as the HTTP/1.1 upgrade it stands for.
    let extended = crate::http::upgrade::extended_connect(&mut req)?;
    // The one decision of the host this request is for: routing and every backend read its Host from here on.
    route::settle_host(&mut req)?;
    let route = listener.table.pick(&req, ctx.hop)?;
    record.route = Some(route.name().clone());
    record.metrics = Some(route.metrics().clone());
    match route.proxy() {
        Some(proxy) => {
            record.user = authorize(&req, proxy, ctx.client, &listener.metrics.auth_failures).await?;
            // The proxy's policy, once the user is known: the target's name and port (403), the request rate
            // (429), and the byte rate the connection is held to from now on. Without lists, rules or rates only
            // a CONNECT has something to be judged by (its port).
            if !proxy.policy.only_ports() || matches!(route, Picked::Connect(_)) {
                let reach = Reach::of(&req, &route, conn.intercepted.as_deref())?;
                let grant = proxy.policy.admit(reach.target(), record.user.as_deref(), ctx.client.ip())?;
                if let Some(t) = &conn.throttle {
                    t.set(grant.bandwidth);
                }
            }
        }
        None => {
            if let Some(t) = &conn.throttle {
                t.set(Vec::new());
            }
        }
    }
    // A request's whole future is one allocation the size of its largest state (server::h1): the larger rooms are
    // boxed on their own, so that a relayed request's allocation is not sized for them; the relay stays inline.
    let resp = match route {
        Picked::Forward(proxy) => relay::forward(req, ctx, &proxy.relay).await,
        Picked::Connect(proxy) => heap::pinned!(connect::serve(req, ctx, &proxy.tunnels)).await,
        Picked::Ftp(proxy) => heap::pinned!(ftp::serve(req, ctx, &proxy.ftp)).await,
        Picked::Route(mount) => match &mount.room {
            Room::Relay(reverse) => relay::reverse(req, ctx, reverse).await,
            Room::App(gw) => heap::pinned!(app::serve(req, ctx, gw)).await,
            Room::Ftp(ftp) => heap::pinned!(ftp::serve(req, ctx, ftp)).await,
            Room::Files(files) => files::serve(req, files).await,
        },
        Picked::Intercept(proxy) => match (&proxy.intercept, conn.intercepted.as_deref()) {
            (Some(room), Some(c)) => heap::pinned!(intercept::serve(req, ctx, room, c)).await,
            _ => Err(Error::local(Kind::Internal, "an intercepted request without its original destination")),
        },
    }?;
    // A 2xx to an extended CONNECT opens a tunnel on the client's stream: only the relay's switch (which carries
    // the tunnel's Watch) may send one. Any other room answered the request as an ordinary GET.
    if extended && resp.status().is_success() && resp.extensions().get::<crate::tunnel::Watch>().is_none() {
        let name = route.name();
        return Err(Error::client(Kind::BadRequest, format!("{name} does not serve WebSockets (an RFC 8441 CONNECT)")));
    }
    Ok(resp)
}

/// What a proxied request wants to reach, as the policy judges it.
enum Reach {
    /// `OPTIONS *`: the proxy itself.
    Itself,
    Host {
        host: String,
        port: u16,
        connect: bool,
    },
    /// An intercepted request without Host.
    Unnamed,
}

impl Reach {
    /// An absolute-form target's host and port, a CONNECT's authority (read by the CONNECT room's own reader), an
    /// intercepted request's Host (route::settle_host made an absolute-form target's authority the Host).
    fn of<B>(req: &Request<B>, route: &Picked<'_>, intercepted: Option<&Intercepted>) -> Result<Reach, Error> {
        if let Picked::Connect(_) = route {
            let (host, port) = connect::target(req.uri())?;
            return Ok(Reach::Host { host, port, connect: true });
        }
        if let Picked::Intercept(_) = route {
            let port = intercepted.map_or(80, |c| c.original.port());
            return Ok(match route::request_host(req) {
                Some(host) if !host.is_empty() => Reach::Host { host, port, connect: false },
                _ => Reach::Unnamed,
            });
        }
        let uri = req.uri();
        let Some(host) = uri.host() else { return Ok(Reach::Itself) };
        let default = match uri.scheme_str() {
            Some("https") => 443,
            Some("ftp") => 21,
            _ => 80,
        };
        Ok(Reach::Host { host: host.to_owned(), port: uri.port_u16().unwrap_or(default), connect: false })
    }

    fn target(&self) -> policy::Target<'_> {
        match self {
            Reach::Itself => policy::Target::Itself,
            Reach::Host { host, port, connect } => policy::Target::Host { host, port: *port, connect: *connect },
            Reach::Unnamed => policy::Target::Unnamed,
        }
    }
}

/// Proxy authentication (RFC 9110 §11.7): with a users file, every proxied request and every CONNECT needs valid
/// `Proxy-Authorization: Basic` credentials, else 407 with a challenge. The field itself never travels upstream
/// (http::hop strips it). An address that keeps failing is slowed down (407 with Retry-After when another of its
/// attempts holds the next turn); a full verification queue is 503 with Retry-After, so that a client does not
/// take it for wrong credentials (docs/tunnels.md). Accepted: the user, for the access log.
async fn authorize(
    req: &Request<Incoming>,
    proxy: &route::ProxyRooms,
    client: SocketAddr,
    failures: &Counter,
) -> Result<Option<Box<str>>, Error> {
    let Some(users) = &proxy.users else { return Ok(None) };
    let challenge = || http::HeaderValue::from_static("Basic realm=\"hopgate\"");
    let Some(value) = req.headers().get(header::PROXY_AUTHORIZATION) else {
        return Err(Error::client(Kind::AuthRequired, "proxy authentication required").with_challenge(challenge()));
    };
    let who = ClientKey::of(client.ip());
    match users.check_basic(value, client.ip()).await {
        Outcome::Accepted => Ok(crate::http::basic::decode(value).map(|(user, _)| user.into_boxed_str())),
        Outcome::Rejected => {
            failures.inc();
            Err(Error::client(Kind::AuthRequired, "proxy credentials rejected").with_challenge(challenge()))
        }
        Outcome::Throttled { retry_after } => {
            failures.inc();
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            Err(Error::client(
                Kind::AuthRequired,
                format!("too many failed proxy logins from {who}: retry in {secs} s"),
            )
            .with_challenge(challenge())
            .with_field(header::RETRY_AFTER, http::HeaderValue::from(secs)))
        }
        Outcome::Busy(busy) => {
            // A full queue is the operator's business (warn); one address's full share is that client's (info).
            let e = match busy {
                Busy::Queue { max_queued } => Error::local(
                    Kind::Overloaded,
                    format!("too many proxy credential checks waiting (auth_max_queued = {max_queued}): retry shortly"),
                ),
                Busy::Client { max_per_client } => Error::client(
                    Kind::Overloaded,
                    format!(
                        "too many proxy credential checks from {who} at once (at most {max_per_client}): retry shortly"
                    ),
                ),
            };
            Err(e.with_field(header::RETRY_AFTER, http::HeaderValue::from_static("1")))
        }
    }
}

/// Limits and framing checks that apply to every request, before any routing.
fn admit(req: &Request<Incoming>, l: &ListenerState) -> Result<(), Error> {
    let limits = &l.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + req.uri().scheme_str().map_or(0, |s| s.len() + 3);
    if uri_len > limits.max_uri_bytes {
        return Err(Error::client(
            Kind::UriTooLong,
            format!("request target of {uri_len} bytes is over the limit of {}", limits.max_uri_bytes),
        ));
    }
    if req.headers().len() > limits.max_headers {
        return Err(Error::client(
            Kind::HeadTooLarge,
            format!("{} header fields are over the limit of {}", req.headers().len(), limits.max_headers),
        ));
    }
    let head_bytes: usize = uri_len
        + req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
        + req.method().as_str().len()
        + 12;
    if head_bytes > limits.max_head_bytes {
        return Err(Error::client(
            Kind::HeadTooLarge,
            format!("request head of {head_bytes} bytes is over the limit of {}", limits.max_head_bytes),
        ));
    }
    // RFC 9112 §6.3 lets a recipient refuse a repeated Content-Length, and hopgate does, so that no two parsers
    // along the path can disagree about the framing (the HTTP/1.1 parser keeps every one of them for this check).
    if req.headers().get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Err(Error::client(Kind::BadFraming, "duplicate Content-Length fields"));
    }
    transfer_codings(req)?;
    host_field(req)
}

/// RFC 9112 §6.1: hopgate decodes `chunked` and no other transfer coding (hyper has already refused a message
/// whose last coding is not chunked). Another coding would reach the upstream decoded of its chunks only, with
/// nothing saying it is still, say, gzip-coded: 501. `chunked` twice is a framing error.
pub(crate) fn transfer_codings<B>(req: &Request<B>) -> Result<(), Error> {
    let mut chunked = 0;
    for value in req.headers().get_all(header::TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| Error::client(Kind::BadFraming, "invalid Transfer-Encoding"))?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                return Err(Error::client(
                    Kind::NotImplemented,
                    format!("transfer coding {coding:?} is not implemented (only chunked is)"),
                ));
            }
        }
    }
    if chunked > 1 {
        return Err(Error::client(Kind::BadFraming, "the chunked transfer coding is applied more than once"));
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host, any request with more than one, or with an invalid one,
/// gets 400, also in absolute form (whose Host route::settle_host then replaces). HTTP/2 carries `:authority`
/// instead (a `host` beside it must name the same: settle_host).
pub(crate) fn host_field<B>(req: &Request<B>) -> Result<(), Error> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        if req.version() == http::Version::HTTP_11 {
            return Err(Error::bad_request("an HTTP/1.1 request needs a Host field"));
        }
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err(Error::bad_request("more than one Host field"));
    }
    // Host = uri-host [ ":" port ], possibly empty; no userinfo, path or spaces. route::request_host reads it with
    // the same parser; http's Authority (which later readers use) must accept it too.
    if crate::http::is_plain_host(host.as_bytes()) {
        return Ok(());
    }
    // The reason authority_port gives (a port that is no port...) is named, as for absolute-form targets.
    if let Ok(text) = host.to_str()
        && !text.is_empty()
        && let Err(e) = crate::config::authority_port(text)
    {
        return Err(Error::bad_request(format!("invalid Host field: {e} in Host")));
    }
    let valid = host.is_empty()
        || (crate::http::parse_host(host.as_bytes()).is_some()
            && http::uri::Authority::try_from(host.as_bytes()).is_ok());
    if !valid {
        return Err(Error::bad_request("invalid Host field"));
    }
    Ok(())
}
