//! FastCGI gateway (FastCGI 1.0, responder role): hands a request to an application such as
//! php-fpm over TCP or a unix socket and streams its answer back as a CGI response.
//!
//! Order of steps: resolve SCRIPT_FILENAME under the root (404) -> build meta-variables -> take a
//! kept connection or dial (TCP through the route's [`Dialer`]: resolve once, the loop check, `script_timeout_secs`
//! as the connect timeout) -> BEGIN_REQUEST + PARAMS (a dead kept connection is retried once on a
//! fresh one here, before any stdin is sent) -> STDIN records from the body as it comes, STDOUT
//! handed out as it arrives -> END_REQUEST: the connection goes back to the pool.
//! Does not: multiplex requests on one connection, use the FILTER/AUTHORIZER roles, or send
//! ABORT_REQUEST (an abandoned request closes its connection instead).

mod exchange;
mod pool;
pub mod record;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

pub use pool::FastCgiAddr;

use crate::backend::NotAnswered;
use crate::backend::meta::{self, FastCgiLayout, GatewayError, GatewayResponse, MetaVars};
use crate::config::Symlinks;
use crate::error::Error;
use crate::idle::Stamp;
use crate::upstream::Dialer;
use exchange::{Exchange, Lease};
use pool::Pool;

/// An application silent this long (no output while nothing moves) answers 504.
pub const DEFAULT_FASTCGI_TIMEOUT_SECS: u64 = 60;
/// Connections to the application at once, per CPU core: requests beyond them wait for one to come free (up to
/// the route's `script_timeout_secs`, then 504).
pub const DEFAULT_FASTCGI_CONNECTIONS_PER_CORE: usize = 4;
/// Kept idle connections; keep it below the application's worker count (see `pool`).
pub const DEFAULT_FASTCGI_MAX_IDLE: usize = 2;
/// A kept connection idle longer than this is closed rather than reused.
pub const DEFAULT_FASTCGI_IDLE_SECS: u64 = 15;
pub const DEFAULT_FASTCGI_INDEX: &str = "index.php";
pub const DEFAULT_FASTCGI_SPLIT_SUFFIX: &str = ".php";

/// The only request id used: one request per connection at a time.
const REQUEST_ID: u16 = 1;

#[derive(Debug, Clone)]
pub struct FastCgiConfig {
    pub addr: FastCgiAddr,
    /// `--root`: SCRIPT_FILENAME base. `None`: no file system, the whole path is PATH_INFO.
    pub root: Option<PathBuf>,
    /// `--index`, for directory requests; default `DEFAULT_FASTCGI_INDEX`.
    pub index: String,
    /// PATH_INFO starts after the first segment ending in this; default `DEFAULT_FASTCGI_SPLIT_SUFFIX`.
    pub split_suffix: String,
    pub timeout: Duration,
    /// 0 disables FCGI_KEEP_CONN.
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// Whether symlinks under the root may lead out of it.
    pub symlinks: Symlinks,
    /// Connections at once (`max_connections`); default `DEFAULT_FASTCGI_CONNECTIONS_PER_CORE` per core.
    pub max_connections: usize,
}

impl FastCgiConfig {
    pub fn new(addr: FastCgiAddr) -> FastCgiConfig {
        FastCgiConfig {
            addr,
            root: None,
            index: DEFAULT_FASTCGI_INDEX.to_owned(),
            split_suffix: DEFAULT_FASTCGI_SPLIT_SUFFIX.to_owned(),
            timeout: Duration::from_secs(DEFAULT_FASTCGI_TIMEOUT_SECS),
            max_idle: DEFAULT_FASTCGI_MAX_IDLE,
            idle_timeout: Duration::from_secs(DEFAULT_FASTCGI_IDLE_SECS),
            symlinks: Symlinks::Follow,
            max_connections: DEFAULT_FASTCGI_CONNECTIONS_PER_CORE
                * std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The FastCGI gateway for one application. Share it (`Arc`) so requests share the pool.
#[derive(Debug)]
pub struct FastCgi {
    addr: FastCgiAddr,
    /// Dials `FastCgiAddr::Tcp` (a unix socket is no TCP connection: connected here, within `timeout`).
    dialer: Dialer,
    layout: Option<FastCgiLayout>,
    timeout: Duration,
    pool: Arc<Pool>,
    /// One permit per connection in use (`max_connections`): an idle kept connection is taken only with one, and
    /// a new one is dialled only when none is idle, so the open connections never exceed the permits.
    slots: Arc<Semaphore>,
    max_connections: usize,
}

impl FastCgi {
    /// Fails when the root does not exist.
    pub fn new(cfg: FastCgiConfig, dialer: Dialer) -> io::Result<FastCgi> {
        let layout = match &cfg.root {
            Some(root) if root.exists() && !root.is_dir() => {
                return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
            }
            Some(root) => Some(FastCgiLayout {
                root: std::fs::canonicalize(root)?,
                split_suffix: cfg.split_suffix.clone(),
                index: cfg.index.clone(),
                symlinks: cfg.symlinks,
            }),
            None => None,
        };
        Ok(FastCgi {
            addr: cfg.addr,
            dialer,
            layout,
            timeout: cfg.timeout,
            pool: Arc::new(Pool::new(cfg.max_idle, cfg.idle_timeout)),
            slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            max_connections: cfg.max_connections.max(1),
        })
    }

    /// The script at `rel` (a path under the root, `/`-separated, checked by the config) as the meta-variables
    /// describe it, with no PATH_INFO: the front controller. None without a root or when it is no regular file.
    pub fn script_at(&self, rel: &str) -> Option<meta::ScriptPath> {
        let layout = self.layout.as_ref()?;
        let segments: Vec<String> = rel.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let mut file = layout.root.clone();
        file.extend(&segments);
        match meta::stat_under(&layout.root, &file, layout.symlinks) {
            Ok(Some(m)) if m.is_file() => Some(meta::fastcgi_script(layout, &segments, &[])),
            _ => None,
        }
    }

    /// SCRIPT_NAME, PATH_INFO and SCRIPT_FILENAME for a URL path.
    pub fn resolve(&self, uri_path: &str) -> Result<meta::ScriptPath, GatewayError> {
        match &self.layout {
            Some(layout) => meta::resolve_fastcgi(layout, uri_path),
            None => meta::resolve_app(uri_path),
        }
    }

    /// Sends one request with exactly `vars` as PARAMS; returns once the response head is in.
    pub async fn send<S, E>(&self, vars: &MetaVars, body: S) -> Result<GatewayResponse, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.try_send(vars, body).await.map_err(NotAnswered::error)
    }

    /// [`FastCgi::send`], with the body back when nothing of the request reached the application (no
    /// connection could be opened, or writing BEGIN_REQUEST and PARAMS to a new one failed).
    pub async fn try_send<S, E>(&self, vars: &MetaVars, body: S) -> Result<GatewayResponse, NotAnswered<S>>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let keep = self.pool.keeps();
        let mut head = BytesMut::new();
        let flags = if keep { record::KEEP_CONN } else { 0 };
        record::put_begin_request(&mut head, REQUEST_ID, record::ROLE_RESPONDER, flags);
        record::put_params(&mut head, REQUEST_ID, vars);
        let limit =
            vars.get("CONTENT_LENGTH").and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<u64>().ok());
        if Exchange::bodiless(limit) {
            // With PARAMS: nothing is left to send once the application answers, so its END_REQUEST can return the
            // connection to the pool at once (a feeding task still under way would make it unkeepable).
            record::put_record(&mut head, record::STDIN, REQUEST_ID, &[]);
        }

        let permit = tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                NotAnswered::Sent(
                    GatewayError::timeout(format!(
                        "no connection to {} came free within {:?} (max_connections {})",
                        self.addr, self.timeout, self.max_connections
                    ))
                    .into(),
                )
            })?
            .map_err(|_| NotAnswered::Sent(GatewayError::unavailable("the FastCGI gateway is closing").into()))?;
        // A kept connection may have died while idle; nothing of the body is spent before this
        // write succeeds, so one retry on a fresh connection is safe.
        let mut pooled = self.pool.checkout();
        let conn = loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => match pool::dial(&self.addr, &self.dialer, self.timeout).await {
                    Ok(c) => c,
                    Err(e) => return Err(NotAnswered::Unsent(e, body)),
                },
            };
            match tokio::time::timeout(self.timeout, conn.write_all(&head)).await {
                Ok(Ok(())) => {
                    if reused && let Some(route) = self.dialer.route() {
                        route.reused.inc();
                    }
                    break conn;
                }
                Ok(Err(e)) if reused => {
                    tracing::debug!(upstream = %self.addr, error = %e, "kept connection dead, redialing");
                }
                // A new connection that took nothing: the application never saw the request.
                Ok(Err(e)) => {
                    return Err(NotAnswered::Unsent(
                        GatewayError::closed(format!("writing to {}", self.addr), e).into(),
                        body,
                    ));
                }
                Err(_) => {
                    return Err(NotAnswered::Sent(GatewayError::timeout(format!("writing to {}", self.addr)).into()));
                }
            }
        };
        let progress = Arc::new(Stamp::now());
        let exchange = Exchange::start(
            conn,
            body,
            limit,
            progress,
            self.timeout,
            Lease { permit, pool: keep.then(|| self.pool.clone()) },
            self.addr.to_string(),
        );
        meta::read_response(exchange).await.map_err(|e| NotAnswered::Sent(e.into()))
    }

    /// An active check (`health_check = "fcgi"`): a new connection, an `FCGI_GET_VALUES` record asking for
    /// `FCGI_MAX_CONNS`, `FCGI_MAX_REQS` and `FCGI_MPXS_CONNS`, and an `FCGI_GET_VALUES_RESULT` back.
    pub async fn check(&self) -> Result<(), String> {
        let mut conn = pool::dial(&self.addr, &self.dialer, self.timeout).await.map_err(|e| e.detail().to_owned())?;
        let mut names = BytesMut::new();
        for name in [&b"FCGI_MAX_CONNS"[..], b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"] {
            record::put_name_value(&mut names, name, b"");
        }
        let mut out = BytesMut::new();
        record::put_record(&mut out, record::GET_VALUES, 0, &names);
        conn.write_all(&out).await.map_err(|e| format!("writing FCGI_GET_VALUES to {}: {e}", self.addr))?;
        let mut buf = BytesMut::new();
        loop {
            match record::decode(&mut buf).map_err(|e| e.to_string())? {
                Some(r) if r.kind == record::GET_VALUES_RESULT => return Ok(()),
                Some(r) => {
                    return Err(format!("{} answered FCGI_GET_VALUES with a record of type {}", self.addr, r.kind));
                }
                None => {}
            }
            let n = tokio::io::AsyncReadExt::read_buf(&mut conn, &mut buf)
                .await
                .map_err(|e| format!("reading from {}: {e}", self.addr))?;
            if n == 0 {
                return Err(format!("{} closed the connection without an FCGI_GET_VALUES_RESULT", self.addr));
            }
        }
    }

    /// The application's address, as the log names it.
    pub fn addr(&self) -> &FastCgiAddr {
        &self.addr
    }
}
