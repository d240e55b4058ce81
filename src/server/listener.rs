//! The run-time state of a listener, built from its config by one pure function: the hop facts, the TLS
//! acceptor, and the route table with every room. A set of them built from one config can replace another as a
//! whole; a connection keeps the state it was accepted with.

use std::net::SocketAddr;
use std::sync::Arc;

use super::log::AccessLogger;
use super::proxied::Proxied;
use super::tls::Acceptor;
use crate::backend::Hop;
use crate::config::{self, Limits};
use crate::error::StartupError;
use crate::http::{ViaName, auth};
use crate::limit::Throttle;
use crate::metrics::{ListenerMetrics, Metrics, RouteMetrics};
use crate::route::Table;
use crate::upstream::Outbound;

/// Where a listener's connections find its current state: each request loads it, so a reload that stores a new
/// state reaches new requests on kept-alive connections, while requests in flight keep the one they loaded.
pub type Slot = Arc<arc_swap::ArcSwap<ListenerState>>;

pub struct ListenerState {
    pub hop: Hop,
    /// The TLS side of an `https://` listener (certificates loaded, SNI resolver built).
    pub acceptor: Option<Acceptor>,
    /// Behind a balancer: every connection starts with a PROXY protocol header (`proxy_protocol`).
    pub proxied: Option<Proxied>,
    pub limits: Limits,
    pub table: Table,
    pub log: Arc<AccessLogger>,
    /// What this listener counts, labelled with its URL as `listening on` prints it.
    pub metrics: Arc<ListenerMetrics>,
    /// What requests no route took (the head checks' 400s, 404s) count for: route `-`.
    pub unrouted: Arc<RouteMetrics>,
}

/// What start-up needs from the outside world to build a listener.
pub struct Shared {
    pub out: Outbound,
    pub log: Arc<AccessLogger>,
    pub limits: Limits,
    /// Proxy authentication's verification pool and failure record, one per process.
    pub auth: Arc<auth::Guard>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The verification pool and failure record every listener's users file shares.
    pub fn auth_guard(limits: &Limits) -> Arc<auth::Guard> {
        Arc::new(auth::Guard::new(auth::AuthLimits {
            max_verifying: limits.auth_max_verifying,
            max_queued: limits.auth_max_queued,
        }))
    }
}

impl ListenerState {
    /// A new connection's throttle, when its listener's policy may limit bytes (else its bytes are never
    /// looked at).
    pub fn throttle(&self) -> Option<Arc<Throttle>> {
        self.table.proxy.as_ref().filter(|p| p.policy.limits_bytes()).map(|_| Throttle::new())
    }
}

pub fn build(cfg: &config::Listener, local: SocketAddr, shared: &Shared) -> Result<ListenerState, StartupError> {
    let t = shared.out.timeouts;
    let hop = Hop {
        local,
        tls: cfg.listen.tls,
        via_name: ViaName::new(&cfg.via_name.clone().unwrap_or_else(|| format!("{}:{}", hostname(), local.port()))),
        timeouts: t,
    };
    let label = format!("{}://{local}", hop.scheme());
    let table = Table::build(cfg, &hop, &shared.out, &shared.auth, &shared.metrics, &label)?;
    let acceptor = match cfg.listen.tls {
        true => Some(Acceptor::new(&cfg.certs, t.tls_handshake).map_err(|e| e.or_at(cfg.at.as_ref()))?),
        false => None,
    };
    let proxied = cfg.proxy_protocol.clone().map(|config| {
        if config.from.is_empty() {
            tracing::warn!(
                "listener {label} takes PROXY headers from any address: whoever reaches it can claim any client \
                 address (list the balancers in proxy_protocol_from)"
            );
        }
        Proxied { config, metrics: shared.metrics.proxy_headers(&label) }
    });
    let unrouted = shared.metrics.route(&label, crate::metrics::NO_ROUTE);
    let metrics = shared.metrics.listener(&label);
    let log = shared.log.clone();
    Ok(ListenerState { hop, acceptor, proxied, limits: shared.limits, table, log, metrics, unrouted })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "hopgate".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') { "hopgate".into() } else { name }
}
