//! A relayed request to an upstream group: which member, and when it is sent to another one.
//!
//! A request goes to another member when the first attempt failed before any byte of it could have reached the
//! application (the connection could not be opened, TLS failed, or hyper handed it back unsent): each member is
//! tried once at most. One that may have reached the application is sent again only when it is replayable
//! (idempotent method, no body, no upgrade: `exchange`), at most `retries` times; never once a response head has
//! come (the response is the client's from then on). A member's own 502/503/504 is the client's answer.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};

use super::exchange::client_error;
use crate::config::{self, HealthCheck, Prefix, Target};
use crate::error::{Error, Kind, Side};
use crate::http::Body;
use crate::upstream::group::{Group, Probe, Settings};
use crate::upstream::{Failed, HttpClient, Outbound, ProxiedClient, ResponseBody};

/// The group of a route, with its active checks started when it has `health_check`.
pub(super) fn start(
    members: Vec<(Arc<HttpClient>, String, u32)>,
    g: &config::Group,
    out: &Outbound,
) -> Group<Arc<HttpClient>> {
    let group = Group::new(members, Settings::of(g), out.route.as_deref());
    if let Some(HealthCheck::Get(path)) = &g.health_check {
        let probes =
            group.members().iter().zip(&g.members).filter_map(|(m, c)| probe(&m.client, &c.to, path)).collect();
        group.start_checks(probes);
    }
    group
}

/// An active check of an `http(s)://` member: `GET path` on it (through its own pool); 2xx and 3xx are healthy.
fn probe(client: &Arc<HttpClient>, member: &Target, path: &str) -> Option<Probe> {
    let Target::Http(t) = member else { return None };
    let scheme = if t.tls { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://{}{path}", t.authority).parse().ok()?;
    let host = HeaderValue::from_str(&t.authority.to_string()).ok()?;
    let (client, path) = (client.clone(), path.to_owned());
    Some(Box::new(move || {
        let (client, uri, host, path) = (client.clone(), uri.clone(), host.clone(), path.clone());
        Box::pin(async move {
            let mut req = Request::new(Body::empty());
            *req.uri_mut() = uri.clone();
            req.headers_mut().insert(header::HOST, host);
            req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("hopgate-health-check"));
            let resp = client.request(req).await.map_err(|e| client_error(e, &uri).detail().to_string())?;
            let status = resp.status();
            match status.is_success() || status.is_redirection() {
                true => Ok(()),
                false => Err(format!("health check GET {path} answered {}", status.as_u16())),
            }
        })
    }))
}

/// What is needed to send a replayable request (no body) once more.
struct Head {
    method: http::Method,
    uri: Uri,
    version: http::Version,
    headers: http::HeaderMap,
    proxied: Option<ProxiedClient>,
}

impl Head {
    fn of(req: &Request<Body>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            proxied: req.extensions().get::<ProxiedClient>().copied(),
        }
    }

    fn request(&self) -> Request<Body> {
        let mut req = Request::new(Body::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        if let Some(p) = self.proxied {
            req.extensions_mut().insert(p);
        }
        req
    }
}

/// Sends `req` to a member of `group` (balanced by `key`), and to others as the module says.
pub(super) async fn send(
    group: &Group<Arc<HttpClient>>,
    key: Option<u64>,
    req: Request<Body>,
    replayable: bool,
    prefix: &Prefix,
) -> Result<Response<ResponseBody>, Error> {
    let target = req.uri().clone();
    let head = replayable.then(|| Head::of(&req));
    let mut req = Some(req);
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = group.settings().retries;
    // The last failure of a request that was sent: the answer when no member is left to try.
    let mut failed: Option<Error> = None;
    // The member that failed the previous attempt, and why: logged as a retry once another member takes it.
    let mut again: Option<(usize, String)> = None;
    loop {
        let Some(mut pick) = group.pick(key, &tried) else {
            return Err(failed.unwrap_or_else(|| group.no_member(prefix, !tried.is_empty())));
        };
        if let Some((i, why)) = again.take() {
            group.retried(i, &why);
        }
        tried.push(pick.index());
        let attempt = match (req.take(), &head) {
            (Some(r), _) => r,
            (None, Some(head)) => head.request(),
            (None, None) => return Err(Error::local(Kind::Internal, "a request without its head to send again")),
        };
        let result = pick.client().try_request(attempt).await;
        // Errors name the member (the request's URI names the group's first).
        let member: Uri = pick.member().name.parse().unwrap_or_else(|_| target.clone());
        match result {
            Ok(resp) => {
                pick.answered(resp.status().as_u16());
                return Ok(resp);
            }
            Err(Failed { error, unsent: Some(back) }) => {
                let e = client_error(error, &member);
                if e.side() != Side::Upstream {
                    // A loop, or hopgate's own trouble: no member would do better.
                    return Err(e);
                }
                // Nothing of it was written: the member is out, and the request goes to another as it is.
                pick.unreachable(e.detail());
                again = Some((pick.index(), e.detail().to_owned()));
                req = Some(back);
            }
            Err(Failed { error, unsent: None }) => {
                let e = client_error(error, &member);
                if e.side() != Side::Upstream {
                    // The client's body broke off: not the member's doing.
                    return Err(e);
                }
                pick.failed(e.detail());
                if head.is_none() || retries == 0 {
                    return Err(e);
                }
                retries -= 1;
                again = Some((pick.index(), e.detail().to_owned()));
                failed = Some(e);
            }
        }
    }
}
