//! The command line: every form builds a [`Config`] (a one-listener config for `proxy` and `gateway`) and
//! runs it the same way `hopgate run FILE` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, AccessLog, CertPair, Config, ListenAddr, Listener, OptionError, Proxy, Route, Symlinks, Target, TargetOption,
};
use crate::server::Server;
use crate::server::log::AccessLogger;
use crate::tunnel_client::TunnelClient;

#[derive(Parser, Debug)]
#[command(
    name = "hopgate",
    version,
    about = "One binary for every HTTP integration point: relay (forward proxy), tunnels, protocol and resource gateways",
    after_help = "With no command, hopgate runs the embedded default: a forward proxy on 127.0.0.1:8080."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Seconds to let in-flight requests finish after SIGINT/SIGTERM [default: 10, or drain_secs in FILE]
    #[arg(long, global = true, value_name = "SECS")]
    pub drain: Option<f64>,
    /// Seconds listeners keep accepting after SIGTERM while /readyz already answers 503 [default: 0, or
    /// drain_grace_secs in FILE]
    #[arg(long, global = true, value_name = "SECS")]
    pub drain_grace: Option<f64>,
    /// Offer the listening sockets to a newer hopgate on this unix socket, or take them over from the running one
    /// (binary upgrade without a dropped connection)
    #[arg(long, global = true, value_name = "PATH")]
    pub upgrade_socket: Option<PathBuf>,
    /// Access log: stdout, off, or a file path (SIGUSR1 reopens it) [default: stdout, or access_log in FILE]
    #[arg(long, global = true, value_name = "WHERE")]
    pub access_log: Option<String>,
    /// Access-log lines: hopgate, common, combined (Apache's) or json [default: hopgate, or access_log_format in FILE]
    #[arg(long, global = true, value_name = "FORMAT", value_parser = config::AccessLogFormat::parse)]
    pub access_log_format: Option<config::AccessLogFormat>,
    /// More diagnostics on stderr (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Admin listener (plain HTTP: /metrics, /stats.json, /, /healthz, /readyz) on IP:PORT [default: off, or
    /// [admin] listen in FILE]
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin: Option<String>,
    /// htpasswd file guarding the admin listener with Basic authentication (required off loopback)
    #[arg(long, global = true, value_name = "HTPASSWD")]
    pub admin_users: Option<PathBuf>,
    /// Behind a balancer: every connection starts with a PROXY protocol header of this version (v1 or v2) naming
    /// the client; with FILE, on every listener [default: none, or proxy_protocol in FILE]
    #[arg(long, global = true, value_name = "VERSION", value_parser = config::ProxyVersion::parse)]
    pub proxy_protocol: Option<config::ProxyVersion>,
    /// An address (CIDR or IP) balancers connect from, the only ones that may send PROXY headers (repeatable)
    /// [default: any address, or proxy_protocol_from in FILE]
    #[arg(long = "proxy-protocol-from", global = true, value_name = "CIDR", value_parser = parse_cidr)]
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// SO_REUSEPORT: other processes may listen on the same port, the kernel spreads connections over them; with
    /// FILE, on every listener [default: off, or reuse_port in FILE]
    #[arg(long, global = true)]
    pub reuse_port: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything a config file describes
    Run { file: PathBuf },
    /// Validate a config file: exit 0 with a summary, or exit 2 with FILE:LINE and the reason
    Check { file: PathBuf },
    /// Forward proxy: absolute-form http:// (relay), https:// (TLS origination) and ftp:// (HTTP/FTP gateway);
    /// an HTTPS proxy with --listen https://
    Proxy(ProxyArgs),
    /// Reverse gateway in front of one upstream
    Gateway(GatewayArgs),
    /// Tunnel client: a CONNECT tunnel through an HTTP(S) proxy per local connection, or once over stdin/stdout
    Tunnel(TunnelArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["listen", "stdio"])))]
pub struct TunnelArgs {
    /// The proxy: http://HOST:PORT or https://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub proxy: String,
    /// Where the tunnel goes: HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// Accept local connections here (IP:PORT; port 0 picks one); each gets its own tunnel
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub listen: Option<std::net::SocketAddr>,
    /// One tunnel over stdin/stdout (an ssh ProxyCommand)
    #[arg(long)]
    pub stdio: bool,
    /// Credentials for the proxy: USER:PASS
    #[arg(long, value_name = "USER:PASS")]
    pub proxy_user: Option<String>,
    /// Extra CA bundle trusted for an https:// proxy
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Offer HTTP/2 to the https:// proxy: every tunnel is a CONNECT stream on one TLS connection
    #[arg(long)]
    pub h2: bool,
    /// With --h2: tunnels per connection to the proxy before a second one is opened
    #[arg(long, value_name = "N", default_value_t = crate::tunnel_client::DEFAULT_MAX_STREAMS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
}

fn parse_socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    config::parse_listen(s).map(|l| l.addr)
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// ADDR, http://ADDR or https://ADDR
    #[arg(long, default_value = config::DEFAULT_LISTEN, value_parser = config::parse_listen)]
    pub listen: ListenAddr,
    /// Allow client-chosen targets inside this CIDR even when they are loopback, link-local... (repeatable)
    #[arg(long = "allow-target", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow_targets: Vec<ipnet::IpNet>,
    /// A port CONNECT may reach (repeatable) [default: 443]
    #[arg(long = "connect-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub connect_ports: Vec<u16>,
    /// htpasswd file (bcrypt $2y$/$2b$, {SHA}, $apr1$): Proxy-Authorization: Basic is then required (407)
    #[arg(long, value_name = "HTPASSWD")]
    pub users: Option<PathBuf>,
    /// Relay every request and tunnel through this proxy: http://[user:pass@]host:port
    #[arg(long, value_name = "URL", value_parser = config::parse_parent)]
    pub parent: Option<config::Parent>,
    /// Extra CA bundle (PEM) trusted for https:// targets; the system roots are always trusted
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Serve only targets matching NAME or *.SUFFIX (repeatable); others get 403
    #[arg(long = "allow-domain", value_name = "PATTERN", value_parser = config::DomainPattern::parse)]
    pub allow_domains: Vec<config::DomainPattern>,
    /// Refuse targets matching NAME or *.SUFFIX (repeatable): 403; deny wins over allow
    #[arg(long = "deny-domain", value_name = "PATTERN", value_parser = config::DomainPattern::parse)]
    pub deny_domains: Vec<config::DomainPattern>,
    /// Requests per second per client address and per user; past it 429 with Retry-After
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_second: Option<u32>,
    /// Bytes per second each way per client address and per user; past it transfers are slowed [at least 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(config::MIN_BYTES_PER_SECOND..))]
    pub max_bytes_per_second: Option<u64>,
    /// Take connections the packet filter REDIRECTed here (SO_ORIGINAL_DST): plain HTTP is relayed and TLS
    /// spliced to the original destination (docs/intercept.md)
    #[arg(long, conflicts_with = "tproxy")]
    pub intercept: bool,
    /// Like --intercept, for TPROXY rules: the listener is IP_TRANSPARENT, the original destination its local address
    #[arg(long)]
    pub tproxy: bool,
    /// With --tproxy: connect upstream from the client's own address
    #[arg(long, requires = "tproxy")]
    pub spoof_source: bool,
    /// With --intercept or --tproxy: relay requests whose Host does not resolve to the original destination
    /// instead of answering 409
    #[arg(long)]
    pub no_host_verify: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ProxyArgs {
    /// The intercepting mode the flags ask for, and what such a listener can't have.
    fn intercept(&self) -> Result<Option<config::Intercept>, String> {
        let mode = match (self.intercept, self.tproxy) {
            (true, _) => config::InterceptMode::Redirect,
            (_, true) => config::InterceptMode::Tproxy,
            _ if self.no_host_verify => return Err("--no-host-verify needs --intercept or --tproxy".into()),
            _ => return Ok(None),
        };
        let flag = format!("--{}", mode.as_str());
        if self.listen.tls {
            return Err(format!("{flag} needs a plain --listen address: intercepted TLS is spliced, never terminated"));
        }
        if self.users.is_some() {
            return Err(format!(
                "{flag} and --users: intercepted clients are not configured for a proxy and can't authenticate"
            ));
        }
        if self.parent.is_some() {
            return Err(format!("{flag} and --parent: intercepted connections go to their original destination"));
        }
        Ok(Some(config::Intercept { mode, host_verify: !self.no_host_verify, spoof_source: self.spoof_source }))
    }
}

/// The certificate of an `https://` listener.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Certificate chain (PEM, end-entity first) for --listen https://
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519) for --listen https://
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The listener's certificates: both flags with `https://`, neither without.
    fn certs(&self, listen: &ListenAddr) -> Result<Vec<CertPair>, String> {
        match (listen.tls, &self.tls_cert, &self.tls_key) {
            (true, Some(cert), Some(key)) => Ok(vec![CertPair { cert: cert.clone(), key: key.clone() }]),
            (true, _, _) => Err("--listen https://... needs --tls-cert PEM and --tls-key PEM".into()),
            (false, None, None) => Ok(Vec::new()),
            (false, _, _) => Err("--tls-cert and --tls-key need --listen https://ADDR".into()),
        }
    }
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// ADDR, http://ADDR or https://ADDR
    #[arg(long, value_parser = config::parse_listen)]
    pub listen: ListenAddr,
    /// http(s)://HOST:PORT[/base], ftp://[USER[:PASS]@]HOST[:PORT][/dir], cgi:DIR, fastcgi://HOST:PORT,
    /// fastcgi+unix:PATH, scgi://HOST:PORT or file:DIR. Given more than once: an upstream group (members of
    /// one kind: http(s)://, fastcgi or scgi://), balanced by --balance
    #[arg(long, value_parser = Target::parse, required = true)]
    pub to: Vec<Target>,
    /// An upstream group's balancing: round_robin (default), least_conn, client_ip, header:NAME or cookie:NAME
    #[arg(long, value_name = "HOW", value_parser = config::Balance::parse)]
    pub balance: Option<config::Balance>,
    /// An upstream group's active health check: a path to GET (http members) or fcgi (FastCGI members)
    #[arg(long, value_name = "CHECK", value_parser = config::HealthCheck::parse)]
    pub health_check: Option<config::HealthCheck>,
    /// FastCGI: the document root SCRIPT_FILENAME is resolved under (the script must exist there)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// CGI, FastCGI and file: what a path ending in / serves [default for FastCGI: index.php; file:
    /// index.html; CGI: none]
    #[arg(long, value_name = "NAME")]
    pub index: Option<String>,
    /// file: list a directory without an index (HTML, or JSON for Accept: application/json)
    #[arg(long)]
    pub browse: bool,
    /// file: and FastCGI with --root: serve dotfiles too (/.well-known/ always is)
    #[arg(long)]
    pub dotfiles: bool,
    /// file: and FastCGI with --root: `follow` symlinks wherever they point (default) or only `inside` the directory
    #[arg(long, value_name = "MODE", value_parser = Symlinks::parse)]
    pub symlinks: Option<Symlinks>,
    /// FastCGI with --root: the script run for a path that names nothing (Laravel, Symfony, WordPress)
    #[arg(long, value_name = "SCRIPT")]
    pub front_controller: Option<String>,
    /// Extra CA bundle (PEM) trusted for an https:// --to; the system roots are always trusted
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// http(s):// --to: start every upstream connection with a PROXY protocol header (v1 or v2) naming the client
    #[arg(long, value_name = "VERSION", value_parser = config::ProxyVersion::parse)]
    pub send_proxy_protocol: Option<config::ProxyVersion>,
    /// http(s):// --to: the HTTP version spoken to the upstream: 1.1 (default), 2 (ALPN h2 on https://, prior
    /// knowledge on http://) or auto (ALPN's choice on https://; HTTP/1.1 on http://)
    #[arg(long, value_name = "VERSION", value_parser = config::UpstreamHttp::parse)]
    pub upstream_http: Option<config::UpstreamHttp>,
    /// http(s):// --to with HTTP/2: requests at once on one upstream connection before another opens [default: 100]
    #[arg(long, value_name = "N")]
    pub upstream_max_streams: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl GatewayArgs {
    /// The one route `hopgate gateway` serves: the flags go to the target they belong to (`Target::set`, as
    /// the config file's keys do).
    fn route(&self) -> Result<Route, String> {
        let Some(mut to) = self.to.first().cloned() else { return Err("--to is required".into()) };
        let options = [
            self.ca.clone().map(TargetOption::Ca),
            self.root.clone().map(TargetOption::Root),
            self.index.clone().map(TargetOption::Index),
            self.browse.then_some(TargetOption::Browse(true)),
            self.dotfiles.then_some(TargetOption::Dotfiles(true)),
            self.symlinks.map(TargetOption::Symlinks),
            self.front_controller.clone().map(TargetOption::FrontController),
            self.send_proxy_protocol.map(TargetOption::SendProxyProtocol),
            self.upstream_http.map(TargetOption::UpstreamHttp),
            self.upstream_max_streams.map(TargetOption::UpstreamMaxStreams),
        ];
        let grouped = self.to.len() > 1 || self.balance.is_some() || self.health_check.is_some();
        let mut group = match grouped {
            true => {
                config::check_members(&self.to).map_err(|(_, why)| format!("--to: {why}"))?;
                Some(config::Group::new(self.to.iter().map(|t| config::Member { to: t.clone(), weight: 1 }).collect()))
            }
            false => None,
        };
        for option in options.into_iter().flatten() {
            let flag = format!("--{}", option.key().replace('_', "-"));
            if let Some(g) = &mut group {
                for m in &mut g.members {
                    let _ = m.to.set(option.clone());
                }
            }
            to.set(option).map_err(|e| match e {
                OptionError::Misplaced { which: "https:// routes" } => {
                    format!("{flag} only applies to https:// targets (the proxy's --ca to absolute-form https://)")
                }
                OptionError::Misplaced { which } => format!("{flag} only applies to {which}"),
                OptionError::Invalid(why) => format!("{flag}: {why}"),
            })?;
        }
        if let Some(g) = &mut group {
            g.balance = self.balance.clone().unwrap_or_default();
            g.health_check = self.health_check.clone();
            g.check_fits().map_err(|why| format!("--health-check: {why}"))?;
        }
        let mut route = Route::new(to);
        route.group = group;
        Ok(route)
    }
}

impl Global {
    /// `--proxy-protocol`, `--proxy-protocol-from` and `--reuse-port` on every listener (the one of a CLI form,
    /// each of a FILE's).
    fn listener_flags(&self, config: &mut Config) -> Result<(), ExitCode> {
        if self.proxy_protocol.is_none() && !self.proxy_protocol_from.is_empty() {
            return usage(Err("--proxy-protocol-from needs --proxy-protocol v1|v2".into()));
        }
        for l in &mut config.listeners {
            if let Some(version) = self.proxy_protocol {
                let from = match (&self.proxy_protocol_from, &l.proxy_protocol) {
                    (flags, _) if !flags.is_empty() => flags.clone(),
                    (_, Some(file)) => file.from.clone(),
                    (_, None) => Vec::new(),
                };
                l.proxy_protocol = Some(config::ProxyProtocol { version, from });
            }
            l.reuse_port |= self.reuse_port;
        }
        Ok(())
    }
}

/// A command-line mistake clap can't see: print it and exit 2, as clap does.
fn usage<T>(r: Result<T, String>) -> Result<T, ExitCode> {
    r.map_err(|e| {
        eprintln!("hopgate: {e}");
        ExitCode::from(2)
    })
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (for example 10.0.0.0/8) or an IP address"))
}

impl Cli {
    /// The config this command line describes; `Err` is an exit code after printing why.
    fn config(&self) -> Result<Config, ExitCode> {
        let mut config = match &self.command {
            None => Config::embedded_default(),
            Some(Command::Run { file }) | Some(Command::Check { file }) => match config::load_file(file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Err(ExitCode::from(2));
                }
            },
            Some(Command::Proxy(p)) => Config::single(Listener {
                // What an intercepting listener can't have is said first (an https:// one needs no certificate).
                intercept: usage(p.intercept())?,
                listen: p.listen,
                certs: usage(p.tls.certs(&p.listen))?,
                proxy: Some(Proxy {
                    allow_targets: p.allow_targets.clone(),
                    connect_ports: if p.connect_ports.is_empty() {
                        config::DEFAULT_CONNECT_PORTS.to_vec()
                    } else {
                        p.connect_ports.clone()
                    },
                    users: p.users.clone(),
                    parent: p.parent.clone(),
                    ca: p.ca.clone(),
                    allow_domains: p.allow_domains.clone(),
                    deny_domains: p.deny_domains.clone(),
                    rates: config::Rates {
                        requests_per_second: p.max_requests_per_second,
                        bytes_per_second: p.max_bytes_per_second,
                    },
                    ..Proxy::default()
                }),
                routes: Vec::new(),
                via_name: None,
                at: None,
                upgrades: config::Upgrades::default(),
                proxy_protocol: None,
                reuse_port: false,
            }),
            Some(Command::Tunnel(_)) => Config::embedded_default(),
            Some(Command::Gateway(g)) => Config::single(Listener {
                listen: g.listen,
                certs: usage(g.tls.certs(&g.listen))?,
                proxy: None,
                routes: vec![usage(g.route())?],
                via_name: None,
                at: None,
                upgrades: config::Upgrades::default(),
                proxy_protocol: None,
                reuse_port: false,
                intercept: None,
            }),
        };
        if let Some(d) = self.global.drain {
            if !(d.is_finite() && d >= 0.0) {
                eprintln!("hopgate: --drain must be a number of seconds");
                return Err(ExitCode::from(2));
            }
            config.drain = Duration::from_secs_f64(d);
        }
        if let Some(d) = self.global.drain_grace {
            if !(d.is_finite() && d >= 0.0) {
                eprintln!("hopgate: --drain-grace must be a number of seconds");
                return Err(ExitCode::from(2));
            }
            config.drain_grace = Duration::from_secs_f64(d);
        }
        match self.global.access_log.as_deref() {
            None => {}
            Some("stdout") => config.access_log = AccessLog::Stdout,
            Some("off") => config.access_log = AccessLog::Off,
            Some(p) => config.access_log = AccessLog::File(PathBuf::from(p)),
        }
        if let Some(f) = self.global.access_log_format {
            config.access_log_format = f;
        }
        if let Some(addr) = &self.global.admin {
            let listen = config::parse_listen(addr).ok().filter(|l| !l.tls).map(|l| l.addr);
            let listen = usage(listen.ok_or_else(|| format!("--admin {addr:?}: IP:PORT expected")))?;
            config.admin = Some(config::Admin { listen, users: self.global.admin_users.clone(), at: None });
        } else if let (Some(users), Some(admin)) = (&self.global.admin_users, config.admin.as_mut()) {
            admin.users = Some(users.clone());
        } else if self.global.admin_users.is_some() {
            return usage(Err("--admin-users needs --admin ADDR (or [admin] in the config file)".into()));
        }
        if let Some(admin) = &config.admin {
            usage(admin.check().map_err(|why| format!("--admin: {why}")))?;
        }
        self.global.listener_flags(&mut config)?;
        Ok(config)
    }
}

/// Runs the command line; the exit code is the process's.
pub async fn run(cli: Cli) -> ExitCode {
    if let Some(Command::Tunnel(t)) = &cli.command {
        return tunnel(t).await;
    }
    let config = match cli.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(Command::Check { file }) = &cli.command {
        return match Server::check(&config) {
            Ok(()) => {
                println!("{}: ok", file.display());
                print!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(e) if e.at.is_some() => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        };
    }
    // Binary upgrade: take the listening sockets over from the hopgate offering them on the upgrade socket.
    let mut inherited = crate::server::upgrade::Inherited::default();
    let mut handover = None;
    if let Some(path) = &cli.global.upgrade_socket {
        match crate::server::upgrade::take_over(path) {
            Ok(Some((sockets, h))) => {
                inherited = sockets;
                handover = Some(h);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("hopgate: --upgrade-socket {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    let server = match Server::bind(&config, &mut inherited).await {
        Ok(s) => s,
        Err(e) => {
            // FILE:LINE: reason, as `check` prints it, when the config entry at fault is known.
            match e.at {
                Some(_) => eprintln!("{e}"),
                None => eprintln!("hopgate: {e}"),
            }
            return ExitCode::from(1);
        }
    };
    // Handlers first: from the moment hopgate says it listens, SIGTERM drains instead of killing, and SIGUSR1
    // reopens the access log instead of killing.
    let signal = shutdown_signal();
    reopen_log_on_sigusr1(server.access_log());
    let reloads = reload_on_sighup();
    for b in server.bound() {
        eprintln!("hopgate: listening on {b}");
    }
    if let Some(a) = server.admin_addr() {
        eprintln!("hopgate: admin on http://{a}");
    }
    if inherited.unused() > 0 {
        tracing::info!("{} handed-over sockets are no longer configured: closed", inherited.unused());
    }
    drop(inherited);
    // The old process drains once this one serves; then this one offers its sockets for the next upgrade.
    let (taken_over_tx, taken_over) = tokio::sync::oneshot::channel::<()>();
    if let Some(h) = handover {
        match h.finish() {
            Ok(path) => eprintln!("hopgate: took the listening sockets over from the hopgate on {}", path.display()),
            Err(e) => tracing::warn!("the previous hopgate did not confirm its drain: {e}"),
        }
    }
    if let Some(path) = &cli.global.upgrade_socket
        && let Err(e) = crate::server::upgrade::offer(path, server.offered(), move || {
            let _ = taken_over_tx.send(());
        })
    {
        eprintln!("hopgate: --upgrade-socket {}: {e}", path.display());
        return ExitCode::from(1);
    }
    let shutdown = async move {
        tokio::select! {
            _ = signal => {}
            Ok(()) = taken_over => {}
        }
    };
    crate::server::notify::send(&[crate::server::notify::READY]);
    let what = match &cli.command {
        Some(Command::Run { file }) => file.display().to_string(),
        _ => "the command line's files".to_string(),
    };
    let cli = Arc::new(cli);
    let reload: crate::server::Reload = Box::new(move || cli.config().ok());
    server.run(shutdown, reloads, reload, what).await;
    ExitCode::SUCCESS
}

/// `hopgate tunnel`: errors are one line on stderr and a non-zero exit.
async fn tunnel(t: &TunnelArgs) -> ExitCode {
    let client = match build_tunnel_client(t) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hopgate tunnel: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match t.listen {
        Some(addr) => {
            let shutdown = shutdown_signal();
            let run = client.run_listen(addr, |local| eprintln!("hopgate: listening on tcp://{local}"));
            tokio::select! {
                r = run => r,
                _ = shutdown => Ok(()),
            }
        }
        None => client.run_stdio().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hopgate tunnel: {e}");
            ExitCode::from(1)
        }
    }
}

fn build_tunnel_client(t: &TunnelArgs) -> Result<TunnelClient, crate::tunnel_client::TunnelError> {
    let mut client = TunnelClient::new(&t.proxy, &t.to)?;
    if let Some(u) = &t.proxy_user {
        client.proxy_user = Some(crate::tunnel_client::parse_proxy_user(u)?);
    }
    client.ca = t.ca.clone();
    client.h2 = t.h2;
    client.max_streams = t.max_streams as usize;
    client.check()?;
    Ok(client)
}

/// Installs the SIGINT and SIGTERM handlers now (not when first polled: a signal between `listening on` and the
/// first poll would otherwise kill the process instead of draining it) and completes on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            tracing::error!("cannot install signal handlers; stop hopgate with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// SIGUSR1 reopens the access-log file at its path (logrotate's `postrotate`); with the log on stdout or off it
/// does nothing. Installed now, before `listening on`: SIGUSR1's default action would end the process.
fn reopen_log_on_sigusr1(log: Arc<AccessLogger>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    if !log.reopen() {
                        tracing::info!("SIGUSR1: the access log is not a file, nothing to reopen");
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot install the SIGUSR1 handler (access-log reopening): {e}"),
    }
}

/// SIGHUP asks for a reload (docs/operations.md): installed now, before `listening on` (its default action would
/// end the process). Signals that arrive while a reload runs are folded into one more.
fn reload_on_sighup() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::error!("cannot install the SIGHUP handler: {e}; reloads need a restart"),
    }
    rx
}

/// Diagnostics go to stderr; RUST_LOG wins over -v/-q.
pub fn init_tracing(global: &Global) {
    let default = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn,hopgate=info",
            1 => "info,hopgate=debug",
            _ => "debug,hopgate=trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
