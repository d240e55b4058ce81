//! The admin listener (`[admin] listen`, `--admin ADDR`): plain HTTP on the address it is told, for operators and
//! their tools. `GET /metrics` (OpenMetrics text, for Prometheus), `GET /` (a stats page for a person, which
//! refreshes itself by polling `/stats.json` and reads fine without JavaScript), `GET /stats.json`, `GET /healthz`
//! (200 while the process runs) and `GET /readyz` (200 while hopgate accepts work, 503 from the moment a drain
//! starts, so that a load balancer stops sending before the listeners close). With a users file every request
//! needs `Authorization: Basic` (401 otherwise).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::stats::{self, History};
use crate::error::{Error, Kind};
use crate::http::htpasswd::{Outcome, Users};
use crate::http::{Body, pages};
use crate::metrics::Metrics;

/// How long an admin connection may sit idle, or take to send its request head.
const ADMIN_IDLE: Duration = Duration::from_secs(30);
/// How often the stats page's rates are sampled (the rate is over the last [`stats::WINDOW`]).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the admin endpoints read.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    users: Option<Users>,
    /// True while hopgate accepts work; false from the moment a drain starts.
    ready: AtomicBool,
    history: History,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, users: Option<Users>) -> Arc<Admin> {
        Arc::new(Admin { metrics, users, ready: AtomicBool::new(true), history: History::default() })
    }

    /// A drain started: `/readyz` answers 503 from now on.
    pub fn draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Serves the admin listener until `stop` says so; samples the rates meanwhile.
    pub async fn serve(self: Arc<Self>, tcp: Arc<TcpListener>, mut stop: watch::Receiver<bool>) {
        let tasks = TaskTracker::new();
        let sampler = {
            let admin = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    tick.tick().await;
                    admin.history.sample(&admin.metrics);
                }
            })
        };
        loop {
            let (stream, peer) = tokio::select! {
                r = tcp.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("admin accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let admin = self.clone();
            tasks.spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
                });
                let mut b = http1::Builder::new();
                b.max_buf_size(64 * 1024).header_read_timeout(ADMIN_IDLE).timer(hyper_util::rt::TokioTimer::new());
                let conn = b.serve_connection(TokioIo::new(stream), svc);
                if tokio::time::timeout(ADMIN_IDLE * 10, conn).await.is_err() {
                    tracing::debug!(client = %peer, "admin connection closed after {:?}", ADMIN_IDLE * 10);
                }
            });
        }
        sampler.abort();
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        match self.answer(&req, peer).await {
            Ok(resp) => resp,
            Err(e) => pages::error(&e),
        }
    }

    async fn answer(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, Error> {
        self.authorize(req, peer).await?;
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(Error::client(Kind::MethodNotAllowed, format!("{} is not served here", req.method()))
                .with_field(header::ALLOW, HeaderValue::from_static("GET, HEAD")));
        }
        let ready = self.is_ready();
        let resp = match req.uri().path() {
            "/metrics" => {
                ok("application/openmetrics-text; version=1.0.0; charset=utf-8", self.metrics.encode().into_bytes())
            }
            "/healthz" => ok("text/plain; charset=utf-8", b"ok".to_vec()),
            "/readyz" if ready => ok("text/plain; charset=utf-8", b"ok".to_vec()),
            "/readyz" => {
                let mut r = ok("text/plain; charset=utf-8", b"draining".to_vec());
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            }
            "/stats.json" => {
                let stats = stats::collect(&self.metrics, &self.history, ready);
                ok("application/json", stats::to_json(&stats).into_bytes())
            }
            "/" => {
                let stats = stats::collect(&self.metrics, &self.history, ready);
                ok("text/html; charset=utf-8", stats::to_html(&stats).into_bytes())
            }
            other => return Err(Error::client(Kind::NotFound, format!("no admin page {other}"))),
        };
        Ok(resp)
    }

    /// With a users file, `Authorization: Basic` credentials from it (the same checks and limits as proxy
    /// authentication), else 401.
    async fn authorize(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), Error> {
        let Some(users) = &self.users else { return Ok(()) };
        let challenge = HeaderValue::from_static("Basic realm=\"hopgate admin\"");
        let detail = match req.headers().get(header::AUTHORIZATION) {
            None => "authentication required",
            Some(v) => match users.check_basic(v, peer.ip()).await {
                Outcome::Accepted => return Ok(()),
                Outcome::Busy(_) => {
                    return Err(Error::local(Kind::Overloaded, "too many credential checks waiting: retry shortly")
                        .with_field(header::RETRY_AFTER, HeaderValue::from_static("1")));
                }
                _ => "credentials rejected",
            },
        };
        Err(Error::client(Kind::Unauthorized, detail).with_challenge(challenge))
    }
}

fn ok(content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}
