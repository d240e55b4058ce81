//! HTTP/FTP gateway (issue 5): an HTTP request for an FTP resource becomes FTP commands, and the
//! answer an ordinary HTTP response, for both doors: absolute-form `ftp://[user[:pass]@]host[:port]/path`
//! to the forward proxy (the URL names the server; the proxy's target policy applies) and a gateway route
//! `--to ftp://[user[:pass]@]host[:port][/dir]` (request paths map under `dir`; not filtered).
//!
//! GET of a file streams RETR (`TYPE I`) with Content-Type from the name, Content-Length from SIZE,
//! Last-Modified from MDTM; `Range: bytes=N-` becomes REST and 206 (RFC 9110 §14). HEAD asks SIZE/MDTM only.
//! A directory is an HTML or (`Accept: application/json`) JSON listing; `/dir` redirects to `/dir/`. PUT
//! streams the request body into STOR (201). The order of steps is the design: method -> path and log-in
//! (400 before any connection) -> checkout (pooled control connection) -> stat -> answer.
//! Does not: cache, delete or rename (DELE, RNFR), resume an interrupted transfer, or speak active mode.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::DownloadBody;
use super::{
    EntryKind, FtpError, FtpPool, FtpPoolConfig, FtpSettings, Login, PooledSession, Target, check_path, decode_url_path,
};
use crate::backend::{Ctx, outside};
use crate::config::{self, FtpTarget, Prefix};
use crate::error::{Error, Kind, StartupError};
use crate::http::listing;
use crate::http::representation::{self, Precondition, Ranges, Validators, http_date, media_type};
use crate::http::{Body, append_via, basic, pages};
use crate::idle::Timer;
use crate::upstream::{Dialer, Outbound};

/// Where the FTP server and log-in come from.
enum Upstream {
    /// The forward proxy: from each request's `ftp://` URL. With a parent proxy (its `host:port`), every request
    /// must go through it, and relaying `ftp://` to a parent is not implemented: such requests are refused.
    FromUrl { parent: Option<String> },
    /// A gateway route's `--to`.
    Fixed {
        host: String,
        port: u16,
        user: Option<String>,
        pass: Option<String>,
        /// The FTP path requests map under (`decode_url_path` form: relative to the log-in directory unless it
        /// starts with `/`); "" for the log-in directory itself.
        dir: String,
        /// The route's path prefix on hopgate: the path below it maps under `dir`.
        prefix: Prefix,
    },
}

/// An FTP room, ready to serve: the pool of logged-in control connections (which owns the room's dialer), and
/// whether PUT may become STOR.
pub struct Ftp {
    pool: FtpPool,
    uploads: bool,
    upstream: Upstream,
}

impl Ftp {
    /// The forward proxy's FTP room: `dialer` applies the proxy's target policy and loop check to each
    /// `ftp://` server a client names. Uploads are allowed; the FTP server's permissions decide. `parent`: the
    /// proxy's parent proxy, if it has one (then `ftp://` is refused with 501 rather than sent around it).
    pub fn forward(dialer: Dialer, parent: Option<String>) -> Ftp {
        let pool = FtpPool::new(FtpSettings::default(), FtpPoolConfig::default(), dialer);
        Ftp { pool, uploads: true, upstream: Upstream::FromUrl { parent } }
    }

    /// A gateway route to an `ftp://` target under `prefix`, dialled without target policy (the operator
    /// chose the server) but with the loop check.
    pub fn gateway(t: &FtpTarget, prefix: &Prefix, out: &Outbound) -> Result<Ftp, StartupError> {
        let invalid = |why: &str| StartupError::new(format!("ftp://{}{}: {why}", t.authority, t.dir));
        for s in [t.user.as_deref(), t.pass.as_deref()].into_iter().flatten() {
            check_path(s).map_err(|_| invalid("the credentials contain CR, LF or NUL"))?;
        }
        let dir = base_dir(&t.dir).map_err(|e| invalid(&e))?;
        let upstream = Upstream::Fixed {
            host: t.authority.host.clone(),
            port: t.authority.port,
            user: t.user.clone(),
            pass: t.pass.clone(),
            dir,
            prefix: prefix.clone(),
        };
        let pool = FtpPool::new(FtpSettings::default(), FtpPoolConfig::default(), out.dialer(None));
        Ok(Ftp { pool, uploads: t.uploads, upstream })
    }

    fn allow(&self) -> HeaderValue {
        HeaderValue::from_static(if self.uploads { "GET, HEAD, PUT" } else { "GET, HEAD" })
    }
}

/// The `dir` of `--to ftp://host/dir` (already percent-decoded by the config) as an FTP path: relative to
/// the log-in directory (RFC 1738 §3.2.2) unless it started with `%2F`; no `.`/`..`, CR, LF or NUL.
pub(crate) fn base_dir(dir: &str) -> Result<String, String> {
    check_path(dir).map_err(|_| "the directory contains CR, LF or NUL".to_string())?;
    let rest = dir.strip_prefix('/').unwrap_or(dir);
    let absolute = rest.starts_with('/');
    let mut segments = Vec::new();
    for s in rest.split('/').filter(|s| !s.is_empty()) {
        if s == "." || s == ".." {
            return Err("the directory has a . or .. segment".into());
        }
        segments.push(s);
    }
    let joined = segments.join("/");
    Ok(if absolute { format!("/{joined}") } else { joined })
}

/// One request, resolved: which server as whom, which FTP path, and what the URL looked like.
struct Job {
    target: Target,
    /// `host:port` for error details.
    server: String,
    /// The FTP path for the session methods.
    path: String,
    /// The URL path ended with `/`.
    slash: bool,
    /// The listing is of the top (no parent link).
    at_root: bool,
    /// The decoded URL path, for the listing's title.
    title: String,
    /// Where a directory URL without its `/` redirects to.
    location: String,
    /// The FTP server's host name: the realm of the 401 challenge.
    realm_host: String,
}

impl Job {
    fn error(&self, e: FtpError) -> Error {
        e.into_error(&self.server, &self.realm_host)
    }
}

/// Serves one request for an FTP resource (both doors; see the module doc).
pub async fn serve(mut req: Request<Incoming>, ctx: &Ctx<'_>, ftp: &Ftp) -> Result<Response<Body>, Error> {
    if let Upstream::FromUrl { parent: Some(parent) } = &ftp.upstream {
        // "relay every request through the parent": going to the FTP server directly would bypass it
        return Err(Error::local(
            Kind::NotImplemented,
            format!("ftp:// URLs are not relayed through the parent proxy {parent}"),
        ));
    }
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD && method != Method::PUT {
        return Err(Error::client(Kind::MethodNotAllowed, format!("{method} is not served for ftp resources"))
            .with_field(header::ALLOW, ftp.allow()));
    }
    if method == Method::PUT && !ftp.uploads {
        return Err(Error::client(Kind::MethodNotAllowed, "uploads (PUT) are turned off for this ftp route")
            .with_field(header::ALLOW, ftp.allow()));
    }
    if method != Method::PUT {
        refuse_body(&mut req, ctx.hop.timeouts.idle).await?;
    }
    // Everything about the request is checked before any connection: a bad path sends no command.
    let job = resolve(&req, ftp)?;
    let session = ftp.pool.checkout(&job.target).await.map_err(|e| job.error(e))?;
    let peer = session.peer();
    let version = req.version();
    let mut resp =
        if method == Method::PUT { put(req, session, &job).await? } else { get(&req, session, &job).await? };
    ctx.answered_from(peer);
    append_via(resp.headers_mut(), version, &ctx.hop.via_name);
    Ok(resp)
}

/// GET and HEAD become RETR or a listing, which take no data: a request body would be lost, so it is refused
/// (400) instead. An empty body (`Content-Length: 0`, a chunked body with no data) is no body.
async fn refuse_body(req: &mut Request<Incoming>, idle: Duration) -> Result<(), Error> {
    let method = req.method().clone();
    let body = req.body_mut();
    let mut timer = Timer::new(idle);
    // bounded: each turn takes one frame within the idle timeout, and the first one with data ends it
    while !body.is_end_stream() {
        match timer.guard(body.frame()).await {
            Err(_) => return Err(Error::client(Kind::BadRequest, format!("the request body stalled for {idle:?}"))),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Error::client(Kind::BadRequest, "the request body broke off").with_source(e));
            }
            Ok(Some(Ok(frame))) => {
                if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                    return Err(Error::client(
                        Kind::BadRequest,
                        format!("the {method} request has a body, which an FTP download or listing can't take"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What a request asks for: server, log-in, FTP path. 400 for paths or credentials with CR, LF or NUL.
fn resolve<B>(req: &Request<B>, ftp: &Ftp) -> Result<Job, Error> {
    let uri = req.uri();
    let credentials = req.headers().get(header::AUTHORIZATION).and_then(basic::decode);
    match &ftp.upstream {
        Upstream::FromUrl { .. } => {
            let authority =
                uri.authority().ok_or_else(|| Error::bad_request("ftp:// request target without a host"))?;
            let (userinfo, _) = split_userinfo(authority.as_str());
            let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
            if host.is_empty() {
                return Err(Error::bad_request("ftp:// request target without a host"));
            }
            let port = config::authority_port(authority.as_str())
                .map_err(|e| Error::bad_request(format!("{e} in the request target")))?
                .unwrap_or(super::DEFAULT_FTP_PORT);
            let (url_user, url_pass) = match userinfo {
                Some(u) => match u.split_once(':') {
                    Some((user, pass)) => (Some(config::percent_decode(user)), Some(config::percent_decode(pass))),
                    None => (Some(config::percent_decode(u)), None),
                },
                None => (None, None),
            };
            let login = login_from_url(url_user, url_pass, credentials)?;
            let raw_path = uri.path();
            let path = decode_url_path(raw_path).map_err(Error::from)?;
            let slash = raw_path.ends_with('/') || raw_path.is_empty();
            let title = if path.starts_with('/') { format!("{path}/") } else { format!("/{path}/") };
            let title = title.replace("//", "/");
            let location = format!("ftp://{}{}/", authority.as_str(), raw_path);
            Ok(Job {
                server: crate::upstream::display_target(&host, port),
                realm_host: host.clone(),
                target: Target { host, port, login },
                at_root: path.is_empty() || path == "/",
                path,
                slash,
                title,
                location,
            })
        }
        Upstream::Fixed { host, port, user, pass, dir, prefix } => {
            let full = uri.path();
            let rest = prefix.rest(full).ok_or_else(|| outside(prefix, full))?;
            let rel = decode_url_path(rest).map_err(Error::from)?;
            if rel.starts_with('/') {
                return Err(Error::bad_request("an absolute ftp path (%2F) can't leave the gateway's directory"));
            }
            let path = match (dir.as_str(), rel.as_str()) {
                (d, "") => d.to_string(),
                ("", r) => r.to_string(),
                (d, r) if d.ends_with('/') => format!("{d}{r}"),
                (d, r) => format!("{d}/{r}"),
            };
            let login = match credentials {
                // The client's own credentials (a browser after a 401) win over the route's.
                Some((u, p)) => checked_login(u, p)?,
                None => match user {
                    Some(u) => checked_login(u.clone(), pass.clone().unwrap_or_else(|| default_password(u)))?,
                    None => Login::anonymous(),
                },
            };
            let public_prefix = prefix.mount_point();
            let title = if rel.is_empty() { format!("{public_prefix}/") } else { format!("{public_prefix}/{rel}/") };
            let mut location = format!("{full}/");
            if let Some(q) = uri.query() {
                location.push('?');
                location.push_str(q);
            }
            Ok(Job {
                server: crate::upstream::display_target(host, *port),
                realm_host: host.clone(),
                target: Target { host: host.clone(), port: *port, login },
                at_root: rel.is_empty(),
                path,
                // "/pub" on a route with path "/pub" is the directory without its slash: it redirects
                slash: rest.ends_with('/'),
                title,
                location,
            })
        }
    }
}

/// `user:pass` and `host:port` of an authority (userinfo ends at the last `@`).
pub(crate) fn split_userinfo(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    }
}

/// The forward proxy's rule: credentials in the URL win; a URL user without a password takes the password
/// from `Authorization: Basic` when that names the same user; else `Authorization: Basic`; else anonymous.
fn login_from_url(
    url_user: Option<String>,
    url_pass: Option<String>,
    basic: Option<(String, String)>,
) -> Result<Login, Error> {
    match (url_user, url_pass, basic) {
        (Some(u), Some(p), _) => checked_login(u, p),
        (Some(u), None, Some((bu, bp))) if bu == u => checked_login(u, bp),
        (Some(u), None, _) => {
            let p = default_password(&u);
            checked_login(u, p)
        }
        (None, _, Some((u, p))) => checked_login(u, p),
        (None, _, None) => Ok(Login::anonymous()),
    }
}

/// Anonymous users get a mail-like password (RFC 1635); others an empty one.
fn default_password(user: &str) -> String {
    if user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp") {
        Login::anonymous().password
    } else {
        String::new()
    }
}

fn checked_login(user: String, pass: String) -> Result<Login, Error> {
    if check_path(&user).is_err() || check_path(&pass).is_err() {
        return Err(Error::bad_request("ftp user or password contains CR, LF or NUL"));
    }
    if user.is_empty() {
        return Ok(Login::anonymous());
    }
    Ok(Login::new(user, pass))
}

/// GET and HEAD: a directory listing, a redirect to `dir/`, or the file.
async fn get<B>(req: &Request<B>, mut s: PooledSession, job: &Job) -> Result<Response<Body>, Error> {
    let stat = s.stat(&job.path).await.map_err(|e| job.error(e))?;
    if stat.kind == EntryKind::Dir {
        if !job.slash {
            let location = HeaderValue::from_str(&job.location).map_err(|_| Error::bad_request("invalid path"))?;
            return Ok(pages::redirect(location));
        }
        let entries = s.list(&job.path).await.map_err(|e| job.error(e))?;
        drop(s); // back to the pool before rendering
        let by = "hopgate HTTP/FTP gateway";
        return Ok(listing::response(req.method(), req.headers(), &job.title, &entries, job.at_root, by));
    }
    if job.slash {
        return Err(Error::client(Kind::NotFound, format!("/{} is a file, not a directory", job.path)));
    }
    let name = job.path.rsplit('/').next().unwrap_or("");
    let mut head = HeaderMap::new();
    head.insert(header::CONTENT_TYPE, media_type(name));
    let ranges = s.features().rest_stream;
    head.insert(header::ACCEPT_RANGES, HeaderValue::from_static(if ranges { "bytes" } else { "none" }));
    // MDTM is the only validator an FTP server gives: no entity tag.
    let validators = Validators { etag: None, modified: stat.modified };
    if let Some(t) = stat.modified {
        head.insert(header::LAST_MODIFIED, http_date(t));
    }
    match representation::evaluate(req.method(), req.headers(), &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            head.remove(header::CONTENT_TYPE);
            *resp.headers_mut() = head;
            return Ok(resp);
        }
        Precondition::Failed(field) => {
            return Err(Error::client(Kind::PreconditionFailed, format!("{field} does not hold for /{}", job.path)));
        }
    }
    let mut status = StatusCode::OK;
    let mut offset = 0;
    // REST serves one range that runs to the end of the file (`bytes=N-`, `bytes=-N`); other ranges get the
    // whole file (200), as RFC 9110 §14.2 lets a server do.
    if ranges && let Some(size) = stat.size {
        match representation::ranges(req.method(), req.headers(), &validators, size) {
            Ranges::Unsatisfiable => {
                return Err(Error::client(
                    Kind::RangeNotSatisfiable,
                    format!("no range within the file's {size} bytes"),
                )
                .with_field(header::CONTENT_RANGE, representation::unsatisfied_range(size)));
            }
            Ranges::Some(r) if r.len() == 1 && r[0].end == size => {
                status = StatusCode::PARTIAL_CONTENT;
                offset = r[0].start;
                head.insert(header::CONTENT_RANGE, representation::content_range(&r[0], size));
            }
            Ranges::Some(_) | Ranges::Whole => {}
        }
    }
    let len = stat.size.map(|size| size - offset);
    if let Some(len) = len {
        head.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let body = if req.method() == Method::HEAD {
        drop(s);
        Body::empty()
    } else {
        let mut download = s.retr(&job.path, offset).await.map_err(|e| job.error(e))?;
        if let Some(len) = len {
            // fewer or more bytes than Content-Length promised is an error, not a shorter file
            download = download.with_expected_len(len);
        }
        if len == Some(0) {
            // hyper sends no body for Content-Length: 0 and never polls one: confirm the transfer first
            let mut none = [0u8; 1];
            if let Err(e) = download.read(&mut none).await {
                return Err(job.error(FtpError::from_io_owned(e, "download")));
            }
            Body::empty()
        } else {
            Body::boxed(DownloadBody::new(download, len))
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = head;
    Ok(resp)
}

/// PUT: STOR of the request body, streamed; 201 once the server confirmed (226).
async fn put(req: Request<Incoming>, s: PooledSession, job: &Job) -> Result<Response<Body>, Error> {
    if job.slash || job.path.is_empty() {
        return Err(Error::bad_request("PUT needs a file path, not a directory"));
    }
    let idle = s.settings.data_idle_timeout;
    let mut upload = s.upload(&job.path).await.map_err(|e| job.error(e))?;
    let mut body = req.into_body();
    let mut timer = Timer::new(idle);
    // bounded: each turn takes one frame of the body, each within the data idle timeout
    loop {
        let frame = match timer.guard(body.frame()).await {
            Err(_) => {
                return Err(Error::client(Kind::BadRequest, format!("the request body stalled for {idle:?}")));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Error::client(Kind::BadRequest, "the request body broke off").with_source(e));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data()
            && let Err(e) = upload.write_all(&data).await
        {
            return Err(job.error(FtpError::from_io_owned(e, "upload")));
        }
    }
    let sent = upload.finish().await.map_err(|e| job.error(e))?;
    let mut resp = Response::new(Body::full(format!("hopgate: 201 Created\n/{} ({sent} bytes)\n", job.path)));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        let basic = Some(("bob".to_string(), "pw".to_string()));
        let l = login_from_url(Some("u".into()), Some("p".into()), basic.clone()).unwrap();
        assert_eq!((l.user.as_str(), l.password.as_str()), ("u", "p"));
        let l = login_from_url(Some("bob".into()), None, basic.clone()).unwrap();
        assert_eq!(l.password, "pw");
        let l = login_from_url(None, None, basic).unwrap();
        assert_eq!(l.user, "bob");
        assert_eq!(login_from_url(None, None, None).unwrap(), Login::anonymous());
        assert_eq!(login_from_url(Some("ftp".into()), None, None).unwrap().password, "hopgate@");
        assert!(login_from_url(Some("a\r\nDELE x".into()), Some("p".into()), None).is_err());
    }

    #[test]
    fn base_dirs() {
        assert_eq!(base_dir("").unwrap(), "");
        assert_eq!(base_dir("/pub/x").unwrap(), "pub/x");
        assert_eq!(base_dir("//srv/ftp").unwrap(), "/srv/ftp");
        assert!(base_dir("/a/../b").is_err());
        assert!(base_dir("/a\nb").is_err());
    }
}
