//! CGI/1.1 gateway (RFC 3875): runs the script a request path names under a directory, one
//! process per request, and streams its output back.
//!
//! Order of steps: resolve the script (404/403) -> build meta-variables -> wait for a script slot
//! -> spawn in its own process group -> feed stdin / read the head from stdout -> hand the body out. A script
//! silent for the timeout, or running past its total (`script_total_secs`), is killed with its group.
//! Does not: follow local redirects (the HTTP side does, up to `MAX_LOCAL_REDIRECTS`), buffer
//! request bodies, or parse nph- output (it is handed out raw).

mod process;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::meta::{self, CgiScript, GatewayBody, GatewayError, GatewayResponse, MetaVars};

/// A script silent (no output, no stdin taken) this long is killed with its process group.
pub const DEFAULT_CGI_TIMEOUT_SECS: u64 = 60;
/// A script running longer than this in all is killed with its process group, however steadily it writes; a
/// response already under way is cut, never ended as if complete.
pub const DEFAULT_CGI_TOTAL_SECS: u64 = 600;
/// Scripts running at once, per CPU core; the rest wait for a slot (up to the timeout).
pub const DEFAULT_CGI_SCRIPTS_PER_CORE: usize = 4;
/// The only variable a script gets besides the meta-variables.
pub const CGI_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, Clone)]
pub struct CgiConfig {
    /// Directory holding the scripts (`cgi:DIR`).
    pub dir: PathBuf,
    /// Default `DEFAULT_CGI_TIMEOUT_SECS`.
    pub timeout: Duration,
    /// Default `DEFAULT_CGI_SCRIPTS_PER_CORE` times the number of cores.
    pub max_scripts: usize,
    /// How long a script may run in all (`script_total_secs`); default `DEFAULT_CGI_TOTAL_SECS`.
    pub total: Duration,
}

impl CgiConfig {
    pub fn new(dir: impl Into<PathBuf>) -> CgiConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CgiConfig {
            dir: dir.into(),
            timeout: Duration::from_secs(DEFAULT_CGI_TIMEOUT_SECS),
            max_scripts: DEFAULT_CGI_SCRIPTS_PER_CORE * cores,
            total: Duration::from_secs(DEFAULT_CGI_TOTAL_SECS),
        }
    }
}

/// What a script produced.
#[derive(Debug)]
pub enum CgiOutput {
    /// A parsed CGI response (document or redirect).
    Parsed(GatewayResponse),
    /// An nph- script: its stdout is a complete HTTP response (status line included), to be
    /// passed to the client unaltered.
    Nph(GatewayBody),
}

/// The CGI gateway for one directory. Cheap to share (`Arc` it); the script slots are shared.
#[derive(Debug)]
pub struct Cgi {
    dir: PathBuf,
    timeout: Duration,
    total: Duration,
    slots: Arc<Semaphore>,
    /// Scripts running, and requests waiting for a slot (the route's `cgi_scripts_running` and `_queued`).
    running: Gauge,
    queued: Gauge,
}

/// A script slot, held until the script's process has been reaped; counted running meanwhile.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

impl Cgi {
    /// Fails when the directory does not exist. `running` and `queued` are the gauges it keeps up to date.
    pub fn new(cfg: CgiConfig, running: Gauge, queued: Gauge) -> io::Result<Cgi> {
        Ok(Cgi {
            dir: std::fs::canonicalize(&cfg.dir)?,
            timeout: cfg.timeout,
            total: cfg.total,
            slots: Arc::new(Semaphore::new(cfg.max_scripts.max(1))),
            running,
            queued,
        })
    }

    /// The script a URL path names, and the PATH_INFO after it.
    pub fn resolve(&self, uri_path: &str) -> Result<CgiScript, GatewayError> {
        meta::resolve_cgi(&self.dir, uri_path)
    }

    /// Runs a resolved script with exactly `vars` (plus PATH) as its environment.
    pub async fn run<S, E>(&self, script: &CgiScript, vars: &MetaVars, body: S) -> Result<CgiOutput, GatewayError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.queued.inc();
        let waited = tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await;
        self.queued.dec();
        let permit = waited
            .map_err(|_| GatewayError::timeout("no free CGI slot"))?
            .map_err(|_| GatewayError::unavailable("CGI gateway closed"))?;
        self.running.inc();
        let slot = Slot { _permit: permit, running: self.running.clone() };
        let stdout = process::spawn(script, vars, body, self.timeout, self.total, slot)?;
        if script.nph {
            return Ok(CgiOutput::Nph(GatewayBody::new(Bytes::new(), stdout)));
        }
        Ok(CgiOutput::Parsed(meta::read_response(stdout).await?))
    }
}
