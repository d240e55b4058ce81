//! The HTTP side of the resource gateways: CGI/1.1 (RFC 3875), FastCGI (responder) and SCGI. Maps a hyper request
//! onto the protocol layer (`cgi`, `fastcgi`, `scgi`, `meta`) and its answer back into a hyper response.
//!
//! The order of steps is the design: strip hop-by-hop -> request body (streamed with its Content-Length, or
//! spooled when it has none) -> strip the route prefix and resolve the script -> meta-variables -> run or send ->
//! local redirects followed here (GET, no body, at most `MAX_LOCAL_REDIRECTS`) -> status and fields from the CGI
//! head -> the body streamed as it comes (hyper chunks it when there is no Content-Length).
//! Does not: add Via (this is the origin side of the exchange, not an intermediary on the path), cache, retry, or
//! pass hop-by-hop fields either way. nph- scripts: see [`nph`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::NotAnswered;
use super::cgi::{self, Cgi, CgiConfig, CgiOutput};
use super::fastcgi::{DEFAULT_FASTCGI_SPLIT_SUFFIX, FastCgi, FastCgiAddr, FastCgiConfig};
use super::files::{self, Files, Found};
use super::meta::{
    self, CgiHead, ConnInfo, GatewayBody, GatewayErrorKind, GatewayResponse, HeadKind, HeadParser, MetaInput, MetaVars,
    ScriptPath,
};
use super::scgi::{Scgi, ScgiConfig};
use super::{Ctx, outside};
use crate::config::{
    self, AppOptions, CgiTarget, FastCgiTarget, HealthCheck, Prefix, ScgiTarget, Target, UpstreamSocket,
};
use crate::error::{BoxError, Error, Kind, Side, StartupError};
use crate::http::{Body, hop};
use crate::idle::Timer;
use crate::upstream::group::{Group, Probe, Settings};
use crate::upstream::{Dialer, Outbound};

/// Largest request body without Content-Length (chunked) that is spooled so the application can be told its
/// CONTENT_LENGTH; larger ones get 411. RFC 3875 §4.2 lets the server buffer such bodies or refuse them.
pub const MAX_SPOOLED_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// The first bytes of a spooled body stay in memory; the rest goes to an unlinked file in the temp dir.
const SPOOL_MEMORY_BYTES: usize = 64 * 1024;
/// SERVER_SOFTWARE.
const SERVER_SOFTWARE: &str = concat!("hopgate/", env!("CARGO_PKG_VERSION"));

/// A request body as the protocol layer takes it.
type ReqBody = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// One resource-gateway route, built once at start-up: the CGI script slots and the FastCGI pool live here.
pub struct Gateway {
    app: App,
    /// The route's path prefix: taken off before resolving, put back in front of SCRIPT_NAME.
    prefix: Prefix,
    /// CGI only: the script run for a path ending in `/` (FastCGI's layout has its own).
    index: Option<String>,
    pass_authorization: bool,
    /// How long a spooled request body may stall.
    timeout: Duration,
    /// FastCGI/SCGI over TCP to an IP address: named in the access log.
    upstream: Option<SocketAddr>,
    /// FastCGI with a root: what else the root holds (static files, directories, the front controller).
    site: Option<Site>,
}

/// A FastCGI route's document root beyond its scripts, the way nginx's `try_files` and Caddy's `php_fastcgi` see
/// it: a path naming a script runs it; another existing regular file is the static-file room's (unless `static
/// = false`); a directory without its `/` gets 301 (with it, its index runs); a path naming nothing runs the front
/// controller, else 404. A file whose name ends in the script suffix (any case) is never sent as text, and a file
/// that does not is never sent to the application.
struct Site {
    files: Files,
    serve_static: bool,
    split_suffix: String,
    /// The front controller, resolved once at start-up (SCRIPT_NAME below the prefix, SCRIPT_FILENAME).
    front_controller: Option<ScriptPath>,
}

enum App {
    Cgi(Cgi),
    FastCgi(Members<FastCgi>),
    Scgi(Members<Scgi>),
}

/// A FastCGI or SCGI route's application: one, or an upstream group (docs/upstreams.md).
enum Members<T> {
    One(T),
    Group(Group<T>),
}

impl<T> Members<T> {
    /// The one application, or a group's first member: they share the route's options (root, layout).
    fn first(&self) -> &T {
        match self {
            Members::One(t) => t,
            Members::Group(g) => &g.members()[0].client,
        }
    }
}

/// What a member of an application group is asked to do.
trait Member: Send + Sync {
    fn try_send<'a>(
        &'a self,
        vars: &'a MetaVars,
        body: ReqBody,
    ) -> Pin<Box<dyn Future<Output = Result<GatewayResponse, NotAnswered<ReqBody>>> + Send + 'a>>;
}

impl Member for FastCgi {
    fn try_send<'a>(
        &'a self,
        vars: &'a MetaVars,
        body: ReqBody,
    ) -> Pin<Box<dyn Future<Output = Result<GatewayResponse, NotAnswered<ReqBody>>> + Send + 'a>> {
        Box::pin(FastCgi::try_send(self, vars, body))
    }
}

impl Member for Scgi {
    fn try_send<'a>(
        &'a self,
        vars: &'a MetaVars,
        body: ReqBody,
    ) -> Pin<Box<dyn Future<Output = Result<GatewayResponse, NotAnswered<ReqBody>>> + Send + 'a>> {
        Box::pin(Scgi::try_send(self, vars, body))
    }
}

impl<T: Member> Members<T> {
    /// Sends to the one application, or to a member of the group as relay::group does for http members: to
    /// another member when nothing reached the first one; once more when the request is replayable (no body,
    /// an idempotent method), at most `retries` times; never after a response head came.
    async fn send(
        &self,
        vars: &MetaVars,
        body: ReqBody,
        replayable: bool,
        key: Option<u64>,
        prefix: &Prefix,
    ) -> Result<GatewayResponse, Error> {
        let g = match self {
            Members::One(t) => return t.try_send(vars, body).await.map_err(NotAnswered::error),
            Members::Group(g) => g,
        };
        let mut body = Some(body);
        let mut tried: Vec<usize> = Vec::new();
        let mut retries = g.settings().retries;
        let mut failed: Option<Error> = None;
        let mut again: Option<(usize, String)> = None;
        loop {
            let Some(mut pick) = g.pick(key, &tried) else {
                return Err(failed.unwrap_or_else(|| g.no_member(prefix, !tried.is_empty())));
            };
            if let Some((i, why)) = again.take() {
                g.retried(i, &why);
            }
            tried.push(pick.index());
            let attempt = body.take().unwrap_or_else(|| Box::pin(stream::empty()) as ReqBody);
            match pick.client().try_send(vars, attempt).await {
                Ok(resp) => {
                    pick.answered(resp.head.status.as_u16());
                    return Ok(resp);
                }
                Err(NotAnswered::Unsent(e, back)) => {
                    if e.side() != Side::Upstream {
                        return Err(e);
                    }
                    pick.unreachable(e.detail());
                    again = Some((pick.index(), e.detail().to_owned()));
                    body = Some(back);
                }
                Err(NotAnswered::Sent(e)) => {
                    if e.side() != Side::Upstream {
                        return Err(e);
                    }
                    pick.failed(e.detail());
                    if !replayable || retries == 0 {
                        return Err(e);
                    }
                    retries -= 1;
                    again = Some((pick.index(), e.detail().to_owned()));
                    failed = Some(e);
                }
            }
        }
    }
}

/// What one call of the application produced.
enum Output {
    Parsed(GatewayResponse),
    Nph(GatewayBody),
    /// A whole response without the application: a static file, a directory's 301.
    Done(Response<Body>),
}

/// How long the application may stay silent: the route's `script_timeout_secs`, else the default.
fn timeout(o: &AppOptions) -> Duration {
    o.script_timeout.unwrap_or(Duration::from_secs(cgi::DEFAULT_CGI_TIMEOUT_SECS))
}

/// The dialer of a FastCGI or SCGI route: no target policy (the operator chose the application), the loop check,
/// and the route's silence timeout as the connect timeout.
fn dialer(o: &AppOptions, out: &Outbound) -> Dialer {
    out.dialer(None).with_connect_timeout(timeout(o))
}

impl Gateway {
    /// The gateway of a `cgi:DIR` route under `prefix`. Fails when the directory does not exist.
    pub fn cgi(t: &CgiTarget, prefix: &Prefix, out: &Outbound) -> Result<Gateway, StartupError> {
        let timeout = timeout(&t.app);
        let mut cfg = CgiConfig::new(&t.dir);
        cfg.timeout = timeout;
        if let Some(n) = t.max_scripts {
            cfg.max_scripts = n;
        }
        if let Some(total) = t.script_total {
            cfg.total = total;
        }
        let (running, queued) = match &out.route {
            Some(m) => (m.cgi_running.clone(), m.cgi_queued.clone()),
            None => Default::default(),
        };
        let cgi = Cgi::new(cfg, running, queued)
            .map_err(|e| StartupError::new(format!("CGI directory {}: {e}", t.dir.display())))?;
        Ok(Gateway::with(App::Cgi(cgi), prefix, t.index.clone(), &t.app, None))
    }

    /// The gateway of a `fastcgi://` or `fastcgi+unix:` route under `prefix`, dialled through `out`'s loop
    /// check. Fails when the root does not exist; nothing connects here.
    pub fn fastcgi(t: &FastCgiTarget, prefix: &Prefix, out: &Outbound) -> Result<Gateway, StartupError> {
        let (fcgi, upstream) = Gateway::fastcgi_app(t, out)?;
        let site = match &t.root {
            Some(root) => Some(Site::new(
                t,
                root,
                &fcgi,
                t.split_path.clone().unwrap_or_else(|| DEFAULT_FASTCGI_SPLIT_SUFFIX.into()),
                prefix,
            )?),
            None if t.front_controller.is_some() => {
                return Err(StartupError::new("front_controller needs a root (the directory the script is in)"));
            }
            None => None,
        };
        let mut gw = Gateway::with(App::FastCgi(Members::One(fcgi)), prefix, None, &t.app, upstream);
        gw.site = site;
        Ok(gw)
    }

    /// The gateway of a route whose `to` is a group of FastCGI or SCGI applications: each member with its own
    /// connections (and the route's options), balanced and checked as `g` says.
    pub fn group(to: &Target, g: &config::Group, prefix: &Prefix, out: &Outbound) -> Result<Gateway, StartupError> {
        let settings = Settings::of(g);
        let mut gw = match to {
            Target::FastCgi(first) => Gateway::fastcgi(first, prefix, out)?,
            Target::Scgi(first) => Gateway::scgi(first, prefix, out),
            other => return Err(StartupError::new(format!("{other} can't be a member of an application group"))),
        };
        gw.app = match to {
            Target::FastCgi(_) => {
                let mut members = Vec::new();
                for m in &g.members {
                    let Target::FastCgi(t) = &m.to else {
                        return Err(StartupError::new(format!("{}: not a FastCGI member", m.to)));
                    };
                    members.push((Gateway::fastcgi_app(t, out)?.0, m.to.to_string(), m.weight));
                }
                let group = Group::new(members, settings, out.route.as_deref());
                if g.health_check == Some(HealthCheck::Fcgi) {
                    let mut probes = Vec::new();
                    for m in &g.members {
                        if let Target::FastCgi(t) = &m.to {
                            probes.push(fcgi_probe(t, out)?);
                        }
                    }
                    group.start_checks(probes);
                }
                App::FastCgi(Members::Group(group))
            }
            _ => {
                let mut members = Vec::new();
                for m in &g.members {
                    let Target::Scgi(t) = &m.to else {
                        return Err(StartupError::new(format!("{}: not an SCGI member", m.to)));
                    };
                    members.push((Gateway::scgi_app(t, out), m.to.to_string(), m.weight));
                }
                App::Scgi(Members::Group(Group::new(members, settings, out.route.as_deref())))
            }
        };
        // The access log names the member through the response (no one address for the route).
        gw.upstream = None;
        Ok(gw)
    }

    /// One FastCGI application of a route (its one, or a group member's), and its address when it is an IP.
    fn fastcgi_app(t: &FastCgiTarget, out: &Outbound) -> Result<(FastCgi, Option<SocketAddr>), StartupError> {
        let mut upstream = None;
        let addr = match &t.socket {
            UpstreamSocket::Tcp(a) => {
                upstream = a.to_string().parse().ok();
                FastCgiAddr::Tcp(a.clone())
            }
            UpstreamSocket::Unix(p) => FastCgiAddr::Unix(p.clone()),
        };
        let mut cfg = FastCgiConfig::new(addr);
        cfg.root = t.root.clone();
        if let Some(i) = &t.index {
            cfg.index = i.clone();
        }
        if let Some(s) = &t.split_path {
            cfg.split_suffix = s.clone();
        }
        cfg.timeout = timeout(&t.app);
        cfg.symlinks = t.files.symlinks;
        if let Some(n) = t.max_connections {
            // Set to what the application can serve at once (php-fpm's pm.max_children, docs/cgi.md): every
            // connection may be kept, since none can hold a worker another connection waits for. Left to its
            // default, at most DEFAULT_FASTCGI_MAX_IDLE are kept, so that an application with fewer workers than
            // hopgate's connections still accepts the others.
            cfg.max_connections = n;
            cfg.max_idle = n;
        }
        let root = cfg.root.clone().unwrap_or_default();
        let fcgi = FastCgi::new(cfg, dialer(&t.app, out))
            .map_err(|e| StartupError::new(format!("FastCGI root {}: {e}", root.display())))?;
        Ok((fcgi, upstream))
    }

    /// The gateway of an `scgi://` route under `prefix`, dialled through `out`'s loop check; nothing connects
    /// here.
    pub fn scgi(t: &ScgiTarget, prefix: &Prefix, out: &Outbound) -> Gateway {
        let app = App::Scgi(Members::One(Gateway::scgi_app(t, out)));
        Gateway::with(app, prefix, None, &t.app, t.authority.to_string().parse().ok())
    }

    fn scgi_app(t: &ScgiTarget, out: &Outbound) -> Scgi {
        let mut cfg = ScgiConfig::new(t.authority.clone());
        cfg.timeout = timeout(&t.app);
        Scgi::new(cfg, dialer(&t.app, out))
    }

    fn with(app: App, prefix: &Prefix, index: Option<String>, o: &AppOptions, upstream: Option<SocketAddr>) -> Gateway {
        let (timeout, pass_authorization) = (timeout(o), o.pass_authorization);
        Gateway { app, prefix: prefix.clone(), index, pass_authorization, timeout, upstream, site: None }
    }

    /// Resolves `parts`' path, builds its meta-variables and hands the request to the application.
    async fn call(&self, parts: &Parts, conn: &ConnInfo, body: ReqBody) -> Result<Output, Error> {
        let path = self.prefix.below(parts.uri.path()).ok_or_else(|| outside(&self.prefix, parts.uri.path()))?;
        let content_length = meta::request_content_length(parts).map_err(Error::from)?;
        let replayable = parts.method.is_idempotent() && content_length.unwrap_or(0) == 0;
        let input = |script| MetaInput { conn, script, content_length, pass_authorization: self.pass_authorization };
        match &self.app {
            App::Cgi(cgi) => {
                // The index only stands in for a missing script: `/env.sh/` runs env.sh with PATH_INFO `/`.
                let mut script = match (cgi.resolve(path), &self.index) {
                    (Err(e), Some(index)) if path.ends_with('/') && e.kind() == GatewayErrorKind::NotFound => {
                        cgi.resolve(&format!("{path}{index}"))
                    }
                    (r, _) => r,
                }
                .map_err(Error::from)?;
                script.path.script_name = self.prefix.mount(&script.path.script_name);
                let vars = meta::build(parts, &input(&script.path));
                Ok(match cgi.run(&script, &vars, body).await.map_err(Error::from)? {
                    CgiOutput::Parsed(r) => Output::Parsed(r),
                    CgiOutput::Nph(b) => Output::Nph(b),
                })
            }
            App::FastCgi(members) => {
                let fcgi = members.first();
                let mut script = match (fcgi.resolve(path), &self.site) {
                    (Ok(script), _) => script,
                    (Err(e), Some(site)) if e.kind() == GatewayErrorKind::NotFound => match site.pick(parts, path)? {
                        Picked::Done(resp) => return Ok(Output::Done(resp)),
                        Picked::Script(script) => script,
                        Picked::Nothing => return Err(e.into()),
                    },
                    (Err(e), _) => return Err(e.into()),
                };
                script.script_name = self.prefix.mount(&script.script_name);
                let vars = meta::build(parts, &input(&script));
                let key = members.key(parts, conn);
                Ok(Output::Parsed(members.send(&vars, body, replayable, key, &self.prefix).await?))
            }
            App::Scgi(members) => {
                let mut script = meta::resolve_app(path).map_err(Error::from)?;
                script.script_name = self.prefix.mount(&script.script_name);
                let vars = meta::build(parts, &input(&script));
                let key = members.key(parts, conn);
                Ok(Output::Parsed(members.send(&vars, body, replayable, key, &self.prefix).await?))
            }
        }
    }

    fn finish(&self, ctx: &Ctx<'_>, resp: Response<Body>) -> Response<Body> {
        if let Some(a) = self.upstream {
            ctx.answered_from(a);
        }
        resp
    }
}

impl<T> Members<T> {
    /// What a hashing group balances the request by.
    fn key(&self, parts: &Parts, conn: &ConnInfo) -> Option<u64> {
        match self {
            Members::One(_) => None,
            Members::Group(g) => g.key(&parts.headers, conn.remote.ip()),
        }
    }
}

/// An active check of a FastCGI member (`health_check = "fcgi"`): its own connection, FCGI_GET_VALUES.
fn fcgi_probe(t: &FastCgiTarget, out: &Outbound) -> Result<Probe, StartupError> {
    let app = std::sync::Arc::new(Gateway::fastcgi_app(t, out)?.0);
    Ok(Box::new(move || {
        let app = app.clone();
        Box::pin(async move { app.check().await })
    }))
}

/// What a FastCGI route's root holds for a path that names no script.
enum Picked {
    Done(Response<Body>),
    Script(ScriptPath),
    Nothing,
}

impl Site {
    fn new(
        t: &FastCgiTarget,
        root: &std::path::Path,
        fcgi: &FastCgi,
        split_suffix: String,
        prefix: &Prefix,
    ) -> Result<Site, StartupError> {
        let files = Files::static_half(root, &t.files, prefix)
            .map_err(|e| StartupError::new(format!("FastCGI root {}: {e}", root.display())))?;
        let front_controller = match &t.front_controller {
            None => None,
            Some(fc) if !meta::is_script_name(fc, &split_suffix) => {
                return Err(StartupError::new(format!(
                    "front_controller {fc:?} does not end in {split_suffix:?}: only scripts go to the application"
                )));
            }
            Some(fc) => Some(fcgi.script_at(fc).ok_or_else(|| {
                StartupError::new(format!("front_controller {fc:?} is no file under the root {}", root.display()))
            })?),
        };
        Ok(Site { files, serve_static: t.static_files, split_suffix, front_controller })
    }

    /// `path` (below the prefix) named no script: a static file, a directory's 301, the front controller, or
    /// nothing.
    fn pick(&self, parts: &Parts, path: &str) -> Result<Picked, Error> {
        match self.files.lookup(path)? {
            Found::File(file) => {
                let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if meta::is_script_name(&name, &self.split_suffix) {
                    return Err(Error::client(Kind::NotFound, "a script is never sent as a static file"));
                }
                if !self.serve_static {
                    return Err(Error::client(Kind::NotFound, "not a script (static files are off on this route)"));
                }
                Ok(Picked::Done(self.files.send(&parts.method, &parts.headers, &file)?))
            }
            Found::Dir { slash: false, .. } => Ok(Picked::Done(files::add_slash(&parts.uri))),
            Found::Dir { slash: true, .. } | Found::Nothing => {
                Ok(self.front_controller.clone().map_or(Picked::Nothing, Picked::Script))
            }
        }
    }
}

/// The one door: serve `req` through the route's application.
pub async fn serve(req: Request<Incoming>, ctx: &Ctx<'_>, gw: &Gateway) -> Result<Response<Body>, Error> {
    let (mut parts, incoming) = req.into_parts();
    // Hop-by-hop fields concern the client's connection only (meta::build drops them too).
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    hop::strip(&mut parts.headers);
    let body = if has_length || incoming.is_end_stream() {
        Box::pin(incoming.into_data_stream().map_err(BoxError::from)) as ReqBody
    } else {
        let (len, body) = spool(incoming, gw.timeout).await?;
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        body
    };
    let conn = ConnInfo {
        remote: ctx.client,
        local: ctx.local,
        https: ctx.hop.tls,
        server_name: None,
        server_port: None,
        server_software: SERVER_SOFTWARE.to_owned(),
    };
    let mut trail = vec![parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned()];
    let mut out = gw.call(&parts, &conn, body).await?;
    loop {
        let resp = match out {
            Output::Nph(body) => return nph(body).await.map(|r| gw.finish(ctx, r)),
            Output::Done(resp) => return Ok(gw.finish(ctx, resp)),
            Output::Parsed(resp) => resp,
        };
        let Some(location) = local_redirect(&resp.head) else {
            return document(resp).map(|r| gw.finish(ctx, r));
        };
        // RFC 3875 §6.2.2: the server answers as if the client had asked for this path. The body of the
        // redirecting response is not sent; dropping it ends the script (or closes the FastCGI connection).
        drop(resp);
        if trail.len() > meta::MAX_LOCAL_REDIRECTS {
            trail.push(location);
            return Err(Error::upstream(Kind::UpstreamProtocol, loop_detail(&trail)));
        }
        let target: PathAndQuery = location.parse().map_err(|_| {
            Error::upstream(Kind::UpstreamProtocol, format!("local redirect to an invalid path {location:?}"))
        })?;
        if !gw.prefix.matches(target.path()) {
            // Another route serves that path: let the client ask for it there.
            return Ok(gw.finish(ctx, found(&location)));
        }
        trail.push(location);
        parts = redirected(&parts, target);
        out = gw.call(&parts, &conn, Box::pin(stream::empty())).await?;
    }
}

/// The local path a response redirects to internally: RFC 3875 §6.2.2's `Location: /path` alone, and, as Apache's
/// mod_cgi does, a local `Location` in a 200 response that carries other fields too (`Content-Type` is a common
/// addition); a 200 with a Location means nothing else to a client.
fn local_redirect(head: &CgiHead) -> Option<String> {
    match &head.kind {
        HeadKind::LocalRedirect(path) => Some(path.clone()),
        HeadKind::Document if head.status == StatusCode::OK => head
            .headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .filter(|l| l.starts_with('/') && !l.starts_with("//"))
            .map(str::to_owned),
        _ => None,
    }
}

/// The request a local redirect is served as: GET of the new path, the same header fields, no body.
fn redirected(orig: &Parts, target: PathAndQuery) -> Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = Uri::from(target);
    parts.version = orig.version;
    parts.headers = orig.headers.clone();
    for name in [header::CONTENT_LENGTH, header::CONTENT_TYPE, header::TRANSFER_ENCODING, header::EXPECT] {
        parts.headers.remove(name);
    }
    parts
}

/// "local redirect loop: /a -> /b -> /a", cut at the first repeat and kept short.
fn loop_detail(trail: &[String]) -> String {
    let mut shown: Vec<&str> = Vec::new();
    for t in trail {
        let repeat = shown.contains(&t.as_str());
        shown.push(t);
        if repeat {
            break;
        }
    }
    let mut path = shown.join(" -> ");
    if path.len() > 200 {
        let cut = (0..=200).rev().find(|&i| path.is_char_boundary(i)).unwrap_or(0);
        path.truncate(cut);
        path.push_str("...");
    }
    format!("local redirect loop: {path} (over {} redirects)", meta::MAX_LOCAL_REDIRECTS)
}

/// A 302 to a local path this gateway does not serve.
fn found(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// A document or client redirect: the status and fields of the CGI head, the body as it comes.
fn document(r: GatewayResponse) -> Result<Response<Body>, Error> {
    let mut resp = response_head(r.head.status, r.head.headers)?;
    *resp.body_mut() = Body::boxed(r.body);
    Ok(resp)
}

/// A response with `status` and the application's fields, checked for what HTTP framing needs.
pub(crate) fn response_head(status: StatusCode, mut headers: HeaderMap) -> Result<Response<Body>, Error> {
    if status.is_informational() {
        return Err(Error::upstream(
            Kind::UpstreamProtocol,
            format!("application answered {} as its final status", status.as_u16()),
        ));
    }
    // The application does not frame the message on the client's connection; hyper does.
    hop::strip(&mut headers);
    let lengths: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if let Some(first) = lengths.first() {
        let valid = first.to_str().ok().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
        if !valid || lengths.iter().any(|v| v != first) {
            return Err(Error::upstream(Kind::UpstreamProtocol, "application sent an invalid Content-Length"));
        }
        let one = (*first).clone();
        headers.insert(header::CONTENT_LENGTH, one);
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// nph- ("non-parsed header") scripts, RFC 3875 §5: the script writes the whole response, status line included.
/// hyper writes every status line hopgate sends, so here nph- means: the script's status code and reason phrase
/// (hyper's `ReasonPhrase`) and its header fields are sent as written, minus hop-by-hop fields; the body
/// follows as it comes, never buffered. The HTTP version is that of the client's connection, and hyper adds
/// Date when the script sent none.
async fn nph(mut body: GatewayBody) -> Result<Response<Body>, Error> {
    let bad = |why: &str| Error::upstream(Kind::UpstreamProtocol, format!("nph script: {why}"));
    let mut buf = BytesMut::new();
    let line_end = loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            break i;
        }
        if buf.len() > meta::MAX_HEAD_BYTES {
            return Err(bad("status line too long"));
        }
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(bad("no status line")),
        }
    };
    let rest = buf.split_off(line_end + 1);
    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let (status, reason) = status_line(line.strip_suffix(b"\r").unwrap_or(line)).ok_or_else(|| {
        bad(&format!("malformed status line {:?}", String::from_utf8_lossy(&line[..line.len().min(64)])))
    })?;
    let (headers, first) = if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
        let skip = if rest.starts_with(b"\n") { 1 } else { 2 };
        (HeaderMap::new(), rest.freeze().slice(skip..))
    } else {
        let mut parser = HeadParser::new();
        let mut chunk = rest.freeze();
        loop {
            if let Some((head, first)) = parser.feed(&chunk).map_err(Error::from)? {
                let mut headers = head.headers;
                // The CGI head parser reads a lone local Location as a redirect; here it is just a field.
                if let HeadKind::LocalRedirect(loc) = head.kind
                    && let Ok(v) = HeaderValue::from_str(&loc)
                {
                    headers.insert(header::LOCATION, v);
                }
                break (headers, first);
            }
            chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(parser.eof_error().into()),
            };
        }
    };
    let mut resp = response_head(status, headers)?;
    if let Some(reason) = reason {
        resp.extensions_mut().insert(reason);
    }
    let rest = stream::iter((!first.is_empty()).then_some(Ok(first))).chain(body);
    *resp.body_mut() = Body::boxed(StreamBody::new(rest.map_ok(http_body::Frame::data)));
    Ok(resp)
}

/// `HTTP/1.x NNN reason`: the status and, when it differs from the canonical one, the reason phrase.
pub(crate) fn status_line(line: &[u8]) -> Option<(StatusCode, Option<hyper::ext::ReasonPhrase>)> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let version = &rest[..sp];
    if !(version.len() == 3 && version[0].is_ascii_digit() && version[1] == b'.' && version[2].is_ascii_digit()) {
        return None;
    }
    let rest = &rest[sp + 1..];
    let code = rest.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit))?;
    let status = StatusCode::from_bytes(code).ok().filter(|s| (100..=599).contains(&s.as_u16()))?;
    let reason = match rest.get(3..) {
        None | Some(b"") => None,
        Some(r) if r[0] == b' ' => Some(&r[1..]),
        Some(_) => return None,
    };
    let reason = reason
        .filter(|r| !r.is_empty() && status.canonical_reason().is_none_or(|c| c.as_bytes() != *r))
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.to_vec()).ok());
    Some((status, reason))
}

/// Reads a request body of unknown length (chunked) to its end, so that CONTENT_LENGTH can be given: the first
/// `SPOOL_MEMORY_BYTES` in memory, the rest in an unlinked temp file, at most `MAX_SPOOLED_BODY_BYTES` (411 past
/// that: a body with Content-Length streams through instead). `idle` bounds the wait for each piece.
async fn spool(incoming: Incoming, idle: Duration) -> Result<(u64, ReqBody), Error> {
    let mut data = incoming.into_data_stream();
    let mut memory: Vec<Bytes> = Vec::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut total: u64 = 0;
    let spool_error = |e: std::io::Error| Error::local(Kind::Internal, "cannot spool the request body").with_source(e);
    let mut timer = Timer::new(idle);
    loop {
        let chunk = match timer.guard(data.next()).await {
            Err(_) => return Err(Error::bad_request(format!("request body stalled for {idle:?}"))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Error::bad_request("the request body broke off").with_source(e)),
            Ok(Some(Ok(c))) => c,
        };
        total += chunk.len() as u64;
        if total > MAX_SPOOLED_BODY_BYTES {
            return Err(Error::client(
                Kind::LengthRequired,
                format!("a request body without Content-Length is limited to {MAX_SPOOLED_BODY_BYTES} bytes"),
            ));
        }
        match &mut file {
            Some(f) => f.write_all(&chunk).await.map_err(spool_error)?,
            None if total as usize <= SPOOL_MEMORY_BYTES => memory.push(chunk),
            None => {
                let mut f = spool_file().await.map_err(spool_error)?;
                for piece in memory.drain(..).chain([chunk]) {
                    f.write_all(&piece).await.map_err(spool_error)?;
                }
                file = Some(f);
            }
        }
    }
    let body: ReqBody = match file {
        None => Box::pin(stream::iter(memory.into_iter().map(Ok))),
        Some(mut f) => {
            f.flush().await.map_err(spool_error)?;
            f.seek(std::io::SeekFrom::Start(0)).await.map_err(spool_error)?;
            Box::pin(stream::try_unfold(f, |mut f| async move {
                let mut buf = BytesMut::with_capacity(SPOOL_MEMORY_BYTES);
                let n = f.read_buf(&mut buf).await.map_err(BoxError::from)?;
                Ok((n > 0).then(|| (buf.freeze(), f)))
            }))
        }
    };
    Ok((total, body))
}

/// A new file in the temp dir (`TMPDIR`), readable by hopgate only and unlinked at once: it goes away with the
/// handle, whatever happens to the request.
async fn spool_file() -> std::io::Result<tokio::fs::File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    let mut last = None;
    for _ in 0..8 {
        let name = format!("hopgate-body-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = dir.join(name);
        match tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).await {
            Ok(f) => {
                tokio::fs::remove_file(&path).await?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no spool file name free")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nph_status_lines() {
        let (s, r) = status_line(b"HTTP/1.1 299 Custom Thing").unwrap();
        assert_eq!(s.as_u16(), 299);
        assert_eq!(r.unwrap().as_bytes(), b"Custom Thing");
        let (s, r) = status_line(b"HTTP/1.0 404 Not Found").unwrap();
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(r.is_none(), "canonical reason needs no extension");
        assert_eq!(status_line(b"HTTP/1.1 204").unwrap().0, StatusCode::NO_CONTENT);
        for bad in [&b"HTTP/1.1 20 OK"[..], b"HTTP/1.1 2000", b"Status: 200", b"HTTP/11 200 OK", b"HTTP/1.1 099 x"] {
            assert!(status_line(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn loop_detail_stops_at_the_first_repeat() {
        let trail: Vec<String> = ["/a", "/b", "/a", "/b", "/a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(loop_detail(&trail), "local redirect loop: /a -> /b -> /a (over 10 redirects)");
        let long: Vec<String> = (0..40).map(|i| format!("/step/{i:04}/xxxxxxxx")).collect();
        assert!(loop_detail(&long).len() < 260);
    }

    fn status_of(r: Result<Response<Body>, Error>) -> StatusCode {
        match r {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        }
    }

    #[test]
    fn content_length_from_the_application_is_checked() {
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let r = response_head(StatusCode::OK, h).unwrap();
        assert_eq!(r.headers().get_all(header::CONTENT_LENGTH).iter().count(), 1);
        assert!(r.headers().get("x-private").is_none() && r.headers().get(header::TRANSFER_ENCODING).is_none());
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert_eq!(status_of(response_head(StatusCode::OK, h)), 502);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(status_of(response_head(StatusCode::OK, h)), 502);
        assert_eq!(status_of(response_head(StatusCode::CONTINUE, HeaderMap::new())), 502);
    }

    #[test]
    fn redirected_request_is_a_bodiless_get() {
        let (parts, ()) = Request::post("/form.cgi")
            .header("content-length", "3")
            .header("content-type", "text/plain")
            .header("cookie", "a=1")
            .body(())
            .unwrap()
            .into_parts();
        let p = redirected(&parts, "/next.cgi?x=1".parse().unwrap());
        assert_eq!(p.method, Method::GET);
        assert_eq!(p.uri, "/next.cgi?x=1");
        assert!(p.headers.get("content-length").is_none() && p.headers.get("content-type").is_none());
        assert_eq!(p.headers["cookie"], "a=1");
    }
}
