//! The run-time state of a listener, built once from its config at start-up: pooled clients, dialers, and one
//! state per gateway route.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{Authority, Scheme};

use super::log::AccessLogger;
use super::tls::Acceptor;
use crate::backend::ftp::{FtpPool, FtpPoolConfig, FtpRoute};
use crate::backend::{app, relay};
use crate::config::{self, Limits, Target, Timeouts};
use tokio::sync::Semaphore;

use crate::http::auth;
use crate::http::htpasswd::Users;
use crate::upstream::tls::Origination;
use crate::upstream::{Dialer, HttpClient, OwnAddrs, ParentProxy, TargetPolicy, gateway_client, http_client};

pub struct ListenerState {
    /// The address actually bound (port 0 resolved).
    pub local: SocketAddr,
    pub tls: bool,
    /// The TLS side of an `https://` listener (certificates loaded, SNI resolver built).
    pub acceptor: Option<Acceptor>,
    /// The `received-by` this listener writes into Via and recognises as a loop.
    pub via_name: String,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub proxy: Option<ProxyState>,
    pub routes: Vec<RouteState>,
    pub log: Arc<AccessLogger>,
}

impl ListenerState {
    /// The address clients reach this listener on, for hints in error pages.
    pub fn public_addr(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.local)
    }
}

pub struct ProxyState {
    pub cfg: config::Proxy,
    /// Client-chosen targets: the target policy applies.
    pub dialer: Dialer,
    pub client: HttpClient,
    /// With a users file, proxy authentication is required.
    pub users: Option<Users>,
    pub parent: Option<Arc<ParentProxy>>,
    /// One permit per open tunnel.
    pub tunnels: Arc<Semaphore>,
    /// Absolute-form `ftp://` targets (the HTTP/FTP gateway), dialed with the same policy.
    pub ftp: FtpRoute,
    /// The protocols relayed requests may upgrade to (the listener's `upgrades`).
    pub upgrades: config::Upgrades,
}

pub struct RouteState {
    pub cfg: config::Route,
    pub backend: Backend,
}

/// A gateway route's room, ready to serve.
// Built once per route at start-up and never moved afterwards: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Relay(relay::Gateway),
    /// `cgi:DIR`: the script slots live here.
    Cgi(app::Gateway),
    /// `fastcgi://` or `fastcgi+unix:`: the pool of kept connections lives here.
    FastCgi(app::Gateway),
    /// `scgi://`.
    Scgi(app::Gateway),
    /// `ftp://`: the pool of logged-in control connections lives here.
    Ftp(FtpRoute),
}

/// What start-up needs from the outside world to build a listener.
pub struct Shared {
    pub own: Arc<OwnAddrs>,
    pub log: Arc<AccessLogger>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Proxy authentication's verification pool and failure record, one per process.
    pub auth: Arc<auth::Guard>,
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

pub fn build(cfg: &config::Listener, local: SocketAddr, shared: &Shared) -> Result<ListenerState, String> {
    let t = shared.timeouts;
    let via_name = cfg.via_name.clone().unwrap_or_else(|| format!("{}:{}", hostname(), local.port()));
    let proxy = match &cfg.proxy {
        None => None,
        Some(p) => {
            let dialer = Dialer::new(Some(TargetPolicy::new(p.allow_targets.clone())), shared.own.clone(), t.connect);
            let parent = p.parent.as_ref().map(|parent| {
                // The parent is the operator's choice: no target policy, but the loop check stays.
                let dialer = Dialer::new(None, shared.own.clone(), t.connect);
                Arc::new(ParentProxy::new(parent, dialer, t.response_head, &via_name))
            });
            // Absolute-form https:// targets: TLS origination, verified against the system roots plus `ca`.
            let tls = Origination::new(p.ca.as_deref(), t.connect)?;
            let client = http_client(
                dialer.clone(),
                parent.clone(),
                Some(tls),
                t.pool_idle,
                config::DEFAULT_POOL_MAX_IDLE_PER_HOST,
            );
            let users = match &p.users {
                Some(path) => Some(
                    Users::load_with(path, shared.auth.clone())
                        .map_err(|e| format!("users file {}: {e}", path.display()))?,
                ),
                None => None,
            };
            let tunnels = Arc::new(Semaphore::new(p.max_tunnels));
            let ftp_pool = FtpPool::new(FtpRoute::settings(&t), FtpPoolConfig::default());
            let ftp = FtpRoute::forward(ftp_pool, dialer.clone(), p.parent.as_ref().map(|p| p.authority.to_string()));
            let upgrades = cfg.upgrades.clone();
            Some(ProxyState { cfg: p.clone(), dialer, client, users, parent, tunnels, ftp, upgrades })
        }
    };
    let mut routes = Vec::new();
    for r in &cfg.routes {
        routes.push(RouteState { cfg: r.clone(), backend: build_backend(r, &cfg.upgrades, shared)? });
    }
    let acceptor = if cfg.listen.tls { Some(Acceptor::new(&cfg.certs, t.tls_handshake)?) } else { None };
    Ok(ListenerState {
        local,
        tls: cfg.listen.tls,
        acceptor,
        via_name,
        limits: shared.limits,
        timeouts: t,
        proxy,
        routes,
        log: shared.log.clone(),
    })
}

/// `upgrades`: the listener's list, for a route without its own.
fn build_backend(r: &config::Route, upgrades: &config::Upgrades, shared: &Shared) -> Result<Backend, String> {
    let t = shared.timeouts;
    match &r.to {
        Target::Http { tls, authority, base } => {
            // The operator chose this target: no target policy, but the loop check still applies.
            let dialer = Dialer::new(None, shared.own.clone(), t.connect);
            // HTTP/HTTPS: verified TLS to the origin (system roots plus the route's `ca`).
            let origination = if *tls { Some(Origination::new(r.ca.as_deref(), t.connect)?) } else { None };
            let authority: Authority =
                authority.to_string().parse().map_err(|_| format!("{}: invalid authority", r.to))?;
            let scheme = if *tls { Scheme::HTTPS } else { Scheme::HTTP };
            let max_idle = config::DEFAULT_POOL_MAX_IDLE_PER_HOST;
            let client = gateway_client(dialer, origination, &scheme, &authority, t.pool_idle, max_idle);
            Ok(Backend::Relay(relay::Gateway {
                client,
                scheme,
                authority,
                base: base.clone(),
                prefix: r.path.clone(),
                upgrades: r.upgrades.clone().unwrap_or_else(|| upgrades.clone()),
            }))
        }
        Target::Cgi { .. } => Ok(Backend::Cgi(app::Gateway::new(r)?)),
        Target::FastCgi { .. } => Ok(Backend::FastCgi(app::Gateway::new(r)?)),
        Target::Scgi { .. } => Ok(Backend::Scgi(app::Gateway::new(r)?)),
        Target::Ftp { .. } => {
            // The operator chose this server: no target policy, but the loop check still applies.
            let dialer = Dialer::new(None, shared.own.clone(), t.connect);
            let pool = FtpPool::new(FtpRoute::settings(&t), FtpPoolConfig::default());
            Ok(Backend::Ftp(FtpRoute::gateway(r, pool, dialer)?))
        }
    }
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
