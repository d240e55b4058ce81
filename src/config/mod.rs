//! The one configuration type. Every command-line form (`hopgate`, `hopgate proxy`, `hopgate gateway`) builds the
//! same [`Config`] a TOML file describes (`hopgate run FILE`), so a config that checks is a config that runs.
//! Defaults are `DEFAULT_*` constants next to the field they fill; docs/configuration.md lists them all.

mod group;
mod load;
mod policy;
mod prefix;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::error::{At, StartupError};
pub use group::{
    Balance, DEFAULT_HEALTH_INTERVAL_SECS, DEFAULT_HEALTH_TIMEOUT_SECS, DEFAULT_HEALTHY_AFTER, DEFAULT_MAX_FAILS,
    DEFAULT_RETRIES, DEFAULT_UNHEALTHY_AFTER, Group, HealthCheck, MAX_COUNT, MAX_GROUP_MEMBERS, MAX_WEIGHT, Member,
    check_members,
};
pub use load::{load_file, load_str};
pub use policy::{
    DEFAULT_HOST_VERIFY, DEFAULT_SPOOF_SOURCE, DomainPattern, Intercept, InterceptMode, MIN_BYTES_PER_SECOND,
    ProxyRule, Rates,
};
pub use prefix::Prefix;
pub use target::{
    AppOptions, Authority, CgiTarget, FastCgiTarget, FileOptions, FileTarget, FtpTarget, HttpTarget, OptionError,
    ScgiTarget, Symlinks, Target, TargetOption, UpstreamHttp, UpstreamSocket, authority_port, parse_port,
};

/// A config that can't be loaded: where (FILE:LINE) and why.
pub type ConfigError = StartupError;

pub use crate::http::upgrade::{Allowed as Upgrades, Protocol as UpgradeProtocol};
pub use crate::proxy_protocol::Version as ProxyVersion;

/// Where the embedded default listens.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Seconds in-flight work may take to finish after SIGINT/SIGTERM.
pub const DEFAULT_DRAIN_SECS: f64 = 10.0;

/// Largest request head (request line plus header fields) in bytes; larger gets 431.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 32 * 1024;
/// Longest request target in bytes; longer gets 414.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields in a request head; more gets 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The largest `max_headers` a config may set (hyper sizes a per-request array by it).
pub const MAX_HEADERS_LIMIT: usize = 10_000;
/// Most client connections open at once per process; past it new connections wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Proxy credential checks waiting for a verification thread, beyond those running; past it: 503.
pub const DEFAULT_AUTH_MAX_QUEUED: usize = 32;

/// The largest `auth_max_verifying` a config may set (a thread each).
pub const MAX_AUTH_VERIFYING_LIMIT: usize = 1024;

/// Proxy credential checks (bcrypt, `$apr1$`) running at once: half the CPU cores, at least one, so that a flood
/// of wrong passwords leaves the other half for serving.
pub fn default_auth_max_verifying() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

/// A client must send a complete request head within this many seconds of its first byte (slowloris).
pub const DEFAULT_HEADER_READ_SECS: f64 = 10.0;
/// A kept-alive client connection with no request in flight is closed after this many idle seconds.
pub const DEFAULT_IDLE_SECS: f64 = 60.0;
/// Seconds to establish a TCP (and TLS) connection to an upstream.
pub const DEFAULT_CONNECT_SECS: f64 = 10.0;
/// Seconds from sending a request upstream until its response head arrives.
pub const DEFAULT_RESPONSE_HEAD_SECS: f64 = 60.0;
/// Seconds a pooled upstream connection may stay idle before it is closed.
pub const DEFAULT_POOL_IDLE_SECS: f64 = 30.0;
/// Most idle pooled connections kept per upstream host.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
/// Requests at once on one HTTP/2 upstream connection (`upstream_max_streams`) before another opens.
pub const DEFAULT_UPSTREAM_MAX_STREAMS: usize = 100;
/// A tunnel (CONNECT, upgrade) with no bytes either way for this many seconds is closed.
pub const DEFAULT_TUNNEL_IDLE_SECS: f64 = 300.0;
/// Most tunnels open at once per listener; past it CONNECT gets 503.
pub const DEFAULT_MAX_TUNNELS: usize = 10_000;
/// Seconds a client has to finish its TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_SECS: f64 = 10.0;

/// The only port CONNECT may reach unless `connect_ports` says otherwise.
pub const DEFAULT_CONNECT_PORTS: &[u16] = &[443];

/// The longest route `name`, in bytes (it is a label of the access log and of metrics).
pub const MAX_ROUTE_NAME_BYTES: usize = 128;

/// The name the forward proxy's requests carry in the access log (`route`), as a gateway route carries its `name`.
pub const PROXY_ROUTE_NAME: &str = "proxy";

/// The name an intercepting listener's requests and connections carry in the access log (`route`).
pub const INTERCEPT_ROUTE_NAME: &str = "intercept";

/// Everything one hopgate process serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub drain: Duration,
    /// After SIGTERM, how long listeners keep accepting while `/readyz` already says 503 (default 0).
    pub drain_grace: Duration,
    pub access_log: AccessLog,
    pub access_log_format: AccessLogFormat,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub listeners: Vec<Listener>,
    /// The admin listener (metrics, stats, health), off by default.
    pub admin: Option<Admin>,
}

/// The admin listener (`[admin]`, `--admin ADDR`): plain HTTP with `/metrics`, `/stats.json`, `/`, `/healthz` and
/// `/readyz`. It binds only what it is told; a non-loopback address needs `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// htpasswd file: every admin request then needs `Authorization: Basic` (401).
    pub users: Option<PathBuf>,
    /// The place of `listen` in a config file.
    pub at: Option<At>,
}

impl Admin {
    /// A non-loopback admin address without a users file would publish the stats (client addresses, targets) to
    /// whoever reaches it: refused.
    pub fn check(&self) -> Result<(), String> {
        if self.users.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "admin listener {} is not a loopback address: it needs a users file (users = \"HTPASSWD\", \
                 --admin-users) for Basic authentication",
                self.listen
            ));
        }
        Ok(())
    }
}

/// Where the one-line-per-request access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
    File(PathBuf),
}

/// How an access-log line is written (docs/operations.md has an example of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// hopgate's own line: `TIME CLIENT "METHOD TARGET VERSION" STATUS BYTES DURATIONms UPSTREAM`.
    #[default]
    Hopgate,
    /// Apache's Common Log Format: `%h %l %u %t "%r" %>s %b`.
    Common,
    /// Apache's Combined Log Format: common, then `"%{Referer}i" "%{User-agent}i"`.
    Combined,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    /// The value of `--access-log-format` and `access_log_format`.
    pub fn parse(s: &str) -> Result<AccessLogFormat, String> {
        match s {
            "hopgate" => Ok(AccessLogFormat::Hopgate),
            "common" => Ok(AccessLogFormat::Common),
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            other => Err(format!("unknown access log format {other:?}: expected hopgate, common, combined or json")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Hopgate => "hopgate",
            AccessLogFormat::Common => "common",
            AccessLogFormat::Combined => "combined",
            AccessLogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Proxy credential checks running at once (one thread each).
    pub auth_max_verifying: usize,
    /// Proxy credential checks waiting for a thread.
    pub auth_max_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth_max_verifying: default_auth_max_verifying(),
            auth_max_queued: DEFAULT_AUTH_MAX_QUEUED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub connect: Duration,
    pub response_head: Duration,
    pub pool_idle: Duration,
    pub tunnel_idle: Duration,
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs_f64(DEFAULT_HEADER_READ_SECS),
            idle: Duration::from_secs_f64(DEFAULT_IDLE_SECS),
            connect: Duration::from_secs_f64(DEFAULT_CONNECT_SECS),
            response_head: Duration::from_secs_f64(DEFAULT_RESPONSE_HEAD_SECS),
            pool_idle: Duration::from_secs_f64(DEFAULT_POOL_IDLE_SECS),
            tunnel_idle: Duration::from_secs_f64(DEFAULT_TUNNEL_IDLE_SECS),
            tls_handshake: Duration::from_secs_f64(DEFAULT_TLS_HANDSHAKE_SECS),
        }
    }
}

/// One listening socket and what it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub listen: ListenAddr,
    /// Certificates for `https://` listeners; the first is the default, the others are picked by SNI.
    pub certs: Vec<CertPair>,
    /// Present: this listener is a forward proxy for absolute-form requests and CONNECT.
    pub proxy: Option<Proxy>,
    /// Origin-form requests are matched against these, most specific first.
    pub routes: Vec<Route>,
    /// The `received-by` name this listener writes into Via; default `HOSTNAME:PORT`.
    pub via_name: Option<String>,
    /// The listener's place in a config file (the line of `listen`).
    pub at: Option<At>,
    /// Protocols its forward proxy may upgrade to, and its routes unless they say otherwise; default
    /// `["websocket"]` ([`Upgrades::default`]).
    pub upgrades: Upgrades,
    /// Every connection starts with a PROXY protocol header from a balancer (`proxy_protocol`,
    /// `proxy_protocol_from`); None: connections are clients themselves.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// SO_REUSEPORT: other processes (and sockets) may bind the same address (`reuse_port`).
    pub reuse_port: bool,
    /// Present: the listener takes connections the packet filter redirected to it (`mode`), and relays or
    /// splices them to their original destination under its proxy's policy.
    pub intercept: Option<Intercept>,
}

/// A listener behind a layer-4 balancer that passes each connection's client in a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// The one version accepted (`"v1"` text or `"v2"` binary).
    pub version: ProxyVersion,
    /// The addresses balancers connect from; a connection from anywhere else is closed unanswered. Empty: any
    /// address (`proxy_protocol_from` not given), which `check` and `run` warn about.
    pub from: Vec<IpNet>,
}

impl ProxyProtocol {
    /// Whether a connection from `ip` may send a header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.from.is_empty() || self.from.iter().any(|net| net.contains(&ip))
    }
}

/// `ADDR`, `http://ADDR` or `https://ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub tls: bool,
    pub addr: SocketAddr,
}

impl ListenAddr {
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Forward-proxy settings of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub connect_ports: Vec<u16>,
    pub allow_targets: Vec<IpNet>,
    pub users: Option<PathBuf>,
    pub parent: Option<Parent>,
    pub ca: Option<PathBuf>,
    pub max_tunnels: usize,
    /// Not empty: only targets matching one of these names are served.
    pub allow_domains: Vec<DomainPattern>,
    /// Targets matching one of these are refused (deny wins over allow).
    pub deny_domains: Vec<DomainPattern>,
    /// Apache `AuthGroupFile` naming the groups rules may name.
    pub groups: Option<PathBuf>,
    /// Per-user rules, first match wins; its lists replace these for that request.
    pub rules: Vec<ProxyRule>,
    /// Per client address and per authenticated user.
    pub rates: Rates,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            connect_ports: DEFAULT_CONNECT_PORTS.to_vec(),
            allow_targets: Vec::new(),
            users: None,
            parent: None,
            ca: None,
            max_tunnels: DEFAULT_MAX_TUNNELS,
            allow_domains: Vec::new(),
            deny_domains: Vec::new(),
            groups: None,
            rules: Vec::new(),
            rates: Rates::default(),
        }
    }
}

/// An upstream proxy every request and tunnel goes through: `http://[user:pass@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Parent {
    pub authority: Authority,
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keep credentials out of Debug output.
        f.debug_struct("Parent")
            .field("authority", &self.authority)
            .field("credentials", &self.credentials.as_ref().map(|(u, _)| (u, "<hidden>")))
            .finish()
    }
}

/// A gateway route: requests whose Host and path match go to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Host name (no port) to match, as [`host_key`] makes it; None matches every host.
    pub host: Option<String>,
    /// The path prefix requests must be under (matched on segment boundaries).
    pub path: Prefix,
    /// Where requests go, with the options of that kind of target (a group's first member).
    pub to: Target,
    /// Present: `to` was a list (or a group key was given): every member, `to` first, with the balancing, health
    /// and retry settings (docs/upstreams.md). Absent: the one upstream `to`, as before groups existed.
    pub group: Option<Group>,
    /// What the access log calls the route; None: [`Route::name`] is its target.
    pub name: Option<String>,
    /// The route's place in a config file (the line of `to`).
    pub at: Option<At>,
}

impl Route {
    pub fn new(to: Target) -> Route {
        Route { host: None, path: Prefix::root(), to, group: None, name: None, at: None }
    }

    /// The route's name in the access log: its `name`, else its target as `check` prints it (without a password).
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.target())
    }

    /// Its target as `check` prints it: the one upstream, or a group's members separated by commas.
    pub fn target(&self) -> String {
        match &self.group {
            Some(g) if g.members.len() > 1 => g.members.iter().map(|m| m.to.to_string()).collect::<Vec<_>>().join(","),
            _ => self.to.to_string(),
        }
    }
}

/// Why a route `name` can't be used, if it can't: names are labels, short and without control characters.
pub fn check_route_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("route name is empty".into());
    }
    if name.len() > MAX_ROUTE_NAME_BYTES {
        return Err(format!("route name of {} bytes: at most {MAX_ROUTE_NAME_BYTES} bytes", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("route name {name:?} has a control character"));
    }
    Ok(())
}

impl Config {
    /// A config with one listener and default limits and timeouts.
    pub fn single(listener: Listener) -> Config {
        Config {
            drain: Duration::from_secs_f64(DEFAULT_DRAIN_SECS),
            drain_grace: Duration::ZERO,
            access_log: AccessLog::Stdout,
            access_log_format: AccessLogFormat::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            listeners: vec![listener],
            admin: None,
        }
    }

    /// The forward proxy `hopgate proxy` runs, with default settings, on `listen`.
    pub fn proxy(listen: ListenAddr) -> Config {
        Config::single(Listener {
            listen,
            certs: Vec::new(),
            proxy: Some(Proxy::default()),
            routes: Vec::new(),
            via_name: None,
            at: None,
            upgrades: Upgrades::default(),
            proxy_protocol: None,
            reuse_port: false,
            intercept: None,
        })
    }

    /// The embedded default: `hopgate` with no arguments.
    pub fn embedded_default() -> Config {
        let addr = DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)));
        Config::proxy(ListenAddr { tls: false, addr })
    }

    /// A one-line-per-listener description, printed by `hopgate check`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for l in &self.listeners {
            let mut roles = Vec::new();
            if let Some(i) = &l.intercept {
                let mut s = format!("{} (original destination", i.mode.as_str());
                s.push_str(if i.host_verify { ", host_verify" } else { ", no host_verify" });
                if i.spoof_source {
                    s.push_str(", spoof_source");
                }
                s.push(')');
                roles.push(s);
            } else if let Some(p) = &l.proxy {
                let mut s = String::from("forward proxy");
                if p.users.is_some() {
                    s.push_str(" (auth)");
                }
                if let Some(parent) = &p.parent {
                    s.push_str(&format!(" via {}", parent.authority));
                }
                if !p.rules.is_empty() {
                    let n = p.rules.len();
                    s.push_str(&format!(" ({n} rule{})", if n == 1 { "" } else { "s" }));
                }
                roles.push(s);
            }
            for r in &l.routes {
                let mut s = format!("{}{} -> {}", r.host.as_deref().unwrap_or(""), r.path, r.target());
                if let Some(g) = &r.group {
                    let weights: Vec<String> = g.members.iter().map(|m| m.weight.to_string()).collect();
                    s.push_str(&format!(" [{} weights {}]", g.balance, weights.join("/")));
                }
                if let Some(name) = &r.name {
                    s.push_str(&format!(" ({name})"));
                }
                roles.push(s);
            }
            let mut behind = String::new();
            if let Some(pp) = &l.proxy_protocol {
                let from: Vec<String> = pp.from.iter().map(|n| n.to_string()).collect();
                let from = if from.is_empty() { "any address".to_string() } else { from.join(" ") };
                behind = format!(" (PROXY {} from {from})", pp.version);
            }
            out.push_str(&format!(
                "listener {}://{}{behind}: {}\n",
                l.listen.scheme(),
                l.listen.addr,
                roles.join(", ")
            ));
        }
        out
    }
}

/// Parses `ADDR`, `http://ADDR` or `https://ADDR` where ADDR is `IP:PORT`, `[IPv6]:PORT`, `:PORT` or
/// `localhost:PORT`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else if s.contains("://") {
        return Err(format!("listen address {s:?}: scheme must be http:// or https://"));
    } else {
        (false, s)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let addr = if let Some(port) = rest.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("listen address {s:?}: bad port"))?;
        SocketAddr::from(([0, 0, 0, 0], port))
    } else if let Some(port) = rest.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| format!("listen address {s:?}: bad port"))?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        rest.parse().map_err(|_| format!("listen address {s:?}: expected IP:PORT, [IPv6]:PORT or :PORT"))?
    };
    Ok(ListenAddr { tls, addr })
}

/// Parses `http://[user:pass@]host:port` for `--parent`.
pub fn parse_parent(s: &str) -> Result<Parent, String> {
    let rest = s.strip_prefix("http://").ok_or_else(|| format!("parent proxy {s:?}: must start with http://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (creds, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let credentials = match creds {
        Some(c) => {
            let (u, p) = c.split_once(':').unwrap_or((c, ""));
            Some((percent_decode(u), percent_decode(p)))
        }
        None => None,
    };
    let authority = Authority::parse(hostport, None).map_err(|e| format!("parent proxy {s:?}: {e}"))?;
    Ok(Parent { authority, credentials })
}

/// A host name as a route's `host` and a request's host are compared: lowercase, without IPv6 brackets, and
/// without one trailing dot (`a.example.` is the fully qualified `a.example`; `a.example..` is no name).
pub fn host_key(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Decodes %XX escapes (used for credentials in URLs); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().addr.to_string(), "127.0.0.1:0");
        assert!(parse_listen("https://[::1]:8443").unwrap().tls);
        assert_eq!(parse_listen(":8080").unwrap().addr.to_string(), "0.0.0.0:8080");
        assert_eq!(parse_listen("http://localhost:1").unwrap().addr.to_string(), "127.0.0.1:1");
        assert!(parse_listen("ftp://1.2.3.4:5").is_err());
        assert!(parse_listen("1.2.3.4").is_err());
    }

    #[test]
    fn parent_forms() {
        let p = parse_parent("http://u%40x:p%3Aw@127.0.0.1:3128").unwrap();
        assert_eq!(p.credentials, Some(("u@x".into(), "p:w".into())));
        assert_eq!(p.authority.to_string(), "127.0.0.1:3128");
        assert!(parse_parent("https://h:1").is_err());
        assert!(format!("{p:?}").contains("<hidden>"));
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}
